//! Macro benchmarks: tower-push against hand-written baselines, over real loopback sockets.
//!
//! `cargo bench --bench push` prints one table; `-- --quick` runs a smaller version and
//! `-- --runs N` sets how many times each measurement is repeated (the table shows medians).
//!
//! Every server runs in a child process (this same binary, started as `push serve <kind>`) so
//! that its resident memory can be read from `/proc/<pid>/status`; the load client runs in this
//! process and speaks HTTP/1.1 over raw TCP, which costs the same against every server. All
//! traffic stays on 127.0.0.1. Each figure is set against a baseline measured in the same run,
//! alternating which one goes first, because absolute times on a shared machine mean little.
//!
//! Two parts set tower-push against a peer rather than a baseline: `--only nchan` measures nginx
//! with its Nchan module (when installed) the same way, and `--only scaling` parks 1,000, 10,000
//! and 50,000 polls on the demo program (the binary users run) and Nchan and writes the curve
//! to `push-scaling.csv` in the target directory, which `benches/plot.py` draws.
//!
//! `--only durable` (not part of the default run) sets tower-push's Durable Streams service, the
//! `durable` example as users run it, against the protocol's other servers,
//! `durable-streams-server` from crates.io and the Node reference server `@durable-streams/server` from npm (pinned in
//! `benches/durable-peers/`; `npm ci` there installs it): long-poll fan-out to 1,000 and
//! 10,000 readers, memory per parked reader, and append throughput. A peer that is not
//! installed is skipped, and its table says why. See `durable.rs`.
//!
//! `--only durable-disk` does the same with every server on its disk store (tower-push's
//! `durable` example with `--data-dir`, the Node server with `dataDir`, `durable-streams`
//! 0.1.5's WAL), and adds appends by 1, 8 and 32 idempotent writers (acknowledged per second,
//! latency p50 and p99) and the recovery after a `kill -9` of 10,000 streams holding 100 MB
//! (`--recovery STREAMS,MB`).
//!
//! `--only durable-redis` measures the same (but recovery) on tower-push's `durable` example as
//! two processes on one `redis-server` with `appendfsync always` (readers and writers
//! alternating between the processes; memory is both processes' growth per reader), against
//! one process on its file store and against `durable-streams` 0.1.5.
//!
//! # Files
//!
//! - `main.rs`: this overview, the settings (the command line), and what every part shares:
//!   the bench topic's cursors and events, medians and percentiles.
//! - `process.rs`: a server child process, what `/proc` tells of a process (memory, CPU time,
//!   children), and the open-files limit.
//! - `client.rs`: the load client, a minimal HTTP/1.1 connection over raw TCP.
//! - `server.rs`: the servers under test, each run as `push serve <kind>`.
//! - `nchan.rs`: nginx with its Nchan module, the peer of `--only nchan` and `--only scaling`.
//! - `durable.rs`: the servers and measurements of `--only durable`.
//! - `driver/`: the measurements and the tables they print, one file per part (see
//!   `driver/mod.rs`).

mod client;
mod driver;
mod durable;
mod nchan;
mod process;
mod server;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tower_push::{Cursor, Epoch};

use crate::client::HEAD_PAD;
use crate::process::raise_open_files;

/// The epoch of every bench log, so that the client knows the cursors without asking.
const EPOCH: u64 = 1;

/// The event every server holds from the start; polls after cursor 0 are answered at once.
const SEED: &str = r#"{"n":0,"t":0}"#;

fn main() {
    // `cargo bench` passes `--bench`; a harness-less target just ignores it.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let open_files = raise_open_files();
    if args.first().map(String::as_str) == Some("serve") {
        let kind = args.get(1).cloned().unwrap_or_default();
        if kind == "nginx" {
            nchan::serve(&args[2..]);
        } else {
            server::run(&kind);
        }
        return;
    }
    let settings = match Settings::from_args(&args) {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("{message}");
            eprintln!(
                "usage: cargo bench --bench push [-- --quick] [--runs N] [--parked N] \
                 [--scaling N,N,...] [--csv PATH] [--appends N] [--recovery STREAMS,MB] \
                 [--head-pad BYTES] [--fanout N,N,...|none] [--writers N,N,...] \
                 [--only memory,fanout,throughput,stream,nchan,scaling,stacks,topics,authorize,compression,durable,\
                 durable-disk,durable-redis]"
            );
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(driver::run(settings, open_files));
}

/// A comma-separated list of counts (`none`: no count) given to `flag`.
fn list(text: &str, flag: &str) -> Result<Vec<usize>, String> {
    if text == "none" {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|n| n.trim().parse().map_err(|e| format!("{flag}: {e}")))
        .collect()
}

/// What the driver measures, and how much.
#[derive(Clone, Debug)]
struct Settings {
    runs: usize,
    parked: usize,
    fanout: Vec<usize>,
    connections: usize,
    throughput_for: Duration,
    burst: usize,
    steady_rate: u64,
    steady_for: Duration,
    /// The numbers of parked polls of the scaling curve (`--only scaling`).
    scaling: Vec<usize>,
    /// Where the scaling curve is written; by default `push-scaling.csv` in the target directory.
    csv: Option<PathBuf>,
    /// How many appends each append-throughput measurement of `--only durable` sends.
    appends: usize,
    /// The numbers of concurrent writers the appends of `--only durable` are measured with.
    writers: Vec<usize>,
    /// The streams and bytes `--only durable-disk` recovers after a `kill -9`.
    recovery_streams: usize,
    recovery_bytes: usize,
    only: Vec<String>,
}

impl Settings {
    fn from_args(args: &[String]) -> Result<Self, String> {
        let mut settings = Self {
            runs: 5,
            parked: 10_000,
            fanout: vec![1_000, 10_000],
            connections: 32,
            throughput_for: Duration::from_secs(3),
            burst: 200_000,
            steady_rate: 2_000,
            steady_for: Duration::from_secs(3),
            scaling: vec![1_000, 10_000, 50_000],
            csv: None,
            appends: 20_000,
            writers: Vec::new(),
            recovery_streams: 10_000,
            recovery_bytes: 100 << 20,
            only: Vec::new(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or_else(|| format!("{arg} needs a value"))
                    .cloned()
            };
            match arg.as_str() {
                "--quick" => {
                    settings.runs = 3;
                    settings.parked = 1_000;
                    settings.fanout = vec![100, 1_000];
                    settings.throughput_for = Duration::from_secs(1);
                    settings.burst = 20_000;
                    settings.steady_for = Duration::from_secs(1);
                    settings.scaling = vec![1_000, 5_000];
                    settings.appends = 5_000;
                    settings.recovery_streams = 1_000;
                    settings.recovery_bytes = 10 << 20;
                }
                "--runs" => {
                    settings.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?;
                }
                "--parked" => {
                    let n: usize = value()?.parse().map_err(|e| format!("--parked: {e}"))?;
                    settings.parked = n;
                    settings.fanout = vec![n / 10, n];
                }
                "--probe" => settings.only = vec!["probe".to_owned()],
                "--only" => {
                    settings.only = value()?.split(',').map(str::to_owned).collect();
                }
                "--scaling" => {
                    settings.scaling = value()?
                        .split(',')
                        .map(|n| n.trim().parse().map_err(|e| format!("--scaling: {e}")))
                        .collect::<Result<_, _>>()?;
                }
                "--csv" => settings.csv = Some(PathBuf::from(value()?)),
                "--head-pad" => {
                    let pad = value()?.parse().map_err(|e| format!("--head-pad: {e}"))?;
                    HEAD_PAD.store(pad, Ordering::Relaxed);
                }
                "--recovery" => {
                    // `STREAMS,MB`, or `none`
                    let text = value()?;
                    if text == "none" {
                        settings.recovery_streams = 0;
                        continue;
                    }
                    let parse = |v: &str| {
                        v.trim()
                            .parse::<usize>()
                            .map_err(|e| format!("--recovery: {e}"))
                    };
                    let (streams, mb) =
                        text.split_once(',').ok_or("--recovery takes STREAMS,MB")?;
                    settings.recovery_streams = parse(streams)?.max(1);
                    settings.recovery_bytes = parse(mb)? << 20;
                }
                "--appends" => {
                    settings.appends = value()?.parse().map_err(|e| format!("--appends: {e}"))?;
                }
                "--fanout" => settings.fanout = list(&value()?, "--fanout")?,
                "--writers" => settings.writers = list(&value()?, "--writers")?,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if settings.runs == 0 {
            return Err("--runs must be at least 1".to_owned());
        }
        if settings.writers.is_empty() {
            settings.writers = vec![1, 8, settings.connections];
        }
        Ok(settings)
    }

    fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }
}

/// A realistic feed's event of about 260 bytes, number `i` of the feed: an order with the same
/// keys every time, and its publish time in Unix nanoseconds (`t`), as in [`event_json`].
fn order_json(i: usize) -> String {
    let status = ["paid", "packed", "shipped", "delivered"][i % 4];
    format!(
        r#"{{"id":"ord_{:06}","type":"order.updated","status":"{status}","customer":{{"id":"cus_{}","name":"Ada Lovelace","email":"ada@example.com"}},"items":[{{"sku":"SKU-{}","qty":{},"price":19.99}}],"currency":"EUR","t":{}}}"#,
        i * 7919 % 1_000_000,
        i * 31 % 10_000,
        1000 + i % 90,
        1 + i % 3,
        unix_nanos()
    )
}

/// `{"n":<n>,"t":<unix nanos>}`: the event every publisher sends; `t` is read back by the
/// client to measure publish-to-receive latency (both processes share the system clock).
fn event_json(n: u64) -> String {
    format!(r#"{{"n":{n},"t":{}}}"#, unix_nanos())
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A cursor of the bench's topic (`bench`), whose epoch the log derives from its own.
fn cursor(seq: u64) -> Cursor {
    Cursor::new(Epoch::new(EPOCH).derive("bench"), seq)
}

/// The median of `values`; NaN for none.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The `p` quantile (0 to 1) of `sorted`, by nearest rank; NaN for none.
/// The quantiles the bench reports of a latency, in the unit of its samples.
#[derive(Clone, Copy, Debug)]
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Latency {
    /// The quantiles of `sorted` samples.
    fn of(sorted: &[f64]) -> Self {
        Self {
            p50: percentile(sorted, 0.50),
            p99: percentile(sorted, 0.99),
            max: percentile(sorted, 1.0),
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// Every process of this bench, the servers and the load client, allocates with jemalloc, as the
// demo and the examples do: both sides of every ratio against a hand-written baseline use the
// same allocator. (Before, they used glibc's malloc; BENCHMARKS.md has both.)
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
