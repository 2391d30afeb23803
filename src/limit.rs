//! Caps on held requests: how many long polls may be parked and how many streams may be open,
//! in all and per key (a topic, a tenant), so that overload gets a clear `503` instead of
//! exhausting memory or file descriptors.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::request::Parts;

use crate::sync::MutexExt;
use crate::telemetry::{self, Kind};

/// Extracts a key from a request head (a topic, a tenant, a client), or `None` for no key.
#[derive(Clone)]
pub(crate) struct KeyFn(Arc<Extract>);

type Extract = dyn Fn(&Parts) -> Option<String> + Send + Sync;

impl KeyFn {
    pub(crate) fn new<K>(key: K) -> Self
    where
        K: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        Self(Arc::new(key))
    }

    /// The key of the request with head `parts`.
    pub(crate) fn key(&self, parts: &Parts) -> Option<String> {
        (self.0)(parts)
    }
}

impl fmt::Debug for KeyFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyFn")
    }
}

/// The caps of one layer, shared by every service it builds.
pub(crate) struct Limits {
    total: Arc<Gauge>,
    per_key: Option<Arc<KeyedGauge>>,
}

struct Gauge {
    count: AtomicUsize,
    max: usize,
    /// Which layer's requests it counts, for the `metrics` gauge.
    kind: Kind,
    /// The layer's series, registered once.
    meters: telemetry::Meters,
}

struct KeyedGauge {
    max: usize,
    key: KeyFn,
    counts: Mutex<HashMap<String, usize>>,
}

/// A held request's place under the caps; dropping it gives the place back.
pub(crate) struct Slot {
    total: Arc<Gauge>,
    keyed: Option<(Arc<KeyedGauge>, String)>,
}

/// Which cap a request hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Full {
    Total,
    Key,
}

impl Limits {
    pub(crate) fn new(kind: Kind, max: Option<usize>, per_key: Option<(usize, KeyFn)>) -> Self {
        if let Some(max) = max.filter(|&max| max != usize::MAX) {
            // Given back when the last service and clone of the layer are gone (`Gauge`'s drop).
            telemetry::held_limit(kind, max as f64);
        }
        Self {
            total: Arc::new(Gauge {
                count: AtomicUsize::new(0),
                max: max.unwrap_or(usize::MAX),
                kind,
                meters: telemetry::Meters::new(kind),
            }),
            per_key: per_key.map(|(max, key)| {
                Arc::new(KeyedGauge {
                    max,
                    key,
                    counts: Mutex::new(HashMap::new()),
                })
            }),
        }
    }

    /// The cap over all requests, if any.
    pub(crate) fn max(&self) -> Option<usize> {
        (self.total.max != usize::MAX).then_some(self.total.max)
    }

    /// The cap per key, if any.
    pub(crate) fn max_per_key(&self) -> Option<usize> {
        self.per_key.as_ref().map(|gauge| gauge.max)
    }

    /// The series the layer's requests record into.
    pub(crate) fn meters(&self) -> &telemetry::Meters {
        &self.total.meters
    }

    /// How many requests hold a place now.
    pub(crate) fn current(&self) -> usize {
        self.total.count.load(Ordering::Relaxed)
    }

    /// Takes a place for the request with head `parts`, or says which cap is full.
    pub(crate) fn acquire(&self, parts: &Parts) -> Result<Slot, Full> {
        let taken = self
            .total
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.total.max).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(Full::Total);
        }
        self.total.meters.held(1.0);
        let mut slot = Slot {
            total: self.total.clone(),
            keyed: None,
        };
        if let Some(gauge) = &self.per_key {
            if let Some(key) = gauge.key.key(parts) {
                let mut counts = gauge.counts.locked();
                let count = counts.entry(key.clone()).or_insert(0);
                if *count >= gauge.max {
                    // `max` is at least 1, so the entry belongs to requests that hold places.
                    // Dropping `slot` gives the total place back.
                    return Err(Full::Key);
                }
                *count += 1;
                drop(counts);
                slot.keyed = Some((gauge.clone(), key));
            }
        }
        Ok(slot)
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        if self.max != usize::MAX {
            telemetry::held_limit(self.kind, -(self.max as f64));
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.total.count.fetch_sub(1, Ordering::AcqRel);
        self.total.meters.held(-1.0);
        if let Some((gauge, key)) = self.keyed.take() {
            let mut counts = gauge.counts.locked();
            if let Some(count) = counts.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&key);
                }
            }
        }
    }
}

impl fmt::Debug for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limits")
            .field("current", &self.current())
            .field("max", &self.max())
            .field("max_per_key", &self.max_per_key())
            .finish()
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("key", &self.keyed.as_ref().map(|(_, key)| key))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(topic: &str) -> Parts {
        http::Request::get(format!("/topics/{topic}"))
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn by_path() -> KeyFn {
        KeyFn::new(|parts: &Parts| Some(parts.uri.path().to_owned()))
    }

    #[test]
    fn caps_in_all_and_per_key_and_gives_places_back() {
        let limits = Limits::new(Kind::LongPoll, Some(3), Some((2, by_path())));
        let a1 = limits.acquire(&parts("a")).unwrap();
        let a2 = limits.acquire(&parts("a")).unwrap();
        assert_eq!(limits.acquire(&parts("a")).unwrap_err(), Full::Key);
        assert_eq!(limits.current(), 2, "a refused request holds nothing");
        let b1 = limits.acquire(&parts("b")).unwrap();
        assert_eq!(limits.acquire(&parts("c")).unwrap_err(), Full::Total);
        drop(a1);
        let a3 = limits.acquire(&parts("a")).unwrap();
        drop((a2, a3, b1));
        assert_eq!(limits.current(), 0);
        let counts = limits.per_key.as_ref().unwrap().counts.lock().unwrap();
        assert!(
            counts.is_empty(),
            "no key is kept once its requests are gone"
        );
    }

    #[test]
    fn unlimited_still_counts() {
        let limits = Limits::new(Kind::Stream, None, None);
        let slots: Vec<_> = (0..100)
            .map(|_| limits.acquire(&parts("x")).unwrap())
            .collect();
        assert_eq!(limits.current(), 100);
        drop(slots);
        assert_eq!(limits.current(), 0);
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn the_cap_is_exported_while_the_layer_lives() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let limit = |layer: &str| {
            let line = format!(r#"{}{{layer="{layer}"}} "#, crate::metrics::HELD_LIMIT);
            let scrape = handle.render();
            let value = scrape.lines().find_map(|l| l.strip_prefix(line.as_str()));
            value.map(|value| value.parse::<f64>().unwrap())
        };
        metrics::with_local_recorder(&recorder, || {
            let polls = Limits::new(Kind::LongPoll, Some(300), None);
            let more_polls = Limits::new(Kind::LongPoll, Some(100), None);
            let _uncapped = Limits::new(Kind::Stream, None, Some((5, by_path())));
            assert_eq!(limit("long_poll"), Some(400.0), "the caps of both layers");
            assert_eq!(limit("stream"), None, "a per-key cap alone is not exported");
            drop(more_polls);
            assert_eq!(limit("long_poll"), Some(300.0));
            let slot = polls.acquire(&parts("a")).unwrap();
            drop(polls);
            assert_eq!(
                limit("long_poll"),
                Some(300.0),
                "a held request keeps its layer's cap"
            );
            drop(slot);
            assert_eq!(limit("long_poll"), Some(0.0));
        });
    }
}
