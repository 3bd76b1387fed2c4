//! Polls with a deadline.

use std::time::{Duration, Instant};

/// Calls `f` every `every` until it returns `Some` or `within` has passed; `None` when the
/// deadline passed first.
pub async fn poll<T>(
    within: Duration,
    every: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(every).await;
    }
    None
}

/// [`poll`] every 100 ms.
pub async fn wait_for<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(within, Duration::from_millis(100), async || f().await).await
}

/// Whether `f` became true (polled every 10 ms) before `within` passed.
pub async fn eventually(within: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    poll(within, Duration::from_millis(10), async || {
        f().await.then_some(())
    })
    .await
    .is_some()
}
