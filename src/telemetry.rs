//! What the layers record about each request: metrics through the `metrics` facade and a
//! tracing span, both only with the `metrics` feature. Without it every function here is empty
//! and [`Telemetry`] has no size, so a held request costs nothing more.

use std::time::Duration;

use crate::{Cursor, Event, Rejection};

/// Which layer a request came through: the `layer` label of the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    LongPoll,
    Stream,
}

#[cfg(feature = "metrics")]
impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::LongPoll => "long_poll",
            Self::Stream => "stream",
        }
    }

    /// The gauge of this layer's held requests.
    fn gauge(self) -> &'static str {
        match self {
            Self::LongPoll => names::PARKED_POLLS,
            Self::Stream => names::OPEN_STREAMS,
        }
    }
}

#[cfg(feature = "metrics")]
use crate::metrics as names;

/// The series a layer records into on every request, registered once when the layer is built,
/// so that an answer does not look them up (a lookup hashes the name and the labels, and makes
/// the labels, every time). They record into the recorder installed when the layer was built:
/// install it first, as the caps' gauge already asks (`tower_push_held_limit`).
#[derive(Debug)]
pub(crate) struct Meters {
    /// Which layer's series these are.
    #[cfg(feature = "metrics")]
    kind: Kind,
    #[cfg(feature = "metrics")]
    held: metrics::Gauge,
    #[cfg(feature = "metrics")]
    delivered: metrics::Counter,
    #[cfg(feature = "metrics")]
    publish_to_write: metrics::Histogram,
    /// A long poll's hold (`None` for streams, which do not record one).
    #[cfg(feature = "metrics")]
    poll_hold: Option<metrics::Histogram>,
    /// The answers of the kinds most requests end with (`events` and `timeout` for long
    /// polls, `stream` for streams); the others are looked up when they happen.
    #[cfg(feature = "metrics")]
    common: Vec<(&'static str, metrics::Counter)>,
}

impl Meters {
    /// The series of `kind`'s layer, registered now.
    pub(crate) fn new(kind: Kind) -> Self {
        #[cfg(feature = "metrics")]
        {
            let layer = kind.label();
            Self {
                kind,
                held: metrics::gauge!(kind.gauge()),
                delivered: metrics::counter!(names::EVENTS_DELIVERED, "layer" => layer),
                publish_to_write: metrics::histogram!(names::PUBLISH_TO_WRITE, "layer" => layer),
                poll_hold: (kind == Kind::LongPoll).then(|| metrics::histogram!(names::POLL_HOLD)),
                common: match kind {
                    Kind::LongPoll => &["events", "timeout"][..],
                    Kind::Stream => &["stream"][..],
                }
                .iter()
                .map(|&what| {
                    let counter =
                        metrics::counter!(names::ANSWERS, "layer" => layer, "kind" => what);
                    (what, counter)
                })
                .collect(),
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = kind;
            Self {}
        }
    }

    /// A request of the layer got an answer of kind `what`, as [`answered`] records it.
    pub(crate) fn answered(&self, what: &'static str) {
        #[cfg(feature = "metrics")]
        match self.common.iter().find(|(common, _)| *common == what) {
            Some((_, counter)) => counter.increment(1),
            None => answered(self.kind, what),
        }
        #[cfg(not(feature = "metrics"))]
        let _ = what;
    }

    /// One more (or one less) request holds a place in the layer.
    pub(crate) fn held(&self, delta: f64) {
        #[cfg(feature = "metrics")]
        self.held.increment(delta);
        #[cfg(not(feature = "metrics"))]
        let _ = delta;
    }
}

/// A layer of `kind` with a cap of `max` held requests was built (`delta` is `max`), or dropped
/// (`-max`).
pub(crate) fn held_limit(kind: Kind, delta: f64) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(names::HELD_LIMIT, "layer" => kind.label()).increment(delta);
    #[cfg(not(feature = "metrics"))]
    let _ = (kind, delta);
}

/// A request of `kind`'s layer got an answer of kind `what`: `events`, `timeout`, `shutdown`,
/// `superseded`, `stream` (a stream opened), or a rejection's code.
pub(crate) fn answered(kind: Kind, what: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::ANSWERS, "layer" => kind.label(), "kind" => what).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (kind, what);
}

/// A request of `kind`'s layer was refused with `rejection` before it was held.
pub(crate) fn rejected(kind: Kind, rejection: &Rejection) {
    answered(kind, rejection.code());
}

/// A client polled again `gap` after its previous answer.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) fn poll_gap(gap: Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!(names::POLL_GAP).record(gap.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = gap;
}

/// A Redis reader starts: its counters are shown from 0, so that `rate` and `increase` see
/// their first increment (a series that appears at 1 has no increase to show).
#[cfg(feature = "redis")]
pub(crate) fn redis_reader_started() {
    #[cfg(feature = "metrics")]
    for name in [names::REDIS_READER_RECONNECTS, names::REDIS_READER_LAGGED] {
        metrics::counter!(name).increment(0);
    }
}

/// A Redis reader's read or connection failed: it reconnects after a back-off.
#[cfg(feature = "redis")]
pub(crate) fn redis_reader_reconnect() {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::REDIS_READER_RECONNECTS).increment(1);
}

/// A Redis reader found the stream trimmed past the newest event it had read.
#[cfg(feature = "redis")]
pub(crate) fn redis_reader_lagged() {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::REDIS_READER_LAGGED).increment(1);
}

/// What one admitted request keeps for its metrics and its span.
#[derive(Debug)]
pub(crate) struct Telemetry {
    #[cfg(feature = "metrics")]
    admitted: std::time::Instant,
    #[cfg(feature = "metrics")]
    span: tracing::Span,
}

impl Telemetry {
    /// A request admitted to `kind`'s layer, from `cursor` if it named one.
    pub(crate) fn admitted(kind: Kind, cursor: Option<Cursor>) -> Self {
        #[cfg(feature = "metrics")]
        {
            let span = tracing::debug_span!(
                "push",
                layer = kind.label(),
                cursor_in = cursor.map(tracing::field::display),
                cursor_out = tracing::field::Empty,
                outcome = tracing::field::Empty,
                held_ms = tracing::field::Empty,
            );
            Self {
                admitted: std::time::Instant::now(),
                span,
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = (kind, cursor);
            Self {}
        }
    }

    /// `events` go to the client now: counted, and their publish-to-write latency recorded.
    pub(crate) fn delivered(&self, meters: &Meters, events: &[Event]) {
        #[cfg(feature = "metrics")]
        {
            meters.delivered.increment(events.len() as u64);
            let now = std::time::SystemTime::now();
            for published in events.iter().filter_map(Event::published_at) {
                let age = now.duration_since(published).unwrap_or_default();
                meters.publish_to_write.record(age.as_secs_f64());
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (meters, events);
    }

    /// The request ends with `outcome` (`events`, `timeout`, `shutdown`, `superseded`, or a
    /// rejection's code; for streams `lifetime`, `shutdown`, `resync`, `failed`, `client_gone`)
    /// standing at `cursor`: recorded in the span, and for a long poll its hold time and kind of
    /// answer.
    pub(crate) fn finished(&self, meters: &Meters, outcome: &'static str, cursor: Option<Cursor>) {
        #[cfg(feature = "metrics")]
        {
            let held = self.admitted.elapsed();
            self.span.record("outcome", outcome);
            self.span.record("held_ms", held.as_millis() as u64);
            if let Some(cursor) = cursor {
                self.span
                    .record("cursor_out", tracing::field::display(cursor));
            }
            let _entered = self.span.enter();
            tracing::debug!("answered");
            match meters.kind {
                Kind::LongPoll => {
                    meters.answered(outcome);
                    if let Some(poll_hold) = &meters.poll_hold {
                        poll_hold.record(held.as_secs_f64());
                    }
                }
                Kind::Stream => {
                    metrics::counter!(names::STREAM_ENDS, "reason" => outcome).increment(1);
                }
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (meters, outcome, cursor);
    }

    /// A stream frame went out: one with events, or a heartbeat.
    pub(crate) fn frame(&self, heartbeat: bool) {
        // Looked up per frame: registered with the layer, a stream layer's heartbeat series
        // would show before its first heartbeat.
        #[cfg(feature = "metrics")]
        if heartbeat {
            metrics::counter!(names::STREAM_HEARTBEATS).increment(1);
        } else {
            metrics::counter!(names::STREAM_FRAMES).increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = heartbeat;
    }
}

/// What a request records, with its layer's series: see [`Telemetry`].
pub(crate) struct Recording<'a> {
    pub(crate) telemetry: &'a Telemetry,
    pub(crate) meters: &'a Meters,
}

impl Recording<'_> {
    /// See [`Telemetry::finished`].
    pub(crate) fn finished(&self, outcome: &'static str, cursor: Option<Cursor>) {
        self.telemetry.finished(self.meters, outcome, cursor);
    }

    /// See [`Telemetry::frame`].
    pub(crate) fn frame(&self, heartbeat: bool) {
        self.telemetry.frame(heartbeat);
    }
}
