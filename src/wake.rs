//! Check-then-wait without lost wake-ups, shared by every future that parks on a `Notify`.

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
/// pinned.
pub(crate) fn poll_check<T>(
    mut notified: Pin<&mut Option<OwnedNotified>>,
    notify: &Arc<Notify>,
    cx: &mut Context<'_>,
    mut check: impl FnMut() -> Option<T>,
) -> Poll<T> {
    loop {
        if notified.is_none() {
            // Most checks find something at once: no need to register for those.
            if let Some(found) = check() {
                return Poll::Ready(found);
            }
            notified.set(Some(notify.clone().notified_owned()));
        }
        let mut registered = notified.as_mut().as_pin_mut().expect("set above");
        registered.as_mut().enable();
        if let Some(found) = check() {
            notified.set(None);
            return Poll::Ready(found);
        }
        match registered.poll(cx) {
            // Notified: look again, with a fresh registration.
            Poll::Ready(()) => notified.set(None),
            Poll::Pending => return Poll::Pending,
        }
    }
}
