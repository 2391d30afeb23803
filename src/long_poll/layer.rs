use std::sync::Arc;
use std::time::Duration;

use super::supersede::Supersede;
use super::LongPoll;
use crate::config::check;
use crate::follow::Pipeline;
use crate::format::{JsonFormat, PollFormat};
use crate::limit::KeyFn;
use crate::telemetry::Kind;
use crate::ConfigError;

/// Settings shared by a layer and every service it builds.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) hold: Duration,
    pub(crate) hold_jitter: f64,
    pub(crate) supersede: Option<Arc<Supersede>>,
}

/// The builder's settings of long polling alone, with their defaults.
#[derive(Clone, Debug)]
struct Settings {
    hold: Duration,
    hold_jitter: f64,
    supersede: Option<KeyFn>,
}

impl Settings {
    fn new() -> Self {
        Self {
            hold: Duration::from_secs(25),
            hold_jitter: 0.0,
            supersede: None,
        }
    }
}

define_push_layer! {
    /// Applies long polling to an event source: see the [module docs](crate::long_poll).
    ///
    /// The layer is a cheap-to-clone configuration value. Build one with [`LongPollLayer::builder`],
    /// or take the defaults with [`LongPollLayer::new`].
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
    pub struct LongPollLayer<F = JsonFormat>, serves LongPoll;

    /// How many polls of this layer's services are held right now.
    fn parked_polls;

    /// Settings for a [`LongPollLayer`], checked once by [`build`](LongPollBuilder::build).
    ///
    /// `LongPollBuilder::new()` equals `Default::default()`.
    pub struct LongPollBuilder;

    /// The wire format of the answers.
    ///
    /// Default is [`JsonFormat`].
    fn format<G: PollFormat>;
}

impl<F> LongPollBuilder<F> {
    /// How long a request without new events is held before it is answered with an empty hold
    /// (`204` in the default format).
    ///
    /// Keep it below every idle timeout on the way to the client: proxies, load balancers and
    /// the client's own request timeout. Declare the shortest one with
    /// [`proxy_idle_timeout`](Self::proxy_idle_timeout) to have it checked.
    ///
    /// Default is 25 seconds, below the common 30 and 60 second proxy defaults.
    #[must_use]
    pub fn hold_timeout(mut self, hold: Duration) -> Self {
        self.settings.hold = hold;
        self
    }

    /// How much of the hold is cut at random, as a fraction: each hold lasts between
    /// `hold * (1 - jitter)` and `hold`, so clients that reconnected together (after a restart)
    /// do not all time out and reconnect together again.
    ///
    /// Default is 0.0 (no jitter).
    #[must_use]
    pub fn hold_jitter(mut self, fraction: f64) -> Self {
        self.settings.hold_jitter = fraction;
        self
    }

    define_shared_setters! {
        layer: LongPollLayer;

        /// The most polls this layer holds at once, over all its services; more are refused with
        /// `503 overloaded` and a `Retry-After` of 1 to 5 seconds.
        ///
        /// Default is no cap. The count is always kept: see [`LongPollLayer::parked_polls`].
        fn max_parked;

        /// The most polls held at once per key, where `key` extracts the key from the request head
        /// (a topic from the path, a tenant from a header); requests for which it returns `None` are
        /// not counted per key. More are refused like [`max_parked`](Self::max_parked) refuses them.
        ///
        /// # Examples
        ///
        /// ```
        /// use tower_push::LongPollLayer;
        ///
        /// let layer = LongPollLayer::builder()
        ///     .max_parked(10_000)
        ///     .max_parked_per_key(1_000, |parts| {
        ///         parts.uri.path().strip_prefix("/topics/").map(str::to_owned)
        ///     })
        ///     .build()?;
        /// # let _ = layer;
        /// # Ok::<(), tower_push::ConfigError>(())
        /// ```
        ///
        /// Default is no cap per key.
        fn max_parked_per_key;

        /// The shortest idle timeout between this server and its clients (nginx's
        /// `proxy_read_timeout`, a load balancer's idle timeout).
        ///
        /// [`build`](Self::build) then refuses a hold that is not safely below it: the hold may be at
        /// most the idle timeout less a tenth of it, and less at least one second
        /// (54 seconds under a 60 second idle timeout).
        ///
        /// Default is none declared.
        fn proxy_idle_timeout;
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
        self.settings.supersede = Some(KeyFn::new(client));
        self
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// - [`ConfigError::HoldNotBelowProxyIdle`] if the hold is not safely below the declared
    ///   proxy idle timeout;
    /// - [`ConfigError::ZeroDuration`] for a zero hold timeout;
    /// - [`ConfigError::ZeroCount`] for zero maximum events, bytes or head bytes, or a zero cap;
    /// - [`ConfigError::InvalidJitter`] for a hold jitter outside `0.0..=1.0`;
    /// - [`ConfigError::InvalidParamName`] for a query parameter name that is empty or would need
    ///   percent-encoding.
    pub fn build(self) -> Result<LongPollLayer<F>, ConfigError> {
        check::hold(self.settings.hold, self.shared.proxy_idle)?;
        check::fraction("hold jitter", self.settings.hold_jitter)?;
        let config = Config {
            pipeline: Arc::new(self.shared.build(
                Kind::LongPoll,
                ["max parked", "max parked per key"],
                Some(self.settings.hold),
            )?),
            hold: self.settings.hold,
            hold_jitter: self.settings.hold_jitter,
            supersede: self
                .settings
                .supersede
                .map(|key| Arc::new(Supersede::new(key))),
        };
        Ok(LongPollLayer {
            config: Arc::new(config),
            format: self.format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
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
        assert_eq!(config.hold, Duration::from_secs(25));
        assert_eq!(config.hold_jitter, 0.0);
        assert!(config.supersede.is_none(), "one poll per client is off");
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
}
