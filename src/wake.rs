//! Check-then-wait without lost wake-ups, for the futures that park on a `Notify` and check
//! state they can read at once: the memory source's subscriptions, the Durable Streams source's
//! reads, the shutdown signal's waits and the long poll's wait for a newer poll of its client.
//!
//! The Redis source's subscriptions park with a loop of their own: between two checks they may
//! await a read from Redis, or wait a bounded time for a starting reader's first read, which a
//! check that answers at once cannot express.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

/// Resolves with what `check` finds, parking on `notify` while it finds nothing.
///
/// `check` runs once unregistered, since it usually finds something at once; if it does not, a
/// registration in `notified` is enabled and `check` runs again *before* the task waits, so a
/// notification that lands between a check and the wait still wakes the task (the pattern of
/// tokio's `Notify` docs). No allocation: the waiter lives in `notified`, which the caller keeps
/// pinned. While the registration has not fired, nothing changed since the last check (every
/// change notifies after it is made), so a poll without a notification does not check again:
/// a request that follows several topics polls all of them when one wakes it, and the others
/// cost it a look at their registration, not a look at their topic.
pub(crate) fn poll_check<T>(
    mut notified: Pin<&mut Option<OwnedNotified>>,
    notify: &Arc<Notify>,
    cx: &mut Context<'_>,
    mut check: impl FnMut() -> Option<T>,
) -> Poll<T> {
    loop {
        if let Some(registered) = notified.as_mut().as_pin_mut() {
            match registered.poll(cx) {
                Poll::Pending => return Poll::Pending,
                // Notified: look again, with a fresh registration.
                Poll::Ready(()) => notified.set(None),
            }
        }
        // Most checks find something at once: no need to register for those.
        if let Some(found) = check() {
            return Poll::Ready(found);
        }
        notified.set(Some(notify.clone().notified_owned()));
        let mut registered = notified.as_mut().as_pin_mut().expect("set above");
        registered.as_mut().enable();
        if let Some(found) = check() {
            notified.set(None);
            return Poll::Ready(found);
        }
        match registered.poll(cx) {
            Poll::Ready(()) => notified.set(None),
            Poll::Pending => return Poll::Pending,
        }
    }
}
