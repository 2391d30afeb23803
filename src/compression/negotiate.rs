//! Reading `Accept-Encoding` (RFC 9110, section 12.5.3).

use http::header::ACCEPT_ENCODING;
use http::HeaderMap;

use super::Coding;

/// What a request's `Accept-Encoding` lets an answer be written in, among the codings offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Choice {
    /// No coding: the header is absent, malformed, prefers identity, or accepts none offered.
    Identity,
    /// A coding the client accepts, preferred over identity or tied with it.
    Coding {
        coding: Coding,
        /// Identity is refused (`identity;q=0`, or `*;q=0` without `identity`): the answer is
        /// compressed whatever its size.
        required: bool,
    },
}

/// The weights a request gives, in thousandths: `None` for a coding it does not name.
#[derive(Default)]
struct Weights {
    codings: [Option<u16>; Coding::ALL.len()],
    identity: Option<u16>,
    any: Option<u16>,
}

/// Chooses among `offered` (in the server's order of preference, which breaks ties) what the
/// `Accept-Encoding` fields of `headers` accept. A malformed field falls back to identity: the
/// client gets a readable answer, never an error.
pub(crate) fn negotiate(headers: &HeaderMap, offered: &[Coding]) -> Choice {
    let mut fields = headers.get_all(ACCEPT_ENCODING).iter().peekable();
    if fields.peek().is_none() {
        return Choice::Identity;
    }
    let mut weights = Weights::default();
    for field in fields {
        let Ok(field) = field.to_str() else {
            return Choice::Identity;
        };
        if parse(field, &mut weights).is_none() {
            return Choice::Identity;
        }
    }
    let weight = |coding: Coding| weights.codings[coding as usize].or(weights.any);
    let Some((coding, q)) = offered
        .iter()
        .filter_map(|&coding| Some((coding, weight(coding)?)))
        .filter(|&(_, q)| q > 0)
        // The first of the highest: `max_by_key` would keep the last.
        .fold(
            None,
            |best: Option<(Coding, u16)>, (coding, q)| match best {
                Some((_, top)) if top >= q => best,
                _ => Some((coding, q)),
            },
        )
    else {
        return Choice::Identity;
    };
    let identity = weights
        .identity
        .or(weights.any.filter(|&q| q == 0))
        .unwrap_or(1);
    match weights.identity {
        Some(identity) if identity > q => Choice::Identity,
        _ => Choice::Coding {
            coding,
            required: identity == 0,
        },
    }
}

/// Reads one field's list into `weights`; `None` when it is malformed.
fn parse(field: &str, weights: &mut Weights) -> Option<()> {
    // Empty list elements are allowed ("gzip, , br"), as RFC 9110 section 5.6.1 asks.
    for element in field.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let mut parts = element.split(';').map(str::trim);
        let token = parts.next()?;
        if token.is_empty() || !token.bytes().all(is_tchar) {
            return None;
        }
        let mut q = 1000;
        for param in parts {
            let (name, value) = param.split_once('=')?;
            if name.eq_ignore_ascii_case("q") {
                q = qvalue(value)?;
            } else if name.is_empty() || !name.bytes().all(is_tchar) {
                return None;
            }
        }
        let slot = if token == "*" {
            &mut weights.any
        } else if token.eq_ignore_ascii_case("identity") {
            &mut weights.identity
        } else if let Some(coding) = Coding::from_token(token) {
            &mut weights.codings[coding as usize]
        } else {
            // A coding this crate does not write: nothing to record.
            continue;
        };
        // A coding named twice keeps its highest weight.
        *slot = Some(slot.map_or(q, |old: u16| old.max(q)));
    }
    Some(())
}

/// A `qvalue`: `0`, `1`, or a fraction with at most three decimals; in thousandths.
fn qvalue(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, digit| n * 10 + u16::from(digit - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// A token character (RFC 9110, section 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// An order of preference other than the default, to tell the server's order apart.
    const ALL: [Coding; 4] = [Coding::Zstd, Coding::Brotli, Coding::Gzip, Coding::Deflate];

    fn choose(fields: &[&str], offered: &[Coding]) -> Choice {
        let mut headers = HeaderMap::new();
        for field in fields {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_str(field).unwrap());
        }
        negotiate(&headers, offered)
    }

    fn coding(coding: Coding) -> Choice {
        Choice::Coding {
            coding,
            required: false,
        }
    }

    #[test]
    fn no_header_or_nothing_offered_is_identity() {
        assert_eq!(choose(&[], &ALL), Choice::Identity);
        assert_eq!(choose(&["gzip"], &[]), Choice::Identity);
        assert_eq!(choose(&[""], &ALL), Choice::Identity);
    }

    #[test]
    fn the_servers_order_breaks_ties() {
        let chromium = "gzip, deflate, br, zstd";
        assert_eq!(choose(&[chromium], &ALL), coding(Coding::Zstd));
        assert_eq!(
            choose(&[chromium], &[Coding::Gzip, Coding::Brotli]),
            coding(Coding::Gzip)
        );
        assert_eq!(choose(&["br, gzip"], &ALL), coding(Coding::Brotli));
    }

    #[test]
    fn weights_choose_before_the_servers_order() {
        assert_eq!(
            choose(&["zstd;q=0.5, gzip;q=0.9, br;q=0.8"], &ALL),
            coding(Coding::Gzip)
        );
        assert_eq!(choose(&["gzip;q=0, br"], &ALL), coding(Coding::Brotli));
        assert_eq!(choose(&["gzip;q=0"], &ALL), Choice::Identity);
        // Fields are one list, in order.
        assert_eq!(
            choose(&["zstd;q=0.1", "deflate"], &ALL),
            coding(Coding::Deflate)
        );
    }

    #[test]
    fn identity_preferred_or_refused() {
        assert_eq!(choose(&["gzip;q=0.5, identity"], &ALL), Choice::Identity);
        assert_eq!(
            choose(&["gzip, identity;q=0.5"], &ALL),
            coding(Coding::Gzip)
        );
        let required = Choice::Coding {
            coding: Coding::Gzip,
            required: true,
        };
        assert_eq!(choose(&["gzip, identity;q=0"], &ALL), required);
        assert_eq!(choose(&["gzip, *;q=0"], &ALL), required);
        // A more specific entry for identity overrides the wildcard.
        assert_eq!(
            choose(&["gzip, *;q=0, identity"], &ALL),
            coding(Coding::Gzip)
        );
        // Nothing acceptable: identity anyway, rather than an error.
        assert_eq!(choose(&["identity;q=0"], &ALL), Choice::Identity);
        assert_eq!(choose(&["*;q=0"], &ALL), Choice::Identity);
    }

    #[test]
    fn the_wildcard_stands_for_every_coding_not_named() {
        assert_eq!(choose(&["*"], &ALL), coding(Coding::Zstd));
        assert_eq!(choose(&["zstd;q=0, *"], &ALL), coding(Coding::Brotli));
        assert_eq!(choose(&["*;q=0.2, gzip;q=0.3"], &ALL), coding(Coding::Gzip));
    }

    #[test]
    fn tokens_and_parameters_are_case_insensitive_and_aliased() {
        assert_eq!(choose(&["GZIP;Q=1"], &ALL), coding(Coding::Gzip));
        assert_eq!(choose(&["x-gzip"], &ALL), coding(Coding::Gzip));
        assert_eq!(choose(&["BR ; q=0.001"], &ALL), coding(Coding::Brotli));
        assert_eq!(choose(&["compress, gzip"], &ALL), coding(Coding::Gzip));
    }

    #[test]
    fn malformed_fields_fall_back_to_identity() {
        for field in [
            "gzip;q=2",
            "gzip;q=1.5",
            "gzip;q=0.1234",
            "gzip;q=",
            "gzip;q=abc",
            "gzip;q=-0",
            "gzip;q",
            "gz ip",
            "gzip;=1",
            ";q=1",
            "gzip\"",
        ] {
            assert_eq!(choose(&[field], &ALL), Choice::Identity, "{field}");
        }
        // One malformed field spoils the list.
        assert_eq!(choose(&["gzip", "br;q=9"], &ALL), Choice::Identity);
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT_ENCODING,
            HeaderValue::from_bytes(b"gzip\xff").unwrap(),
        );
        assert_eq!(negotiate(&headers, &ALL), Choice::Identity);
    }

    #[test]
    fn empty_elements_and_other_parameters_are_allowed() {
        assert_eq!(choose(&[", , gzip ,"], &ALL), coding(Coding::Gzip));
        assert_eq!(choose(&["gzip;level=9;q=0.5"], &ALL), coding(Coding::Gzip));
    }

    #[test]
    fn qvalues_read_in_thousandths() {
        assert_eq!(qvalue("0"), Some(0));
        assert_eq!(qvalue("0."), Some(0));
        assert_eq!(qvalue("0.5"), Some(500));
        assert_eq!(qvalue("0.125"), Some(125));
        assert_eq!(qvalue("1.000"), Some(1000));
        assert_eq!(qvalue("1.001"), None);
        assert_eq!(qvalue(".5"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_field_gives_an_answer(field in "[ -~]{0,64}") {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&field) {
                headers.insert(ACCEPT_ENCODING, value);
            }
            let _ = negotiate(&headers, &ALL);
        }
    }
}
