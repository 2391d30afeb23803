//! Settings: the ones both layers share, with their defaults and checks, and the error for
//! settings that cannot work.

use std::fmt;
use std::time::Duration;

use crate::follow::Pipeline;
use crate::limit::{KeyFn, Limits};
use crate::request::CursorParam;
use crate::source::Origin;
use crate::telemetry::Kind;
use crate::topics::TopicsParam;
use crate::Shutdown;

/// The settings both builders share, with their defaults. Each builder keeps one and documents
/// the setters in its own words; [`build`](Self::build) checks them once for both.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    /// The cap on held requests (parked polls, open streams) over all of a layer's services.
    pub(crate) max: Option<usize>,
    /// The cap per key, and how a request's key is found.
    pub(crate) max_per_key: Option<(usize, KeyFn)>,
    /// The shortest idle timeout between the server and its clients, if declared.
    pub(crate) proxy_idle: Option<Duration>,
    pub(crate) max_events: usize,
    /// The most bytes of event data one answer or frame carries (at least one event).
    pub(crate) max_answer_bytes: usize,
    /// The largest request head (URI and headers) a held request may keep.
    pub(crate) max_head_bytes: usize,
    /// The query parameter that carries the cursor.
    pub(crate) param: String,
    pub(crate) origin: Origin,
    pub(crate) shutdown: Option<Shutdown>,
    /// The window over which clients are told to spread their return after a shutdown.
    pub(crate) reconnect_window: Duration,
    /// The query parameter that names a multiplexed request's topics.
    pub(crate) topics_param: String,
    /// How many topics one multiplexed request may name; `0` turns multiplexing off.
    pub(crate) max_topics_per_request: usize,
    /// Who may read which topics, if anyone is checked.
    pub(crate) authorizer: Option<crate::authorize::Authorizer>,
    /// How often a held request checks again, if not the default.
    pub(crate) reauthorize_every: Option<Duration>,
    /// How answers are compressed, if they are.
    pub(crate) compression: Option<crate::compression::Compression>,
}

impl Shared {
    /// The defaults both builders document.
    pub(crate) fn new() -> Self {
        Self {
            max: None,
            max_per_key: None,
            proxy_idle: None,
            max_events: 256,
            max_answer_bytes: 256 * 1024,
            max_head_bytes: 32 * 1024,
            param: CursorParam::DEFAULT.to_owned(),
            origin: Origin::Head,
            shutdown: None,
            reconnect_window: Duration::from_secs(5),
            topics_param: TopicsParam::DEFAULT.to_owned(),
            max_topics_per_request: TopicsParam::DEFAULT_MAX,
            authorizer: None,
            reauthorize_every: None,
            compression: None,
        }
    }

    /// Checks the settings and builds the pipeline they configure for `kind`'s layer; `hold` is how long the layer holds a request at most (`None`: a
    /// stream, held until its lifetime ends), to know whether held requests must check their
    /// authorization again while they wait.
    pub(crate) fn build(self, kind: Kind, hold: Option<Duration>) -> Result<Pipeline, ConfigError> {
        check::at_least_one("max events", self.max_events)?;
        check::at_least_one("max answer bytes", self.max_answer_bytes)?;
        check::at_least_one("max head bytes", self.max_head_bytes)?;
        check::cap("max held", self.max)?;
        check::cap(
            "max held per key",
            self.max_per_key.as_ref().map(|(max, _)| *max),
        )?;
        let mut authorizer = self.authorizer;
        if let Some(every) = self.reauthorize_every {
            check::positive("reauthorize every", every)?;
            match &mut authorizer {
                Some(authorizer) => authorizer.every = every,
                None => return Err(ConfigError::ReauthorizeWithoutAuthorize),
            }
        }
        let recheck = authorizer
            .as_ref()
            .map(|a| a.every)
            .filter(|every| hold.is_none_or(|hold| hold > *every));
        let compression = self.compression.map(|c| c.check()).transpose()?;
        Ok(Pipeline {
            compression: compression
                .filter(|c| !c.codings.is_empty())
                .map(std::sync::Arc::new),
            authorizer,
            recheck,
            kind,
            limits: Limits::new(kind, self.max, self.max_per_key),
            max_events: self.max_events,
            max_answer_bytes: self.max_answer_bytes,
            max_head_bytes: self.max_head_bytes,
            param: CursorParam::new(&self.param)?,
            topics: TopicsParam::new(&self.topics_param, self.max_topics_per_request)?,
            origin: self.origin,
            shutdown: self.shutdown,
            reconnect_window: self.reconnect_window,
            shared_answer: std::sync::Mutex::default(),
            shared_frame: std::sync::Mutex::new(Vec::new()),
            no_head: std::sync::Arc::new(http::Request::new(()).into_parts().0),
        })
    }
}

/// A setting that would break push in production, refused when the configuration is built.
///
/// The message says what to change.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_push::LongPollLayer;
///
/// let err = LongPollLayer::builder()
///     .hold_timeout(Duration::from_secs(60))
///     .proxy_idle_timeout(Duration::from_secs(60))
///     .build()
///     .unwrap_err();
/// assert!(err.to_string().contains("hold timeout"));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The hold timeout is not safely below the declared proxy idle timeout: the proxy would cut
    /// held requests (a 502 or 504, or a reset) before the server answers them.
    HoldNotBelowProxyIdle {
        /// The configured hold timeout.
        hold: Duration,
        /// The declared proxy idle timeout.
        proxy_idle: Duration,
        /// The longest hold this proxy idle timeout allows.
        max_hold: Duration,
    },
    /// The heartbeat interval is not safely below the declared proxy idle timeout: the proxy
    /// would close quiet streams.
    HeartbeatNotBelowProxyIdle {
        /// The configured heartbeat interval.
        heartbeat: Duration,
        /// The declared proxy idle timeout.
        proxy_idle: Duration,
        /// The longest heartbeat interval this proxy idle timeout allows.
        max_heartbeat: Duration,
    },
    /// A jitter fraction outside `0.0..=1.0`.
    InvalidJitter {
        /// The name of the setting.
        setting: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// A duration that must be positive is zero.
    ZeroDuration {
        /// The name of the setting.
        setting: &'static str,
    },
    /// A count that must be positive is zero.
    ZeroCount {
        /// The name of the setting.
        setting: &'static str,
    },
    /// A query parameter name that is empty or would need percent-encoding.
    InvalidParamName {
        /// The rejected name.
        name: String,
    },
    /// More topics per multiplexed request than any layer follows at once.
    TooManyTopics {
        /// The configured maximum.
        max: usize,
        /// The highest maximum allowed.
        limit: usize,
    },
    /// `reauthorize_every` is set on a builder that authorizes nobody (no `authorize`).
    ReauthorizeWithoutAuthorize,
    /// A compression coding whose feature this build of the crate leaves out.
    CodingNotBuilt {
        /// The coding.
        coding: crate::compression::Coding,
    },
    /// A compression window outside
    /// [`MIN_WINDOW`](crate::compression::Compression::MIN_WINDOW)`..=`
    /// [`MAX_WINDOW`](crate::compression::Compression::MAX_WINDOW).
    CompressionWindow {
        /// The rejected window, in bytes.
        bytes: usize,
    },
}

impl ConfigError {
    /// The longest hold (or heartbeat interval) that is safe under a proxy idle timeout: a tenth
    /// of it, and at least one second, is left as margin for latency and slow writes.
    pub(crate) fn max_below(proxy_idle: Duration) -> Duration {
        let margin = (proxy_idle / 10).max(Duration::from_secs(1));
        proxy_idle.saturating_sub(margin)
    }
}

/// Checks shared by the builders; each returns the error that names `setting`.
pub(crate) mod check {
    use super::ConfigError;
    use std::time::Duration;

    pub(crate) fn positive(setting: &'static str, value: Duration) -> Result<(), ConfigError> {
        if value.is_zero() {
            return Err(ConfigError::ZeroDuration { setting });
        }
        Ok(())
    }

    pub(crate) fn at_least_one(setting: &'static str, value: usize) -> Result<(), ConfigError> {
        if value == 0 {
            return Err(ConfigError::ZeroCount { setting });
        }
        Ok(())
    }

    /// A cap, when set, is at least one.
    pub(crate) fn cap(setting: &'static str, value: Option<usize>) -> Result<(), ConfigError> {
        value.map_or(Ok(()), |value| at_least_one(setting, value))
    }

    pub(crate) fn fraction(setting: &'static str, value: f64) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&value) {
            return Err(ConfigError::InvalidJitter { setting, value });
        }
        Ok(())
    }

    /// The one rule both layers' intervals follow: when a proxy idle timeout is declared, the
    /// interval is at most [`ConfigError::max_below`] it; if not, the idle timeout and that
    /// most.
    pub(crate) fn below_proxy_idle(
        interval: Duration,
        proxy_idle: Option<Duration>,
    ) -> Result<(), (Duration, Duration)> {
        match proxy_idle.map(|idle| (idle, ConfigError::max_below(idle))) {
            Some((proxy_idle, max)) if interval > max => Err((proxy_idle, max)),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HoldNotBelowProxyIdle {
                hold,
                proxy_idle,
                max_hold,
            } => write!(
                f,
                "hold timeout of {hold:?} is not safely below the proxy idle timeout of \
                 {proxy_idle:?}: lower it to at most {max_hold:?}"
            ),
            Self::HeartbeatNotBelowProxyIdle {
                heartbeat,
                proxy_idle,
                max_heartbeat,
            } => write!(
                f,
                "heartbeat interval of {heartbeat:?} is not safely below the proxy idle timeout \
                 of {proxy_idle:?}: lower it to at most {max_heartbeat:?}"
            ),
            Self::InvalidJitter { setting, value } => {
                write!(f, "{setting} must be between 0.0 and 1.0, not {value}")
            }
            Self::ZeroDuration { setting } => write!(f, "{setting} must be greater than zero"),
            Self::ZeroCount { setting } => write!(f, "{setting} must be at least 1"),
            Self::InvalidParamName { name } => write!(
                f,
                "query parameter name {name:?} must be non-empty and use only letters, digits, \
                 '-', '_', '.' or '~'"
            ),
            Self::TooManyTopics { max, limit } => write!(
                f,
                "max topics per request of {max} is above the limit of {limit}: a parked request holds one \
                 subscription per topic"
            ),
            Self::ReauthorizeWithoutAuthorize => f.write_str(
                "reauthorize every is set, but nothing is authorized: set authorize as well",
            ),
            Self::CodingNotBuilt { coding } => write!(
                f,
                "compression coding {coding} is not built: enable the crate's feature \
                 compression-{feature}",
                feature = match coding {
                    crate::compression::Coding::Brotli => "br",
                    crate::compression::Coding::Zstd => "zstd",
                    _ => "gzip",
                }
            ),
            Self::CompressionWindow { bytes } => write!(
                f,
                "compression window of {bytes} bytes must be between {} and {} bytes",
                crate::compression::Compression::MIN_WINDOW,
                crate::compression::Compression::MAX_WINDOW,
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_is_a_tenth_and_at_least_a_second() {
        assert_eq!(
            ConfigError::max_below(Duration::from_secs(60)),
            Duration::from_secs(54)
        );
        assert_eq!(
            ConfigError::max_below(Duration::from_secs(3)),
            Duration::from_secs(2)
        );
        assert_eq!(
            ConfigError::max_below(Duration::from_millis(500)),
            Duration::ZERO
        );
    }
}
