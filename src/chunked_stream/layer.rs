use std::sync::Arc;
use std::time::Duration;

use super::ChunkedStream;
use crate::config::check;
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

/// The builder's settings of streaming alone, with their defaults.
#[derive(Clone, Debug)]
struct Settings {
    heartbeat: Duration,
    max_lifetime: Duration,
    lifetime_jitter: f64,
}

impl Settings {
    fn new() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            max_lifetime: Duration::from_secs(300),
            lifetime_jitter: 0.1,
        }
    }
}

define_push_layer! {
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
    pub struct ChunkedStreamLayer<F = AutoFormat>, serves ChunkedStream;

    /// How many streams of this layer's services are open right now.
    fn open_streams;

    /// Settings for a [`ChunkedStreamLayer`], checked once by [`build`](ChunkedStreamBuilder::build).
    ///
    /// `ChunkedStreamBuilder::new()` equals `Default::default()`.
    pub struct ChunkedStreamBuilder;

    /// The wire format of the stream.
    ///
    /// Default is [`AutoFormat`]: SSE or NDJSON by `Accept`, NDJSON when the request names
    /// neither.
    fn format<G: StreamFormat>;
}

impl<F> ChunkedStreamBuilder<F> {
    define_shared_setters! {
        layer: ChunkedStreamLayer;

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
        self.settings.heartbeat = every;
        self
    }

    /// How long a stream lives at most. It then ends cleanly with a final `lifetime` message,
    /// and the client reconnects from its last id. Bounded streams spread load over servers
    /// after a deploy and let connection-level state (auth, routing) be rechecked.
    ///
    /// Default is 5 minutes.
    #[must_use]
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.settings.max_lifetime = lifetime;
        self
    }

    /// How much of the lifetime is cut at random, as a fraction: each stream lives between
    /// `max_lifetime * (1 - jitter)` and `max_lifetime`, so clients that connected together do
    /// not reconnect together.
    ///
    /// Default is 0.1.
    #[must_use]
    pub fn lifetime_jitter(mut self, fraction: f64) -> Self {
        self.settings.lifetime_jitter = fraction;
        self
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
        check::heartbeat(self.settings.heartbeat, self.shared.proxy_idle)?;
        check::positive("max lifetime", self.settings.max_lifetime)?;
        check::fraction("lifetime jitter", self.settings.lifetime_jitter)?;
        let config = Config {
            pipeline: Arc::new(self.shared.build(
                Kind::Stream,
                ["max streams", "max streams per key"],
                None,
            )?),
            heartbeat: self.settings.heartbeat,
            max_lifetime: self.settings.max_lifetime,
            lifetime_jitter: self.settings.lifetime_jitter,
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
