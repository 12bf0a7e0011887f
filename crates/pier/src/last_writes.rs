//! The writes a stopping node makes last (the key uses and clicks its requests noted): nothing
//! comes after them to try again, so a failure is retried here, until a deadline.

use std::time::Duration;

use tokio::time::Instant;

/// The first pause after a failed write; it doubles, up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// Runs `write` until it succeeds or the next attempt would start after `deadline`; what is
/// still unwritten then is lost, and said so.
pub(crate) async fn retry_until<T, E: std::fmt::Display, F>(
    deadline: Instant,
    what: &'static str,
    mut write: impl FnMut() -> F,
) where
    F: Future<Output = Result<T, E>>,
{
    let mut pause = FIRST_PAUSE;
    loop {
        match write().await {
            Ok(_) => return,
            Err(err) if Instant::now() + pause < deadline => {
                tracing::warn!(error = %err, what, "could not write at shutdown; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
            Err(err) => {
                tracing::error!(error = %err, what, "could not write at shutdown; giving up");
                return;
            }
        }
    }
}
