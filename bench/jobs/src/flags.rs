//! `flag-propagation`: how long a flag change takes to reach another node's evaluations. Two
//! flag stores on two pools of one PostgreSQL database, each with a listener of its own, as two
//! nodes have them; node A flips a flag, node B evaluates from its memory until it sees the
//! flip. The time runs from A's commit returning (when the API would answer) to B's first
//! evaluation of the new state; the cache TTL is an hour, so only the notification counts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pier_core::{Clock, SystemClock, WorkspaceId};
use pier_db::{DatabaseUrl, Relay};
use pier_flags::{Flag, FlagKey, FlagStore};
use serde_json::{Map, json};

use crate::{micros, percentile_ms, report};

/// Untimed flips first: the listeners connect and the pools warm up.
const WARMUP: usize = 20;

/// Gives up on a round after this long: a lost notification, which the TTL would only mend
/// in an hour.
const GIVE_UP: Duration = Duration::from_secs(5);

fn switch(enabled: bool) -> anyhow::Result<Flag> {
    let state = if enabled { "ENABLED" } else { "DISABLED" };
    let definition =
        json!({"state": state, "variants": {"on": true, "off": false}, "defaultVariant": "on"});
    Flag::parse(
        FlagKey::parse("switch").map_err(anyhow::Error::msg)?,
        &definition,
        "",
        &Map::new(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

pub async fn propagation(url: &DatabaseUrl, rounds: usize) -> anyhow::Result<()> {
    if !matches!(url, DatabaseUrl::Postgres(_)) {
        bail!("flag-propagation needs two nodes on one PostgreSQL database: pass --database-url");
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let cache = pier_cache::Settings {
        capacity: 100,
        ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(3600),
        jitter: 0.0,
    };
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let db = url.connect(4).await.context("connect")?;
        db.migrate(&[pier_db::MIGRATIONS, pier_flags::MIGRATIONS])
            .await
            .context("migrate")?;
        let store = FlagStore::new(db.clone(), clock.clone(), cache);
        let listener = store.listen(Relay::default()).spawn(&db);
        nodes.push((store, listener));
    }
    let (a, b) = (&nodes[0].0, &nodes[1].0);
    let workspace = WorkspaceId::new(clock.now());
    let key = FlagKey::parse("switch").map_err(anyhow::Error::msg)?;
    a.create(&workspace, "bench", switch(true)?).await?;

    let mut delays_us = Vec::with_capacity(rounds);
    for round in 0..WARMUP + rounds {
        let enabled = round % 2 == 1;
        let seen = a.get(&workspace, &key).await?.context("the flag")?;
        // B holds the current state in memory before the change.
        b.live(&workspace).await?;
        a.replace(&workspace, "bench", &seen, switch(enabled)?)
            .await?
            .context("nobody else changes the flag")?;
        let committed = Instant::now();
        loop {
            let live = b.live(&workspace).await?;
            if live.get("switch").map(Flag::enabled) == Some(enabled) {
                break;
            }
            if committed.elapsed() > GIVE_UP {
                bail!("round {round}: node B did not see the change within {GIVE_UP:?}");
            }
            tokio::task::yield_now().await;
        }
        if round >= WARMUP {
            delays_us.push(micros(committed.elapsed()));
        }
    }
    delays_us.sort_unstable();
    report(
        "flag_propagation",
        "postgres",
        json!({
            "rounds": rounds,
            "p50_ms": percentile_ms(&delays_us, 0.5),
            "p99_ms": percentile_ms(&delays_us, 0.99),
            "max_ms": percentile_ms(&delays_us, 1.0),
            "goal": "every change within 100 ms",
        }),
    );
    for (_, listener) in nodes {
        if let Some(listener) = listener {
            listener.abort();
        }
    }
    Ok(())
}
