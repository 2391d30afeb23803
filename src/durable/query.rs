//! The query parameters of a read: `offset`, `live`, `cursor`.

use crate::request::{percent_decode as decode, query_pairs};

/// The parameters the protocol reads; any other is ignored.
#[derive(Debug, Default)]
pub(crate) struct Query {
    /// Every `offset` value, decoded.
    pub(crate) offsets: Vec<Vec<u8>>,
    pub(crate) live: Option<Vec<u8>>,
    pub(crate) cursor: Option<Vec<u8>>,
}

impl Query {
    pub(crate) fn parse(query: Option<&str>) -> Self {
        let mut parsed = Self::default();
        // An empty pair (`a=1&&b=2`) has an empty name, which names nothing.
        for (key, value) in query_pairs(query.unwrap_or_default()) {
            let value = decode(value).into_owned();
            match &*decode(key) {
                b"offset" => parsed.offsets.push(value),
                b"live" => parsed.live = Some(value),
                b"cursor" => parsed.cursor = Some(value),
                _ => {}
            }
        }
        parsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_repeated_and_encoded_parameters() {
        let q = Query::parse(Some("foo=bar&offset=a%2Cb&off%73et=&live=sse&cursor=12"));
        assert_eq!(q.offsets, vec![b"a,b".to_vec(), b"".to_vec()]);
        assert_eq!(q.live.as_deref(), Some(&b"sse"[..]));
        assert_eq!(q.cursor.as_deref(), Some(&b"12"[..]));
        assert!(Query::parse(None).offsets.is_empty());
    }
}
