// Renders /v1/openapi.json as a readable API reference. Served from the binary with /docs, so it
// has no dependencies and loads nothing else. Every string from the document reaches the page
// through textContent or attributes, never as markup, so descriptions cannot inject HTML.
'use strict';

(function () {
  const SPEC_URL = '/v1/openapi.json';
  const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
  const SCHEMA_PREFIX = '#/components/schemas/';
  // Refs can be recursive; nothing nests deeper than this, however far the reader expands.
  const MAX_DEPTH = 8;

  let spec = {};
  const usedIds = new Set();

  // el('a', {href: '#x', className: 'y'}, 'text', node, [more]) builds a node; strings become
  // text nodes, null and false are skipped.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'className') node.className = value;
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) append(node, child);
      else node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  const flag = (text, kind) => el('span', { className: kind ? 'flag ' + kind : 'flag' }, text);
  const code = (text) => el('code', null, text);

  function table(headings, rows) {
    return el('table', { className: 'props' },
      headings ? el('thead', null, el('tr', null, headings.map((h) => el('th', null, h)))) : null,
      el('tbody', null, rows));
  }

  // A unique element id: operationIds need not be unique across tags.
  function uniqueId(wanted) {
    let id = String(wanted);
    for (let n = 2; usedIds.has(id); n++) id = wanted + '-' + n;
    usedIds.add(id);
    return id;
  }

  // Descriptions are Markdown; render only paragraphs and `code`, the rest stays plain text.
  function prose(text, className) {
    if (!text) return null;
    return el('div', { className: className || 'prose' },
      String(text).split(/\n\s*\n/).map((para) => el('p', null, inline(para))));
  }

  function inline(text) {
    return String(text || '').replace(/\n/g, ' ').split('`')
      .map((part, i) => (i % 2 ? code(part) : part));
  }

  function pretty(value) {
    return typeof value === 'string' ? value : JSON.stringify(value, null, 2);
  }

  // --- Schemas ---------------------------------------------------------------------------

  function refName(ref) {
    return typeof ref === 'string' && ref.startsWith(SCHEMA_PREFIX)
      ? decodeURIComponent(ref.slice(SCHEMA_PREFIX.length)) : null;
  }

  function named(name) {
    const schemas = (spec.components && spec.components.schemas) || {};
    return Object.prototype.hasOwnProperty.call(schemas, name) ? schemas[name] : undefined;
  }

  function resolveShallow(schema) {
    const name = schema && refName(schema.$ref);
    return name ? named(name) : schema;
  }

  const schemaId = (name) => 'schema-' + name;
  const schemaLink = (name) => el('a', { href: '#' + schemaId(name), className: 'ref' }, name);

  function isNullType(s) {
    return !!s && (s.type === 'null' || (Array.isArray(s.type) && s.type.length === 1 && s.type[0] === 'null'));
  }

  // Splits "X or null" into X and a flag: `type: [..., "null"]`, or a oneOf/anyOf with a null
  // member (utoipa's shape for Option<T>). Siblings such as description are kept.
  function unwrapNullable(schema) {
    if (!schema || typeof schema !== 'object') return { schema: {}, nullable: false };
    if (Array.isArray(schema.type) && schema.type.includes('null')) {
      const rest = schema.type.filter((t) => t !== 'null');
      return { schema: Object.assign({}, schema, { type: rest.length === 1 ? rest[0] : rest }), nullable: true };
    }
    for (const key of ['oneOf', 'anyOf']) {
      const options = Array.isArray(schema[key]) ? schema[key] : [];
      const rest = options.filter((s) => !isNullType(s));
      if (rest.length === 0 || rest.length === options.length) continue;
      if (rest.length > 1) return { schema: Object.assign({}, schema, { [key]: rest }), nullable: true };
      const outer = Object.assign({}, schema);
      delete outer[key];
      const description = schema.description || rest[0].description;
      return { schema: Object.assign(outer, rest[0], { description }), nullable: true };
    }
    return { schema, nullable: false };
  }

  // Whether a schema needs a block of its own rather than one line. `depth` stops a schema that
  // is an array of itself from looping.
  function isComplex(schema, depth = 0) {
    if (!schema || typeof schema !== 'object' || depth > MAX_DEPTH) return false;
    const extra = schema.additionalProperties;
    return !!(schema.properties || schema.allOf || schema.oneOf || schema.anyOf ||
      (schema.items && isComplex(resolveShallow(schema.items), depth + 1)) ||
      (extra && typeof extra === 'object' && isComplex(resolveShallow(extra), depth + 1)));
  }

  // One line: the type, linked when it is a named schema, e.g. "array of Role | null".
  function typeLine(raw) {
    const { schema, nullable } = unwrapNullable(raw);
    const parts = [];
    const name = refName(schema.$ref);
    const extra = schema.additionalProperties;
    const joined = (list, sep) => list.map((s, i) => [i ? sep : '', typeLine(s)]);
    if (schema.$ref) {
      parts.push(name && named(name) ? schemaLink(name)
        : el('span', { className: 'unresolved' }, (name || schema.$ref) + ' (unresolved)'));
    } else if (schema.type === 'array' || (schema.items && !schema.type)) {
      parts.push('array of ', typeLine(schema.items || {}));
    } else if (schema.allOf) {
      parts.push('all of ', joined(schema.allOf, ' & '));
    } else if (schema.oneOf) {
      parts.push('one of ', joined(schema.oneOf, ' | '));
    } else if (schema.anyOf) {
      parts.push('any of ', joined(schema.anyOf, ' | '));
    } else if (!schema.properties && extra && typeof extra === 'object') {
      parts.push('map of ', typeLine(extra));
    } else {
      const type = Array.isArray(schema.type) ? schema.type.join(' | ') : schema.type;
      parts.push(type || (schema.properties ? 'object' : 'any'));
      if (schema.format) parts.push(' (' + schema.format + ')');
    }
    if (nullable) parts.push(' | null');
    return el('span', { className: 'type' }, parts);
  }

  // The constraints of a schema as short "key: value" items. A named schema without a block of
  // its own (an enum, a timestamp) shows its target's type and constraints instead; an array
  // shows its items' too (`depth` stops an array of itself).
  function constraints(raw, depth = 0) {
    if (depth > MAX_DEPTH) return null;
    let { schema } = unwrapNullable(raw);
    const target = resolveShallow(schema);
    const out = [];
    const add = (label, value) => out.push(el('span', { className: 'constraint' },
      label + ': ', code(typeof value === 'string' ? value : JSON.stringify(value))));
    if (schema.$ref && target && !isComplex(target)) {
      out.push(el('span', { className: 'constraint' }, typeLine(target)));
      schema = Object.assign({}, target, schema);
    }
    const limits = [['pattern', 'pattern'], ['minimum', 'minimum'], ['exclusiveMinimum', 'greater than'],
      ['maximum', 'maximum'], ['exclusiveMaximum', 'less than'], ['minLength', 'minLength'],
      ['maxLength', 'maxLength'], ['minItems', 'minItems'], ['maxItems', 'maxItems']];
    for (const [key, label] of limits) if (schema[key] !== undefined) add(label, schema[key]);
    if (Array.isArray(schema.enum)) add('one of', schema.enum.map((v) => JSON.stringify(v)).join(' | '));
    if (schema.const !== undefined) add('always', schema.const);
    if (schema.default !== undefined) add('default', schema.default);
    if (schema.example !== undefined) add('example', schema.example);
    if (Array.isArray(schema.examples) && schema.examples.length) add('example', schema.examples[0]);
    const items = schema.items && !isComplex(resolveShallow(schema.items)) && constraints(schema.items, depth + 1);
    if (items) out.push(el('span', { className: 'constraint' }, 'items: ', items));
    return out.length ? el('div', { className: 'constraints' }, out) : null;
  }

  // A <details> whose body is built when first opened: keeps the page small (every error
  // response shares one Problem schema) and makes recursive schemas safe to expand by hand.
  function lazyDetails(summary, build, open, className) {
    const details = el('details', { className }, el('summary', null, summary));
    let built = false;
    const fill = () => {
      if (built || !details.open) return;
      built = true;
      details.append(build());
    };
    details.addEventListener('toggle', fill);
    if (open) {
      details.open = true;
      fill();
    }
    return details;
  }

  // The full rendering of a schema. `chain` holds the named schemas being expanded above, so a
  // schema that contains itself is shown as a link instead of expanded again.
  function schemaBlock(raw, depth, chain) {
    const { schema, nullable } = unwrapNullable(raw);
    if (depth > MAX_DEPTH) return el('p', { className: 'muted' }, 'Nested too deep to show here.');
    if (schema.$ref) {
      const name = refName(schema.$ref);
      const target = name && named(name);
      if (!target) return el('p', null, typeLine(schema));
      if (chain.includes(name)) return el('p', { className: 'muted' }, schemaLink(name), ' (recursive, see above)');
      return el('div', { className: 'schema' },
        el('p', { className: 'schema-name' }, schemaLink(name), nullable ? ' | null' : ''),
        prose(target.description),
        isComplex(target) ? schemaBlock(target, depth + 1, chain.concat(name)) : constraints(schema));
    }
    const merged = schema.allOf && mergeAllOf(schema.allOf, chain);
    if (merged) return propertyTable(merged, depth, chain);
    for (const [key, label] of [['allOf', 'All of'], ['oneOf', 'One of'], ['anyOf', 'Any of']]) {
      if (!Array.isArray(schema[key])) continue;
      return el('div', { className: 'variants' }, el('p', null, label + (nullable ? ' (or null):' : ':')),
        el('ol', null, schema[key].map((s) => el('li', null, nested(s, depth + 1, chain)))));
    }
    if (schema.properties) return propertyTable(schema, depth, chain);
    const items = schema.items && isComplex(resolveShallow(schema.items));
    return el('div', { className: 'schema' }, el('p', null, typeLine(raw)), constraints(schema),
      items ? schemaBlock(schema.items, depth + 1, chain) : null);
  }

  // allOf of objects (utoipa's shape for #[serde(flatten)]) reads best as one table.
  function mergeAllOf(list, chain) {
    const merged = { type: 'object', properties: {}, required: [] };
    for (const part of list) {
      const name = refName(part.$ref);
      if (name && chain.includes(name)) return null;
      let schema = resolveShallow(part);
      if (schema && schema.allOf) schema = mergeAllOf(schema.allOf, name ? chain.concat(name) : chain);
      if (!schema || !schema.properties) return null;
      Object.assign(merged.properties, schema.properties);
      merged.required.push(...(schema.required || []));
    }
    return merged;
  }

  // A property's own block, if it has one: inline objects are expanded, named ones on demand.
  function nested(raw, depth, chain) {
    const { schema } = unwrapNullable(raw);
    const name = refName(schema.$ref) || refName(schema.items && schema.items.$ref);
    const target = name && named(name);
    if (target && isComplex(target)) {
      if (chain.includes(name)) return el('span', null, typeLine(raw), el('span', { className: 'muted' }, ' (recursive)'));
      // No link in the summary: a click there should expand, not jump away.
      return lazyDetails(['fields of ', code(name)],
        () => schemaBlock(target, depth + 1, chain.concat(name)), false, 'nested');
    }
    if (!name && isComplex(schema)) return schemaBlock(schema, depth, chain);
    return el('span', null, typeLine(raw), constraints(raw));
  }

  function propertyTable(schema, depth, chain) {
    const required = new Set(schema.required || []);
    const rows = Object.entries(schema.properties || {}).map(([prop, raw]) => {
      const { schema: inner } = unwrapNullable(raw);
      const complex = isComplex(inner) || isComplex(resolveShallow(inner));
      return el('tr', null,
        el('td', { className: 'prop' }, code(prop),
          required.has(prop) && flag('required', 'required'),
          inner.readOnly && flag('read-only'),
          inner.writeOnly && flag('write-only'),
          inner.deprecated && flag('deprecated', 'deprecated')),
        el('td', null, typeLine(raw)),
        el('td', null, prose(inner.description), complex ? nested(raw, depth + 1, chain) : constraints(raw)));
    });
    const extra = schema.additionalProperties;
    if (extra && typeof extra === 'object' && Object.keys(extra).length) {
      rows.push(el('tr', null, el('td', { className: 'prop' }, el('em', null, 'other keys')),
        el('td', null, typeLine(extra)), el('td', null, constraints(extra))));
    }
    if (!rows.length) return el('p', null, typeLine(schema));
    return table(['Field', 'Type', 'Description'], rows);
  }

  // --- Operations ------------------------------------------------------------------------

  // Parameters, bodies, responses and headers may be refs to #/components/<kind>/<name>.
  function deref(obj, kind) {
    const prefix = '#/components/' + kind + '/';
    for (let hops = 0; obj && typeof obj.$ref === 'string' && obj.$ref.startsWith(prefix) && hops < 5; hops++) {
      const found = ((spec.components || {})[kind] || {})[decodeURIComponent(obj.$ref.slice(prefix.length))];
      if (!found) break;
      obj = found;
    }
    return obj || {};
  }

  function examplesOf(media) {
    const out = [];
    if (media.example !== undefined) out.push(el('pre', { className: 'example' }, pretty(media.example)));
    for (const [name, raw] of Object.entries(media.examples || {})) {
      const example = deref(raw, 'examples');
      out.push(el('p', { className: 'example-name' }, example.summary || name), prose(example.description));
      if (example.value !== undefined) out.push(el('pre', { className: 'example' }, pretty(example.value)));
      else if (example.externalValue) out.push(el('p', null, 'See ', code(example.externalValue)));
    }
    return out.length ? el('div', { className: 'examples' }, el('h5', null, 'Example'), out) : null;
  }

  function contentBlock(content) {
    return Object.entries(content || {}).map(([type, media]) => el('div', { className: 'media' },
      el('p', { className: 'content-type' }, code(type)),
      media.schema ? schemaBlock(media.schema, 0, []) : null,
      examplesOf(media)));
  }

  // `security` on the operation, else the document's; none, or only `{}`, means public.
  function securityText(op) {
    const requirements = op.security || spec.security || [];
    const options = requirements.map((req) => Object.entries(req || {})
      .map(([scheme, scopes]) => (scopes && scopes.length ? scheme + ' (' + scopes.join(', ') + ')' : scheme))
      .join(' + ') || 'public');
    return options.some((o) => o !== 'public') ? options.join(' or ') : 'public';
  }

  function parameterTable(params) {
    return table(['Name', 'In', 'Type', 'Description'], params.map((p) => el('tr', null,
      el('td', { className: 'prop' }, code(p.name),
        p.required && flag('required', 'required'), p.deprecated && flag('deprecated', 'deprecated')),
      el('td', null, p.in),
      el('td', null, p.schema ? typeLine(p.schema) : 'see content'),
      el('td', null, prose(p.description), p.schema && constraints(p.schema), p.content && contentBlock(p.content)))));
  }

  // An operation's parameters: the path's, unless the operation redefines one (same name and in).
  function parametersOf(op) {
    const own = (op.op.parameters || []).map((p) => deref(p, 'parameters'));
    const inherited = op.pathParams.map((p) => deref(p, 'parameters'))
      .filter((p) => !own.some((o) => o.name === p.name && o.in === p.in));
    return inherited.concat(own);
  }

  function responseBlock(status, raw, byOperationId) {
    const response = deref(raw, 'responses');
    const headers = Object.entries(response.headers || {}).map(([name, h]) => [name, deref(h, 'headers')]);
    const links = Object.entries(response.links || {}).map(([name, l]) => [name, deref(l, 'links')]);
    const linkTarget = (link) => (byOperationId[link.operationId]
      ? el('a', { href: '#' + byOperationId[link.operationId] }, link.operationId)
      : code(link.operationId || link.operationRef || '?'));
    const body = () => el('div', { className: 'response-body' },
      contentBlock(response.content),
      headers.length ? [el('h5', null, 'Headers'), table(null, headers.map(([name, h]) => el('tr', null,
        el('td', { className: 'prop' }, code(name), h.required && flag('required', 'required')),
        el('td', null, h.schema && typeLine(h.schema)),
        el('td', null, prose(h.description)))))] : null,
      links.length ? [el('h5', null, 'Links'), el('ul', null, links.map(([name, link]) => el('li', null,
        el('strong', null, name), ' → ', linkTarget(link),
        link.parameters ? [' with ', code(JSON.stringify(link.parameters))] : null,
        prose(link.description))))] : null,
      response.content || headers.length || links.length ? null : el('p', { className: 'muted' }, 'No body.'));
    const kind = /^2/.test(status) ? 'ok' : /^[45]/.test(status) ? 'error' : 'other';
    // Successes start open; errors, mostly the shared problem shape, start closed.
    return lazyDetails([el('span', { className: 'status ' + kind }, status), ' ', inline(response.description)],
      body, kind === 'ok', 'response');
  }

  function operationBlock(op, byOperationId) {
    const params = parametersOf(op);
    const body = op.op.requestBody && deref(op.op.requestBody, 'requestBodies');
    const security = securityText(op.op);
    return el('section', { className: 'operation', id: op.anchor },
      el('h3', null, el('span', { className: 'method ' + op.method }, op.method.toUpperCase()), ' ',
        el('code', { className: 'path' }, op.path)),
      prose(op.op.summary, 'prose summary'),
      op.op.deprecated ? el('p', null, flag('deprecated', 'deprecated')) : null,
      prose(op.op.description),
      el('p', { className: 'meta' }, 'Security: ', flag(security, security === 'public' ? 'public' : null),
        op.op.operationId ? [' · operationId ', code(op.op.operationId)] : null),
      params.length ? [el('h4', null, 'Parameters'), parameterTable(params)] : null,
      body ? [el('h4', null, 'Request body', body.required ? flag('required', 'required') : null),
        prose(body.description), contentBlock(body.content)] : null,
      el('h4', null, 'Responses'),
      Object.entries(op.op.responses || {}).map(([status, r]) => responseBlock(status, r, byOperationId)));
  }

  function collectOperations() {
    const ops = [];
    for (const [path, item] of Object.entries(spec.paths || {})) {
      for (const method of METHODS) {
        if (item[method]) ops.push({ path, method, op: item[method], pathParams: item.parameters || [] });
      }
    }
    return ops;
  }

  // Operations by tag: the document's tag order first, then tags only operations name.
  function groupByTag(ops) {
    const groups = new Map();
    for (const tag of spec.tags || []) groups.set(tag.name, { name: tag.name, description: tag.description, ops: [] });
    for (const op of ops) {
      for (const name of op.op.tags && op.op.tags.length ? op.op.tags : ['other']) {
        if (!groups.has(name)) groups.set(name, { name, description: '', ops: [] });
        groups.get(name).ops.push(op);
      }
    }
    return [...groups.values()].filter((g) => g.ops.length);
  }

  // --- Page ------------------------------------------------------------------------------

  function navigation(groups, schemaNames) {
    const search = el('input', {
      type: 'search', placeholder: 'Filter: path, summary, operationId, schema', 'aria-label': 'Filter the navigation',
    });
    const entry = (text, li) => {
      li.dataset.search = text.toLowerCase();
      return li;
    };
    const lists = groups.map((g) => el('div', { className: 'nav-group' },
      el('a', { className: 'nav-tag', href: '#' + g.anchor }, g.name),
      g.description ? el('p', { className: 'nav-tag-desc' }, g.description) : null,
      el('ul', null, g.ops.map((op) => entry([op.path, op.op.summary || '', op.op.operationId || ''].join(' '),
        el('li', null, el('a', { href: '#' + op.anchor },
          el('span', { className: 'method ' + op.method }, op.method.toUpperCase()), ' ',
          el('code', { className: 'path' }, op.path),
          el('span', { className: 'nav-summary' }, (op.op.summary || '').split('\n')[0]))))))));
    if (schemaNames.length) {
      lists.push(el('div', { className: 'nav-group' },
        el('a', { className: 'nav-tag', href: '#schemas' }, 'Schemas'),
        el('ul', null, schemaNames.map((name) =>
          entry(name, el('li', null, el('a', { href: '#' + schemaId(name) }, code(name))))))));
    }
    // Filtering only hides navigation entries (and groups left empty); the content stays.
    search.addEventListener('input', () => {
      const q = search.value.trim().toLowerCase();
      for (const group of lists) {
        let shown = 0;
        for (const li of group.querySelectorAll('li')) {
          li.hidden = q !== '' && !li.dataset.search.includes(q);
          if (!li.hidden) shown++;
        }
        group.hidden = shown === 0;
      }
    });
    return el('nav', { className: 'sidebar', 'aria-label': 'Operations' }, search, lists);
  }

  function render(root) {
    const groups = groupByTag(collectOperations());
    const schemas = Object.entries((spec.components && spec.components.schemas) || {});
    const byOperationId = {};
    // Schema ids are reserved first: links to them are built from the name alone.
    for (const [name] of schemas) uniqueId(schemaId(name));
    for (const g of groups) g.anchor = uniqueId('tag-' + g.name);
    // An operation is shown once, under its first tag; its anchor is its operationId.
    for (const g of groups) {
      for (const op of g.ops) {
        if (op.anchor) continue;
        op.anchor = uniqueId(op.op.operationId || op.method + '-' + op.path);
        op.home = g;
        const id = op.op.operationId;
        if (id && !byOperationId[id]) byOperationId[id] = op.anchor;
      }
    }
    const info = spec.info || {};
    const main = el('main', { className: 'content' },
      el('header', null,
        el('h1', null, info.title || 'API', info.version ? el('span', { className: 'version' }, info.version) : null),
        prose(info.description),
        el('p', null, 'OpenAPI ', spec.openapi || '?', ' · ', el('a', { href: SPEC_URL }, 'openapi.json'))),
      groups.map((g) => el('section', { className: 'tag', id: g.anchor },
        el('h2', null, g.name), prose(g.description),
        g.ops.filter((op) => op.home === g).map((op) => operationBlock(op, byOperationId)))),
      el('section', { className: 'schemas', id: 'schemas' }, el('h2', null, 'Schemas'),
        schemas.map(([name, schema]) => el('section', { className: 'component', id: schemaId(name) },
          el('h3', null, name), prose(schema.description), schemaBlock(schema, 0, [name])))));
    root.replaceChildren(navigation(groups, schemas.map(([name]) => name)), main);
    // The anchor in the address did not exist yet when the browser looked for it.
    let wanted = location.hash.slice(1);
    try {
      wanted = decodeURIComponent(wanted);
    } catch (e) {
      // A malformed escape: look for the id as written.
    }
    const target = wanted && document.getElementById(wanted);
    if (target) target.scrollIntoView();
  }

  function fail(root, error) {
    root.replaceChildren(el('main', { className: 'content' }, el('h1', null, 'API reference'),
      el('p', { className: 'error' }, 'Could not load the OpenAPI document: ', String((error && error.message) || error)),
      el('p', null, 'The raw document is at ', el('a', { href: SPEC_URL }, SPEC_URL), '.')));
  }

  const root = document.getElementById('docs');
  fetch(SPEC_URL, { headers: { accept: 'application/json' } })
    .then((response) => {
      if (!response.ok) throw new Error('HTTP ' + response.status);
      return response.json();
    })
    .then((doc) => {
      spec = doc || {};
      render(root);
    })
    .catch((error) => fail(root, error));
})();
