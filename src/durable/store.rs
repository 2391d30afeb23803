//! The store contract: what the protocol service asks of the place where streams live.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use tokio::sync::Notify;

use super::Offset;

/// Where the streams of a [`DurableStreams`](super::DurableStreams) service live.
///
/// The service does the HTTP (headers, statuses, bodies, live modes); a store keeps the streams
/// and decides every question about their state. Each method is one step, **atomic per stream**:
/// an append checks closure, content type, producer and `Stream-Seq` and commits (or refuses)
/// without another request of the same stream in between, so that concurrent writers see a
/// consistent order and a retried producer write is recognised.
///
/// The methods return futures, so that a store may wait for a disk to sync or for a network
/// round trip without blocking the runtime. A future is `'static`: it owns what it needs (a
/// store is usually a handle to shared state, as [`MemoryStore`](super::MemoryStore) is). A
/// store should decide when the method is called and let the future wait only for what makes
/// the decision durable or visible, so that the order of calls is the order of decisions. A
/// future resolves with the answer a client may act on: an append's future only once the
/// append is as durable as the store promises, and a read never returns what a crash could
/// still take back. Dropping a future must not undo or half-do the step.
///
/// Live readers wait on a stream's [`Doorbell`] ([`changes`](Store::changes)), which the store
/// rings after every change of the stream that a read can see: an append, a close, a delete,
/// an expiry. A store whose writes happen elsewhere (another process) rings it when it learns
/// of them.
///
/// Expiry (`Stream-TTL`, `Stream-Expires-At`) is the store's to check, lazily, on every access:
/// an expired stream answers [`StoreError::NotFound`], or [`StoreError::Gone`] while forks still
/// read from it. Reads and appends renew a TTL; [`info`](Store::info) does not. The protocol
/// bounds `Stream-TTL` only by its grammar, so any TTL up to `u64::MAX` seconds reaches the
/// store; one too long for the clock to count means a stream that does not expire by its TTL,
/// never a failure.
///
/// [`MemoryStore`](super::MemoryStore) is the embedded implementation.
///
/// # Examples
///
/// A store that refuses streams outside `/public/` and keeps the rest in memory:
///
/// ```
/// use std::future::Future;
///
/// use tower_push::durable::*;
///
/// struct PublicOnly(MemoryStore);
///
/// fn public(path: &str) -> Result<(), StoreError> {
///     match path.starts_with("/public/") {
///         true => Ok(()),
///         false => Err(StoreError::NotFound),
///     }
/// }
///
/// impl Store for PublicOnly {
///     fn create(&self, path: &str, create: Create)
///         -> impl Future<Output = Result<Created, StoreError>> + Send + 'static {
///         let checked = public(path).map(|()| self.0.create(path, create));
///         async move { checked?.await }
///     }
///     fn append(&self, path: &str, append: Append)
///         -> impl Future<Output = Result<Appended, StoreError>> + Send + 'static {
///         self.0.append(path, append)
///     }
///     fn read(&self, path: &str, after: Option<Offset>, chunks: usize, bytes: usize)
///         -> impl Future<Output = Result<Read, StoreError>> + Send + 'static {
///         self.0.read(path, after, chunks, bytes)
///     }
///     fn info(&self, path: &str) -> impl Future<Output = Result<Info, StoreError>> + Send + 'static {
///         self.0.info(path)
///     }
///     fn delete(&self, path: &str) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
///         self.0.delete(path)
///     }
///     fn changes(&self, path: &str) -> Result<Doorbell, StoreError> {
///         self.0.changes(path)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), StoreError> {
/// let store = PublicOnly(MemoryStore::new());
/// let refused = store.create("/private/x", Create::new(None)).await;
/// assert_eq!(refused.unwrap_err(), StoreError::NotFound);
/// assert!(store.create("/public/x", Create::new(None)).await?.created);
/// let service = DurableStreams::new(store);
/// # let _ = service;
/// # Ok(())
/// # }
/// ```
pub trait Store: Send + Sync + 'static {
    /// Creates the stream at `path`, or confirms an identical one (`created: false`).
    ///
    /// # Errors
    ///
    /// [`StoreError::ConfigMismatch`] for an existing stream of another configuration, the fork
    /// errors, and the capacity errors.
    fn create(
        &self,
        path: &str,
        create: Create,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send + 'static;

    /// Appends to, or closes, the stream at `path`.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], [`StoreError::Gone`], [`StoreError::Closed`], the producer and
    /// sequence errors, invalid JSON, and the capacity errors.
    fn append(
        &self,
        path: &str,
        append: Append,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send + 'static;

    /// Reads at most `max_chunks` appends after `after` (`None`: the tail), whole appends of at
    /// most `max_bytes` together but at least one. Renews the stream's TTL.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], [`StoreError::Gone`], [`StoreError::OffsetBeyondTail`].
    fn read(
        &self,
        path: &str,
        after: Option<Offset>,
        max_chunks: usize,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Read, StoreError>> + Send + 'static;

    /// What is known about the stream, without renewing its TTL.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], [`StoreError::Gone`].
    fn info(&self, path: &str) -> impl Future<Output = Result<Info, StoreError>> + Send + 'static;

    /// Deletes the stream; one that forks still read from is only marked deleted.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], [`StoreError::Gone`].
    fn delete(&self, path: &str) -> impl Future<Output = Result<(), StoreError>> + Send + 'static;

    /// The doorbell of the stream, rung by every change of it a read can see. Live readers
    /// register with it before they read, so a change in between still wakes them.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], [`StoreError::Gone`].
    fn changes(&self, path: &str) -> Result<Doorbell, StoreError>;
}

/// How a [`Store`] tells the live readers of a stream that it changed.
///
/// Cloning is cheap and shares the doorbell. [`ring`](Self::ring) wakes every reader waiting
/// on it at that moment; a reader that registers later reads the stream after registering, so
/// it misses nothing. A store keeps one per stream (or per stream and incarnation) and rings it
/// after the change is visible to reads.
///
/// # Examples
///
/// ```
/// use tower_push::durable::Doorbell;
///
/// let doorbell = Doorbell::new();
/// let readers_see_the_same = doorbell.clone();
/// doorbell.ring();
/// # let _ = readers_see_the_same;
/// ```
#[derive(Clone, Default)]
pub struct Doorbell(Arc<Notify>);

impl Doorbell {
    /// A doorbell nobody waits on yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes every reader waiting on it now.
    pub fn ring(&self) {
        self.0.notify_waiters();
    }

    /// Whether anyone but its keeper holds it (a reader waits, or is about to).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn is_shared(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }

    /// What the readers park on.
    pub(crate) fn notify(&self) -> &Arc<Notify> {
        &self.0
    }
}

impl fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Doorbell").finish_non_exhaustive()
    }
}

/// What a stream holds: the payload mode its content type implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// `application/json`: appends are JSON values, reads are JSON arrays.
    Json,
    /// `text/*`: bytes that SSE carries as text.
    Text,
    /// Anything else: bytes that SSE carries as base64.
    Binary,
}

impl Mode {
    /// The mode of a content type (media type compared lowercased, parameters ignored).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::durable::Mode;
    ///
    /// assert_eq!(Mode::of("Application/JSON; charset=utf-8"), Mode::Json);
    /// assert_eq!(Mode::of("text/plain"), Mode::Text);
    /// assert_eq!(Mode::of("image/png"), Mode::Binary);
    /// ```
    pub fn of(content_type: &str) -> Self {
        let media = media_type(content_type);
        if media == "application/json" {
            Self::Json
        } else if media.starts_with("text/") {
            Self::Text
        } else {
            Self::Binary
        }
    }
}

/// The media type of a content type: lowercased, without parameters or spaces.
pub(crate) fn media_type(content_type: &str) -> String {
    let essence = content_type.split(';').next().unwrap_or_default();
    essence.trim().to_ascii_lowercase()
}

/// The payload of one append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Bytes, for text and binary streams.
    Bytes(Bytes),
    /// The JSON values of a JSON append, each one line of compact-or-original JSON text
    /// ([`parse`](Self::parse) makes them slices of one block of text).
    Json(Arc<[Bytes]>),
}

impl Payload {
    /// The bytes the payload weighs.
    pub fn size(&self) -> usize {
        match self {
            Self::Bytes(bytes) => bytes.len(),
            Self::Json(values) => values.iter().map(|v| v.len() + 1).sum(),
        }
    }

    /// Parses a request body for a stream of `mode`: bytes as they are; for JSON one value,
    /// or an array whose elements are the values. `None` for a body that adds nothing (empty,
    /// or `[]` where `empty_array` allows it).
    ///
    /// A JSON value may nest arrays and objects at most 126 deep, so that a read, which
    /// answers with the values in one array, nests at most 127 deep: as deep as serde_json
    /// parses with its default recursion limit (128). The check counts brackets in one pass
    /// and does not recurse, however deep the body.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidJson`], [`StoreError::JsonTooDeep`] and
    /// [`StoreError::EmptyJsonArray`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::durable::{Mode, Payload};
    ///
    /// let Some(Payload::Json(values)) = Payload::parse(Mode::Json, "[[1,2], {\"a\":\n3}]".into(), false)?
    /// else { unreachable!() };
    /// assert_eq!(&values[..], &["[1,2]", "{\"a\": 3}"]);
    /// # Ok::<(), tower_push::durable::StoreError>(())
    /// ```
    pub fn parse(mode: Mode, body: Bytes, empty_array: bool) -> Result<Option<Self>, StoreError> {
        if body.is_empty() {
            return Ok(None);
        }
        if mode != Mode::Json {
            return Ok(Some(Self::Bytes(body)));
        }
        let text = std::str::from_utf8(&body).map_err(|_| StoreError::InvalidJson)?;
        let value: &serde_json::value::RawValue =
            serde_json::from_str(text).map_err(|_| StoreError::InvalidJson)?;
        let raw = value.get();
        // An array's values are one level less deep than it.
        let array = raw.starts_with('[');
        if nests_deeper(raw.as_bytes(), MAX_JSON_DEPTH + usize::from(array)) {
            return Err(StoreError::JsonTooDeep);
        }
        let items: Vec<&str> = if array {
            let items: Vec<&serde_json::value::RawValue> =
                serde_json::from_str(raw).map_err(|_| StoreError::InvalidJson)?;
            items.iter().map(|item| item.get()).collect()
        } else {
            vec![raw]
        };
        if items.is_empty() {
            return if empty_array {
                Ok(None)
            } else {
                Err(StoreError::EmptyJsonArray)
            };
        }
        // The values share one allocation, each a slice of it: an array of many tiny values
        // costs its text and a handle per value, not an allocation per value.
        let mut text = Vec::with_capacity(items.iter().map(|item| item.len()).sum());
        let mut ends = Vec::with_capacity(items.len());
        for item in items {
            push_one_line(&mut text, item);
            ends.push(text.len());
        }
        Ok(Some(Self::json_block(text, ends)))
    }

    /// JSON values that share one block of `text`, each ending where `ends` says.
    pub(super) fn json_block(text: Vec<u8>, ends: Vec<usize>) -> Self {
        let text = Bytes::from(text);
        let mut start = 0;
        let values = ends.into_iter().map(|end| {
            let value = text.slice(start..end);
            start = end;
            value
        });
        Self::Json(values.collect())
    }

    /// The first `n` bytes or values, or `None` if there are fewer.
    pub(crate) fn prefix(&self, n: u64) -> Option<Self> {
        let n = usize::try_from(n).ok()?;
        match self {
            Self::Bytes(bytes) => (n <= bytes.len()).then(|| Self::Bytes(bytes.slice(..n))),
            Self::Json(values) => (n <= values.len()).then(|| Self::Json(values[..n].into())),
        }
    }
}

/// How deep a JSON value may nest arrays and objects: one level less than serde_json parses
/// with its default recursion limit, for the array that a read holds the values in.
const MAX_JSON_DEPTH: usize = 126;

/// Whether arrays and objects in valid JSON text nest deeper than `max`, counted in one pass
/// without recursion.
fn nests_deeper(json: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Appends JSON text on one line: raw line breaks can only be whitespace between tokens.
fn push_one_line(out: &mut Vec<u8>, json: &str) {
    let start = out.len();
    out.extend_from_slice(json.as_bytes());
    for b in &mut out[start..] {
        if matches!(*b, b'\n' | b'\r') {
            *b = b' ';
        }
    }
}

/// One append of a stream, with the offset after it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Chunk {
    /// The offset after this append.
    pub offset: Offset,
    /// What was appended.
    pub payload: Payload,
}

impl Chunk {
    /// The append of `payload` that ends at `offset`.
    pub fn new(offset: Offset, payload: Payload) -> Self {
        Self { offset, payload }
    }
}

/// An absolute expiry time (`Stream-Expires-At`), as given and in milliseconds since the Unix
/// epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExpiresAt {
    /// The RFC 3339 text as the client sent it, to echo.
    pub text: String,
    /// The instant, in milliseconds since the Unix epoch.
    pub unix_ms: i64,
}

impl ExpiresAt {
    /// An expiry at `unix_ms`, given as `text`.
    pub fn new(text: impl Into<String>, unix_ms: i64) -> Self {
        Self {
            text: text.into(),
            unix_ms,
        }
    }
}

/// Where a fork starts: `Stream-Forked-From`, `Stream-Fork-Offset`, `Stream-Fork-Sub-Offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForkFrom {
    /// The path of the source stream, in the same key space as the store's paths.
    pub source: String,
    /// The offset in the source to fork at; `None`: the source's tail.
    pub offset: Option<Offset>,
    /// How many bytes (or JSON values) of the append after `offset` the fork starts with; 0 for
    /// none.
    pub sub_offset: u64,
}

impl ForkFrom {
    /// A fork of `source` at `offset` (`None`: its tail), starting with nothing of the append
    /// after it.
    pub fn new(source: impl Into<String>, offset: Option<Offset>) -> Self {
        Self {
            source: source.into(),
            offset,
            sub_offset: 0,
        }
    }
}

/// A request to create a stream (`PUT`).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Create {
    /// The content type as given; `None` for the default (or, for a fork, the source's).
    pub content_type: Option<String>,
    /// `Stream-TTL`, in seconds.
    pub ttl: Option<u64>,
    /// `Stream-Expires-At`.
    pub expires_at: Option<ExpiresAt>,
    /// `Stream-Closed: true`: create the stream closed.
    pub closed: bool,
    /// The fork headers.
    pub fork: Option<ForkFrom>,
    /// The initial content.
    pub body: Bytes,
}

impl Create {
    /// A request to create a stream of `content_type` (`None`: the default), with nothing else.
    pub fn new(content_type: Option<String>) -> Self {
        Self {
            content_type,
            ..Self::default()
        }
    }
}

/// A created (or confirmed) stream.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Created {
    /// Whether it was created now (`201`), rather than confirmed (`200`).
    pub created: bool,
    /// The stream.
    pub info: Info,
}

impl Created {
    /// A stream created now (`created`) or confirmed.
    pub fn new(created: bool, info: Info) -> Self {
        Self { created, info }
    }
}

/// An idempotent producer's claim: `Producer-Id`, `Producer-Epoch`, `Producer-Seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Producer {
    /// The producer's id.
    pub id: String,
    /// Its epoch: a newer epoch fences older ones.
    pub epoch: u64,
    /// The sequence number of this write within the epoch, from 0.
    pub seq: u64,
}

impl Producer {
    /// The claim of producer `id` for write `seq` of `epoch`.
    pub fn new(id: impl Into<String>, epoch: u64, seq: u64) -> Self {
        Self {
            id: id.into(),
            epoch,
            seq,
        }
    }
}

/// A request to append to, or close, a stream (`POST`).
///
/// # Examples
///
/// ```
/// use tower_push::durable::{Append, Create, MemoryStore, Offset, Producer, Store, StoreError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), StoreError> {
/// let store = MemoryStore::new();
/// store.create("/s", Create::new(Some("application/json".into()))).await?;
/// let mut append = Append::new("application/json", r#"[{"a":1},{"b":2}]"#);
/// append.producer = Some(Producer::new("w", 0, 0));
/// let first = store.append("/s", append.clone()).await?;
/// assert!(first.wrote);
/// // A retry is recognised and appends nothing.
/// let retry = store.append("/s", append).await?;
/// assert!(!retry.wrote);
/// assert_eq!(retry.tail, Offset::new(1));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Append {
    /// The request's content type.
    pub content_type: Option<String>,
    /// The data; empty for a close without data.
    pub body: Bytes,
    /// `Stream-Closed: true`: close the stream after this append.
    pub close: bool,
    /// `Stream-Seq`: must sort after the last accepted one, as bytes.
    pub stream_seq: Option<String>,
    /// The producer headers.
    pub producer: Option<Producer>,
}

impl Append {
    /// A request to append `body` of `content_type`.
    pub fn new(content_type: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Self {
            content_type: Some(content_type.into()),
            body: body.into(),
            ..Self::default()
        }
    }
}

/// What an append did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Appended {
    /// The tail after it.
    pub tail: Offset,
    /// Whether the stream is closed now.
    pub closed: bool,
    /// Whether data was appended (not a close alone, not a duplicate).
    pub wrote: bool,
    /// The producer epoch and sequence number to echo: the accepted ones, or for a duplicate
    /// the highest accepted.
    pub producer: Option<(u64, u64)>,
}

impl Appended {
    /// An append that leaves the stream's tail at `tail`, open, having written data, with no
    /// producer to echo; set the other fields where they differ.
    pub fn new(tail: Offset) -> Self {
        Self {
            tail,
            closed: false,
            wrote: true,
            producer: None,
        }
    }
}

/// What is known about a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Info {
    /// The stream's incarnation: a stream deleted and created again at the same path gets
    /// another.
    pub epoch: u64,
    /// The content type as given at creation.
    pub content_type: String,
    /// The offset after the last append.
    pub tail: Offset,
    /// Whether the stream is closed.
    pub closed: bool,
    /// `Stream-TTL` as given (or inherited).
    pub ttl: Option<u64>,
    /// `Stream-Expires-At` as given (or inherited).
    pub expires_at: Option<String>,
}

impl Info {
    /// An open stream of incarnation `epoch` and `content_type`, with its tail at `tail` and no
    /// expiry; set the other fields where they differ.
    pub fn new(epoch: u64, content_type: impl Into<String>, tail: Offset) -> Self {
        Self {
            epoch,
            content_type: content_type.into(),
            tail,
            closed: false,
            ttl: None,
            expires_at: None,
        }
    }
}

/// The answer to a read.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Read {
    /// The stream.
    pub info: Info,
    /// The offset the read started after.
    pub from: Offset,
    /// The appends read, oldest first.
    pub chunks: Vec<Chunk>,
}

impl Read {
    /// The appends `chunks` of a stream described by `info`, read after `from`.
    pub fn new(info: Info, from: Offset, chunks: Vec<Chunk>) -> Self {
        Self { info, from, chunks }
    }

    /// The offset after the last append read, or where the read started.
    pub fn next(&self) -> Offset {
        self.chunks.last().map_or(self.from, |chunk| chunk.offset)
    }

    /// Whether the read reached the tail.
    pub fn up_to_date(&self) -> bool {
        self.next() >= self.info.tail
    }
}

/// Why a store refused a request. Each maps to the status the protocol gives it
/// ([`status`](Self::status)) and a short machine-readable [`code`](Self::code).
///
/// # Examples
///
/// ```
/// use tower_push::durable::{Offset, StoreError};
///
/// let closed = StoreError::Closed { tail: Offset::new(4) };
/// assert_eq!(closed.status(), 409);
/// assert_eq!(closed.code(), "stream_closed");
/// assert_eq!(closed.to_string(), "stream is closed at 0000000000000000_0000000000000004");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// No stream at the path (or it expired).
    NotFound,
    /// The stream was deleted (or expired) while forks still read from it.
    Gone,
    /// A stream exists at the path with another configuration, or was deleted while forks
    /// read from it.
    ConfigMismatch,
    /// The request's content type is not the stream's.
    ContentTypeMismatch,
    /// The stream is closed; `tail` is its final offset.
    Closed {
        /// The final offset.
        tail: Offset,
    },
    /// `Stream-Seq` does not sort after the last accepted one.
    SeqRegression,
    /// The producer's epoch is older than the current one.
    StaleEpoch {
        /// The current epoch.
        current: u64,
    },
    /// A new producer epoch must start at sequence number 0.
    EpochSeqNotZero,
    /// The producer skipped sequence numbers.
    SeqGap {
        /// The sequence number expected next.
        expected: u64,
        /// The one received.
        received: u64,
    },
    /// The body is not valid JSON.
    InvalidJson,
    /// The body's JSON nests arrays and objects deeper than readers parse (see
    /// [`Payload::parse`]).
    JsonTooDeep,
    /// An empty JSON array appends nothing.
    EmptyJsonArray,
    /// The fork's source does not exist.
    ForkSourceNotFound,
    /// The fork's source was deleted while forks read from it.
    ForkSourceGone,
    /// The fork offset is beyond the source's tail.
    ForkOffsetBeyondTail,
    /// The sub-offset has no append to cut, or is longer than it.
    InvalidSubOffset,
    /// The offset is beyond the stream's tail.
    OffsetBeyondTail,
    /// The store holds as many streams as it may.
    TooManyStreams,
    /// The store holds as many bytes as it may.
    StorageFull,
    /// The store cannot make changes durable now (its storage failed); what it answered
    /// before stays.
    Unavailable,
}

impl StoreError {
    /// The status the protocol answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound | Self::ForkSourceNotFound => StatusCode::NOT_FOUND,
            Self::Gone => StatusCode::GONE,
            Self::ConfigMismatch
            | Self::ContentTypeMismatch
            | Self::Closed { .. }
            | Self::SeqRegression
            | Self::SeqGap { .. }
            | Self::ForkSourceGone => StatusCode::CONFLICT,
            Self::StaleEpoch { .. } => StatusCode::FORBIDDEN,
            Self::EpochSeqNotZero
            | Self::InvalidJson
            | Self::JsonTooDeep
            | Self::EmptyJsonArray
            | Self::ForkOffsetBeyondTail
            | Self::InvalidSubOffset
            | Self::OffsetBeyondTail => StatusCode::BAD_REQUEST,
            Self::TooManyStreams | Self::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short machine-readable name of the problem, for error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "stream_not_found",
            Self::Gone => "stream_deleted",
            Self::ConfigMismatch => "config_mismatch",
            Self::ContentTypeMismatch => "content_type_mismatch",
            Self::Closed { .. } => "stream_closed",
            Self::SeqRegression => "stream_seq_regression",
            Self::StaleEpoch { .. } => "stale_producer_epoch",
            Self::EpochSeqNotZero => "producer_epoch_seq_not_zero",
            Self::SeqGap { .. } => "producer_seq_gap",
            Self::InvalidJson => "invalid_json",
            Self::JsonTooDeep => "json_too_deep",
            Self::EmptyJsonArray => "empty_json_array",
            Self::ForkSourceNotFound => "fork_source_not_found",
            Self::ForkSourceGone => "fork_source_deleted",
            Self::ForkOffsetBeyondTail => "fork_offset_beyond_tail",
            Self::InvalidSubOffset => "invalid_fork_sub_offset",
            Self::OffsetBeyondTail => "offset_beyond_tail",
            Self::TooManyStreams => "too_many_streams",
            Self::StorageFull => "storage_full",
            Self::Unavailable => "store_unavailable",
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed { tail } => write!(f, "stream is closed at {tail}"),
            Self::StaleEpoch { current } => write!(f, "producer epoch is older than {current}"),
            Self::SeqGap { expected, received } => {
                write!(f, "producer seq {received} received, {expected} expected")
            }
            Self::JsonTooDeep => write!(
                f,
                "a json value nests arrays and objects more than {MAX_JSON_DEPTH} deep"
            ),
            other => f.write_str(&other.code().replace('_', " ")),
        }
    }
}

impl std::error::Error for StoreError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: String) -> Result<Option<Payload>, StoreError> {
        Payload::parse(Mode::Json, body.into(), false)
    }

    /// Values nest as deep as a reader with serde_json's default limits can parse the answer
    /// that holds them in one array, and no deeper; the check itself does not recurse.
    #[test]
    fn json_nesting_is_bounded_where_readers_can_still_parse_it() {
        let nested = |depth: usize| format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        let Some(Payload::Json(values)) = json(nested(126)).unwrap() else {
            unreachable!()
        };
        let answer = [&b"["[..], &values[0], b"]"].concat();
        assert!(serde_json::from_slice::<serde_json::Value>(&answer).is_ok());
        assert_eq!(json(nested(127)).unwrap_err().code(), "json_too_deep");
        // In an array, its values: 126 deep inside, 127 with it.
        let arrays = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(json(arrays(127)).is_ok());
        assert_eq!(json(arrays(128)).unwrap_err().code(), "json_too_deep");
        let deep = 100_000;
        for body in [arrays(deep), nested(deep), format!("[1,{}]", arrays(deep))] {
            assert_eq!(json(body).unwrap_err().code(), "json_too_deep");
        }
        // Brackets in strings are text.
        let text = format!(
            "[\"{}\\\"{}\", {{\"{}\": 1}}]",
            "[".repeat(300),
            "{".repeat(300),
            "]".repeat(300)
        );
        assert!(json(text).is_ok());
    }
}
