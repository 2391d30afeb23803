//! Metrics an operator can alert on, through the [`metrics`](https://docs.rs/metrics) facade
//! (feature `metrics`).
//!
//! The layers record into whatever recorder the application installs (a Prometheus exporter,
//! StatsD, …); without one, recording costs a few atomic loads. Call [`describe`] once at start
//! so that the exporter knows each metric's unit and help text. Without the feature nothing is
//! recorded and a held request keeps nothing for it.
//!
//! | name | type | labels | what | alert on |
//! | --- | --- | --- | --- | --- |
//! | `tower_push_parked_polls` | gauge | | long polls held right now | near `max_parked`: `503 overloaded` follows |
//! | `tower_push_open_streams` | gauge | | streams open right now | near `max_streams` |
//! | `tower_push_answers_total` | counter | `layer` (`long_poll`, `stream`), `kind` | answers by kind: `events`, `timeout` (the `204` of an expired hold), `shutdown`, `superseded`, `stream` (a stream opened), or a refusal's code: `malformed_cursor`, `cursor_ahead` (`400`), `cursor_expired`, `epoch_mismatch` (`410`), `overloaded`, `source_unavailable`, `shutting_down` (`503`), `method_not_allowed`, `head_too_large` | a rising rate of `cursor_expired` (retention too short for how long clients are away), `source_unavailable`, `overloaded` |
//! | `tower_push_events_delivered_total` | counter | `layer` | events handed to clients | a rate that drops to zero while publishers publish |
//! | `tower_push_stream_frames_total` | counter | | stream frames with events | |
//! | `tower_push_stream_heartbeats_total` | counter | | stream heartbeats | |
//! | `tower_push_stream_ends_total` | counter | `reason` (`lifetime`, `shutdown`, `closed`, `resync`, `gone`, `failed`, `client_gone`) | how streams end | `resync` (clients fell behind retention), `failed` |
//! | `tower_push_publish_to_write_seconds` | histogram | `layer` | per delivered event, from its publish (stamped by the source) to the moment its answer or frame is handed to the server | p99 above what your users tolerate |
//! | `tower_push_poll_hold_seconds` | histogram | | how long answered polls were held | |
//! | `tower_push_poll_gap_seconds` | histogram | | for a client that polls again, from the answer it got to its next request: the window in which a server without cursors loses events | a p99 that approaches your retention by age |
//!
//! The poll gap needs to recognise a client: it is recorded only for layers built with
//! [`one_poll_per_client`](crate::LongPollBuilder::one_poll_per_client), by that client key.
//! It costs one map entry per client between an answer and its next request; an entry older
//! than five minutes is forgotten (that client left).
//!
//! With the feature each request also gets a `tracing` span `push` at `DEBUG` level with the
//! fields `layer`, `cursor_in`, `cursor_out`, `outcome` and `held_ms`, and one `DEBUG` event
//! when it is answered or ends: quiet at the usual `INFO` level, there when you filter for it.
//!
//! # Examples
//!
//! ```
//! // With a Prometheus exporter installed as the global recorder, at start:
//! tower_push::metrics::describe();
//! ```

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Gauge: long polls held right now.
pub const PARKED_POLLS: &str = "tower_push_parked_polls";
/// Gauge: streams open right now.
pub const OPEN_STREAMS: &str = "tower_push_open_streams";
/// Counter: answers by `layer` and `kind`.
pub const ANSWERS: &str = "tower_push_answers_total";
/// Counter: events handed to clients, by `layer`.
pub const EVENTS_DELIVERED: &str = "tower_push_events_delivered_total";
/// Counter: stream frames with events.
pub const STREAM_FRAMES: &str = "tower_push_stream_frames_total";
/// Counter: stream heartbeats.
pub const STREAM_HEARTBEATS: &str = "tower_push_stream_heartbeats_total";
/// Counter: stream ends by `reason`.
pub const STREAM_ENDS: &str = "tower_push_stream_ends_total";
/// Histogram, seconds: from an event's publish to its answer or frame, by `layer`.
pub const PUBLISH_TO_WRITE: &str = "tower_push_publish_to_write_seconds";
/// Histogram, seconds: how long answered polls were held.
pub const POLL_HOLD: &str = "tower_push_poll_hold_seconds";
/// Histogram, seconds: from an answer to the same client's next poll.
pub const POLL_GAP: &str = "tower_push_poll_gap_seconds";

/// Describes every metric (unit and help text) to the installed recorder. Call it once, after
/// installing the recorder; recording works without it.
pub fn describe() {
    describe_gauge!(PARKED_POLLS, Unit::Count, "Long polls held right now.");
    describe_gauge!(OPEN_STREAMS, Unit::Count, "Streams open right now.");
    describe_counter!(ANSWERS, Unit::Count, "Answers by layer and kind.");
    describe_counter!(EVENTS_DELIVERED, Unit::Count, "Events handed to clients.");
    describe_counter!(STREAM_FRAMES, Unit::Count, "Stream frames with events.");
    describe_counter!(STREAM_HEARTBEATS, Unit::Count, "Stream heartbeats.");
    describe_counter!(STREAM_ENDS, Unit::Count, "Stream ends by reason.");
    describe_histogram!(
        PUBLISH_TO_WRITE,
        Unit::Seconds,
        "From an event's publish to its answer or frame."
    );
    describe_histogram!(
        POLL_HOLD,
        Unit::Seconds,
        "How long answered polls were held."
    );
    describe_histogram!(
        POLL_GAP,
        Unit::Seconds,
        "From an answer to the same client's next poll."
    );
}
