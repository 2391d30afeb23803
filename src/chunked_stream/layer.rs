use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::ChunkedStream;
use crate::config::{check, Shared};
use crate::follow::Pipeline;
use crate::format::{AutoFormat, StreamFormat};
use crate::telemetry::Kind;
use crate::ConfigError;

/// Settings shared by a layer and every service it builds.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) heartbeat: Duration,
    pub(crate) max_lifetime: Duration,
    pub(crate) lifetime_jitter: f64,
}

/// Applies chunked streaming (NDJSON or SSE) to an event source: see the
/// [module docs](crate::chunked_stream).
///
/// The layer is a cheap-to-clone configuration value. Build one with
/// [`ChunkedStreamLayer::builder`], or take the defaults with [`ChunkedStreamLayer::new`].
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
#[derive(Clone, Debug)]
pub struct ChunkedStreamLayer<F = AutoFormat> {
    config: Arc<Config>,
    format: F,
}

impl ChunkedStreamLayer {
    /// A layer with the default settings (see [`ChunkedStreamBuilder`]).
    pub fn new() -> Self {
        ChunkedStreamBuilder::new()
            .build()
            .expect("default settings are valid")
    }

    /// A builder for a layer with other settings.
    pub fn builder() -> ChunkedStreamBuilder {
        ChunkedStreamBuilder::new()
    }
}

impl<F> ChunkedStreamLayer<F> {
    /// How many streams of this layer's services are open right now.
    pub fn open_streams(&self) -> usize {
        self.config.pipeline.held()
    }
}

impl Default for ChunkedStreamLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Clone> ChunkedStreamLayer<F> {
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
    /// assert_eq!(service.open_streams(), 0);
    /// ```
    pub fn layer<S>(&self, source: S) -> ChunkedStream<S, F> {
        ChunkedStream::from_parts(source, self.config.clone(), self.format.clone())
    }
}

impl<S, F: Clone> Layer<S> for ChunkedStreamLayer<F> {
    type Service = ChunkedStream<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        ChunkedStreamLayer::layer(self, inner)
    }
}

/// Settings for a [`ChunkedStreamLayer`], checked once by [`build`](ChunkedStreamBuilder::build).
///
/// `ChunkedStreamBuilder::new()` equals `Default::default()`.
#[derive(Clone, Debug)]
pub struct ChunkedStreamBuilder<F = AutoFormat> {
    shared: Shared,
    heartbeat: Duration,
    max_lifetime: Duration,
    lifetime_jitter: f64,
    format: F,
}

impl ChunkedStreamBuilder {
    /// The default settings.
    pub fn new() -> Self {
        Self {
            shared: Shared::new(),
            heartbeat: Duration::from_secs(15),
            max_lifetime: Duration::from_secs(300),
            lifetime_jitter: 0.1,
            format: AutoFormat::default(),
        }
    }
}

impl Default for ChunkedStreamBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl<F> ChunkedStreamBuilder<F> {
    define_shared_setters! {
        /// The most streams this layer keeps open at once, over all its services; more are refused
        /// with `503 overloaded` and a `Retry-After` of 1 to 5 seconds.
        ///
        /// Default is no cap. The count is always kept: see [`ChunkedStreamLayer::open_streams`].
        fn max_streams;

        /// The most streams open at once per key, where `key` extracts the key from the request head
        /// (a topic from the path, a tenant from a header); requests for which it returns `None` are
        /// not counted per key.
        ///
        /// Default is no cap per key.
        fn max_streams_per_key;

        /// The shortest idle timeout between this server and its clients (nginx's
        /// `proxy_read_timeout`, a load balancer's idle timeout).
        ///
        /// [`build`](Self::build) then refuses a heartbeat interval that is not safely below it: at
        /// most the idle timeout less a tenth of it, and less at least one second.
        ///
        /// Default is none declared.
        fn proxy_idle_timeout;

        /// The most events the stream asks its source for at once; events that are ready together
        /// go out in one frame.
        ///
        /// Default is 256.
        fn max_events;

        /// The most bytes of event data one frame carries, so that a stream the client does not
        /// read holds a bounded amount of memory whatever the events weigh; the events left out
        /// follow in the next frame. A frame always carries at least one event, so an event
        /// larger than this still goes out, alone. Framing adds the id and about 20 bytes per
        /// event.
        ///
        /// Default is 256 KiB.
        fn max_bytes;

        /// The largest request head (URI and headers, in bytes) a stream may have. A stream keeps
        /// its head for its source for its whole life, so this bounds what each stream holds; a
        /// larger head is answered `431 head_too_large`.
        ///
        /// Default is 32 KiB.
        fn max_head_bytes;

        /// The query parameter that carries the start cursor. The `Last-Event-ID` header is read
        /// too, and wins when both are present (`EventSource` sends it when it reconnects).
        ///
        /// Default is `after`.
        fn cursor_param;

        /// Where a stream without a start cursor starts.
        ///
        /// Default is [`Origin::Head`](crate::source::Origin::Head): only events published from
        /// now on.
        fn origin;

        /// The shutdown signal: once triggered, open streams send a final `shutdown` message and end,
        /// and new requests get `503` with `Retry-After`.
        ///
        /// Default is none.
        fn shutdown;

        /// The window over which the clients of open streams spread their return after a
        /// shutdown: each stream's final `shutdown` message carries a delay drawn at random from
        /// zero to this (SSE: a `retry:` field, which `EventSource` follows by itself; NDJSON:
        /// `retry_ms`), so that ten thousand clients do not reconnect to the next process in the
        /// same millisecond.
        ///
        /// Default is 5 seconds.
        fn reconnect_window;

        /// The query parameter that names the topics of a multiplexed request (see
        /// [Several topics](crate#several-topics)): `GET /stream?topics=inbox,presence` follows
        /// both topics with one request and one composite cursor. The inner service gets one
        /// [`Subscribe`](crate::source::Subscribe) per topic, each naming its topic.
        ///
        /// Default is `topics`.
        fn topics_param;

        /// How many topics one multiplexed request may name; a request naming more gets `400
        /// too_many_topics`. `0` turns multiplexing off: the topics parameter is then read as
        /// nothing special.
        ///
        /// A parked request holds one subscription per topic (a few hundred bytes each with the
        /// in-memory log), and its composite cursor, sent back in every SSE `id:`, grows by up
        /// to 38 bytes per topic. 16 covers what one screen of an application follows (an
        /// inbox, notifications, presence, a few open documents) while a parked request stays
        /// near the cost of one that follows a single topic, and a cursor stays under 600
        /// bytes. At most 256.
        ///
        /// Default is 16.
        ///
        /// # Examples
        ///
        /// ```
        /// use tower_push::{ConfigError, ChunkedStreamLayer};
        ///
        /// let layer = ChunkedStreamLayer::builder().max_topics(64).build()?;
        /// # let _ = layer;
        /// assert!(matches!(
        ///     ChunkedStreamLayer::builder().max_topics(1000).build(),
        ///     Err(ConfigError::TooManyTopics { .. })
        /// ));
        /// # Ok::<(), ConfigError>(())
        /// ```
        fn max_topics;
    }

    /// How long a stream may stay silent before it sends a heartbeat. Every message restarts
    /// the interval.
    ///
    /// Keep it well below every idle timeout on the way to the client; declare the shortest one
    /// with [`proxy_idle_timeout`](Self::proxy_idle_timeout) to have it checked.
    ///
    /// Default is 15 seconds.
    #[must_use]
    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// How long a stream lives at most. It then ends cleanly with a final `lifetime` message,
    /// and the client reconnects from its last id. Bounded streams spread load over servers
    /// after a deploy and let connection-level state (auth, routing) be rechecked.
    ///
    /// Default is 5 minutes.
    #[must_use]
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// How much of the lifetime is cut at random, as a fraction: each stream lives between
    /// `max_lifetime * (1 - jitter)` and `max_lifetime`, so clients that connected together do
    /// not reconnect together.
    ///
    /// Default is 0.1.
    #[must_use]
    pub fn lifetime_jitter(mut self, fraction: f64) -> Self {
        self.lifetime_jitter = fraction;
        self
    }

    /// The wire format of the stream.
    ///
    /// Default is [`AutoFormat`]: SSE or NDJSON by `Accept`, NDJSON when the request names
    /// neither.
    #[must_use]
    pub fn format<G: StreamFormat>(self, format: G) -> ChunkedStreamBuilder<G> {
        let Self {
            shared,
            heartbeat,
            max_lifetime,
            lifetime_jitter,
            format: _,
        } = self;
        ChunkedStreamBuilder {
            shared,
            heartbeat,
            max_lifetime,
            lifetime_jitter,
            format,
        }
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// - [`ConfigError::HeartbeatNotBelowProxyIdle`] if the heartbeat interval is not safely below
    ///   the declared proxy idle timeout;
    /// - [`ConfigError::ZeroDuration`] for a zero heartbeat interval or lifetime;
    /// - [`ConfigError::ZeroCount`] for zero maximum events, bytes or head bytes, or a zero cap;
    /// - [`ConfigError::InvalidJitter`] for a jitter outside `0.0..=1.0`;
    /// - [`ConfigError::InvalidParamName`] for a query parameter name that is empty or would need
    ///   percent-encoding.
    pub fn build(self) -> Result<ChunkedStreamLayer<F>, ConfigError> {
        check::heartbeat(self.heartbeat, self.shared.proxy_idle)?;
        check::positive("max lifetime", self.max_lifetime)?;
        check::fraction("lifetime jitter", self.lifetime_jitter)?;
        let config = Config {
            pipeline: Arc::new(
                self.shared
                    .build(Kind::Stream, ["max streams", "max streams per key"])?,
            ),
            heartbeat: self.heartbeat,
            max_lifetime: self.max_lifetime,
            lifetime_jitter: self.lifetime_jitter,
        };
        Ok(ChunkedStreamLayer {
            config: Arc::new(config),
            format: self.format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Framing;

    #[test]
    fn defaults() {
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
        assert_eq!(config.heartbeat, Duration::from_secs(15));
        assert_eq!(config.max_lifetime, Duration::from_secs(300));
        assert_eq!(config.lifetime_jitter, 0.1);
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
}
