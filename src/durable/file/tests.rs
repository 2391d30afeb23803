//! The file store under crashes and storage faults, with an oracle that checks every
//! acknowledged change; and its directory's refusals.
//!
//! The seeded test runs a few seeds by default; `FILE_STORE_SEEDS=1000 cargo test --features
//! durable-file --lib durable::file` runs a thousand.

use std::io;
use std::sync::{Arc, Mutex};

use futures_util::future::join_all;

use super::log::{self, Scanned};
use super::media::Media;
use super::*;
use crate::durable::{Append, Create, ForkFrom, Offset, Payload, Producer, Store, StoreError};

/// A tiny deterministic generator (xorshift64*), so that a seed replays a run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A disk in memory: what a sync made durable, what was written since, a compaction's new log,
/// and the faults to inject.
#[derive(Default)]
struct Platter {
    durable: Vec<u8>,
    written: Vec<u8>,
    new: Option<Vec<u8>>,
    /// Fail the write or sync after this many more succeed, if set: a short write or a failed
    /// sync.
    fail_after: Option<u32>,
    crashed: bool,
}

#[derive(Clone, Default)]
struct Sim(Arc<Mutex<Platter>>);

impl Sim {
    fn platter(&self) -> std::sync::MutexGuard<'_, Platter> {
        self.0.lock().unwrap()
    }

    /// Whether the next operation fails (or the disk is gone).
    fn fault(platter: &mut Platter) -> bool {
        if platter.crashed {
            return true;
        }
        match &mut platter.fail_after {
            Some(0) => true,
            Some(n) => {
                *n -= 1;
                false
            }
            None => false,
        }
    }

    /// The bytes a crash leaves: what was synced, then some of what was written after, with
    /// a hole where a page did not reach the disk (as a file system may leave it).
    fn crash(&self, rng: &mut Rng) -> Vec<u8> {
        let mut platter = self.platter();
        platter.crashed = true;
        let mut bytes = platter.durable.clone();
        let unsynced = &platter.written[bytes.len()..];
        let kept = rng.below(unsynced.len() as u64 + 1) as usize;
        let start = bytes.len();
        bytes.extend_from_slice(&unsynced[..kept]);
        if kept > 0 && rng.chance(30) {
            let hole = start + rng.below(kept as u64) as usize;
            let end = (hole + 1 + rng.below(64) as usize).min(bytes.len());
            bytes[hole..end].fill(0);
        }
        bytes
    }
}

impl Media for Sim {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut platter = self.platter();
        if Self::fault(&mut platter) {
            // A short write: part of it reached the file.
            let part = bytes.len() / 2;
            if !platter.crashed {
                platter.written.extend_from_slice(&bytes[..part]);
            }
            return Err(io::Error::new(io::ErrorKind::StorageFull, "injected"));
        }
        platter.written.extend_from_slice(bytes);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut platter = self.platter();
        if Self::fault(&mut platter) {
            return Err(io::Error::other("injected"));
        }
        platter.durable = platter.written.clone();
        Ok(())
    }

    fn append_new(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut platter = self.platter();
        if platter.crashed {
            return Err(io::Error::other("crashed"));
        }
        platter
            .new
            .get_or_insert_with(Vec::new)
            .extend_from_slice(bytes);
        Ok(())
    }

    fn swap(&mut self) -> io::Result<()> {
        let mut platter = self.platter();
        if Self::fault(&mut platter) {
            platter.new = None;
            return Err(io::Error::other("injected"));
        }
        let new = platter.new.take().unwrap_or_default();
        platter.durable = new.clone();
        platter.written = new;
        Ok(())
    }
}

/// A store over `bytes` as its log, writing to a fresh simulated disk that starts with them.
fn reopen(builder: &FileStoreBuilder, bytes: Vec<u8>) -> Result<(FileStore, Sim), Unreadable> {
    let len = bytes.len() as u64;
    let (mut state, scanned) = builder.recover(&mut &bytes[..], len)?;
    let (valid, next) = match scanned {
        Scanned::Whole { next } => (len, next),
        Scanned::Torn { valid, next } => (valid, next),
    };
    let mut kept = bytes[..valid as usize].to_vec();
    if kept.is_empty() {
        kept.extend_from_slice(&log::header());
    }
    state.journal.log_len = kept.len() as u64;
    let sim = Sim::default();
    {
        let mut platter = sim.platter();
        platter.durable = kept.clone();
        platter.written = kept;
    }
    Ok((FileStore::start(state, Box::new(sim.clone()), next), sim))
}

fn text(payload: &Payload) -> String {
    match payload {
        Payload::Bytes(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
        Payload::Json(values) => values
            .iter()
            .map(|v| std::str::from_utf8(v).unwrap().to_owned())
            .collect::<Vec<_>>()
            .join(","),
    }
}

async fn contents(store: &FileStore, path: &str) -> Vec<String> {
    let read = store.read(path, Some(Offset::ZERO), usize::MAX, usize::MAX);
    read.await
        .unwrap()
        .chunks
        .iter()
        .map(|chunk| text(&chunk.payload))
        .collect()
}

/// Creates the text stream `path`.
async fn create_text(store: &FileStore, path: &str) {
    let create = Create::new(Some("text/plain".into()));
    store.create(path, create).await.unwrap();
}

/// Appends `body` to the text stream `path`, which must take it.
async fn append_text(store: &FileStore, path: &str, body: impl Into<bytes::Bytes>) {
    store
        .append(path, Append::new("text/plain", body))
        .await
        .unwrap();
}

#[tokio::test]
async fn everything_comes_back_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    store
        .create("/j", Create::new(Some("application/json".into())))
        .await
        .unwrap();
    let mut create = Create::new(Some("text/plain".into()));
    create.expires_at = Some(crate::durable::ExpiresAt::new(
        "2999-01-01T00:00:00Z",
        32_472_144_000_000,
    ));
    store.create("/t", create).await.unwrap();
    let mut append = Append::new("application/json", r#"[{"a":1},{"b":2}]"#);
    append.producer = Some(Producer::new("w", 3, 0));
    append.stream_seq = Some("007".into());
    assert!(store.append("/j", append.clone()).await.unwrap().wrote);
    append_text(&store, "/t", "hello ").await;
    append_text(&store, "/t", "world").await;
    let mut fork = Create::new(None);
    fork.fork = Some(ForkFrom::new("/t", Some(Offset::new(1))));
    store.create("/f", fork).await.unwrap();
    append_text(&store, "/f", "there").await;
    // Deleted while the fork reads from it: retired, not gone.
    store.delete("/t").await.unwrap();
    store.create("/d", Create::new(None)).await.unwrap();
    store.delete("/d").await.unwrap();
    // The producer closes the stream with its next write.
    let close = Append {
        close: true,
        producer: Some(Producer::new("w", 3, 1)),
        ..Append::default()
    };
    store.append("/j", close.clone()).await.unwrap();
    let epoch = store.info("/j").await.unwrap().epoch;
    drop(store);

    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(contents(&store, "/j").await, [r#"{"a":1},{"b":2}"#]);
    let info = store.info("/j").await.unwrap();
    assert!(info.closed);
    assert_eq!(info.epoch, epoch);
    // The producer's retry of its close is recognised; another write is refused.
    let retry = store.append("/j", close).await.unwrap();
    assert!(!retry.wrote && retry.closed);
    assert_eq!(retry.producer, Some((3, 1)));
    let closed = store.append("/j", append).await.unwrap_err();
    assert_eq!(
        closed,
        StoreError::Closed {
            tail: Offset::new(1)
        }
    );
    assert_eq!(contents(&store, "/f").await, ["hello ", "there"]);
    assert_eq!(store.info("/t").await.unwrap_err(), StoreError::Gone);
    assert_eq!(store.info("/d").await.unwrap_err(), StoreError::NotFound);
    // A new stream gets a new epoch, never one the log has seen.
    let again = store.create("/d", Create::new(None)).await.unwrap();
    assert!(again.info.epoch > epoch);
    // Removing the fork lets the retired source go too.
    store.delete("/f").await.unwrap();
    assert_eq!(store.len(), 2);
}

#[tokio::test]
async fn a_second_store_on_a_directory_is_refused_and_bad_logs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let second = FileStore::open(dir.path()).unwrap_err();
    assert!(matches!(second, OpenError::Locked { .. }), "{second}");
    drop(store);

    let log_path = dir.path().join("log");
    let mut bytes = std::fs::read(&log_path).unwrap();
    bytes[8] = 9;
    std::fs::write(&log_path, &bytes).unwrap();
    let err = FileStore::open(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("format version 9; this build reads version 1"),
        "{err}"
    );
    std::fs::write(&log_path, b"{\"not\": \"a log at all\"}").unwrap();
    let err = FileStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, OpenError::NotALog { .. }), "{err}");

    let file = tempfile::NamedTempFile::new().unwrap();
    let err = FileStore::open(file.path()).unwrap_err();
    assert!(matches!(err, OpenError::Io { .. }), "{err}");
}

/// A crash at any byte of the last batch loses that batch only; damage before a batch that
/// checks refuses the start and changes nothing.
#[tokio::test]
async fn a_torn_last_batch_is_cut_off_and_damage_before_acknowledged_data_is_refused() {
    let builder = FileStore::builder();
    let (store, sim) = reopen(&builder, Vec::new()).unwrap();
    create_text(&store, "/s").await;
    append_text(&store, "/s", "one").await;
    let before = sim.platter().durable.len();
    append_text(&store, "/s", "two").await;
    let bytes = sim.platter().durable.clone();
    drop(store);
    for cut in before..bytes.len() {
        let (store, _) = reopen(&builder, bytes[..cut].to_vec()).unwrap();
        assert_eq!(contents(&store, "/s").await, ["one"], "cut at {cut}");
    }
    let (store, _) = reopen(&builder, bytes.clone()).unwrap();
    assert_eq!(contents(&store, "/s").await, ["one", "two"]);
    drop(store);
    // A flipped bit in the first batch, with later batches intact.
    let mut damaged = bytes.clone();
    damaged[log::HEADER_LEN + log::BATCH_HEADER_LEN + 3] ^= 1;
    let err = reopen(&builder, damaged).err().unwrap();
    assert_eq!(
        err,
        Unreadable::Damaged {
            at: log::HEADER_LEN as u64
        }
    );
}

/// A failed write fails the store for writes, answers what waited with an error, and keeps
/// what was durable readable.
#[tokio::test]
async fn a_failed_write_refuses_writes_and_keeps_reads() {
    let (store, sim) = reopen(&FileStore::builder(), Vec::new()).unwrap();
    create_text(&store, "/s").await;
    append_text(&store, "/s", "kept").await;
    sim.platter().fail_after = Some(0);
    let lost = store.append("/s", Append::new("text/plain", "lost")).await;
    assert_eq!(lost.unwrap_err(), StoreError::StorageFull);
    let refused = store.append("/s", Append::new("text/plain", "later")).await;
    assert_eq!(refused.unwrap_err(), StoreError::StorageFull);
    store.create("/t", Create::new(None)).await.unwrap_err();
    // The stream's last change never became durable: a read of it does not pretend.
    assert_eq!(
        store.read("/s", None, 1, 1).await.unwrap_err(),
        StoreError::StorageFull
    );
    let crashed = sim.crash(&mut Rng::new(1));
    let (store, _) = reopen(&FileStore::builder(), crashed).unwrap();
    assert_eq!(contents(&store, "/s").await, ["kept"]);
}

/// The log is compacted once it holds mostly dead data, and what is live survives it.
#[tokio::test]
async fn compaction_gives_space_back_and_keeps_the_streams() {
    let (store, sim) = reopen(&FileStore::builder().max_log_bytes(4 << 20), Vec::new()).unwrap();
    let big = "x".repeat(64 << 10);
    create_text(&store, "/keep").await;
    append_text(&store, "/keep", "kept").await;
    for round in 0..100 {
        let path = format!("/tmp{round}");
        create_text(&store, &path).await;
        append_text(&store, &path, big.clone()).await;
        store.delete(&path).await.unwrap();
    }
    // 6.4 MB went through a log bounded by 4 MiB.
    assert!(store.log_bytes() < 4 << 20);
    let bytes = sim.platter().durable.clone();
    drop(store);
    let (store, _) = reopen(&FileStore::builder(), bytes).unwrap();
    assert_eq!(contents(&store, "/keep").await, ["kept"]);
    assert_eq!(store.len(), 1);
}

/// One seed: writers append through crashes and faults; after each crash, every acknowledged
/// append is back, in order, once, and every producer's last acknowledged append is a
/// duplicate when retried.
async fn run_seed(seed: u64) {
    let mut rng = Rng::new(seed);
    let builder = FileStore::builder();
    let streams = ["/a", "/b", "/c"];
    let writers = 6;
    // Per stream: what was decided, in order, and whether each was acknowledged.
    let mut decided: Vec<Vec<(String, bool)>> = vec![Vec::new(); streams.len()];
    let mut next_seq = vec![0u64; writers];
    let mut bytes = Vec::new();
    for cycle in 0..4 {
        let (store, sim) = reopen(&builder, std::mem::take(&mut bytes))
            .unwrap_or_else(|err| panic!("seed {seed} cycle {cycle}: {err:?}"));
        // The oracle: the recovered streams are a prefix of what was decided, holding every
        // acknowledged append.
        for (s, path) in streams.iter().enumerate() {
            if cycle == 0 {
                let content_type = if s == 0 {
                    "application/json"
                } else {
                    "text/plain"
                };
                store
                    .create(path, Create::new(Some(content_type.into())))
                    .await
                    .unwrap();
                continue;
            }
            let found = contents(&store, path).await;
            let expected: Vec<&String> = decided[s].iter().map(|(p, _)| p).collect();
            assert!(
                found.len() <= expected.len() && found.iter().zip(&expected).all(|(a, b)| a == *b),
                "seed {seed} cycle {cycle} {path}: {found:?} is not a prefix of {expected:?}"
            );
            let last_acked = decided[s].iter().rposition(|(_, acked)| *acked);
            assert!(
                last_acked.is_none_or(|i| i < found.len()),
                "seed {seed} cycle {cycle} {path}: lost acknowledged appends: {found:?} of {expected:?}"
            );
            decided[s] = found.into_iter().map(|p| (p, true)).collect();
        }
        // Every producer's last append that is there is a duplicate when retried.
        for (w, next) in next_seq.iter_mut().enumerate() {
            let s = w % streams.len();
            let last = decided[s]
                .iter()
                .filter_map(|(p, _)| parse(p))
                .filter(|&(writer, _)| writer == w)
                .map(|(_, seq)| seq)
                .max();
            *next = last.map_or(0, |seq| seq + 1);
            if let Some(seq) = last {
                let retry = store.append(streams[s], appended(s, w, seq)).await.unwrap();
                assert!(
                    !retry.wrote,
                    "seed {seed} cycle {cycle}: writer {w} seq {seq} twice"
                );
                assert_eq!(retry.producer, Some((0, seq)));
            }
        }
        if rng.chance(30) {
            sim.platter().fail_after = Some(rng.below(20) as u32);
        }
        // Rounds of concurrent appends, a group commit's worth at a time, then a crash in the
        // middle of one.
        let rounds = 1 + rng.below(12);
        for round in 0..=rounds {
            let mut waiting = Vec::new();
            for _ in 0..1 + rng.below(8) {
                let w = rng.below(writers as u64) as usize;
                let s = w % streams.len();
                let seq = next_seq[w];
                next_seq[w] += 1;
                let future = store.append(streams[s], appended(s, w, seq));
                decided[s].push((payload(s, w, seq), false));
                waiting.push((s, decided[s].len() - 1, w, future));
            }
            if round == rounds {
                // The crash: some of these may be durable, none is acknowledged.
                break;
            }
            let results = join_all(
                waiting
                    .into_iter()
                    .map(|(s, at, w, future)| async move { (s, at, w, future.await) }),
            )
            .await;
            for (s, at, w, result) in results {
                match result {
                    Ok(appended) => {
                        assert!(appended.wrote, "seed {seed}: writer {w}");
                        decided[s][at].1 = true;
                    }
                    // A failed store: it may or may not be on disk; the writer learns which
                    // from the stream after the restart.
                    Err(StoreError::StorageFull | StoreError::Unavailable) => {}
                    Err(other) => panic!("seed {seed}: {other:?}"),
                }
            }
        }
        bytes = sim.crash(&mut rng);
        drop(store);
    }
}

fn payload(s: usize, w: usize, seq: u64) -> String {
    match s {
        0 => format!(
            r#"{{"w":{w},"seq":{seq},"pad":"{}"}}"#,
            "j".repeat(seq as usize % 50)
        ),
        _ => format!("w{w}:{seq}:{}", "t".repeat(seq as usize % 70)),
    }
}

fn parse(payload: &str) -> Option<(usize, u64)> {
    if let Some(rest) = payload.strip_prefix("w") {
        let mut parts = rest.split(':');
        return Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?));
    }
    let value: serde_json::Value = serde_json::from_str(payload).ok()?;
    Some((value["w"].as_u64()? as usize, value["seq"].as_u64()?))
}

fn appended(s: usize, w: usize, seq: u64) -> Append {
    let content_type = if s == 0 {
        "application/json"
    } else {
        "text/plain"
    };
    let mut append = Append::new(content_type, payload(s, w, seq));
    append.producer = Some(Producer::new(format!("writer-{w}"), 0, seq));
    append
}

#[tokio::test]
async fn no_acknowledged_append_is_lost_or_doubled_through_crashes_and_faults() {
    let seeds: u64 = std::env::var("FILE_STORE_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(24);
    for seed in 0..seeds {
        run_seed(seed).await;
    }
}

/// Stream names are data in the log: hostile ones neither reach the file system nor collide.
#[tokio::test]
async fn hostile_names_stay_names() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("/{}", "n".repeat(10_000));
    let names = [
        "/../../escape",
        "/a%2Fb",
        "/a/b",
        "/Case",
        "/case",
        "/ünï/cödé/🦀",
        "/nul\u{0}byte",
        long.as_str(),
    ];
    let store = FileStore::open(dir.path()).unwrap();
    for (i, name) in names.iter().enumerate() {
        create_text(&store, name).await;
        append_text(&store, name, i.to_string()).await;
    }
    drop(store);
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.len(), names.len());
    for (i, name) in names.iter().enumerate() {
        assert_eq!(contents(&store, name).await, [i.to_string()], "{name:?}");
    }
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["lock", "log"]);
    assert!(!dir.path().parent().unwrap().join("escape").exists());
}

/// A log at its bound refuses what would take it beyond with `507`, and stays readable.
#[tokio::test]
async fn a_full_log_refuses_writes_and_stays_readable() {
    let builder = FileStore::builder().max_log_bytes(256 << 10);
    let (store, _sim) = reopen(&builder, Vec::new()).unwrap();
    create_text(&store, "/s").await;
    let chunk = "z".repeat(16 << 10);
    let mut appended = 0;
    let refused = loop {
        match store
            .append("/s", Append::new("text/plain", chunk.clone()))
            .await
        {
            Ok(_) => appended += 1,
            Err(err) => break err,
        }
        assert!(appended < 100, "the bound holds");
    };
    assert_eq!(refused, StoreError::StorageFull);
    assert_eq!(refused.status(), 507);
    assert!(store.log_bytes() <= 256 << 10);
    assert_eq!(contents(&store, "/s").await.len(), appended);
    // Deleting gives the space back once the log is compacted, which the delete's batch
    // starts (the log is near its bound and grew since its last compaction).
    store.delete("/s").await.unwrap();
    let compacted = std::time::Instant::now();
    while store.log_bytes() > 64 << 10 {
        assert!(compacted.elapsed().as_secs() < 10, "compacted within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    create_text(&store, "/t").await;
    append_text(&store, "/t", chunk).await;
}
