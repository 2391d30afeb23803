//! An event source on Redis Streams: one consistent feed for many server processes.
//!
//! A [`RedisSource`] publishes events to one Redis stream per topic and serves those streams to
//! both layers: [`RedisTopic`] implements `Service<`[`Subscribe`]`, Response = `[`Outcome`]`>`.
//! Every process that uses the same Redis and key prefix sees the same events under the same
//! cursors, so a client may send each poll to a different process behind a load balancer.
//!
//! # Keys and cursors
//!
//! The topic `chat` is the stream `push:chat` (the prefix is [`RedisSourceBuilder::key_prefix`])
//! plus the key `push:chat:epoch`. Events are added with `XADD push:chat MAXLEN ~ <retention>
//! 0-* ...`, so stream ids are `0-1`, `0-2`, …: the sequence number of an event's [`Cursor`] is
//! the second part of its stream id. The [`Epoch`] is chosen at random when the stream is
//! created and stored beside it; a stream that is deleted and recreated gets a new epoch, and
//! cursors of the old one are answered with [`ResyncReason::EpochMismatch`]. Publishing is one
//! Lua script, so the epoch and the entry are written atomically. This needs Redis 7.0 or later.
//!
//! # Reading
//!
//! Reading scales with topics, not with clients. Per process, each topic that has subscribers
//! has **one reader task on one connection of its own**, which follows the stream with
//! `XREAD BLOCK`, keeps a window of the newest events ([`RedisSourceBuilder::window`]), and wakes
//! the topic's parked subscriptions with one [`tokio::sync::Notify`]. A parked subscription costs
//! its future and nothing in Redis. A cursor that the window cannot answer (behind it, of another
//! epoch, or beyond what this process has read so far) is answered by one atomic read on a shared
//! [`ConnectionManager`]: events with `XRANGE`, a resync with
//! [`ResyncReason::Expired`] when the cursor is older than the stream's first retained entry,
//! [`Outcome::Ahead`] when it is beyond the stream's newest id, a wait otherwise.
//!
//! A reader retires when its topic has had no subscriptions for
//! [`RedisSourceBuilder::reader_idle`]; the next subscription starts a new one.
//!
//! # Faults
//!
//! A subscription that needs Redis while Redis is unreachable fails (the layers answer `503`)
//! after at most [`RedisSourceBuilder::timeout`]. Subscriptions already parked stay parked: the
//! long-poll layer answers them when the hold ends, and streams carry on once Redis is back. The
//! reader reconnects with back-off and continues after the last id it has seen, so nothing is
//! lost or reordered. If Redis lost the stream (restarted without persistence), the next read
//! finds a new epoch and old cursors get a resync answer.
//!
//! A reader notices a stream that was deleted and recreated within about a second.
//!
//! # Limits
//!
//! The source talks to one Redis server (or a proxy in front of one), not to Redis Cluster: the
//! scripts touch two keys per topic, which a cluster could place on different nodes. Ids can
//! only be trusted as far as Redis keeps acknowledged writes: with `appendfsync everysec`, or a
//! failover to a replica that lags, Redis may forget the newest events and reissue their ids
//! under the same epoch. Each subscription allocates its future once.
//!
//! # Examples
//!
//! ```no_run
//! use tower_push::redis::RedisSource;
//! use tower_push::{EventData, LongPollLayer};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let source = RedisSource::builder("redis://127.0.0.1:6379")
//!     .key_prefix("push:")
//!     .retention(10_000)
//!     .build()
//!     .await?;
//! let id = source.publish("feed", EventData::from_json(r#"{"text":"hi"}"#)?).await?;
//! assert!(id.seq() > 0);
//!
//! // Serve it: the layer and the source are both cheap to clone.
//! let poll = LongPollLayer::new().layer(source.topic("feed")?);
//! # let _ = poll;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use tower_service::Service;

mod error;
mod reader;
mod wire;

pub use self::error::Error;

use self::reader::{Local, TopicShared};
use self::wire::{ReadMode, Scripts, Snapshot};
use crate::config::check;
#[cfg(doc)]
use crate::source::ResyncReason;
use crate::source::{Outcome, Position, Subscribe};
use crate::sync::MutexExt;
use crate::{Cursor, Epoch, EventData, EventName};

/// An event source on Redis Streams, shared by every process that uses the same Redis and key
/// prefix.
///
/// Cloning is cheap and every clone is the same source: one shared connection, one reader per
/// active topic.
#[derive(Clone)]
pub struct RedisSource {
    shared: Arc<SourceShared>,
}

pub(crate) struct SourceShared {
    client: redis::Client,
    manager: ConnectionManager,
    settings: Settings,
    scripts: Scripts,
    runtime: tokio::runtime::Handle,
    topics: Mutex<HashMap<Arc<str>, Arc<TopicShared>>>,
}

#[derive(Clone, Debug)]
struct Settings {
    key_prefix: String,
    retention: usize,
    window: usize,
    timeout: Duration,
    reader_idle: Duration,
}

impl RedisSource {
    /// A builder for a source on the Redis at `url` (`redis://[user:password@]host[:port][/db]`
    /// or `unix:///path/to/socket`).
    pub fn builder(url: impl Into<String>) -> RedisSourceBuilder {
        RedisSourceBuilder::new(url.into())
    }

    /// The topic `name`: a handle to publish to it and to serve it as an event source.
    ///
    /// The source remembers every topic it was asked for (a few hundred bytes each) for as long
    /// as it lives; a topic's reader runs only while it has subscriptions, and a while after.
    /// Create topics from names your application controls, not directly from client input.
    ///
    /// # Errors
    ///
    /// [`Error::is_config`] if the name is empty or ends in `:epoch` (that key holds another
    /// topic's epoch).
    pub fn topic(&self, name: &str) -> Result<RedisTopic, Error> {
        if name.is_empty() {
            return Err(Error::config("a topic name must not be empty"));
        }
        if name.ends_with(":epoch") {
            return Err(Error::config(format!(
                "topic {name:?} ends in \":epoch\", which names the epoch key of another topic"
            )));
        }
        let mut topics = self.shared.topics.locked();
        let topic = topics
            .entry(Arc::from(name))
            .or_insert_with_key(|name| {
                Arc::new(TopicShared::new(
                    name.clone(),
                    &self.shared.settings.key_prefix,
                ))
            })
            .clone();
        Ok(RedisTopic {
            source: self.shared.clone(),
            topic,
        })
    }

    /// The topic `name` if this source was asked for it with [`topic`](Self::topic); unlike
    /// `topic` it never remembers a new one, so it is safe to call with a name from a request.
    pub fn find_topic(&self, name: &str) -> Option<RedisTopic> {
        let topics = self.shared.topics.locked();
        topics.get(name).map(|topic| RedisTopic {
            source: self.shared.clone(),
            topic: topic.clone(),
        })
    }

    /// Publishes `data` on the topic `name` and returns the new event's id.
    ///
    /// # Errors
    ///
    /// [`Error::is_unavailable`] if Redis cannot be reached or does not answer within the
    /// timeout (the event may or may not have been added), [`Error::is_config`] for a topic name
    /// that [`topic`](Self::topic) refuses, and [`Error::is_refused`] if Redis refuses the write
    /// (for example, because the stream holds entries that another program added).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes may or may not add the event.
    pub async fn publish(&self, name: &str, data: EventData) -> Result<Cursor, Error> {
        self.topic(name)?.publish(data).await
    }

    /// Like [`publish`](Self::publish), for an event with a name (SSE's `event:` field).
    ///
    /// # Errors
    ///
    /// As for [`publish`](Self::publish).
    pub async fn publish_named(
        &self,
        name: &str,
        event: EventName,
        data: EventData,
    ) -> Result<Cursor, Error> {
        self.topic(name)?.publish_named(event, data).await
    }
}

impl fmt::Debug for RedisSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topics = self.shared.topics.locked().len();
        f.debug_struct("RedisSource")
            .field("settings", &self.shared.settings)
            .field("topics", &topics)
            .finish()
    }
}

impl SourceShared {
    /// One atomic read of a stream (and its epoch) with the read script.
    async fn read<C: ConnectionLike>(
        &self,
        conn: &mut C,
        topic: &TopicShared,
        mode: ReadMode,
        count: usize,
    ) -> Result<Snapshot, Error> {
        let (name, after) = match mode {
            ReadMode::After(seq) => ("after", format!("0-{seq}")),
            ReadMode::First => ("first", String::new()),
            ReadMode::Tail => ("tail", String::new()),
        };
        let mut invocation = self.scripts.read.key(&topic.stream_key);
        invocation
            .key(&topic.epoch_key)
            .arg(fresh_epoch())
            .arg(name)
            .arg(after)
            .arg(count);
        let value = tokio::time::timeout(self.settings.timeout, invocation.invoke_async(conn))
            .await
            .map_err(|_| Error::timeout())?
            .map_err(Error::redis)?;
        Snapshot::parse(value, mode)
    }
}

fn fresh_epoch() -> String {
    Epoch::random().to_string()
}

/// Settings for a [`RedisSource`].
#[derive(Clone, Debug)]
#[must_use]
pub struct RedisSourceBuilder {
    url: String,
    settings: Settings,
}

impl RedisSourceBuilder {
    fn new(url: String) -> Self {
        Self {
            url,
            settings: Settings {
                key_prefix: "push:".to_owned(),
                retention: 10_000,
                window: 1024,
                timeout: Duration::from_secs(2),
                reader_idle: Duration::from_secs(30),
            },
        }
    }

    /// The prefix of every key the source uses: topic `t` is the stream `<prefix>t`.
    ///
    /// Default is `push:`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.key_prefix = prefix.into();
        self
    }

    /// About how many events each stream keeps (`XADD ... MAXLEN ~ <retention>`): Redis trims in
    /// whole nodes, so a stream may hold somewhat more. Older cursors get a resync answer.
    ///
    /// Default is 10 000.
    pub fn retention(mut self, events: usize) -> Self {
        self.settings.retention = events;
        self
    }

    /// How many of the newest events each reader keeps in memory to answer subscriptions without
    /// Redis; also the most entries one read fetches.
    ///
    /// Default is 1024.
    pub fn window(mut self, events: usize) -> Self {
        self.settings.window = events;
        self
    }

    /// How long any single Redis command (connecting included) may take before the source gives
    /// up with an [`Error::is_timeout`] error.
    ///
    /// Default is 2 seconds. Keep it below the long-poll hold, so that a Redis outage is
    /// answered with `503` rather than with an empty hold.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }

    /// How long a topic's reader keeps following its stream after the last subscription ended.
    ///
    /// Default is 30 seconds.
    pub fn reader_idle(mut self, idle: Duration) -> Self {
        self.settings.reader_idle = idle;
        self
    }

    /// Checks the settings, connects once to check that Redis is there and new enough, and
    /// builds the source. Later connection losses are recovered from automatically.
    ///
    /// # Errors
    ///
    /// [`Error::is_config`] for an invalid URL, a zero retention, window, timeout or idle time,
    /// or a Redis older than 7.0; [`Error::is_unavailable`] if Redis cannot be reached.
    pub async fn build(self) -> Result<RedisSource, Error> {
        let Self { url, settings } = self;
        let checked = check::at_least_one("retention", settings.retention)
            .and_then(|()| check::at_least_one("window", settings.window))
            .and_then(|()| check::positive("timeout", settings.timeout))
            .and_then(|()| check::positive("reader idle", settings.reader_idle));
        checked.map_err(|err| Error::config_with(err.to_string(), err))?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::no_runtime())?;
        let client = redis::Client::open(url.as_str())
            .map_err(|err| Error::config_with(format!("invalid redis URL {url:?}"), err))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let mut manager = tokio::time::timeout(
            settings.timeout,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| Error::timeout())?
        .map_err(Error::redis)?;
        check_version(&mut manager, settings.timeout, "stream ids 0-*").await?;
        Ok(RedisSource {
            shared: Arc::new(SourceShared {
                client,
                manager,
                settings,
                scripts: Scripts::new(),
                runtime,
                topics: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// Refuses servers older than 7.0, which lack what `needs` (the caller's reason) needs: `0-*`
/// stream ids, flagged scripts.
pub(crate) async fn check_version(
    manager: &mut impl ConnectionLike,
    timeout: Duration,
    needs: &str,
) -> Result<(), Error> {
    let info: String = tokio::time::timeout(
        timeout,
        redis::cmd("INFO").arg("server").query_async(manager),
    )
    .await
    .map_err(|_| Error::timeout())?
    .map_err(Error::redis)?;
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .map(str::trim);
    let major = version
        .and_then(|v| v.split('.').next())
        .and_then(|major| major.parse::<u32>().ok());
    match major {
        Some(major) if major >= 7 => Ok(()),
        // Servers that speak the protocol but report no Redis version (forks) get the benefit
        // of the doubt: the first command that needs 7.0 fails clearly.
        None => Ok(()),
        Some(_) => Err(Error::config(format!(
            "redis {} is too old: {needs} need redis 7.0 or later",
            version.unwrap_or("?")
        ))),
    }
}

/// One topic of a [`RedisSource`]: publish to it, and serve it as an event source.
///
/// Cloning is cheap and every clone is the same topic.
#[derive(Clone)]
pub struct RedisTopic {
    source: Arc<SourceShared>,
    topic: Arc<TopicShared>,
}

impl RedisTopic {
    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.topic.name
    }

    /// The number of subscriptions of this process parked on this topic right now.
    pub fn parked_subscriptions(&self) -> usize {
        self.topic.waiting.load(Ordering::Relaxed)
    }

    /// Publishes `data` and returns the new event's id.
    ///
    /// # Errors
    ///
    /// As for [`RedisSource::publish`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes may or may not add the event.
    pub async fn publish(&self, data: EventData) -> Result<Cursor, Error> {
        self.append(None, data).await
    }

    /// Like [`publish`](Self::publish), for an event with a name (SSE's `event:` field).
    ///
    /// # Errors
    ///
    /// As for [`RedisSource::publish`].
    pub async fn publish_named(&self, name: EventName, data: EventData) -> Result<Cursor, Error> {
        self.append(Some(name), data).await
    }

    async fn append(&self, name: Option<EventName>, data: EventData) -> Result<Cursor, Error> {
        let settings = &self.source.settings;
        let mut invocation = self.source.scripts.publish.key(&self.topic.stream_key);
        invocation
            .key(&self.topic.epoch_key)
            .arg(fresh_epoch())
            .arg(settings.retention)
            .arg(&*data.to_json());
        if let Some(name) = &name {
            invocation.arg(name.as_str());
        }
        let mut manager = self.source.manager.clone();
        let (epoch, id): (String, String) =
            tokio::time::timeout(settings.timeout, invocation.invoke_async(&mut manager))
                .await
                .map_err(|_| Error::timeout())?
                .map_err(Error::redis)?;
        Ok(Cursor::new(
            wire::parse_epoch(&epoch)?,
            wire::parse_id(&id)?,
        ))
    }
}

impl fmt::Debug for RedisTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTopic")
            .field("name", &self.topic.name)
            .field("stream_key", &self.topic.stream_key)
            .field("parked_subscriptions", &self.parked_subscriptions())
            .finish()
    }
}

/// Serves subscriptions to this topic; one that names another topic ([`Subscribe::topic`]) is
/// answered with [`Outcome::UnknownTopic`].
impl Service<Subscribe> for RedisTopic {
    type Response = Outcome;
    type Error = Error;
    type Future = Subscription;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Subscribe) -> Self::Future {
        if req.topic().is_some_and(|name| name != &*self.topic.name) {
            return Subscription::unknown();
        }
        let source = self.source.clone();
        let topic = self.topic.clone();
        Subscription {
            inner: Box::pin(subscribe(source, topic, req.position(), req.limit())),
        }
    }
}

/// Serves the topics of a multiplexed request (see [Several topics](crate#several-topics)): a
/// subscription naming a topic this source was asked for with [`topic`](RedisSource::topic)
/// follows it, any other is answered with [`Outcome::UnknownTopic`] (and so `400
/// unknown_topic`), so that client input never makes the source remember new topics.
impl Service<Subscribe> for RedisSource {
    type Response = Outcome;
    type Error = Error;
    type Future = Subscription;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Subscribe) -> Self::Future {
        match req.topic().and_then(|name| self.find_topic(name)) {
            Some(mut topic) => topic.call(req),
            None => Subscription::unknown(),
        }
    }
}

impl Subscription {
    /// The answer to a subscription for a topic that is not served here.
    fn unknown() -> Self {
        Self {
            inner: Box::pin(std::future::ready(Ok(Outcome::UnknownTopic))),
        }
    }
}

/// A subscription to a [`RedisTopic`]: resolves with the next events after its position.
///
/// # Cancel safety
///
/// Dropping it at any point loses nothing and unregisters its waiter.
#[must_use = "futures do nothing unless polled"]
pub struct Subscription {
    inner: Pin<Box<dyn Future<Output = Result<Outcome, Error>> + Send>>,
}

impl Future for Subscription {
    type Output = Result<Outcome, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// Counts a subscription in for as long as it lives, starting the topic's reader if needed.
struct Active<'a>(&'a TopicShared);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// Counts a subscription as parked while it waits.
struct Parked<'a>(&'a TopicShared);

impl<'a> Parked<'a> {
    fn new(topic: &'a TopicShared) -> Self {
        topic.waiting.fetch_add(1, Ordering::Relaxed);
        Self(topic)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn subscribe(
    source: Arc<SourceShared>,
    topic: Arc<TopicShared>,
    position: Position,
    limit: usize,
) -> Result<Outcome, Error> {
    if topic.enter() {
        // On the runtime the source was built on: spawning needs no runtime in this context.
        source
            .runtime
            .spawn(reader::run(source.clone(), topic.clone()));
    }
    let _active = Active(&topic);
    // A burst of subscriptions to a topic whose reader is starting waits for its first read
    // instead of each asking Redis; but not for longer than one command may take.
    let mut waited_for_reader = false;
    loop {
        // Register before checking, so an event the reader appends right after the check still
        // wakes this subscription.
        let notified = topic.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let local = match topic.local(position, limit) {
            Local::Syncing if !waited_for_reader => {
                waited_for_reader = true;
                let _parked = Parked::new(&topic);
                let _ = tokio::time::timeout(source.settings.timeout, notified).await;
                continue;
            }
            Local::Syncing => Local::Unknown,
            local => local,
        };
        match local {
            Local::Ready(outcome) => return Ok(outcome),
            Local::Wait | Local::Syncing => {}
            Local::Unknown => {
                let mut manager = source.manager.clone();
                let mode = match position {
                    Position::After(cursor) => ReadMode::After(cursor.seq()),
                    Position::Oldest => ReadMode::First,
                    Position::Head => ReadMode::Tail,
                };
                let count = match position {
                    Position::Head => 1,
                    _ => limit.min(source.settings.window),
                };
                let snap = source.read(&mut manager, &topic, mode, count).await?;
                if let Some(outcome) = snap.answer(position, limit) {
                    return Ok(outcome);
                }
            }
        }
        let _parked = Parked::new(&topic);
        notified.await;
    }
}
