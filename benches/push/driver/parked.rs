//! `--only memory` and `--only fanout`: polls parked on tower-push and on the `Notify` baseline,
//! the server's memory per parked poll, and the fan-out of one publish to them; and the parking
//! that `--only stacks`, `--only probe` and `--only topics` measure with.

use std::time::Instant;

use crate::client::{get_request, wait_parked, Conn};
use crate::process::Server;
use crate::{cursor, percentile, Settings};

use super::load::spawn_clients;
use super::table::Table;

/// Parks `n` polls; for tower-push and the `Notify` baseline, then publishes one event and
/// times every client's answer.
pub(super) async fn parked(settings: &Settings, table: &mut Table, n: usize, ours: bool) {
    let (kind, path) = if ours {
        ("tower-push-poll", format!("/poll?after={}", cursor(1)))
    } else {
        ("notify", "/poll".to_owned())
    };
    let fanout = settings.wants("fanout") && settings.fanout.contains(&n);
    let (per_poll, latencies) = park_then_publish(kind, &path, n, fanout).await;
    if n == settings.parked && ours && settings.wants("memory") {
        table.add(
            &format!("memory per parked poll, N={n}"),
            "KiB",
            Some((1.10, false)),
            true,
            per_poll,
        );
    }
    if n == settings.parked {
        table.add(
            &format!("memory per parked poll, N={n}, against the Notify handler (info)"),
            "KiB",
            None,
            ours,
            per_poll,
        );
    }
    if !fanout {
        return;
    }
    let name = |what: &str| format!("fan-out N={n}, publish to last byte, {what}");
    table.add(&name("p50"), "ms", None, ours, percentile(&latencies, 0.50));
    table.add(
        &name("p99"),
        "ms",
        Some((1.2, false)),
        ours,
        percentile(&latencies, 0.99),
    );
    table.add(&name("max"), "ms", None, ours, percentile(&latencies, 1.0));
    eprintln!(
        "   {kind:17} fan-out N={n}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {per_poll:.2} KiB per parked poll",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
}

/// Parks `n` polls of `path` on a `kind` server and measures its memory growth per parked
/// poll, in KiB; then, if `publish`, publishes one event and returns how long each client
/// waited for it, in milliseconds, sorted.
pub(super) async fn park_then_publish(
    kind: &str,
    path: &str,
    n: usize,
    publish: bool,
) -> (f64, Vec<f64>) {
    send_then_publish(kind, get_request(path, None), n, publish).await
}

/// As [`park_then_publish`], with `request` (the whole request head) for every client.
async fn send_then_publish(
    kind: &str,
    request: Vec<u8>,
    n: usize,
    publish: bool,
) -> (f64, Vec<f64>) {
    let server = Server::start(kind);
    let mut control = Conn::connect(server.control).await.expect("connect");
    control.stats().await.expect("stats");
    let before = server.rss_kib();
    let clients = spawn_clients(server.addr, request, n, false);
    wait_parked(&mut control, n).await;
    let after = server.rss_kib();
    let per_poll = (after.saturating_sub(before)) as f64 / n as f64;
    let mut latencies = Vec::with_capacity(n);
    if !publish {
        for client in clients {
            client.abort();
        }
        return (per_poll, latencies);
    }
    let published = Instant::now();
    control.post("/publish").await.expect("publish");
    for client in clients {
        match client.await.expect("client task") {
            Ok(done) => latencies.push(done.duration_since(published).as_secs_f64() * 1e3),
            Err(err) => panic!("{kind}: a parked client failed: {err}"),
        }
    }
    latencies.sort_by(f64::total_cmp);
    (per_poll, latencies)
}

/// Parks `n` polls on `path` and returns the server's memory growth per parked poll, in KiB.
pub(super) async fn park(kind: &str, path: &str, n: usize) -> f64 {
    let (per_poll, _) = park_then_publish(kind, path, n, false).await;
    eprintln!("   {kind:17} {path}: {per_poll:.2} KiB per parked poll (N={n})");
    per_poll
}
