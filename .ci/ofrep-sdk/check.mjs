// OpenFeature's web SDK with its OFREP provider, unchanged, against a running Pier: flags of
// every type resolve with their variant and reason, errors come back as the SDK's error codes,
// an unchanged bulk evaluation is answered 304, and a change reaches the SDK by its polling.
//
//   PIER_URL=http://127.0.0.1:8080 PIER_KEY=pier_... node check.mjs
import assert from 'node:assert/strict';
import { OpenFeature, ProviderEvents } from '@openfeature/web-sdk';
import { OFREPWebProvider } from '@openfeature/ofrep-web-provider';

const base = required('PIER_URL');
const owner = required('PIER_KEY');

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

async function api(method, path, body) {
  const response = await fetch(base + path, {
    method,
    headers: { Authorization: `Bearer ${owner}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
  return response.status === 204 ? null : response.json();
}

async function until(what, done, seconds = 10) {
  const deadline = Date.now() + seconds * 1000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const onOff = { on: true, off: false };
await api('PUT', '/v1/flags/document', {
  flags: {
    'new-checkout': {
      state: 'ENABLED',
      variants: onOff,
      defaultVariant: 'off',
      targeting: { if: [{ ends_with: [{ var: 'email' }, '@example.com'] }, 'on', 'off'] },
    },
    'banner-text': { state: 'ENABLED', variants: { hello: 'Welcome', sale: 'Sale today' }, defaultVariant: 'hello' },
    'max-items': { state: 'ENABLED', variants: { few: 10, many: 25.5 }, defaultVariant: 'many' },
    theme: {
      state: 'ENABLED',
      variants: { dark: { background: '#000', accent: 'teal' }, light: { background: '#fff', accent: 'navy' } },
      defaultVariant: 'dark',
    },
    'kill-switch': { state: 'DISABLED', variants: onOff, defaultVariant: 'on' },
  },
});
// What an application's front end holds: a key that can only evaluate.
const frontEnd = await api('POST', '/v1/api-keys', { name: 'front-end', role: 'member', scopes: ['flags:evaluate'] });

const statuses = [];
const recordingFetch = async (input, init) => {
  const response = await fetch(input, init);
  statuses.push(response.status);
  return response;
};
const provider = new OFREPWebProvider({
  baseUrl: base,
  headers: [['Authorization', `Bearer ${frontEnd.key}`]],
  pollInterval: 100,
  changeDetection: 'polling',
  cacheMode: 'disabled',
  disableVisibilityRefresh: true,
  fetchImplementation: recordingFetch,
});
await OpenFeature.setContext({ targetingKey: 'user-42', email: 'ana@example.com' });
await OpenFeature.setProviderAndWait(provider);
const client = OpenFeature.getClient();

const pick = ({ value, variant, reason, errorCode }) => ({ value, variant, reason, errorCode });
assert.deepEqual(pick(client.getBooleanDetails('new-checkout', false)), {
  value: true, variant: 'on', reason: 'TARGETING_MATCH', errorCode: undefined,
});
assert.deepEqual(pick(client.getStringDetails('banner-text', 'none')), {
  value: 'Welcome', variant: 'hello', reason: 'STATIC', errorCode: undefined,
});
assert.deepEqual(pick(client.getNumberDetails('max-items', 0)), {
  value: 25.5, variant: 'many', reason: 'STATIC', errorCode: undefined,
});
assert.deepEqual(pick(client.getObjectDetails('theme', {})), {
  value: { background: '#000', accent: 'teal' }, variant: 'dark', reason: 'STATIC', errorCode: undefined,
});
const disabled = client.getBooleanDetails('kill-switch', false);
assert.equal(disabled.value, false, 'a disabled flag answers the caller\'s default');
assert.equal(disabled.reason, 'DISABLED');
const missing = client.getBooleanDetails('no-such-flag', true);
assert.deepEqual([missing.value, missing.errorCode], [true, 'FLAG_NOT_FOUND']);
const mismatch = client.getNumberDetails('banner-text', 7);
assert.deepEqual([mismatch.value, mismatch.errorCode], [7, 'TYPE_MISMATCH']);

// Polling with the bulk answer's ETag: unchanged flags are a 304.
await until('a 304 to an unchanged bulk evaluation', () => statuses.includes(304));

// A change is picked up by the next poll (a 200 with the new answer).
let changed = false;
client.addHandler(ProviderEvents.ConfigurationChanged, () => { changed = true; });
await api('PATCH', '/v1/flags/banner-text', { definition: { defaultVariant: 'sale' } });
await until('the change reaching the SDK', () => changed && client.getStringValue('banner-text', 'none') === 'Sale today');
assert.equal(client.getStringDetails('banner-text', 'none').variant, 'sale');

await OpenFeature.close();
const counts = statuses.reduce((all, status) => ({ ...all, [status]: (all[status] ?? 0) + 1 }), {});
console.log(`ofrep-sdk: every check passed; bulk evaluations answered ${JSON.stringify(counts)}`);
