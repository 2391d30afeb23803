//! The log's format: a header, then batches of records, each batch checked by a CRC.
//!
//! ```text
//! log    = header batch*
//! header = "tpds-log" version:u32 0:u32                      (16 bytes)
//! batch  = "tpds-bat" number:u64 len:u64 crc:u32 body        (28 bytes + len)
//! body   = record*            crc = CRC-32 of number, len and body
//! record = 1 path stream | 2 path change | 3 path | 4 next-epoch:u64
//! ```
//!
//! Integers are little-endian; a string or a byte string is its length (`u64`) and its
//! bytes; an optional value is `0`, or `1` and the value. A batch is what one sync made
//! durable: recovery applies a batch whole or not at all, and batches are numbered one after
//! another, so that a batch that does not check (a write the crash cut short) is told apart
//! from damage before data that a later sync acknowledged.

use std::collections::HashMap;
use std::io::{self, Read};

use bytes::Bytes;
use tokio::time::Instant;

use super::super::state::{Change, ForkLink, Stream};
use super::super::store::{Doorbell, ExpiresAt, Mode, Payload};
use super::super::Offset;

/// The first bytes of a log.
pub(super) const MAGIC: &[u8; 8] = b"tpds-log";
/// The format this build writes and reads.
pub(super) const VERSION: u32 = 1;
/// The length of the log's header.
pub(super) const HEADER_LEN: usize = 16;
/// The first bytes of a batch.
const BATCH: &[u8; 8] = b"tpds-bat";
/// The length of a batch's header.
pub(super) const BATCH_HEADER_LEN: usize = 28;

const STREAM: u8 = 1;
const CHANGE: u8 = 2;
const REMOVE: u8 = 3;
const NEXT_EPOCH: u8 = 4;

/// The header of a new log.
pub(super) fn header() -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header
}

/// Frames `body` as batch `number`.
pub(super) fn batch(number: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + body.len());
    out.extend_from_slice(BATCH);
    out.extend_from_slice(&number.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc(number, body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn crc(number: u64, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&number.to_le_bytes());
    hasher.update(&(body.len() as u64).to_le_bytes());
    hasher.update(body);
    hasher.finalize()
}

/// Writes records into a batch's body.
pub(super) struct Writer<'a>(pub(super) &'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.0.extend_from_slice(v);
    }

    fn option<T>(&mut self, v: Option<T>, mut some: impl FnMut(&mut Self, T)) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                some(self, v);
            }
        }
    }

    fn producer(&mut self, (id, epoch, seq): &(String, u64, u64)) {
        self.bytes(id.as_bytes());
        self.u64(*epoch);
        self.u64(*seq);
    }

    fn payload(&mut self, payload: &Payload) {
        match payload {
            Payload::Bytes(bytes) => {
                self.u8(0);
                self.bytes(bytes);
            }
            Payload::Json(values) => {
                self.u8(1);
                self.u64(values.len() as u64);
                for value in values.iter() {
                    self.bytes(value);
                }
            }
        }
    }

    /// The stream at `path` as it is: created, or restored by a compaction.
    pub(super) fn stream(&mut self, path: &str, stream: &Stream) {
        self.u8(STREAM);
        self.bytes(path.as_bytes());
        self.u64(stream.epoch);
        self.bytes(stream.content_type.as_bytes());
        self.option(stream.ttl, Self::u64);
        self.option(stream.expires_at.as_ref(), |w, at| {
            w.bytes(at.text.as_bytes());
            w.u64(at.unix_ms as u64);
        });
        self.option(stream.fork.as_ref(), |w, fork| {
            w.bytes(fork.source.as_bytes());
            w.u64(fork.offset.get());
            w.u64(fork.sub_offset);
        });
        self.u8(u8::from(stream.closed));
        self.option(stream.closed_by.as_ref(), Self::producer);
        self.option(stream.last_seq.as_deref(), |w, seq| w.bytes(seq.as_bytes()));
        self.u64(stream.producers.len() as u64);
        for (id, &(epoch, seq)) in &stream.producers {
            self.producer(&(id.clone(), epoch, seq));
        }
        self.u8(u8::from(stream.deleted));
        let start = stream.tail.get() - stream.chunks.len() as u64;
        self.u64(start);
        self.u64(stream.chunks.len() as u64);
        for chunk in &stream.chunks {
            self.payload(&chunk.payload);
        }
    }

    /// An accepted append of the stream at `path`.
    pub(super) fn change(&mut self, path: &str, change: &Change) {
        self.u8(CHANGE);
        self.bytes(path.as_bytes());
        self.option(change.payload.as_ref(), Self::payload);
        self.option(change.stream_seq.as_deref(), |w, seq| {
            w.bytes(seq.as_bytes())
        });
        self.option(change.producer.as_ref(), Self::producer);
        self.u8(u8::from(change.close));
    }

    /// A delete (or expiry) of the stream at `path`.
    pub(super) fn remove(&mut self, path: &str) {
        self.u8(REMOVE);
        self.bytes(path.as_bytes());
    }

    /// The epoch the next stream gets, at least.
    pub(super) fn next_epoch(&mut self, epoch: u64) {
        self.u8(NEXT_EPOCH);
        self.u64(epoch);
    }
}

/// One record of a batch.
#[derive(Debug)]
pub(super) enum Record {
    Stream(String, Box<Stream>),
    Change(String, Change),
    Remove(String),
    NextEpoch(u64),
}

/// A record that does not decode although its batch checked: written by a build that
/// disagrees about the format.
#[derive(Debug)]
pub(super) struct Malformed;

/// Reads the records of one batch body.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Malformed> {
        if n > self.0.len() {
            return Err(Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("eight bytes")))
    }

    fn len(&mut self) -> Result<usize, Malformed> {
        usize::try_from(self.u64()?).map_err(|_| Malformed)
    }

    fn bytes(&mut self) -> Result<&[u8], Malformed> {
        let len = self.len()?;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, Malformed> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| Malformed)
    }

    fn bool(&mut self) -> Result<bool, Malformed> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Malformed),
        }
    }

    fn option<T>(
        &mut self,
        mut some: impl FnMut(&mut Self) -> Result<T, Malformed>,
    ) -> Result<Option<T>, Malformed> {
        match self.bool()? {
            false => Ok(None),
            true => some(self).map(Some),
        }
    }

    fn producer(&mut self) -> Result<(String, u64, u64), Malformed> {
        Ok((self.string()?, self.u64()?, self.u64()?))
    }

    fn payload(&mut self) -> Result<Payload, Malformed> {
        match self.u8()? {
            0 => Ok(Payload::Bytes(Bytes::copy_from_slice(self.bytes()?))),
            1 => {
                // The values share one block of text, as `Payload::parse` makes them.
                let count = self.len()?;
                let mut text = Vec::new();
                let mut ends = Vec::with_capacity(count.min(self.0.len()));
                for _ in 0..count {
                    text.extend_from_slice(self.bytes()?);
                    ends.push(text.len());
                }
                Ok(Payload::json_block(text, ends))
            }
            _ => Err(Malformed),
        }
    }

    fn stream(&mut self) -> Result<Stream, Malformed> {
        let epoch = self.u64()?;
        let content_type = self.string()?;
        let ttl = self.option(Self::u64)?;
        let expires_at = self.option(|r| {
            let text = r.string()?;
            Ok(ExpiresAt::new(text, r.u64()? as i64))
        })?;
        let fork = self.option(|r| {
            Ok(ForkLink {
                source: r.string()?,
                offset: Offset::new(r.u64()?),
                sub_offset: r.u64()?,
            })
        })?;
        let closed = self.bool()?;
        let closed_by = self.option(Self::producer)?;
        let last_seq = self.option(Self::string)?;
        let mut producers = HashMap::new();
        for _ in 0..self.len()? {
            let (id, epoch, seq) = self.producer()?;
            producers.insert(id, (epoch, seq));
        }
        let deleted = self.bool()?;
        let start = self.u64()?;
        let mut stream = Stream {
            epoch,
            mode: Mode::of(&content_type),
            content_type,
            ttl,
            expires_at,
            fork,
            chunks: Vec::new(),
            tail: Offset::new(start),
            closed,
            closed_by,
            last_seq,
            producers,
            // A TTL's window starts again at recovery: a stream outlives its TTL by at most
            // the time the store was down.
            last_access: Instant::now(),
            refs: 0,
            deleted,
            doorbell: Doorbell::new(),
            lsn: 0,
            bytes: 0,
        };
        for _ in 0..self.len()? {
            stream.push(self.payload()?);
        }
        Ok(stream)
    }

    fn record(&mut self) -> Result<Record, Malformed> {
        Ok(match self.u8()? {
            STREAM => Record::Stream(self.string()?, Box::new(self.stream()?)),
            CHANGE => Record::Change(
                self.string()?,
                Change {
                    payload: self.option(Self::payload)?,
                    stream_seq: self.option(Self::string)?,
                    producer: self.option(Self::producer)?,
                    close: self.bool()?,
                },
            ),
            REMOVE => Record::Remove(self.string()?),
            NEXT_EPOCH => Record::NextEpoch(self.u64()?),
            _ => return Err(Malformed),
        })
    }
}

/// The records of a batch's body, in order.
pub(super) fn records(body: &[u8]) -> Result<Vec<Record>, Malformed> {
    let mut reader = Reader(body);
    let mut records = Vec::new();
    while !reader.0.is_empty() {
        records.push(reader.record()?);
    }
    Ok(records)
}

/// What a read of a log found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Scanned {
    /// Every batch checked; the log ends after the last.
    Whole {
        /// The number of the next batch.
        next: u64,
    },
    /// The batches up to `valid` bytes checked; what follows is a write that a crash cut short
    /// (no later batch checks), and is to be cut off.
    Torn {
        /// Where the log is to end.
        valid: u64,
        /// The number of the next batch.
        next: u64,
    },
}

/// Why a log cannot be read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unreadable {
    /// It does not start as a log does.
    NotALog,
    /// It is a log of another format version.
    Version(u32),
    /// The batch at byte `at` does not check, and a later batch does: data that a later sync
    /// acknowledged follows damaged data, so nothing may be cut off.
    Damaged {
        /// Where the damage starts.
        at: u64,
    },
    /// A batch checks but its records do not decode.
    Malformed {
        /// Where the batch starts.
        at: u64,
    },
    /// Reading failed.
    Io(io::ErrorKind),
}

/// Reads the log of `len` bytes from `from`, handing every record of every batch that checks to
/// `apply`, in order.
pub(super) fn scan(
    from: &mut dyn Read,
    len: u64,
    mut apply: impl FnMut(Record),
) -> Result<Scanned, Unreadable> {
    let io = |err: io::Error| Unreadable::Io(err.kind());
    if len == 0 {
        return Ok(Scanned::Whole { next: 0 });
    }
    let mut head = [0; HEADER_LEN];
    if len < HEADER_LEN as u64 {
        // A log is created with its header and synced before anything is written to it: a
        // shorter one is a creation that a crash cut short.
        let mut partial = vec![0; len as usize];
        from.read_exact(&mut partial).map_err(io)?;
        return match MAGIC.starts_with(&partial[..partial.len().min(8)])
            || partial.iter().all(|&b| b == 0)
        {
            true => Ok(Scanned::Torn { valid: 0, next: 0 }),
            false => Err(Unreadable::NotALog),
        };
    }
    from.read_exact(&mut head).map_err(io)?;
    if &head[..8] != MAGIC {
        return Err(Unreadable::NotALog);
    }
    let version = u32::from_le_bytes(head[8..12].try_into().expect("four bytes"));
    if version != VERSION {
        return Err(Unreadable::Version(version));
    }
    let mut at = HEADER_LEN as u64;
    let mut last: Option<u64> = None;
    loop {
        if at == len {
            return Ok(Scanned::Whole {
                next: last.map_or(0, |n| n + 1),
            });
        }
        match next_batch(from, len - at, last).map_err(io)? {
            Ok((number, body)) => {
                let records = records(&body).map_err(|Malformed| Unreadable::Malformed { at })?;
                records.into_iter().for_each(&mut apply);
                last = Some(number);
                at += (BATCH_HEADER_LEN + body.len()) as u64;
            }
            Err(mut rest) => {
                // Does any later batch check? Then this is damage, not a torn write.
                from.read_to_end(&mut rest).map_err(io)?;
                return match later_batch(&rest[1..], last) {
                    true => Err(Unreadable::Damaged { at }),
                    false => Ok(Scanned::Torn {
                        valid: at,
                        next: last.map_or(0, |n| n + 1),
                    }),
                };
            }
        }
    }
}

/// What a batch that does not check left read of the log.
type Consumed = Vec<u8>;

/// The next batch, if it checks and follows `last`; otherwise what was read of it.
fn next_batch(
    from: &mut dyn Read,
    left: u64,
    last: Option<u64>,
) -> io::Result<Result<(u64, Vec<u8>), Consumed>> {
    let mut head = vec![0; BATCH_HEADER_LEN.min(left as usize)];
    from.read_exact(&mut head)?;
    if head.len() < BATCH_HEADER_LEN {
        return Ok(Err(head));
    }
    let Some((number, len, sum)) = batch_header(&head, last) else {
        return Ok(Err(head));
    };
    if len > left - BATCH_HEADER_LEN as u64 {
        return Ok(Err(head));
    }
    let mut body = vec![0; len as usize];
    from.read_exact(&mut body)?;
    if crc(number, &body) != sum {
        head.extend_from_slice(&body);
        return Ok(Err(head));
    }
    Ok(Ok((number, body)))
}

/// The number, length and CRC of a batch header that follows `last`.
fn batch_header(head: &[u8], last: Option<u64>) -> Option<(u64, u64, u32)> {
    let field = |range: std::ops::Range<usize>| {
        u64::from_le_bytes(head[range].try_into().expect("eight bytes"))
    };
    if &head[..8] != BATCH {
        return None;
    }
    let (number, len) = (field(8..16), field(16..24));
    let sum = u32::from_le_bytes(head[24..28].try_into().expect("four bytes"));
    let follows = last.is_none_or(|last| number == last + 1);
    follows.then_some((number, len, sum))
}

/// Whether a batch numbered after `last` checks anywhere in `bytes`.
fn later_batch(bytes: &[u8], last: Option<u64>) -> bool {
    let mut start = 0;
    while let Some(found) = find(&bytes[start..], BATCH) {
        let at = start + found;
        start = at + 1;
        let Some(head) = bytes.get(at..at + BATCH_HEADER_LEN) else {
            continue;
        };
        let number = u64::from_le_bytes(head[8..16].try_into().expect("eight bytes"));
        let len = u64::from_le_bytes(head[16..24].try_into().expect("eight bytes"));
        let sum = u32::from_le_bytes(head[24..28].try_into().expect("four bytes"));
        let later = last.is_none_or(|last| number > last);
        let body = usize::try_from(len).ok().and_then(|len| {
            bytes.get(at + BATCH_HEADER_LEN..(at + BATCH_HEADER_LEN).checked_add(len)?)
        });
        if let Some(body) = body.filter(|_| later) {
            if crc(number, body) == sum {
                return true;
            }
        }
    }
    false
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
