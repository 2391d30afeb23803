//! `--only nchan` and `--only scaling`, one run: polls parked on each peer at every size, the
//! memory they take and the fan-out of one publish to them, and ready-poll throughput.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::get_request;
use crate::{nchan, Latency, Settings};

use super::load::{spawn_clients, spawn_h2_clients, H2_STREAMS};
use super::peer::{Peer, Sides, Target};
use super::table::Table;
use super::throughput::throughput_at;

/// What one round of parked polls measured.
#[derive(Clone, Copy, Debug)]
pub(super) struct Parked {
    /// The server's resident memory before the polls and with them parked, in KiB.
    pub(super) rss_kib: (u64, u64),
    pub(super) per_poll: f64,
    /// From the publish to each client's last byte, in milliseconds.
    pub(super) latency: Latency,
    /// The server's CPU time from the publish until every client had its answer, per
    /// answer, in microseconds.
    pub(super) cpu_us: f64,
}

/// One point of the scaling curve: a peer, a number of parked polls, a run.
#[derive(Clone, Copy, Debug)]
pub(super) struct Point {
    pub(super) peer: Peer,
    pub(super) n: usize,
    pub(super) run: usize,
    pub(super) parked: Parked,
}

/// `--only nchan` and `--only scaling`, one run: parks polls on both peers at every size
/// either part asks for (each size measured once and shared), then, for `nchan`, measures
/// ready-poll throughput on both.
pub(super) async fn compare(
    settings: &Settings,
    sides: &Sides<'_>,
    run: usize,
    table: &mut Table,
    curve: &mut Vec<Point>,
) {
    let versus = settings.wants("nchan") && sides.nchan.is_some();
    let mut sizes = Vec::new();
    if versus {
        sizes.extend(&settings.fanout);
        sizes.push(settings.parked);
    }
    if settings.wants("scaling") {
        sizes.extend(&settings.scaling);
    }
    sizes.sort_unstable();
    sizes.dedup();
    for n in sizes {
        // One process of each side (the client, the server, nginx's worker) holds the n
        // connections, plus a few descriptors of its own.
        if n as u64 + 512 > sides.limit {
            eprintln!(
                "   N={n} skipped: the open-files limit is {}, too few for {n} connections",
                sides.limit
            );
            continue;
        }
        let scaled = settings.wants("scaling") && settings.scaling.contains(&n);
        let compared = versus && (settings.fanout.contains(&n) || n == settings.parked);
        let mut order = match compared {
            true => sides.order(versus && n == settings.parked),
            // A size of the curve alone: the demo program and Nchan, no in-process server.
            false => sides.order(false),
        };
        if scaled {
            // The curve is the demo program's: the program a user runs.
            match order.iter().position(|&peer| peer == Peer::TowerPush) {
                Some(at) if !compared => order[at] = Peer::Demo,
                _ if !order.contains(&Peer::Demo) => order.insert(1, Peer::Demo),
                _ => {}
            }
        }
        for peer in order {
            let parked = parked_peer(peer, sides.nchan, n).await;
            if scaled && matches!(peer, Peer::Demo | Peer::Nchan) {
                curve.push(Point {
                    peer,
                    n,
                    run,
                    parked,
                });
            }
            // Nchan's figures are also the other side of the demo program's rows and of the
            // bare hyper handler's.
            let beside_nchan = [
                (Peer::Demo, "the demo program"),
                (Peer::HyperFloor, "a bare hyper handler on a Notify"),
            ];
            for (who, row) in beside_nchan {
                if !(peer == who || peer == Peer::Nchan) || !versus || n != settings.parked {
                    continue;
                }
                let ours = peer == who;
                if who == Peer::Demo {
                    let memory = format!("memory per parked poll, N={n}, {row}");
                    table.add(&memory, "KiB", Some((1.0, false)), ours, parked.per_poll);
                }
                let p99 = match who {
                    Peer::Demo => format!("fan-out, publish to last byte, p99, N={n}, {row}"),
                    _ => format!("fan-out N={n}, publish to last byte, p99, {row} (info)"),
                };
                table.add(&p99, "ms", None, ours, parked.latency.p99);
                let cpu = format!("fan-out N={n}, server CPU time per answer, {row} (info)");
                table.add(&cpu, "us", None, ours, parked.cpu_us);
            }
            if matches!(peer, Peer::Demo | Peer::HyperFloor) {
                continue;
            }
            if peer != Peer::TowerPush && versus && n == settings.parked {
                // Nchan's figure is also the other side of the one-thread row.
                table.add(
                    &format!(
                        "fan-out N={n}, publish to last byte, p99, \
                         tower-push on one runtime thread (info)"
                    ),
                    "ms",
                    None,
                    peer == Peer::TowerPushOneThread,
                    parked.latency.p99,
                );
            }
            if peer == Peer::TowerPushOneThread {
                continue;
            }
            let ours = peer == Peer::TowerPush;
            if versus && n == settings.parked {
                table.add(
                    &format!("memory per parked poll, N={n}"),
                    "KiB",
                    Some((1.0, false)),
                    ours,
                    parked.per_poll,
                );
            }
            if versus && n == settings.parked {
                table.add(
                    &format!("fan-out N={n}, server CPU time per answer (info)"),
                    "us",
                    None,
                    ours,
                    parked.cpu_us,
                );
            }
            if versus && settings.fanout.contains(&n) {
                let name = |what: &str| format!("fan-out N={n}, publish to last byte, {what}");
                let target = (n == settings.parked).then_some((1.0, false));
                table.add(&name("p50"), "ms", None, ours, parked.latency.p50);
                table.add(&name("p99"), "ms", target, ours, parked.latency.p99);
                table.add(&name("max"), "ms", None, ours, parked.latency.max);
            }
        }
    }
    // The same sizes over HTTP/2: a connection carries H2_STREAMS polls, so that the sizes
    // beyond the open-files limit can be measured too.
    if settings.wants("scaling") {
        for &n in &settings.scaling {
            if (n.div_ceil(H2_STREAMS) + 512) as u64 > sides.limit {
                continue;
            }
            let parked = parked_peer(Peer::DemoHttp2, None, n).await;
            curve.push(Point {
                peer: Peer::DemoHttp2,
                n,
                run,
                parked,
            });
        }
    }
    if versus {
        let connections = settings.connections;
        let name = format!("ready-poll throughput, {connections} connections");
        let one_thread = format!("{name}, tower-push on one runtime thread (info)");
        let demo = format!("{name}, the demo program");
        for peer in sides.order(true) {
            if peer == Peer::HyperFloor {
                continue;
            }
            let (target, mut control) = Target::start(peer, sides.nchan, connections + 64).await;
            let path = target.ready_path(&mut control).await;
            let rps = throughput_at(settings, peer.name(), target.addr(), &path).await;
            if matches!(peer, Peer::Demo | Peer::Nchan) {
                // Nchan's figure is also the other side of the demo program's row.
                table.add(&demo, "req/s", Some((1.0, true)), peer == Peer::Demo, rps);
            }
            if peer == Peer::Demo {
                continue;
            }
            if peer != Peer::TowerPush {
                let ours = peer == Peer::TowerPushOneThread;
                table.add(&one_thread, "req/s", None, ours, rps);
            }
            if peer != Peer::TowerPushOneThread {
                let ours = peer == Peer::TowerPush;
                table.add(&name, "req/s", Some((1.0, true)), ours, rps);
            }
        }
    }
}

/// Parks `n` polls on `peer`, each on its own connection, reads the memory growth, then
/// publishes one event and times every client's answer.
pub(super) async fn parked_peer(peer: Peer, program: Option<&nchan::Program>, n: usize) -> Parked {
    // nginx closes idle keep-alive connections (the control connection) once fewer than a
    // 16th of its connection slots are free: give it room above n.
    let (target, mut control) = Target::start(peer, program, n + n / 8 + 512).await;
    let rss_before = target.rss_kib();
    let clients = if peer == Peer::DemoHttp2 {
        spawn_h2_clients(target.addr(), &target.parked_path(), n).await
    } else {
        let request = get_request(&target.parked_path(), None);
        spawn_clients(target.addr(), request, n, true)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let waiting = target.waiting(&mut control).await;
        if waiting >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}: only {waiting} of {n} polls parked after 120 s",
            peer.name()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the last allocations settle before memory is read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_after = target.rss_kib();
    let per_poll = rss_after.saturating_sub(rss_before) as f64 / n as f64;
    // `PUSH_PROFILE=DIR`: a CPU profile of the server from the publish until every client
    // has its answer, by `perf record`, in `DIR/<peer>-<n>.data`.
    let profile = std::env::var_os("PUSH_PROFILE").map(|dir| {
        let pids: Vec<String> = target.pids().iter().map(u32::to_string).collect();
        let out = Path::new(&dir).join(format!("{}-{n}.data", peer.name()));
        let perf = Command::new("perf")
            .args(["record", "-g", "-F", "4999", "-o"])
            .arg(&out)
            .args(["-p", &pids.join(",")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start perf record");
        std::thread::sleep(Duration::from_millis(500));
        perf
    });
    let cpu_before = target.cpu_ns();
    let switched = |pids: &[u32]| {
        pids.iter().fold((0, 0), |(v, n), pid| {
            let (pv, pn) = crate::process::switches(*pid);
            (v + pv, n + pn)
        })
    };
    let server_pids = target.pids();
    let client_pid = [std::process::id()];
    let (server_before, client_before) = (switched(&server_pids), switched(&client_pid));
    let client_cpu_before = crate::process::cpu_ns(std::process::id());
    let by_thread = || {
        let mut all = std::collections::BTreeMap::new();
        for pid in &server_pids {
            for (name, ns) in crate::process::cpu_ns_by_thread(*pid) {
                *all.entry(name).or_insert(0u64) += ns;
            }
        }
        all
    };
    let threads_before = by_thread();
    let published = Instant::now();
    target.publish(&mut control).await;
    let mut latencies = Vec::with_capacity(n);
    for client in clients {
        match client.await.expect("client task") {
            Ok(done) => latencies.push(done.duration_since(published).as_secs_f64() * 1e3),
            Err(err) => panic!("{}: a parked client failed: {err}", peer.name()),
        }
    }
    let cpu_us = target.cpu_ns().saturating_sub(cpu_before) as f64 / 1e3 / n as f64;
    let (server_after, client_after) = (switched(&server_pids), switched(&client_pid));
    let client_cpu_us = crate::process::cpu_ns(std::process::id()).saturating_sub(client_cpu_before)
        as f64
        / 1e3
        / n as f64;
    let per = |after: u64, before: u64| after.saturating_sub(before) as f64 / n as f64;
    let threads: Vec<String> = by_thread()
        .into_iter()
        .map(|(name, ns)| {
            let before = threads_before.get(&name).copied().unwrap_or(0);
            format!("{name} {:.1}", per(ns, before) / 1e3)
        })
        .collect();
    eprintln!(
        "   server CPU per answer by thread (us): {}",
        threads.join(", ")
    );
    eprintln!(
        "   context switches per answer: server {:.2} voluntary, {:.2} not; \
         load client {:.2} voluntary, {:.2} not, CPU {:.1} us per answer",
        per(server_after.0, server_before.0),
        per(server_after.1, server_before.1),
        per(client_after.0, client_before.0),
        per(client_after.1, client_before.1),
        client_cpu_us,
    );
    if let Some(mut perf) = profile {
        let _ = Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let _ = perf.wait();
    }
    latencies.sort_by(f64::total_cmp);
    let parked = Parked {
        rss_kib: (rss_before, rss_after),
        per_poll,
        latency: Latency::of(&latencies),
        cpu_us,
    };
    eprintln!(
        "   {:17} N={n}: fan-out p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, \
         server CPU {cpu_us:.1} us per answer; \
         {per_poll:.2} KiB per parked poll (RSS {rss_before} to {rss_after} KiB)",
        peer.name(),
        parked.latency.p50,
        parked.latency.p99,
        parked.latency.max,
    );
    parked
}
