//! Offsets: positions in a stream, as the protocol writes them.

use std::fmt;

/// A position in a stream: the number of appends before it, written as 16 digits, `_`, 16
/// digits (`0000000000000000_0000000000000003` is the position after the third append).
///
/// Offsets sort as text in the same order as their values, and only ever fall between appends.
/// Forks share the offset space of the stream they were forked from.
///
/// # Examples
///
/// ```
/// use tower_push::durable::Offset;
///
/// let offset: Offset = "0000000000000000_0000000000000003".parse()?;
/// assert_eq!(offset, Offset::new(3));
/// assert_eq!(offset.to_string(), "0000000000000000_0000000000000003");
/// assert!("0_3".parse::<Offset>().is_err());
/// # Ok::<(), tower_push::durable::InvalidOffset>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(u64);

const LOW: u64 = 10_000_000_000_000_000;

impl Offset {
    /// The position before any append.
    pub const ZERO: Offset = Offset(0);

    /// The position after `appends` appends.
    pub const fn new(appends: u64) -> Self {
        Self(appends)
    }

    /// The number of appends before the position.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The next position.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// The offset as a header value (`Stream-Next-Offset`).
    pub(crate) fn to_header_value(self) -> http::HeaderValue {
        http::HeaderValue::from_bytes(&self.text()).expect("digits and '_'")
    }

    /// The offset's 33 characters, written without the formatting machinery: every answer
    /// carries one (`write!` with widths cost 3,400 instructions of an append's 47,000).
    fn text(self) -> [u8; 33] {
        let mut text = [b'0'; 33];
        text[16] = b'_';
        let (mut high, mut low) = (self.0 / LOW, self.0 % LOW);
        for digit in text[..16].iter_mut().rev() {
            *digit = b'0' + (high % 10) as u8;
            high /= 10;
        }
        for digit in text[17..].iter_mut().rev() {
            *digit = b'0' + (low % 10) as u8;
            low /= 10;
        }
        text
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.text();
        f.write_str(std::str::from_utf8(&text).expect("digits and '_'"))
    }
}

impl std::str::FromStr for Offset {
    type Err = InvalidOffset;

    fn from_str(s: &str) -> Result<Self, InvalidOffset> {
        let bytes = s.as_bytes();
        let digits = |part: &[u8]| part.iter().all(u8::is_ascii_digit);
        if bytes.len() != 33 || bytes[16] != b'_' || !digits(&bytes[..16]) || !digits(&bytes[17..])
        {
            return Err(InvalidOffset);
        }
        let number = |part: &str| part.parse::<u64>().map_err(|_| InvalidOffset);
        let (high, low) = (number(&s[..16])?, number(&s[17..])?);
        // Beyond every tail this store can reach: kept as the largest offset, never an error.
        Ok(Self(high.saturating_mul(LOW).saturating_add(low)))
    }
}

/// Text that is not an offset (16 digits, `_`, 16 digits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidOffset;

impl fmt::Display for InvalidOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("offset is not 16 digits, '_', 16 digits")
    }
}

impl std::error::Error for InvalidOffset {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_everything_but_the_grammar() {
        for bad in [
            "",
            "-1",
            "now",
            "0_0",
            "0000000000000000_000000000000000",
            "0000000000000000-0000000000000000",
            "0000000000000000_000000000000000a",
            " 000000000000000_0000000000000000",
            "0000000000000000_0000000000000000 ",
            "+000000000000000_0000000000000000",
        ] {
            assert_eq!(bad.parse::<Offset>(), Err(InvalidOffset), "{bad:?}");
        }
        let last = Offset::new(u64::MAX);
        assert_eq!(last.to_string(), "0000000000001844_6744073709551615");
        let max: Offset = "9999999999999999_9999999999999999".parse().unwrap();
        assert!(max > Offset::new(u64::MAX / 2));
    }

    proptest! {
        #[test]
        fn round_trips_and_sorts_as_text(a in 0u64..LOW * 100, b in 0u64..LOW * 100) {
            let (x, y) = (Offset::new(a), Offset::new(b));
            prop_assert_eq!(x.to_string(), format!("{:016}_{:016}", a / LOW, a % LOW));
            let text = x.to_string();
            prop_assert_eq!(x.to_header_value(), text.as_str());
            prop_assert_eq!(x.to_string().parse::<Offset>(), Ok(x));
            prop_assert_eq!(x.cmp(&y), x.to_string().cmp(&y.to_string()));
        }
    }
}
