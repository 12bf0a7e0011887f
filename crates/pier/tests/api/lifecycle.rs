//! The server's limits and shutdown: a request in flight when the signal arrives still
//! completes; slow or idle clients are cut off and never hold shutdown up; connections are
//! capped.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Backend, Options, TestApp, on_both_backends};

on_both_backends!(
    shutdown_finishes_in_flight_requests,
    slow_clients_are_cut_off,
    connections_are_capped,
    shutdown_is_not_held_by_idle_or_stalled_connections,
);

async fn shutdown_finishes_in_flight_requests(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let body = br#"{"name": "in flight", "role": "viewer"}"#;
    let head = format!(
        "POST /v1/api-keys HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        app.owner_key,
        body.len()
    );

    // Send the headers and half the body, so the handler is waiting on the rest.
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(&body[..10]).await.expect("write part");
    tokio::time::sleep(Duration::from_millis(200)).await;

    app.trigger_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream.write_all(&body[10..]).await.expect("write rest");

    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read response");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(response.contains("\"in flight\""));

    app.join().await.expect("clean exit");
    assert!(
        TcpStream::connect(&addr).await.is_err(),
        "no longer accepting"
    );
}

/// A connection that never finishes its headers is closed after the header read timeout, and a
/// request whose body stalls gets a `503` problem at the request deadline.
async fn slow_clients_are_cut_off(backend: Backend) {
    let settings = [
        ("header_read_timeout_secs", "1"),
        ("request_timeout_secs", "1"),
    ];
    let app = TestApp::spawn_with(backend, limits(&settings)).await;
    let addr = app.base.trim_start_matches("http://").to_owned();

    let mut stalled = TcpStream::connect(&addr).await.expect("connect");
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a stalled header is cut off");

    let mut silent = TcpStream::connect(&addr).await.expect("connect");
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a connection that sends nothing is closed");

    let mut upload = TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST /v1/api-keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\"",
        app.owner_key
    );
    upload.write_all(head.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), upload.read_to_end(&mut response))
        .await
        .expect("answered at the deadline")
        .expect("read");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.contains("request_timeout"), "{response}");
}

/// Beyond `max_connections`, a new connection waits until one closes.
async fn connections_are_capped(backend: Backend) {
    let app = TestApp::spawn_with(backend, limits(&[("max_connections", "2")])).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(served_then_idle(&addr).await);
    }
    let third = app.client.get(app.url("/healthz")).send();
    tokio::pin!(third);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut third)
            .await
            .is_err(),
        "a third connection waits"
    );
    held.pop();
    let response = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served once a slot frees")
        .expect("sent");
    assert_eq!(response.status(), 200);
}

/// Idle keep-alive connections and stalled ones do not hold shutdown up for its grace period.
async fn shutdown_is_not_held_by_idle_or_stalled_connections(backend: Backend) {
    let settings = [
        ("shutdown_timeout_secs", "30"),
        ("header_read_timeout_secs", "30"),
    ];
    let mut app = TestApp::spawn_with(backend, limits(&settings)).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let _idle = served_then_idle(&addr).await;
    let mut stalled = TcpStream::connect(&addr).await.expect("connect");
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("write");
    let _silent = TcpStream::connect(&addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    app.trigger_shutdown();
    app.join().await.expect("clean exit");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?}",
        started.elapsed()
    );
}

/// A keep-alive connection that has been served one request and now sits idle.
async fn served_then_idle(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).await.expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    stream
}

fn limits(settings: &[(&'static str, &str)]) -> Options {
    Options {
        settings: settings
            .iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect(),
        ..Options::default()
    }
}
