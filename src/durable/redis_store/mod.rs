//! The Redis store: Durable Streams shared by every process that uses one Redis.

mod bells;
mod reply;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::Script;
use tokio::sync::{mpsc, Notify, OnceCell};

use self::bells::Bells;
use self::reply::decode;
use self::reply::Reply;
use super::state::fits;
use super::store::{
    media_type, Append, Appended, Chunk, Create, Created, Doorbell, Info, Mode, Payload,
};
use super::{Offset, Read, Store, StoreError};
use crate::config::check;
use crate::redis::Error;
use crate::sync::MutexExt;

/// A [`Store`] in Redis, shared by every process that uses the same Redis and key prefix: any
/// process may answer any request, as if there were one.
///
/// # What it promises
///
/// Every operation on a stream (a create, an append, a read, a delete) is one Lua script run
/// by Redis, so it is atomic whichever process sent it: writers on several processes keep one
/// order per stream, a producer's retry is recognised whichever process it reaches, and an
/// append that one process acknowledged is in the answer of the next read through any other.
/// An acknowledged append is as durable as Redis makes its writes: with `appendonly yes` and
/// `appendfsync always` it is on Redis's disk before Redis answers, and survives a crash of
/// Redis; with `appendfsync everysec` (Redis's default with `appendonly yes`) a crash of Redis
/// may lose the last second; without persistence, a restart of Redis loses every stream, and
/// readers are told so (`404`), never given another stream's data.
///
/// # Live readers
///
/// A long-poll or SSE reader parked in this process waits on the stream's
/// [`Doorbell`], not on Redis. Per process, one connection subscribes (Redis Pub/Sub) to the
/// channels of the streams that have readers parked here, and rings their doorbells when
/// Redis publishes a change, which the scripts do with every change. A parked reader costs its
/// future and nothing in Redis; a stream with readers costs one subscription per process. A
/// stream whose readers are gone is unsubscribed within a few seconds. When the subscription
/// connection breaks, it reconnects with back-off, subscribes again and wakes every reader to
/// look again, so a change made while it was away is not missed.
///
/// # Faults
///
/// Every command waits at most [`timeout`](RedisStoreBuilder::timeout) for Redis. A request
/// that needs Redis while it is unreachable or does not answer (stopped, restarting) is
/// answered `503` with `Retry-After` ([`StoreError::Unavailable`]); an append answered so may
/// or may not have been made, which an idempotent producer's retry settles. Parked readers
/// stay parked through an outage and look again when Redis is back. When Redis refuses a write
/// because it is out of memory (`maxmemory`), the append is answered `507`
/// ([`StoreError::StorageFull`]); reads and deletes still work, so the store stays readable and
/// can be emptied.
///
/// # Keys
///
/// The stream at `name` is the keys `<prefix>{<name>}:m` (a hash: what is known about it),
/// `:d` (a list: its appends) and `:p` (a hash: its producers), and the Pub/Sub channel
/// `<prefix>{<name>}`; `%`, `{` and `}` in the name are written `%25`, `%7B` and `%7D`. The
/// braces are a Redis Cluster hash tag, so a stream's keys share one slot. A stream with a TTL
/// or an expiry time is removed by Redis a second after it expires, unless forks read from it.
///
/// # Redis Cluster
///
/// Each run touches the keys of one stream, which share a hash slot, so the store runs on a
/// Redis Cluster too ([`RedisStoreBuilder::cluster`], feature `redis-cluster`), the streams
/// spread over its nodes. A fork and its source may be on two nodes: creating a fork pins the
/// source (a run on the source's node that checks it and counts the fork, so that deleting
/// the source only retires it while the fork reads from it) and then creates the fork; a read
/// of a fork reads what is its source's in runs on the source's node (what a source holds up
/// to a fork offset never changes); deleting a fork unpins its source afterwards. A process
/// that dies between those runs leaves a source pinned: it stays retired (`410`) after a
/// delete instead of being removed.
///
/// # Limits
///
/// It needs Redis 7.0 or later (scripts flagged `allow-oom`). Bound its memory with Redis's
/// `maxmemory` (and `maxmemory-policy noeviction`, so that Redis refuses writes rather than
/// evict streams). Its command connection runs on the tokio runtime that first uses the
/// store: keep that runtime for as long as the store serves (a server's runtime does).
///
/// # Examples
///
/// ```no_run
/// use tower_push::durable::{Append, Create, DurableStreams, RedisStore, Store};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379")
///     .key_prefix("streams:")
///     .build()?;
/// store.ping().await?;
/// store.create("/chat", Create::new(Some("text/plain".into()))).await?;
/// store.append("/chat", Append::new("text/plain", "hello")).await?;
/// let read = store.read("/chat", None, 100, 1 << 20).await?;
/// assert!(read.up_to_date());
///
/// // Serve it: every process with the same Redis and prefix serves the same streams.
/// let service = DurableStreams::builder(store).build()?;
/// # let _ = service;
/// # Ok(())
/// # }
/// ```
#[cfg_attr(docsrs, doc(cfg(all(feature = "durable", feature = "redis"))))]
#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<Shared>,
}

struct Shared {
    client: ::redis::Client,
    connection: OnceCell<Connection>,
    settings: Settings,
    /// The operations that add data: refused at once by a Redis out of memory.
    write: Script,
    /// The operations that add none: run by a Redis out of memory too.
    read: Script,
    bells: Arc<Bells>,
    /// The reads about to be sent, which an identical read joins.
    flights: Mutex<HashMap<Look, Arc<Flight>>>,
    /// What the subscription task is told to subscribe to; it ends when this is dropped.
    subscribe: Mutex<Option<mpsc::UnboundedSender<Arc<str>>>>,
}

#[derive(Clone, Debug)]
struct Settings {
    key_prefix: String,
    timeout: Duration,
    /// The URL names one node of a Redis Cluster.
    #[cfg_attr(not(feature = "redis-cluster"), allow(dead_code))]
    cluster: bool,
}

/// The connection that commands go over: one to a Redis, or one to each node of a cluster.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    #[cfg(feature = "redis-cluster")]
    Cluster(::redis::cluster_async::ClusterConnection),
}

impl RedisStore {
    /// A builder for a store on the Redis at `url` (`redis://[user:password@]host[:port][/db]`
    /// or `unix:///path/to/socket`).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            settings: Settings {
                key_prefix: "ds:".to_owned(),
                timeout: Duration::from_secs(2),
                cluster: false,
            },
        }
    }

    /// Connects (if not connected yet) and checks that Redis answers and is 7.0 or later.
    ///
    /// The store connects on first use by itself; call this at start to refuse to serve
    /// without Redis.
    ///
    /// # Errors
    ///
    /// [`Error::is_unavailable`] if Redis cannot be reached or does not answer within the
    /// timeout, [`Error::is_config`] for a Redis older than 7.0.
    pub async fn ping(&self) -> Result<(), Error> {
        let shared = &self.shared;
        let timeout = shared.settings.timeout;
        let needs = "flagged scripts";
        match shared.connect().await? {
            Connection::Single(mut single) => {
                crate::redis::check_version(&mut single, timeout, needs).await
            }
            // A cluster answers `INFO` from every node: ask the node the URL names.
            #[cfg(feature = "redis-cluster")]
            Connection::Cluster(_) => {
                let node = shared.client.get_multiplexed_async_connection();
                let node = tokio::time::timeout(timeout, node).await;
                let mut node = node.map_err(|_| Error::timeout())?.map_err(Error::redis)?;
                crate::redis::check_version(&mut node, timeout, needs).await
            }
        }
    }

    /// How many streams have live readers parked in this process (each one subscription).
    pub fn followed_streams(&self) -> usize {
        self.shared.bells.len()
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("settings", &self.shared.settings)
            .field("followed_streams", &self.followed_streams())
            .finish_non_exhaustive()
    }
}

/// Settings for a [`RedisStore`].
#[cfg_attr(docsrs, doc(cfg(all(feature = "durable", feature = "redis"))))]
#[derive(Clone, Debug)]
#[must_use]
pub struct RedisStoreBuilder {
    url: String,
    settings: Settings,
}

impl RedisStoreBuilder {
    /// The prefix of every key and channel of the store (see [`RedisStore`]'s keys).
    ///
    /// Default is `ds:`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.key_prefix = prefix.into();
        self
    }

    /// How long any single Redis command (connecting included) may take before the request
    /// that needs it is answered `503`.
    ///
    /// Default is 2 seconds. Keep it below the long-poll hold.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }

    /// The URL names one node of a Redis Cluster (`cluster-enabled yes`): the store finds the
    /// others and sends each stream's runs to the node that holds its hash slot. Live readers
    /// subscribe through the node the URL names (Redis sends every node's messages to every
    /// node).
    ///
    /// Default is a single Redis.
    #[cfg(feature = "redis-cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-cluster")))]
    pub fn cluster(mut self) -> Self {
        self.settings.cluster = true;
        self
    }

    /// Checks the settings and builds the store. It connects on first use (see
    /// [`RedisStore::ping`]), in the runtime that uses it, and reconnects by itself.
    ///
    /// # Errors
    ///
    /// [`Error::is_config`] for an invalid URL or a zero timeout.
    pub fn build(self) -> Result<RedisStore, Error> {
        let Self { url, settings } = self;
        check::positive("timeout", settings.timeout)
            .map_err(|err| Error::config_with(err.to_string(), err))?;
        let client = ::redis::Client::open(url.as_str())
            .map_err(|err| Error::config_with(format!("invalid redis URL {url:?}"), err))?;
        let common = include_str!("streams.lua");
        Ok(RedisStore {
            shared: Arc::new(Shared {
                client,
                connection: OnceCell::new(),
                settings,
                write: Script::new(&["#!lua\n", common, include_str!("write.lua")].concat()),
                read: Script::new(
                    &["#!lua flags=allow-oom\n", common, include_str!("read.lua")].concat(),
                ),
                bells: Arc::new(Bells::default()),
                flights: Mutex::new(HashMap::new()),
                subscribe: Mutex::new(None),
            }),
        })
    }
}

impl Shared {
    /// The key base of the stream at `path`: `<prefix>{<path>}`, with `%`, `{` and `}` in the
    /// path escaped, so that the braces are its hash tag and no two paths share a base.
    fn base(&self, path: &str) -> String {
        let mut base = String::with_capacity(self.settings.key_prefix.len() + path.len() + 2);
        base.push_str(&self.settings.key_prefix);
        base.push('{');
        for c in path.chars() {
            match c {
                '%' => base.push_str("%25"),
                '{' => base.push_str("%7B"),
                '}' => base.push_str("%7D"),
                c => base.push(c),
            }
        }
        base.push('}');
        base
    }

    /// What tells the subscription task what to follow: started on the caller's runtime on
    /// first use, and again if the runtime it ran on is gone (it then follows every stream
    /// with readers). `None` outside a runtime.
    fn follower(&self) -> Option<mpsc::UnboundedSender<Arc<str>>> {
        let mut subscribe = self.subscribe.locked();
        if let Some(sender) = subscribe.as_ref().filter(|s| !s.is_closed()) {
            return Some(sender.clone());
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (sender, commands) = mpsc::unbounded_channel();
        let (client, bells) = (self.client.clone(), self.bells.clone());
        let timeout = self.settings.timeout;
        runtime.spawn(bells::follow(client, bells, commands, timeout));
        *subscribe = Some(sender.clone());
        Some(sender)
    }

    /// The shared connection, made on first use.
    async fn connect(&self) -> Result<Connection, Error> {
        let timeout = self.settings.timeout;
        let connect = self.connection.get_or_try_init(|| async {
            #[cfg(feature = "redis-cluster")]
            if self.settings.cluster {
                let nodes = vec![self.client.get_connection_info().clone()];
                let client = ::redis::cluster::ClusterClient::builder(nodes)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .build()
                    .map_err(Error::redis)?;
                let connection = client.get_async_connection().await;
                return connection.map(Connection::Cluster).map_err(Error::redis);
            }
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            ConnectionManager::new_with_config(self.client.clone(), config)
                .await
                .map(Connection::Single)
                .map_err(Error::redis)
        });
        match tokio::time::timeout(timeout, connect).await {
            Ok(connected) => connected.cloned(),
            Err(_) => Err(Error::timeout()),
        }
    }

    /// Runs `script` on the stream at `base` with `args` (the operation's name first), then
    /// unpins the sources that its forks let go of.
    async fn run(
        &self,
        script: &Script,
        base: &str,
        args: Vec<Vec<u8>>,
    ) -> Result<Reply, StoreError> {
        let mut reply = self.run_once(script, base, args).await?;
        if !reply.unpins.is_empty() {
            // Rare (a fork's source let go): boxed, so that every run's future stays small.
            Box::pin(self.unpin(std::mem::take(&mut reply.unpins))).await?;
        }
        Ok(reply)
    }

    /// Unpins `sources`, and the sources that unpinning them lets go of.
    async fn unpin(&self, mut sources: Vec<String>) -> Result<(), StoreError> {
        while let Some(source) = sources.pop() {
            let unpinned = self.run_once(&self.read, &source, vec![b"unpin".to_vec()]);
            sources.extend(unpinned.await?.unpins);
        }
        Ok(())
    }

    /// One run of `script` on the keys of the stream at `base`.
    async fn run_once(
        &self,
        script: &Script,
        base: &str,
        args: Vec<Vec<u8>>,
    ) -> Result<Reply, StoreError> {
        let mut connection = self.connect().await.map_err(|err| unavailable(&err))?;
        let mut invocation = script.prepare_invoke();
        invocation.key(base);
        for arg in args {
            invocation.arg(arg);
        }
        let ran = match &mut connection {
            Connection::Single(single) => {
                let invoked = invocation.invoke_async::<::redis::Value>(single);
                tokio::time::timeout(self.settings.timeout, invoked).await
            }
            #[cfg(feature = "redis-cluster")]
            Connection::Cluster(cluster) => {
                let invoked = invocation.invoke_async::<::redis::Value>(cluster);
                tokio::time::timeout(self.settings.timeout, invoked).await
            }
        };
        match ran {
            Ok(Ok(value)) => Reply::parse(value),
            Ok(Err(err)) if err.code() == Some("OOM") => Err(StoreError::StorageFull),
            Ok(Err(err)) => Err(unavailable(&Error::redis(err))),
            Err(_) => Err(unavailable(&Error::timeout())),
        }
    }

    /// A read (or, with `renew` false and no appends, a look) of the stream at `base`.
    ///
    /// The readers that one change wakes all read the same thing: an identical read that has
    /// not been sent yet is joined rather than sent again, so they cost one round trip, not
    /// one each. A read is joined only before it is sent, so every answer reflects what was
    /// acknowledged before its request.
    async fn read(
        &self,
        base: String,
        after: Option<Offset>,
        max_chunks: usize,
        max_bytes: usize,
        renew: bool,
    ) -> Result<Read, StoreError> {
        let look = Look {
            base,
            after: after.map(Offset::get),
            max_chunks,
            max_bytes,
            renew,
        };
        loop {
            let (flight, leads) = {
                let mut flights = self.flights.locked();
                match flights.get(&look) {
                    Some(flight) => (flight.clone(), false),
                    None => {
                        let flight = Arc::new(Flight::default());
                        flights.insert(look.clone(), flight.clone());
                        (flight, true)
                    }
                }
            };
            if !leads {
                let landed = flight.landed.notified();
                tokio::pin!(landed);
                landed.as_mut().enable();
                if flight.answer.get().is_none() {
                    landed.await;
                }
                match flight.answer.get() {
                    Some(answer) => return answer.clone(),
                    // The read that was joined was dropped before it was answered.
                    None => continue,
                }
            }
            let mut leading = Leading {
                flights: &self.flights,
                look: &look,
                flight: &flight,
            };
            // Let the other readers that the same change woke join before the read leaves.
            tokio::task::yield_now().await;
            leading.depart();
            let answer = self.read_now(&look).await;
            let _ = flight.answer.set(answer.clone());
            drop(leading);
            return answer;
        }
    }

    /// One read as `look` says, sent now.
    async fn read_now(&self, look: &Look) -> Result<Read, StoreError> {
        let args = vec![
            b"read".to_vec(),
            look.after.map(|a| a.to_string()).unwrap_or_default().into(),
            look.max_chunks.to_string().into(),
            look.max_bytes.to_string().into(),
            flag(look.renew),
        ];
        let mut reply = self.run(&self.read, &look.base, args).await?;
        match reply.status.as_str() {
            "ok" => {
                let info = reply.info()?;
                let from = reply.int()?;
                let own = reply.items()?;
                let (source, upto) = (reply.text()?, reply.int()?);
                let mut items = match source.as_str() {
                    "" => Vec::new(),
                    // A fork's read (boxed, so that every read's future stays small).
                    source => {
                        let budget = (look.max_chunks, look.max_bytes);
                        Box::pin(self.gather(source, from, upto, budget)).await?
                    }
                };
                items.extend(own);
                let items = within(items, look.max_chunks, look.max_bytes);
                let mode = Mode::of(&info.content_type);
                Ok(Read::new(
                    info,
                    Offset::new(from),
                    chunks(from, items, mode),
                ))
            }
            "beyond" => Err(StoreError::OffsetBeyondTail),
            _ => Err(reply.refusal()),
        }
    }

    /// A fork's appends that are its source's: those of the stream at `base` (and of what it
    /// was forked from) after `after` and at most at `upto`, oldest first, at least what
    /// `budget` (appends, bytes) takes.
    async fn gather(
        &self,
        base: &str,
        after: u64,
        upto: u64,
        (max_chunks, max_bytes): (usize, usize),
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let (mut base, mut upto) = (base.to_owned(), upto);
        let mut levels = Vec::new();
        loop {
            let args = vec![
                b"range".to_vec(),
                after.to_string().into(),
                upto.to_string().into(),
                max_chunks.to_string().into(),
                max_bytes.to_string().into(),
            ];
            let mut reply = self.run_once(&self.read, &base, args).await?;
            if reply.status != "ok" {
                // A source is there while forks read from it: the fork went meanwhile.
                return Err(StoreError::NotFound);
            }
            levels.push(reply.items()?);
            let source = reply.text()?;
            if source.is_empty() {
                break;
            }
            (base, upto) = (source, reply.int()?);
        }
        Ok(levels.into_iter().rev().flatten().collect())
    }

    /// Creates a fork of another stream: pins the source (in its own run, as its keys may be
    /// on another node), takes what the fork inherits, and creates the fork; unpins the source
    /// if the fork was not created.
    async fn fork(&self, base: &str, create: Create) -> Result<Created, StoreError> {
        let fork = create.fork.clone().expect("a fork");
        let source = self.base(&fork.source);
        // A stream already at the path answers first.
        let (args, _) = create_args(&create, None, None);
        let mut probe = self.run(&self.write, base, args).await?;
        match probe.status.as_str() {
            "absent" => {}
            "exists" => return Ok(Created::new(false, probe.info()?)),
            _ => return Err(probe.refusal()),
        }
        let given = create.content_type.as_deref().map(media_type);
        let pin = vec![
            b"pin".to_vec(),
            flag(given.is_some()),
            given.unwrap_or_default().into(),
            fork.offset
                .map(|o| o.get().to_string())
                .unwrap_or_default()
                .into(),
        ];
        let mut pinned = self.run(&self.write, &source, pin).await?;
        if pinned.status != "ok" {
            return Err(pinned.refusal());
        }
        let created = async {
            let inherited = Inherited {
                content_type: pinned.text()?,
                media: pinned.text()?,
                json: pinned.text()? == "1",
                ttl: pinned.text()?,
                expires_at: pinned.text()?,
                expires_ms: pinned.text()?,
                offset: pinned.int()?,
                prefix: None,
            };
            let mut inherited = inherited;
            if fork.sub_offset > 0 {
                let mode = if inherited.json {
                    Mode::Json
                } else {
                    Mode::Binary
                };
                let anchor = self.gather(&source, inherited.offset, u64::MAX, (1, usize::MAX));
                let anchor = anchor.await?.into_iter().next();
                let cut = anchor.and_then(|item| decode(item, mode).prefix(fork.sub_offset));
                let cut = cut.ok_or(StoreError::InvalidSubOffset)?;
                inherited.prefix = Some(encode(&cut));
            }
            let (args, problem) = create_args(&create, Some(&source), Some(&inherited));
            let mut reply = self.run(&self.write, base, args).await?;
            match reply.status.as_str() {
                "created" => Ok(Created::new(true, reply.info()?)),
                "exists" => Ok(Created::new(false, reply.info()?)),
                "bad" => Err(problem.unwrap_or(StoreError::InvalidJson)),
                _ => Err(reply.refusal()),
            }
        };
        let created = created.await;
        if !created.as_ref().is_ok_and(|c| c.created) {
            let unpin = self.run(&self.read, &source, vec![b"unpin".to_vec()]);
            unpin.await?;
        }
        created
    }
}

/// What a read asks for: reads that ask the same share one answer.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Look {
    base: String,
    after: Option<u64>,
    max_chunks: usize,
    max_bytes: usize,
    renew: bool,
}

/// A read that others joined: its answer once it lands.
#[derive(Default)]
struct Flight {
    answer: OnceLock<Result<Read, StoreError>>,
    landed: Notify,
}

/// The read that leads a [`Flight`]: it takes the flight off the list of those that may be
/// joined when it leaves, and tells those who joined when it lands, or is dropped.
struct Leading<'a> {
    flights: &'a Mutex<HashMap<Look, Arc<Flight>>>,
    look: &'a Look,
    flight: &'a Arc<Flight>,
}

impl Leading<'_> {
    /// No one joins any more: the read is about to be sent.
    fn depart(&mut self) {
        let mut flights = self.flights.locked();
        if flights
            .get(self.look)
            .is_some_and(|f| Arc::ptr_eq(f, self.flight))
        {
            flights.remove(self.look);
        }
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.depart();
        self.flight.landed.notify_waiters();
    }
}

/// A store error for a Redis that cannot answer now, logged with its cause.
fn unavailable(err: &Error) -> StoreError {
    tracing::warn!(error = %err, cause = ?std::error::Error::source(err), "redis store");
    StoreError::Unavailable
}

/// What a fork takes from its source when it is created, as its pin answered.
struct Inherited {
    content_type: String,
    media: String,
    json: bool,
    ttl: String,
    expires_at: String,
    expires_ms: String,
    offset: u64,
    /// The start of the append after the fork offset, which a sub-offset cuts.
    prefix: Option<Vec<u8>>,
}

/// The arguments of a create: of a stream, of a fork whose source (at `source`) answered its
/// pin with `inherited`, or of a look whether a fork's path is taken (neither); and the body's
/// problem, which the script answers where the protocol checks it.
fn create_args(
    create: &Create,
    source: Option<&str>,
    inherited: Option<&Inherited>,
) -> (Vec<Vec<u8>>, Option<StoreError>) {
    let fork = create.fork.as_ref();
    let (content_type, media) = match (&create.content_type, inherited) {
        (Some(given), _) => (given.clone(), media_type(given)),
        (None, Some(source)) => (source.content_type.clone(), source.media.clone()),
        // Without one, a stream is `application/octet-stream`.
        (None, None) => {
            let default = "application/octet-stream";
            (default.to_owned(), default.to_owned())
        }
    };
    let mode = Mode::of(&media);
    let own_expiry = create.ttl.is_some() || create.expires_at.is_some();
    let (ttl, expires_at, expires_ms) = match inherited {
        Some(source) if !own_expiry => (
            source.ttl.clone(),
            source.expires_at.clone(),
            source.expires_ms.clone(),
        ),
        _ => (
            create.ttl.map(|t| t.to_string()).unwrap_or_default(),
            create
                .expires_at
                .as_ref()
                .map(|at| at.text.clone())
                .unwrap_or_default(),
            create
                .expires_at
                .as_ref()
                .map(|at| at.unix_ms.to_string())
                .unwrap_or_default(),
        ),
    };
    let (body, problem) = parsed(Payload::parse(mode, create.body.clone(), true));
    let args = vec![
        b"create".to_vec(),
        crate::random::u64().wrapping_shr(16).to_string().into(),
        flag(create.content_type.is_some()),
        content_type.into(),
        media.into(),
        flag(mode == Mode::Json),
        ttl.into(),
        expires_at.into(),
        expires_ms.into(),
        flag(fork.is_some()),
        fork.map(|f| f.source.clone()).unwrap_or_default().into(),
        fork.and_then(|f| f.offset)
            .map(|o| o.get().to_string())
            .unwrap_or_default()
            .into(),
        fork.map_or(0, |f| f.sub_offset).to_string().into(),
        flag(create.closed),
        flag(body.is_some()),
        body.unwrap_or_default(),
        problem
            .as_ref()
            .map(|p| p.code())
            .unwrap_or_default()
            .into(),
        flag(fork.is_some() && inherited.is_none()),
        source.unwrap_or_default().into(),
        inherited
            .map(|i| i.offset.to_string())
            .unwrap_or_default()
            .into(),
        inherited.and_then(|i| i.prefix.clone()).unwrap_or_default(),
    ];
    (args, problem)
}

/// The first appends of `items` that a read of at most `max_chunks` appends and `max_bytes`
/// takes (at least one).
fn within(items: Vec<Vec<u8>>, max_chunks: usize, max_bytes: usize) -> Vec<Vec<u8>> {
    let mut bytes = 0usize;
    let mut taken = Vec::new();
    for item in items {
        if !fits(taken.len(), bytes, item.len(), max_chunks, max_bytes) {
            break;
        }
        bytes += item.len();
        taken.push(item);
    }
    taken
}

/// The appends of a read from `from` on, of a stream in `mode`.
fn chunks(from: u64, items: Vec<Vec<u8>>, mode: Mode) -> Vec<Chunk> {
    let offsets = (1..).map(|i| Offset::new(from + i));
    let chunks = offsets
        .zip(items)
        .map(|(offset, item)| Chunk::new(offset, decode(item, mode)));
    chunks.collect()
}

fn flag(on: bool) -> Vec<u8> {
    if on { b"1" } else { b"0" }.to_vec()
}

/// A producer's epoch or sequence number as the scripts compare them: 20 decimal digits.
fn digits(n: u64) -> Vec<u8> {
    format!("{n:020}").into_bytes()
}

/// An append as the data list keeps it: the bytes, or each JSON value followed by `\n`.
fn encode(payload: &Payload) -> Vec<u8> {
    match payload {
        Payload::Bytes(bytes) => bytes.to_vec(),
        Payload::Json(values) => {
            let mut out = Vec::with_capacity(payload.size());
            for value in values.iter() {
                out.extend_from_slice(value);
                out.push(b'\n');
            }
            out
        }
    }
}

/// Splits a parsed body into what the scripts take: the encoded payload, or the code of the
/// problem (which the script answers only where the protocol checks the body, after the
/// stream's state).
fn parsed(parse: Result<Option<Payload>, StoreError>) -> (Option<Vec<u8>>, Option<StoreError>) {
    match parse {
        Ok(payload) => (payload.as_ref().map(encode), None),
        Err(err) => (None, Some(err)),
    }
}

impl Store for RedisStore {
    fn create(
        &self,
        path: &str,
        create: Create,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send + 'static {
        let shared = self.shared.clone();
        let base = shared.base(path);
        async move {
            if create.fork.is_some() {
                return shared.fork(&base, create).await;
            }
            let (args, problem) = create_args(&create, None, None);
            let mut reply = shared.run(&shared.write, &base, args).await?;
            let created = match reply.status.as_str() {
                "created" => true,
                "exists" => false,
                "bad" => return Err(problem.unwrap_or(StoreError::InvalidJson)),
                _ => return Err(reply.refusal()),
            };
            Ok(Created::new(created, reply.info()?))
        }
    }

    fn append(
        &self,
        path: &str,
        append: Append,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send + 'static {
        let shared = self.shared.clone();
        let base = shared.base(path);
        async move {
            let close_only = append.body.is_empty() && append.close;
            let media = media_type(append.content_type.as_deref().unwrap_or_default());
            let (data, problem) = parsed(Payload::parse(Mode::of(&media), append.body, false));
            let producer = append.producer.as_ref();
            let args = vec![
                b"append".to_vec(),
                flag(close_only),
                media.into(),
                flag(producer.is_some()),
                producer.map(|p| p.id.clone()).unwrap_or_default().into(),
                digits(producer.map_or(0, |p| p.epoch)),
                digits(producer.map_or(0, |p| p.seq)),
                producer
                    .and_then(|p| p.seq.checked_sub(1))
                    .map(digits)
                    .unwrap_or_default(),
                flag(append.stream_seq.is_some()),
                append.stream_seq.clone().unwrap_or_default().into(),
                flag(append.close),
                problem
                    .as_ref()
                    .map(|p| p.code())
                    .unwrap_or_default()
                    .into(),
                flag(data.is_some()),
                data.clone().unwrap_or_default(),
            ];
            let mut reply = shared.run(&shared.write, &base, args).await?;
            let answered = producer.map(|p| (p.epoch, p.seq));
            let appended = match reply.status.as_str() {
                "ok" => Appended {
                    tail: Offset::new(reply.int()?),
                    closed: reply.int()? == 1,
                    wrote: data.is_some(),
                    producer: answered,
                },
                "echo" => Appended {
                    tail: Offset::new(reply.int()?),
                    closed: true,
                    wrote: false,
                    producer: answered,
                },
                "dup" => Appended {
                    tail: Offset::new(reply.int()?),
                    closed: append.close,
                    wrote: false,
                    producer: Some((reply.number()?, reply.number()?)),
                },
                "bad" => return Err(problem.unwrap_or(StoreError::InvalidJson)),
                _ => return Err(reply.refusal()),
            };
            // Readers here need not wait for the message to come back from Redis.
            if appended.wrote || appended.closed {
                shared.bells.ring(&base);
            }
            Ok(appended)
        }
    }

    fn read(
        &self,
        path: &str,
        after: Option<Offset>,
        max_chunks: usize,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Read, StoreError>> + Send + 'static {
        let shared = self.shared.clone();
        let base = shared.base(path);
        async move { shared.read(base, after, max_chunks, max_bytes, true).await }
    }

    fn info(&self, path: &str) -> impl Future<Output = Result<Info, StoreError>> + Send + 'static {
        let shared = self.shared.clone();
        let base = shared.base(path);
        async move { Ok(shared.read(base, None, 0, 0, false).await?.info) }
    }

    fn delete(&self, path: &str) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let shared = self.shared.clone();
        let base = shared.base(path);
        async move {
            let mut reply = shared
                .run(&shared.read, &base, vec![b"delete".to_vec()])
                .await?;
            match reply.status.as_str() {
                "ok" => {
                    shared.bells.ring(&base);
                    Ok(())
                }
                _ => Err(reply.refusal()),
            }
        }
    }

    /// The stream's doorbell in this process; whether the stream is there, the read that
    /// follows tells.
    fn changes(&self, path: &str) -> Result<Doorbell, StoreError> {
        let shared = &self.shared;
        let base = shared.base(path);
        let subscribe = shared.follower().ok_or(StoreError::Unavailable)?;
        Ok(shared.bells.doorbell(&base, &subscribe))
    }
}
#[cfg(test)]
mod size_probe {
    #[test]
    fn probe() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        let store = super::RedisStore::builder("redis://127.0.0.1:1")
            .build()
            .unwrap();
        use crate::durable::Store;
        let read = store.read("/x", None, 10, 10);
        let append = store.append("/x", crate::durable::Append::new("text/plain", "x"));
        println!(
            "read future {} bytes, append future {} bytes",
            std::mem::size_of_val(&read),
            std::mem::size_of_val(&append)
        );
    }
}
