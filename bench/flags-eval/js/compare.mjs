#!/usr/bin/env node
// Holds two evaluators' resolutions against each other: the --results files of bench/flags-eval
// (Pier) and bench.mjs (flagd-core), one JSON line per (context, flag). Two resolutions agree when
// their value (JSON equality: object keys in any order, 1 and 1.0 alike), variant and reason are
// equal; error codes are counted apart.
//
// stdout: one JSON object: how many were compared, how many disagree, counted by flag and by
// reason pair, and the first few disagreements with their contexts.
// Exit status 0 either way; a missing or unmatched line is an error (status 1).
//
// Usage: node compare.mjs PIER.jsonl FLAGD.jsonl CONTEXTS.json [--examples N]

import { readFileSync } from "node:fs";
import process from "node:process";
import { isDeepStrictEqual, parseArgs } from "node:util";

const { values: options, positionals } = parseArgs({
  allowPositionals: true,
  options: { examples: { type: "string", default: "10" } },
});
const [pierFile, flagdFile, contextsFile] = positionals;
if (!contextsFile) {
  console.error("usage: node compare.mjs PIER.jsonl FLAGD.jsonl CONTEXTS.json [--examples N]");
  process.exit(2);
}

const read = (file) =>
  new Map(
    readFileSync(file, "utf8")
      .split("\n")
      .filter((line) => line.length > 0)
      .map((line) => JSON.parse(line))
      .map((r) => [`${r.context}\u0000${r.flag}`, r]),
  );
const pier = read(pierFile);
const flagd = read(flagdFile);
const contexts = JSON.parse(readFileSync(contextsFile, "utf8"));
if (pier.size !== flagd.size) {
  console.error(`pier resolved ${pier.size} (context, flag) pairs, flagd ${flagd.size}`);
  process.exit(1);
}

const tally = (counts, key) => {
  counts[key] = (counts[key] ?? 0) + 1;
};
const byFlag = {};
const byReasons = {};
const examples = [];
let disagreements = 0;
let errorCodes = 0;
for (const [key, ours] of pier) {
  const theirs = flagd.get(key);
  if (!theirs) {
    console.error(`flagd has no resolution of context ${ours.context}, flag ${ours.flag}`);
    process.exit(1);
  }
  if (ours.error !== theirs.error) errorCodes++;
  const agree =
    isDeepStrictEqual(ours.value, theirs.value) && ours.variant === theirs.variant && ours.reason === theirs.reason;
  if (agree) continue;
  disagreements++;
  tally(byFlag, ours.flag);
  tally(byReasons, `${ours.reason} / ${theirs.reason}`);
  if (examples.length < Number(options.examples)) {
    const pick = ({ value, variant, reason, error }) => ({ value, variant, reason, error });
    examples.push({ flag: ours.flag, context: contexts[ours.context], pier: pick(ours), flagd: pick(theirs) });
  }
}
console.log(
  JSON.stringify({
    compared: pier.size,
    disagreements,
    error_code_differences: errorCodes,
    by_flag: byFlag,
    by_reasons_pier_flagd: byReasons,
    examples,
  }),
);
