//! The queue's spans, named and attributed as the OpenTelemetry semantic conventions for
//! messaging ask (`messaging.system` = `pier`, `messaging.operation.type`,
//! `messaging.destination.name` = the queue), so a trace shows a job's enqueue (publish), its
//! claim by an HTTP worker (receive) and its run in-process (process).
//!
//! A job stores the trace context of its publish span; whoever runs it continues that trace
//! (`pier_core::trace`). Publish and receive spans exist only inside a span of their own (a
//! request, a job): a background loop's enqueue or claim would otherwise start a trace each time.

use crate::model::ClaimedJob;

/// The span of an enqueue of `count` jobs into `queue` (`None`: several queues), a child of
/// the current span; a disabled span outside any.
pub(crate) fn publish(queue: Option<&str>, count: usize) -> tracing::Span {
    if tracing::Span::current().is_none() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("job.enqueue",
        otel.kind = "producer", messaging.system = "pier", messaging.operation.type = "publish",
        messaging.destination.name = tracing::field::Empty,
        messaging.batch.message_count = tracing::field::Empty);
    if let Some(queue) = queue {
        span.record("messaging.destination.name", queue);
    }
    if count > 1 {
        span.record("messaging.batch.message_count", count as u64);
    }
    span
}

/// The span of a claim from `queue`, a child of the current span (an HTTP worker's claim
/// request); a disabled span outside any.
pub(crate) fn receive(queue: &str) -> tracing::Span {
    if tracing::Span::current().is_none() {
        return tracing::Span::none();
    }
    tracing::info_span!("job.receive",
        otel.kind = "consumer", messaging.system = "pier", messaging.operation.type = "receive",
        messaging.destination.name = queue,
        messaging.batch.message_count = tracing::field::Empty)
}

/// Records on a receive span the jobs it claimed, each linked to the trace that enqueued it.
pub(crate) fn received(span: &tracing::Span, jobs: &[ClaimedJob]) {
    span.record("messaging.batch.message_count", jobs.len() as u64);
    for traceparent in jobs.iter().filter_map(|job| job.traceparent.as_deref()) {
        pier_core::trace::link_to(span, traceparent);
    }
}

/// The span of the announcement that a job of `queue` was discarded, a child of the span that
/// enqueued the job; a disabled span when the job carries no trace.
pub(crate) fn discarded(trace_parent: Option<&str>, queue: &str) -> tracing::Span {
    let Some(trace_parent) = trace_parent else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(
        "job.discarded",
        messaging.system = "pier",
        messaging.destination.name = queue,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty
    );
    pier_core::trace::start(&span, Some(trace_parent));
    span
}

/// The span of one run of `job` in-process, a child of the span that enqueued it.
pub(crate) fn process(job: &ClaimedJob) -> tracing::Span {
    let span = tracing::info_span!("job.run",
        otel.kind = "consumer", messaging.system = "pier", messaging.operation.type = "process",
        messaging.destination.name = %job.queue, messaging.message.id = %job.id,
        queue = %job.queue, kind = %job.kind, job_id = %job.id,
        attempt = job.attempt, workspace_id = %job.workspace_id,
        trace_id = tracing::field::Empty, span_id = tracing::field::Empty);
    pier_core::trace::start(&span, job.traceparent.as_deref());
    span
}
