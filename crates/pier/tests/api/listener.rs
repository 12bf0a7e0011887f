//! The notification listener (PostgreSQL `LISTEN`) notices a connection that went silent
//! without a reset, a half-open connection such as a dropped NAT or firewall entry leaves, and
//! starts a new session, announcing it so the caches relying on it start again from nothing.

use std::time::Duration;

use pier_db::{DatabaseUrl, Notice, Relay};
use tokio::sync::mpsc;

use crate::support::Backend;
use crate::support::proxy::Proxy;

/// The listener's keepalive asks every 2 s and waits 2 s: a few seconds, with room for a
/// loaded machine, and far below the cache TTL a missed invalidation would otherwise last.
const NOTICED_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set PIER_TEST_DATABASE_URL"]
async fn a_silent_listener_connection_is_noticed_and_replaced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = Backend::postgres().fresh_database_url(dir.path()).await;
    let mut url = reqwest::Url::parse(&url).expect("a URL");
    let server = url.socket_addrs(|| Some(5432)).expect("address")[0];
    let proxy = Proxy::start(server).await;
    url.set_port(Some(proxy.addr.port())).expect("port");
    url.set_host(Some(&proxy.addr.ip().to_string()))
        .expect("host");
    let db = url
        .as_str()
        .parse::<DatabaseUrl>()
        .expect("database URL")
        .connect(1)
        .await
        .expect("connect");

    let (sessions, mut started) = mpsc::unbounded_channel();
    let relay = Relay::default()
        .on("pier_test_channel", move |notice| {
            if notice == Notice::Connected {
                let _ = sessions.send(());
            }
        })
        .spawn(&db)
        .expect("PostgreSQL relays");
    started.recv().await.expect("the first session");

    proxy.silence();
    let replaced = tokio::time::timeout(NOTICED_WITHIN, started.recv()).await;
    assert!(
        matches!(replaced, Ok(Some(()))),
        "the silent session was not replaced within {NOTICED_WITHIN:?}"
    );
    relay.abort();
    proxy.stop().await;
}
