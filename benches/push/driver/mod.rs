//! The driver: runs the parts the settings ask for, `runs` times, alternating which side goes
//! first, and prints their tables at the end.
//!
//! - `table.rs`: the table of medians and ratios every part fills.
//! - `load.rs`: the parked load, clients that each send one poll and wait for its answer.
//! - `parked.rs`: `--only memory` and `--only fanout` against the `Notify` baseline, and the
//!   parking that `--only stacks`, `--only probe` and `--only topics` measure with.
//! - `throughput.rs`: `--only throughput`, polls answered at once over keep-alive connections.
//! - `stream.rs`: `--only stream`, latency and throughput of one SSE stream.
//! - `topics.rs`: `--only topics`, polls that follow several topics.
//! - `authorize.rs`: `--only authorize`, polls parked with an authorization check against
//!   the same polls without.
//! - `compression.rs`: `--only compression`, the demo program's SSE streams in each coding,
//!   and NDJSON streams through tower-http's gzip, each against the same streams uncompressed.
//! - `peer.rs`: the long-poll servers set against each other by `--only nchan` and
//!   `--only scaling`.
//! - `compare.rs`: `--only nchan` and `--only scaling`, one run.
//! - `scaling.rs`: the scaling curve's tables and CSV.
//! - `against_durable.rs`: the tables of `--only durable` (its servers and measurements are in
//!   `durable.rs`).

mod against_durable;
mod authorize;
mod compare;
mod compression;
mod load;
mod parked;
mod peer;
mod scaling;
mod stream;
mod table;
mod throughput;
mod topics;

use std::process::Command;
use std::time::Instant;

use crate::process::OpenFiles;
use crate::{cursor, nchan, Settings};

use self::against_durable::AgainstDurable;
use self::compare::compare;
use self::parked::{park, parked};
use self::peer::{Peer, Sides};
use self::scaling::print_curve;
use self::stream::stream;
use self::table::Table;
use self::throughput::throughput;
use self::topics::{print_topics, topics};

/// Runs every part the settings ask for, `runs` times, then prints the tables.
pub(super) async fn run(settings: Settings, open_files: OpenFiles) {
    let started = Instant::now();
    println!("tower-push benchmarks (cargo bench --bench push)");
    machine();
    println!("settings: {settings:?}");
    println!(
        "open files: soft {}, hard {} (at start: soft {}, hard {})",
        open_files.now.0, open_files.now.1, open_files.at_start.0, open_files.at_start.1
    );
    let peers = settings.wants("nchan") || settings.wants("scaling");
    let mut against_nchan = Table::new("Nchan");
    let nchan = match peers.then(nchan::find) {
        Some(Ok(program)) => {
            println!("Nchan peer: {}", program.description);
            Some(program)
        }
        Some(Err(reason)) => {
            println!("Nchan peer skipped: {reason}");
            against_nchan.skipped = Some(reason);
            None
        }
        None => None,
    };
    println!(
        "size of a held poll's future: {} bytes, the topic's subscription inside it {}; \
         hyper's `http1` connection holds it boxed",
        std::mem::size_of::<
            tower_push::long_poll::future::ResponseFuture<
                tower_push::memory::Topic,
                tower_push::format::JsonFormat,
            >,
        >(),
        std::mem::size_of::<tower_push::memory::Subscription>(),
    );
    let durable_part = settings.only.iter().any(|p| p == "durable");
    let disk_part = settings.only.iter().any(|p| p == "durable-disk");
    let mut against_durable = durable_part.then(|| AgainstDurable::find(false));
    let mut against_disk = disk_part.then(|| AgainstDurable::find(true));
    let redis_part = settings.only.iter().any(|p| p == "durable-redis");
    let mut against_redis = redis_part.then(AgainstDurable::find_redis);
    let mut table = Table::new("baseline");
    let mut unchecked = Table::new("authorization off");
    let mut uncompressed = Table::new("uncompressed");
    let mut curve = Vec::new();
    let mut topic_rows = Vec::new();
    for run in 0..settings.runs {
        // Alternate which side goes first, so that drift on a shared machine favours
        // neither.
        let order = if run % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        eprintln!("-- run {} of {}", run + 1, settings.runs);
        if settings.wants("memory") || settings.wants("fanout") {
            let mut sizes = settings.fanout.clone();
            if !sizes.contains(&settings.parked) {
                sizes.push(settings.parked);
            }
            for &n in &sizes {
                for ours in order {
                    parked(&settings, &mut table, n, ours).await;
                }
                if n == settings.parked && settings.wants("memory") {
                    // The floor for memory: a handler that never answers.
                    let rss = park("pending", "/poll", n).await;
                    table.add(
                        &format!("memory per parked poll, N={n}"),
                        "KiB",
                        Some((1.10, false)),
                        false,
                        rss,
                    );
                }
            }
        }
        if settings.only.iter().any(|p| p == "stacks") {
            let path = format!("/poll?after={}", cursor(1));
            let http1 = park("tower-push-poll", &path, settings.parked).await;
            for stack in ["auto", "auto-http1", "axum", "server"] {
                let kind = format!("tower-push-poll@{stack}");
                let kib = park(&kind, &path, settings.parked).await;
                eprintln!(
                    "   stack {stack:10} {kib:.2} KiB per parked poll, {:.2}x hyper's http1::Builder ({http1:.2})",
                    kib / http1
                );
            }
        }
        if settings.only.iter().any(|p| p == "topics") {
            topics(&settings, &mut topic_rows).await;
        }
        if settings.only.iter().any(|p| p == "authorize") {
            authorize::authorize(&settings, &mut unchecked, order).await;
        }
        if settings.only.iter().any(|p| p == "compression") {
            compression::compression(&settings, &mut uncompressed, order).await;
        }
        if settings.only.iter().any(|p| p == "probe") {
            for kind in [
                "pending",
                "pending-parts",
                "pending-sleep",
                "pending-subscription",
            ] {
                let path = format!("/poll?after={}", cursor(1));
                park(kind, &path, settings.parked).await;
            }
        }
        if settings.wants("throughput") {
            for ours in order {
                let rps = throughput(&settings, ours).await;
                table.add(
                    &format!(
                        "poll throughput, data ready, {} connections",
                        settings.connections
                    ),
                    "req/s",
                    Some((0.9, true)),
                    ours,
                    rps,
                );
            }
        }
        if settings.wants("stream") {
            for ours in order {
                stream(&settings, &mut table, ours).await;
            }
        }
        if peers {
            let first = if run % 2 == 0 {
                Peer::TowerPush
            } else {
                Peer::Nchan
            };
            let sides = Sides {
                nchan: nchan.as_ref(),
                first,
                limit: open_files.now.0,
            };
            compare(&settings, &sides, run, &mut against_nchan, &mut curve).await;
        }
        for against in [&mut against_durable, &mut against_disk, &mut against_redis]
            .into_iter()
            .flatten()
        {
            against.run(&settings, run, open_files.now.0).await;
        }
    }
    let ours_only = ["memory", "fanout", "throughput", "stream", "probe"];
    if ours_only.iter().any(|part| settings.wants(part)) {
        table.print(settings.runs);
    }
    if settings.wants("nchan") {
        against_nchan.print(settings.runs);
    }
    if !topic_rows.is_empty() {
        print_topics(&settings, &topic_rows);
    }
    if settings.only.iter().any(|p| p == "authorize") {
        unchecked.print(settings.runs);
    }
    if settings.only.iter().any(|p| p == "compression") {
        uncompressed.print(settings.runs);
    }
    for against in [&against_durable, &against_disk, &against_redis]
        .into_iter()
        .flatten()
    {
        against.print(&settings);
    }
    if settings.wants("scaling") {
        print_curve(&settings, &curve, nchan.is_some(), open_files.now.0);
    }
    println!();
    println!(
        "load average at end: {}; total time {:.0} s",
        load_average(),
        started.elapsed().as_secs_f64()
    );
}

/// Prints what the figures were measured on, and the load average at the start.
fn machine() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_owned(), |(_, m)| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("unknown".to_owned(), |k| k.trim().to_owned());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or("unknown".to_owned(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1048576.0)
        });
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let rustc = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or("unknown".to_owned(), |v| v.trim().to_owned());
    println!("machine: {cores} cores, {model}, {memory}, Linux {kernel}, {rustc}");
    println!("load average at start: {}", load_average());
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
