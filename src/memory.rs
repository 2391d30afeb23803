//! The embedded default event source: an in-memory log per topic.
//!
//! A [`MemoryLog`] holds any number of topics. Each [`Topic`] numbers its events from 1 in the
//! order they are published, keeps the newest of them (bounded by count and optionally by age),
//! and is an event source for both layers: `Topic` implements
//! `Service<`[`Subscribe`]`, Response = `[`Outcome`]`>`.
//!
//! # Epochs
//!
//! The log picks a random [`Epoch`] when it is created, and every cursor carries it. A cursor
//! from an earlier process (or an earlier `MemoryLog`) is answered with
//! [`Outcome::Resync`], never compared by number with this log's events.
//!
//! # Retention
//!
//! A topic keeps at most [`MemoryLogBuilder::retention`] events, and with
//! [`MemoryLogBuilder::max_age`] none older than that. A cursor whose next event was dropped gets
//! [`Outcome::Resync`] with [`ResyncReason::Expired`](crate::source::ResyncReason::Expired):
//! resuming it would silently skip events.
//!
//! # Waiting
//!
//! A subscription that has nothing to return parks on the topic's [`tokio::sync::Notify`]: no
//! task, channel or allocation per waiter beyond its future, and one publish wakes every parked
//! subscription of the topic. The waiter is registered *before* the log is checked, so an event
//! published between the check and the wait is never missed. Dropping a parked subscription
//! unregisters it.
//!
//! # Examples
//!
//! ```
//! use tower_push::{EventData, MemoryLog};
//!
//! let log = MemoryLog::new();
//! let chat = log.topic("chat");
//! let first = chat.publish(EventData::from_json(r#"{"text":"hi"}"#)?);
//! assert_eq!(first.seq(), 1);
//! assert_eq!(chat.head(), first);
//! # Ok::<(), tower_push::InvalidJson>(())
//! ```

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;
use tokio::time::Instant;
use tower_service::Service;

use crate::config::check;
use crate::source::{Batch, Outcome, Position, Subscribe};
use crate::sync::{MutexExt, RwLockExt};
use crate::{ConfigError, Cursor, Epoch, Event, EventData, EventName};

/// An in-memory log of events, split into topics.
///
/// Cloning is cheap and every clone is the same log: publish from any task or thread.
#[derive(Clone)]
pub struct MemoryLog {
    shared: Arc<LogShared>,
}

struct LogShared {
    settings: Settings,
    topics: RwLock<HashMap<Arc<str>, Topic>>,
    /// How many unused topics were dropped to make room for new ones.
    dropped: AtomicU64,
}

#[derive(Clone, Copy, Debug)]
struct Settings {
    epoch: Epoch,
    retention: usize,
    max_age: Option<Duration>,
    max_topics: Option<usize>,
}

impl MemoryLog {
    /// A log with the default settings: a random epoch, 1024 events per topic, no age limit.
    pub fn new() -> Self {
        MemoryLogBuilder::new()
            .build()
            .expect("default settings are valid")
    }

    /// A builder for a log with other settings.
    pub fn builder() -> MemoryLogBuilder {
        MemoryLogBuilder::new()
    }

    /// The log's epoch. Each topic's cursors carry an epoch derived from it and the topic's
    /// name ([`Topic::epoch`]), so a cursor of one topic (or of another log) is answered with a
    /// resync on every other topic, never read as a position there.
    pub fn epoch(&self) -> Epoch {
        self.shared.settings.epoch
    }

    /// The topic named `name`, created empty if it does not exist yet.
    ///
    /// Topics live as long as the log, and this creates one whatever
    /// [`max_topics`](MemoryLogBuilder::max_topics) says: call it with names your application
    /// controls. For names that come from clients, use [`try_topic`](Self::try_topic).
    pub fn topic(&self, name: &str) -> Topic {
        if let Some(topic) = self.find_topic(name) {
            return topic;
        }
        let mut topics = self.topics_mut();
        if let Some(topic) = topics.get(name) {
            return topic.clone();
        }
        self.insert(&mut topics, name)
    }

    /// The topic named `name`, created empty if it does not exist and the log holds fewer than
    /// [`max_topics`](MemoryLogBuilder::max_topics) topics. To make room, topics that nobody
    /// uses any more are dropped first: no handle to them outside the log, no parked
    /// subscription, no retained event (with [`max_age`](MemoryLogBuilder::max_age), old
    /// events expire). A topic made again after it was dropped has a new epoch, so cursors of
    /// the old one get a resync answer.
    ///
    /// # Errors
    ///
    /// [`TooManyTopics`] if the log is full of topics in use.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::memory::TooManyTopics;
    /// use tower_push::{EventData, MemoryLog};
    ///
    /// let log = MemoryLog::builder().max_topics(1).build()?;
    /// let news = log.try_topic("news")?;
    /// news.publish(EventData::from_json("1")?);
    /// assert_eq!(log.try_topic("chat").unwrap_err(), TooManyTopics { max: 1 });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_topic(&self, name: &str) -> Result<Topic, TooManyTopics> {
        if let Some(topic) = self.find_topic(name) {
            return Ok(topic);
        }
        let mut topics = self.topics_mut();
        if let Some(topic) = topics.get(name) {
            return Ok(topic.clone());
        }
        if let Some(max) = self.shared.settings.max_topics {
            if topics.len() >= max {
                let (now, max_age) = (Instant::now(), self.shared.settings.max_age);
                let before = topics.len();
                topics.retain(|_, topic| !topic.is_unused(now, max_age));
                let dropped = before - topics.len();
                self.shared
                    .dropped
                    .fetch_add(dropped as u64, Ordering::Relaxed);
                if topics.len() >= max {
                    return Err(TooManyTopics { max });
                }
            }
        }
        Ok(self.insert(&mut topics, name))
    }

    /// How many topics the log holds.
    pub fn topic_count(&self) -> usize {
        self.shared.topics.read_locked().len()
    }

    fn topics_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, Topic>> {
        self.shared.topics.write_locked()
    }

    /// Makes the topic `name`, which is not in `topics`.
    fn insert(&self, topics: &mut HashMap<Arc<str>, Topic>, name: &str) -> Topic {
        let mut epoch = self.shared.settings.epoch.derive(name);
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            // The name may be of a dropped topic: a new incarnation gets a new epoch.
            epoch = epoch.derive(&dropped.to_string());
        }
        let name: Arc<str> = Arc::from(name);
        let topic = Topic::new(name.clone(), epoch, self.shared.settings);
        topics.insert(name, topic.clone());
        topic
    }

    /// The topic named `name`, if it exists; unlike [`topic`](Self::topic) it never creates one,
    /// so it is safe to call with a name from a request.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::MemoryLog;
    ///
    /// let log = MemoryLog::new();
    /// assert!(log.find_topic("news").is_none());
    /// log.topic("news");
    /// assert!(log.find_topic("news").is_some());
    /// ```
    pub fn find_topic(&self, name: &str) -> Option<Topic> {
        let topics = self.shared.topics.read_locked();
        topics.get(name).cloned()
    }

    /// Publishes `data` on the topic `name` and returns the new event's id.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::{EventData, MemoryLog};
    ///
    /// let log = MemoryLog::new();
    /// let id = log.publish("news", EventData::from_json("1")?);
    /// assert_eq!(log.topic("news").head(), id);
    /// # Ok::<(), tower_push::InvalidJson>(())
    /// ```
    pub fn publish(&self, name: &str, data: EventData) -> Cursor {
        self.topic(name).publish(data)
    }
}

impl Default for MemoryLog {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topics = self.shared.topics.read_locked().len();
        f.debug_struct("MemoryLog")
            .field("settings", &self.shared.settings)
            .field("topics", &topics)
            .finish()
    }
}

/// The error of [`MemoryLog::try_topic`]: the log already holds its
/// [`max_topics`](MemoryLogBuilder::max_topics) topics, all in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyTopics {
    /// The log's maximum.
    pub max: usize,
}

impl fmt::Display for TooManyTopics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the log already holds its maximum of {} topics",
            self.max
        )
    }
}

impl std::error::Error for TooManyTopics {}

/// Settings for a [`MemoryLog`]. `MemoryLogBuilder::new()` equals `Default::default()`.
#[derive(Clone, Debug)]
pub struct MemoryLogBuilder {
    epoch: Option<Epoch>,
    retention: usize,
    max_age: Option<Duration>,
    max_topics: Option<usize>,
}

impl MemoryLogBuilder {
    /// The default settings.
    pub fn new() -> Self {
        Self {
            epoch: None,
            retention: 1024,
            max_age: None,
            max_topics: None,
        }
    }

    /// The most events each topic keeps; older ones are dropped as new ones arrive.
    ///
    /// Default is 1024.
    #[must_use]
    pub fn retention(mut self, events: usize) -> Self {
        self.retention = events;
        self
    }

    /// Drops events older than `age`, however few there are.
    ///
    /// Default is no age limit.
    #[must_use]
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// The most topics [`MemoryLog::try_topic`] lets the log hold: with names from clients, this
    /// bounds the log's memory (each topic costs its retained events and about 200 bytes).
    ///
    /// Default is no limit.
    #[must_use]
    pub fn max_topics(mut self, max: usize) -> Self {
        self.max_topics = Some(max);
        self
    }

    /// Uses `epoch` instead of a random one.
    ///
    /// Only for logs that are rebuilt with the same events (from a snapshot, say): two logs with
    /// one epoch and different events make clients skip or repeat events silently.
    ///
    /// Default is [`Epoch::random`].
    #[must_use]
    pub fn epoch(mut self, epoch: Epoch) -> Self {
        self.epoch = Some(epoch);
        self
    }

    /// Builds the log.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroCount`] for a retention of zero events or zero maximum topics, and
    /// [`ConfigError::ZeroDuration`] for a zero maximum age.
    pub fn build(self) -> Result<MemoryLog, ConfigError> {
        check::at_least_one("retention", self.retention)?;
        check::cap("max topics", self.max_topics)?;
        if let Some(max_age) = self.max_age {
            check::positive("max age", max_age)?;
        }
        let settings = Settings {
            epoch: self.epoch.unwrap_or_else(Epoch::random),
            retention: self.retention,
            max_age: self.max_age,
            max_topics: self.max_topics,
        };
        Ok(MemoryLog {
            shared: Arc::new(LogShared {
                settings,
                topics: RwLock::new(HashMap::new()),
                dropped: AtomicU64::new(0),
            }),
        })
    }
}

impl Default for MemoryLogBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// One topic of a [`MemoryLog`]: publish to it, and serve it as an event source.
///
/// Cloning is cheap and every clone is the same topic.
#[derive(Clone)]
pub struct Topic {
    shared: Arc<TopicShared>,
}

struct TopicShared {
    name: Arc<str>,
    /// The log's epoch derived for this topic: what its cursors carry.
    epoch: Epoch,
    settings: Settings,
    state: RwLock<TopicState>,
    // An `Arc` of its own so that parked subscriptions can hold an `OwnedNotified`.
    notify: Arc<Notify>,
    waiting: AtomicUsize,
    /// The last batch built, with the cursor it follows: what the next subscription at the same
    /// cursor gets, unless the topic moved on.
    shared_batch: Mutex<Option<(Cursor, Batch)>>,
}

#[derive(Default)]
struct TopicState {
    /// The sequence number of the newest event; 0 before the first.
    head: u64,
    /// The retained events, oldest first; the last one has sequence number `head`.
    events: VecDeque<Stored>,
}

struct Stored {
    data: EventData,
    name: Option<EventName>,
    at: Instant,
    /// When it was published, by the wall clock, for the layers' latency metrics.
    #[cfg(feature = "metrics")]
    published: std::time::SystemTime,
}

impl Topic {
    fn new(name: Arc<str>, epoch: Epoch, settings: Settings) -> Self {
        Self {
            shared: Arc::new(TopicShared {
                epoch,
                name,
                settings,
                state: RwLock::new(TopicState::default()),
                notify: Arc::new(Notify::new()),
                waiting: AtomicUsize::new(0),
                shared_batch: Mutex::new(None),
            }),
        }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The epoch its cursors carry: the log's epoch derived for this topic's name (see
    /// [`Epoch::derive`]).
    pub fn epoch(&self) -> Epoch {
        self.shared.epoch
    }

    /// Appends an event, wakes every parked subscription of this topic, and returns the event's
    /// id.
    ///
    /// # Panics
    ///
    /// Panics if the topic has published `u64::MAX` events.
    pub fn publish(&self, data: EventData) -> Cursor {
        self.append(None, data)
    }

    /// Like [`publish`](Self::publish), for an event with a name (SSE's `event:` field).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::{EventData, EventName, MemoryLog};
    ///
    /// let topic = MemoryLog::new().topic("chat");
    /// let id = topic.publish_named(EventName::new("joined")?, EventData::from_json(r#""ann""#)?);
    /// assert_eq!(id.seq(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if the topic has published `u64::MAX` events.
    pub fn publish_named(&self, name: EventName, data: EventData) -> Cursor {
        self.append(Some(name), data)
    }

    fn append(&self, name: Option<EventName>, data: EventData) -> Cursor {
        let settings = self.shared.settings;
        let now = Instant::now();
        let head = {
            let mut state = self.shared.write();
            state.head = state.head.checked_add(1).expect("sequence overflow");
            state.events.push_back(Stored {
                data,
                name,
                at: now,
                #[cfg(feature = "metrics")]
                published: std::time::SystemTime::now(),
            });
            let excess = state.events.len().saturating_sub(settings.retention);
            state.events.drain(..excess);
            if let Some(max_age) = settings.max_age {
                let stale = state.stale(now, max_age);
                state.events.drain(..stale);
            }
            state.head
        };
        self.shared.notify.notify_waiters();
        Cursor::new(self.shared.epoch, head)
    }

    /// The id of the newest event, or the start cursor if nothing was published yet.
    pub fn head(&self) -> Cursor {
        Cursor::new(self.shared.epoch, self.shared.read().head)
    }

    /// The cursor that reads every retained event: the position just before the oldest one.
    pub fn oldest(&self) -> Cursor {
        let state = self.shared.read();
        let first = state.first_live(Instant::now(), self.shared.settings.max_age);
        Cursor::new(self.shared.epoch, first - 1)
    }

    /// Whether only the log holds this topic and it retains no live event.
    fn is_unused(&self, now: Instant, max_age: Option<Duration>) -> bool {
        Arc::strong_count(&self.shared) == 1 && {
            let state = self.shared.read();
            state.first_live(now, max_age) > state.head
        }
    }

    /// The number of subscriptions parked on this topic right now, waiting for its next event.
    pub fn parked_subscriptions(&self) -> usize {
        self.shared.waiting.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.shared.name)
            .field("head", &self.head())
            .field("parked_subscriptions", &self.parked_subscriptions())
            .finish()
    }
}

impl TopicShared {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, TopicState> {
        // The state is consistent after every statement that changes it, so a panic elsewhere
        // while the lock was held leaves nothing half-done.
        self.state.read_locked()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, TopicState> {
        self.state.write_locked()
    }

    /// Answers `position` from the retained events, or `None` if the caller must wait for the
    /// next publish.
    fn answer(&self, position: Position, limit: usize) -> Option<Outcome> {
        let (epoch, max_age) = (self.epoch, self.settings.max_age);
        let state = self.read();
        let head = Cursor::new(epoch, state.head);
        let first = state.first_live(Instant::now(), max_age);
        let oldest = Cursor::new(epoch, first - 1);
        let after = match crate::source::read_after(position, oldest, head) {
            Ok(after) => after,
            Err(outcome) => return Some(outcome),
        };
        if after == head {
            return match position {
                Position::Oldest => Some(Outcome::Head(head)),
                _ => None,
            };
        }
        // `oldest <= after < head`: the next event is retained. Every subscription waiting at
        // `after` gets the same batch, built once (and so encoded once by the layers).
        let end = state.head.min(after.seq().saturating_add(limit as u64));
        let mut shared = self.shared_batch.locked();
        if let Some((at, batch)) = &*shared {
            if *at == after && batch.last().seq() == end {
                return Some(Outcome::Events(batch.clone()));
            }
        }
        let first_stored = state.head + 1 - state.events.len() as u64;
        let skip = (after.seq() + 1 - first_stored) as usize;
        let events = state
            .events
            .iter()
            .skip(skip)
            .take(limit)
            .zip(after.seq() + 1..)
            .map(|(stored, seq)| {
                let event = Event::new(Cursor::new(epoch, seq), stored.data.clone());
                #[cfg(feature = "metrics")]
                let event = event.with_published_at(stored.published);
                match &stored.name {
                    Some(name) => event.with_name(name.clone()),
                    None => event,
                }
            })
            .collect();
        let batch = Batch::new(events)?;
        *shared = Some((after, batch.clone()));
        Some(Outcome::Events(batch))
    }
}

impl TopicState {
    /// How many of the oldest stored events are older than `max_age` at `now`.
    fn stale(&self, now: Instant, max_age: Duration) -> usize {
        self.events
            .partition_point(|stored| now.saturating_duration_since(stored.at) >= max_age)
    }

    /// The sequence number of the oldest event that is retained and not too old; `head + 1` if
    /// there is none.
    fn first_live(&self, now: Instant, max_age: Option<Duration>) -> u64 {
        let stale = max_age.map_or(0, |max_age| self.stale(now, max_age));
        self.head + 1 - (self.events.len() - stale) as u64
    }
}

/// Serves subscriptions to this topic; one that names another topic ([`Subscribe::topic`]) is
/// answered with [`Outcome::UnknownTopic`].
impl Service<Subscribe> for Topic {
    type Response = Outcome;
    type Error = Infallible;
    type Future = Subscription;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Subscribe) -> Self::Future {
        let ours = req.topic().is_none_or(|name| name == &*self.shared.name);
        Subscription::new(ours.then(|| self.shared.clone()), &req)
    }
}

/// Serves the topics of a multiplexed request (see [Several topics](crate#several-topics)): a
/// subscription naming a topic that exists follows it, any other is answered with
/// [`Outcome::UnknownTopic`] (and so `400 unknown_topic`). Subscribing never creates a topic:
/// create the topics clients may follow with [`topic`](MemoryLog::topic) or
/// [`try_topic`](MemoryLog::try_topic), or by publishing.
///
/// # Examples
///
/// ```
/// use tower_push::{LongPollLayer, MemoryLog};
///
/// let log = MemoryLog::new();
/// log.topic("inbox");
/// log.topic("presence");
/// // `GET /poll?topics=inbox,presence` follows both with one request.
/// let poll = LongPollLayer::new().layer(log.clone());
/// # let _ = poll;
/// ```
impl Service<Subscribe> for MemoryLog {
    type Response = Outcome;
    type Error = Infallible;
    type Future = Subscription;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Subscribe) -> Self::Future {
        let topic = req.topic().and_then(|name| self.find_topic(name));
        Subscription::new(topic.map(|topic| topic.shared), &req)
    }
}

pin_project! {
    /// A subscription to a [`Topic`]: resolves with the next events after its position.
    ///
    /// # Cancel safety
    ///
    /// Dropping it at any point loses nothing and unregisters its waiter.
    #[must_use = "futures do nothing unless polled"]
    pub struct Subscription {
        // `None`: the subscription names no topic served here.
        topic: Option<Arc<TopicShared>>,
        position: Position,
        limit: usize,
        #[pin]
        notified: Option<OwnedNotified>,
        // Whether this subscription is counted in `Topic::parked_subscriptions`.
        parked: bool,
    }

    impl PinnedDrop for Subscription {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let (true, Some(topic)) = (*this.parked, this.topic) {
                topic.waiting.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Future for Subscription {
    type Output = Result<Outcome, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(topic) = this.topic.as_deref() else {
            return Poll::Ready(Ok(Outcome::UnknownTopic));
        };
        let (position, limit) = (*this.position, *this.limit);
        let answer = crate::wake::poll_check(this.notified, &topic.notify, cx, || {
            topic.answer(position, limit)
        });
        // Count this subscription in `Topic::parked_subscriptions` exactly while it is parked.
        let parked = answer.is_pending();
        if parked != std::mem::replace(this.parked, parked) {
            if parked {
                topic.waiting.fetch_add(1, Ordering::Relaxed);
            } else {
                topic.waiting.fetch_sub(1, Ordering::Relaxed);
            }
        }
        answer.map(Ok)
    }
}

impl Subscription {
    fn new(topic: Option<Arc<TopicShared>>, req: &Subscribe) -> Self {
        Self {
            topic,
            position: req.position(),
            limit: req.limit(),
            notified: None,
            parked: false,
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic.as_ref().map(|topic| &topic.name))
            .field("position", &self.position)
            .field("limit", &self.limit)
            .field("parked", &self.parked)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Resync, ResyncReason};
    use tower::ServiceExt;

    fn data(n: u64) -> EventData {
        EventData::from_serialize(&n).unwrap()
    }

    fn parts() -> Arc<http::request::Parts> {
        Arc::new(http::Request::new(()).into_parts().0)
    }

    fn sub(position: Position, limit: usize) -> Subscribe {
        Subscribe::new(position, limit, parts())
    }

    fn seqs(outcome: Outcome) -> Vec<u64> {
        match outcome {
            Outcome::Events(batch) => batch.events().iter().map(|e| e.id().seq()).collect(),
            other => panic!("expected events, got {other:?}"),
        }
    }

    fn log(retention: usize) -> MemoryLog {
        MemoryLog::builder()
            .retention(retention)
            .epoch(Epoch::new(9))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn answers_every_position() {
        let topic = log(3).topic("t");
        let epoch = Epoch::new(9).derive("t");
        let at = |seq| Position::After(Cursor::new(epoch, seq));
        assert_eq!(
            topic.clone().oneshot(sub(Position::Head, 10)).await,
            Ok(Outcome::Head(Cursor::zero(epoch)))
        );
        assert_eq!(
            topic.clone().oneshot(sub(Position::Oldest, 10)).await,
            Ok(Outcome::Head(Cursor::zero(epoch)))
        );
        for n in 1..=5 {
            assert_eq!(topic.publish(data(n)).seq(), n);
        }
        // Retention keeps 3..=5.
        assert_eq!(topic.oldest(), Cursor::new(epoch, 2));
        assert_eq!(
            topic.clone().oneshot(sub(at(2), 10)).await.map(seqs),
            Ok(vec![3, 4, 5])
        );
        assert_eq!(
            topic.clone().oneshot(sub(at(3), 1)).await.map(seqs),
            Ok(vec![4])
        );
        assert_eq!(
            topic
                .clone()
                .oneshot(sub(Position::Oldest, 2))
                .await
                .map(seqs),
            Ok(vec![3, 4])
        );
        assert_eq!(
            topic.clone().oneshot(sub(Position::Head, 10)).await,
            Ok(Outcome::Head(Cursor::new(epoch, 5)))
        );
        let expired = Resync::new(
            ResyncReason::Expired,
            Cursor::new(epoch, 2),
            Cursor::new(epoch, 5),
        );
        assert_eq!(
            topic.clone().oneshot(sub(at(1), 10)).await,
            Ok(Outcome::Resync(expired))
        );
        assert_eq!(
            topic.clone().oneshot(sub(at(6), 10)).await,
            Ok(Outcome::Ahead {
                head: Cursor::new(epoch, 5)
            })
        );
        let other = Position::After(Cursor::new(Epoch::new(8), 5));
        let mismatch = Resync::new(
            ResyncReason::EpochMismatch,
            Cursor::new(epoch, 2),
            Cursor::new(epoch, 5),
        );
        assert_eq!(
            topic.clone().oneshot(sub(other, 10)).await,
            Ok(Outcome::Resync(mismatch))
        );
    }

    #[tokio::test]
    async fn parks_at_the_head_until_a_publish() {
        let topic = log(8).topic("t");
        let head = topic.publish(data(1));
        let mut parked = tokio::spawn(topic.clone().oneshot(sub(Position::After(head), 10)));
        tokio::task::yield_now().await;
        assert!(!parked.is_finished());
        assert_eq!(topic.parked_subscriptions(), 1);
        topic.publish(data(2));
        assert_eq!((&mut parked).await.unwrap().map(seqs), Ok(vec![2]));
        assert_eq!(topic.parked_subscriptions(), 0);
    }

    #[tokio::test]
    async fn dropping_a_parked_subscription_unregisters_it() {
        let topic = log(8).topic("t");
        let at_head = Position::After(topic.head());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut first = Box::pin(topic.clone().call(sub(at_head, 1)));
        let mut second = Box::pin(topic.clone().call(sub(at_head, 1)));
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        assert_eq!(topic.parked_subscriptions(), 2);
        drop(first);
        assert_eq!(topic.parked_subscriptions(), 1);
        topic.publish(data(1));
        assert!(second.as_mut().poll(&mut cx).is_ready());
        assert_eq!(topic.parked_subscriptions(), 0);
        drop(second);
        assert_eq!(topic.parked_subscriptions(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn try_topic_keeps_within_max_topics_by_dropping_unused_ones() {
        let log = MemoryLog::builder()
            .max_topics(2)
            .max_age(Duration::from_secs(10))
            .build()
            .unwrap();
        let a = log.try_topic("a").unwrap();
        let old = a.publish(data(1));
        drop(a);
        let b = log.try_topic("b").unwrap();
        // `a` still retains an event and `b` is held: no room.
        assert_eq!(log.try_topic("c").unwrap_err(), TooManyTopics { max: 2 });
        assert_eq!(log.topic_count(), 2);
        tokio::time::advance(Duration::from_secs(11)).await;
        // `a`'s event expired and nobody holds `a`: it makes room for `c`.
        let c = log.try_topic("c").unwrap();
        assert_eq!(log.topic_count(), 2);
        assert!(log.find_topic("a").is_none());
        assert_eq!(log.try_topic("d").unwrap_err(), TooManyTopics { max: 2 });
        drop((b, c));
        // `a` again: unused `b` and `c` make room, and the new incarnation's epoch turns the
        // old cursors into a resync.
        let a = log.try_topic("a").unwrap();
        assert_eq!(log.topic_count(), 1);
        assert_ne!(a.epoch(), old.epoch());
        let outcome = a.clone().oneshot(sub(Position::After(old), 10)).await;
        assert!(matches!(
            outcome,
            Ok(Outcome::Resync(r)) if r.reason() == ResyncReason::EpochMismatch
        ));
        // `topic` is for names the application controls: it is never refused.
        log.topic("e");
        log.topic("f");
        assert_eq!(log.topic_count(), 3);
    }

    #[tokio::test]
    async fn a_cursor_of_another_topic_or_log_is_another_epoch() {
        let log = log(10);
        let (a, b) = (log.topic("a"), log.topic("b"));
        for n in 1..=20 {
            a.publish(data(n));
            b.publish(data(n));
        }
        assert_ne!(a.epoch(), b.epoch());
        assert_ne!(
            a.head(),
            b.head(),
            "ids are unique across the topics of a log"
        );
        let other_log = MemoryLog::new().topic("b");
        for foreign in [a.head(), a.oldest(), other_log.head()] {
            let outcome = b.clone().oneshot(sub(Position::After(foreign), 10)).await;
            assert!(
                matches!(&outcome, Ok(Outcome::Resync(r)) if r.reason() == ResyncReason::EpochMismatch),
                "{foreign} on topic b: {outcome:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn age_retention_expires_cursors_without_a_publish() {
        let log = MemoryLog::builder()
            .epoch(Epoch::new(1))
            .max_age(Duration::from_secs(10))
            .build()
            .unwrap();
        let topic = log.topic("t");
        topic.publish(data(1));
        tokio::time::advance(Duration::from_secs(5)).await;
        topic.publish(data(2));
        tokio::time::advance(Duration::from_secs(6)).await;
        // Event 1 is 11 s old, event 2 is 6 s old.
        assert_eq!(topic.oldest().seq(), 1);
        let start = Position::After(Cursor::zero(topic.epoch()));
        assert!(matches!(
            topic.clone().oneshot(sub(start, 10)).await,
            Ok(Outcome::Resync(r)) if r.reason() == ResyncReason::Expired
        ));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(topic.oldest().seq(), 2);
        // At the head nothing was lost: the subscription waits.
        let at_head = Position::After(topic.head());
        let waiting = tokio::time::timeout(
            Duration::from_secs(1),
            topic.clone().oneshot(sub(at_head, 1)),
        );
        assert!(waiting.await.is_err());
    }

    #[test]
    fn refuses_unusable_settings() {
        assert_eq!(
            MemoryLog::builder().retention(0).build().unwrap_err(),
            ConfigError::ZeroCount {
                setting: "retention"
            }
        );
        assert!(MemoryLog::builder()
            .max_age(Duration::ZERO)
            .build()
            .is_err());
    }

    /// Many publishers and many subscribers racing: a publish that lands between a
    /// subscription's check and its wait must still wake it, every time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_publish_is_missed_under_concurrency() {
        for round in 0..200 {
            let topic = log(4096).topic("race");
            let start = topic.head();
            let readers: Vec<_> = (0..8)
                .map(|_| {
                    let topic = topic.clone();
                    tokio::spawn(async move {
                        let mut cursor = start;
                        let mut seen = Vec::new();
                        while seen.len() < 50 {
                            let outcome = topic
                                .clone()
                                .oneshot(sub(Position::After(cursor), 7))
                                .await
                                .unwrap();
                            for n in seqs(outcome) {
                                seen.push(n);
                            }
                            cursor = Cursor::new(cursor.epoch(), *seen.last().unwrap());
                        }
                        seen
                    })
                })
                .collect();
            let publisher = {
                let topic = topic.clone();
                std::thread::spawn(move || {
                    for n in 1..=50 {
                        topic.publish(data(n));
                        if n % 7 == 0 {
                            std::thread::yield_now();
                        }
                    }
                })
            };
            for reader in readers {
                let seen = tokio::time::timeout(Duration::from_secs(10), reader)
                    .await
                    .unwrap_or_else(|_| panic!("round {round}: a reader missed a wake-up"))
                    .unwrap();
                assert_eq!(seen, (1..=50).collect::<Vec<_>>(), "round {round}");
            }
            publisher.join().unwrap();
            assert_eq!(topic.parked_subscriptions(), 0);
        }
    }
}
