//! The few calls of Pier's API the benchmark makes, as the workspace's owner.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::{Client, StatusCode, header};
use serde_json::{Value, json};

/// An event Pier accepted, with the moments that bound its `POST /v1/events`.
#[derive(Debug)]
pub struct Published {
    pub id: String,
    /// Just before the request was sent: where every delivery's latency starts.
    pub sent: Instant,
    /// When the 202 arrived.
    pub accepted: Instant,
}

#[derive(Debug)]
pub struct Api {
    client: Client,
    base: String,
}

impl Api {
    pub fn new(base: &str, key: &str) -> anyhow::Result<Self> {
        let mut auth = header::HeaderValue::from_str(&format!("Bearer {key}"))
            .context("the API key is not a valid header value")?;
        auth.set_sensitive(true);
        let headers = header::HeaderMap::from_iter([(header::AUTHORIZATION, auth)]);
        let client = Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            client,
            base: base.to_owned(),
        })
    }

    pub async fn create_endpoint(&self, url: &str) -> anyhow::Result<()> {
        self.create_endpoint_with(json!({ "url": url })).await
    }

    /// Creates an endpoint from a whole body (`url`, `rate_limit_per_second`, …).
    pub async fn create_endpoint_with(&self, body: Value) -> anyhow::Result<()> {
        self.post("/v1/webhook-endpoints", &body, StatusCode::CREATED)
            .await
            .map(drop)
    }

    /// Publishes event number `seq`.
    pub async fn publish(&self, seq: usize) -> anyhow::Result<Published> {
        let body = json!({"type": "bench.event", "payload": {"seq": seq}});
        let sent = Instant::now();
        let event = self.post("/v1/events", &body, StatusCode::ACCEPTED).await?;
        let accepted = Instant::now();
        let id = event["id"]
            .as_str()
            .context("POST /v1/events: no id in the response")?;
        Ok(Published {
            id: id.to_owned(),
            sent,
            accepted,
        })
    }

    /// The first page of an event's deliveries, as Pier lists them.
    pub async fn deliveries(&self, event: &str) -> anyhow::Result<Value> {
        let path = format!("/v1/events/{event}/deliveries");
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        Ok(response.error_for_status()?.json().await?)
    }

    /// POSTs `body`; any status but `expect` is an error carrying the response's body.
    async fn post(&self, path: &str, body: &Value, expect: StatusCode) -> anyhow::Result<Value> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        if status != expect {
            let text = response.text().await.unwrap_or_default();
            bail!("POST {path}: {status} (expected {expect}): {text}");
        }
        response
            .json()
            .await
            .with_context(|| format!("POST {path}: reading the response"))
    }
}
