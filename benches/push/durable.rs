//! `--only durable`: tower-push's Durable Streams service, as users run it (the `durable`
//! example, built with `--features durable,cli` and started with its defaults but for
//! `--hold-ms` and `--max-held`, which a user serving this many readers sets), against the
//! protocol's other servers, each in a child process on a free loopback port:
//!
//! - `durable-streams-server`, the protocol's own Rust server (crates.io `durable-streams`
//!   0.1.5, `cargo install durable-streams@0.1.5`, started with `--data-dir` in a fresh
//!   temporary directory; the community crate `durable-streams-server` 0.3.0, which installs a
//!   program of the same name, is started in memory), found in `PATH` or `~/.cargo/bin`
//!   (`DURABLE_STREAMS_SERVER` overrides where); and
//! - `@durable-streams/server`, the Node reference server, pinned in
//!   `benches/durable-peers/package.json` and started by `benches/durable-peers/serve.mjs`
//!   (after `npm ci` there; `NODE` overrides which `node`).
//!
//! A peer that is not installed is skipped, and the table says why. Every server holds a long
//! poll for 600 s, so no reader times out while the others park. Readers park with
//! `GET <stream>?offset=<tail>&live=long-poll`, the tail being the `Stream-Next-Offset` of the
//! seed append. Every server is waited for alike, by what the kernel shows of it: until it
//! has read the whole request of every reader (`/proc/net/tcp`, [`process::read_sockets`]),
//! and then a settle delay of 1 s plus 0.1 ms per reader for the last allocations.
//!
//! The driver runs these measurements and prints their tables: see `driver/against_durable.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::client::{get_request, source, Conn};
use crate::process::{self, Server};
use crate::{nchan, percentile};

/// How long every server holds a long poll.
const HOLD: Duration = Duration::from_secs(600);

/// The path of the bench stream on every server.
const STREAM: &str = "/v1/stream/bench";

/// The body of every append: one small JSON message.
const MESSAGE: &str = r#"{"n":1}"#;

/// The servers of `--only durable`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    TowerPush,
    /// Two processes of tower-push's `durable` example on one `redis-server` (`--redis`), with
    /// `appendonly yes` and `appendfsync always`: readers and writers alternate between them.
    TowerPushRedis,
    /// `durable-streams-server`: crates.io `durable-streams` 0.1.5, or `durable-streams-server`
    /// 0.3.0.
    Rust,
    /// `@durable-streams/server` from npm.
    Node,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::TowerPush => "tower-push",
            Self::TowerPushRedis => "tower-push on Redis, 2 processes",
            Self::Rust => "durable-streams-server",
            Self::Node => "@durable-streams/server",
        }
    }
}

/// An installed peer: how to start it, and its version for the report.
#[derive(Clone, Debug)]
pub(super) struct Program {
    pub(super) kind: Kind,
    program: PathBuf,
    pub(super) version: String,
    /// Whether it takes its settings as flags (`durable-streams` 0.1.5) rather than from the
    /// environment (`durable-streams-server` 0.3.0).
    flags: bool,
}

/// The directory of the Node peer's package.json and start script.
fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/durable-peers")
}

fn in_path(name: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Finds `durable-streams-server`; the error says why not.
pub(super) fn find_rust() -> Result<Program, String> {
    let program = match std::env::var_os("DURABLE_STREAMS_SERVER") {
        Some(path) => PathBuf::from(path),
        None => {
            let cargo_bin: Vec<PathBuf> = std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cargo/bin"))
                .into_iter()
                .collect();
            in_path("durable-streams-server", &cargo_bin).ok_or(
                "not found in PATH or ~/.cargo/bin \
                 (cargo install durable-streams-server --locked)",
            )?
        }
    };
    // `durable-streams-server` 0.3.0 answers `--version`; `durable-streams` 0.1.5 refuses any
    // argument it does not know, and its version is in cargo's list of installed crates.
    let output = Command::new(&program)
        .arg("--version")
        .output()
        .map_err(|e| format!("{} --version: {e}", program.display()))?;
    let flags = !output.status.success();
    let version = if flags {
        let installed = Command::new(env!("CARGO"))
            .args(["install", "--list"])
            .output();
        let installed = installed.map(|o| o.stdout).unwrap_or_default();
        String::from_utf8_lossy(&installed)
            .lines()
            .find(|line| line.starts_with("durable-streams v"))
            .map_or("durable-streams (version unknown)", |line| {
                line.trim_end_matches(':')
            })
            .to_owned()
    } else {
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    Ok(Program {
        kind: Kind::Rust,
        program,
        version,
        flags,
    })
}

/// Finds `node` and the installed `@durable-streams/server`; the error says why not.
pub(super) fn find_node() -> Result<Program, String> {
    let program = match std::env::var_os("NODE") {
        Some(path) => PathBuf::from(path),
        None => in_path("node", &[]).ok_or("node not found in PATH")?,
    };
    let package = node_dir().join("node_modules/@durable-streams/server/package.json");
    let manifest = std::fs::read_to_string(&package)
        .map_err(|_| "not installed (run `npm ci` in benches/durable-peers)".to_owned())?;
    let manifest: serde_json::Value =
        serde_json::from_str(&manifest).map_err(|e| format!("{}: {e}", package.display()))?;
    let node = Command::new(&program)
        .arg("--version")
        .output()
        .map_err(|e| format!("{} --version: {e}", program.display()))?;
    Ok(Program {
        kind: Kind::Node,
        program,
        version: format!(
            "@durable-streams/server {} on Node {}",
            manifest["version"].as_str().unwrap_or("?"),
            String::from_utf8_lossy(&node.stdout).trim(),
        ),
        flags: false,
    })
}

/// A running server of `--only durable`, and the data directory it writes to (with `disk`, or
/// `durable-streams` 0.1.5, which always does).
pub(super) struct Running {
    server: Server,
    /// The other processes that serve the same streams (on Redis).
    others: Vec<Server>,
    /// The `redis-server` they share, and its directory.
    redis: Option<(std::process::Child, tempfile::TempDir)>,
    kind: Kind,
    program: Option<Program>,
    data: Option<tempfile::TempDir>,
    /// The bytes of stream data the run stores (see [`Running::storing`]).
    room: usize,
}

impl Running {
    /// Starts `kind` in memory, or with `disk` on its store in a fresh data directory:
    /// tower-push's `durable` example with `--data-dir` (built with `durable-file`), the Node
    /// server with `dataDir`; `durable-streams` 0.1.5 writes its WAL either way.
    pub(super) async fn start(kind: Kind, program: Option<&Program>, disk: bool) -> Self {
        Self::storing(kind, program, disk, 0).await
    }

    /// As [`Running::start`], for a run that stores `room` bytes of stream data: tower-push's
    /// example is given `--max-bytes` and `--max-log-bytes` of twice and four times that when
    /// its defaults (1 GiB and 4 GiB) would refuse it, as a user who stores that much would.
    pub(super) async fn storing(
        kind: Kind,
        program: Option<&Program>,
        disk: bool,
        room: usize,
    ) -> Self {
        let rust_disk = program.is_some_and(|p| p.flags);
        let data = (disk || (kind == Kind::Rust && rust_disk))
            .then(|| tempfile::tempdir().expect("a data directory"));
        if kind == Kind::TowerPushRedis {
            let (redis, url) = start_redis().await;
            let mut servers = Vec::new();
            for _ in 0..2 {
                servers.push(launch_example(None, Some(&url), room).await);
            }
            let server = servers.remove(0);
            return Self {
                server,
                others: servers,
                redis: Some(redis),
                kind,
                program: None,
                data,
                room,
            };
        }
        let server = launch(kind, program, data.as_ref().map(|d| d.path()), room).await;
        Self {
            server,
            others: Vec::new(),
            redis: None,
            kind,
            program: program.cloned(),
            data,
            room,
        }
    }

    /// Kills the server (`SIGKILL`) and starts it again on the same data directory; the time
    /// until it answers a read of `path` again.
    pub(super) async fn kill_and_restart(&mut self, path: &str) -> Duration {
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
        let data = self.data.as_ref().map(|d| d.path().to_owned());
        let started = Instant::now();
        self.server = launch(self.kind, self.program.as_ref(), data.as_deref(), self.room).await;
        let head = format!("GET {path}?offset=now HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
        loop {
            if let Ok(mut conn) = Conn::connect(self.addr()).await {
                if conn.send(head.as_bytes()).await.is_ok() {
                    if let Ok((status, _)) = conn.response().await {
                        let name = self.kind.name();
                        assert_eq!(status, 200, "{name}: GET {path} after a restart");
                        return started.elapsed();
                    }
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "no answer after 600 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The address of every process that serves the streams.
    fn addrs(&self) -> Vec<SocketAddr> {
        let others = self.others.iter().map(|s| s.addr);
        std::iter::once(self.server.addr).chain(others).collect()
    }

    /// The resident memory of every process that serves the streams (not Redis's).
    pub(super) fn rss_kib(&self) -> u64 {
        let others: u64 = self.others.iter().map(Server::rss_kib).sum();
        self.server.rss_kib() + others
    }

    /// Creates the bench stream with one seed message; returns its tail.
    pub(super) async fn create(&self) -> String {
        let mut conn = Conn::connect(self.addr()).await.expect("connect");
        let put = format!(
            "PUT {STREAM} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
             content-length: 0\r\n\r\n"
        );
        let (status, _) = exchange(&mut conn, put.as_bytes()).await;
        assert!(matches!(status, 200 | 201), "PUT {STREAM}: {status}");
        let (status, tail) = exchange(&mut conn, &append_request()).await;
        assert!(matches!(status, 200 | 204), "POST {STREAM}: {status}");
        // A read through every process, so that what each allocates once (its connections
        // to a shared store) is not counted against the readers.
        let read = format!("GET {STREAM}?offset=-1 HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
        for addr in self.addrs() {
            let mut conn = Conn::connect(addr).await.expect("connect");
            let (status, _) = exchange(&mut conn, read.as_bytes()).await;
            assert_eq!(status, 200, "GET {STREAM}");
        }
        tail.expect("the append answers Stream-Next-Offset")
    }

    /// Waits until the server has read the whole request of `n` readers (`sent` counts those
    /// the clients have sent), and then a settle delay for the last allocations.
    pub(super) async fn wait_parked(&self, sent: &AtomicUsize, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let ports: Vec<u16> = self.addrs().iter().map(SocketAddr::port).collect();
        loop {
            let read: usize = ports.iter().map(|&port| process::read_sockets(port)).sum();
            let sent = sent.load(Ordering::Relaxed);
            if sent >= n && read >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{sent} of {n} readers sent their request, {read} were read, after 120 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let settle = Duration::from_secs(1) + Duration::from_micros(100 * n as u64);
        tokio::time::sleep(settle).await;
    }
}

/// Starts `kind` on a free loopback port, holding long polls for [`HOLD`], on its store in
/// `data` if given, with room for `room` bytes of stream data, and waits until it accepts
/// connections.
async fn launch(kind: Kind, program: Option<&Program>, data: Option<&Path>, room: usize) -> Server {
    match kind {
        Kind::TowerPush | Kind::TowerPushRedis => launch_example(data, None, room).await,
        Kind::Node => {
            let program = program.expect("the Node peer is installed");
            let mut command = Command::new(&program.program);
            command
                .arg(node_dir().join("serve.mjs"))
                .arg(HOLD.as_millis().to_string())
                .current_dir(node_dir());
            if let Some(data) = data {
                command.arg(data);
            }
            Server::spawn(command)
        }
        Kind::Rust => {
            let program = program.expect("durable-streams-server is installed");
            let port = nchan::free_port();
            let mut command = Command::new(&program.program);
            // Logging every request would cost it what the others do not pay.
            command.env("RUST_LOG", "warn");
            if program.flags {
                command.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
                let data = data.expect("0.1.5 writes its WAL");
                command.arg("--data-dir").arg(data);
                command.args(["--long-poll-timeout-ms", &HOLD.as_millis().to_string()]);
            } else {
                command
                    .env("DS_SERVER__BIND_ADDRESS", format!("127.0.0.1:{port}"))
                    .env("DS_STORAGE__MODE", "memory")
                    .env(
                        "DS_TRANSPORT__CONNECTION__LONG_POLL_TIMEOUT_SECS",
                        HOLD.as_secs().to_string(),
                    )
                    .env("DS_OBSERVABILITY__RUST_LOG", "warn");
            }
            Server::listening(command, port).await
        }
    }
}

/// Starts tower-push's `durable` example on a free loopback port, holding long polls for
/// [`HOLD`], in memory, on the file store in `data`, or on the Redis at `redis`.
async fn launch_example(data: Option<&Path>, redis: Option<&str>, room: usize) -> Server {
    let port = nchan::free_port();
    // One build serves every store: the file store's and the Redis store's features.
    let features = match (data, redis) {
        (None, None) => "durable,cli",
        _ => "durable-file,redis,cli",
    };
    // `PUSH_DURABLE_PROGRAM`: another build of the example, to compare two builds against the
    // same peers.
    let program = std::env::var_os("PUSH_DURABLE_PROGRAM")
        .map_or_else(|| process::example("durable", features), PathBuf::from);
    let mut command = Command::new(program);
    command.args(["--addr", &format!("127.0.0.1:{port}")]);
    command.args(["--hold-ms", &HOLD.as_millis().to_string()]);
    command.args(["--max-held", "1000000"]);
    if let Some(data) = data {
        command.arg("--data-dir").arg(data);
    }
    if let Some(url) = redis {
        command.args(["--redis", url]);
    }
    if room * 2 > 1 << 30 {
        command.args(["--max-bytes", &(room * 2).to_string()]);
        command.args(["--max-log-bytes", &(room * 4).to_string()]);
    }
    // More flags for the durable example, to measure one of its settings.
    if let Ok(extra) = std::env::var("PUSH_DURABLE_ARGS") {
        command.args(extra.split_whitespace());
    }
    Server::listening(command, port).await
}

/// Whether `redis-server` is installed; the error says why not.
pub(super) fn find_redis() -> Result<(), String> {
    in_path("redis-server", &[PathBuf::from("/usr/bin")])
        .map(drop)
        .ok_or_else(|| "redis-server not found in PATH (Debian package redis-server)".to_owned())
}

/// Starts `redis-server` on a free loopback port in a fresh directory, with an append-only
/// file synced before every answer (`appendfsync always`), as the file store syncs before
/// it answers; waits until it answers. Its URL.
async fn start_redis() -> ((std::process::Child, tempfile::TempDir), String) {
    let port = nchan::free_port();
    let dir = tempfile::tempdir().expect("a data directory");
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .args(["--maxclients", "1000"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start redis-server");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "redis-server did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ((child, dir), format!("redis://127.0.0.1:{port}"))
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some((child, _)) = &mut self.redis {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn append_request() -> Vec<u8> {
    format!(
        "POST {STREAM} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{MESSAGE}",
        MESSAGE.len()
    )
    .into_bytes()
}

/// Sends `request` and reads the whole answer: its status and `Stream-Next-Offset`.
async fn exchange(conn: &mut Conn, request: &[u8]) -> (u16, Option<String>) {
    conn.send(request).await.expect("send");
    let (head, body_len) = conn.whole_response().await.expect("response");
    let text = String::from_utf8_lossy(&conn.buf[..head.end]).into_owned();
    conn.buf.drain(..head.end + body_len);
    let tail = text.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("stream-next-offset")
            .then(|| value.trim().to_owned())
    });
    (head.status, tail)
}

/// What one round of fan-out measured on one server.
pub(super) struct Fanout {
    pub(super) p50: f64,
    pub(super) p99: f64,
    pub(super) per_reader_kib: f64,
}

/// Parks `n` readers at the tail of a fresh stream on `kind`, reads the memory growth,
/// appends one message and times every reader's answer.
pub(super) async fn fanout(kind: Kind, program: Option<&Program>, disk: bool, n: usize) -> Fanout {
    let running = Running::start(kind, program, disk).await;
    let tail = running.create().await;
    let rss_before = running.rss_kib();
    let request: Arc<[u8]> =
        get_request(&format!("{STREAM}?offset={tail}&live=long-poll"), None).into();
    let sent = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(256));
    let (addr, addrs) = (running.addr(), running.addrs());
    let readers: Vec<_> = (0..n)
        .map(|i| {
            let (gate, request, sent) = (gate.clone(), request.clone(), sent.clone());
            // Readers alternate between the processes that serve the stream.
            let addr = addrs[i % addrs.len()];
            tokio::spawn(async move {
                let permit = gate.acquire_owned().await.expect("semaphore");
                let mut conn = Conn::connect_from(addr, source(i)).await?;
                conn.send(&request).await?;
                sent.fetch_add(1, Ordering::Relaxed);
                drop(permit);
                let (status, _) = conn.response().await?;
                let done = Instant::now();
                if status != 200 {
                    return Err(std::io::Error::other(format!("status {status}")));
                }
                Ok::<_, std::io::Error>(done)
            })
        })
        .collect();
    running.wait_parked(&sent, n).await;
    let rss_after = running.rss_kib();
    let mut writer = Conn::connect(addr).await.expect("connect");
    let appended = Instant::now();
    let (status, _) = exchange(&mut writer, &append_request()).await;
    assert!(
        matches!(status, 200 | 204),
        "{}: append {status}",
        kind.name()
    );
    let mut latencies = Vec::with_capacity(n);
    for reader in readers {
        match reader.await.expect("reader task") {
            Ok(done) => latencies.push(done.duration_since(appended).as_secs_f64() * 1e3),
            Err(err) => panic!("{}: a parked reader failed: {err}", kind.name()),
        }
    }
    latencies.sort_by(f64::total_cmp);
    let fanout = Fanout {
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        per_reader_kib: rss_after.saturating_sub(rss_before) as f64 / n as f64,
    };
    eprintln!(
        "   {:24} N={n}: fan-out p50 {:.2} ms, p99 {:.2} ms; {:.2} KiB per parked reader",
        kind.name(),
        fanout.p50,
        fanout.p99,
        fanout.per_reader_kib,
    );
    fanout
}

/// The streams the writers of [`appends`] share.
const WRITER_STREAMS: usize = 16;

/// What [`appends`] measured.
pub(super) struct Appends {
    pub(super) rate: f64,
    pub(super) p50: f64,
    pub(super) p99: f64,
}

/// `writers` idempotent producers (`Producer-Id`, `-Epoch`, `-Seq`), each on a keep-alive
/// connection of its own and appending to one of 16 fresh streams, send `total` appends
/// together, each its next when the last is answered: acknowledged appends per second, and
/// each append's latency from its request to its answer.
pub(super) async fn appends(
    kind: Kind,
    program: Option<&Program>,
    disk: bool,
    writers: usize,
    total: usize,
) -> Appends {
    let running = Running::start(kind, program, disk).await;
    let addr = running.addr();
    let mut conn = Conn::connect(addr).await.expect("connect");
    for stream in 0..WRITER_STREAMS {
        let put = format!(
            "PUT {STREAM}-{stream} HTTP/1.1\r\nhost: 127.0.0.1\r\n\
             content-type: application/json\r\ncontent-length: 0\r\n\r\n"
        );
        let (status, _) = exchange(&mut conn, put.as_bytes()).await;
        assert!(matches!(status, 200 | 201), "PUT: {status}");
    }
    // Writers alternate between the processes that serve the streams.
    let addrs = running.addrs();
    let mut conns = Vec::with_capacity(writers);
    for writer in 0..writers {
        let addr = addrs[writer % addrs.len()];
        conns.push(Conn::connect(addr).await.expect("connect"));
    }
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(writer, mut conn)| {
            // The first `total % writers` writers send one more.
            let count = total / writers + usize::from(writer < total % writers);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(count);
                for seq in 0..count {
                    let request = format!(
                        "POST {STREAM}-{} HTTP/1.1\r\nhost: 127.0.0.1\r\n\
                         content-type: application/json\r\nproducer-id: w{writer}\r\n\
                         producer-epoch: 0\r\nproducer-seq: {seq}\r\n\
                         content-length: {}\r\n\r\n{MESSAGE}",
                        writer % WRITER_STREAMS,
                        MESSAGE.len()
                    );
                    let sent = Instant::now();
                    let (status, _) = exchange(&mut conn, request.as_bytes()).await;
                    latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                    assert!(matches!(status, 200 | 204), "append: {status}");
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    for task in tasks {
        latencies.extend(task.await.expect("append task"));
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let appends = Appends {
        rate,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
    };
    eprintln!(
        "   {:24} {total} appends by {writers} writer(s): {rate:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        kind.name(),
        appends.p50,
        appends.p99,
    );
    appends
}

/// Fills a fresh store on disk with `streams` streams holding `bytes` in appends of 16 KiB
/// (over 8 connections), kills the server (`SIGKILL`) and starts it again: the seconds until it
/// answers again, its recovery.
pub(super) async fn recovery(
    kind: Kind,
    program: Option<&Program>,
    streams: usize,
    bytes: usize,
) -> f64 {
    const BODY: usize = 16 << 10;
    const CONNECTIONS: usize = 8;
    let mut running = Running::storing(kind, program, true, bytes).await;
    let addr = running.addr();
    let appends = bytes.div_ceil(BODY);
    let body: Arc<str> = "r".repeat(BODY).into();
    // Every stream first, then the appends, each phase over all connections. The Node
    // reference on its file store answers some appends to streams it has just acknowledged
    // `404` while other connections append (seen on 0.3.7: about 5 % of the first appends
    // at 10,000 streams; the stream answers again a moment later): such an append is retried
    // and counted, so that the recovery is still timed on the same data.
    let mut retried = 0;
    for phase in ["PUT", "POST"] {
        let tasks: Vec<_> = (0..CONNECTIONS)
            .map(|c| {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut conn = Conn::connect(addr).await.expect("connect");
                    let (count, length) = match phase {
                        "PUT" => (streams, 0),
                        _ => (appends, BODY),
                    };
                    let mut retried = 0;
                    for i in (c..count).step_by(CONNECTIONS) {
                        let request = format!(
                            "{phase} /v1/stream/r{} HTTP/1.1\r\nhost: 127.0.0.1\r\n\
                             content-type: text/plain\r\ncontent-length: {length}\r\n\r\n{}",
                            i % streams,
                            &body[..length]
                        );
                        let mut tries = 0;
                        loop {
                            let (status, _) = exchange(&mut conn, request.as_bytes()).await;
                            if status == 404 && phase == "POST" && tries < 50 {
                                tries += 1;
                                retried += 1;
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                            assert!(matches!(status, 200..=204), "{phase}: {status}");
                            break;
                        }
                    }
                    retried
                })
            })
            .collect();
        for task in tasks {
            retried += task.await.expect("fill task");
        }
    }
    if retried > 0 {
        eprintln!(
            "   {:24} answered 404 to {retried} appends to streams it had created; retried",
            kind.name()
        );
    }
    let last = format!("/v1/stream/r{}", streams - 1);
    let took = running.kill_and_restart(&last).await.as_secs_f64();
    eprintln!(
        "   {:24} {streams} streams, {} MB: recovered in {took:.2} s",
        kind.name(),
        bytes >> 20
    );
    took
}
