#!/usr/bin/env node
// Baseline throughput benchmark of graphile-worker against a local PostgreSQL.
//
// Measurements (each on a freshly dropped and recreated database):
//   enqueue     bulk enqueue of N no-op jobs through WorkerUtils.addJobs
//               (one graphile_worker.add_jobs() call per batch)
//   perf        burn-down of N pre-enqueued jobs by one worker process using
//               the settings of graphile-worker's own perfTest / docs
//   default     burn-down of M pre-enqueued jobs by one worker process using
//               graphile-worker's default settings
//   perf-multi  like perf, but with K worker processes at once (the upstream
//               perfTest runs 4); not part of "all"
//   addjob      single enqueues: A jobs through WorkerUtils.addJob, one call
//               (one transaction) per job, C calls in flight at once; reports
//               jobs/s and per-call latency; not part of "all"
//
// Options: argv `--name=value` (or `--name value`) or the environment variable
// shown in brackets. See README.md.
//   --jobs          [BENCH_JOBS]            N for enqueue/perf/perf-multi (100000)
//   --default-jobs  [BENCH_DEFAULT_JOBS]    M for the default-settings burn-down (20000)
//   --mode          [BENCH_MODE]            all | enqueue | perf | default | perf-multi |
//                                           addjob | full, or a comma-separated list (all)
//   --batch         [BENCH_BATCH_SIZE]      jobs per add_jobs call (10000)
//   --processes     [BENCH_PERF_PROCESSES]  worker processes for perf-multi (4)
//   --timeout       [BENCH_TIMEOUT_SECONDS] give up on one burn-down after this (600)
//   --addjob-jobs   [BENCH_ADDJOB_JOBS]     A for addjob (20000)
//   --addjob-concurrency [BENCH_ADDJOB_CONCURRENCY] C for addjob (10)
//   admin connection [PIER_BENCH_DATABASE_URL] (postgres://postgres@127.0.0.1:5432/test)
//
// stdout carries only JSON lines, one per measurement; progress goes to stderr.

import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

// graphile-worker reads NO_LOG_SUCCESS when its modules load; the upstream
// perfTest sets it so that no line is logged per completed job. Set it before
// the dynamic import below.
process.env.NO_LOG_SUCCESS = "1";

const { run, makeWorkerUtils, Logger } = await import("graphile-worker");
const pg = (await import("pg")).default;

const require = createRequire(import.meta.url);
const SCRIPT = fileURLToPath(import.meta.url);
const GW_VERSION = JSON.parse(
  readFileSync(
    path.join(path.dirname(require.resolve("graphile-worker")), "..", "package.json"),
    "utf8",
  ),
).version;

const BENCH_DB = "pier_bench_graphile";
const TASK = "noop";
const POLL_MS = 100;

// ---------------------------------------------------------------- settings

// Settings of graphile-worker's perfTest (perfTest/graphile.config.js in the
// graphile/worker repository) and of the "Performance" page of its docs
// (worker.graphile.org/docs/performance). The docs list
// concurrentJobs 24, maxPoolSize 25, localQueue.size 500,
// completeJobBatchDelay 0, failJobBatchDelay 0; the perfTest config adds
// localQueue.refetchDelay.durationMs 10 and gracefulShutdownAbortTimeout 2500.
// pollInterval is not set there, so it stays at its default (2000 ms).
const PERF_SETTINGS = Object.freeze({
  concurrentJobs: 24,
  maxPoolSize: 25,
  localQueue: { size: 500, refetchDelay: { durationMs: 10 } },
  completeJobBatchDelay: 0,
  failJobBatchDelay: 0,
  gracefulShutdownAbortTimeout: 2500,
});

// Nothing passed: graphile-worker's own defaults apply. For the record, the
// effective values in 0.17.x (src/config.ts and the option docs) are:
const DEFAULT_SETTINGS = Object.freeze({});
const DEFAULT_SETTINGS_EFFECTIVE = Object.freeze({
  concurrentJobs: 1,
  maxPoolSize: 10,
  pollInterval: 2000,
  localQueue: { size: -1 },
  completeJobBatchDelay: -1,
  failJobBatchDelay: -1,
});

// ---------------------------------------------------------------- options

function parseArgv(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) throw new Error(`unexpected argument: ${a}`);
    const eq = a.indexOf("=");
    if (eq > 0) out[a.slice(2, eq)] = a.slice(eq + 1);
    else if (i + 1 < argv.length && !argv[i + 1].startsWith("--")) out[a.slice(2)] = argv[++i];
    else out[a.slice(2)] = "true";
  }
  return out;
}

const args = parseArgv(process.argv.slice(2));

function opt(name, envName, fallback) {
  if (args[name] !== undefined) return args[name];
  if (process.env[envName] !== undefined && process.env[envName] !== "") return process.env[envName];
  return fallback;
}

function posInt(name, value) {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer, got ${value}`);
  return n;
}

function log(...parts) {
  process.stderr.write(`[bench ${new Date().toISOString()}] ${parts.join(" ")}\n`);
}

// Only loopback addresses are allowed as targets.
function assertLocal(urlString) {
  const u = new URL(urlString);
  const host = u.hostname.replace(/^\[|\]$/g, "");
  if (!(host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host))) {
    throw new Error(`refusing non-loopback database host: ${host}`);
  }
  return u;
}

function benchUrl(adminUrl) {
  const u = assertLocal(adminUrl);
  u.pathname = `/${BENCH_DB}`;
  return u.toString();
}

// Quiet logger: graphile-worker's warnings and errors go to stderr, info and
// debug lines are dropped (stdout is reserved for the JSON results).
const quietLogger = new Logger((scope) => (level, message) => {
  if (level === "error" || level === "warning") {
    process.stderr.write(`[graphile-worker ${level}] ${message}\n`);
  }
});

const noopTaskList = { [TASK]: async () => {} };

// ---------------------------------------------------------------- child mode

// `node bench.mjs --child-worker`: one worker process of a perf-multi run.
// It runs until SIGTERM/SIGINT, or exits on its own after BENCH_CHILD_MAX_MS.
if (args["child-worker"] !== undefined) {
  const connectionString = process.env.BENCH_CHILD_DATABASE_URL;
  assertLocal(connectionString);
  const settings = JSON.parse(process.env.BENCH_CHILD_SETTINGS);
  const maxMs = posInt("BENCH_CHILD_MAX_MS", process.env.BENCH_CHILD_MAX_MS);
  const runner = await run({
    preset: { worker: { ...settings, connectionString, logger: quietLogger } },
    taskList: noopTaskList,
    noHandleSignals: true,
  });
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await runner.stop();
  };
  const guard = setTimeout(() => {
    process.stderr.write("[child] max run time reached, stopping\n");
    stop();
  }, maxMs);
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  await runner.promise;
  clearTimeout(guard);
  process.exit(0);
}

// ---------------------------------------------------------------- main mode

const ADMIN_URL = opt("admin-url", "PIER_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test");
const JOBS = posInt("jobs", opt("jobs", "BENCH_JOBS", "100000"));
const DEFAULT_JOBS = posInt("default-jobs", opt("default-jobs", "BENCH_DEFAULT_JOBS", "20000"));
const BATCH = posInt("batch", opt("batch", "BENCH_BATCH_SIZE", "10000"));
const PROCESSES = posInt("processes", opt("processes", "BENCH_PERF_PROCESSES", "4"));
const TIMEOUT_S = posInt("timeout", opt("timeout", "BENCH_TIMEOUT_SECONDS", "600"));
const ADDJOB_JOBS = posInt("addjob-jobs", opt("addjob-jobs", "BENCH_ADDJOB_JOBS", "20000"));
const ADDJOB_CONCURRENCY = posInt(
  "addjob-concurrency",
  opt("addjob-concurrency", "BENCH_ADDJOB_CONCURRENCY", "10"),
);
const MODE = String(opt("mode", "BENCH_MODE", "all"));
const DB_URL = benchUrl(ADMIN_URL);

const KNOWN = ["enqueue", "perf", "default", "perf-multi", "addjob"];
const modes = [];
for (const m of MODE.split(",").map((s) => s.trim()).filter(Boolean)) {
  const expanded =
    m === "all" ? ["enqueue", "perf", "default"] : m === "full" ? ["enqueue", "perf", "default", "perf-multi"] : [m];
  for (const e of expanded) {
    if (!KNOWN.includes(e)) throw new Error(`unknown mode: ${e} (known: all, full, ${KNOWN.join(", ")})`);
    if (!modes.includes(e)) modes.push(e);
  }
}

const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const round = (x, d) => Math.round(x * 10 ** d) / 10 ** d;

let serverVersion = null;
let serverSettings = null;
const SERVER_SETTING_NAMES = [
  "fsync",
  "synchronous_commit",
  "wal_sync_method",
  "full_page_writes",
  "shared_buffers",
  "autovacuum",
  "max_connections",
];

async function recreateDatabase() {
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  try {
    if (!serverVersion) {
      serverVersion = (await admin.query("show server_version")).rows[0].server_version;
      const { rows } = await admin.query(
        "select name, current_setting(name) as value from pg_settings where name = any($1) order by name",
        [SERVER_SETTING_NAMES],
      );
      serverSettings = Object.fromEntries(rows.map((r) => [r.name, r.value]));
    }
    await admin.query(`drop database if exists ${BENCH_DB} with (force)`);
    await admin.query(`create database ${BENCH_DB}`);
  } finally {
    await admin.end();
  }
}

async function dropDatabase() {
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  try {
    await admin.query(`drop database if exists ${BENCH_DB} with (force)`);
  } finally {
    await admin.end();
  }
}

// Fresh database with graphile-worker's schema installed.
async function freshSchema() {
  await recreateDatabase();
  const utils = await makeWorkerUtils({ connectionString: DB_URL, logger: quietLogger });
  try {
    await utils.migrate();
  } finally {
    await utils.release();
  }
}

// Enqueue `n` no-op jobs in batches of BATCH with WorkerUtils.addJobs, which
// issues one `graphile_worker.add_jobs(job_spec[])` call per batch.
async function enqueue(n) {
  const utils = await makeWorkerUtils({ connectionString: DB_URL, logger: quietLogger });
  try {
    const t0 = now();
    let done = 0;
    while (done < n) {
      const size = Math.min(BATCH, n - done);
      const specs = new Array(size);
      for (let i = 0; i < size; i++) {
        specs[i] = { identifier: TASK, payload: { id: done + i + 1 } };
      }
      await utils.addJobs(specs);
      done += size;
    }
    return (now() - t0) / 1000;
  } finally {
    await utils.release();
  }
}

// Flush dirty buffers before a timed phase so that write-back left over from
// the previous phase (e.g. 100k deleted rows) does not slow this one down.
// CHECKPOINT needs superuser or pg_checkpoint; without it we carry on.
async function checkpoint() {
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  try {
    await admin.query("checkpoint");
    return true;
  } catch (err) {
    log(`warning: CHECKPOINT failed (${err.message}); timings may be noisier`);
    return false;
  } finally {
    await admin.end();
  }
}

async function countJobs(client) {
  const { rows } = await client.query("select count(*)::int as n from graphile_worker._private_jobs");
  return rows[0].n;
}

// Poll the jobs table every POLL_MS until it is empty (bounded by TIMEOUT_S).
// Returns the time at which it was first seen empty.
async function waitUntilEmpty(client, t0, label) {
  const deadline = t0 + TIMEOUT_S * 1000;
  let lastReport = t0;
  for (;;) {
    const n = await countJobs(client);
    const t = now();
    if (n === 0) return t;
    if (t > deadline) throw new Error(`${label}: ${n} jobs still queued after ${TIMEOUT_S}s`);
    if (t - lastReport >= 5000) {
      log(`${label}: ${n} jobs left after ${((t - t0) / 1000).toFixed(1)}s`);
      lastReport = t;
    }
    await sleep(POLL_MS);
  }
}

function envInfo() {
  return {
    node: process.version,
    postgres: serverVersion,
    postgres_settings: serverSettings,
    cpus: os.cpus().length,
    platform: `${os.platform()} ${os.release()}`,
  };
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

async function measureEnqueue() {
  await freshSchema();
  const checkpointed = await checkpoint();
  log(`enqueue: adding ${JOBS} jobs in batches of ${BATCH}`);
  const seconds = await enqueue(JOBS);
  emit({
    system: "graphile-worker",
    version: GW_VERSION,
    measure: "bulk_enqueue",
    jobs: JOBS,
    seconds: round(seconds, 3),
    jobs_per_sec: Math.round(JOBS / seconds),
    settings: { api: "WorkerUtils.addJobs -> graphile_worker.add_jobs", batch_size: BATCH, payload: '{"id": i}' },
    detail: { checkpoint_before: checkpointed },
    env: envInfo(),
  });
}

// Single enqueues: n calls of WorkerUtils.addJob (each one
// `select graphile_worker.add_job(...)`, i.e. one transaction with a durable
// commit), `concurrency` of them in flight at once, sharing a pool of as many
// connections. Each call is timed from the call to its promise resolving.
async function measureAddJob(n, concurrency) {
  await freshSchema();
  const checkpointed = await checkpoint();
  const maxPoolSize = Math.max(10, concurrency);
  const utils = await makeWorkerUtils({ connectionString: DB_URL, logger: quietLogger, maxPoolSize });
  const latencies = new Float64Array(n);
  let next = 0;
  let seconds;
  try {
    // One untimed call so the schema and a connection are warm.
    await utils.addJob(TASK, { id: 0 });
    log(`addjob: adding ${n} jobs one call each, ${concurrency} in flight`);
    const loop = async () => {
      for (;;) {
        const i = next++;
        if (i >= n) return;
        const t = now();
        await utils.addJob(TASK, { id: i + 1 });
        latencies[i] = now() - t;
      }
    };
    const t0 = now();
    await Promise.all(Array.from({ length: Math.min(concurrency, n) }, loop));
    seconds = (now() - t0) / 1000;
  } finally {
    await utils.release();
  }
  // Every call must have left a job behind (plus the warm-up one).
  const client = new pg.Client({ connectionString: DB_URL });
  await client.connect();
  let stored;
  try {
    stored = await countJobs(client);
  } finally {
    await client.end();
  }
  if (stored !== n + 1) throw new Error(`addjob: ${stored} jobs stored, expected ${n + 1}`);
  const sorted = Array.from(latencies).sort((a, b) => a - b);
  const pct = (p) => round(sorted[Math.min(n - 1, Math.round((n - 1) * p))], 3);
  emit({
    system: "graphile-worker",
    version: GW_VERSION,
    measure: "single_enqueue",
    jobs: n,
    concurrency,
    seconds: round(seconds, 3),
    jobs_per_sec: Math.round(n / seconds),
    latency_ms: {
      p50: pct(0.5),
      p90: pct(0.9),
      p99: pct(0.99),
      max: round(sorted[n - 1], 3),
      mean: round(sorted.reduce((a, b) => a + b, 0) / n, 3),
    },
    settings: {
      api: "WorkerUtils.addJob -> graphile_worker.add_job (one transaction per job)",
      in_flight: concurrency,
      max_pool_size: maxPoolSize,
      payload: '{"id": i}',
    },
    detail: { checkpoint_before: checkpointed, jobs_stored: stored },
    env: envInfo(),
  });
}

// In-process burn-down: enqueue n jobs, start run(), time until the table is empty.
async function measureBurnDown(measure, n, settings, effective) {
  await freshSchema();
  log(`${measure}: enqueueing ${n} jobs`);
  const enqueueSeconds = await enqueue(n);
  const checkpointed = await checkpoint();

  let executed = 0;
  let lastExecutedAt = 0;
  const taskList = {
    [TASK]: async () => {
      executed++;
      lastExecutedAt = now();
    },
  };

  const poller = new pg.Client({ connectionString: DB_URL });
  await poller.connect();
  let runner = null;
  try {
    log(`${measure}: starting worker with ${JSON.stringify(settings)}`);
    const t0 = now();
    runner = await run({
      preset: { worker: { ...settings, connectionString: DB_URL, logger: quietLogger } },
      taskList,
      noHandleSignals: true,
    });
    const tStarted = now();
    const tEmpty = await waitUntilEmpty(poller, t0, measure);
    const seconds = (tEmpty - t0) / 1000;
    const t1 = now();
    await runner.stop();
    runner = null;
    const stopSeconds = (now() - t1) / 1000;
    if (executed !== n) log(`${measure}: warning: task ran ${executed} times for ${n} jobs`);
    emit({
      system: "graphile-worker",
      version: GW_VERSION,
      measure,
      jobs: n,
      seconds: round(seconds, 3),
      jobs_per_sec: Math.round(n / seconds),
      detail: {
        timed_from: "run() called",
        timed_until: `graphile_worker._private_jobs first seen empty (polled every ${POLL_MS} ms)`,
        worker_startup_seconds: round((tStarted - t0) / 1000, 3),
        last_task_executed_seconds: round((lastExecutedAt - t0) / 1000, 3),
        task_executions: executed,
        worker_stop_seconds: round(stopSeconds, 3),
        processes: 1,
        enqueue_seconds: round(enqueueSeconds, 3),
        checkpoint_before: checkpointed,
      },
      settings,
      effective_settings: effective,
      env: envInfo(),
    });
  } finally {
    if (runner) await runner.stop().catch(() => {});
    await poller.end();
  }
}

// Multi-process burn-down: K child processes, each one worker pool with the
// perf settings (the upstream perfTest starts 4 such processes).
async function measureBurnDownMulti(n, k, settings) {
  const measure = "burndown_perf_settings_multiprocess";
  await freshSchema();
  log(`${measure}: enqueueing ${n} jobs`);
  const enqueueSeconds = await enqueue(n);
  const checkpointed = await checkpoint();

  const poller = new pg.Client({ connectionString: DB_URL });
  await poller.connect();
  const children = [];
  const exits = [];
  try {
    log(`${measure}: starting ${k} worker processes with ${JSON.stringify(settings)}`);
    const t0 = now();
    for (let i = 0; i < k; i++) {
      const child = spawn(process.execPath, [SCRIPT, "--child-worker"], {
        stdio: ["ignore", "ignore", "inherit"],
        env: {
          ...process.env,
          BENCH_CHILD_DATABASE_URL: DB_URL,
          BENCH_CHILD_SETTINGS: JSON.stringify(settings),
          BENCH_CHILD_MAX_MS: String((TIMEOUT_S + 30) * 1000),
        },
      });
      children.push(child);
      exits.push(new Promise((resolve) => child.on("exit", (code, sig) => resolve({ code, sig }))));
    }
    const tEmpty = await waitUntilEmpty(poller, t0, measure);
    const seconds = (tEmpty - t0) / 1000;
    for (const c of children) c.kill("SIGTERM");
    let exitTimer;
    const results = await Promise.race([
      Promise.all(exits),
      new Promise((r) => {
        exitTimer = setTimeout(() => r(null), 15000);
      }),
    ]);
    clearTimeout(exitTimer);
    if (!results) log(`${measure}: warning: children did not exit within 15s`);
    emit({
      system: "graphile-worker",
      version: GW_VERSION,
      measure,
      jobs: n,
      seconds: round(seconds, 3),
      jobs_per_sec: Math.round(n / seconds),
      detail: {
        timed_from: "worker processes spawned (includes Node.js start-up of each process)",
        timed_until: `graphile_worker._private_jobs first seen empty (polled every ${POLL_MS} ms)`,
        processes: k,
        enqueue_seconds: round(enqueueSeconds, 3),
        checkpoint_before: checkpointed,
      },
      settings,
      env: envInfo(),
    });
  } finally {
    for (const c of children) {
      if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    }
    await poller.end();
  }
}

try {
  log(
    `graphile-worker ${GW_VERSION}; modes=${modes.join(",")} jobs=${JOBS} default_jobs=${DEFAULT_JOBS} ` +
      `addjob_jobs=${ADDJOB_JOBS} addjob_concurrency=${ADDJOB_CONCURRENCY} db=${DB_URL}`,
  );
  for (const m of modes) {
    if (m === "enqueue") await measureEnqueue();
    else if (m === "perf")
      await measureBurnDown("burndown_perf_settings", JOBS, PERF_SETTINGS, { ...PERF_SETTINGS, pollInterval: 2000 });
    else if (m === "default")
      await measureBurnDown("burndown_default_settings", DEFAULT_JOBS, DEFAULT_SETTINGS, DEFAULT_SETTINGS_EFFECTIVE);
    else if (m === "perf-multi") await measureBurnDownMulti(JOBS, PROCESSES, PERF_SETTINGS);
    else if (m === "addjob") await measureAddJob(ADDJOB_JOBS, ADDJOB_CONCURRENCY);
  }
  await dropDatabase();
} catch (err) {
  log(`error: ${err?.stack ?? err}`);
  process.exitCode = 1;
}
