//! An OTLP/HTTP trace collector that decodes the protobuf export with the official definitions
//! (`opentelemetry-proto`), as a real collector does, and keeps every span and resource.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;

/// One exported span, its ids in lowercase hex as `traceparent` spells them.
#[derive(Debug, Clone)]
pub struct Span {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub attributes: Vec<(String, String)>,
    /// `(trace_id, span_id)` of each linked span.
    pub links: Vec<(String, String)>,
}

impl Span {
    /// The attribute `key`, as text.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this span is a child of `parent`, in its trace.
    pub fn is_child_of(&self, parent: &Span) -> bool {
        self.trace_id == parent.trace_id && self.parent_span_id == parent.span_id
    }
}

#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    /// The resource attributes of each export.
    resources: Vec<Vec<(String, String)>>,
}

pub struct Collector {
    pub url: String,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn pairs(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

impl Collector {
    pub async fn start() -> Self {
        let received: Arc<Mutex<Received>> = Arc::default();
        let kept = received.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let kept = kept.clone();
                async move {
                    assert_eq!(headers[header::CONTENT_TYPE], "application/x-protobuf");
                    let request =
                        ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                    let mut kept = kept.lock().expect("received");
                    for resource_spans in request.resource_spans {
                        if let Some(resource) = &resource_spans.resource {
                            kept.resources.push(pairs(&resource.attributes));
                        }
                        for scope in resource_spans.scope_spans {
                            for span in scope.spans {
                                kept.spans.push(Span {
                                    name: span.name,
                                    trace_id: hex::encode(&span.trace_id),
                                    span_id: hex::encode(&span.span_id),
                                    parent_span_id: hex::encode(&span.parent_span_id),
                                    attributes: pairs(&span.attributes),
                                    links: span
                                        .links
                                        .iter()
                                        .map(|l| {
                                            (hex::encode(&l.trace_id), hex::encode(&l.span_id))
                                        })
                                        .collect(),
                                });
                            }
                        }
                    }
                    // An empty ExportTraceServiceResponse: everything accepted.
                    (
                        [(header::CONTENT_TYPE, "application/x-protobuf")],
                        Bytes::new(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            received,
            task,
        }
    }

    /// The environment a node exports to this collector with (protobuf, the default protocol).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("OTEL_EXPORTER_OTLP_ENDPOINT".into(), self.url.clone())]
    }

    /// Waits (at most 10 s) for a span that `matches`.
    pub async fn span(&self, what: &str, matches: impl Fn(&Span) -> bool) -> Span {
        for _ in 0..200 {
            if let Some(span) = self.spans().into_iter().find(|s| matches(s)) {
                return span;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no span {what} among {:#?}", self.spans());
    }

    /// Waits for a span named `name` in trace `trace_id`.
    pub async fn span_in(&self, name: &str, trace_id: &str) -> Span {
        self.span(&format!("{name} in {trace_id}"), |s| {
            s.name == name && s.trace_id == trace_id
        })
        .await
    }

    pub fn spans(&self) -> Vec<Span> {
        self.received.lock().expect("received").spans.clone()
    }

    pub fn resources(&self) -> Vec<Vec<(String, String)>> {
        self.received.lock().expect("received").resources.clone()
    }
}
