//! Cursors: the position a client sends back to resume a feed.
//!
//! A [`Cursor`] names a place in one log: the log's [`Epoch`] and a sequence number. It means
//! "everything up to and including this sequence number has been seen". Every event's id is the
//! cursor that points at it, so a client that sends back the id of the last event it processed
//! gets exactly what came after it; sequence number `0` points before the first event.
//!
//! The text form is `<epoch>-<seq>`: the epoch as exactly 16 lowercase hexadecimal digits, then
//! the sequence number in decimal without leading zeros, for example `00000000000000ff-42`. It is
//! URL-safe as is, and each cursor has exactly one text form, so ids can be compared as strings
//! for de-duplication. Clients should treat it as opaque.
//!
//! Cursors are totally ordered by `(epoch, seq)`. Only cursors of the same epoch are meaningfully
//! comparable: after a restart an in-memory log has a new epoch, and every cursor from before it
//! is answered with a resync, never compared by number.

use std::fmt;
use std::str::FromStr;

/// The identity of one incarnation of a log.
///
/// A log picks its epoch when it is created. A cursor from another epoch cannot be resumed: the
/// events it counted may not exist any more, or may carry other numbers. Sources answer such a
/// cursor with [`Outcome::Resync`](crate::source::Outcome::Resync), which the layers turn into an
/// explicit resync answer for the client.
///
/// # Examples
///
/// ```
/// use tower_push::Epoch;
///
/// let a = Epoch::random();
/// let b = Epoch::random();
/// assert_ne!(a, b);
/// assert_eq!(Epoch::new(255).to_string(), "00000000000000ff");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(u64);

impl Epoch {
    /// An epoch with the given value, for sources that derive it from somewhere stable (a stream's
    /// creation id, a database generation).
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// A fresh epoch that is, with overwhelming probability, different from every other one
    /// created before, in this process or another.
    ///
    /// It comes from the standard library's randomly seeded hasher, so it needs no random number
    /// generator.
    pub fn random() -> Self {
        Self(crate::random::u64())
    }

    /// The epoch of the part `name` (a topic) of a log with this epoch: a fixed, well-mixed
    /// function of both, the same in every process and version. Each topic of a log then has an
    /// epoch of its own, so a cursor of one topic is answered as another epoch on any other
    /// topic, never read as a position there.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::Epoch;
    ///
    /// let log = Epoch::new(7);
    /// assert_eq!(log.derive("news"), log.derive("news"));
    /// assert_ne!(log.derive("news"), log.derive("chat"));
    /// assert_ne!(log.derive("news"), Epoch::new(8).derive("news"));
    /// ```
    #[must_use]
    pub fn derive(self, name: &str) -> Self {
        // FNV-1a over the name, started from the epoch, then the splitmix64 finalizer so that
        // close inputs give unrelated outputs.
        let mut hash = 0xcbf2_9ce4_8422_2325 ^ self.0;
        for &byte in name.as_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let mut z = hash.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self(z ^ (z >> 31))
    }

    /// The epoch's numeric value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut hex = [0; 16];
        write_hex(self.0, &mut hex);
        f.write_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"))
    }
}

/// Writes `value` as 16 lowercase hexadecimal digits.
fn write_hex(value: u64, out: &mut [u8; 16]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = DIGITS[(value >> (60 - 4 * i)) as usize & 0xf];
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({self})")
    }
}

/// A position in a log: the epoch and the sequence number of the last event seen.
///
/// # Examples
///
/// ```
/// use tower_push::{Cursor, Epoch};
///
/// let cursor: Cursor = "00000000000000ff-42".parse()?;
/// assert_eq!(cursor, Cursor::new(Epoch::new(255), 42));
/// assert_eq!(cursor.to_string(), "00000000000000ff-42");
/// assert!(cursor < cursor.next());
///
/// // Malformed input is an error, never a panic.
/// assert!("ff-42".parse::<Cursor>().is_err());
/// # Ok::<(), tower_push::CursorError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    epoch: Epoch,
    seq: u64,
}

impl Cursor {
    /// The longest text a cursor parser looks at; longer input is rejected before any parsing.
    pub const MAX_LEN: usize = 64;

    /// A cursor at `seq` in `epoch`.
    pub const fn new(epoch: Epoch, seq: u64) -> Self {
        Self { epoch, seq }
    }

    /// The cursor before the first event of `epoch` (sequence 0): sending it asks for everything
    /// retained.
    pub const fn zero(epoch: Epoch) -> Self {
        Self { epoch, seq: 0 }
    }

    /// The epoch of the log this cursor belongs to.
    pub const fn epoch(self) -> Epoch {
        self.epoch
    }

    /// The sequence number of the last event seen (`0`: none).
    pub const fn seq(self) -> u64 {
        self.seq
    }

    /// The cursor of the event right after this one.
    ///
    /// # Panics
    ///
    /// Panics if the sequence number is `u64::MAX`; a log that publishes a million events per
    /// second reaches it after more than half a million years.
    #[must_use]
    pub const fn next(self) -> Self {
        match self.seq.checked_add(1) {
            Some(seq) => Self { seq, ..self },
            None => panic!("cursor sequence number overflow"),
        }
    }

    /// Parses a cursor from raw bytes, as found in a header or a percent-decoded query value.
    ///
    /// # Errors
    ///
    /// Returns a [`CursorError`] that says what is wrong with the input.
    pub fn parse_bytes(input: &[u8]) -> Result<Self, CursorError> {
        if input.is_empty() {
            return Err(CursorError::Empty);
        }
        if input.len() > Self::MAX_LEN {
            return Err(CursorError::TooLong { len: input.len() });
        }
        // Every cursor a server issued takes this single pass; the rest finds out what is wrong.
        if let Some(cursor) = parse_canonical(input) {
            return Ok(cursor);
        }
        let text = std::str::from_utf8(input).map_err(|_| CursorError::NotUtf8)?;
        let (epoch, seq) = text.split_once('-').ok_or(CursorError::MissingSeparator)?;
        Ok(Self {
            epoch: parse_epoch(epoch)?,
            seq: parse_seq(seq)?,
        })
    }
}

/// Parses the canonical text form in one pass, or gives up without saying why.
fn parse_canonical(input: &[u8]) -> Option<Cursor> {
    let (hex, rest) = input.split_at_checked(16)?;
    let digits = rest.strip_prefix(b"-")?;
    let mut epoch = 0u64;
    for &b in hex {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        epoch = epoch << 4 | u64::from(digit);
    }
    if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    let mut seq = 0u64;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        seq = seq.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(Cursor::new(Epoch(epoch), seq))
}

fn parse_epoch(text: &str) -> Result<Epoch, CursorError> {
    let canonical =
        text.len() == 16 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !canonical {
        return Err(CursorError::InvalidEpoch);
    }
    // Sixteen hexadecimal digits always fit in a u64.
    u64::from_str_radix(text, 16)
        .map(Epoch)
        .map_err(|_| CursorError::InvalidEpoch)
}

fn parse_seq(text: &str) -> Result<u64, CursorError> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return Err(CursorError::InvalidSequence);
    }
    text.parse().map_err(|_| CursorError::SequenceOverflow)
}

impl FromStr for Cursor {
    type Err = CursorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_bytes(s.as_bytes())
    }
}

/// The text form of a cursor, written on the stack: formatting cursors is on the path of every
/// answer, so it avoids the formatting machinery and any allocation.
pub(crate) struct CursorText {
    buf: [u8; 37],
    len: usize,
}

impl CursorText {
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("cursor text is ASCII")
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Cursor {
    /// The text form, without allocating.
    pub(crate) fn text(self) -> CursorText {
        let mut buf = [0; 37];
        let mut hex = [0; 16];
        write_hex(self.epoch.0, &mut hex);
        buf[..16].copy_from_slice(&hex);
        buf[16] = b'-';
        // The sequence number's digits, from the end of a scratch buffer.
        let mut digits = [0; 20];
        let mut start = digits.len();
        let mut seq = self.seq;
        loop {
            start -= 1;
            digits[start] = b'0' + (seq % 10) as u8;
            seq /= 10;
            if seq == 0 {
                break;
            }
        }
        let len = 17 + digits.len() - start;
        buf[17..len].copy_from_slice(&digits[start..]);
        CursorText { buf, len }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What a client sends back to get what comes next: the [`Cursor`] of a request that follows
/// one topic, or the composite cursor of a multiplexed request, which holds one position per
/// topic the request names.
///
/// Formats write it where a client reads its cursor (the `cursor` of an answer, `Push-Cursor`,
/// an SSE `id:`). A composite cursor is opaque to clients: its text is the positions of the
/// topics, in the order the request names them, joined by `.`; a composite of one topic is that
/// topic's cursor.
///
/// # Examples
///
/// ```
/// use tower_push::{Cursor, Epoch, CompositeCursor};
///
/// let cursor = Cursor::new(Epoch::new(1), 4);
/// let composite = CompositeCursor::from(cursor);
/// assert_eq!(composite.single(), Some(cursor));
/// assert_eq!(composite.to_string(), "0000000000000001-4");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CompositeCursor(CompositeRepr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum CompositeRepr {
    One(Cursor),
    Composite(std::sync::Arc<str>),
}

impl CompositeCursor {
    /// The composite cursor of `positions`, one per topic of a multiplexed request.
    pub(crate) fn composite(positions: impl IntoIterator<Item = Cursor>) -> Self {
        let mut text = String::new();
        for (i, cursor) in positions.into_iter().enumerate() {
            if i > 0 {
                text.push('.');
            }
            text.push_str(cursor.text().as_str());
        }
        Self(CompositeRepr::Composite(text.into()))
    }

    /// The cursor of its one topic, for a request that follows one topic; `None` for a
    /// composite cursor of several.
    pub fn single(&self) -> Option<Cursor> {
        match &self.0 {
            CompositeRepr::One(cursor) => Some(*cursor),
            CompositeRepr::Composite(_) => None,
        }
    }

    /// Whether this is the composite cursor of a multiplexed request.
    pub fn is_composite(&self) -> bool {
        matches!(self.0, CompositeRepr::Composite(_))
    }

    /// Appends the text form, which never needs escaping in JSON, a header or a URL.
    pub(crate) fn push(&self, out: &mut Vec<u8>) {
        match &self.0 {
            CompositeRepr::One(cursor) => out.extend_from_slice(cursor.text().as_bytes()),
            CompositeRepr::Composite(text) => out.extend_from_slice(text.as_bytes()),
        }
    }

    /// The text form as a header value (`Push-Cursor`).
    pub fn to_header_value(&self) -> http::HeaderValue {
        let value = match &self.0 {
            CompositeRepr::One(cursor) => http::HeaderValue::from_bytes(cursor.text().as_bytes()),
            CompositeRepr::Composite(text) => http::HeaderValue::from_str(text),
        };
        value.expect("cursor text is a valid header value")
    }
}

impl From<Cursor> for CompositeCursor {
    fn from(cursor: Cursor) -> Self {
        Self(CompositeRepr::One(cursor))
    }
}

impl PartialEq<Cursor> for CompositeCursor {
    fn eq(&self, other: &Cursor) -> bool {
        self.single() == Some(*other)
    }
}

impl fmt::Display for CompositeCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            CompositeRepr::One(cursor) => cursor.fmt(f),
            CompositeRepr::Composite(text) => f.write_str(text),
        }
    }
}

/// Parses the composite cursor of a request for `topics` topics: one cursor per topic, joined
/// by `.` (for one topic, that topic's cursor).
pub(crate) fn parse_composite(input: &[u8], topics: usize) -> Result<Vec<Cursor>, CursorError> {
    if input.is_empty() {
        return Err(CursorError::Empty);
    }
    // Each position is checked for its length by the cursor parser; the request head's bound
    // limits the whole.
    let positions = input.split(|&b| b == b'.').count();
    if positions != topics {
        return Err(CursorError::TopicCount { topics, positions });
    }
    input
        .split(|&b| b == b'.')
        .map(Cursor::parse_bytes)
        .collect()
}

/// Why a cursor could not be parsed.
///
/// The layers answer every one of these with `400 Bad Request` and the body
/// `{"error":"malformed_cursor","message":"<this error>"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CursorError {
    /// The cursor was present but empty.
    Empty,
    /// The cursor is longer than [`Cursor::MAX_LEN`] bytes.
    TooLong {
        /// The length of the input, in bytes.
        len: usize,
    },
    /// The cursor is not valid UTF-8.
    NotUtf8,
    /// The cursor has no `-` between its epoch and its sequence number.
    MissingSeparator,
    /// The epoch part is not exactly 16 lowercase hexadecimal digits.
    InvalidEpoch,
    /// The sequence number is not a decimal number without leading zeros.
    InvalidSequence,
    /// The sequence number does not fit in 64 bits.
    SequenceOverflow,
    /// The cursor was given more than once (a repeated query parameter).
    Repeated,
    /// A multiplexed request's composite cursor does not hold one position per topic the
    /// request names.
    TopicCount {
        /// How many topics the request names.
        topics: usize,
        /// How many positions the cursor holds.
        positions: usize,
    },
}

impl fmt::Display for CursorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("cursor is empty"),
            Self::TooLong { len } => write!(
                f,
                "cursor is {len} bytes long, at most {} are allowed",
                Cursor::MAX_LEN
            ),
            Self::NotUtf8 => f.write_str("cursor is not valid utf-8"),
            Self::MissingSeparator => f.write_str("cursor has no '-' between epoch and sequence"),
            Self::InvalidEpoch => {
                f.write_str("cursor epoch is not 16 lowercase hexadecimal digits")
            }
            Self::InvalidSequence => {
                f.write_str("cursor sequence is not a decimal number without leading zeros")
            }
            Self::SequenceOverflow => f.write_str("cursor sequence does not fit in 64 bits"),
            Self::Repeated => f.write_str("cursor is given more than once"),
            Self::TopicCount { topics, positions } => write!(
                f,
                "cursor holds {positions} positions for {topics} topics: send the cursor of a \
                 request for the same topics, in the same order"
            ),
        }
    }
}

impl std::error::Error for CursorError {}

/// `Debug` as `Type(text)` and `Serialize` as the text, for the types whose `Display` is the
/// text a client sends back.
macro_rules! debug_and_serialize_as_text {
    ($($ty:ident),*) => {$(
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($ty), "({})"), self)
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    )*};
}

debug_and_serialize_as_text!(Cursor, CompositeCursor);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_known_values() {
        let c = Cursor::new(Epoch::new(0xdead_beef), 0);
        assert_eq!(c.to_string(), "00000000deadbeef-0");
        assert_eq!("00000000deadbeef-0".parse::<Cursor>(), Ok(c));
        let max = Cursor::new(Epoch::new(u64::MAX), u64::MAX);
        assert_eq!(max.to_string(), "ffffffffffffffff-18446744073709551615");
        assert_eq!(max.to_string().parse::<Cursor>(), Ok(max));
    }

    #[test]
    fn rejects_malformed_input_with_specific_errors() {
        use CursorError::*;
        let cases: &[(&[u8], CursorError)] = &[
            (b"", Empty),
            (b"garbage", MissingSeparator),
            (b"00000000000000ff", MissingSeparator),
            (b"ff-1", InvalidEpoch),
            (b"00000000000000FF-1", InvalidEpoch),
            (b"000000000000000g-1", InvalidEpoch),
            (b"+0000000000000ff-1", InvalidEpoch),
            (b"00000000000000ff0-1", InvalidEpoch),
            (b"-1", InvalidEpoch),
            (b"00000000000000ff-", InvalidSequence),
            (b"00000000000000ff-01", InvalidSequence),
            (b"00000000000000ff-+1", InvalidSequence),
            (b"00000000000000ff--1", InvalidSequence),
            (b"00000000000000ff-1-2", InvalidSequence),
            (b"00000000000000ff- 1", InvalidSequence),
            (b"00000000000000ff-18446744073709551616", SequenceOverflow),
            (b"00000000000000ff-\xff", NotUtf8),
            (&[b'1'; 65], TooLong { len: 65 }),
        ];
        for (input, expected) in cases {
            assert_eq!(
                Cursor::parse_bytes(input).as_ref(),
                Err(expected),
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn orders_by_epoch_then_sequence() {
        let a = Cursor::new(Epoch::new(1), 100);
        let b = Cursor::new(Epoch::new(2), 0);
        assert!(a < b);
        assert!(Cursor::zero(Epoch::new(1)) < a);
        assert_eq!(a.next().seq(), 101);
    }

    #[test]
    fn serde_uses_the_text_form() {
        let c = Cursor::new(Epoch::new(7), 9);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, "\"0000000000000007-9\"");
        assert_eq!(serde_json::from_str::<Cursor>(&json).unwrap(), c);
        assert!(serde_json::from_str::<Cursor>("\"nope\"").is_err());
    }

    #[test]
    fn random_epochs_differ() {
        let epochs: std::collections::HashSet<_> = (0..1000).map(|_| Epoch::random()).collect();
        assert_eq!(epochs.len(), 1000);
    }

    proptest! {
        #[test]
        fn text_form_round_trips(epoch: u64, seq: u64) {
            let c = Cursor::new(Epoch::new(epoch), seq);
            let text = c.to_string();
            prop_assert!(text.len() <= Cursor::MAX_LEN);
            prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
            prop_assert_eq!(text.parse::<Cursor>(), Ok(c));
        }

        #[test]
        fn fast_text_matches_the_formatting_machinery(epoch: u64, seq: u64) {
            let text = Cursor::new(Epoch::new(epoch), seq).text();
            prop_assert_eq!(text.as_str(), format!("{epoch:016x}-{seq}"));
        }

        #[test]
        fn text_order_matches_cursor_order_within_an_epoch(epoch: u64, a: u64, b: u64) {
            let (ca, cb) = (Cursor::new(Epoch::new(epoch), a), Cursor::new(Epoch::new(epoch), b));
            prop_assert_eq!(ca.cmp(&cb), a.cmp(&b));
        }

        #[test]
        fn parsing_arbitrary_bytes_never_panics(input in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(c) = Cursor::parse_bytes(&input) {
                // Anything accepted is in canonical form.
                prop_assert_eq!(c.to_string().into_bytes(), input);
            }
        }

        #[test]
        fn parsing_cursor_like_strings_never_panics(input in "[0-9a-fA-F+-]{0,40}") {
            if let Ok(c) = input.parse::<Cursor>() {
                prop_assert_eq!(c.to_string(), input);
            }
        }
    }
}
