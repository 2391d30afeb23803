//! The answers that wait for the log: each waits for one position of the log to be durable,
//! and only the sync that reaches it wakes it.
//!
//! A `watch` channel of the durable position would wake every waiting answer at every sync,
//! to see most of them wait again for the next: with concurrent writers, every sync would cost
//! a wake-up of each writer's connection. Waiters ordered by position cost each answer one
//! wake-up, by the sync that makes it durable.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::durable::store::StoreError;
use crate::sync::MutexExt;

/// Who waits for which position of the log, and how far it is durable.
#[derive(Debug)]
pub(super) struct Waiters {
    /// Every change up to this position is durable (read without the lock).
    durable: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Why the log stopped: no change after `durable` becomes durable any more.
    failed: Option<StoreError>,
    /// The earliest position first.
    waiting: BinaryHeap<Waiter>,
}

/// An answer waiting for `lsn` to be durable.
#[derive(Debug)]
struct Waiter {
    lsn: u64,
    tx: oneshot::Sender<Result<(), StoreError>>,
}

// Ordered by position alone, the earliest greatest: `BinaryHeap` pops its greatest.
impl Ord for Waiter {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.lsn.cmp(&self.lsn)
    }
}

impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.lsn == other.lsn
    }
}

impl Eq for Waiter {}

/// What an answer waits for before it leaves.
#[derive(Debug)]
pub(super) enum Wait {
    /// Nothing: the position is durable (`Ok`), or will never be (`Err`).
    Done(Result<(), StoreError>),
    /// The sync that reaches the position, or the failure that means it never will.
    Until(oneshot::Receiver<Result<(), StoreError>>),
}

impl Wait {
    /// Whether the position is durable: once it is, or once it is known never to be (the log
    /// failed, or the store is gone).
    pub(super) async fn durable(self) -> Result<(), StoreError> {
        match self {
            Self::Done(done) => done,
            Self::Until(rx) => rx.await.unwrap_or(Err(StoreError::Unavailable)),
        }
    }
}

impl Waiters {
    /// Waiters of a log durable up to `durable`.
    pub(super) fn new(durable: u64) -> Self {
        Self {
            durable: AtomicU64::new(durable),
            inner: Mutex::new(Inner {
                failed: None,
                waiting: BinaryHeap::new(),
            }),
        }
    }

    /// What an answer that rests on the changes up to `lsn` waits for.
    pub(super) fn wait(&self, lsn: u64) -> Wait {
        if self.durable.load(Ordering::Acquire) >= lsn {
            return Wait::Done(Ok(()));
        }
        let mut inner = self.inner.locked();
        // Again under the lock, which `reached` takes to wake the waiters.
        if self.durable.load(Ordering::Acquire) >= lsn {
            return Wait::Done(Ok(()));
        }
        if let Some(failed) = &inner.failed {
            return Wait::Done(Err(failed.clone()));
        }
        let (tx, rx) = oneshot::channel();
        inner.waiting.push(Waiter { lsn, tx });
        Wait::Until(rx)
    }

    /// Every change up to `lsn` is durable: the answers waiting for them may leave.
    pub(super) fn reached(&self, lsn: u64) {
        let mut ready = Vec::new();
        {
            let mut inner = self.inner.locked();
            self.durable.fetch_max(lsn, Ordering::Release);
            while inner.waiting.peek().is_some_and(|w| w.lsn <= lsn) {
                ready.extend(inner.waiting.pop());
            }
        }
        // Outside the lock: a wake-up may run the answer's task at once, on another thread.
        for waiter in ready {
            let _ = waiter.tx.send(Ok(()));
        }
    }

    /// The log failed: what waits now, and what waits from now on beyond the durable
    /// position, gets `failed`.
    pub(super) fn fail(&self, failed: StoreError) {
        let waiting = {
            let mut inner = self.inner.locked();
            inner.failed = Some(failed.clone());
            std::mem::take(&mut inner.waiting)
        };
        for waiter in waiting {
            let _ = waiter.tx.send(Err(failed.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now(wait: &Wait) -> Option<&Result<(), StoreError>> {
        match wait {
            Wait::Done(done) => Some(done),
            Wait::Until(_) => None,
        }
    }

    #[tokio::test]
    async fn a_sync_wakes_the_waiters_it_reaches_and_no_other() {
        let waiters = Waiters::new(3);
        assert_eq!(now(&waiters.wait(2)), Some(&Ok(())));
        assert_eq!(now(&waiters.wait(3)), Some(&Ok(())));
        let (Wait::Until(mut five), Wait::Until(mut four), Wait::Until(mut six)) =
            (waiters.wait(5), waiters.wait(4), waiters.wait(6))
        else {
            panic!("positions beyond the durable one wait");
        };
        waiters.reached(5);
        assert_eq!(four.try_recv(), Ok(Ok(())));
        assert_eq!(five.try_recv(), Ok(Ok(())));
        assert!(six.try_recv().is_err(), "6 is not durable yet");
        assert_eq!(now(&waiters.wait(5)), Some(&Ok(())));
        waiters.reached(6);
        assert_eq!(six.await, Ok(Ok(())));
    }

    #[tokio::test]
    async fn a_failure_answers_every_waiter_and_every_later_one() {
        let waiters = Waiters::new(1);
        let waiting = waiters.wait(2);
        waiters.fail(StoreError::StorageFull);
        assert_eq!(waiting.durable().await, Err(StoreError::StorageFull));
        assert_eq!(now(&waiters.wait(3)), Some(&Err(StoreError::StorageFull)));
        // What was durable before the failure still is.
        assert_eq!(now(&waiters.wait(1)), Some(&Ok(())));
    }

    #[tokio::test]
    async fn a_waiter_whose_log_is_gone_is_unavailable() {
        let waiters = Waiters::new(0);
        let waiting = waiters.wait(1);
        drop(waiters);
        assert_eq!(waiting.durable().await, Err(StoreError::Unavailable));
    }
}
