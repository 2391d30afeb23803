//! The file store: every stream in memory, every change written ahead to a log on disk and
//! synced before it is acknowledged, several writers' changes sharing one sync.

mod log;
mod media;
#[cfg(test)]
mod tests;
mod waiters;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use self::log::{Record, Scanned, Unreadable, Writer};
use self::media::{Disk, Media, OpenFailed};
use self::waiters::Waiters;
use super::state::{store_over_state, Change, Journal, Locked, State, Stream};
use super::store::{Doorbell, StoreError};
use super::MemoryStoreBuilder;
use crate::sync::MutexExt;

/// A [`Store`](super::Store) that keeps its streams in a directory and survives a crash: an acknowledged
/// append (create, close, delete) is on disk, with the producer state it changed, before its
/// answer leaves.
///
/// # What it promises
///
/// An answer the store gives, success or refusal, rests only on changes that were synced to
/// disk (`fdatasync`) before it: after a crash of the process, or of the machine, every
/// acknowledged change comes back, in order, byte for byte, and a retried idempotent append is
/// recognised as the duplicate it is. This holds as far as the disk keeps what a sync said it
/// keeps: a drive with a volatile write cache that it does not flush on request, or a file
/// system mounted to ignore syncs, can still lose acknowledged data on a power loss.
///
/// # How
///
/// The streams live in memory, as in [`MemoryStore`](super::MemoryStore), and every change is
/// appended to one log file before it is answered, as a database's write-ahead log is. One
/// thread writes the log: it takes every change made since its last sync, writes them as one
/// batch and syncs once, so concurrent writers (of any streams) share a sync and an append
/// waits about one sync, whatever the number of writers. Reads are served from memory, and
/// never return a change that is not durable yet (they wait for its sync). When more than half
/// of the log (and at least 64 MiB) is streams deleted or expired since, or it nears its bound
/// with a sixteenth of the bound to gain, it is rewritten with what is live, so deletes and
/// expiries give their space back.
///
/// At start, the log is read back: every batch is checked (CRC-32) and applied whole; a last
/// batch that a crash cut short is cut off (it was never acknowledged); damage before a batch
/// that checks (data that a later sync acknowledged) refuses the start rather than lose it.
///
/// # The directory
///
/// - `log`: the log (format version 1): a 16-byte header, then batches.
/// - `log.new`: a compaction's new log while it is written; thrown away at start.
/// - `lock`: held locked (an advisory lock) while a store has the directory open, so a second
///   process on it is refused.
///
/// Stream names are data in the log, never file names. To back the directory up, copy `log`
/// while no compaction runs (or stop the store): a copy that ends in the middle of a batch
/// still opens, without that batch.
///
/// # Bounds
///
/// [`memory`](FileStoreBuilder::memory) bounds the streams in memory as a memory store's are, and
/// [`max_log_bytes`](FileStoreBuilder::max_log_bytes) the log: a change that does not fit
/// answers `507` and the store stays readable. A failed write or sync (a full disk, an I/O
/// error) fails the store for writes until it is opened again, since what the disk holds is
/// then unknown: writes answer `507` (a full disk) or `503`; what was durable stays readable.
/// It keeps three files open whatever the number of streams.
///
/// A `Stream-TTL` window starts again when the store is opened: a stream outlives its TTL by at
/// most the time the store was down. `Stream-Expires-At` is exact.
///
/// # Examples
///
/// ```
/// use tower_push::durable::{Append, Create, DurableStreams, FileStore, Offset, Store};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let store = FileStore::open(dir.path())?;
/// store.create("/a", Create::new(Some("text/plain".into()))).await?;
/// let appended = store.append("/a", Append::new("text/plain", "hello")).await?;
/// assert_eq!(appended.tail, Offset::new(1));
/// drop(store);
///
/// // Opened again: the append is there.
/// let store = FileStore::open(dir.path())?;
/// let read = store.read("/a", Some(Offset::ZERO), 10, 1024).await?;
/// assert_eq!(read.chunks.len(), 1);
/// let service = DurableStreams::new(store);
/// # let _ = service;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct FileStore {
    shared: Arc<Shared>,
    // The last clone to go stops the log's thread.
    _owner: Arc<Owner>,
}

/// Settings of a [`FileStore`].
#[derive(Clone, Debug)]
pub struct FileStoreBuilder {
    memory: MemoryStoreBuilder,
    max_log_bytes: u64,
}

impl Default for FileStoreBuilder {
    fn default() -> Self {
        Self {
            memory: MemoryStoreBuilder::default(),
            max_log_bytes: 4 << 30,
        }
    }
}

impl FileStoreBuilder {
    /// The bounds of the streams, in number and in memory, as a [`MemoryStore`]'s (the file
    /// store serves them from memory too).
    ///
    /// Default is [`MemoryStore`]'s defaults: 100,000 streams, 1 GiB.
    ///
    /// [`MemoryStore`]: super::MemoryStore
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use tower_push::durable::{FileStore, MemoryStore};
    ///
    /// let store = FileStore::builder()
    ///     .memory(MemoryStore::builder().max_streams(1_000).max_bytes(256 << 20))
    ///     .max_log_bytes(1 << 30)
    ///     .open("streams")?;
    /// assert!(store.is_empty());
    /// # Ok::<(), tower_push::durable::OpenError>(())
    /// ```
    #[must_use]
    pub fn memory(mut self, bounds: MemoryStoreBuilder) -> Self {
        self.memory = bounds;
        self
    }

    /// The most bytes the log may take on disk; a change that would take it beyond answers
    /// `507 Insufficient Storage` (and the log is compacted as soon as it can give space
    /// back). Keep it above twice the memory bound ([`memory`](Self::memory)), so that a compaction always
    /// makes room.
    ///
    /// Default is 4 GiB.
    #[must_use]
    pub fn max_log_bytes(mut self, max: u64) -> Self {
        self.max_log_bytes = max;
        self
    }

    /// Opens the store in `dir`, creating the directory and an empty log if need be, and reads
    /// the log back. It blocks while it reads (about a second per GiB of log on an SSD): call
    /// it before serving, or from `spawn_blocking`.
    ///
    /// # Errors
    ///
    /// [`OpenError`]: the directory cannot be created or read, another process has it open, its
    /// log is of another format version or not a log, or it is damaged before data a sync
    /// acknowledged.
    pub fn open(self, dir: impl AsRef<Path>) -> Result<FileStore, OpenError> {
        let dir = dir.as_ref();
        let at = |source: io::Error| OpenError::Io {
            dir: dir.to_owned(),
            source,
        };
        let (mut disk, mut reader) = Disk::open(dir).map_err(|err| match err {
            OpenFailed::Locked => OpenError::Locked {
                dir: dir.to_owned(),
            },
            OpenFailed::Io(err) => at(err),
        })?;
        let len = reader.metadata().map_err(at)?.len();
        let mut buffered = io::BufReader::with_capacity(1 << 20, &mut reader);
        let (mut state, scanned) = self
            .recover(&mut buffered, len)
            .map_err(|why| OpenError::unreadable(dir.join(media::LOG), why))?;
        let (valid, next) = match scanned {
            Scanned::Whole { next } => (len, next),
            // Also the zeros ahead of the end that the log is written into.
            Scanned::Torn { valid, next } => {
                disk.truncate(valid).map_err(at)?;
                (valid, next)
            }
        };
        let mut log_len = valid;
        if valid == 0 {
            disk.append(&log::header()).map_err(at)?;
            disk.created().map_err(at)?;
            log_len = log::HEADER_LEN as u64;
        }
        state.journal.log_len = log_len;
        Ok(FileStore::start(state, Box::new(disk), next))
    }

    /// The state a log of `len` bytes read from `from` holds.
    fn recover(
        &self,
        from: &mut dyn io::Read,
        len: u64,
    ) -> Result<(State<FileJournal>, Scanned), Unreadable> {
        let mut state = self.state();
        let scanned = log::scan(from, len, |record| replay(&mut state, record))?;
        Ok((state, scanned))
    }

    fn state(&self) -> State<FileJournal> {
        let journal = FileJournal {
            pending: Vec::new(),
            next_lsn: 1,
            rings: Vec::new(),
            log_len: 0,
            max_log_bytes: self.max_log_bytes,
            failed: None,
            closing: false,
            sleeping: false,
            dead: 0,
        };
        State::new(&self.memory, journal)
    }
}

/// Makes the change `record` tells of, as it was made before.
fn replay(state: &mut State<FileJournal>, record: Record) {
    match record {
        Record::Stream(path, stream) => {
            // A stream record replaces what was there (a compaction writes each stream once).
            state.remove(&path);
            state.insert(path, *stream);
        }
        Record::Change(path, change) => state.apply(&path, change),
        Record::Remove(path) => state.remove(&path),
        Record::NextEpoch(epoch) => state.next_epoch = state.next_epoch.max(epoch),
    }
}

/// Why a [`FileStore`] could not be opened.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// The directory cannot be created, locked or read.
    Io {
        /// The directory.
        dir: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Another store (most likely in another process) has the directory open.
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// The log is not a stream log.
    NotALog {
        /// The log.
        log: PathBuf,
    },
    /// The log is of a format version this build does not read.
    Version {
        /// The log.
        log: PathBuf,
        /// Its version.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// The log is damaged before data that a sync acknowledged (or holds a batch that checks
    /// but does not decode): nothing was changed, since cutting it off would lose that data.
    Damaged {
        /// The log.
        log: PathBuf,
        /// Where the damage starts, in bytes.
        at: u64,
    },
}

impl OpenError {
    fn unreadable(log: PathBuf, why: Unreadable) -> Self {
        match why {
            Unreadable::NotALog => Self::NotALog { log },
            Unreadable::Version(found) => Self::Version {
                log,
                found,
                expected: self::log::VERSION,
            },
            Unreadable::Damaged { at } | Unreadable::Malformed { at } => Self::Damaged { log, at },
            Unreadable::Io(kind) => Self::Io {
                dir: log,
                source: kind.into(),
            },
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { dir, .. } => write!(f, "cannot open the store in {}", dir.display()),
            Self::Locked { dir } => {
                write!(f, "another process has the store in {} open", dir.display())
            }
            Self::NotALog { log } => write!(f, "{} is not a stream log", log.display()),
            Self::Version {
                log,
                found,
                expected,
            } => write!(
                f,
                "{} is of format version {found}; this build reads version {expected}",
                log.display()
            ),
            Self::Damaged { log, at } => write!(
                f,
                "{} is damaged at byte {at}, before data that was acknowledged; nothing was \
                 changed: restore it from a backup, or move it aside to start empty",
                log.display()
            ),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What the log's thread shares with the store's handles.
struct Shared {
    state: Mutex<State<FileJournal>>,
    // Wakes the log's thread when there is something to write (or it is to stop).
    wake: Condvar,
    // The answers waiting for their changes to be durable.
    waiters: Waiters,
}

/// The journal of a file store: the log records of changes not yet written, and what the log
/// holds on disk.
#[derive(Debug)]
pub(super) struct FileJournal {
    pending: Vec<u8>,
    next_lsn: u64,
    rings: Vec<Doorbell>,
    log_len: u64,
    max_log_bytes: u64,
    failed: Option<StoreError>,
    closing: bool,
    /// The log's thread waits for changes (and is woken by the first).
    sleeping: bool,
    /// About how many bytes of the log hold streams deleted since its last compaction.
    dead: u64,
}

/// What a record costs in the log besides its data: its framing and fields.
const RECORD_COST: usize = 256;

impl FileJournal {
    /// Whether the log should be compacted: more than half of it (and at least
    /// [`COMPACT_FROM`]) is dead, or it nears its bound and a sixteenth of the bound is dead.
    fn compact_now(&self) -> bool {
        let (len, dead) = (self.log_len, self.dead);
        let mostly_dead = len > COMPACT_FROM && dead > len / 2;
        let near_full = len > self.max_log_bytes / 4 * 3 && dead > self.max_log_bytes / 16;
        mostly_dead || near_full
    }

    fn next(&mut self) -> u64 {
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        lsn
    }
}

impl Journal for FileJournal {
    fn fits(&self, bytes: usize) -> Result<(), StoreError> {
        let after = self.log_len + (self.pending.len() + bytes + RECORD_COST) as u64;
        match after > self.max_log_bytes {
            true => Err(StoreError::StorageFull),
            false => Ok(()),
        }
    }

    fn put(&mut self, path: &str, stream: &Stream) -> u64 {
        Writer(&mut self.pending).stream(path, stream);
        self.next()
    }

    fn change(&mut self, path: &str, change: &Change) -> u64 {
        Writer(&mut self.pending).change(path, change);
        self.next()
    }

    fn remove(&mut self, path: &str, stream: &Stream) -> u64 {
        Writer(&mut self.pending).remove(path);
        // What the stream wrote to the log is dead now, about: its data and a record's framing
        // per append (forks still reading a retired stream keep some of it live: a compaction
        // counts exactly).
        let data: usize = stream.chunks.iter().map(|c| c.payload.size() + 32).sum();
        self.dead += data as u64;
        self.next()
    }

    fn ring(&mut self, doorbell: &Doorbell) {
        self.rings.push(doorbell.clone());
    }
}

/// Stops the log's thread when the last handle goes, after it wrote what was pending.
struct Owner {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        lock(&self.shared).journal.closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State<FileJournal>> {
    shared.state.locked()
}

impl FileStore {
    /// Opens the store in `dir` with the default bounds: see [`FileStoreBuilder::open`].
    ///
    /// # Errors
    ///
    /// See [`FileStoreBuilder::open`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::builder().open(dir)
    }

    /// A builder for other bounds.
    pub fn builder() -> FileStoreBuilder {
        FileStoreBuilder::default()
    }

    /// A store of `state`, writing its log to `media` from batch `next` on.
    fn start(state: State<FileJournal>, media: Box<dyn Media>, next: u64) -> Self {
        let lsn = state.journal.next_lsn - 1;
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            wake: Condvar::new(),
            waiters: Waiters::new(lsn),
        });
        let writer = shared.clone();
        let thread = std::thread::Builder::new()
            .name("tower-push-log".into())
            .spawn(move || write_log(&writer, media, next))
            .expect("the log's thread starts");
        let owner = Owner {
            shared: shared.clone(),
            thread: Some(thread),
        };
        Self {
            shared,
            _owner: Arc::new(owner),
        }
    }

    /// How many streams the store holds, deleted ones that forks still read included.
    pub fn len(&self) -> usize {
        lock(&self.shared).streams.len()
    }

    /// Whether the store holds no stream.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many bytes the log takes on disk, with what is being written.
    pub fn log_bytes(&self) -> u64 {
        let state = lock(&self.shared);
        state.journal.log_len + state.journal.pending.len() as u64
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.shared);
        f.debug_struct("FileStore")
            .field("streams", &state.streams.len())
            .field("bytes", &state.bytes)
            .field("log_bytes", &state.journal.log_len)
            .field("failed", &state.journal.failed)
            .finish_non_exhaustive()
    }
}

impl Locked for FileStore {
    type Journal = FileJournal;

    /// Decides with `decide` (a write, refused once the log failed), and says where the log
    /// must be durable for the answer to leave.
    fn decide<T>(
        &self,
        path: &str,
        write: bool,
        decide: impl FnOnce(&mut State<FileJournal>) -> Result<T, StoreError>,
    ) -> (Result<T, StoreError>, u64) {
        let (answer, lsn, wake) = {
            let mut state = lock(&self.shared);
            let answer = match (&state.journal.failed, write) {
                (Some(failed), true) => Err(failed.clone()),
                _ => decide(&mut state),
            };
            // The log's thread waits only when nothing is pending; while it writes and syncs,
            // it finds the changes made meanwhile without being woken (a futex call saved).
            let wake = state.journal.sleeping && !state.journal.pending.is_empty();
            (answer, state.lsn_of(path), wake)
        };
        // Once the lock is free: the log's thread takes it as soon as it wakes.
        if wake {
            self.shared.wake.notify_one();
        }
        (answer, lsn)
    }

    /// `answer`, once the log is durable up to `lsn`.
    fn answer<T: Send + 'static>(
        &self,
        (answer, lsn): (Result<T, StoreError>, u64),
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        let waiting = self.shared.waiters.wait(lsn);
        async move {
            waiting.durable().await?;
            answer
        }
    }
}

store_over_state!(FileStore);

/// A log bigger than this is compacted once it holds more than twice what the streams hold.
const COMPACT_FROM: u64 = 64 << 20;

/// The log's thread: writes what the store's changes left pending, one batch and one sync at a
/// time, until the store is dropped or a write fails.
///
/// A batch is what is pending when the last sync ends, however little: the disk syncs without
/// a pause, and the changes made during a sync wait for the next one only. (Waiting for more
/// writers to join a batch, as this thread once did for up to 200 µs, made the writers and the
/// disk take turns: 0.81x the appends per second with 8 writers, BENCHMARKS.md.)
fn write_log(shared: &Shared, mut media: Box<dyn Media>, mut number: u64) {
    // The buffers of the last batch, emptied, for the changes of the next one: they grow once
    // rather than from nothing at every batch.
    let (mut spare_body, mut spare_rings) = (Vec::new(), Vec::new());
    loop {
        let (mut body, lsn, mut rings, compact) = {
            let mut state = lock(shared);
            while state.journal.pending.is_empty() && !state.journal.closing {
                state.journal.sleeping = true;
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                state.journal.sleeping = false;
            }
            if state.journal.pending.is_empty() {
                return;
            }
            let journal = &mut state.journal;
            let body = std::mem::replace(&mut journal.pending, spare_body);
            let rings = std::mem::replace(&mut journal.rings, spare_rings);
            journal.log_len += (log::BATCH_HEADER_LEN + body.len()) as u64;
            let lsn = journal.next_lsn - 1;
            (body, lsn, rings, journal.compact_now())
        };
        let written = media
            .append(&log::batch(number, &body))
            .and_then(|()| media.sync());
        number += 1;
        let written = written.and_then(|()| {
            synced(shared, lsn, &rings);
            match compact {
                true => compact_log(shared, &mut *media, &mut number),
                false => Ok(()),
            }
        });
        if let Err(err) = written {
            fail(shared, &err, rings);
            return;
        }
        // A batch far larger than most (a big append) does not keep its memory.
        body.clear();
        body.shrink_to(SPARE_BYTES);
        rings.clear();
        rings.shrink_to(SPARE_RINGS);
        (spare_body, spare_rings) = (body, rings);
    }
}

/// The most room the log's thread keeps for the next batch's changes, and for the doorbells
/// they ring.
const SPARE_BYTES: usize = 1 << 20;
const SPARE_RINGS: usize = 1024;

/// Everything up to `lsn` is durable: answers may leave, readers may see it.
fn synced(shared: &Shared, lsn: u64, rings: &[Doorbell]) {
    shared.waiters.reached(lsn);
    rings.iter().for_each(Doorbell::ring);
}

/// The log failed to write: nothing more becomes durable until the store is opened again.
fn fail(shared: &Shared, err: &io::Error, rings: Vec<Doorbell>) {
    let failed = match err.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StoreError::StorageFull,
        _ => StoreError::Unavailable,
    };
    tracing::error!(error = %err, "the durable streams log failed; writes are refused until it is opened again");
    let rings = {
        let mut state = lock(shared);
        state.journal.failed = Some(failed.clone());
        let mut all = std::mem::take(&mut state.journal.rings);
        all.extend(rings);
        all
    };
    shared.waiters.fail(failed);
    rings.iter().for_each(Doorbell::ring);
}

/// Rewrites the log with what the streams hold now, and puts it in the old one's place.
fn compact_log(shared: &Shared, media: &mut dyn Media, number: &mut u64) -> io::Result<()> {
    let (streams, next_epoch, lsn, rings) = {
        let mut state = lock(shared);
        let streams: Vec<(String, Stream)> = state
            .streams
            .iter()
            .map(|(path, stream)| (path.clone(), stream.clone()))
            .collect();
        // What is pending is in the streams already.
        let journal = &mut state.journal;
        journal.pending.clear();
        let rings = std::mem::take(&mut journal.rings);
        (streams, state.next_epoch, state.journal.next_lsn - 1, rings)
    };
    // Sources before their forks, so that replaying counts who reads from whom.
    let sources: HashMap<&str, &str> = streams
        .iter()
        .filter_map(|(path, stream)| Some((path.as_str(), stream.fork.as_ref()?.source.as_str())))
        .collect();
    let depth = |path: &str| {
        let (mut depth, mut at) = (0, path);
        while let Some(source) = sources.get(at).filter(|_| depth <= sources.len()) {
            depth += 1;
            at = source;
        }
        depth
    };
    let mut order: Vec<(usize, usize)> = streams
        .iter()
        .enumerate()
        .map(|(i, (path, _))| (depth(path), i))
        .collect();
    order.sort_unstable();
    let order: Vec<usize> = order.into_iter().map(|(_, i)| i).collect();
    drop(sources);
    let mut len = log::HEADER_LEN as u64;
    media.append_new(&log::header())?;
    let mut body = Vec::new();
    Writer(&mut body).next_epoch(next_epoch);
    let mut write = |body: &[u8], media: &mut dyn Media| {
        let batch = log::batch(*number, body);
        *number += 1;
        len += batch.len() as u64;
        media.append_new(&batch)
    };
    write(&body, media)?;
    for i in order {
        let (path, stream) = &streams[i];
        body.clear();
        Writer(&mut body).stream(path, stream);
        write(&body, media)?;
    }
    media.swap()?;
    let mut state = lock(shared);
    state.journal.log_len = len;
    state.journal.dead = 0;
    drop(state);
    synced(shared, lsn, &rings);
    Ok(())
}
