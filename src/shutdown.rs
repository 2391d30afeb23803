//! Graceful shutdown for both layers.
//!
//! Plain hyper and axum servers hang on shutdown while push requests are open: a held poll or a
//! stream never ends by itself. Give the same [`Shutdown`] to every layer (with their builders'
//! `shutdown` setting) and [`trigger`](Shutdown::trigger) it when the server starts draining:
//!
//! - parked long polls answer at once as if their hold had expired (`204` with their cursor),
//! - streams send a final `shutdown` message and end,
//! - new requests get `503 Service Unavailable` with the code `shutting_down` and a
//!   `Retry-After` of 1 to 5 seconds, spread at random so that clients do not all come back at
//!   the same moment.
//!
//! Then hyper's graceful shutdown finishes as soon as the last answer is written.
//!
//! # Examples
//!
//! ```
//! use tower_push::{LongPollLayer, Shutdown};
//!
//! let shutdown = Shutdown::new();
//! let layer = LongPollLayer::builder().shutdown(shutdown.clone()).build()?;
//! # let _ = layer;
//! // Later, on SIGTERM:
//! shutdown.trigger();
//! assert!(shutdown.is_triggered());
//! # Ok::<(), tower_push::ConfigError>(())
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

/// A shutdown signal shared by the layers; cloning is cheap and every clone is the same signal.
#[derive(Clone, Default)]
pub struct Shutdown {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    triggered: AtomicBool,
    // An `Arc` of its own so that waiting requests can hold an `OwnedNotified`.
    notify: Arc<Notify>,
}

impl Shutdown {
    /// A signal that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the shutdown: every layer holding this signal drains its open requests at once and
    /// refuses new ones. Triggering again does nothing.
    pub fn trigger(&self) {
        self.shared.triggered.store(true, Ordering::SeqCst);
        self.shared.notify.notify_waiters();
    }

    /// Whether [`trigger`](Self::trigger) was called.
    pub fn is_triggered(&self) -> bool {
        self.shared.triggered.load(Ordering::SeqCst)
    }

    /// A future that resolves once the signal is triggered (at once if it already was).
    ///
    /// It owns what it needs (`'static`), costs no task, and wakes without polling: use it to
    /// stop an accept loop or to start hyper's graceful shutdown when the layers start draining.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::Shutdown;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let shutdown = Shutdown::new();
    /// let waiter = tokio::spawn(shutdown.wait());
    /// shutdown.trigger();
    /// waiter.await.unwrap();
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Dropping the future unregisters it; nothing else is affected.
    pub fn wait(&self) -> Wait {
        Wait {
            shared: self.shared.clone(),
            notified: None,
        }
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

pin_project! {
    /// Resolves when the shutdown signal is triggered: see [`Shutdown::wait`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Wait {
        shared: Arc<Shared>,
        #[pin]
        notified: Option<OwnedNotified>,
    }
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let shared = &**this.shared;
        crate::wake::poll_check(this.notified, &shared.notify, cx, || {
            shared.triggered.load(Ordering::SeqCst).then_some(())
        })
    }
}

impl fmt::Debug for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_every_waiter_and_answers_late_ones_at_once() {
        let shutdown = Shutdown::new();
        let waiters: Vec<_> = (0..10).map(|_| tokio::spawn(shutdown.wait())).collect();
        tokio::task::yield_now().await;
        assert!(!shutdown.is_triggered());
        shutdown.trigger();
        for waiter in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
                .await
                .unwrap()
                .unwrap();
        }
        shutdown.wait().await;
    }
}
