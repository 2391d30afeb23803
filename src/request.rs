//! Reading a cursor from an HTTP request, shared by both layers.
//!
//! A request names its cursor in the `Last-Event-ID` header (what `EventSource` sends when it
//! reconnects) or in a query parameter (`after` by default). When both are present the header
//! wins: a reconnecting `EventSource` keeps the URL it was opened with, so its header is newer.
//! A cursor given twice in the same place (two parameters, two headers) is malformed. A request
//! without a cursor starts where its layer's [`Origin`] says.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::HeaderName;
use http::request::Parts;

use crate::source::{Origin, Position};
use crate::{ConfigError, Cursor, CursorError};

/// `Last-Event-ID`, the header of the SSE standard that carries the last id a client received.
pub(crate) const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// The name of the query parameter that carries the cursor; validated so that it never needs
/// percent-encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CursorParam(Arc<str>);

impl CursorParam {
    pub(crate) const DEFAULT: &'static str = "after";

    pub(crate) fn new(name: &str) -> Result<Self, ConfigError> {
        check_param_name(name)?;
        Ok(Self(Arc::from(name)))
    }

    /// The position a request asks for: its cursor, or `origin` if it names none.
    pub(crate) fn position(&self, parts: &Parts, origin: Origin) -> Result<Position, CursorError> {
        Ok(match self.cursor(parts)? {
            Some(cursor) => Position::After(cursor),
            None => origin.into(),
        })
    }

    /// The request's cursor, if it names one.
    pub(crate) fn cursor(&self, parts: &Parts) -> Result<Option<Cursor>, CursorError> {
        self.read(parts, Cursor::parse_bytes)
    }

    /// The positions of a multiplexed request for `topics` topics, one per topic, if it names a
    /// (composite) cursor.
    pub(crate) fn positions(
        &self,
        parts: &Parts,
        topics: usize,
    ) -> Result<Option<Vec<Cursor>>, CursorError> {
        self.read(parts, |text| crate::cursor::parse_composite(text, topics))
    }

    /// Reads the cursor's text from where the request names it, with `parse`.
    fn read<T>(
        &self,
        parts: &Parts,
        parse: impl FnOnce(&[u8]) -> Result<T, CursorError>,
    ) -> Result<Option<T>, CursorError> {
        let mut headers = parts.headers.get_all(LAST_EVENT_ID).iter();
        if let Some(value) = headers.next() {
            if headers.next().is_some() {
                return Err(CursorError::Repeated);
            }
            return parse(value.as_bytes()).map(Some);
        }
        let Some(query) = parts.uri.query() else {
            return Ok(None);
        };
        match query_value(query, &self.0) {
            Ok(found) => found.map(|value| parse(&percent_decode(value))).transpose(),
            Err(()) => Err(CursorError::Repeated),
        }
    }
}

/// Checks that a query parameter's name never needs percent-encoding.
pub(crate) fn check_param_name(name: &str) -> Result<(), ConfigError> {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
    if name.is_empty() || !name.bytes().all(unreserved) {
        return Err(ConfigError::InvalidParamName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// The raw value of the query parameter `name` in `query`, or `Err` if it is given more than
/// once.
pub(crate) fn query_value<'a>(query: &'a str, name: &str) -> Result<Option<&'a str>, ()> {
    let mut found = None;
    for (key, value) in query_pairs(query) {
        // Names are decoded like values: `aft%65r` is `after`, and ignoring it would start the
        // request at its origin and silently skip events.
        if *percent_decode(key) != *name.as_bytes() {
            continue;
        }
        if found.is_some() {
            return Err(());
        }
        found = Some(value);
    }
    Ok(found)
}

/// The `name=value` pairs of a query, raw; a pair without `=` has an empty value.
///
/// By bytes, as every request with a query goes through it: `str::split` and `split_once`
/// set up a searcher per call, and a split by a closure decodes characters.
pub(crate) fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = Some(query);
    std::iter::from_fn(move || {
        let text = rest?;
        // `&` and `=` are ASCII: every cut is on a character boundary.
        let pair = match text.bytes().position(|b| b == b'&') {
            Some(at) => {
                rest = Some(&text[at + 1..]);
                &text[..at]
            }
            None => {
                rest = None;
                text
            }
        };
        Some(match pair.bytes().position(|b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, ""),
        })
    })
}

impl Default for CursorParam {
    fn default() -> Self {
        Self(Arc::from(Self::DEFAULT))
    }
}

/// Decodes `%XX` escapes and `+` (a space in form encoding). Invalid escapes are kept as they
/// are, for the cursor parser to reject.
pub(crate) fn percent_decode(value: &str) -> Cow<'_, [u8]> {
    if !value.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(value.as_bytes());
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        match bytes[i] {
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Epoch;
    use proptest::prelude::*;

    fn parts(uri: &str, last_event_ids: &[&[u8]]) -> Parts {
        let mut builder = http::Request::builder().uri(uri);
        for id in last_event_ids {
            builder = builder.header(LAST_EVENT_ID, http::HeaderValue::from_bytes(id).unwrap());
        }
        builder.body(()).unwrap().into_parts().0
    }

    const C: &str = "0000000000000001-5";

    fn cursor(seq: u64) -> Cursor {
        Cursor::new(Epoch::new(1), seq)
    }

    #[test]
    fn reads_the_query_parameter() {
        let param = CursorParam::default();
        let read = |uri: &str| param.cursor(&parts(uri, &[]));
        assert_eq!(read("/poll"), Ok(None));
        assert_eq!(read("/poll?"), Ok(None));
        assert_eq!(read("/poll?x=1&afterx=2"), Ok(None));
        assert_eq!(read(&format!("/poll?after={C}")), Ok(Some(cursor(5))));
        assert_eq!(read(&format!("/poll?a=b&after={C}&c")), Ok(Some(cursor(5))));
        assert_eq!(
            read("/poll?after=0000000000000001%2D5"),
            Ok(Some(cursor(5)))
        );
        assert_eq!(read("/poll?after"), Err(CursorError::Empty));
        assert_eq!(read("/poll?after="), Err(CursorError::Empty));
        assert_eq!(
            read(&format!("/poll?after={C}&after={C}")),
            Err(CursorError::Repeated)
        );
        assert_eq!(read(&format!("/poll?aft%65r={C}")), Ok(Some(cursor(5))));
        assert_eq!(read(&format!("/poll?%61fter={C}")), Ok(Some(cursor(5))));
        assert_eq!(
            read(&format!("/poll?after={C}&aft%65r={C}")),
            Err(CursorError::Repeated),
            "the same name, however it is spelled, twice"
        );
        assert_eq!(read(&format!("/poll?after%3D={C}")), Ok(None));
        assert_eq!(read("/poll?after=%FF"), Err(CursorError::NotUtf8));
        assert_eq!(read("/poll?after=%zz"), Err(CursorError::MissingSeparator));
        assert_eq!(
            read("/poll?after=0000000000000001-5+"),
            Err(CursorError::InvalidSequence)
        );
    }

    #[test]
    fn last_event_id_wins_over_the_query() {
        let param = CursorParam::default();
        let other = "0000000000000001-9";
        let read = |uri: &str, ids: &[&[u8]]| param.cursor(&parts(uri, ids));
        assert_eq!(
            read(&format!("/s?after={C}"), &[other.as_bytes()]),
            Ok(Some(cursor(9)))
        );
        assert_eq!(
            read("/s", &[other.as_bytes(), C.as_bytes()]),
            Err(CursorError::Repeated)
        );
        assert_eq!(read("/s", &[b"\xff\xfe"]), Err(CursorError::NotUtf8));
        assert_eq!(read("/s", &[b""]), Err(CursorError::Empty));
    }

    #[test]
    fn custom_names_and_start_positions() {
        let param = CursorParam::new("offset").unwrap();
        assert_eq!(
            param.position(&parts(&format!("/?offset={C}"), &[]), Origin::Head),
            Ok(Position::After(cursor(5)))
        );
        assert_eq!(
            param.position(&parts(&format!("/?after={C}"), &[]), Origin::Oldest),
            Ok(Position::Oldest)
        );
        for bad in ["", "a b", "a&b", "a=b", "caf\u{e9}"] {
            assert!(CursorParam::new(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_queries_never_panic(query in "[a-z%0-9A-F&=+-]{0,60}") {
            let uri = format!("/poll?{query}");
            if let Ok(uri) = uri.parse::<http::Uri>() {
                let parts = http::Request::builder().uri(uri).body(()).unwrap().into_parts().0;
                let _ = CursorParam::default().cursor(&parts);
            }
        }

        #[test]
        fn query_pairs_cut_as_split_does(query in "[a-z\u{e9}\u{1F600}&=%]{0,40}") {
            let by_split: Vec<(&str, &str)> = query
                .split('&')
                .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
                .collect();
            prop_assert_eq!(query_pairs(&query).collect::<Vec<_>>(), by_split);
        }

        #[test]
        fn percent_decoding_inverts_encoding(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let encoded: String = bytes.iter().map(|b| format!("%{b:02X}")).collect();
            prop_assert_eq!(percent_decode(&encoded).into_owned(), bytes);
        }
    }
}
