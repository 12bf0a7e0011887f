//! Graceful shutdown: a request in flight when the signal arrives still completes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Backend, TestApp, on_both_backends};

on_both_backends!(shutdown_finishes_in_flight_requests);

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
