//! Whole requests through both layers: any target and `Last-Event-ID` get an answer from the
//! documented set, never a panic or a hang.
#![no_main]

mod paused;

use std::sync::OnceLock;

use http::{HeaderValue, Request, Uri};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use tower_push::memory::Topic;
use tower_push::{ChunkedStreamLayer, EventData, LongPollLayer, MemoryLog};

fn topic() -> &'static Topic {
    static TOPIC: OnceLock<Topic> = OnceLock::new();
    TOPIC.get_or_init(|| {
        let log = MemoryLog::builder().retention(4).build().unwrap();
        let topic = log.topic("fuzz");
        for n in 0..10 {
            topic.publish(EventData::from_serialize(&n).unwrap());
        }
        topic
    })
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| b as usize).min(data.len().saturating_sub(1));
    let (target, last_event_id) = data.get(1..).unwrap_or_default().split_at(split);
    let Ok(uri) = Uri::try_from(target) else { return };
    let mut builder = Request::get(uri);
    if let Ok(value) = HeaderValue::from_bytes(last_event_id) {
        if !last_event_id.is_empty() {
            builder = builder.header("last-event-id", value);
        }
    }
    let Ok(request) = builder.body(()) else { return };
    let (parts, ()) = request.into_parts();

    paused::runtime().block_on(async {
        let poll = LongPollLayer::new().layer(topic().clone());
        let response = poll
            .oneshot(Request::from_parts(parts.clone(), ()))
            .await
            .unwrap();
        assert!(matches!(response.status().as_u16(), 200 | 204 | 400 | 410));

        let stream = ChunkedStreamLayer::new().layer(topic().clone());
        let response = stream.oneshot(Request::from_parts(parts, ())).await.unwrap();
        assert!(matches!(response.status().as_u16(), 200 | 400 | 410));
    });
});
