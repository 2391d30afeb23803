//! The error of the Redis source.

use std::fmt;

use crate::BoxError;

/// An error of the Redis event source: Redis could not be reached or answered out of time, its
/// data was not what this crate writes, or the source was configured wrongly.
///
/// The layers turn a failing subscription into `503 Service Unavailable`; publishers see the error
/// itself.
pub struct Error {
    kind: Kind,
    source: Option<BoxError>,
}

#[derive(Debug)]
enum Kind {
    Config(String),
    Unavailable,
    Refused,
    Timeout,
    Corrupt(String),
    NoRuntime,
}

impl Error {
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::with_message(Kind::Config(message.into()), None)
    }

    pub(crate) fn config_with(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::with_message(Kind::Config(message.into()), Some(source.into()))
    }

    /// An error of a kind that carries a message (a setting, a corrupt entry), with its source
    /// if it has one.
    fn with_message(kind: Kind, source: Option<BoxError>) -> Self {
        Self { kind, source }
    }

    pub(crate) fn redis(err: redis::RedisError) -> Self {
        let unreachable = err.is_io_error()
            || err.is_connection_refusal()
            || err.is_connection_dropped()
            || err.is_timeout();
        Self {
            kind: if unreachable {
                Kind::Unavailable
            } else {
                Kind::Refused
            },
            source: Some(Box::new(err)),
        }
    }

    pub(crate) fn timeout() -> Self {
        Self {
            kind: Kind::Timeout,
            source: None,
        }
    }

    pub(crate) fn corrupt(message: impl Into<String>) -> Self {
        Self::with_message(Kind::Corrupt(message.into()), None)
    }

    pub(crate) fn corrupt_with(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::with_message(Kind::Corrupt(message.into()), Some(source.into()))
    }

    pub(crate) fn no_runtime() -> Self {
        Self {
            kind: Kind::NoRuntime,
            source: None,
        }
    }

    /// Whether Redis could not be reached, lost the connection, or did not answer in time:
    /// retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self.kind, Kind::Unavailable | Kind::Timeout)
    }

    /// Whether Redis answered a command with an error (a stream written by another program, a
    /// server that does not understand a command, missing permissions).
    pub fn is_refused(&self) -> bool {
        matches!(self.kind, Kind::Refused)
    }

    /// Whether Redis did not answer within the source's timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::Timeout)
    }

    /// Whether a setting, a URL or a topic name was refused, or the server is too old.
    pub fn is_config(&self) -> bool {
        matches!(self.kind, Kind::Config(_))
    }

    /// Whether Redis holds data under the source's keys that this crate did not write (a stream
    /// entry without data, an id that is not `0-<seq>`, an epoch that is not 16 hex digits).
    pub fn is_corrupt(&self) -> bool {
        matches!(self.kind, Kind::Corrupt(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Config(message) => write!(f, "invalid redis setup: {message}"),
            Kind::Unavailable => f.write_str("redis is unavailable"),
            Kind::Refused => f.write_str("redis refused a command"),
            Kind::Timeout => f.write_str("redis did not answer in time"),
            Kind::Corrupt(message) => write!(f, "unexpected data in redis: {message}"),
            Kind::NoRuntime => f.write_str("the redis source needs a tokio runtime"),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Error");
        debug.field("kind", &self.kind);
        if let Some(source) = &self.source {
            debug.field("source", source);
        }
        debug.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn display_is_one_level_and_source_is_kept() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = Error::redis(redis::RedisError::from(io));
        assert_eq!(err.to_string(), "redis is unavailable");
        assert!(err.is_unavailable() && !err.is_config() && !err.is_corrupt());
        assert!(err.source().is_some());
        assert!(Error::timeout().is_unavailable() && Error::timeout().is_timeout());
        assert_eq!(
            Error::corrupt("entry 1-1 has no data").to_string(),
            "unexpected data in redis: entry 1-1 has no data"
        );
    }
}
