//! The storage engines the Durable Streams file store was chosen among, measured on its
//! workload: group-committed, durable appends with their producer state (see
//! `docs/durable-streams/STORAGE.md`). A program of its own, outside the crate.
//! Usage: storage-engines all                      (whole suite, prints a report)
//!        storage-engines bench <eng> <W> <secs> <dir>
//!        storage-engines storage [dir]          (fill 200 MB/10k streams, open, read, reclaim, lock only)
//!        storage-engines rawsync
//!        storage-engines fill <eng> <dir> | open <eng> <dir> [cold] | lock <eng> | hold <eng> <dir>
//! eng: sqlite (WAL, synchronous=FULL), sqlite-normal (WAL, NORMAL), redb, fjall, log
use redb::ReadableDatabase;
use std::collections::HashMap;
use std::error::Error;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

type R<T> = Result<T, Box<dyn Error + Send + Sync>>;

pub struct Rec {
    stream: u64,
    offset: u64,
    producer: String,
    epoch: u64,
    seq: u64,
    data: Vec<u8>,
}

trait Engine: Send {
    /// Write all records + resulting producer states + stream tails atomically and durably.
    fn commit(&mut self, recs: &[Rec]) -> R<()>;
    fn read_last(&mut self, stream: u64, n: usize) -> R<Vec<Vec<u8>>>;
    /// Delete all chunks of these streams in one durable transaction (space-reclaim test).
    fn delete_streams(&mut self, streams: &[u64]) -> R<()>;
}

/// Final producer state and stream tail after a batch (last write wins).
fn summarize(recs: &[Rec]) -> (HashMap<(u64, &str), (u64, u64)>, HashMap<u64, u64>) {
    let mut p = HashMap::new();
    let mut t = HashMap::new();
    for r in recs {
        p.insert((r.stream, r.producer.as_str()), (r.epoch, r.seq));
        t.insert(r.stream, r.offset);
    }
    (p, t)
}

// ---------------------------------------------------------------- sqlite
struct Sqlite {
    c: rusqlite::Connection,
}
impl Sqlite {
    fn open(dir: &Path, sync: &str) -> R<Self> {
        std::fs::create_dir_all(dir)?;
        let c = rusqlite::Connection::open(dir.join("store.sqlite"))?;
        let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        assert_eq!(mode, "wal");
        c.execute_batch(&format!(
            "PRAGMA synchronous={sync};
             CREATE TABLE IF NOT EXISTS chunks(stream INTEGER, seq INTEGER, data BLOB, PRIMARY KEY(stream, seq)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS producers(stream INTEGER, id TEXT, epoch INTEGER, seq INTEGER, PRIMARY KEY(stream, id)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS streams(id INTEGER PRIMARY KEY, tail INTEGER);"
        ))?;
        Ok(Sqlite { c })
    }
}
impl Engine for Sqlite {
    fn commit(&mut self, recs: &[Rec]) -> R<()> {
        let (p, t) = summarize(recs);
        let tx = self.c.transaction()?;
        {
            let mut s = tx.prepare_cached("INSERT INTO chunks(stream, seq, data) VALUES (?1, ?2, ?3)")?;
            for r in recs {
                s.execute(rusqlite::params![r.stream as i64, r.offset as i64, &r.data])?;
            }
            let mut s = tx.prepare_cached(
                "INSERT INTO producers(stream, id, epoch, seq) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(stream, id) DO UPDATE SET epoch = excluded.epoch, seq = excluded.seq",
            )?;
            for ((st, id), (e, q)) in &p {
                s.execute(rusqlite::params![*st as i64, id, *e as i64, *q as i64])?;
            }
            let mut s = tx.prepare_cached(
                "INSERT INTO streams(id, tail) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET tail = excluded.tail",
            )?;
            for (st, tail) in &t {
                s.execute(rusqlite::params![*st as i64, *tail as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
    fn read_last(&mut self, stream: u64, n: usize) -> R<Vec<Vec<u8>>> {
        let mut s = self
            .c
            .prepare_cached("SELECT data FROM chunks WHERE stream = ?1 ORDER BY seq DESC LIMIT ?2")?;
        let rows = s.query_map(rusqlite::params![stream as i64, n as i64], |r| r.get::<_, Vec<u8>>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
    fn delete_streams(&mut self, streams: &[u64]) -> R<()> {
        let tx = self.c.transaction()?;
        for s in streams {
            tx.execute("DELETE FROM chunks WHERE stream = ?1", [*s as i64])?;
        }
        tx.commit()?;
        Ok(())
    }
}

// ---------------------------------------------------------------- redb
const CHUNKS: redb::TableDefinition<(u64, u64), &[u8]> = redb::TableDefinition::new("chunks");
const PRODUCERS: redb::TableDefinition<(u64, &str), (u64, u64)> = redb::TableDefinition::new("producers");
const STREAMS: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("streams");

struct Redb {
    db: redb::Database,
}
impl Redb {
    fn open(dir: &Path) -> R<Self> {
        std::fs::create_dir_all(dir)?;
        let db = redb::Database::create(dir.join("store.redb"))?;
        let w = db.begin_write()?;
        {
            w.open_table(CHUNKS)?;
            w.open_table(PRODUCERS)?;
            w.open_table(STREAMS)?;
        }
        w.commit()?;
        Ok(Redb { db })
    }
}
impl Engine for Redb {
    fn commit(&mut self, recs: &[Rec]) -> R<()> {
        let (p, t) = summarize(recs);
        let w = self.db.begin_write()?; // default durability = Immediate
        {
            let mut c = w.open_table(CHUNKS)?;
            for r in recs {
                c.insert((r.stream, r.offset), r.data.as_slice())?;
            }
            let mut pt = w.open_table(PRODUCERS)?;
            for ((st, id), (e, q)) in &p {
                pt.insert((*st, *id), (*e, *q))?;
            }
            let mut stt = w.open_table(STREAMS)?;
            for (st, tail) in &t {
                stt.insert(*st, *tail)?;
            }
        }
        w.commit()?;
        Ok(())
    }
    fn read_last(&mut self, stream: u64, n: usize) -> R<Vec<Vec<u8>>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(CHUNKS)?;
        let mut out = Vec::with_capacity(n);
        for e in t.range((stream, 0)..=(stream, u64::MAX))?.rev().take(n) {
            out.push(e?.1.value().to_vec());
        }
        Ok(out)
    }
    fn delete_streams(&mut self, streams: &[u64]) -> R<()> {
        let w = self.db.begin_write()?;
        {
            let mut c = w.open_table(CHUNKS)?;
            for &s in streams {
                c.retain_in((s, 0)..=(s, u64::MAX), |_, _| false)?;
            }
        }
        w.commit()?;
        Ok(())
    }
}

// ---------------------------------------------------------------- fjall
struct Fjall {
    db: fjall::Database,
    chunks: fjall::Keyspace,
    producers: fjall::Keyspace,
    streams: fjall::Keyspace,
}
impl Fjall {
    fn open(dir: &Path) -> R<Self> {
        let db = fjall::Database::builder(dir).open()?;
        let chunks = db.keyspace("chunks", fjall::KeyspaceCreateOptions::default)?;
        let producers = db.keyspace("producers", fjall::KeyspaceCreateOptions::default)?;
        let streams = db.keyspace("streams", fjall::KeyspaceCreateOptions::default)?;
        Ok(Fjall { db, chunks, producers, streams })
    }
}
fn k2(a: u64, b: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}
impl Engine for Fjall {
    fn commit(&mut self, recs: &[Rec]) -> R<()> {
        let (p, t) = summarize(recs);
        let mut b = self.db.batch().durability(Some(fjall::PersistMode::SyncData));
        for r in recs {
            b.insert(&self.chunks, &k2(r.stream, r.offset)[..], r.data.as_slice());
        }
        for ((st, id), (e, q)) in &p {
            let mut k = st.to_be_bytes().to_vec();
            k.extend_from_slice(id.as_bytes());
            b.insert(&self.producers, k, &k2(*e, *q)[..]);
        }
        for (st, tail) in &t {
            b.insert(&self.streams, &st.to_be_bytes()[..], &tail.to_be_bytes()[..]);
        }
        b.commit()?; // journal write + fdatasync in the same call
        Ok(())
    }
    fn read_last(&mut self, stream: u64, n: usize) -> R<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(n);
        for g in self.chunks.prefix(stream.to_be_bytes()).rev().take(n) {
            out.push(g.value()?.to_vec());
        }
        Ok(out)
    }
    fn delete_streams(&mut self, streams: &[u64]) -> R<()> {
        let mut b = self.db.batch().durability(Some(fjall::PersistMode::SyncData));
        for &s in streams {
            for g in self.chunks.prefix(s.to_be_bytes()) {
                b.remove(&self.chunks, g.key()?);
            }
        }
        b.commit()?;
        Ok(())
    }
}

// ---------------------------------------------------------------- own log
/// One file; frame = [len u32 LE][crc32c u32 LE][payload];
/// payload = stream u64 | offset u64 | epoch u64 | seq u64 | plen u16 | producer | data
struct Log {
    f: File,
    pos: u64,
    index: HashMap<u64, Vec<(u64, u32)>>, // stream -> (file pos of data, data len)
    producers: HashMap<(u64, String), (u64, u64)>,
    tails: HashMap<u64, u64>,
    buf: Vec<u8>,
}
const HDR: usize = 8;
const FIXED: usize = 8 * 4 + 2;
impl Log {
    fn open(dir: &Path) -> R<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("store.log");
        let existed = path.exists();
        let f = OpenOptions::new().read(true).write(true).create(true).open(&path)?;
        f.try_lock().map_err(|e| format!("store.log is locked by another process: {e}"))?;
        if !existed {
            File::open(dir)?.sync_all()?; // make the new directory entry durable
        }
        let mut log = Log { f, pos: 0, index: HashMap::new(), producers: HashMap::new(), tails: HashMap::new(), buf: Vec::new() };
        log.replay()?;
        Ok(log)
    }
    fn replay(&mut self) -> R<()> {
        let len = self.f.metadata()?.len();
        let mut rd = std::io::BufReader::with_capacity(1 << 20, &self.f);
        let mut pos = 0u64;
        let mut hdr = [0u8; HDR];
        let mut payload = Vec::new();
        loop {
            if pos + HDR as u64 > len || rd.read_exact(&mut hdr).is_err() {
                break;
            }
            let plen = u32::from_le_bytes(hdr[..4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(hdr[4..].try_into().unwrap());
            if plen < FIXED || pos + (HDR + plen) as u64 > len {
                break; // torn tail
            }
            payload.resize(plen, 0);
            if rd.read_exact(&mut payload).is_err() || crc32c::crc32c(&payload) != crc {
                break; // torn / corrupt tail
            }
            let u = |i: usize| u64::from_le_bytes(payload[i * 8..i * 8 + 8].try_into().unwrap());
            let (stream, offset, epoch, seq) = (u(0), u(1), u(2), u(3));
            let pl = u16::from_le_bytes(payload[32..34].try_into().unwrap()) as usize;
            let producer = String::from_utf8_lossy(&payload[FIXED..FIXED + pl]).into_owned();
            let dpos = pos + (HDR + FIXED + pl) as u64;
            let dlen = (plen - FIXED - pl) as u32;
            self.index.entry(stream).or_default().push((dpos, dlen));
            self.producers.insert((stream, producer), (epoch, seq));
            self.tails.insert(stream, offset);
            pos += (HDR + plen) as u64;
        }
        if pos != len {
            self.f.set_len(pos)?; // drop the torn tail
            self.f.sync_all()?;
        }
        self.pos = pos;
        Ok(())
    }
}
impl Engine for Log {
    fn commit(&mut self, recs: &[Rec]) -> R<()> {
        self.buf.clear();
        let mut idx = Vec::with_capacity(recs.len());
        for r in recs {
            let start = self.buf.len();
            self.buf.extend_from_slice(&[0u8; HDR]);
            for v in [r.stream, r.offset, r.epoch, r.seq] {
                self.buf.extend_from_slice(&v.to_le_bytes());
            }
            self.buf.extend_from_slice(&(r.producer.len() as u16).to_le_bytes());
            self.buf.extend_from_slice(r.producer.as_bytes());
            let dpos = self.pos + self.buf.len() as u64;
            self.buf.extend_from_slice(&r.data);
            let payload_len = self.buf.len() - start - HDR;
            let crc = crc32c::crc32c(&self.buf[start + HDR..]);
            self.buf[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
            self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
            idx.push((r.stream, dpos, r.data.len() as u32));
        }
        self.f.write_all_at(&self.buf, self.pos)?; // one write per batch
        self.f.sync_data()?; // one fdatasync per batch
        self.pos += self.buf.len() as u64;
        for (s, p, l) in idx {
            self.index.entry(s).or_default().push((p, l));
        }
        for r in recs {
            self.tails.insert(r.stream, r.offset);
            self.producers.insert((r.stream, r.producer.clone()), (r.epoch, r.seq));
        }
        Ok(())
    }
    fn read_last(&mut self, stream: u64, n: usize) -> R<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(n);
        if let Some(v) = self.index.get(&stream) {
            for &(p, l) in v.iter().rev().take(n) {
                let mut b = vec![0u8; l as usize];
                self.f.read_exact_at(&mut b, p)?;
                out.push(b);
            }
        }
        Ok(out)
    }
    fn delete_streams(&mut self, _streams: &[u64]) -> R<()> {
        Err("own log: no delete/reclaim implemented (would need segment files + compaction)".into())
    }
}

fn open_engine(eng: &str, dir: &Path) -> R<Box<dyn Engine>> {
    Ok(match eng {
        "sqlite" => Box::new(Sqlite::open(dir, "FULL")?),
        "sqlite-normal" => Box::new(Sqlite::open(dir, "NORMAL")?),
        "redb" => Box::new(Redb::open(dir)?),
        "fjall" => Box::new(Fjall::open(dir)?),
        "log" => Box::new(Log::open(dir)?),
        _ => return Err(format!("unknown engine {eng}").into()),
    })
}

fn payload(stream: u64, seq: u64) -> Vec<u8> {
    // ~250 bytes of JSON with the same keys in every record
    let mut s = format!(
        r#"{{"type":"page_view","stream":{stream},"seq":{seq},"user_id":"user-{:06}","session":"sess-{:08x}","url":"https://example.com/products/item-{}","referrer":"https://example.com/search?q=shoes","ua":"Mozilla/5.0 (X11; Linux x86_64)","ok":true"#,
        seq % 100000, seq.wrapping_mul(2654435761) as u32, seq % 997
    );
    while s.len() < 248 {
        s.push(' ');
    }
    s.push('}');
    s.into_bytes()
}

// ---------------------------------------------------------------- group-commit bench
struct Req {
    stream: u64,
    producer: String,
    epoch: u64,
    seq: u64,
    data: Vec<u8>,
    ack: tokio::sync::oneshot::Sender<Result<u64, String>>,
}

fn committer(mut eng: Box<dyn Engine>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Req>) -> Vec<u32> {
    let mut tails: HashMap<u64, u64> = HashMap::new();
    let mut prod: HashMap<(u64, String), (u64, u64)> = HashMap::new();
    let mut batches = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut reqs = vec![first];
        while let Ok(r) = rx.try_recv() {
            reqs.push(r);
        }
        let mut recs = Vec::with_capacity(reqs.len());
        let mut acks = Vec::with_capacity(reqs.len());
        for r in reqs {
            // idempotent producer check (in-memory, authoritative state is written with the batch)
            let key = (r.stream, r.producer.clone());
            if let Some(&(e, s)) = prod.get(&key) {
                if r.epoch == e && r.seq <= s {
                    let _ = r.ack.send(Err("duplicate".into()));
                    continue;
                }
            }
            prod.insert(key, (r.epoch, r.seq));
            let t = tails.entry(r.stream).or_insert(0);
            *t += 1;
            recs.push(Rec { stream: r.stream, offset: *t, producer: r.producer, epoch: r.epoch, seq: r.seq, data: r.data });
            acks.push((r.ack, *t));
        }
        let res = eng.commit(&recs);
        batches.push(recs.len() as u32);
        for (a, off) in acks {
            let _ = a.send(match &res {
                Ok(()) => Ok(off),
                Err(e) => Err(e.to_string()),
            });
        }
    }
    batches
}

fn bench(eng: &str, w: usize, secs: f64, dir: &Path) -> R<()> {
    let _ = std::fs::remove_dir_all(dir);
    let e = open_engine(eng, dir)?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Req>();
    let ct = std::thread::spawn(move || committer(e, rx));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (lat, elapsed) = rt.block_on(async move {
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(secs);
        let mut hs = Vec::new();
        for i in 0..w {
            let tx = tx.clone();
            hs.push(tokio::spawn(async move {
                let stream = (i % 16) as u64;
                let producer = format!("producer-{i}");
                let mut lat = Vec::new();
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    seq += 1;
                    let (atx, arx) = tokio::sync::oneshot::channel();
                    let t0 = Instant::now();
                    tx.send(Req { stream, producer: producer.clone(), epoch: 1, seq, data: payload(stream, seq), ack: atx }).unwrap();
                    arx.await.unwrap().unwrap();
                    lat.push(t0.elapsed().as_micros() as u32);
                }
                lat
            }));
        }
        drop(tx);
        let mut all = Vec::new();
        for h in hs {
            all.extend(h.await.unwrap());
        }
        (all, start.elapsed())
    });
    let batches = ct.join().unwrap();
    let mut lat = lat;
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0;
    let mean_batch = batches.iter().map(|&b| b as f64).sum::<f64>() / batches.len() as f64;
    let max_batch = batches.iter().max().copied().unwrap_or(0);
    println!(
        "RESULT {} {:.3} {:.3} {:.2} {} {}",
        lat.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        mean_batch,
        max_batch,
        batches.len() as f64 / elapsed.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

// ---------------------------------------------------------------- raw disk sync rate
fn rawsync(dir: &Path) -> R<()> {
    std::fs::create_dir_all(dir)?;
    let buf = [b'x'; 300];
    for mode in ["append", "overwrite"] {
        let p = dir.join(format!("raw-{mode}"));
        let _ = std::fs::remove_file(&p);
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&p)?;
        let start = Instant::now();
        let mut n = 0u64;
        let mut lat = Vec::new();
        while start.elapsed() < Duration::from_secs(3) {
            let t0 = Instant::now();
            if mode == "append" {
                f.write_all(&buf)?;
            } else {
                f.write_all_at(&buf, 0)?;
            }
            f.sync_data()?;
            lat.push(t0.elapsed().as_micros() as u32);
            n += 1;
        }
        lat.sort_unstable();
        println!(
            "RAWSYNC {mode}: {:.0} write(300B)+fdatasync/s, p50 {:.3} ms, p99 {:.3} ms",
            n as f64 / start.elapsed().as_secs_f64(),
            lat[lat.len() / 2] as f64 / 1000.0,
            lat[lat.len() * 99 / 100] as f64 / 1000.0
        );
        let _ = std::fs::remove_file(&p);
    }
    Ok(())
}

// ---------------------------------------------------------------- fill / open / read
const FILL_STREAMS: u64 = 10_000;
const FILL_PER_STREAM: u64 = 80; // 800k records x 250 B = 200 MB of payload

fn fill(eng: &str, dir: &Path) -> R<()> {
    let _ = std::fs::remove_dir_all(dir);
    let mut e = open_engine(eng, dir)?;
    let t0 = Instant::now();
    let mut recs = Vec::new();
    for off in 1..=FILL_PER_STREAM {
        for s in 0..FILL_STREAMS {
            recs.push(Rec { stream: s, offset: off, producer: format!("p{s}"), epoch: 1, seq: off, data: payload(s, off) });
            if recs.len() == 10_000 {
                e.commit(&recs)?;
                recs.clear();
            }
        }
    }
    if !recs.is_empty() {
        e.commit(&recs)?;
    }
    drop(e);
    println!("FILL {:.1} s, on disk {:.1} MB", t0.elapsed().as_secs_f64(), du(dir) as f64 / 1e6);
    Ok(())
}

fn du(dir: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            n += if m.is_dir() { du(&e.path()) } else { m.len() };
        }
    }
    n
}

fn evict(dir: &Path) {
    // drop only this store's pages from the page cache (no global drop_caches)
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                evict(&p);
            } else if let Ok(f) = File::open(&p) {
                use std::os::fd::AsRawFd;
                unsafe {
                    libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
                }
            }
        }
    }
}

fn open_and_read(eng: &str, dir: &Path, cold: bool) -> R<()> {
    if cold {
        evict(dir);
    }
    let t0 = Instant::now();
    let mut e = open_engine(eng, dir)?;
    let open = t0.elapsed();
    // sanity
    let last = e.read_last(1234, 10)?;
    assert_eq!(last.len(), 10);
    assert_eq!(last[0], payload(1234, FILL_PER_STREAM));
    // warm-up then measure
    let mut x = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % FILL_STREAMS
    };
    for _ in 0..20_000 {
        e.read_last(next(), 10)?;
    }
    let mut lat = Vec::new();
    for _ in 0..20_000 {
        let s = next();
        let t = Instant::now();
        let v = e.read_last(s, 10)?;
        lat.push(t.elapsed().as_nanos() as u64);
        assert_eq!(v.len(), 10);
    }
    lat.sort_unstable();
    println!(
        "OPEN {} {:.1} ms; READ last10 p50 {:.1} us p99 {:.1} us",
        if cold { "cold" } else { "warm" },
        open.as_secs_f64() * 1000.0,
        lat[lat.len() / 2] as f64 / 1000.0,
        lat[lat.len() * 99 / 100] as f64 / 1000.0
    );
    Ok(())
}

fn reclaim(eng: &str, dir: &Path) -> R<()> {
    let d0 = du(dir);
    let mut e = open_engine(eng, dir)?;
    let half: Vec<u64> = (0..FILL_STREAMS / 2).collect();
    let t0 = Instant::now();
    if let Err(err) = e.delete_streams(&half) {
        println!("RECLAIM {err}");
        return Ok(());
    }
    let tdel = t0.elapsed();
    drop(e);
    let d1 = du(dir);
    // write the same amount again into new streams: is the freed space reused?
    let mut e = open_engine(eng, dir)?;
    let mut recs = Vec::new();
    for off in 1..=FILL_PER_STREAM {
        for s in FILL_STREAMS..FILL_STREAMS + FILL_STREAMS / 2 {
            recs.push(Rec { stream: s, offset: off, producer: format!("p{s}"), epoch: 1, seq: off, data: payload(s, off) });
            if recs.len() == 10_000 {
                e.commit(&recs)?;
                recs.clear();
            }
        }
    }
    drop(e);
    let d2 = du(dir);
    println!(
        "RECLAIM size after fill {:.1} MB; after deleting half the streams ({:.1} s) and closing {:.1} MB; after writing the same amount again {:.1} MB",
        d0 as f64 / 1e6, tdel.as_secs_f64(), d1 as f64 / 1e6, d2 as f64 / 1e6
    );
    Ok(())
}

// ---------------------------------------------------------------- lock test
fn lock_test(eng: &str, dir: &Path) -> R<()> {
    let _ = std::fs::remove_dir_all(dir);
    drop(open_engine(eng, dir)?);
    let mut child = Command::new(std::env::current_exe()?)
        .args(["hold", eng, dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
    let res = match open_engine(eng, dir) {
        Err(e) => format!("second open REFUSED: {e}"),
        Ok(mut e2) => {
            let r = e2.commit(&[Rec { stream: 1, offset: 1, producer: "x".into(), epoch: 1, seq: 1, data: b"{}".to_vec() }]);
            format!("second open SUCCEEDED (child holds it: {}); write from 2nd process: {:?}", line.trim(), r.map_err(|e| e.to_string()))
        }
    };
    println!("LOCK {eng}: {res}");
    child.kill()?;
    child.wait()?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

// ---------------------------------------------------------------- orchestration
fn run_child(args: &[&str]) -> String {
    let out = Command::new(std::env::current_exe().unwrap()).args(args).output().unwrap();
    if !out.status.success() {
        return format!("FAILED: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn all(root: &Path, secs: &str, reps: usize) -> R<()> {
    std::fs::create_dir_all(root)?;
    print!("{}", run_child(&["rawsync", root.to_str().unwrap()]));
    let engines = ["sqlite", "redb", "fjall", "log"];
    // results[(eng, w)] = Vec<[f64; 6]>
    let mut res: HashMap<(String, usize), Vec<Vec<f64>>> = HashMap::new();
    let dir = root.join("bench");
    for w in [1usize, 8, 32] {
        for rep in 0..reps {
            let mut list: Vec<&str> = engines.to_vec();
            if rep == 0 {
                list.push("sqlite-normal");
            }
            for eng in list {
                let ws = w.to_string();
                let out = run_child(&["bench", eng, &ws, secs, dir.to_str().unwrap()]);
                let line = out.lines().find(|l| l.starts_with("RESULT")).unwrap_or("").to_string();
                eprintln!("W={w} rep={rep} {eng}: {}", if line.is_empty() { &out } else { &line });
                let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
                if v.len() == 6 {
                    res.entry((eng.to_string(), w)).or_default().push(v);
                }
            }
        }
    }
    println!("\n| engine | W | appends/s | p50 ms | p99 ms | mean batch | max batch | commits/s | runs |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for eng in engines.iter().chain(["sqlite-normal"].iter()) {
        for w in [1usize, 8, 32] {
            if let Some(runs) = res.get(&(eng.to_string(), w)) {
                let m = |i: usize| median(runs.iter().map(|r| r[i]).collect());
                println!(
                    "| {eng} | {w} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {} ({}) |",
                    m(0), m(1), m(2), m(3), m(4), m(5), runs.len(),
                    runs.iter().map(|r| format!("{:.0}", r[0])).collect::<Vec<_>>().join("/")
                );
            }
        }
    }
    println!();
    storage(root)
}

fn storage(root: &Path) -> R<()> {
    std::fs::create_dir_all(root)?;
    let engines = ["sqlite", "redb", "fjall", "log"];
    for eng in engines {
        let d = root.join(format!("fill-{eng}"));
        let ds = d.to_str().unwrap();
        print!("{eng}: {}", run_child(&["fill", eng, ds]));
        print!("{eng}: {}", run_child(&["open", eng, ds]));
        print!("{eng}: {}", run_child(&["open", eng, ds, "cold"]));
        print!("{eng}: {}", run_child(&["open", eng, ds]));
        print!("{eng}: {}", run_child(&["reclaim", eng, ds]));
        let _ = std::fs::remove_dir_all(&d);
    }
    println!();
    for eng in engines {
        print!("{}", run_child(&["lock", eng, root.join("lock").to_str().unwrap()]));
    }
    Ok(())
}

fn main() -> R<()> {
    let a: Vec<String> = std::env::args().collect();
    let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    let default_root = "data";
    match a.get(1).copied().unwrap_or("all") {
        "all" => all(Path::new(a.get(2).copied().unwrap_or(default_root)), a.get(3).copied().unwrap_or("5"), a.get(4).and_then(|s| s.parse().ok()).unwrap_or(3)),
        "bench" => bench(a[2], a[3].parse()?, a[4].parse()?, Path::new(a[5])),
        "rawsync" => rawsync(Path::new(a.get(2).copied().unwrap_or(default_root))),
        "fill" => fill(a[2], Path::new(a[3])),
        "open" => open_and_read(a[2], Path::new(a[3]), a.get(4) == Some(&"cold")),
        "storage" => storage(Path::new(a.get(2).copied().unwrap_or(default_root))),
        "reclaim" => reclaim(a[2], Path::new(a[3])),
        "lock" => lock_test(a[2], Path::new(a[3])),
        "hold" => {
            let _e = open_engine(a[2], Path::new(a[3]))?;
            println!("held by pid {}", std::process::id());
            std::io::stdout().flush()?;
            std::thread::sleep(Duration::from_secs(60));
            Ok(())
        }
        x => Err(format!("unknown command {x}").into()),
    }
}

#[allow(dead_code)]
fn _unused(_: PathBuf) {}
