//! One outstanding poll per client: a newer poll with the same client key answers the older one
//! at once, so two answers for one client can never cross.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::request::Parts;
use pin_project_lite::pin_project;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use crate::limit::KeyFn;
use crate::sync::MutexExt;

/// The polls in flight per client key.
pub(crate) struct Supersede {
    key: KeyFn,
    clients: Mutex<HashMap<String, Arc<Client>>>,
    /// When each client got its last answer, until its next poll: the poll gap of the metrics.
    #[cfg(feature = "metrics")]
    answered: Mutex<HashMap<String, std::time::Instant>>,
}

/// How long an answer's time is kept for the poll gap: a client that comes back later left.
#[cfg(feature = "metrics")]
const GAP_MEMORY: std::time::Duration = std::time::Duration::from_secs(300);

struct Client {
    // The generation of the newest poll of this client.
    newest: AtomicU64,
    // An `Arc` of its own so that waiting polls can hold an `OwnedNotified`.
    notify: Arc<Notify>,
}

impl Supersede {
    /// A registry of its own with the same key, for another layer.
    pub(crate) fn renewed(&self) -> Self {
        Self::new(self.key.clone())
    }

    pub(crate) fn new(key: KeyFn) -> Self {
        Self {
            key,
            clients: Mutex::new(HashMap::new()),
            #[cfg(feature = "metrics")]
            answered: Mutex::new(HashMap::new()),
        }
    }

    /// Registers a poll; any older poll of the same client resolves its [`Superseded`] future.
    /// `None` when the request has no client key.
    pub(crate) fn register(self: &Arc<Self>, parts: &Parts) -> Option<Superseded> {
        let key = self.key.key(parts)?;
        #[cfg(feature = "metrics")]
        {
            let mut answered = self.answered.locked();
            if let Some(at) = answered.remove(&key) {
                crate::telemetry::poll_gap(at.elapsed());
            }
        }
        let mut clients = self.clients.locked();
        let client = clients
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Client {
                    newest: AtomicU64::new(0),
                    notify: Arc::new(Notify::new()),
                })
            })
            .clone();
        let generation = client.newest.fetch_add(1, Ordering::AcqRel) + 1;
        drop(clients);
        client.notify.notify_waiters();
        Some(Superseded {
            registry: self.clone(),
            key,
            client,
            generation,
            notified: None,
        })
    }
}

impl fmt::Debug for Supersede {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let clients = self.clients.locked().len();
        f.debug_struct("Supersede")
            .field("clients", &clients)
            .finish()
    }
}

pin_project! {
    /// Resolves when a newer poll of the same client arrives. Dropping it forgets the client
    /// once its newest poll is gone, so the registry holds only clients with a poll in flight.
    pub(crate) struct Superseded {
        registry: Arc<Supersede>,
        key: String,
        client: Arc<Client>,
        generation: u64,
        #[pin]
        notified: Option<OwnedNotified>,
    }

    impl PinnedDrop for Superseded {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let mut clients = this
                .registry
                .clients
                .locked();
            let newest = this.client.newest.load(Ordering::Acquire) == *this.generation;
            let same = clients
                .get(this.key.as_str())
                .is_some_and(|client| Arc::ptr_eq(client, this.client));
            if newest && same {
                clients.remove(this.key.as_str());
            }
        }
    }
}

impl Superseded {
    /// This client's poll was answered now: the start of its poll gap (feature `metrics`).
    pub(crate) fn answered(&self) {
        #[cfg(feature = "metrics")]
        {
            let now = std::time::Instant::now();
            let registry = &self.registry;
            let mut answered = registry.answered.locked();
            if answered.len() >= 4096 && answered.len().is_power_of_two() {
                answered.retain(|_, at| now.duration_since(*at) < GAP_MEMORY);
            }
            answered.insert(self.key.clone(), now);
        }
    }
}

impl Future for Superseded {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let (client, generation) = (&**this.client, *this.generation);
        crate::wake::poll_check(this.notified, &client.notify, cx, || {
            (client.newest.load(Ordering::Acquire) != generation).then_some(())
        })
    }
}

impl fmt::Debug for Superseded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Superseded")
            .field("key", &self.key)
            .field("generation", &self.generation)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn parts(client: &str) -> Parts {
        http::Request::get("/")
            .header("x-client", client)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn registry() -> Arc<Supersede> {
        Arc::new(Supersede::new(KeyFn::new(|parts: &Parts| {
            parts
                .headers
                .get("x-client")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })))
    }

    #[test]
    fn a_newer_poll_of_the_same_client_supersedes_the_older() {
        let registry = registry();
        let mut cx = Context::from_waker(Waker::noop());
        let mut first = Box::pin(registry.register(&parts("a")).unwrap());
        let mut other = Box::pin(registry.register(&parts("b")).unwrap());
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(other.as_mut().poll(&mut cx).is_pending());
        let mut second = Box::pin(registry.register(&parts("a")).unwrap());
        assert!(first.as_mut().poll(&mut cx).is_ready());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        assert!(other.as_mut().poll(&mut cx).is_pending());
        drop(first);
        assert_eq!(registry.clients.lock().unwrap().len(), 2);
        drop((second, other));
        assert!(registry.clients.lock().unwrap().is_empty());
    }

    #[test]
    fn requests_without_a_key_are_not_tracked() {
        let registry = registry();
        let parts = http::Request::get("/").body(()).unwrap().into_parts().0;
        assert!(registry.register(&parts).is_none());
    }
}
