#!/usr/bin/env node
// Writes the benchmark's input, the same on every run (a seeded generator):
//   DIR/flags.json     a flagd document of 100 flags and 4 shared $evaluators
//   DIR/contexts.json  1,000 evaluation contexts
//
// The flags mix what a product team keeps in flagd: static flags of every variant type (some
// disabled: kill switches), `fractional` rollouts of several weights bucketed by the targeting
// key or by another attribute, `sem_ver` gates, `starts_with`/`ends_with`, `in`, comparisons on
// context attributes (also nested ones, `company.size`), nested `if`, `$evaluators` refs, and
// flags without a default variant. The contexts carry a targetingKey (a few lack one or have an
// empty one), email (a few with non-ASCII letters), version (also `v`-prefixed, two-part and
// pre-release), country, age, plan, platform, build number and company.
//
// Usage: node generate.mjs DIR [FLAGS] [CONTEXTS]   (defaults 100 and 1000)

import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import process from "node:process";

const [dir, flagCount = "100", contextCount = "1000"] = process.argv.slice(2);
if (!dir) {
  console.error("usage: node generate.mjs DIR [FLAGS] [CONTEXTS]");
  process.exit(2);
}

// mulberry32: small, seeded, the same in every Node.js.
function generator(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const below = (n) => Math.floor(next() * n);
  return { below, pick: (choices) => choices[below(choices.length)], chance: (p) => next() < p };
}

const COUNTRIES = ["DE", "FR", "US", "NL", "JP", "IE", "BR", "GB", "IN", "ES"];
const PLANS = ["free", "pro", "team", "enterprise"];
const PLATFORMS = ["ios", "android", "web"];

const evaluators = {
  is_staff: { ends_with: [{ var: "email" }, "@pier.dev"] },
  is_eu: { in: [{ var: "country" }, ["DE", "FR", "NL", "IE", "ES"]] },
  is_paying: { in: [{ var: "plan" }, ["pro", "team", "enterprise"]] },
  is_mobile: { in: [{ var: "platform" }, ["ios", "android"]] },
};

// Each template makes one flag from a generator; flag i uses template i mod templates.length.
const templates = [
  // A static boolean; one in four is switched off.
  (g) => ({
    state: g.chance(0.25) ? "DISABLED" : "ENABLED",
    variants: { on: true, off: false },
    defaultVariant: g.pick(["on", "off"]),
  }),
  // A percentage rollout on the targeting key.
  (g) => {
    const p = g.pick([1, 5, 10, 25, 50, 90]);
    return {
      state: "ENABLED",
      variants: { on: true, off: false },
      defaultVariant: "off",
      targeting: { fractional: [["on", p], ["off", 100 - p]] },
    };
  },
  // A static string, number or object.
  (g) =>
    g.pick([
      { state: "ENABLED", variants: { blue: "#1d4ed8", green: "#15803d" }, defaultVariant: "blue" },
      { state: "ENABLED", variants: { small: 10, large: 250, huge: 5000 }, defaultVariant: "large" },
      {
        state: "ENABLED",
        variants: { v1: { endpoint: "/v1", timeoutMs: 800 }, v2: { endpoint: "/v2", timeoutMs: 300 } },
        defaultVariant: "v1",
      },
    ]),
  // An A/B/C test of strings, uneven weights.
  (g) => {
    const [a, b] = [1 + g.below(40), 1 + g.below(40)];
    return {
      state: "ENABLED",
      variants: { control: "control", treatment_a: "a", treatment_b: "b" },
      defaultVariant: "control",
      targeting: { fractional: [["control", a], ["treatment_a", b], ["treatment_b", 100 - a - b]] },
    };
  },
  // A version gate, with one of sem_ver's operators.
  (g) => {
    const [op, version] = g.pick([[">=", "2.1.0"], ["<", "1.5.0"], ["^", "2.0.0"], ["~", "3.1.0"], ["=", "2.0.0"]]);
    return {
      state: "ENABLED",
      variants: { new: true, old: false },
      defaultVariant: "old",
      targeting: { if: [{ sem_ver: [{ var: "version" }, op, version] }, "new", "old"] },
    };
  },
  // Staff first, then the EU adults, then teenagers; a nested if and $evaluators.
  () => ({
    state: "ENABLED",
    variants: {
      staff: { text: "Hi team", size: 1 },
      eu: { text: "Hallo", size: 2 },
      teen: { text: "Hey", size: 3 },
      plain: {},
    },
    defaultVariant: "plain",
    targeting: {
      if: [
        { $ref: "is_staff" }, "staff",
        { and: [{ $ref: "is_eu" }, { ">=": [{ var: "age" }, 18] }] }, "eu",
        { if: [{ "<": [13, { var: "age" }, 20] }, "teen", null] },
      ],
    },
  }),
  // Beta testers by targeting key, else a rollout: no default variant.
  (g) => ({
    state: "ENABLED",
    variants: { yes: true, no: false },
    targeting: {
      if: [
        { starts_with: [{ var: "targetingKey" }, "beta-"] }, "yes",
        { $ref: "is_staff" }, "yes",
        { fractional: [["yes", g.pick([5, 20])], ["no", 80]] },
      ],
    },
  }),
  // A number by plan and company size.
  () => ({
    state: "ENABLED",
    variants: { low: 100, mid: 1000, high: 10000 },
    defaultVariant: "low",
    targeting: {
      if: [
        { "==": [{ var: "plan" }, "enterprise"] }, "high",
        { and: [{ $ref: "is_paying" }, { ">": [{ var: "company.size" }, 50] }] }, "mid",
        null,
      ],
    },
  }),
  // A rollout bucketed by email rather than user (with a fallback), in one market only.
  (g) => ({
    state: "ENABLED",
    variants: { on: "on", off: "off" },
    defaultVariant: "off",
    targeting: {
      if: [
        { in: [{ var: "country" }, [g.pick(COUNTRIES), g.pick(COUNTRIES)]] },
        { fractional: [{ var: ["email", "anonymous"] }, ["on", 50], ["off", 50]] },
        "off",
      ],
    },
  }),
  // Mobile builds at or above a build number, string variants.
  (g) => ({
    state: "ENABLED",
    variants: { native: "native", webview: "webview" },
    defaultVariant: "webview",
    targeting: {
      if: [
        { and: [{ $ref: "is_mobile" }, { ">=": [{ var: "build" }, 4000 + 100 * g.below(20)] }] },
        "native",
        "webview",
      ],
    },
  }),
  // A rollout per company (bucketing value built with cat and $flagd.flagKey).
  (g) => ({
    state: "ENABLED",
    variants: { on: true, off: false },
    defaultVariant: "off",
    targeting: {
      fractional: [
        { cat: [{ var: "$flagd.flagKey" }, { var: ["company.id", "none"] }] },
        ["on", g.pick([10, 30, 70])],
        ["off", 30],
      ],
    },
  }),
  // Email domain and substring rules; `in` on a string.
  () => ({
    state: "ENABLED",
    variants: { internal: "internal", partner: "partner", public: "public" },
    defaultVariant: "public",
    targeting: {
      if: [
        { $ref: "is_staff" }, "internal",
        { in: ["partner", { var: ["email", ""] }] }, "partner",
        { ends_with: [{ var: ["email", ""] }, ".de"] }, "partner",
        "public",
      ],
    },
  }),
];

function flags(count) {
  const g = generator(30);
  const out = {};
  for (let i = 0; i < count; i++) {
    const template = i % templates.length;
    out[`flag-${String(i).padStart(3, "0")}-t${template}`] = templates[template](g);
  }
  return out;
}

function word(g) {
  const letters = "abcdefghijklmnopqrstuvwxyz0123456789";
  return Array.from({ length: 4 + g.below(8) }, () => letters[g.below(letters.length)]).join("");
}

function version(g) {
  const [a, b, c] = [g.below(4), g.below(4), g.below(6)];
  switch (g.below(10)) {
    case 0:
      return `v${a}.${b}.${c}`;
    case 1:
      return `${a}.${b}`;
    case 2:
      return `${a}.${b}.${c}-rc.${g.below(3)}`;
    default:
      return `${a}.${b}.${c}`;
  }
}

function contexts(count) {
  const g = generator(8);
  return Array.from({ length: count }, (_, i) => {
    const context = {};
    const kind = g.below(50);
    if (kind === 0) {
      // no targetingKey
    } else if (kind === 1) {
      context.targetingKey = "";
    } else if (kind < 5) {
      context.targetingKey = `beta-${word(g)}`;
    } else {
      context.targetingKey = `user-${i}-${word(g)}`;
    }
    if (g.chance(0.9)) {
      const name = g.chance(0.03) ? g.pick(["jürgen", "zoë", "søren", "renée"]) : word(g);
      const domain = g.pick(["pier.dev", "example.com", "mail.de", "partner.example.org", "gmail.com"]);
      context.email = `${name}@${domain}`;
    }
    if (g.chance(0.85)) context.version = version(g);
    if (g.chance(0.95)) context.country = g.pick(COUNTRIES);
    if (g.chance(0.8)) context.age = 10 + g.below(70);
    if (g.chance(0.9)) context.plan = g.pick(PLANS);
    context.platform = g.pick(PLATFORMS);
    if (context.platform !== "web") context.build = 3800 + g.below(2500);
    if (g.chance(0.7)) context.company = { id: `co-${g.below(200)}`, size: 1 + g.below(500) };
    return context;
  });
}

mkdirSync(dir, { recursive: true });
const document = {
  $schema: "https://flagd.dev/schema/v0/flags.json",
  $evaluators: evaluators,
  flags: flags(Number(flagCount)),
};
writeFileSync(path.join(dir, "flags.json"), JSON.stringify(document, null, 1));
writeFileSync(path.join(dir, "contexts.json"), JSON.stringify(contexts(Number(contextCount))));
