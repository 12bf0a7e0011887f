#!/usr/bin/env node
// Times flagd's own JS evaluator, @openfeature/flagd-core (pinned in package.json), the same
// way bench/flags-eval times pier-flags: every flag of a flagd document evaluated for every
// context, --passes times a round, for --rounds rounds after one warm-up round (which also lets
// V8 compile the hot paths). Flags are resolved with FlagdCore.resolve(type, …), the synchronous
// call flagd's in-process providers make, typed by each flag's variants; no provider, no network.
// flagd-core compiles each targeting rule to a JS function when the document is loaded (its
// default, json-logic-engine's build mode).
//
// stdout: one JSON object (the median round's ns per evaluation and evaluations/s).
// --results FILE writes the warm-up round's resolutions, one JSON line per (context, flag), in
// the form bench/flags-eval writes them, for compare.mjs.
//
// Usage: node bench.mjs --flags FILE --contexts FILE [--passes 5] [--rounds 7] [--results FILE]

import { readFileSync, writeFileSync } from "node:fs";
import process from "node:process";
import { parseArgs } from "node:util";

import { FlagdCore } from "@openfeature/flagd-core";

const { values: args } = parseArgs({
  options: {
    flags: { type: "string" },
    contexts: { type: "string" },
    passes: { type: "string", default: "5" },
    rounds: { type: "string", default: "7" },
    results: { type: "string" },
  },
});
if (!args.flags || !args.contexts) {
  console.error("usage: node bench.mjs --flags FILE --contexts FILE [--passes N] [--rounds N] [--results FILE]");
  process.exit(2);
}
const passes = Number(args.passes);
const rounds = Number(args.rounds);

// The installed version of a package (json-logic-engine exports no package.json to require).
const versionOf = (name) =>
  JSON.parse(readFileSync(new URL(`./node_modules/${name}/package.json`, import.meta.url), "utf8")).version;

const documentText = readFileSync(args.flags, "utf8");
const contexts = JSON.parse(readFileSync(args.contexts, "utf8"));
const core = new FlagdCore();
core.setConfigurations(documentText);

// Each flag's key, type and the caller's default of that type, in key order as Pier's are.
const DEFAULTS = { boolean: false, string: "", number: 0, object: {} };
const flags = [...core.getFlags().entries()]
  .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  .map(([key, flag]) => {
    const type = typeof flag.variants.values().next().value;
    return { key, type, fallback: DEFAULTS[type] };
  });

function pass(record) {
  for (let index = 0; index < contexts.length; index++) {
    const context = contexts[index];
    for (const flag of flags) {
      record(index, flag, core.resolve(flag.type, flag.key, flag.fallback, context));
    }
  }
}

// The warm-up round, which also gives the resolutions to compare. A resolution without a
// variant carries the caller's default as its value; Pier reports no value then.
const reasons = {};
const lines = [];
pass((index, flag, resolution) => {
  reasons[resolution.reason] = (reasons[resolution.reason] ?? 0) + 1;
  if (args.results) {
    lines.push(
      JSON.stringify({
        context: index,
        flag: flag.key,
        value: resolution.variant === undefined ? null : resolution.value,
        variant: resolution.variant ?? null,
        reason: resolution.reason,
        error: resolution.errorCode ?? null,
      }),
    );
  }
});
if (args.results) writeFileSync(args.results, lines.join("\n") + "\n");

let sink = 0;
const evaluations = passes * flags.length * contexts.length;
const roundNs = [];
for (let round = 0; round < rounds; round++) {
  const start = process.hrtime.bigint();
  for (let p = 0; p < passes; p++) {
    pass((_index, _flag, resolution) => {
      sink += resolution.reason.length;
    });
  }
  roundNs.push(Number(process.hrtime.bigint() - start) / evaluations);
}
const ns = [...roundNs].sort((a, b) => a - b)[Math.floor(rounds / 2)];
const tenth = (x) => Math.round(x * 10) / 10;
console.log(
  JSON.stringify({
    evaluator: "flagd-core-js",
    flagd_core: versionOf("@openfeature/flagd-core"),
    json_logic_engine: versionOf("json-logic-engine"),
    node: process.versions.node,
    flags: flags.length,
    contexts: contexts.length,
    evaluations_per_round: evaluations,
    rounds,
    ns_per_evaluation: tenth(ns),
    evaluations_per_second: Math.round(1e9 / ns),
    round_ns_per_evaluation: roundNs.map(tenth),
    reasons,
    sink: sink > 0,
  }),
);
