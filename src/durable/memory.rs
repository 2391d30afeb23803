//! The embedded store: every stream in this process's memory.

use std::future::{ready, Future};
use std::sync::{Arc, Mutex};

use super::state::{store_over_state, Locked, State};
use super::store::StoreError;
use crate::sync::MutexExt;

/// The embedded [`Store`](super::Store): streams in memory, bounded in number and bytes.
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
    inner: Arc<Mutex<State<()>>>,
}

/// Settings of a [`MemoryStore`].
#[derive(Clone, Debug)]
pub struct MemoryStoreBuilder {
    pub(super) max_streams: usize,
    pub(super) max_bytes: usize,
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
            inner: Arc::new(Mutex::new(State::new(&self, ()))),
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

    fn lock(&self) -> std::sync::MutexGuard<'_, State<()>> {
        self.inner.locked()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Locked for MemoryStore {
    type Journal = ();

    fn decide<T>(
        &self,
        _path: &str,
        _write: bool,
        decide: impl FnOnce(&mut State<()>) -> Result<T, StoreError>,
    ) -> (Result<T, StoreError>, u64) {
        (decide(&mut self.lock()), 0)
    }

    fn answer<T: Send + 'static>(
        &self,
        (answer, _): (Result<T, StoreError>, u64),
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        ready(answer)
    }
}

store_over_state!(MemoryStore);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::{Append, Chunk, Create, Offset, Payload, Store};

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
