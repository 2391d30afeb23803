//! Events and their JSON payloads.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::{CompositeCursor, Cursor};

/// The payload of an event: one JSON value, checked once when it is made.
///
/// Every wire format embeds the payload as is (`"data":<payload>` in JSON, one line in NDJSON), so
/// a payload that is not valid JSON would corrupt every response that carries it. `EventData` is
/// the proof that it is valid. Raw line breaks between JSON tokens are replaced by spaces when the
/// payload is made, so a payload is always a single line; nothing else about it changes.
///
/// Cloning is cheap: the bytes are reference counted.
///
/// A payload may also hold raw bytes ([`EventData::from_bytes`]), for formats of protocols that
/// carry bytes rather than JSON. The built-in JSON, NDJSON and SSE formats write a raw payload as
/// a JSON string of its text (invalid UTF-8 replaced by U+FFFD), so that it never breaks their
/// framing: see [`EventData::to_json`].
///
/// # Examples
///
/// ```
/// use tower_push::EventData;
///
/// let data = EventData::from_json(&b"{\"n\":\n1}"[..])?;
/// assert_eq!(data.as_bytes(), b"{\"n\": 1}");
///
/// assert!(EventData::from_json(&b"{\"n\":"[..]).is_err());
/// # Ok::<(), tower_push::InvalidJson>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EventData(Bytes, Kind);

/// What the bytes of an [`EventData`] are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    /// One checked, single-line JSON value.
    Json,
    /// Bytes as they are.
    Raw,
}

impl EventData {
    /// Checks that `json` is one valid JSON value and keeps a copy of it.
    ///
    /// The copy has storage of its own, exactly the size of the text, so an event never keeps a
    /// larger buffer alive (a request body shares the connection's read buffer).
    ///
    /// # Errors
    ///
    /// Returns [`InvalidJson`] with the parser's position and reason if it is not.
    pub fn from_json(json: impl Into<Bytes>) -> Result<Self, InvalidJson> {
        let json = json.into();
        // `from_slice` does not check the UTF-8 of strings it skips, so check it first.
        let text = std::str::from_utf8(&json)
            .map_err(|err| InvalidJson(format!("not utf-8 at byte {}", err.valid_up_to())))?;
        // Parsed into a value, not merely skipped: that also refuses numbers no JSON parser can
        // represent (`1e999`), which would make every answer carrying the event unreadable
        // to strict clients.
        if let Err(err) = serde_json::from_str::<serde_json::Value>(text) {
            return Err(InvalidJson(err.to_string()));
        }
        if json.iter().any(|&b| b == b'\n' || b == b'\r') {
            // In valid JSON a raw line break can only be whitespace between tokens: string
            // contents must escape it. Replacing it by a space keeps the value identical.
            let flat: Vec<u8> = json
                .iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
                .collect();
            return Ok(Self(flat.into(), Kind::Json));
        }
        // Keep only these bytes: a request body is a slice of the connection's read buffer, and
        // a retained event must not pin kilobytes of it for as long as it is retained.
        Ok(Self(Bytes::copy_from_slice(&json), Kind::Json))
    }

    /// Serializes `value` to JSON.
    ///
    /// # Errors
    ///
    /// Returns [`InvalidJson`] if `value` cannot be serialized (a map with non-string keys, or a
    /// `Serialize` implementation that fails).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::EventData;
    ///
    /// let data = EventData::from_serialize(&["a", "b"])?;
    /// assert_eq!(data.as_bytes(), br#"["a","b"]"#);
    /// # Ok::<(), tower_push::InvalidJson>(())
    /// ```
    pub fn from_serialize<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, InvalidJson> {
        serde_json::to_vec(value)
            .map(|json| Self(json.into(), Kind::Json))
            .map_err(|err| InvalidJson(err.to_string()))
    }

    /// Raw bytes, kept as they are: a payload for formats that carry bytes (a protocol of byte
    /// streams, binary messages). It is not checked, and not copied: pass bytes with storage of
    /// their own (not a slice of a larger buffer) when the event is retained.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::EventData;
    ///
    /// let data = EventData::from_bytes(&b"\x00\xffline\n"[..]);
    /// assert!(data.is_raw());
    /// assert_eq!(data.as_bytes(), b"\x00\xffline\n");
    /// // What the JSON formats write for it: a JSON string of its text.
    /// let text: String = serde_json::from_slice(&data.to_json()).unwrap();
    /// assert_eq!(text, "\0\u{fffd}line\n");
    /// ```
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        Self(bytes.into(), Kind::Raw)
    }

    /// Whether the payload holds raw bytes ([`from_bytes`](Self::from_bytes)) rather than JSON.
    pub fn is_raw(&self) -> bool {
        self.1 == Kind::Raw
    }

    /// The bytes: the JSON text, or the raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes as shared bytes: the JSON text, or the raw bytes.
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// The payload as JSON text: the JSON itself, or for raw bytes a JSON string of their text
    /// (invalid UTF-8 replaced by U+FFFD). Always valid, single-line JSON.
    pub fn to_json(&self) -> std::borrow::Cow<'_, [u8]> {
        match self.1 {
            Kind::Json => std::borrow::Cow::Borrowed(&self.0),
            Kind::Raw => {
                let text = String::from_utf8_lossy(&self.0);
                let json = serde_json::to_vec(&*text).expect("a string serializes");
                std::borrow::Cow::Owned(json)
            }
        }
    }
}

impl fmt::Debug for EventData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.1 {
            Kind::Json => "EventData",
            Kind::Raw => "EventData::Raw",
        };
        f.debug_tuple(name)
            .field(&String::from_utf8_lossy(&self.0))
            .finish()
    }
}

/// A payload that is not valid JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidJson(String);

impl fmt::Display for InvalidJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event data is not valid json: {}", self.0)
    }
}

impl std::error::Error for InvalidJson {}

/// The name of a kind of event, for clients that listen per kind (SSE's `event:` field).
///
/// A name is 1 to 64 characters from `A-Z a-z 0-9 _ - . :`, so it is safe in every format
/// without escaping. The names the stream formats use for their own messages (`resync`, `end`,
/// `failed`, `message`, `heartbeat`) are reserved.
///
/// # Examples
///
/// ```
/// use tower_push::EventName;
///
/// let name = EventName::new("chat.message")?;
/// assert_eq!(name.as_str(), "chat.message");
/// assert!(EventName::new("two\nlines").is_err());
/// assert!(EventName::new("resync").is_err());
/// # Ok::<(), tower_push::InvalidEventName>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EventName(std::sync::Arc<str>);

impl EventName {
    /// The longest name, in bytes.
    pub const MAX_LEN: usize = 64;

    const RESERVED: [&'static str; 5] = ["resync", "end", "failed", "message", "heartbeat"];

    /// Checks and keeps `name`.
    ///
    /// # Errors
    ///
    /// [`InvalidEventName`] if it is empty, longer than [`EventName::MAX_LEN`], has a character
    /// outside `A-Z a-z 0-9 _ - . :`, or is reserved.
    pub fn new(name: &str) -> Result<Self, InvalidEventName> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':');
        let valid = !name.is_empty() && name.len() <= Self::MAX_LEN && name.bytes().all(allowed);
        if !valid || Self::RESERVED.contains(&name) {
            return Err(InvalidEventName(name.chars().take(Self::MAX_LEN).collect()));
        }
        Ok(Self(name.into()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventName({:?})", &*self.0)
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event name that is empty, too long, reserved, or has a character outside
/// `A-Z a-z 0-9 _ - . :`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidEventName(String);

impl fmt::Display for InvalidEventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event name {:?} is not 1 to {} characters of A-Z a-z 0-9 _ - . : or is reserved",
            self.0,
            EventName::MAX_LEN
        )
    }
}

impl std::error::Error for InvalidEventName {}

/// One event of a log: its id (the cursor that points at it), an optional name, and its payload.
///
/// # Examples
///
/// ```
/// use tower_push::{Cursor, Epoch, Event, EventData, EventName};
///
/// let id = Cursor::new(Epoch::new(1), 7);
/// let event = Event::new(id, EventData::from_json("true")?);
/// assert_eq!(event.id(), id);
/// assert_eq!(event.data().as_bytes(), b"true");
/// assert_eq!(event.name(), None);
///
/// let named = event.with_name(EventName::new("flag")?);
/// assert_eq!(named.name().map(EventName::as_str), Some("flag"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Event {
    id: Cursor,
    name: Option<EventName>,
    data: EventData,
    published_at: Option<SystemTime>,
    // Set in the answer to a multiplexed request only.
    tag: Option<Arc<Tag>>,
}

/// What an event of a multiplexed answer carries besides itself.
#[derive(Debug)]
struct Tag {
    topic: Arc<str>,
    resume: CompositeCursor,
}

/// Two events are equal when their ids, names and payloads are: when they were published is
/// what a source knows about them, not part of the event.
impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.id, &self.name, &self.data, self.topic())
            == (other.id, &other.name, &other.data, other.topic())
    }
}

impl Eq for Event {}

impl Event {
    /// An unnamed event with the given id and payload.
    pub fn new(id: Cursor, data: EventData) -> Self {
        Self {
            id,
            name: None,
            data,
            published_at: None,
            tag: None,
        }
    }

    /// The same event, as the answer to a multiplexed request carries it: from `topic`, with
    /// `resume` the composite cursor after it.
    pub(crate) fn tagged(mut self, topic: Arc<str>, resume: CompositeCursor) -> Self {
        self.tag = Some(Arc::new(Tag { topic, resume }));
        self
    }

    /// The topic the event comes from, in the answer to a multiplexed request; `None`
    /// otherwise.
    pub fn topic(&self) -> Option<&str> {
        self.tag.as_ref().map(|tag| &*tag.topic)
    }

    /// What a client sends back to get what follows this event: its [`id`](Self::id), or in
    /// the answer to a multiplexed request the composite cursor after it (which holds the
    /// positions of all the request's topics).
    pub fn composite_cursor(&self) -> CompositeCursor {
        match &self.tag {
            Some(tag) => tag.resume.clone(),
            None => CompositeCursor::from(self.id),
        }
    }

    /// Appends the text of [`composite_cursor`](Self::composite_cursor) without copying it first.
    pub(crate) fn push_composite_cursor(&self, out: &mut Vec<u8>) {
        match &self.tag {
            Some(tag) => tag.resume.push(out),
            None => out.extend_from_slice(self.id.text().as_bytes()),
        }
    }

    /// The same event, stamped with the moment it was published: the layers measure from it
    /// how long the event took to reach its client (feature `metrics`). The built-in sources
    /// stamp every event.
    #[must_use]
    pub fn with_published_at(mut self, at: SystemTime) -> Self {
        self.published_at = Some(at);
        self
    }

    /// When the event was published, if its source stamped it.
    pub fn published_at(&self) -> Option<SystemTime> {
        self.published_at
    }

    /// The same event with a name.
    #[must_use]
    pub fn with_name(mut self, name: EventName) -> Self {
        self.name = Some(name);
        self
    }

    /// The event's id: the cursor a client sends back to get what came after it.
    pub fn id(&self) -> Cursor {
        self.id
    }

    /// The event's name, if it has one.
    pub fn name(&self) -> Option<&EventName> {
        self.name.as_ref()
    }

    /// The bytes of the event's data and name: what it weighs in an answer before framing.
    pub(crate) fn size(&self) -> usize {
        self.data.0.len() + self.name.as_ref().map_or(0, |name| name.as_str().len())
    }

    /// The event's payload.
    pub fn data(&self) -> &EventData {
        &self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_does_not_keep_the_buffer_its_json_came_from() {
        // A read buffer as hyper holds it, with a request body as a slice of it.
        let mut read = bytes::BytesMut::from(&[b' '; 8192][..]);
        read[100] = b'7';
        let buffer = read.freeze();
        let data = EventData::from_json(buffer.slice(100..101)).unwrap();
        assert_eq!(data.as_bytes(), b"7");
        assert!(buffer.is_unique(), "the event holds no part of the buffer");
    }

    #[test]
    fn accepts_every_json_value_kind() {
        for json in [
            "null",
            "true",
            "1.5e3",
            "\"s\"",
            "[]",
            "{\"a\":[1,{}]}",
            " 7 ",
        ] {
            assert!(EventData::from_json(json).is_ok(), "{json}");
        }
    }

    #[test]
    fn rejects_what_is_not_one_json_value() {
        for json in [
            "",
            "{",
            "1 2",
            "nul",
            "{\"a\":1,}",
            "\u{0}",
            "'x'",
            "3.8999E88004888888",
            "[-1e400]",
        ] {
            let err = EventData::from_json(json).unwrap_err();
            assert!(err.to_string().starts_with("event data is not valid json"));
        }
        assert!(EventData::from_json(&b"\"\xff\""[..]).is_err());
    }

    #[test]
    fn event_names_are_tokens_and_not_reserved() {
        for good in [
            "a",
            "chat.message",
            "user:joined",
            "A-Z_0-9",
            &"x".repeat(64),
        ] {
            assert!(EventName::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "two words",
            "a\nb",
            "a\rb",
            "caf\u{e9}",
            "resync",
            "end",
            &"x".repeat(65),
        ] {
            let err = EventName::new(bad).unwrap_err();
            assert!(err.to_string().starts_with("event name"), "{bad}");
        }
    }

    #[test]
    fn raw_bytes_are_kept_and_written_as_a_json_string() {
        let data = EventData::from_bytes(&b"a\r\n\"b\"\xfe"[..]);
        assert!(data.is_raw());
        assert_eq!(data.as_bytes(), b"a\r\n\"b\"\xfe");
        let json = data.to_json();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value, "a\r\n\"b\"\u{fffd}");
        assert!(!json.contains(&b'\n') && !json.contains(&b'\r'));
        assert_ne!(data, EventData::from_json("1").unwrap());
        let json_data = EventData::from_json("\"x\"").unwrap();
        assert!(!json_data.is_raw());
        assert_eq!(&*json_data.to_json(), b"\"x\"");
        assert_ne!(
            EventData::from_bytes("1"),
            EventData::from_json("1").unwrap()
        );
    }

    #[test]
    fn flattens_line_breaks_between_tokens_only() {
        let data = EventData::from_json("{\r\n\"a\": \"x\\ny\"\n}").unwrap();
        assert_eq!(data.as_bytes(), b"{  \"a\": \"x\\ny\" }");
        let value: serde_json::Value = serde_json::from_slice(data.as_bytes()).unwrap();
        assert_eq!(value["a"], "x\ny");
    }
}
