//! The per-topic state of one process and the reader task that keeps it up to date.
//!
//! One reader task per active topic follows the stream on a connection of its own with
//! `XREAD BLOCK`, keeps a window of recent events, and wakes the topic's parked subscriptions
//! through one [`Notify`]. Subscriptions never touch Redis while the window can answer them.

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::wire::{self, ReadMode, Snapshot};
use super::{Error, SourceShared};
use crate::source::{Batch, Outcome, Position};
use crate::sync::MutexExt;
use crate::{Cursor, Epoch, Event};

/// How long one `XREAD BLOCK` waits. It bounds how late a reader notices a stream that was
/// deleted and recreated (and so a new epoch), and how late it retires when idle.
pub(crate) const BLOCK: Duration = Duration::from_secs(1);

/// Back-off between reconnection attempts of a reader.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub(crate) struct TopicShared {
    pub(crate) name: Arc<str>,
    pub(crate) stream_key: String,
    pub(crate) epoch_key: String,
    pub(crate) notify: Notify,
    pub(crate) waiting: AtomicUsize,
    state: Mutex<TopicState>,
}

#[derive(Default)]
struct TopicState {
    /// Subscriptions in flight (parked or not).
    active: usize,
    last_active: Option<Instant>,
    /// Whether a reader task runs for this topic.
    running: bool,
    /// Whether the window reflects Redis: the reader's last read succeeded.
    synced: bool,
    epoch: Option<Epoch>,
    /// The sequence number of the newest event the reader has seen.
    head: u64,
    /// The newest events, oldest first, all of `epoch`, ending at `head` (unless entries were
    /// deleted from the stream by hand).
    window: VecDeque<Event>,
    /// When the reader last ran the read script (which also checks the epoch).
    checked: Option<Instant>,
    /// The last batch answered from the window, with the cursor it follows: what the next
    /// subscription at the same cursor gets (so that the layers encode it once), until the
    /// window is replaced.
    shared: Option<(Cursor, Batch)>,
}

/// What the local window says about a subscription.
pub(crate) enum Local {
    Ready(Outcome),
    /// Nothing after the cursor yet: park.
    Wait,
    /// The window cannot tell: ask Redis.
    Unknown,
    /// The reader has not read the stream yet (it just started, or lost its connection).
    Syncing,
}

impl TopicShared {
    pub(crate) fn new(name: Arc<str>, prefix: &str) -> Self {
        Self {
            stream_key: format!("{prefix}{name}"),
            epoch_key: format!("{prefix}{name}:epoch"),
            name,
            notify: Notify::new(),
            waiting: AtomicUsize::new(0),
            state: Mutex::new(TopicState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, TopicState> {
        // Every change leaves the state consistent, so a poisoned lock is still usable.
        self.state.locked()
    }

    /// Answers from the window, without Redis.
    pub(crate) fn local(&self, position: Position, limit: usize) -> Local {
        let mut state = self.lock();
        let (true, Some(epoch)) = (state.synced, state.epoch) else {
            return Local::Syncing;
        };
        let cursor = match position {
            Position::Head => return Local::Ready(Outcome::Head(Cursor::new(epoch, state.head))),
            Position::Oldest => return Local::Unknown,
            Position::After(cursor) => cursor,
        };
        // Another epoch, or a cursor this reader has not reached yet (another process served
        // it): only Redis can say whether it is stale, ahead, or about to be valid.
        if cursor.epoch() != epoch || cursor.seq() > state.head {
            return Local::Unknown;
        }
        if cursor.seq() == state.head {
            return Local::Wait;
        }
        match state.window.front() {
            Some(first) if first.id().seq() <= cursor.seq() + 1 => {}
            // Behind the window: a range read, or an expired cursor.
            _ => return Local::Unknown,
        }
        // The window only grows at its end until it is replaced: a batch after `cursor` that
        // ends where one would end now holds the same events.
        let end = state.head.min(cursor.seq().saturating_add(limit as u64));
        if let Some((at, batch)) = &state.shared {
            if *at == cursor && batch.last().seq() == end {
                return Local::Ready(Outcome::Events(batch.clone()));
            }
        }
        let events = state
            .window
            .iter()
            .filter(|event| event.id() > cursor)
            .take(limit)
            .cloned()
            .collect();
        let Some(batch) = Batch::new(events) else {
            return Local::Unknown;
        };
        state.shared = Some((cursor, batch.clone()));
        Local::Ready(Outcome::Events(batch))
    }

    /// Counts a subscription in; returns whether a reader task must be started.
    pub(crate) fn enter(&self) -> bool {
        let mut state = self.lock();
        state.active += 1;
        !std::mem::replace(&mut state.running, true)
    }

    pub(crate) fn leave(&self) {
        let mut state = self.lock();
        state.active -= 1;
        state.last_active = Some(Instant::now());
    }

    /// Whether the reader should end: no subscription for `idle`. If so, forgets the window.
    fn retire(&self, idle: Duration) -> bool {
        let mut state = self.lock();
        let quiet = state.last_active.is_none_or(|at| at.elapsed() >= idle);
        if state.active > 0 || !quiet {
            return false;
        }
        *state = TopicState {
            last_active: state.last_active,
            ..TopicState::default()
        };
        true
    }

    fn lost(&self) {
        self.lock().synced = false;
    }

    /// Applies a snapshot from the read script. Returns whether the reader must read the tail
    /// instead (the epoch changed or the stream went backwards).
    fn apply_snapshot(&self, snap: Snapshot, mode: ReadMode, window: usize) -> bool {
        let mut state = self.lock();
        state.checked = Some(Instant::now());
        let same = state.epoch == Some(snap.epoch) && snap.head >= state.head;
        if state.epoch == Some(snap.epoch) && snap.head < state.head {
            tracing::error!(
                topic = %self.name,
                seen = state.head,
                now = snap.head,
                "stream went back under the same epoch (redis lost acknowledged writes?); \
                 ids may be reissued"
            );
        }
        match mode {
            ReadMode::After(_) if !same => return true,
            ReadMode::After(_) => {
                if snap.first.is_some_and(|first| first > state.head + 1) {
                    self.lagged(&mut state);
                }
                let complete = snap.entries.len() < window;
                for event in snap.entries {
                    if event.id().seq() > state.head {
                        state.head = event.id().seq();
                        state.window.push_back(event);
                    }
                }
                if complete {
                    state.head = state.head.max(snap.head);
                }
            }
            ReadMode::Tail | ReadMode::First => {
                if state.epoch.is_some_and(|epoch| epoch != snap.epoch) {
                    tracing::info!(topic = %self.name, epoch = %snap.epoch, "stream has a new epoch");
                }
                state.epoch = Some(snap.epoch);
                state.head = snap.head;
                state.window = snap.entries.into();
                state.shared = None;
            }
        }
        trim(&mut state.window, window);
        state.synced = true;
        drop(state);
        self.notify.notify_waiters();
        false
    }

    /// Appends what `XREAD` returned. Returns false if an entry had another epoch.
    fn apply_events(&self, events: Vec<(Event, bool)>, window: usize) -> bool {
        if events.is_empty() {
            return true;
        }
        let mut state = self.lock();
        if let Some((first, true)) = events.first() {
            if first.id().seq() > state.head + 1 {
                self.lagged(&mut state);
            }
        }
        let mut same = true;
        for (event, of_epoch) in events {
            if !of_epoch {
                same = false;
                break;
            }
            if event.id().seq() > state.head {
                state.head = event.id().seq();
                state.window.push_back(event);
            }
        }
        trim(&mut state.window, window);
        drop(state);
        self.notify.notify_waiters();
        same
    }

    /// The stream was trimmed past `head` before this reader read what followed it (it was
    /// disconnected, or slower than the publishers): retention dropped those events. The
    /// window forgets what it held, so that it never joins events across the hole: a cursor
    /// in it is answered by Redis (a resync), not with the events after the hole.
    fn lagged(&self, state: &mut TopicState) {
        tracing::warn!(
            topic = %self.name,
            seen = state.head,
            "redis reader fell behind the stream's retention; clients behind it get a resync"
        );
        crate::telemetry::redis_reader_lagged();
        state.window.clear();
        state.shared = None;
    }

    /// What the reader does next: the read script (`Some`), or a blocking read after the head.
    fn next_read(&self) -> (Option<ReadMode>, Option<Epoch>, u64) {
        let state = self.lock();
        let mode = match (state.synced, state.epoch, state.checked) {
            (_, None, _) => Some(ReadMode::Tail),
            (false, Some(_), _) => Some(ReadMode::After(state.head)),
            (true, Some(_), Some(at)) if at.elapsed() < BLOCK => None,
            (true, Some(_), _) => Some(ReadMode::After(state.head)),
        };
        (mode, state.epoch, state.head)
    }

    fn force_check(&self) {
        self.lock().checked = None;
    }
}

fn trim(window: &mut VecDeque<Event>, max: usize) {
    let excess = window.len().saturating_sub(max);
    window.drain(..excess);
}

/// The reader task of one topic: follows the stream until the topic has been idle for the
/// source's idle time, reconnecting with back-off after any failure.
pub(crate) async fn run(source: Arc<SourceShared>, topic: Arc<TopicShared>) {
    crate::telemetry::redis_reader_started();
    let mut connection: Option<MultiplexedConnection> = None;
    let mut backoff = BACKOFF_MIN;
    loop {
        if topic.retire(source.settings.reader_idle) {
            tracing::debug!(topic = %topic.name, "reader retired: no subscribers");
            return;
        }
        let step = async {
            let conn = match &mut connection {
                Some(conn) => conn,
                None => connection.insert(connect(&source).await?),
            };
            step(&source, &topic, conn).await
        };
        match step.await {
            Ok(()) => backoff = BACKOFF_MIN,
            Err(err) => {
                crate::telemetry::redis_reader_reconnect();
                if topic.lock().synced {
                    tracing::warn!(topic = %topic.name, error = %err, "redis reader lost its connection");
                }
                connection = None;
                topic.lost();
                tokio::time::sleep(crate::random::shorten(backoff, 0.5)).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

async fn connect(source: &SourceShared) -> Result<MultiplexedConnection, Error> {
    let timeout = source.settings.timeout;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(BLOCK + timeout));
    let connect = source
        .client
        .get_multiplexed_async_connection_with_config(&config);
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| Error::timeout())?
        .map_err(Error::redis)
}

async fn step(
    source: &SourceShared,
    topic: &TopicShared,
    conn: &mut MultiplexedConnection,
) -> Result<(), Error> {
    let window = source.settings.window;
    let (mode, epoch, head) = topic.next_read();
    if let Some(mode) = mode {
        let snap = source.read(conn, topic, mode, window).await?;
        if topic.apply_snapshot(snap, mode, window) {
            let snap = source.read(conn, topic, ReadMode::Tail, window).await?;
            topic.apply_snapshot(snap, ReadMode::Tail, window);
        }
        return Ok(());
    }
    let Some(epoch) = epoch else {
        return Ok(());
    };
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT")
        .arg(window)
        .arg("BLOCK")
        .arg(BLOCK.as_millis() as u64)
        .arg("STREAMS")
        .arg(&topic.stream_key)
        .arg(format!("0-{head}"));
    let reply = tokio::time::timeout(BLOCK + source.settings.timeout, cmd.query_async(conn))
        .await
        .map_err(|_| Error::timeout())?
        .map_err(Error::redis)?;
    let events = wire::parse_xread(reply, epoch)?;
    if !topic.apply_events(events, window) {
        // The stream was recreated under our feet: the read script sorts it out.
        topic.force_check();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventData;

    /// A read that found the stream holding the events `range` of `epoch`, and nothing else.
    fn stream(epoch: Epoch, range: std::ops::RangeInclusive<u64>) -> Snapshot {
        Snapshot {
            epoch,
            first: Some(*range.start()),
            head: *range.end(),
            entries: range.map(|seq| event(epoch, seq)).collect(),
        }
    }

    fn event(epoch: Epoch, seq: u64) -> Event {
        Event::new(
            Cursor::new(epoch, seq),
            EventData::from_serialize(&seq).unwrap(),
        )
    }

    fn seqs(local: Local) -> Vec<u64> {
        match local {
            Local::Ready(Outcome::Events(batch)) => {
                batch.events().iter().map(|e| e.id().seq()).collect()
            }
            _ => panic!("expected events"),
        }
    }

    #[test]
    fn the_window_answers_only_what_it_knows() {
        let epoch = Epoch::new(7);
        let topic = TopicShared::new(Arc::from("t"), "push:");
        let at = |seq| Position::After(Cursor::new(epoch, seq));
        assert!(matches!(topic.local(at(0), 10), Local::Syncing));
        let snap = stream(epoch, 3..=10);
        assert!(!topic.apply_snapshot(snap, ReadMode::Tail, 4));
        // The window holds 7..=10.
        assert_eq!(seqs(topic.local(at(6), 10)), vec![7, 8, 9, 10]);
        assert_eq!(seqs(topic.local(at(8), 1)), vec![9]);
        assert!(matches!(topic.local(at(10), 10), Local::Wait));
        assert!(matches!(
            topic.local(Position::Head, 10),
            Local::Ready(Outcome::Head(head)) if head == Cursor::new(epoch, 10)
        ));
        // Behind the window, beyond the head, another epoch, the oldest: Redis decides.
        assert!(matches!(topic.local(at(5), 10), Local::Unknown));
        assert!(matches!(topic.local(at(11), 10), Local::Unknown));
        let other = Position::After(Cursor::new(Epoch::new(8), 10));
        assert!(matches!(topic.local(other, 10), Local::Unknown));
        assert!(matches!(topic.local(Position::Oldest, 10), Local::Unknown));

        // Subscriptions at one cursor get the very same batch, built once, while nothing new
        // arrives after it.
        let batch = |local| match local {
            Local::Ready(Outcome::Events(batch)) => batch,
            _ => panic!("expected events"),
        };
        let (first, second) = (batch(topic.local(at(7), 10)), batch(topic.local(at(7), 10)));
        assert!(first.same(&second));

        // New events from XREAD extend the window; one of another epoch stops it.
        assert!(topic.apply_events(vec![(event(epoch, 11), true)], 4));
        assert_eq!(
            seqs(topic.local(at(7), 10)),
            vec![8, 9, 10, 11],
            "not the earlier batch"
        );
        assert_eq!(seqs(topic.local(at(10), 10)), vec![11]);
        assert!(!topic.apply_events(vec![(event(Epoch::new(8), 1), false)], 4));
        assert!(matches!(topic.local(at(11), 10), Local::Wait));

        // A snapshot of a new epoch asks for the tail; a lost connection makes it unknown.
        let newer = Snapshot {
            epoch: Epoch::new(8),
            first: Some(1),
            head: 1,
            entries: vec![],
        };
        assert!(topic.apply_snapshot(newer, ReadMode::After(11), 4));
        topic.lost();
        assert!(matches!(topic.local(at(11), 10), Local::Syncing));
    }

    #[test]
    fn a_window_never_joins_events_across_a_trimmed_hole() {
        let epoch = Epoch::new(7);
        let at = |seq| Position::After(Cursor::new(epoch, seq));
        let run = || {
            let topic = TopicShared::new(Arc::from("t"), "push:");
            let snap = stream(epoch, 1..=4);
            topic.apply_snapshot(snap, ReadMode::Tail, 8);
            assert!(matches!(topic.local(at(4), 10), Local::Wait));
            // The reader was away while 5..=9 were published and trimmed: the next read after
            // 4 finds the stream starting at 10. A client at 4 must not get 10 as if it came
            // next: the window cannot answer it any more, and Redis answers a resync.
            let snap = stream(epoch, 10..=11);
            assert!(!topic.apply_snapshot(snap, ReadMode::After(4), 8));
            assert!(matches!(topic.local(at(4), 10), Local::Unknown));
            assert_eq!(seqs(topic.local(at(9), 10)), vec![10, 11]);
            // The same over XREAD: it returns what exists after the head, from 14.
            assert!(topic.apply_events(vec![(event(epoch, 14), true)], 8));
            assert!(matches!(topic.local(at(11), 10), Local::Unknown));
            assert_eq!(seqs(topic.local(at(13), 10)), vec![14]);
            // Without a hole, nothing is counted.
            assert!(topic.apply_events(vec![(event(epoch, 15), true)], 8));
            assert_eq!(seqs(topic.local(at(13), 10)), vec![14, 15]);
        };
        #[cfg(feature = "metrics")]
        {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::with_local_recorder(&recorder, run);
            let scrape = handle.render();
            let lagged = format!("{} 2", crate::metrics::REDIS_READER_LAGGED);
            assert!(scrape.contains(&lagged), "{scrape}");
        }
        #[cfg(not(feature = "metrics"))]
        run();
    }
}
