//! Logs and traces.
//!
//! Logs go to stderr (stdout is kept for what commands print, such as keys): JSON lines for
//! machines, or a readable format on a terminal, filtered by `--log-level` / `PIER_LOG`. A log
//! line inside a span carries the span's fields (`request_id`, `workspace_id`, and `trace_id` /
//! `span_id` when tracing is on).
//!
//! Traces go to an OpenTelemetry collector over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, configured by the standard `OTEL_*`
//! variables. Finished spans wait in a bounded queue and leave in batches from a task of their
//! own, so exporting never slows a request: when the collector is slow or down, spans beyond
//! the queue are dropped and counted (`pier_trace_spans_dropped_total`).

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, bail};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Metadata;
use tracing::subscriber::Interest;
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::{Filter, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::LogFormat;

/// Finished spans waiting for export; more are dropped.
const QUEUE_SPANS: usize = 2048;
/// The most spans sent in one export request.
const BATCH_SPANS: usize = 512;
/// How long a span may wait for its batch to fill.
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// How long shutdown waits for the last batches.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The installed logging and, when configured, trace export; [`Telemetry::shutdown`] sends the
/// spans still queued.
#[derive(Debug, Default)]
pub struct Telemetry {
    export: Option<Export>,
}

#[derive(Debug)]
struct Export {
    provider: SdkTracerProvider,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Installs logging, and trace export when the environment asks for it. Must run inside the
/// Tokio runtime (the exporter's task lives there).
pub fn init(format: LogFormat, filter: &str) -> anyhow::Result<Telemetry> {
    let export = match OtlpSettings::from_env()? {
        Some(settings) => Some(settings.start(None)?),
        None => None,
    };
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if json {
        fmt.json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed()
    } else {
        fmt.with_target(false).with_filter(filter).boxed()
    };
    let traces = export.as_ref().map(Export::layer);
    // A second init (several apps in one test process) keeps the first subscriber.
    let _ = Registry::default().with(logs).with(traces).try_init();
    Ok(Telemetry { export })
}

/// Pier's trace layer, exporting to the OTLP/HTTP collector at `endpoint` (the full URL, such as
/// `http://collector:4318/v1/traces`; protobuf, every span sampled), for a program that embeds
/// Pier and installs a subscriber of its own instead of calling [`init`]. Must run inside the
/// Tokio runtime; call [`Telemetry::shutdown`] before exiting.
pub fn export_to<S>(endpoint: &str) -> anyhow::Result<(impl Layer<S>, Telemetry)>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let settings = OtlpSettings {
        protocol: Protocol::HttpBinary,
        sampler: Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
    };
    let export = settings.start(Some(endpoint))?;
    let layer = export.layer();
    Ok((
        layer,
        Telemetry {
            export: Some(export),
        },
    ))
}

/// The filter of the trace layer: spans of Pier's own crates, whatever the log level.
///
/// Their callsites are of interest *sometimes*, never *always*, so that every such span asks
/// each layer's filter afresh when it is made. Per-layer filters leave their verdicts in a
/// thread-local between a call to `enabled` and the span or event it precedes; a bare check
/// with nothing after it (the `log` crate's `log_enabled!`, which sqlx calls after every
/// PostgreSQL statement, reaches the subscriber through `tracing-log`) leaves a refusal there.
/// A callsite both layers want *always* skips `enabled`, so the next such span on that thread
/// took the stale refusal and reached neither layer: at the default level (where the log
/// filter wants Pier's spans too), a job run or webhook attempt after a query lost its trace.
struct PierSpans;

impl PierSpans {
    fn wanted(meta: &Metadata<'_>) -> bool {
        meta.is_span() && meta.target().starts_with("pier")
    }
}

impl<S> Filter<S> for PierSpans {
    fn enabled(&self, meta: &Metadata<'_>, _: &tracing_subscriber::layer::Context<'_, S>) -> bool {
        Self::wanted(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        match Self::wanted(meta) {
            true => Interest::sometimes(),
            false => Interest::never(),
        }
    }
}

impl Export {
    /// The layer that hands Pier's spans to this export, whatever the log level.
    fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        // No source location, thread or busy/idle attributes: they cost on every span and say
        // little that the span's name and fields do not.
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("pier"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(PierSpans)
    }
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn tracing(&self) -> bool {
        self.export.is_some()
    }

    /// Sends the queued spans (waiting at most a few seconds) and stops the exporter.
    pub async fn shutdown(self) {
        let Some(export) = self.export else { return };
        let _ = export.stop.send(true);
        if tokio::time::timeout(FLUSH_TIMEOUT, export.task)
            .await
            .is_err()
        {
            tracing::warn!("the last spans could not be exported in time");
        }
        drop(export.provider);
    }
}

/// What the standard `OTEL_*` variables ask for. The endpoint, headers, timeout and
/// compression are read by the exporter itself.
struct OtlpSettings {
    protocol: Protocol,
    sampler: Sampler,
}

impl OtlpSettings {
    fn from_env() -> anyhow::Result<Option<Self>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (the environment, or a test's map).
    fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none")
        {
            return Ok(None);
        }
        if var("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
            && var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        {
            return Ok(None);
        }
        let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
        let protocol = match protocol.as_deref() {
            None | Some("http/protobuf") => Protocol::HttpBinary,
            Some("http/json") => Protocol::HttpJson,
            Some(other) => bail!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported; use http/protobuf or http/json"
            ),
        };
        let ratio = || -> anyhow::Result<f64> {
            let arg = var("OTEL_TRACES_SAMPLER_ARG").unwrap_or_else(|| "1.0".to_owned());
            match arg.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => bail!("OTEL_TRACES_SAMPLER_ARG={arg} is not a ratio between 0 and 1"),
            }
        };
        let parent_based = |root: Sampler| Sampler::ParentBased(Box::new(root));
        let sampler = match var("OTEL_TRACES_SAMPLER").as_deref() {
            None | Some("parentbased_always_on") => parent_based(Sampler::AlwaysOn),
            Some("parentbased_always_off") => parent_based(Sampler::AlwaysOff),
            Some("parentbased_traceidratio") => parent_based(Sampler::TraceIdRatioBased(ratio()?)),
            Some("always_on") => Sampler::AlwaysOn,
            Some("always_off") => Sampler::AlwaysOff,
            Some("traceidratio") => Sampler::TraceIdRatioBased(ratio()?),
            Some(other) => bail!(
                "OTEL_TRACES_SAMPLER={other} is not supported; use always_on, always_off, \
                 traceidratio or their parentbased_ forms"
            ),
        };
        Ok(Some(Self { protocol, sampler }))
    }

    /// Starts exporting, to `endpoint` when given, else where the standard variables say.
    fn start(self, endpoint: Option<&str>) -> anyhow::Result<Export> {
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(reqwest::Client::new())
            .with_protocol(self.protocol);
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let mut exporter = builder
            .build()
            .context("cannot set up the OTLP trace exporter")?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("pier");
        }
        let resource = resource
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        exporter.set_resource(&resource);
        let (spans, queue) = mpsc::channel(QUEUE_SPANS);
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(send_batches(exporter, queue, stopping));
        let provider = SdkTracerProvider::builder()
            .with_sampler(self.sampler)
            .with_resource(resource)
            .with_span_processor(Queue { spans })
            .build();
        Ok(Export {
            provider,
            stop,
            task,
        })
    }
}

/// Hands finished spans to [`send_batches`] without ever waiting: a full queue drops the span.
#[derive(Debug)]
struct Queue {
    spans: mpsc::Sender<SpanData>,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            metrics::counter!("pier_trace_spans_dropped_total", "reason" => "queue_full")
                .increment(1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Sends spans in batches of up to [`BATCH_SPANS`], each sent when full or [`BATCH_DELAY`]
/// after its first span; on stop, sends what is queued and ends.
async fn send_batches(
    exporter: opentelemetry_otlp::SpanExporter,
    mut queue: mpsc::Receiver<SpanData>,
    mut stop: watch::Receiver<bool>,
) {
    let exported = metrics::counter!("pier_trace_spans_exported_total");
    let failed = metrics::counter!("pier_trace_spans_dropped_total", "reason" => "export_failed");
    let mut batch = Vec::with_capacity(BATCH_SPANS);
    loop {
        let stopping = tokio::select! {
            n = queue.recv_many(&mut batch, BATCH_SPANS) => n == 0,
            _ = stop.wait_for(|s| *s) => true,
        };
        if !stopping {
            let deadline = tokio::time::Instant::now() + BATCH_DELAY;
            while batch.len() < BATCH_SPANS {
                let room = BATCH_SPANS - batch.len();
                tokio::select! {
                    n = queue.recv_many(&mut batch, room) => if n == 0 { break },
                    () = tokio::time::sleep_until(deadline) => break,
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        } else {
            while batch.len() < BATCH_SPANS {
                match queue.try_recv() {
                    Ok(span) => batch.push(span),
                    Err(_) => break,
                }
            }
        }
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        match exporter.export(std::mem::take(&mut batch)).await {
            Ok(()) => exported.increment(n),
            Err(err) => {
                failed.increment(n);
                tracing::warn!(error = %err, spans = n, "could not export spans");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> anyhow::Result<Option<OtlpSettings>> {
        OtlpSettings::from_vars(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    const ENDPOINT: (&str, &str) = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");

    #[test]
    fn tracing_is_off_without_an_endpoint_or_when_disabled() {
        assert!(settings(&[]).expect("valid").is_none());
        let disabled = settings(&[ENDPOINT, ("OTEL_SDK_DISABLED", "true")]);
        assert!(disabled.expect("valid").is_none());
        let no_exporter = settings(&[ENDPOINT, ("OTEL_TRACES_EXPORTER", "none")]);
        assert!(no_exporter.expect("valid").is_none());
        assert!(settings(&[ENDPOINT]).expect("valid").is_some());
    }

    #[test]
    fn samplers_follow_the_standard_variables() {
        let sampler = |vars: &[(&str, &str)]| {
            let mut all = vec![ENDPOINT];
            all.extend_from_slice(vars);
            settings(&all).map(|s| format!("{:?}", s.expect("on").sampler))
        };
        assert_eq!(sampler(&[]).expect("valid"), "ParentBased(AlwaysOn)");
        let ratio = [
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ];
        assert_eq!(
            sampler(&ratio).expect("valid"),
            "ParentBased(TraceIdRatioBased(0.25))"
        );
        let always = [("OTEL_TRACES_SAMPLER", "always_on")];
        assert_eq!(sampler(&always).expect("valid"), "AlwaysOn");
        for bad in [
            [
                ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
                ("OTEL_TRACES_SAMPLER_ARG", "1"),
            ],
            [
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ],
        ] {
            assert!(sampler(&bad).is_err(), "{bad:?}");
        }
        let grpc = settings(&[ENDPOINT, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
        assert!(grpc.is_err());
    }
}
