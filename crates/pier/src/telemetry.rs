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
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing_subscriber::filter::{EnvFilter, FilterFn};
use tracing_subscriber::layer::SubscriberExt;
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
        Some(settings) => Some(settings.start()?),
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
    // Spans of Pier's own crates go to the collector whatever the log level.
    let traces = export.as_ref().map(|export| {
        let tracer = export.provider.tracer("pier");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(FilterFn::new(|meta| {
                meta.is_span() && meta.target().starts_with("pier")
            }))
    });
    // A second init (several apps in one test process) keeps the first subscriber.
    let _ = Registry::default().with(logs).with(traces).try_init();
    Ok(Telemetry { export })
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
}

impl OtlpSettings {
    fn from_env() -> anyhow::Result<Option<Self>> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
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
        Ok(Some(Self { protocol }))
    }

    fn start(self) -> anyhow::Result<Export> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(reqwest::Client::new())
            .with_protocol(self.protocol)
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
