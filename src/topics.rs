//! Reading the topics of a multiplexed request: one request that follows several topics with one
//! composite cursor (see [`CompositeCursor`](crate::CompositeCursor)).

use std::fmt;
use std::sync::Arc;

use http::request::Parts;

use crate::request::{percent_decode, query_value};
use crate::ConfigError;

/// The longest topic name a multiplexed request may name, in bytes.
pub(crate) const MAX_TOPIC_LEN: usize = 128;

/// The most topics one multiplexed request may name, whatever a builder says: a parked request
/// holds one subscription per topic, and a composite cursor grows with each.
pub(crate) const MAX_TOPICS_LIMIT: usize = 256;

/// The query parameter that names a multiplexed request's topics, and how many it may name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopicsParam {
    name: Arc<str>,
    max: usize,
}

impl TopicsParam {
    pub(crate) const DEFAULT: &'static str = "topics";
    pub(crate) const DEFAULT_MAX: usize = 16;

    pub(crate) fn new(name: &str, max: usize) -> Result<Self, ConfigError> {
        crate::request::check_param_name(name)?;
        if max > MAX_TOPICS_LIMIT {
            return Err(ConfigError::TooManyTopics {
                max,
                limit: MAX_TOPICS_LIMIT,
            });
        }
        Ok(Self {
            name: Arc::from(name),
            max,
        })
    }

    /// How many topics one request may name; `0` when multiplexing is off.
    #[cfg(test)]
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// The topics the request names, in its order, or `None` if it names none (a request that
    /// follows one topic, or any request when multiplexing is off).
    pub(crate) fn topics(&self, parts: &Parts) -> Result<Option<Vec<Arc<str>>>, TopicsError> {
        if self.max == 0 {
            return Ok(None);
        }
        let Some(query) = parts.uri.query() else {
            return Ok(None);
        };
        let value = match query_value(query, &self.name) {
            Ok(Some(value)) => percent_decode(value),
            Ok(None) => return Ok(None),
            Err(()) => return Err(TopicsError::Repeated),
        };
        let text = std::str::from_utf8(&value).map_err(|_| TopicsError::NotUtf8)?;
        let mut topics: Vec<Arc<str>> = Vec::new();
        for name in text.split(',') {
            if topics.len() == self.max {
                let count = text.split(',').count();
                let max = self.max;
                return Err(TopicsError::TooMany { count, max });
            }
            check_topic(name)?;
            if topics.iter().any(|topic| **topic == *name) {
                return Err(TopicsError::Duplicate(name.to_owned()));
            }
            topics.push(Arc::from(name));
        }
        Ok(Some(topics))
    }
}

impl Default for TopicsParam {
    fn default() -> Self {
        Self {
            name: Arc::from(Self::DEFAULT),
            max: Self::DEFAULT_MAX,
        }
    }
}

/// Checks one topic name: 1 to 128 bytes of ASCII letters, digits and `-` `_` `.` `:` `~`.
fn check_topic(name: &str) -> Result<(), TopicsError> {
    let allowed =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'~');
    if name.is_empty() || name.len() > MAX_TOPIC_LEN || !name.bytes().all(allowed) {
        // Shown in the error, at most as long as a valid name.
        let shown = name.chars().take(MAX_TOPIC_LEN).collect();
        return Err(TopicsError::InvalidName(shown));
    }
    Ok(())
}

/// Why the topics of a multiplexed request are refused.
///
/// The layers answer every one of these with `400 Bad Request` and the body
/// `{"error":"<code>","message":"<this error>"}`, where the code is
/// [`code`](TopicsError::code): `too_many_topics` for [`TooMany`](TopicsError::TooMany),
/// `invalid_topics` otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicsError {
    /// The request names more topics than the layer follows on one request.
    TooMany {
        /// How many topics the request names.
        count: usize,
        /// The most the layer allows (its builder's `max_topics_per_request`).
        max: usize,
    },
    /// A topic name is empty, longer than 128 bytes, or holds a character other than ASCII
    /// letters, digits and `-` `_` `.` `:` `~` (a name with `,` would read as two).
    InvalidName(String),
    /// The request names a topic twice.
    Duplicate(String),
    /// The topics parameter is given more than once.
    Repeated,
    /// The topics parameter is not valid UTF-8.
    NotUtf8,
}

impl TopicsError {
    /// The machine-readable code of this error: `too_many_topics` or `invalid_topics`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooMany { .. } => "too_many_topics",
            Self::InvalidName(_) | Self::Duplicate(_) | Self::Repeated | Self::NotUtf8 => {
                "invalid_topics"
            }
        }
    }
}

impl fmt::Display for TopicsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooMany { count, max } => {
                write!(
                    f,
                    "request names {count} topics, at most {max} are followed at once"
                )
            }
            Self::InvalidName(name) => write!(
                f,
                "topic {name:?} is not 1 to {MAX_TOPIC_LEN} ASCII letters, digits or -_.:~"
            ),
            Self::Duplicate(name) => write!(f, "topic {name:?} is named twice"),
            Self::Repeated => f.write_str("topics are given more than once"),
            Self::NotUtf8 => f.write_str("topics are not valid utf-8"),
        }
    }
}

impl std::error::Error for TopicsError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(param: &TopicsParam, uri: &str) -> Result<Option<Vec<String>>, TopicsError> {
        let parts = http::Request::get(uri).body(()).unwrap().into_parts().0;
        param
            .topics(&parts)
            .map(|topics| topics.map(|t| t.iter().map(|t| t.to_string()).collect()))
    }

    #[test]
    fn reads_names_in_order_and_refuses_what_is_ambiguous() {
        let param = TopicsParam::default();
        assert_eq!(param.max(), 16);
        assert_eq!(read(&param, "/poll"), Ok(None));
        assert_eq!(read(&param, "/poll?after=x"), Ok(None));
        assert_eq!(
            read(&param, "/poll?topics=b,a,c.d"),
            Ok(Some(vec!["b".into(), "a".into(), "c.d".into()]))
        );
        assert_eq!(
            read(&param, "/poll?topics=a%2Cb"),
            Ok(Some(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            read(&param, "/poll?topics=a,"),
            Err(TopicsError::InvalidName(String::new()))
        );
        assert_eq!(
            read(&param, "/poll?topics="),
            Err(TopicsError::InvalidName(String::new()))
        );
        assert_eq!(
            read(&param, "/poll?topics=a%20b"),
            Err(TopicsError::InvalidName("a b".into()))
        );
        assert_eq!(
            read(&param, "/poll?topics=a,b,a"),
            Err(TopicsError::Duplicate("a".into()))
        );
        assert_eq!(
            read(&param, "/poll?topics=a&topics=b"),
            Err(TopicsError::Repeated)
        );
        assert_eq!(read(&param, "/poll?topics=%FF"), Err(TopicsError::NotUtf8));
        let long = "x".repeat(129);
        assert!(matches!(
            read(&param, &format!("/poll?topics={long}")),
            Err(TopicsError::InvalidName(name)) if name.len() == 128
        ));
        let many: Vec<String> = (0..17).map(|i| format!("t{i}")).collect();
        assert_eq!(
            read(&param, &format!("/poll?topics={}", many.join(","))),
            Err(TopicsError::TooMany { count: 17, max: 16 })
        );
    }

    #[test]
    fn zero_turns_multiplexing_off_and_the_limit_is_checked() {
        let off = TopicsParam::new("topics", 0).unwrap();
        assert_eq!(read(&off, "/poll?topics=a,b"), Ok(None));
        assert!(TopicsParam::new("topics", 257).is_err());
        assert!(TopicsParam::new("a b", 4).is_err());
        let custom = TopicsParam::new("feeds", 2).unwrap();
        assert_eq!(
            read(&custom, "/poll?feeds=a,b"),
            Ok(Some(vec!["a".into(), "b".into()]))
        );
    }
}
