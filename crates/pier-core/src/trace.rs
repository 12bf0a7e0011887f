//! W3C trace context (`traceparent`) for the spans that cross a boundary: an incoming request,
//! a job stored by one process and run by another, a webhook request sent out.
//!
//! Everything here is a no-op unless the OpenTelemetry layer is installed (tracing is on): a
//! span then has no trace context to read or continue.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The trace context of `span` as a `traceparent` value (`00-<trace>-<span>-<flags>`), when
/// tracing is on.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let sc = span_context(span)?;
    Some(format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    ))
}

/// The OpenTelemetry context of `span`, when tracing is on.
fn span_context(span: &tracing::Span) -> Option<SpanContext> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The current span's `traceparent`, for work that continues elsewhere (a job, a webhook).
pub fn current_traceparent() -> Option<String> {
    traceparent(&tracing::Span::current())
}

/// Makes `span`, just created, a child of the remote span `traceparent` names. A malformed
/// value is ignored (the span starts a trace of its own), as the W3C specification asks.
pub fn continue_from(span: &tracing::Span, traceparent: &str) {
    if let Some(remote) = parse(traceparent) {
        let cx = opentelemetry::Context::new().with_remote_span_context(remote);
        // Fails only when tracing is off or the span has started: nothing to continue then.
        let _ = span.set_parent(cx);
    }
}

/// The form of a version-`00` `traceparent` a client may send in a body, as a JSON Schema
/// pattern; [`well_formed`] checks it.
pub const TRACEPARENT_PATTERN: &str = "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$";

/// Whether `value` has the form [`TRACEPARENT_PATTERN`] states. A well-formed value can still
/// name no span (all zeros): it is then ignored, as the W3C specification asks.
pub fn well_formed(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    matches!(parts.as_slice(), ["00", trace, span, flags]
        if hex(trace, 32) && hex(span, 16) && hex(flags, 2))
}

/// Links `span` to the remote span `traceparent` names (a span link: related work in another
/// trace, such as a worker's span reporting on a job). A malformed value is ignored.
pub fn link_to(span: &tracing::Span, traceparent: &str) {
    if let Some(remote) = parse(traceparent) {
        span.add_link(remote);
    }
}

/// Starts `span`, just created with empty `trace_id` and `span_id` fields: continues
/// `traceparent` when given, then records the span's ids in those fields, so every log line in
/// the span carries them (when tracing is on).
pub fn start(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(traceparent) = traceparent {
        continue_from(span, traceparent);
    }
    if let Some((trace_id, span_id)) = ids(span) {
        span.record("trace_id", trace_id);
        span.record("span_id", span_id);
    }
}

/// The trace and span ids of `span` (hex), for log lines, when tracing is on.
pub fn ids(span: &tracing::Span) -> Option<(String, String)> {
    span_context(span).map(|sc| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// Whether `s` is `len` lowercase hex digits.
fn hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parses version `00` of `traceparent` (and, as the specification asks, later versions by their
/// first four fields).
fn parse(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & 1);
    let context = SpanContext::new(trace, span, flags, true, TraceState::default());
    context.is_valid().then_some(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_specification_example() {
        let sc = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled());
        assert!(sc.is_remote());
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(parse(bad).is_none(), "{bad:?} must be refused");
        }
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            " 00-1-2-3",
        ] {
            assert!(!well_formed(bad), "{bad:?}");
        }
        assert!(well_formed(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        // A later version may carry more fields.
        assert!(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more").is_some());
    }

    #[test]
    fn is_a_no_op_without_tracing() {
        let span = tracing::info_span!("request");
        continue_from(
            &span,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        link_to(
            &span,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        assert_eq!(traceparent(&span), None);
        assert_eq!(ids(&span), None);
    }
}
