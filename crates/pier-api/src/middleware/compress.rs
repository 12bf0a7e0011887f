//! Response compression, as the client's `Accept-Encoding` asks: zstd, br or gzip, for
//! responses of at least [`MIN_BYTES`] (the OpenAPI document, list pages, exports). Never for
//! images (already compressed) or the redirect, whose router does not get this layer: a
//! redirect's body is a few bytes, and it is the hottest path.

use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::{CompressionLayer, CompressionLevel};

/// Smaller bodies gain less than the compression costs.
pub const MIN_BYTES: u16 = 1024;

/// The compression layer. A middling level: the best levels cost many times the CPU (brotli's
/// highest takes about a second for the OpenAPI document) for a few percent less.
pub fn compression() -> CompressionLayer<impl Predicate> {
    let worth_it = SizeAbove::new(MIN_BYTES)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::GRPC)
        .and(NotForContentType::SSE);
    CompressionLayer::new()
        .gzip(true)
        .br(true)
        .zstd(true)
        .no_deflate()
        .quality(CompressionLevel::Precise(4))
        .compress_when(worth_it)
}
