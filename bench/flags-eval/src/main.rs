//! Times `pier_flags` alone: every flag of a flagd document evaluated for every context of a
//! JSON array, `--passes` times a round, for `--rounds` rounds after one warm-up round. Prints
//! one JSON object on stdout with the median round's nanoseconds per evaluation and
//! evaluations per second; `--results FILE` writes the first round's resolutions, one JSON line
//! per (context, flag), so that `bench/flags-eval/js/compare.mjs` can hold them against
//! flagd's. `bench/run-flags-eval.sh` runs it beside flagd's JS core.
//!
//! Each context is turned into a `Context` once per pass, inside the clock (as an OFREP request
//! does once for all the flags it evaluates), and evaluated for every flag in key order.

use std::collections::BTreeMap;
use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::Parser;
use pier_flags::{Context, Document, Flag, Resolution};
use serde_json::{Map, Value, json};

#[derive(Debug, Parser)]
struct Args {
    /// A flagd document: {"flags": {...}, "$evaluators": {...}}
    #[arg(long)]
    flags: PathBuf,
    /// A JSON array of evaluation contexts (objects; `targetingKey` among their attributes)
    #[arg(long)]
    contexts: PathBuf,
    /// Passes over every (context, flag) in one round
    #[arg(long, default_value_t = 5)]
    passes: usize,
    /// Timed rounds; the figure is their median
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Where to write the first round's resolutions, one JSON line per (context, flag)
    #[arg(long)]
    results: Option<PathBuf>,
}

fn read_json(path: &PathBuf) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path:?}"))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {path:?}"))
}

/// One pass: every flag for every context; `record` sees each resolution.
fn pass(
    flags: &[Flag],
    contexts: &[Map<String, Value>],
    now: i64,
    mut record: impl FnMut(usize, &Flag, Resolution),
) {
    for (index, attributes) in contexts.iter().enumerate() {
        let mut context = Context::new(attributes.clone(), now);
        for flag in flags {
            record(index, flag, flag.evaluate(&mut context));
        }
    }
}

/// A resolution as compare.mjs reads it.
fn result_line(index: usize, flag: &Flag, resolution: &Resolution) -> Value {
    json!({
        "context": index,
        "flag": flag.key().as_str(),
        "value": resolution.value,
        "variant": resolution.variant,
        "reason": resolution.reason,
        "error": resolution.error.map(|code| code.as_str()),
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.passes == 0 || args.rounds == 0 {
        bail!("--passes and --rounds are at least 1");
    }
    let flags = Document::parse(&read_json(&args.flags)?)
        .map_err(|errors| anyhow::anyhow!("the flag document is invalid: {errors:?}"))?
        .flags;
    let Value::Array(contexts) = read_json(&args.contexts)? else {
        bail!("the contexts file is a JSON array");
    };
    let contexts: Vec<Map<String, Value>> = contexts
        .into_iter()
        .map(|context| match context {
            Value::Object(attributes) => Ok(attributes),
            _ => bail!("every context is a JSON object"),
        })
        .collect::<anyhow::Result<_>>()?;
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;

    // The warm-up round, which also gives the resolutions to compare.
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut lines = Vec::with_capacity(flags.len() * contexts.len());
    pass(&flags, &contexts, now, |index, flag, resolution| {
        let reason = serde_json::to_value(resolution.reason).expect("a reason serializes");
        *reasons
            .entry(reason.as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
        if args.results.is_some() {
            lines.push(result_line(index, flag, &resolution));
        }
    });
    if let Some(path) = &args.results {
        let mut out = BufWriter::new(File::create(path).with_context(|| format!("{path:?}"))?);
        for line in &lines {
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }

    let evaluations = args.passes * flags.len() * contexts.len();
    let mut round_ns: Vec<f64> = (0..args.rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..args.passes {
                pass(&flags, &contexts, now, |_, _, resolution| {
                    black_box(resolution);
                });
            }
            start.elapsed().as_nanos() as f64 / evaluations as f64
        })
        .collect();
    let rounds = round_ns.clone();
    let ns = median(&mut round_ns);
    println!(
        "{}",
        json!({
            "evaluator": "pier-flags",
            "flags": flags.len(),
            "contexts": contexts.len(),
            "evaluations_per_round": evaluations,
            "rounds": args.rounds,
            "ns_per_evaluation": (ns * 10.0).round() / 10.0,
            "evaluations_per_second": (1e9 / ns).round() as u64,
            "round_ns_per_evaluation": rounds.iter().map(|r| (r * 10.0).round() / 10.0).collect::<Vec<_>>(),
            "reasons": reasons,
        })
    );
    Ok(())
}
