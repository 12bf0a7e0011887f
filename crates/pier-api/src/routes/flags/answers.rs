//! Bulk OFREP answers already computed on this node. A client polls the bulk evaluation with
//! the same context again and again (OFREP's web providers do, with `If-None-Match`), and the
//! answer depends only on the workspace's flags, the context and, for a flag whose targeting
//! reads `$flagd.timestamp`, the second. So answers are kept under exactly those: the flags'
//! load ([`pier_flags::WorkspaceFlags::generation`], which a change moves on every node), the
//! context's JSON and the second when it matters. Nothing ever needs forgetting; entries of
//! older loads age out. Bounded in bytes, and only small contexts and answers are kept, so a
//! workload of ever-new contexts costs a lookup and an insert, not memory.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderValue;
use metrics::Counter;
use pier_core::WorkspaceId;
use pier_flags::WorkspaceFlags;
use serde_json::{Map, Value};

/// Contexts longer than this (as JSON) are evaluated every time: keys stay small.
const MAX_CONTEXT_BYTES: usize = 1024;
/// Answers longer than this are not kept: one must not crowd out hundreds.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How long an answer is kept at most; only memory depends on it.
const KEPT_FOR: Duration = Duration::from_secs(60);

/// One bulk answer: its body and its tag.
#[derive(Debug)]
pub struct Answer {
    pub body: Bytes,
    pub etag: HeaderValue,
}

/// This node's kept answers. Clones share them.
#[derive(Clone)]
pub struct BulkAnswers {
    kept: moka::future::Cache<String, Arc<Answer>>,
    hits: Counter,
    misses: Counter,
}

impl std::fmt::Debug for BulkAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkAnswers").finish_non_exhaustive()
    }
}

impl BulkAnswers {
    /// Keeps at most `max_bytes` of answers (and their keys).
    pub fn new(max_bytes: u64) -> Self {
        let name = "flag_answers";
        Self {
            kept: moka::future::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|key: &String, answer: &Arc<Answer>| {
                    u32::try_from(key.len() + answer.body.len()).unwrap_or(u32::MAX)
                })
                .time_to_live(KEPT_FOR)
                .build(),
            hits: metrics::counter!("pier_cache_hits_total", "cache" => name),
            misses: metrics::counter!("pier_cache_misses_total", "cache" => name),
        }
    }

    /// The answer kept under `key` (see [`key`]), or the one `compute` gives, kept when small
    /// enough.
    pub async fn get_or_compute(
        &self,
        key: Option<String>,
        compute: impl FnOnce() -> Result<Answer, serde_json::Error>,
    ) -> Result<Arc<Answer>, serde_json::Error> {
        let Some(key) = key else {
            return compute().map(Arc::new);
        };
        if let Some(answer) = self.kept.get(&key).await {
            self.hits.increment(1);
            return Ok(answer);
        }
        self.misses.increment(1);
        let answer = Arc::new(compute()?);
        if answer.body.len() <= MAX_ANSWER_BYTES {
            self.kept.insert(key, answer.clone()).await;
        }
        Ok(answer)
    }
}

/// What the answer for `context` from `flags` is kept under, or `None` for a context too long
/// to be a key.
pub fn key(
    workspace: &WorkspaceId,
    flags: &WorkspaceFlags,
    context: &Map<String, Value>,
    now_unix_seconds: i64,
) -> Option<String> {
    let context = serde_json::to_string(context).ok()?;
    if context.len() > MAX_CONTEXT_BYTES {
        return None;
    }
    let second = if flags.reads_clock {
        now_unix_seconds
    } else {
        0
    };
    Some(format!(
        "{workspace}/{generation}/{second}/{context}",
        workspace = workspace.as_str(),
        generation = flags.generation
    ))
}
