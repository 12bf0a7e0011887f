//! `redirect-baseline ADDR TARGET`: answers `GET /{slug}` with `302 Found`, `Location: TARGET`
//! and `Cache-Control: private, max-age=0` — what Pier answers for a cached short link, with
//! nothing behind it (no lookup, no click recording, no middleware). `bench/run-links.sh` runs
//! it next to Pier on the same machine and connections; the ratio of the two is the figure.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(target)) = (args.next(), args.next()) else {
        eprintln!("usage: redirect-baseline ADDR TARGET");
        std::process::exit(2);
    };
    let Ok(location) = HeaderValue::from_str(&target) else {
        eprintln!("redirect-baseline: TARGET is not header text");
        std::process::exit(2);
    };
    let app = Router::new().route(
        "/{slug}",
        get(move |Path(_slug): Path<String>| {
            let location = location.clone();
            async move { redirect(location) }
        }),
    );
    tokio::runtime::Runtime::new()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        axum::serve(listener, app).await
    })
}

fn redirect(location: HeaderValue) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=0"),
    );
    response
}
