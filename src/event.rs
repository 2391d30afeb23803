//! Events and their JSON payloads.

use std::fmt;

use bytes::Bytes;

use crate::Cursor;

/// The payload of an event: one JSON value, checked once when it is made.
///
/// Every wire format embeds the payload as is (`"data":<payload>` in JSON, one line in NDJSON), so
/// a payload that is not valid JSON would corrupt every response that carries it. `EventData` is
/// the proof that it is valid. Raw line breaks between JSON tokens are replaced by spaces when the
/// payload is made, so a payload is always a single line; nothing else about it changes.
///
/// Cloning is cheap: the bytes are reference counted.
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
pub struct EventData(Bytes);

impl EventData {
    /// Checks that `json` is one valid JSON value and keeps it.
    ///
    /// # Errors
    ///
    /// Returns [`InvalidJson`] with the parser's position and reason if it is not.
    pub fn from_json(json: impl Into<Bytes>) -> Result<Self, InvalidJson> {
        let json = json.into();
        // `from_slice` does not check the UTF-8 of strings it skips, so check it first.
        let text = std::str::from_utf8(&json)
            .map_err(|err| InvalidJson(format!("not utf-8 at byte {}", err.valid_up_to())))?;
        if let Err(err) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
            return Err(InvalidJson(err.to_string()));
        }
        if json.iter().any(|&b| b == b'\n' || b == b'\r') {
            // In valid JSON a raw line break can only be whitespace between tokens: string
            // contents must escape it. Replacing it by a space keeps the value identical.
            let flat: Vec<u8> = json
                .iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
                .collect();
            return Ok(Self(flat.into()));
        }
        Ok(Self(json))
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
            .map(|json| Self(json.into()))
            .map_err(|err| InvalidJson(err.to_string()))
    }

    /// The JSON text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The JSON text as shared bytes.
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }
}

impl fmt::Debug for EventData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Valid JSON is valid UTF-8.
        f.debug_tuple("EventData")
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

/// One event of a log: its id (the cursor that points at it) and its payload.
///
/// # Examples
///
/// ```
/// use tower_push::{Cursor, Epoch, Event, EventData};
///
/// let id = Cursor::new(Epoch::new(1), 7);
/// let event = Event::new(id, EventData::from_json("true")?);
/// assert_eq!(event.id(), id);
/// assert_eq!(event.data().as_bytes(), b"true");
/// # Ok::<(), tower_push::InvalidJson>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    id: Cursor,
    data: EventData,
}

impl Event {
    /// An event with the given id and payload.
    pub fn new(id: Cursor, data: EventData) -> Self {
        Self { id, data }
    }

    /// The event's id: the cursor a client sends back to get what came after it.
    pub fn id(&self) -> Cursor {
        self.id
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
        for json in ["", "{", "1 2", "nul", "{\"a\":1,}", "\u{0}", "'x'"] {
            let err = EventData::from_json(json).unwrap_err();
            assert!(err.to_string().starts_with("event data is not valid json"));
        }
        assert!(EventData::from_json(&b"\"\xff\""[..]).is_err());
    }

    #[test]
    fn flattens_line_breaks_between_tokens_only() {
        let data = EventData::from_json("{\r\n\"a\": \"x\\ny\"\n}").unwrap();
        assert_eq!(data.as_bytes(), b"{  \"a\": \"x\\ny\" }");
        let value: serde_json::Value = serde_json::from_slice(data.as_bytes()).unwrap();
        assert_eq!(value["a"], "x\ny");
    }
}
