//! The state of a store's streams and every decision about them, shared by the memory store
//! and the file store.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::store::{
    media_type, Append, Appended, Chunk, Create, Created, Doorbell, ExpiresAt, Info, Mode, Payload,
    Read, StoreError,
};
use super::{MemoryStoreBuilder, Offset};

/// The streams of a store and every decision about them: what [`MemoryStore`] keeps behind
/// its lock, and what the file store keeps in memory and writes ahead to its log.
///
/// Each change is made in two steps: the decision (checks against the current state, which
/// may refuse), then the change itself ([`insert`](Self::insert), [`apply`](Self::apply),
/// [`remove`](Self::remove)), which the journal is told of first. Recovery makes the same
/// changes from the journal's records, without deciding again: a replay ends in the state
/// the decisions left, whatever the clock says now.
///
/// [`MemoryStore`]: super::MemoryStore
#[derive(Debug)]
pub(super) struct State<J> {
    pub(super) streams: HashMap<String, Stream>,
    pub(super) bytes: usize,
    pub(super) next_epoch: u64,
    pub(super) max_streams: usize,
    pub(super) max_bytes: usize,
    pub(super) journal: J,
    /// The journal's position of the last removal: what an answer that a stream is not there
    /// waits to be durable.
    pub(super) removed_at: u64,
}

/// Where a store that keeps its streams somewhere else too (a log on disk) learns of every
/// change of a [`State`], in the order they are made. The memory store keeps nothing (`()`).
///
/// Each method but [`ring`](Self::ring) returns the change's position in the journal, which
/// grows with each change: an answer about a stream is final once the journal is durable up
/// to the stream's last change.
pub(super) trait Journal {
    /// Whether a change carrying `bytes` of data fits.
    ///
    /// # Errors
    ///
    /// [`StoreError::StorageFull`] when it does not.
    fn fits(&self, bytes: usize) -> Result<(), StoreError>;

    /// The stream at `path` is created as `stream` is.
    fn put(&mut self, path: &str, stream: &Stream) -> u64;

    /// The stream at `path` changes by `change`.
    fn change(&mut self, path: &str, change: &Change) -> u64;

    /// The stream at `path`, as `stream` is, is deleted.
    fn remove(&mut self, path: &str, stream: &Stream) -> u64;

    /// `doorbell` is to ring once the changes so far are visible.
    fn ring(&mut self, doorbell: &Doorbell);
}

impl Journal for () {
    fn fits(&self, _bytes: usize) -> Result<(), StoreError> {
        Ok(())
    }

    fn put(&mut self, _path: &str, _stream: &Stream) -> u64 {
        0
    }

    fn change(&mut self, _path: &str, _change: &Change) -> u64 {
        0
    }

    fn remove(&mut self, _path: &str, _stream: &Stream) -> u64 {
        0
    }

    fn ring(&mut self, doorbell: &Doorbell) {
        doorbell.ring();
    }
}

/// A store that keeps a [`State`] behind a lock: how it decides, and when an answer may leave.
/// [`store_over_state!`] implements [`Store`](super::Store) with it.
pub(super) trait Locked {
    /// What the store's state tells of its changes.
    type Journal: Journal;

    /// Decides with `decide` under the lock (a write, unless the store takes none now), and
    /// says where the journal must be durable for the answer to leave.
    fn decide<T>(
        &self,
        path: &str,
        write: bool,
        decide: impl FnOnce(&mut State<Self::Journal>) -> Result<T, StoreError>,
    ) -> (Result<T, StoreError>, u64);

    /// The answer, once it may leave.
    fn answer<T: Send + 'static>(
        &self,
        decided: (Result<T, StoreError>, u64),
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static;
}

/// Implements [`Store`](super::Store) for a [`Locked`] store: each method one decision of its
/// state.
macro_rules! store_over_state {
    ($store:ty) => {
        impl $crate::durable::Store for $store {
            fn create(
                &self,
                path: &str,
                create: $crate::durable::Create,
            ) -> impl ::std::future::Future<
                Output = Result<$crate::durable::Created, $crate::durable::StoreError>,
            > + Send
                   + 'static {
                self.answer(self.decide(path, true, |state| state.create(path, create)))
            }

            fn append(
                &self,
                path: &str,
                append: $crate::durable::Append,
            ) -> impl ::std::future::Future<
                Output = Result<$crate::durable::Appended, $crate::durable::StoreError>,
            > + Send
                   + 'static {
                self.answer(self.decide(path, true, |state| state.append(path, append)))
            }

            fn read(
                &self,
                path: &str,
                after: Option<$crate::durable::Offset>,
                max_chunks: usize,
                max_bytes: usize,
            ) -> impl ::std::future::Future<
                Output = Result<$crate::durable::Read, $crate::durable::StoreError>,
            > + Send
                   + 'static {
                let read = |state: &mut _| {
                    $crate::durable::state::State::read(state, path, after, max_chunks, max_bytes)
                };
                self.answer(self.decide(path, false, read))
            }

            fn info(
                &self,
                path: &str,
            ) -> impl ::std::future::Future<
                Output = Result<$crate::durable::Info, $crate::durable::StoreError>,
            > + Send
                   + 'static {
                self.answer(self.decide(path, false, |state| state.info(path)))
            }

            fn delete(
                &self,
                path: &str,
            ) -> impl ::std::future::Future<Output = Result<(), $crate::durable::StoreError>>
                   + Send
                   + 'static {
                self.answer(self.decide(path, true, |state| state.delete(path)))
            }

            fn changes(
                &self,
                path: &str,
            ) -> Result<$crate::durable::Doorbell, $crate::durable::StoreError> {
                self.decide(path, false, |state| state.changes(path)).0
            }
        }
    };
}

pub(super) use store_over_state;

/// What an accepted append changes in its stream: data, `Stream-Seq`, a producer's state,
/// closure; all of it or none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Change {
    pub(super) payload: Option<Payload>,
    pub(super) stream_seq: Option<String>,
    /// The producer's id, epoch and sequence number.
    pub(super) producer: Option<(String, u64, u64)>,
    pub(super) close: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ForkLink {
    pub(super) source: String,
    pub(super) offset: Offset,
    pub(super) sub_offset: u64,
}

#[derive(Clone, Debug)]
pub(super) struct Stream {
    pub(super) epoch: u64,
    pub(super) content_type: String,
    pub(super) mode: Mode,
    pub(super) ttl: Option<u64>,
    pub(super) expires_at: Option<ExpiresAt>,
    pub(super) fork: Option<ForkLink>,
    pub(super) chunks: Vec<Chunk>,
    pub(super) tail: Offset,
    pub(super) closed: bool,
    pub(super) closed_by: Option<(String, u64, u64)>,
    pub(super) last_seq: Option<String>,
    pub(super) producers: HashMap<String, (u64, u64)>,
    pub(super) last_access: Instant,
    pub(super) refs: usize,
    pub(super) deleted: bool,
    pub(super) doorbell: Doorbell,
    /// The journal's position of its last change.
    pub(super) lsn: u64,
    pub(super) bytes: usize,
}

impl Stream {
    fn expired(&self, now: Instant, wall_ms: i64) -> bool {
        // A TTL that takes the clock beyond what it can count never ends.
        let by_ttl = self.ttl.is_some_and(|ttl| {
            self.last_access
                .checked_add(Duration::from_secs(ttl))
                .is_some_and(|end| now >= end)
        });
        let by_time = self
            .expires_at
            .as_ref()
            .is_some_and(|at| wall_ms >= at.unix_ms);
        by_ttl || by_time
    }

    pub(super) fn info(&self) -> Info {
        Info {
            epoch: self.epoch,
            content_type: self.content_type.clone(),
            tail: self.tail,
            closed: self.closed,
            ttl: self.ttl,
            expires_at: self.expires_at.as_ref().map(|at| at.text.clone()),
        }
    }

    pub(super) fn push(&mut self, payload: Payload) -> usize {
        let size = cost(&payload);
        self.tail = self.tail.next();
        self.chunks.push(Chunk {
            offset: self.tail,
            payload,
        });
        self.bytes += size;
        size
    }
}

/// About what a heap block costs besides its contents: the allocator's header, the rounding up
/// to its size class, and the reference counts a block of shared bytes comes with.
const BLOCK_COST: usize = 64;

/// What the store counts for an append besides its data: its entry in the stream's list of
/// appends, which may have twice the room it uses, and up to three heap blocks (the data, the
/// reference count of shared bytes, the list of JSON values).
const APPEND_COST: usize = 2 * size_of::<Chunk>() + 3 * BLOCK_COST;

/// What the store counts for a JSON value besides its text: its handle in the append's list.
/// The values of an append share one block of text ([`Payload::parse`]).
const VALUE_COST: usize = size_of::<bytes::Bytes>();

/// What an append of `payload` counts against the store's bound: see
/// [`MemoryStoreBuilder::max_bytes`](super::MemoryStoreBuilder::max_bytes).
pub(super) fn cost(payload: &Payload) -> usize {
    APPEND_COST
        + match payload {
            Payload::Bytes(bytes) => bytes.len(),
            Payload::Json(values) => values.iter().map(|v| v.len() + VALUE_COST).sum(),
        }
}

fn wall_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_millis() as i64,
        Err(before) => -(before.duration().as_millis() as i64),
    }
}

impl<J: Journal> State<J> {
    /// No streams yet, within the bounds of `bounds`, telling `journal` of every change.
    pub(super) fn new(bounds: &MemoryStoreBuilder, journal: J) -> Self {
        Self {
            streams: HashMap::new(),
            bytes: 0,
            next_epoch: crate::random::u64() >> 16,
            max_streams: bounds.max_streams,
            max_bytes: bounds.max_bytes,
            journal,
            removed_at: 0,
        }
    }

    /// Removes or retires the stream at `path` if it has expired.
    fn expire(&mut self, path: &str) {
        let (now, wall) = (Instant::now(), wall_ms());
        let expired = self
            .streams
            .get(path)
            .is_some_and(|s| !s.deleted && s.expired(now, wall));
        if expired {
            self.delete_now(path);
        }
    }

    /// Deletes the stream at `path`, journal first.
    fn delete_now(&mut self, path: &str) {
        let Some(stream) = self.streams.get(path) else {
            return;
        };
        let lsn = self.journal.remove(path, stream);
        self.removed_at = lsn;
        if let Some(stream) = self.streams.get_mut(path) {
            stream.lsn = lsn;
        }
        self.remove(path);
    }

    /// Deletes the stream at `path`: retires it while forks read from it, removes it otherwise
    /// and lets go of what it read from, removing retired sources no fork reads any more.
    pub(super) fn remove(&mut self, path: &str) {
        let Some(stream) = self.streams.get_mut(path) else {
            return;
        };
        self.journal.ring(&stream.doorbell);
        if stream.refs > 0 {
            stream.deleted = true;
            return;
        }
        let mut next = self.streams.remove(path);
        while let Some(stream) = next.take() {
            self.bytes -= stream.bytes;
            self.journal.ring(&stream.doorbell);
            let Some(fork) = stream.fork else { break };
            if let Some(source) = self.streams.get_mut(&fork.source) {
                source.refs -= 1;
                if source.refs == 0 && source.deleted {
                    next = self.streams.remove(&fork.source);
                }
            }
        }
    }

    /// Adds `stream` at `path`, as it is.
    pub(super) fn insert(&mut self, path: String, stream: Stream) {
        if let Some(fork) = &stream.fork {
            if let Some(source) = self.streams.get_mut(&fork.source) {
                source.refs += 1;
            }
        }
        self.bytes += stream.bytes;
        self.next_epoch = self.next_epoch.max(stream.epoch.saturating_add(1));
        self.streams.insert(path, stream);
    }

    /// Changes the stream at `path` by `change`, which was decided on it.
    pub(super) fn apply(&mut self, path: &str, change: Change) {
        let Some(stream) = self.streams.get_mut(path) else {
            return;
        };
        if let Some(payload) = change.payload {
            self.bytes += stream.push(payload);
        }
        if let Some(seq) = change.stream_seq {
            stream.last_seq = Some(seq);
        }
        if let Some((id, epoch, seq)) = &change.producer {
            stream.producers.insert(id.clone(), (*epoch, *seq));
        }
        if change.close {
            stream.closed = true;
            stream.closed_by = change.producer;
        }
        self.journal.ring(&stream.doorbell);
    }

    pub(super) fn delete(&mut self, path: &str) -> Result<(), StoreError> {
        self.live(path)?;
        self.delete_now(path);
        Ok(())
    }

    pub(super) fn info(&mut self, path: &str) -> Result<Info, StoreError> {
        self.live(path).map(|stream| stream.info())
    }

    pub(super) fn changes(&mut self, path: &str) -> Result<Doorbell, StoreError> {
        self.live(path).map(|stream| stream.doorbell.clone())
    }

    /// The journal's position that an answer about the stream at `path` is final at: its last
    /// change, or the last removal where there is no stream.
    #[cfg_attr(not(feature = "durable-file"), allow(dead_code))]
    pub(super) fn lsn_of(&self, path: &str) -> u64 {
        self.streams.get(path).map_or(self.removed_at, |s| s.lsn)
    }

    /// The stream at `path`, if it exists and is not deleted.
    pub(super) fn live(&mut self, path: &str) -> Result<&mut Stream, StoreError> {
        self.expire(path);
        match self.streams.get_mut(path) {
            None => Err(StoreError::NotFound),
            Some(stream) if stream.deleted => Err(StoreError::Gone),
            Some(stream) => Ok(stream),
        }
    }

    /// The appends of the stream at `path` (and of what it was forked from) after `after` and
    /// at most at `upto`, oldest first, as many as `budget` allows.
    fn collect(&self, path: &str, after: Offset, upto: Offset, budget: &mut Budget) {
        let Some(stream) = self.streams.get(path) else {
            return;
        };
        if let Some(fork) = &stream.fork {
            if after < fork.offset {
                self.collect(&fork.source, after, upto.min(fork.offset), budget);
            }
        }
        let start = stream.chunks.partition_point(|c| c.offset <= after);
        for chunk in stream.chunks[start..]
            .iter()
            .take_while(|c| c.offset <= upto)
        {
            if !budget.take(chunk) {
                return;
            }
        }
    }

    /// Whether `size` more bytes fit, in memory and in the journal.
    fn fits(&self, size: usize) -> Result<(), StoreError> {
        if self.bytes.saturating_add(size) > self.max_bytes {
            return Err(StoreError::StorageFull);
        }
        self.journal.fits(size)
    }

    pub(super) fn create(&mut self, path: &str, create: Create) -> Result<Created, StoreError> {
        self.expire(path);
        if let Some(existing) = self.streams.get(path) {
            if existing.deleted {
                return Err(StoreError::ConfigMismatch);
            }
            return if same_config(existing, &create) {
                Ok(Created {
                    created: false,
                    info: existing.info(),
                })
            } else {
                Err(StoreError::ConfigMismatch)
            };
        }
        if self.streams.len() >= self.max_streams {
            return Err(StoreError::TooManyStreams);
        }
        let mut content_type = create
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        let (mut ttl, mut expires_at) = (create.ttl, create.expires_at.clone());
        let mut fork = None;
        let mut prefix = None;
        let mut tail = Offset::ZERO;
        if let Some(from) = &create.fork {
            self.expire(&from.source);
            let source = match self.streams.get(&from.source) {
                None => return Err(StoreError::ForkSourceNotFound),
                Some(source) if source.deleted => return Err(StoreError::ForkSourceGone),
                Some(source) => source,
            };
            match &create.content_type {
                Some(given) if media_type(given) != media_type(&source.content_type) => {
                    return Err(StoreError::ContentTypeMismatch)
                }
                Some(_) => {}
                None => content_type = source.content_type.clone(),
            }
            let offset = from.offset.unwrap_or(source.tail);
            if offset > source.tail {
                return Err(StoreError::ForkOffsetBeyondTail);
            }
            if ttl.is_none() && expires_at.is_none() {
                ttl = source.ttl;
                expires_at = source.expires_at.clone();
            }
            if from.sub_offset > 0 {
                let mut anchor = Budget::new(1, usize::MAX);
                self.collect(&from.source, offset, Offset::new(u64::MAX), &mut anchor);
                let cut = anchor
                    .chunks
                    .first()
                    .and_then(|chunk| chunk.payload.prefix(from.sub_offset))
                    .ok_or(StoreError::InvalidSubOffset)?;
                prefix = Some(cut);
            }
            tail = offset;
            fork = Some(ForkLink {
                source: from.source.clone(),
                offset,
                sub_offset: from.sub_offset,
            });
        }
        let mode = Mode::of(&content_type);
        let body = Payload::parse(mode, create.body.clone(), true)?;
        let size = prefix.as_ref().map_or(0, cost) + body.as_ref().map_or(0, cost);
        self.fits(size)?;
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        let mut stream = Stream {
            epoch,
            content_type,
            mode,
            ttl,
            expires_at,
            fork,
            chunks: Vec::new(),
            tail,
            closed: create.closed,
            closed_by: None,
            last_seq: None,
            producers: HashMap::new(),
            last_access: Instant::now(),
            refs: 0,
            deleted: false,
            doorbell: Doorbell::new(),
            lsn: 0,
            bytes: 0,
        };
        for payload in prefix.into_iter().chain(body) {
            stream.push(payload);
        }
        stream.lsn = self.journal.put(path, &stream);
        let info = stream.info();
        self.insert(path.to_owned(), stream);
        Ok(Created {
            created: true,
            info,
        })
    }

    pub(super) fn append(&mut self, path: &str, append: Append) -> Result<Appended, StoreError> {
        let max_bytes = self.max_bytes;
        let total = self.bytes;
        let stream = self.live(path)?;
        stream.last_access = Instant::now();
        let close_only = append.body.is_empty() && append.close;
        let tuple = append
            .producer
            .as_ref()
            .map(|p| (p.id.clone(), p.epoch, p.seq));
        if stream.closed {
            let echo = |tail| Appended {
                tail,
                closed: true,
                wrote: false,
                producer: append.producer.as_ref().map(|p| (p.epoch, p.seq)),
            };
            return match (&tuple, &stream.closed_by) {
                (Some(tuple), Some(by)) if tuple == by => Ok(echo(stream.tail)),
                (None, _) if close_only => Ok(echo(stream.tail)),
                _ => Err(StoreError::Closed { tail: stream.tail }),
            };
        }
        if !close_only {
            let given = append.content_type.as_deref().unwrap_or_default();
            if media_type(given) != media_type(&stream.content_type) {
                return Err(StoreError::ContentTypeMismatch);
            }
        }
        if let Some(producer) = &append.producer {
            match stream.producers.get(&producer.id) {
                None if producer.seq != 0 => {
                    return Err(StoreError::SeqGap {
                        expected: 0,
                        received: producer.seq,
                    })
                }
                None => {}
                Some(&(epoch, _)) if producer.epoch < epoch => {
                    return Err(StoreError::StaleEpoch { current: epoch })
                }
                Some(&(epoch, _)) if producer.epoch > epoch && producer.seq != 0 => {
                    return Err(StoreError::EpochSeqNotZero)
                }
                Some(&(epoch, last)) if producer.epoch == epoch && producer.seq <= last => {
                    // A retry of a write that was accepted: nothing to do.
                    return Ok(Appended {
                        tail: stream.tail,
                        closed: stream.closed || append.close,
                        wrote: false,
                        producer: Some((epoch, last)),
                    });
                }
                Some(&(epoch, last)) if producer.epoch == epoch && producer.seq > last + 1 => {
                    return Err(StoreError::SeqGap {
                        expected: last + 1,
                        received: producer.seq,
                    })
                }
                Some(_) => {}
            }
        }
        if let (Some(seq), Some(last)) = (&append.stream_seq, &stream.last_seq) {
            if seq.as_bytes() <= last.as_bytes() {
                return Err(StoreError::SeqRegression);
            }
        }
        let payload = Payload::parse(stream.mode, append.body.clone(), false)?;
        let size = payload.as_ref().map_or(0, cost);
        if total.saturating_add(size) > max_bytes {
            return Err(StoreError::StorageFull);
        }
        self.journal.fits(size)?;
        let wrote = payload.is_some();
        let change = Change {
            payload,
            stream_seq: append.stream_seq,
            producer: tuple,
            close: append.close,
        };
        let lsn = self.journal.change(path, &change);
        self.apply(path, change);
        let stream = self.streams.get_mut(path).expect("changed above");
        stream.lsn = lsn;
        Ok(Appended {
            tail: stream.tail,
            closed: stream.closed,
            wrote,
            producer: append.producer.as_ref().map(|p| (p.epoch, p.seq)),
        })
    }

    pub(super) fn read(
        &mut self,
        path: &str,
        after: Option<Offset>,
        max_chunks: usize,
        max_bytes: usize,
    ) -> Result<Read, StoreError> {
        let stream = self.live(path)?;
        stream.last_access = Instant::now();
        let info = stream.info();
        let from = after.unwrap_or(info.tail);
        if from > info.tail {
            return Err(StoreError::OffsetBeyondTail);
        }
        let mut budget = Budget::new(max_chunks, max_bytes);
        if max_chunks > 0 && from < info.tail {
            self.collect(path, from, info.tail, &mut budget);
        }
        Ok(Read {
            info,
            from,
            chunks: budget.chunks,
        })
    }
}

/// What one read may still take: whole appends, at most `max_chunks`, and at most `max_bytes`
/// together unless the first alone is larger.
struct Budget {
    chunks: Vec<Chunk>,
    max_chunks: usize,
    bytes: usize,
    max_bytes: usize,
    full: bool,
}

impl Budget {
    fn new(max_chunks: usize, max_bytes: usize) -> Self {
        Self {
            chunks: Vec::new(),
            max_chunks,
            bytes: 0,
            max_bytes,
            full: false,
        }
    }

    /// Takes `chunk` if it fits; `false` once the budget is spent.
    fn take(&mut self, chunk: &Chunk) -> bool {
        let size = chunk.payload.size();
        let fits = fits(
            self.chunks.len(),
            self.bytes,
            size,
            self.max_chunks,
            self.max_bytes,
        );
        if self.full || !fits {
            self.full = true;
            return false;
        }
        self.bytes += size;
        self.chunks.push(chunk.clone());
        true
    }
}

/// Whether an append of `size` bytes fits in a read that holds `count` appends of `bytes`
/// already: at most `max_chunks` appends, of at most `max_bytes` together unless the first
/// alone is larger.
pub(super) fn fits(
    count: usize,
    bytes: usize,
    size: usize,
    max_chunks: usize,
    max_bytes: usize,
) -> bool {
    count < max_chunks && (count == 0 || bytes.saturating_add(size) <= max_bytes)
}

/// Whether a create request matches the existing stream (an idempotent `PUT`).
fn same_config(stream: &Stream, create: &Create) -> bool {
    let content_type = match (&create.content_type, &create.fork) {
        (Some(given), _) => media_type(given) == media_type(&stream.content_type),
        (None, Some(_)) => true,
        (None, None) => media_type(&stream.content_type) == "application/octet-stream",
    };
    let fork = match (&create.fork, &stream.fork) {
        (None, None) => true,
        (Some(asked), Some(link)) => {
            asked.source == link.source
                && asked.offset.is_none_or(|offset| offset == link.offset)
                && asked.sub_offset == link.sub_offset
        }
        _ => false,
    };
    let expiry = match &create.fork {
        // A fork without expiry of its own inherits the source's.
        Some(_) if create.ttl.is_none() && create.expires_at.is_none() => true,
        _ => {
            create.ttl == stream.ttl
                && create.expires_at.as_ref().map(|at| at.unix_ms)
                    == stream.expires_at.as_ref().map(|at| at.unix_ms)
        }
    };
    content_type && fork && expiry && create.closed == stream.closed
}
