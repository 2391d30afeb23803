//! The embedded store: every stream in this process's memory.

use std::collections::HashMap;
use std::future::{ready, Future};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::store::{
    media_type, Append, Appended, Chunk, Create, Created, Doorbell, ExpiresAt, Info, Mode, Payload,
    Read, Store, StoreError,
};
use super::Offset;

/// The embedded [`Store`]: streams in memory, bounded in number and bytes.
///
/// Cloning is cheap and shares the streams. One lock covers every stream, so each operation is
/// atomic; operations copy no stream data while they hold it (payloads are reference counted).
/// Expiry is checked lazily, with millisecond precision, whenever a stream is reached; a TTL
/// whose window would end beyond what the platform's monotonic clock can represent never ends.
///
/// # Examples
///
/// ```
/// use tower_push::durable::{Append, Create, MemoryStore, Offset, Store};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_push::durable::StoreError> {
/// let store = MemoryStore::builder().max_streams(100).max_bytes(1 << 20).build();
/// store.create("/a", Create::new(Some("text/plain".into()))).await?;
/// let appended = store.append("/a", Append::new("text/plain", "hello")).await?;
/// assert_eq!(appended.tail, Offset::new(1));
/// let read = store.read("/a", Some(Offset::ZERO), 10, 1024).await?;
/// assert_eq!(read.chunks.len(), 1);
/// assert!(read.up_to_date());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

/// Settings of a [`MemoryStore`].
#[derive(Clone, Debug)]
pub struct MemoryStoreBuilder {
    max_streams: usize,
    max_bytes: usize,
}

impl MemoryStoreBuilder {
    /// The most streams the store holds (deleted streams that forks still read count); creating
    /// another answers `507 Insufficient Storage`.
    ///
    /// Default is 100,000.
    #[must_use]
    pub fn max_streams(mut self, max: usize) -> Self {
        self.max_streams = max;
        self
    }

    /// The most bytes of stream data the store holds; an append beyond answers
    /// `507 Insufficient Storage`.
    ///
    /// An append counts what it costs in memory, not only its data: its data, plus 272 bytes
    /// for its bookkeeping (its entry in the stream's list of appends and up to three heap
    /// blocks), plus 32 bytes for each JSON value of it (the value's handle), so the bound
    /// holds whatever the shape of the data. (Those are the figures on 64-bit targets.)
    /// Deleting a stream gives back what it counted.
    ///
    /// Default is 1 GiB.
    #[must_use]
    pub fn max_bytes(mut self, max: usize) -> Self {
        self.max_bytes = max;
        self
    }

    /// The store.
    pub fn build(self) -> MemoryStore {
        MemoryStore {
            inner: Arc::new(Mutex::new(Inner {
                streams: HashMap::new(),
                bytes: 0,
                next_epoch: crate::random::u64() >> 16,
                max_streams: self.max_streams,
                max_bytes: self.max_bytes,
            })),
        }
    }
}

impl Default for MemoryStoreBuilder {
    fn default() -> Self {
        Self {
            max_streams: 100_000,
            max_bytes: 1 << 30,
        }
    }
}

impl MemoryStore {
    /// A store with the default bounds.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for other bounds.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder::default()
    }

    /// How many streams the store holds, deleted ones that forks still read included.
    pub fn len(&self) -> usize {
        self.lock().streams.len()
    }

    /// Whether the store holds no stream.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many bytes of stream data the store holds, as
    /// [`max_bytes`](MemoryStoreBuilder::max_bytes) counts them.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug)]
struct Inner {
    streams: HashMap<String, Stream>,
    bytes: usize,
    next_epoch: u64,
    max_streams: usize,
    max_bytes: usize,
}

#[derive(Debug)]
struct ForkLink {
    source: String,
    offset: Offset,
    sub_offset: u64,
}

#[derive(Debug)]
struct Stream {
    epoch: u64,
    content_type: String,
    mode: Mode,
    ttl: Option<u64>,
    expires_at: Option<ExpiresAt>,
    fork: Option<ForkLink>,
    chunks: Vec<Chunk>,
    tail: Offset,
    closed: bool,
    closed_by: Option<(String, u64, u64)>,
    last_seq: Option<String>,
    producers: HashMap<String, (u64, u64)>,
    last_access: Instant,
    refs: usize,
    deleted: bool,
    doorbell: Doorbell,
    bytes: usize,
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

    fn info(&self) -> Info {
        Info {
            epoch: self.epoch,
            content_type: self.content_type.clone(),
            tail: self.tail,
            closed: self.closed,
            ttl: self.ttl,
            expires_at: self.expires_at.as_ref().map(|at| at.text.clone()),
        }
    }

    fn push(&mut self, payload: Payload) -> usize {
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
/// [`MemoryStoreBuilder::max_bytes`].
fn cost(payload: &Payload) -> usize {
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

impl Inner {
    /// Removes or retires the stream at `path` if it has expired.
    fn expire(&mut self, path: &str) {
        let (now, wall) = (Instant::now(), wall_ms());
        let expired = self
            .streams
            .get(path)
            .is_some_and(|s| !s.deleted && s.expired(now, wall));
        if expired {
            self.remove(path);
        }
    }

    /// Deletes the stream at `path`: retires it while forks read from it, removes it otherwise
    /// and lets go of what it read from, removing retired sources no fork reads any more.
    fn remove(&mut self, path: &str) {
        let Some(stream) = self.streams.get_mut(path) else {
            return;
        };
        stream.doorbell.ring();
        if stream.refs > 0 {
            stream.deleted = true;
            return;
        }
        let mut next = self.streams.remove(path);
        while let Some(stream) = next.take() {
            self.bytes -= stream.bytes;
            stream.doorbell.ring();
            let Some(fork) = stream.fork else { break };
            if let Some(source) = self.streams.get_mut(&fork.source) {
                source.refs -= 1;
                if source.refs == 0 && source.deleted {
                    next = self.streams.remove(&fork.source);
                }
            }
        }
    }

    fn delete(&mut self, path: &str) -> Result<(), StoreError> {
        self.live(path)?;
        self.remove(path);
        Ok(())
    }

    /// The stream at `path`, if it exists and is not deleted.
    fn live(&mut self, path: &str) -> Result<&mut Stream, StoreError> {
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

    /// Whether `size` more bytes fit.
    fn fits(&self, size: usize) -> Result<(), StoreError> {
        if self.bytes.saturating_add(size) > self.max_bytes {
            return Err(StoreError::StorageFull);
        }
        Ok(())
    }

    fn create(&mut self, path: &str, create: Create) -> Result<Created, StoreError> {
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
            bytes: 0,
        };
        for payload in prefix.into_iter().chain(body) {
            self.bytes += stream.push(payload);
        }
        if let Some(fork) = &stream.fork {
            if let Some(source) = self.streams.get_mut(&fork.source) {
                source.refs += 1;
            }
        }
        let info = stream.info();
        self.streams.insert(path.to_owned(), stream);
        Ok(Created {
            created: true,
            info,
        })
    }

    fn append(&mut self, path: &str, append: Append) -> Result<Appended, StoreError> {
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
        let wrote = payload.is_some();
        let mut added = 0;
        if let Some(payload) = payload {
            added = stream.push(payload);
        }
        if let Some(seq) = append.stream_seq {
            stream.last_seq = Some(seq);
        }
        if let Some(producer) = &append.producer {
            stream
                .producers
                .insert(producer.id.clone(), (producer.epoch, producer.seq));
        }
        if append.close {
            stream.closed = true;
            stream.closed_by = tuple;
        }
        stream.doorbell.ring();
        let appended = Appended {
            tail: stream.tail,
            closed: stream.closed,
            wrote,
            producer: append.producer.as_ref().map(|p| (p.epoch, p.seq)),
        };
        self.bytes += added;
        Ok(appended)
    }

    fn read(
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
        let fits = self.chunks.len() < self.max_chunks
            && (self.chunks.is_empty() || self.bytes.saturating_add(size) <= self.max_bytes);
        if self.full || !fits {
            self.full = true;
            return false;
        }
        self.bytes += size;
        self.chunks.push(chunk.clone());
        true
    }
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

impl Store for MemoryStore {
    fn create(
        &self,
        path: &str,
        create: Create,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send + 'static {
        ready(self.lock().create(path, create))
    }

    fn append(
        &self,
        path: &str,
        append: Append,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send + 'static {
        ready(self.lock().append(path, append))
    }

    fn read(
        &self,
        path: &str,
        after: Option<Offset>,
        max_chunks: usize,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Read, StoreError>> + Send + 'static {
        ready(self.lock().read(path, after, max_chunks, max_bytes))
    }

    fn info(&self, path: &str) -> impl Future<Output = Result<Info, StoreError>> + Send + 'static {
        ready(self.lock().live(path).map(|stream| stream.info()))
    }

    fn delete(&self, path: &str) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        ready(self.lock().delete(path))
    }

    fn changes(&self, path: &str) -> Result<Doorbell, StoreError> {
        self.lock().live(path).map(|stream| stream.doorbell.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_page_through_whole_appends_across_a_fork() {
        let store = MemoryStore::new();
        store
            .create("/s", Create::new(Some("text/plain".into())))
            .await
            .unwrap();
        for part in ["aaaa", "bb", "cccccc"] {
            store
                .append("/s", Append::new("text/plain", part))
                .await
                .unwrap();
        }
        let mut fork = Create::new(None);
        fork.fork = Some(super::super::ForkFrom {
            source: "/s".into(),
            offset: Some(Offset::new(2)),
            sub_offset: 0,
        });
        store.create("/f", fork).await.unwrap();
        store
            .append("/f", Append::new("text/plain", "dd"))
            .await
            .unwrap();

        let mut after = Offset::ZERO;
        let mut pages = Vec::new();
        loop {
            let read = store.read("/f", Some(after), 10, 5).await.unwrap();
            let page: Vec<u8> = read
                .chunks
                .iter()
                .flat_map(|chunk| match &chunk.payload {
                    Payload::Bytes(bytes) => bytes.to_vec(),
                    Payload::Json(_) => unreachable!(),
                })
                .collect();
            pages.push(String::from_utf8(page).unwrap());
            after = read.next();
            if read.up_to_date() {
                break;
            }
        }
        // At most 5 bytes a page unless one append alone is larger; never half an append.
        assert_eq!(pages, ["aaaa", "bbdd"]);
        assert_eq!(after, Offset::new(3));
        let one = store
            .read("/s", Some(Offset::ZERO), 1, usize::MAX)
            .await
            .unwrap();
        assert_eq!(one.chunks.len(), 1);
        assert!(!one.up_to_date());
    }

    #[tokio::test]
    async fn a_ttl_beyond_the_clock_never_expires_and_the_stream_stays_usable() {
        let store = MemoryStore::new();
        let mut create = Create::new(Some("text/plain".into()));
        create.ttl = Some(u64::MAX);
        assert!(store.create("/s", create.clone()).await.unwrap().created);
        // Each of these reaches the stream's expiry check.
        assert!(!store.create("/s", create).await.unwrap().created);
        store
            .append("/s", Append::new("text/plain", "a"))
            .await
            .unwrap();
        let read = store
            .read("/s", Some(Offset::ZERO), 10, 1024)
            .await
            .unwrap();
        assert_eq!(read.chunks.len(), 1);
        assert_eq!(store.info("/s").await.unwrap().ttl, Some(u64::MAX));
        store.changes("/s").unwrap();
        store.delete("/s").await.unwrap();
        assert_eq!(store.info("/s").await, Err(StoreError::NotFound));
    }

    /// A JSON array of many tiny values costs a handle per value besides its text, and many
    /// tiny appends cost their entries: the bound counts both, and a delete gives them back.
    #[tokio::test]
    async fn the_byte_bound_counts_what_tiny_values_and_appends_cost() {
        const MAX: usize = 8 << 20;
        let store = MemoryStore::builder().max_bytes(MAX).build();
        store
            .create("/j", Create::new(Some("application/json".into())))
            .await
            .unwrap();
        // 100,000 values of one digit each: a 200 KB body.
        let body = bytes::Bytes::from(format!("[{}1]", "1,".repeat(99_999)));
        let mut values = 0;
        while store
            .append("/j", Append::new("application/json", body.clone()))
            .await
            .is_ok()
        {
            values += 100_000;
        }
        let held = values * (size_of::<bytes::Bytes>() + 1);
        assert!(
            values > 0 && held <= MAX,
            "{values} values held in {MAX} bytes"
        );
        assert!(store.bytes() >= held && store.bytes() <= MAX);
        store.delete("/j").await.unwrap();
        assert_eq!(store.bytes(), 0);

        const SMALL: usize = 64 << 10;
        let store = MemoryStore::builder().max_bytes(SMALL).build();
        store
            .create("/t", Create::new(Some("text/plain".into())))
            .await
            .unwrap();
        let mut appends = 0;
        while store
            .append("/t", Append::new("text/plain", "x"))
            .await
            .is_ok()
        {
            appends += 1;
        }
        let held = appends * (size_of::<Chunk>() + 1);
        assert!(
            appends > 0 && held <= SMALL,
            "{appends} appends held in {SMALL} bytes"
        );
        store.delete("/t").await.unwrap();
        assert_eq!(store.bytes(), 0);
    }
}
