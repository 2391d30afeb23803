//! The query parameters of a read: `offset`, `live`, `cursor`.

use std::borrow::Cow;

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
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
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

/// Decodes `%XX` escapes and `+`; invalid escapes stay as they are.
fn decode(text: &str) -> Cow<'_, [u8]> {
    if !text.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(text.as_bytes());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16)).map(|d| d as u8);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                if let (Some(hi), Some(lo)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
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

    #[test]
    fn reads_repeated_and_encoded_parameters() {
        let q = Query::parse(Some("foo=bar&offset=a%2Cb&off%73et=&live=sse&cursor=12"));
        assert_eq!(q.offsets, vec![b"a,b".to_vec(), b"".to_vec()]);
        assert_eq!(q.live.as_deref(), Some(&b"sse"[..]));
        assert_eq!(q.cursor.as_deref(), Some(&b"12"[..]));
        assert!(Query::parse(None).offsets.is_empty());
    }
}
