//! Metrics an operator can alert on, through the [`metrics`](https://docs.rs/metrics) facade
//! (feature `metrics`).
//!
//! The layers record into whatever recorder the application installs (a Prometheus exporter,
//! StatsD, …); without one, recording costs a few atomic loads. Install it before building the
//! layers: a layer registers the series its requests record into (held requests, events
//! delivered, publish-to-write, the hold) once, when it is built, in the recorder installed
//! then, so that an answer does not look them up again. Call [`describe`] once at start so that
//! the exporter knows each metric's unit and help text. Without the feature nothing is recorded
//! and a held request keeps nothing for it.
//!
//! | name | type | labels | what | alert on |
//! | --- | --- | --- | --- | --- |
//! | `tower_push_parked_polls` | gauge | | long polls held right now | near `max_held`: `503 overloaded` follows |
//! | `tower_push_open_streams` | gauge | | streams open right now | near `max_held` |
//! | `tower_push_held_limit` | gauge | `layer` | the cap on held requests: the sum of the `max_held` of the layers of that kind (`long_poll`, `stream`) over the layers that have one and are alive | the two gauges above divided by it |
//! | `tower_push_answers_total` | counter | `layer` (`long_poll`, `stream`), `kind` | answers by kind: `events`, `timeout` (the `204` of an expired hold), `shutdown`, `superseded`, `stream` (a stream opened), or a refusal's code: `malformed_cursor`, `cursor_ahead` (`400`), `cursor_expired`, `epoch_mismatch` (`410`), `overloaded`, `source_unavailable`, `shutting_down` (`503`), `method_not_allowed`, `head_too_large` | a rising rate of `cursor_expired` (retention too short for how long clients are away), `source_unavailable`, `overloaded` |
//! | `tower_push_events_delivered_total` | counter | `layer` | events handed to clients | a rate that drops to zero while publishers publish |
//! | `tower_push_stream_frames_total` | counter | | stream frames with events | |
//! | `tower_push_stream_heartbeats_total` | counter | | stream heartbeats | |
//! | `tower_push_stream_ends_total` | counter | `reason` (`lifetime`, `shutdown`, `closed`, `resync`, `gone`, `failed`, `client_gone`) | how streams end | `resync` (clients fell behind retention), `failed` |
//! | `tower_push_publish_to_write_seconds` | histogram | `layer` | per delivered event, from its publish (stamped by the source) to the moment its answer or frame is handed to the server | p99 above what your users tolerate |
//! | `tower_push_poll_hold_seconds` | histogram | | how long answered polls were held | |
//! | `tower_push_poll_gap_seconds` | histogram | | for a client that polls again, from the answer it got to its next request: the window in which a server without cursors loses events | a p99 that approaches your retention by age |
//! | `tower_push_redis_reader_reconnects_total` | counter | | a Redis reader's read or connection failed; it connects again after a back-off (feature `redis`) | a sustained rate: Redis is unreachable or too slow, and new subscriptions that need it get `503 source_unavailable` |
//! | `tower_push_redis_reader_lagged_total` | counter | | a Redis reader found the stream trimmed past the newest event it had read: retention dropped events before this process saw them, and clients at those cursors get a resync (feature `redis`) | any: retention (`MAXLEN`) too short for the publish rate and the reader's outages |
//!
//! The poll gap needs to recognise a client: it is recorded only for layers built with
//! [`one_poll_per_client`](crate::LongPollBuilder::one_poll_per_client), by that client key.
//! It costs one map entry per client between an answer and its next request; an entry older
//! than five minutes is forgotten (that client left).
//!
//! `tower_push_held_limit` is what makes "near the cap" an expression: a layer built with
//! `max_held` adds its cap to the gauge of its `layer` label, and takes it
//! back when its last clone and service are dropped. With one capped layer of each kind per
//! process (the usual server), `tower_push_parked_polls / tower_push_held_limit` is how full
//! the long-poll cap is. Layers without a cap add nothing, and their held requests still count
//! in the gauges above; the per-key caps are not exported.
//!
//! With the feature each request also gets a `tracing` span `push` at `DEBUG` level with the
//! fields `layer`, `cursor_in`, `cursor_out`, `outcome` and `held_ms`, and one `DEBUG` event
//! when it is answered or ends: quiet at the usual `INFO` level, there when you filter for it.
//! A span nobody listens to is nearly free, except in a program with no `tracing` subscriber
//! and `tracing`'s `log` feature on (axum's default `tower-log` feature turns it on): there
//! every span also asks `log` whether it is wanted, about 1,000 instructions per request on the
//! demo program (counted with callgrind: BENCHMARKS.md, "Spans that nobody reads"). Install a
//! subscriber, or turn `tower-log` off.
//!
//! # Histogram buckets
//!
//! The facade records histograms as raw samples; the exporter decides how to publish them.
//! Quantile summaries (the default of `metrics-exporter-prometheus`) cannot be added up across
//! instances, and `histogram_quantile` needs `_bucket` series: give the [`HISTOGRAMS`] the
//! bucket boundaries in [`BUCKETS`], which run from half a millisecond (a publish that reaches
//! a parked client) past the default 25 s hold to a minute, roughly doubling. The crate does not
//! depend on any exporter; with `metrics-exporter-prometheus`:
//!
//! ```
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//! use tower_push::metrics::{BUCKETS, HISTOGRAMS, POLL_HOLD};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut builder = PrometheusBuilder::new();
//! for name in HISTOGRAMS {
//!     builder = builder.set_buckets_for_metric(Matcher::Full(name.to_string()), BUCKETS)?;
//! }
//! // In a server: `let handle = builder.install_recorder()?;` once at start, then
//! // `tower_push::metrics::describe();`, and `handle.render()` answers `GET /metrics`.
//! let recorder = builder.build_recorder();
//! let handle = recorder.handle();
//! metrics::with_local_recorder(&recorder, || metrics::histogram!(POLL_HOLD).record(0.003));
//! let scrape = handle.render();
//! assert!(scrape.contains(r#"tower_push_poll_hold_seconds_bucket{le="0.005"} 1"#));
//! assert!(scrape.contains(r#"tower_push_poll_hold_seconds_bucket{le="+Inf"} 1"#));
//! # Ok(())
//! # }
//! ```
//!
//! # Alerts and a dashboard
//!
//! The repository's `deploy/monitoring/` holds Prometheus alerting rules on these metrics (with
//! `promtool` unit tests for each alert) and a Grafana dashboard; the README's "Operating it"
//! lists the alerts and what to do when one fires.
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
/// Gauge: the caps on held requests by `layer` (the `max_held` of each
/// layer), summed over the live layers that have one.
pub const HELD_LIMIT: &str = "tower_push_held_limit";
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
/// Counter: failed reads or connections of the Redis source's readers, each followed by a new
/// connection after a back-off (feature `redis`).
pub const REDIS_READER_RECONNECTS: &str = "tower_push_redis_reader_reconnects_total";
/// Counter: reads of the Redis source's readers that found the stream trimmed past the newest
/// event they had read, so that retention dropped events before this process saw them (feature
/// `redis`).
pub const REDIS_READER_LAGGED: &str = "tower_push_redis_reader_lagged_total";

/// Every metric the crate records, by the name the facade sees (a Prometheus exporter adds
/// `_bucket`, `_sum` and `_count` to the [`HISTOGRAMS`]).
pub const NAMES: &[&str] = &[
    PARKED_POLLS,
    OPEN_STREAMS,
    HELD_LIMIT,
    ANSWERS,
    EVENTS_DELIVERED,
    STREAM_FRAMES,
    STREAM_HEARTBEATS,
    STREAM_ENDS,
    PUBLISH_TO_WRITE,
    POLL_HOLD,
    POLL_GAP,
    REDIS_READER_RECONNECTS,
    REDIS_READER_LAGGED,
];

/// The histograms, all in seconds: the metrics to give [`BUCKETS`].
pub const HISTOGRAMS: &[&str] = &[PUBLISH_TO_WRITE, POLL_HOLD, POLL_GAP];

/// Bucket boundaries in seconds for the [`HISTOGRAMS`]: from 0.5 ms (a publish that reaches a
/// parked client on the same machine) to 60 s, past the default hold of 25 s, in steps of 2 or
/// 2.5 (1, 2, 5 per decade, and 30 for holds between 20 s and 30 s). Seventeen boundaries, so a
/// histogram is 18 series with `+Inf`, per label set.
///
/// # Examples
///
/// ```
/// use tower_push::metrics::BUCKETS;
///
/// assert_eq!(BUCKETS.first(), Some(&0.0005));
/// assert_eq!(BUCKETS.last(), Some(&60.0));
/// assert!(BUCKETS.windows(2).all(|pair| pair[0] < pair[1]));
/// ```
pub const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0,
    60.0,
];

/// Describes every metric (unit and help text) to the installed recorder. Call it once, after
/// installing the recorder; recording works without it.
pub fn describe() {
    describe_gauge!(PARKED_POLLS, Unit::Count, "Long polls held right now.");
    describe_gauge!(OPEN_STREAMS, Unit::Count, "Streams open right now.");
    describe_gauge!(
        HELD_LIMIT,
        Unit::Count,
        "The cap on held requests by layer, over the layers that have one."
    );
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
    describe_counter!(
        REDIS_READER_RECONNECTS,
        Unit::Count,
        "Failed reads or connections of Redis readers, each followed by a reconnection."
    );
    describe_counter!(
        REDIS_READER_LAGGED,
        Unit::Count,
        "Redis reader reads that found the stream trimmed past what they had read."
    );
}
