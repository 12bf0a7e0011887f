//! One fresh PostgreSQL database per test, so tests run in parallel without seeing each other.

use sqlx::Connection;

pub async fn fresh_database(base_url: &str) -> String {
    let name = format!(
        "pier_test_{}",
        pier_core::id::new_body(pier_core::Clock::now(&pier_core::SystemClock))
    );
    let mut conn = sqlx::PgConnection::connect(base_url)
        .await
        .expect("PIER_TEST_DATABASE_URL is reachable");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    conn.close().await.ok();
    with_database(base_url, &name)
}

/// `base_url` with its database name replaced.
fn with_database(base_url: &str, name: &str) -> String {
    let (without_query, query) = match base_url.split_once('?') {
        Some((url, q)) => (url, format!("?{q}")),
        None => (base_url, String::new()),
    };
    let scheme_end = without_query.find("://").map_or(0, |i| i + 3);
    let prefix = match without_query[scheme_end..].find('/') {
        Some(slash) => &without_query[..scheme_end + slash],
        None => without_query,
    };
    format!("{prefix}/{name}{query}")
}
