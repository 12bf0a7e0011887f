//! `pier webhooks verify`: checks a delivery's signature the way a receiver must, so that
//! receivers can test their setup (or a captured request) from a shell.

use std::io::Read;

use anyhow::{Context, bail};

use crate::cli::WebhooksCommand;

/// The largest body `pier webhooks verify` reads: a webhook body is far smaller.
const MAX_VERIFIED_BODY: u64 = 16 * 1024 * 1024;

/// `pier webhooks …`: checks a delivery the way a receiver must, against the wall clock.
pub fn run(command: WebhooksCommand) -> anyhow::Result<()> {
    let WebhooksCommand::Verify {
        secret,
        id,
        timestamp,
        signature,
        tolerance_secs,
    } = command;
    let secret = pier_webhook_verify::SigningSecret::parse(&secret)
        .map_err(|e| anyhow::anyhow!("--secret: {e}"))?;
    let mut body = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_VERIFIED_BODY + 1)
        .read_to_end(&mut body)
        .context("cannot read the body from standard input")?;
    if body.len() as u64 > MAX_VERIFIED_BODY {
        bail!("the body on standard input is over {MAX_VERIFIED_BODY} bytes");
    }
    let headers = pier_webhook_verify::Headers {
        id: &id,
        timestamp: &timestamp,
        signature: &signature,
    };
    pier_webhook_verify::verify_with_tolerance(
        std::slice::from_ref(&secret),
        headers,
        &body,
        pier_webhook_verify::unix_now(),
        tolerance_secs,
    )
    .context("the signature does not verify")?;
    println!("valid");
    Ok(())
}
