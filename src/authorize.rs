//! Authorization per topic: which requests may read which topics, checked by the layers
//! before a request waits and again while it waits.
//!
//! Give a layer's builder an [`Authorize`] (a closure will do) with
//! [`LongPollBuilder::authorize`](crate::LongPollBuilder::authorize) or
//! [`ChunkedStreamBuilder::authorize`](crate::ChunkedStreamBuilder::authorize). The layer asks
//! it about every topic a request follows, with the request's head (its headers, cookies, and
//! the extensions an authentication layer in front put there), before the request reaches the
//! event source:
//!
//! - [`Verdict::Allow`] for every topic: the request goes on.
//! - [`Verdict::Unauthenticated`] for any topic: `401 unauthenticated` (with
//!   `WWW-Authenticate: Bearer`), whatever the other topics.
//! - [`Verdict::Deny`] for a topic: the request is refused whole, answered **exactly as a topic
//!   the source does not serve** ([`Rejection::UnknownTopic`], `400 unknown_topic` naming only
//!   that topic), so that a client cannot tell a topic it may not read from one that does not
//!   exist, and learns nothing of the other topics of its request. A `403` would confirm that
//!   the topic exists.
//!
//! A request that the check refuses never reaches the source: no cursor, head or epoch of a
//! topic it may not read is ever written to it.
//!
//! **Revocation.** Credentials can be revoked while a request waits: a stream, and a long poll
//! held longer than the interval, check again every
//! [`reauthorize_every`](crate::ChunkedStreamBuilder::reauthorize_every) (60 s by default,
//! well under a stream's lifetime). When the verdict is no longer `Allow`, a held poll is
//! answered `401 unauthenticated` at once, and a stream ends with the format's final message
//! for it (`event: error` with `{"error":"unauthenticated",...}` in SSE), telling the client to
//! authenticate again. The next request of a revoked client is refused at admission.
//!
//! **Cost.** A check that answers at once ([`Check::ready`], as a lookup in memory does) costs
//! no allocation; an asynchronous one ([`Check::new`]) is boxed while it runs and dropped
//! before the request waits. A parked poll holds nothing more for authorization unless its
//! hold is longer than the re-check interval.
//!
//! # Examples
//!
//! Bearer tokens, each granting some topics:
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::Arc;
//!
//! use tower_push::authorize::{Access, Check, Verdict};
//! use tower_push::LongPollLayer;
//!
//! let grants: Arc<HashMap<String, Vec<String>>> = Arc::new(HashMap::from([(
//!     "s3cret".to_owned(),
//!     vec!["orders".to_owned(), "prices".to_owned()],
//! )]));
//! let layer = LongPollLayer::builder()
//!     .authorize(move |request: &http::request::Parts, topic: Option<&str>, _: Access| {
//!         let token = request
//!             .headers
//!             .get(http::header::AUTHORIZATION)
//!             .and_then(|value| value.to_str().ok())
//!             .and_then(|value| value.strip_prefix("Bearer "));
//!         let verdict = match token.and_then(|token| grants.get(token)) {
//!             None => Verdict::Unauthenticated,
//!             Some(topics) if topic.is_some_and(|t| topics.iter().any(|g| g == t)) => {
//!                 Verdict::Allow
//!             }
//!             Some(_) => Verdict::Deny,
//!         };
//!         Check::ready(verdict)
//!     })
//!     .build()
//!     .unwrap();
//! # drop(layer);
//! ```
//!
//! [`Rejection::UnknownTopic`]: crate::Rejection::UnknownTopic

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::request::Parts;

/// What a request wants to do with a topic (or a Durable Stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Access {
    /// Read its events: a long poll, a stream, a Durable Streams read or `HEAD`.
    Read,
    /// Add to it: a publish, a Durable Streams append or close.
    Write,
    /// Create it: a Durable Streams `PUT` (for a fork, together with [`Read`](Access::Read) of
    /// the stream it forks).
    Create,
    /// Delete it.
    Delete,
}

impl Access {
    /// A short lowercase name: `read`, `write`, `create`, `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Create => "create",
            Self::Delete => "delete",
        }
    }
}

/// The answer to one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verdict {
    /// The request may.
    Allow,
    /// The request carries no credentials, or ones that are invalid, expired or revoked:
    /// `401`, and the client authenticates again.
    Unauthenticated,
    /// The credentials do not grant this: answered as if the topic did not exist.
    Deny,
}

/// A check in progress: ready at once, or a future that answers later.
///
/// # Examples
///
/// ```
/// use tower_push::authorize::{Check, Verdict};
///
/// let now = Check::ready(Verdict::Allow);
/// let later = Check::new(async { Verdict::Deny });
/// # drop((now, later));
/// ```
#[must_use = "a check does nothing unless polled"]
pub struct Check(Inner);

enum Inner {
    Ready(Option<Verdict>),
    Pending(Pin<Box<dyn Future<Output = Verdict> + Send>>),
}

impl Check {
    /// A check that has its verdict already: costs nothing.
    pub fn ready(verdict: Verdict) -> Self {
        Self(Inner::Ready(Some(verdict)))
    }

    /// A check that needs to wait (a lookup in a database, a call to an authorization
    /// service). The future must own what it needs: copy the token out of the request head
    /// first. It is boxed for as long as it runs.
    pub fn new(check: impl Future<Output = Verdict> + Send + 'static) -> Self {
        Self(Inner::Pending(Box::pin(check)))
    }

    /// The verdict, if the check has it without waiting.
    pub(crate) fn now(&self) -> Option<Verdict> {
        match &self.0 {
            Inner::Ready(verdict) => *verdict,
            Inner::Pending(_) => None,
        }
    }
}

impl From<Verdict> for Check {
    fn from(verdict: Verdict) -> Self {
        Self::ready(verdict)
    }
}

impl Future for Check {
    type Output = Verdict;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Verdict> {
        match &mut self.0 {
            Inner::Ready(verdict) => {
                Poll::Ready(verdict.take().expect("Check polled after it answered"))
            }
            Inner::Pending(check) => check.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Ready(verdict) => f.debug_tuple("Check").field(verdict).finish(),
            Inner::Pending(_) => f.write_str("Check(pending)"),
        }
    }
}

/// Decides whether a request may do something with a topic.
///
/// `topic` is the topic the request follows, for a multiplexed request (`?topics=a,b`: one
/// call per topic) or a source that serves topics by name; `None` for a request to a
/// single-topic route, which the request's path names. For the Durable Streams service it is
/// the stream's path.
///
/// Implemented for closures `Fn(&Parts, Option<&str>, Access) -> Check`.
pub trait Authorize: Send + Sync + 'static {
    /// Checks `request` for `access` to `topic`.
    fn authorize(&self, request: &Parts, topic: Option<&str>, access: Access) -> Check;
}

impl<F> Authorize for F
where
    F: Fn(&Parts, Option<&str>, Access) -> Check + Send + Sync + 'static,
{
    fn authorize(&self, request: &Parts, topic: Option<&str>, access: Access) -> Check {
        self(request, topic, access)
    }
}

/// An [`Authorize`] as the layers keep it, with how often held requests check again.
#[derive(Clone)]
pub(crate) struct Authorizer {
    check: Arc<dyn Authorize>,
    pub(crate) every: Duration,
}

impl Authorizer {
    /// The default interval between the checks of a held request.
    pub(crate) const EVERY: Duration = Duration::from_secs(60);

    pub(crate) fn new(check: impl Authorize) -> Self {
        Self {
            check: Arc::new(check),
            every: Self::EVERY,
        }
    }

    /// Starts the checks of `request` reading each of `topics` (one `None` for a request to a
    /// single-topic route). Checks that answer at once are decided on the spot, without
    /// allocating: only checks that wait are kept.
    pub(crate) fn start<'a>(
        &self,
        request: &Parts,
        topics: impl IntoIterator<Item = Option<&'a Arc<str>>>,
    ) -> Checks {
        let mut checks = Checks {
            unauthenticated: false,
            first_denied: None,
            pending: Vec::new(),
        };
        for (at, topic) in topics.into_iter().enumerate() {
            let check = self
                .check
                .authorize(request, topic.map(|t| &**t), Access::Read);
            match check.now() {
                Some(verdict) => checks.record(at, topic, verdict),
                None => checks.pending.push((at, topic.cloned(), check)),
            }
        }
        checks
    }

    /// Checks `request` for `access` to `topic`, outside the layers (the Durable Streams
    /// service's writes).
    #[cfg(feature = "durable")]
    pub(crate) fn check(&self, request: &Parts, topic: &str, access: Access) -> Check {
        self.check.authorize(request, Some(topic), access)
    }
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorizer")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

/// The checks of one request's topics, and what they decide together.
#[derive(Debug)]
pub(crate) struct Checks {
    /// Whether a check answered [`Verdict::Unauthenticated`].
    unauthenticated: bool,
    /// The first topic (in the request's order) a check denied, with its place.
    first_denied: Option<(usize, Option<Arc<str>>)>,
    /// The checks still running, each with its topic's place; empty, and so not allocated,
    /// when every check answered at once.
    pending: Vec<(usize, Option<Arc<str>>, Check)>,
}

/// What a request's checks decided, once every one answered or one refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Allow,
    Unauthenticated,
    /// Denied for this topic (the first one, in the request's order, that was denied).
    Deny(Option<Arc<str>>),
}

impl Checks {
    /// Counts the verdict of the check of the topic at place `at`.
    fn record(&mut self, at: usize, topic: Option<&Arc<str>>, verdict: Verdict) {
        match verdict {
            Verdict::Allow => {}
            Verdict::Unauthenticated => self.unauthenticated = true,
            Verdict::Deny => {
                if self
                    .first_denied
                    .as_ref()
                    .is_none_or(|(first, _)| at < *first)
                {
                    self.first_denied = Some((at, topic.cloned()));
                }
            }
        }
    }

    /// The decision, if it is known without waiting: missing credentials decide at once.
    pub(crate) fn now(&self) -> Option<Decision> {
        if self.unauthenticated {
            return Some(Decision::Unauthenticated);
        }
        self.pending.is_empty().then(|| self.decide())
    }

    fn decide(&self) -> Decision {
        match (&self.first_denied, self.unauthenticated) {
            (_, true) => Decision::Unauthenticated,
            (Some((_, topic)), false) => Decision::Deny(topic.clone()),
            (None, false) => Decision::Allow,
        }
    }

    /// Waits for every check (an `Unauthenticated` one decides at once).
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Decision> {
        let mut i = 0;
        while i < self.pending.len() {
            match Pin::new(&mut self.pending[i].2).poll(cx) {
                Poll::Ready(verdict) => {
                    let (at, topic, _) = self.pending.swap_remove(i);
                    self.record(at, topic.as_ref(), verdict);
                }
                Poll::Pending => i += 1,
            }
        }
        match self.now() {
            Some(decision) => Poll::Ready(decision),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> Parts {
        http::Request::new(()).into_parts().0
    }

    #[tokio::test]
    async fn unauthenticated_wins_and_the_first_denied_topic_is_named() {
        let authorizer = Authorizer::new(|_: &Parts, topic: Option<&str>, _: Access| {
            Check::ready(match topic {
                Some("a") => Verdict::Allow,
                Some("x") => Verdict::Unauthenticated,
                _ => Verdict::Deny,
            })
        });
        let topics: Vec<Arc<str>> = vec!["a".into(), "b".into(), "c".into()];
        let checks = authorizer.start(&parts(), topics.iter().map(Some));
        assert_eq!(checks.now(), Some(Decision::Deny(Some("b".into()))));
        let topics: Vec<Arc<str>> = vec!["b".into(), "x".into()];
        let checks = authorizer.start(&parts(), topics.iter().map(Some));
        assert_eq!(checks.now(), Some(Decision::Unauthenticated));
        let topics: Vec<Arc<str>> = vec!["a".into()];
        let checks = authorizer.start(&parts(), topics.iter().map(Some));
        assert_eq!(checks.now(), Some(Decision::Allow));
    }

    #[tokio::test(start_paused = true)]
    async fn checks_that_answer_at_once_keep_nothing_and_the_order_of_denials_holds() {
        // "a" waits and is denied, "b" is denied at once: "a" comes first in the request.
        let authorizer = Authorizer::new(|_: &Parts, topic: Option<&str>, _: Access| match topic {
            Some("a") => Check::new(async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Verdict::Deny
            }),
            Some("b") => Check::ready(Verdict::Deny),
            _ => Check::ready(Verdict::Allow),
        });
        let topics: Vec<Arc<str>> = vec!["a".into(), "b".into(), "c".into()];
        let mut checks = authorizer.start(&parts(), topics.iter().map(Some));
        assert_eq!(checks.now(), None);
        let decision = std::future::poll_fn(|cx| checks.poll(cx)).await;
        assert_eq!(decision, Decision::Deny(Some("a".into())));
        // Only checks that wait are kept: none here, and nothing allocated for them.
        let checks = authorizer.start(&parts(), topics[1..].iter().map(Some));
        assert_eq!(checks.pending.capacity(), 0);
        assert_eq!(checks.now(), Some(Decision::Deny(Some("b".into()))));
    }

    #[tokio::test(start_paused = true)]
    async fn asynchronous_checks_are_waited_for() {
        let authorizer = Authorizer::new(|_: &Parts, topic: Option<&str>, _: Access| {
            let allowed = topic == Some("a");
            Check::new(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if allowed {
                    Verdict::Allow
                } else {
                    Verdict::Deny
                }
            })
        });
        let topics: Vec<Arc<str>> = vec!["a".into(), "b".into()];
        let mut checks = authorizer.start(&parts(), topics.iter().map(Some));
        assert_eq!(checks.now(), None);
        let decision = std::future::poll_fn(|cx| checks.poll(cx)).await;
        assert_eq!(decision, Decision::Deny(Some("b".into())));
    }
}
