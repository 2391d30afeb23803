//! The layer both ways of pushing share: [`PushLayer`] and its [`PushBuilder`], for a
//! [`Mode`], long polling ([`LongPolling`]) or chunked streaming ([`Streaming`]).
//!
//! Most code names them by their modes' aliases, [`LongPollLayer`] and [`ChunkedStreamLayer`]
//! (and [`LongPollBuilder`], [`ChunkedStreamBuilder`]). What both modes share (the caps, the
//! cursor and topics parameters, the bounds of an answer, compression, authorization and
//! shutdown) is set here, once; each mode's own settings are set on its builder (the hold for
//! long polling, the heartbeat and lifetime for streaming).
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use tower_push::{ChunkedStreamLayer, LongPollLayer, MemoryLog};
//!
//! let log = MemoryLog::new();
//! // The same shared settings on both; each mode's own where it has them.
//! let poll = LongPollLayer::builder()
//!     .max_held(1_000)
//!     .hold_timeout(Duration::from_secs(20))
//!     .build()?;
//! let stream = ChunkedStreamLayer::builder()
//!     .max_held(1_000)
//!     .heartbeat_interval(Duration::from_secs(10))
//!     .build()?;
//! let (poll, stream) = (poll.layer(log.topic("news")), stream.layer(log.topic("news")));
//! assert_eq!((poll.held(), stream.held()), (0, 0));
//! # Ok::<(), tower_push::ConfigError>(())
//! ```
//!
//! [`LongPolling`]: crate::long_poll::LongPolling
//! [`Streaming`]: crate::chunked_stream::Streaming
//! [`LongPollLayer`]: crate::LongPollLayer
//! [`ChunkedStreamLayer`]: crate::ChunkedStreamLayer
//! [`LongPollBuilder`]: crate::LongPollBuilder
//! [`ChunkedStreamBuilder`]: crate::ChunkedStreamBuilder

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::Response;

use crate::authorize::{Authorize, Authorizer};
use crate::compression::Compression;
use crate::config::{check, Shared};
use crate::follow::{Follow, Pipeline};
use crate::format::{AutoFormat, JsonFormat};
use crate::limit::KeyFn;
use crate::long_poll::supersede::Supersede;
use crate::source::{Origin, Subscribe};
use crate::telemetry::Kind;
use crate::{ConfigError, PushBody, Shutdown};

/// A way of pushing: what a [`PushLayer`] of this mode holds requests for, and what it builds.
///
/// Implemented by [`LongPolling`] and
/// [`Streaming`], and sealed: there is nothing to implement.
pub trait Mode: sealed::Settings + Clone + fmt::Debug + Send + Sync + 'static {
    /// The service a layer of this mode makes of an event source `S`, answering in format `F`.
    type Service<S, F>;

    /// The format of a layer built without [`PushBuilder::format`].
    type DefaultFormat: FormatFor<Self> + Default;

    #[doc(hidden)]
    fn service<S, F: Clone>(layer: &PushLayer<Self, F>, source: S) -> Self::Service<S, F>;
}

/// A format a layer of mode `M` answers in: every [`PollFormat`](crate::format::PollFormat)
/// for long polling, every [`StreamFormat`](crate::format::StreamFormat) for streaming.
///
/// Implemented for them; there is nothing to implement.
pub trait FormatFor<M>: sealed::Format<M> + Clone + Send + Sync + 'static {}

impl<M, F: sealed::Format<M> + Clone + Send + Sync + 'static> FormatFor<M> for F {}

pub(crate) mod sealed {
    use std::time::Duration;

    use http::request::Parts;
    use http::Response;

    use crate::source::Position;
    use crate::{ConfigError, PushBody, Rejection};

    /// What the builder and the pipeline need of a mode's own settings.
    pub trait Settings: Clone {
        /// The settings of a new builder, as the mode's setters document them.
        fn defaults() -> Self;

        /// Checks the settings, with the shortest idle timeout on the way if one is declared,
        /// and says how long a request is held at most: `Some` for long polling, `None` for
        /// streaming (a stream is held until its lifetime ends).
        fn check(&self, proxy_idle: Option<Duration>) -> Result<Option<Duration>, ConfigError>;

        /// The settings of a new layer: as these, with state of their own (not shared with
        /// another layer built from a clone of the same builder).
        fn renewed(&self) -> Self {
            self.clone()
        }
    }

    /// Where a request starts and how a refusal is answered, in a format of mode `M`.
    pub trait Format<M> {
        fn start(&self, parts: &Parts) -> Result<Option<Position>, Rejection>;
        fn rejection(&self, rejection: &Rejection) -> Response<PushBody>;
    }
}

/// Settings shared by a layer and every service it builds.
#[derive(Debug)]
pub(crate) struct Config<M> {
    pub(crate) pipeline: Arc<Pipeline>,
    /// The mode's own settings.
    pub(crate) mode: M,
}

impl<M> Config<M> {
    /// Admits a request in `format`, or gives the answer that refuses it (already counted).
    // The refusal is the answer itself: boxing it would allocate for nothing.
    #[allow(clippy::result_large_err)]
    pub(crate) fn admit<S, F>(
        &self,
        parts: Parts,
        source: &S,
        format: &F,
    ) -> Result<Follow<S>, Response<PushBody>>
    where
        S: tower_service::Service<Subscribe> + Clone,
        F: FormatFor<M>,
    {
        let start = |parts: &_| format.start(parts);
        let refuse = |rejection: &_| format.rejection(rejection);
        self.pipeline.admit(parts, source, start, refuse)
    }
}

/// Applies a way of pushing ([`Mode`]) to an event source: see [`LongPollLayer`] and
/// [`ChunkedStreamLayer`], the names most code uses, and the [module docs](self).
///
/// The layer is a cheap-to-clone configuration value. Build one with
/// [`builder`](Self::builder), or take the defaults with [`new`](Self::new).
///
/// [`LongPollLayer`]: crate::LongPollLayer
/// [`ChunkedStreamLayer`]: crate::ChunkedStreamLayer
#[derive(Clone, Debug)]
pub struct PushLayer<M, F> {
    pub(crate) config: Arc<Config<M>>,
    pub(crate) format: F,
}

impl<M: Mode> PushLayer<M, M::DefaultFormat> {
    /// A layer with the default settings (see [`PushBuilder`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::LongPollLayer;
    ///
    /// assert_eq!(LongPollLayer::new().held(), 0);
    /// ```
    pub fn new() -> Self {
        PushBuilder::new()
            .build()
            .expect("default settings are valid")
    }

    /// A builder for a layer with other settings.
    pub fn builder() -> PushBuilder<M, M::DefaultFormat> {
        PushBuilder::new()
    }
}

impl<M: Mode> Default for PushLayer<M, M::DefaultFormat> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M, F> PushLayer<M, F> {
    /// How many requests this layer's services hold right now: polls waiting for events, or
    /// open streams. Caps: [`PushBuilder::max_held`] and [`PushBuilder::max_held_per_key`].
    pub fn held(&self) -> usize {
        self.config.pipeline.held()
    }
}

impl<M: Mode, F: Clone> PushLayer<M, F> {
    /// Wraps the event source `source` in this layer's service: the same as
    /// [`Layer::layer`](tower_layer::Layer::layer), without having to import the trait (or
    /// depend on `tower`) to call it.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::{ChunkedStreamLayer, MemoryLog};
    ///
    /// let service = ChunkedStreamLayer::new().layer(MemoryLog::new().topic("news"));
    /// assert_eq!(service.held(), 0);
    /// ```
    pub fn layer<S>(&self, source: S) -> M::Service<S, F> {
        M::service(self, source)
    }
}

impl<S, M: Mode, F: Clone> tower_layer::Layer<S> for PushLayer<M, F> {
    type Service = M::Service<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        M::service(self, inner)
    }
}

/// Settings for a [`PushLayer`], checked once by [`build`](Self::build): the settings both
/// modes share are set here, each mode's own on [`LongPollBuilder`] and
/// [`ChunkedStreamBuilder`].
///
/// `PushBuilder::new()` equals `Default::default()`.
///
/// [`LongPollBuilder`]: crate::LongPollBuilder
/// [`ChunkedStreamBuilder`]: crate::ChunkedStreamBuilder
#[derive(Clone, Debug)]
pub struct PushBuilder<M, F> {
    pub(crate) shared: Shared,
    /// The settings of this mode alone.
    pub(crate) mode: M,
    format: F,
}

impl<M: Mode> PushBuilder<M, M::DefaultFormat> {
    /// The default settings.
    pub fn new() -> Self {
        Self {
            shared: Shared::new(),
            mode: M::defaults(),
            format: M::DefaultFormat::default(),
        }
    }
}

impl<M: Mode> Default for PushBuilder<M, M::DefaultFormat> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Mode, F> PushBuilder<M, F> {
    /// The wire format of the answers.
    ///
    /// Default: [`JsonFormat`] for long polling;
    /// [`AutoFormat`] for streaming (SSE or NDJSON by `Accept`,
    /// NDJSON when the request names neither).
    #[must_use]
    pub fn format<G: FormatFor<M>>(self, format: G) -> PushBuilder<M, G> {
        PushBuilder {
            shared: self.shared,
            mode: self.mode,
            format,
        }
    }

    /// The most requests this layer holds at once (polls waiting for events, open streams),
    /// over all its services; more are refused with `503 overloaded` and a `Retry-After` of 1
    /// to 5 seconds.
    ///
    /// Default is no cap. The count is always kept: see [`PushLayer::held`].
    #[must_use]
    pub fn max_held(mut self, max: usize) -> Self {
        self.shared.max = Some(max);
        self
    }

    /// The most requests held at once per key, where `key` extracts the key from the request
    /// head (a topic from the path, a tenant from a header); requests for which it returns
    /// `None` are not counted per key. More are refused like [`max_held`](Self::max_held)
    /// refuses them.
    ///
    /// Default is no cap per key.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::LongPollLayer;
    ///
    /// let layer = LongPollLayer::builder()
    ///     .max_held(10_000)
    ///     .max_held_per_key(1_000, |parts| {
    ///         parts.uri.path().strip_prefix("/topics/").map(str::to_owned)
    ///     })
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok::<(), tower_push::ConfigError>(())
    /// ```
    #[must_use]
    pub fn max_held_per_key<K>(mut self, max: usize, key: K) -> Self
    where
        K: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.shared.max_per_key = Some((max, KeyFn::new(key)));
        self
    }

    /// The shortest idle timeout between this server and its clients (nginx's
    /// `proxy_read_timeout`, a load balancer's idle timeout).
    ///
    /// [`build`](Self::build) then refuses a long poll's hold, or a stream's heartbeat
    /// interval, that is not safely below it: at most the idle timeout less a tenth of it, and
    /// less at least one second (54 seconds under a 60 second idle timeout).
    ///
    /// Default is none declared.
    #[must_use]
    pub fn proxy_idle_timeout(mut self, idle: Duration) -> Self {
        self.shared.proxy_idle = Some(idle);
        self
    }

    /// Compresses answers in a coding the request accepts, each stream frame flushed so
    /// that the client reads every message as soon as it arrives; see the
    /// [`compression`](crate::compression) module.
    ///
    /// Default: no compression.
    ///
    /// # Errors
    ///
    /// `build` fails with [`ConfigError::CodingNotBuilt`] for a coding whose feature is off,
    /// and with [`ConfigError::CompressionWindow`] for a window out of range.
    #[must_use]
    pub fn compression(mut self, compression: Compression) -> Self {
        self.shared.compression = Some(compression);
        self
    }

    /// Checks who may read which topics, with `authorize`: before a request reaches the
    /// source, and again while it is held (see [`reauthorize_every`](Self::reauthorize_every)).
    /// A request the check refuses is answered `401 unauthenticated` or, for a topic the
    /// credentials do not grant, exactly as a topic the source does not serve; see the
    /// [`authorize`](crate::authorize) module.
    ///
    /// Default: no check.
    #[must_use]
    pub fn authorize(mut self, authorize: impl Authorize) -> Self {
        self.shared.authorizer = Some(Authorizer::new(authorize));
        self
    }

    /// How often a request that is still held (an open stream, a long poll held longer than
    /// this) checks its authorization again; when it no longer may, it ends with `401
    /// unauthenticated` (a stream, with the format's final message for it). Needs
    /// [`authorize`](Self::authorize).
    ///
    /// Default is 60 seconds.
    #[must_use]
    pub fn reauthorize_every(mut self, interval: Duration) -> Self {
        self.shared.reauthorize_every = Some(interval);
        self
    }

    /// The most events one answer carries (a poll's answer, a stream's frame); events that
    /// are ready together go out together, and a client that is further behind gets the
    /// rest at once (in the next frame, or with its next request).
    ///
    /// Default is 256.
    #[must_use]
    pub fn max_events(mut self, max: usize) -> Self {
        self.shared.max_events = max;
        self
    }

    /// The most bytes of event data one answer (a poll's answer, a stream's frame) carries,
    /// so that an answer the client does not read holds a bounded amount of memory whatever
    /// the events weigh; the events left out follow at once (in the next frame, or with the
    /// next request). An answer always carries at least one event, so an event larger than
    /// this still goes out, alone. Framing adds the id and about 20 bytes per event.
    ///
    /// Default is 256 KiB.
    #[must_use]
    pub fn max_answer_bytes(mut self, max: usize) -> Self {
        self.shared.max_answer_bytes = max;
        self
    }

    /// The largest request head (URI and headers, in bytes) a poll or a stream may have. A
    /// held poll or an open stream keeps its head for its source for as long as it lasts,
    /// so this bounds what each one holds; a larger head is answered `431 head_too_large`.
    ///
    /// Default is 32 KiB.
    #[must_use]
    pub fn max_head_bytes(mut self, max: usize) -> Self {
        self.shared.max_head_bytes = max;
        self
    }

    /// The query parameter that carries the cursor (a stream's start cursor). The
    /// `Last-Event-ID` header is read too, and wins when both are present (`EventSource`
    /// sends it when it reconnects).
    ///
    /// Default is `after`.
    #[must_use]
    pub fn cursor_param(mut self, name: impl Into<String>) -> Self {
        self.shared.param = name.into();
        self
    }

    /// Where a request without a cursor (a poll, or a stream without a start cursor)
    /// starts.
    ///
    /// Default is [`Origin::Head`]: only events published from now on.
    #[must_use]
    pub fn origin(mut self, origin: Origin) -> Self {
        self.shared.origin = origin;
        self
    }

    /// The shutdown signal: once triggered, held polls are answered at once as if their
    /// hold had expired, open streams send a final `shutdown` message and end, and new
    /// requests get `503` with `Retry-After`.
    ///
    /// Default is none.
    #[must_use]
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shared.shutdown = Some(shutdown);
        self
    }

    /// The window over which clients spread their return after a shutdown: each held
    /// poll's answer, and each open stream's final `shutdown` message, carries a delay drawn
    /// at random from zero to this, so that ten thousand clients do not reconnect to the
    /// next process in the same millisecond. A poll's answer carries it in `Push-Retry-Ms`
    /// (and `Retry-After`, rounded up to whole seconds), and answers without a delay when
    /// this is zero; an SSE stream in a `retry:` field, which `EventSource` follows by
    /// itself; an NDJSON stream in `retry_ms`.
    ///
    /// Default is 5 seconds.
    #[must_use]
    pub fn reconnect_window(mut self, window: Duration) -> Self {
        self.shared.reconnect_window = window;
        self
    }

    /// The query parameter that names the topics of a multiplexed request (see
    /// [Several topics](crate#several-topics)): `?topics=inbox,presence` follows both
    /// topics with one request and one composite cursor. The inner service gets one
    /// [`Subscribe`] per topic, each naming its topic.
    ///
    /// Default is `topics`.
    #[must_use]
    pub fn topics_param(mut self, name: impl Into<String>) -> Self {
        self.shared.topics_param = name.into();
        self
    }

    /// How many topics one multiplexed request may name; a request naming more gets `400
    /// too_many_topics`. `0` turns multiplexing off: the topics parameter is then read as
    /// nothing special.
    ///
    /// A held request holds one subscription per topic (a few hundred bytes each with the
    /// in-memory log), and its composite cursor, sent back in every SSE `id:`, grows by up
    /// to 38 bytes per topic. 16 covers what one screen of an application follows (an
    /// inbox, notifications, presence, a few open documents) while a held request stays
    /// near the cost of one that follows a single topic, and a cursor stays under 600
    /// bytes. At most 256.
    ///
    /// Default is 16.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::{ChunkedStreamLayer, ConfigError};
    ///
    /// let layer = ChunkedStreamLayer::builder().max_topics_per_request(64).build()?;
    /// # let _ = layer;
    /// assert!(matches!(
    ///     ChunkedStreamLayer::builder().max_topics_per_request(1000).build(),
    ///     Err(ConfigError::TooManyTopics { .. })
    /// ));
    /// # Ok::<(), ConfigError>(())
    /// ```
    #[must_use]
    pub fn max_topics_per_request(mut self, max: usize) -> Self {
        self.shared.max_topics_per_request = max;
        self
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// - [`ConfigError::HoldNotBelowProxyIdle`] (long polling) or
    ///   [`ConfigError::HeartbeatNotBelowProxyIdle`] (streaming) if the hold or the heartbeat
    ///   interval is not safely below the declared proxy idle timeout;
    /// - [`ConfigError::ZeroDuration`] for a zero hold, heartbeat interval or lifetime;
    /// - [`ConfigError::ZeroCount`] for zero maximum events, bytes or head bytes, or a zero cap;
    /// - [`ConfigError::InvalidJitter`] for a jitter outside `0.0..=1.0`;
    /// - [`ConfigError::InvalidParamName`] for a query parameter name that is empty or would
    ///   need percent-encoding;
    /// - the errors of [`compression`](Self::compression),
    ///   [`max_topics_per_request`](Self::max_topics_per_request) and
    ///   [`reauthorize_every`](Self::reauthorize_every).
    pub fn build(self) -> Result<PushLayer<M, F>, ConfigError>
    where
        M: Mode,
    {
        let hold = self.mode.check(self.shared.proxy_idle)?;
        let kind = match hold {
            Some(_) => Kind::LongPoll,
            None => Kind::Stream,
        };
        let pipeline = self.shared.build(kind, hold)?;
        let config = Config {
            pipeline: Arc::new(pipeline),
            mode: self.mode.renewed(),
        };
        Ok(PushLayer {
            config: Arc::new(config),
            format: self.format,
        })
    }
}

// Long polling.

/// Applies long polling to an event source: see the [module docs](crate::long_poll).
///
/// The layer is a cheap-to-clone configuration value. Build one with [`LongPollLayer::builder`],
/// or take the defaults with [`LongPollLayer::new`]; the settings it shares with
/// [`ChunkedStreamLayer`] are those of [`PushBuilder`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_push::{LongPollLayer, MemoryLog};
///
/// let layer = LongPollLayer::builder()
///     .hold_timeout(Duration::from_secs(20))
///     .proxy_idle_timeout(Duration::from_secs(60))
///     .max_events(100)
///     .build()?;
/// let service = layer.layer(MemoryLog::new().topic("news"));
/// # let _ = service;
/// # Ok::<(), tower_push::ConfigError>(())
/// ```
pub type LongPollLayer<F = JsonFormat> = PushLayer<LongPolling, F>;

/// Settings for a [`LongPollLayer`], checked once by [`build`](PushBuilder::build): long
/// polling's own here, the ones it shares with streaming on [`PushBuilder`].
///
/// `LongPollBuilder::new()` equals `Default::default()`.
pub type LongPollBuilder<F = JsonFormat> = PushBuilder<LongPolling, F>;

/// Long polling as a [`Mode`] of [`PushLayer`]: its own settings, set on a [`LongPollBuilder`].
#[derive(Clone, Debug)]
pub struct LongPolling {
    pub(crate) hold: Duration,
    pub(crate) hold_jitter: f64,
    /// Who is a client, and the polls in flight per client (one registry per layer).
    pub(crate) supersede: Option<Arc<Supersede>>,
}

impl Mode for LongPolling {
    type Service<S, F> = crate::LongPoll<S, F>;
    type DefaultFormat = JsonFormat;

    fn service<S, F: Clone>(layer: &PushLayer<Self, F>, source: S) -> crate::LongPoll<S, F> {
        crate::LongPoll {
            inner: source,
            config: layer.config.clone(),
            format: layer.format.clone(),
        }
    }
}

impl sealed::Settings for LongPolling {
    fn defaults() -> Self {
        Self {
            hold: Duration::from_secs(25),
            hold_jitter: 0.0,
            supersede: None,
        }
    }

    fn check(&self, proxy_idle: Option<Duration>) -> Result<Option<Duration>, ConfigError> {
        check::positive("hold timeout", self.hold)?;
        let hold = self.hold;
        check::below_proxy_idle(hold, proxy_idle).map_err(|(proxy_idle, max_hold)| {
            ConfigError::HoldNotBelowProxyIdle {
                hold,
                proxy_idle,
                max_hold,
            }
        })?;
        check::fraction("hold jitter", self.hold_jitter)?;
        Ok(Some(self.hold))
    }

    fn renewed(&self) -> Self {
        Self {
            supersede: self.supersede.as_ref().map(|s| Arc::new(s.renewed())),
            ..self.clone()
        }
    }
}

impl<F> LongPollBuilder<F> {
    /// How long a request without new events is held before it is answered with an empty hold
    /// (`204` in the default format).
    ///
    /// Keep it below every idle timeout on the way to the client: proxies, load balancers and
    /// the client's own request timeout. Declare the shortest one with
    /// [`proxy_idle_timeout`](PushBuilder::proxy_idle_timeout) to have it checked.
    ///
    /// Default is 25 seconds, below the common 30 and 60 second proxy defaults.
    #[must_use]
    pub fn hold_timeout(mut self, hold: Duration) -> Self {
        self.mode.hold = hold;
        self
    }

    /// How much of the hold is cut at random, as a fraction: each hold lasts between
    /// `hold * (1 - jitter)` and `hold`, so clients that reconnected together (after a restart)
    /// do not all time out and reconnect together again.
    ///
    /// Default is 0.0 (no jitter).
    #[must_use]
    pub fn hold_jitter(mut self, fraction: f64) -> Self {
        self.mode.hold_jitter = fraction;
        self
    }

    /// Keeps one poll in flight per client: `client` extracts a client id from the request
    /// head (a header, a cookie, an authenticated user in the extensions). A newer poll of the
    /// same client makes the older one answer at once, as if its hold had expired (`204` with
    /// its cursor), so two answers for one client never cross. Requests for which `client`
    /// returns `None` are not tracked.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::LongPollLayer;
    ///
    /// let layer = LongPollLayer::builder()
    ///     .one_poll_per_client(|parts| {
    ///         let id = parts.headers.get("x-client-id")?.to_str().ok()?;
    ///         Some(id.to_owned())
    ///     })
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok::<(), tower_push::ConfigError>(())
    /// ```
    ///
    /// Default is off.
    #[must_use]
    pub fn one_poll_per_client<K>(mut self, client: K) -> Self
    where
        K: Fn(&http::request::Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.mode.supersede = Some(Arc::new(Supersede::new(KeyFn::new(client))));
        self
    }
}

// Chunked streaming.

/// Applies chunked streaming (NDJSON or SSE) to an event source: see the
/// [module docs](crate::chunked_stream).
///
/// The layer is a cheap-to-clone configuration value. Build one with
/// [`ChunkedStreamLayer::builder`], or take the defaults with [`ChunkedStreamLayer::new`]; the
/// settings it shares with [`LongPollLayer`] are those of
/// [`PushBuilder`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_push::format::{AutoFormat, Framing};
/// use tower_push::{ChunkedStreamLayer, MemoryLog};
///
/// let layer = ChunkedStreamLayer::builder()
///     .heartbeat_interval(Duration::from_secs(10))
///     .proxy_idle_timeout(Duration::from_secs(60))
///     .max_lifetime(Duration::from_secs(300))
///     .format(AutoFormat::new(Framing::Sse))
///     .build()?;
/// let service = layer.layer(MemoryLog::new().topic("news"));
/// # let _ = service;
/// # Ok::<(), tower_push::ConfigError>(())
/// ```
pub type ChunkedStreamLayer<F = AutoFormat> = PushLayer<Streaming, F>;

/// Settings for a [`ChunkedStreamLayer`], checked once by [`build`](PushBuilder::build):
/// streaming's own here, the ones it shares with long polling on [`PushBuilder`].
///
/// `ChunkedStreamBuilder::new()` equals `Default::default()`.
pub type ChunkedStreamBuilder<F = AutoFormat> = PushBuilder<Streaming, F>;

/// Chunked streaming as a [`Mode`] of [`PushLayer`]: its own settings, set on a
/// [`ChunkedStreamBuilder`].
#[derive(Clone, Debug)]
pub struct Streaming {
    pub(crate) heartbeat: Duration,
    pub(crate) max_lifetime: Duration,
    pub(crate) lifetime_jitter: f64,
}

impl Mode for Streaming {
    type Service<S, F> = crate::ChunkedStream<S, F>;
    type DefaultFormat = AutoFormat;

    fn service<S, F: Clone>(layer: &PushLayer<Self, F>, source: S) -> crate::ChunkedStream<S, F> {
        crate::ChunkedStream {
            inner: source,
            config: layer.config.clone(),
            format: layer.format.clone(),
        }
    }
}

impl sealed::Settings for Streaming {
    fn defaults() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            max_lifetime: Duration::from_secs(300),
            lifetime_jitter: 0.1,
        }
    }

    fn check(&self, proxy_idle: Option<Duration>) -> Result<Option<Duration>, ConfigError> {
        check::positive("heartbeat interval", self.heartbeat)?;
        let heartbeat = self.heartbeat;
        check::below_proxy_idle(heartbeat, proxy_idle).map_err(|(proxy_idle, max_heartbeat)| {
            ConfigError::HeartbeatNotBelowProxyIdle {
                heartbeat,
                proxy_idle,
                max_heartbeat,
            }
        })?;
        check::positive("max lifetime", self.max_lifetime)?;
        check::fraction("lifetime jitter", self.lifetime_jitter)?;
        Ok(None)
    }
}

impl<F> ChunkedStreamBuilder<F> {
    /// How long a stream may stay silent before it sends a heartbeat. Every message restarts
    /// the interval.
    ///
    /// Keep it well below every idle timeout on the way to the client; declare the shortest one
    /// with [`proxy_idle_timeout`](PushBuilder::proxy_idle_timeout) to have it checked.
    ///
    /// Default is 15 seconds.
    #[must_use]
    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.mode.heartbeat = every;
        self
    }

    /// How long a stream lives at most. It then ends cleanly with a final `lifetime` message,
    /// and the client reconnects from its last id. Bounded streams spread load over servers
    /// after a deploy and let connection-level state (auth, routing) be rechecked.
    ///
    /// Default is 5 minutes.
    #[must_use]
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.mode.max_lifetime = lifetime;
        self
    }

    /// How much of the lifetime is cut at random, as a fraction: each stream lives between
    /// `max_lifetime * (1 - jitter)` and `max_lifetime`, so clients that connected together do
    /// not reconnect together.
    ///
    /// Default is 0.1.
    #[must_use]
    pub fn lifetime_jitter(mut self, fraction: f64) -> Self {
        self.mode.lifetime_jitter = fraction;
        self
    }
}

/// What a [`Format`](sealed::Format) of either mode has: where a request starts, and how a
/// refusal is answered.
macro_rules! format_for_mode {
    ($mode:ty, $format:path) => {
        impl<F: $format> crate::layer::sealed::Format<$mode> for F {
            fn start(
                &self,
                parts: &http::request::Parts,
            ) -> Result<Option<crate::source::Position>, crate::Rejection> {
                <F as $format>::start(self, parts)
            }

            fn rejection(&self, rejection: &crate::Rejection) -> http::Response<crate::PushBody> {
                <F as $format>::rejection(self, rejection)
            }
        }
    };
}

format_for_mode!(crate::long_poll::LongPolling, crate::format::PollFormat);
format_for_mode!(
    crate::chunked_stream::Streaming,
    crate::format::StreamFormat
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Framing;

    #[test]
    fn long_polling_defaults() {
        let builder = LongPollBuilder::new();
        assert_eq!(
            format!("{builder:?}"),
            format!("{:?}", LongPollBuilder::default())
        );
        assert_eq!(
            builder.shared.proxy_idle, None,
            "no proxy idle timeout declared"
        );
        let layer = builder.build().unwrap();
        let config = &layer.config;
        assert_eq!(config.mode.hold, Duration::from_secs(25));
        assert_eq!(config.mode.hold_jitter, 0.0);
        assert!(
            config.mode.supersede.is_none(),
            "one poll per client is off"
        );
        config.pipeline.assert_shared_defaults();
        let _: &JsonFormat = &layer.format;
        assert_eq!(format!("{:?}", LongPollLayer::new()), format!("{layer:?}"));
    }

    #[test]
    fn refuses_a_hold_at_or_near_the_proxy_idle_timeout() {
        let build = |hold, idle| {
            LongPollLayer::builder()
                .hold_timeout(Duration::from_secs(hold))
                .proxy_idle_timeout(Duration::from_secs(idle))
                .build()
        };
        assert!(build(25, 60).is_ok());
        assert!(build(54, 60).is_ok());
        assert_eq!(
            build(55, 60).unwrap_err(),
            ConfigError::HoldNotBelowProxyIdle {
                hold: Duration::from_secs(55),
                proxy_idle: Duration::from_secs(60),
                max_hold: Duration::from_secs(54),
            }
        );
        assert!(build(60, 60).is_err());
        assert!(build(90, 60).is_err());
        assert!(build(25, 30).is_ok());
        assert!(build(28, 30).is_err());
        assert!(build(1, 1).is_err());
    }

    #[test]
    fn refuses_zero_and_bad_names() {
        let zero_hold = LongPollLayer::builder()
            .hold_timeout(Duration::ZERO)
            .build();
        assert_eq!(
            zero_hold.unwrap_err(),
            ConfigError::ZeroDuration {
                setting: "hold timeout"
            }
        );
        let zero_max = LongPollLayer::builder().max_events(0).build();
        assert_eq!(
            zero_max.unwrap_err(),
            ConfigError::ZeroCount {
                setting: "max events"
            }
        );
        let bad = LongPollLayer::builder().cursor_param("a=b").build();
        assert!(matches!(bad, Err(ConfigError::InvalidParamName { .. })));
    }

    #[test]
    fn streaming_defaults() {
        let builder = ChunkedStreamBuilder::new();
        assert_eq!(
            format!("{builder:?}"),
            format!("{:?}", ChunkedStreamBuilder::default())
        );
        assert_eq!(
            builder.shared.proxy_idle, None,
            "no proxy idle timeout declared"
        );
        let layer = builder.build().unwrap();
        let config = &layer.config;
        assert_eq!(config.mode.heartbeat, Duration::from_secs(15));
        assert_eq!(config.mode.max_lifetime, Duration::from_secs(300));
        assert_eq!(config.mode.lifetime_jitter, 0.1);
        config.pipeline.assert_shared_defaults();
        assert_eq!(
            layer.format.framing(),
            Framing::Ndjson,
            "NDJSON unless SSE is asked for"
        );
        assert_eq!(
            format!("{:?}", ChunkedStreamLayer::new()),
            format!("{layer:?}")
        );
    }

    #[test]
    fn refuses_a_heartbeat_near_the_proxy_idle_timeout() {
        let build = |heartbeat, idle| {
            ChunkedStreamLayer::builder()
                .heartbeat_interval(Duration::from_secs(heartbeat))
                .proxy_idle_timeout(Duration::from_secs(idle))
                .build()
        };
        assert!(build(15, 60).is_ok());
        assert!(build(54, 60).is_ok());
        assert_eq!(
            build(55, 60).unwrap_err(),
            ConfigError::HeartbeatNotBelowProxyIdle {
                heartbeat: Duration::from_secs(55),
                proxy_idle: Duration::from_secs(60),
                max_heartbeat: Duration::from_secs(54),
            }
        );
        assert!(build(15, 15).is_err());
    }

    #[test]
    fn refuses_zero_and_out_of_range_settings() {
        let b = ChunkedStreamLayer::builder;
        assert!(matches!(
            b().heartbeat_interval(Duration::ZERO).build(),
            Err(ConfigError::ZeroDuration {
                setting: "heartbeat interval"
            })
        ));
        assert!(matches!(
            b().max_lifetime(Duration::ZERO).build(),
            Err(ConfigError::ZeroDuration {
                setting: "max lifetime"
            })
        ));
        assert!(matches!(
            b().max_events(0).build(),
            Err(ConfigError::ZeroCount { .. })
        ));
        for jitter in [-0.1, 1.5, f64::NAN] {
            assert!(matches!(
                b().lifetime_jitter(jitter).build(),
                Err(ConfigError::InvalidJitter { .. })
            ));
        }
        assert!(b().lifetime_jitter(0.0).build().is_ok());
        assert!(b().lifetime_jitter(1.0).build().is_ok());
        assert!(matches!(
            b().cursor_param("").build(),
            Err(ConfigError::InvalidParamName { .. })
        ));
    }

    #[test]
    fn the_shared_defaults_are_the_same_for_both_modes() {
        for pipeline in [
            LongPollBuilder::new()
                .build()
                .unwrap()
                .config
                .pipeline
                .clone(),
            ChunkedStreamBuilder::new()
                .build()
                .unwrap()
                .config
                .pipeline
                .clone(),
        ] {
            pipeline.assert_shared_defaults();
        }
        assert_eq!(
            LongPollBuilder::new().shared.proxy_idle,
            None,
            "no proxy idle timeout declared"
        );
    }

    #[test]
    fn a_zero_cap_is_refused_by_its_setter_name() {
        for max in [
            LongPollBuilder::new().max_held(0).build().map(drop),
            ChunkedStreamBuilder::new()
                .max_held_per_key(0, |_| None)
                .build()
                .map(drop),
        ] {
            assert!(matches!(
                max,
                Err(ConfigError::ZeroCount {
                    setting: "max held" | "max held per key"
                })
            ));
        }
    }

    #[test]
    fn a_layer_built_from_a_clone_keeps_state_of_its_own() {
        let builder = LongPollBuilder::new().one_poll_per_client(|_| Some("one".to_owned()));
        let (a, b) = (builder.clone().build().unwrap(), builder.build().unwrap());
        let registry = |layer: &LongPollLayer| layer.config.mode.supersede.clone().unwrap();
        assert!(
            !Arc::ptr_eq(&registry(&a), &registry(&b)),
            "two layers never see each other's clients"
        );
    }
}
