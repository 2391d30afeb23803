//! Event framing: any bytes accepted as event data frame into exactly one NDJSON line that
//! parses back, and into SSE fields that no payload can break.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_push::format::{NdjsonFormat, SseFormat, StreamFormat};
use tower_push::{Cursor, Epoch, Event, EventData};

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = EventData::from_json(data.to_vec()) else {
        return;
    };
    let event = Event::new(Cursor::new(Epoch::new(7), 1), payload);

    let mut line = Vec::new();
    NdjsonFormat.event(&event, &mut line);
    assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
    assert_eq!(line.last(), Some(&b'\n'));
    assert!(!line.contains(&b'\r'));
    let value: serde_json::Value = serde_json::from_slice(&line).expect("a JSON line");
    assert_eq!(value["id"], "0000000000000007-1");

    let mut message = Vec::new();
    SseFormat::new().event(&event, &mut message);
    assert!(message.ends_with(b"\n\n"));
    assert!(!message.contains(&b'\r'));
    let text = std::str::from_utf8(&message).expect("utf-8");
    for line in text.trim_end_matches('\n').split('\n') {
        assert!(line.starts_with("id: ") || line.starts_with("data: "), "{line:?}");
    }
});
