//! `--only stream`: over one SSE connection, the latency of events published at a steady rate,
//! then the throughput of a burst, against axum's `Sse` over a broadcast channel.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::client::{find, get_request, Conn};
use crate::process::Server;
use crate::{percentile, unix_nanos, Settings};

use super::table::Table;

/// Reads an SSE stream's lines and hands every `data:` payload to `on_data`.
struct SseReader {
    partial: Vec<u8>,
}

impl SseReader {
    fn feed(&mut self, mut bytes: &[u8], on_data: &mut impl FnMut(&[u8])) {
        while let Some(at) = bytes.iter().position(|&b| b == b'\n') {
            let line: &[u8] = if self.partial.is_empty() {
                &bytes[..at]
            } else {
                self.partial.extend_from_slice(&bytes[..at]);
                &self.partial
            };
            if let Some(data) = line.strip_prefix(b"data:") {
                on_data(data.strip_prefix(b" ").unwrap_or(data));
            }
            self.partial.clear();
            bytes = &bytes[at + 1..];
        }
        self.partial.extend_from_slice(bytes);
    }
}

/// The `t` field of an event: its publish time in Unix nanoseconds.
fn published_at(data: &[u8]) -> Option<u64> {
    let at = find(data, b"\"t\":")? + 4;
    let digits = data[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&data[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// Reads `count` events from `conn`'s stream; returns the latencies in ms when `latency`.
async fn read_events(
    conn: &mut Conn,
    reader: &mut SseReader,
    count: usize,
    latency: bool,
) -> Vec<f64> {
    let seen = std::cell::Cell::new(0);
    let mut latencies = Vec::with_capacity(if latency { count } else { 0 });
    let mut on_data = |data: &[u8]| {
        seen.set(seen.get() + 1);
        if latency {
            if let Some(t) = published_at(data) {
                latencies.push(unix_nanos().saturating_sub(t) as f64 / 1e6);
            }
        }
    };
    reader.feed(&conn.buf, &mut on_data);
    conn.buf.clear();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen.get() < count {
        let read = tokio::time::timeout_at(deadline, conn.stream.read(&mut buf))
            .await
            .expect("the stream stalled for 120 s")
            .expect("read the stream");
        assert!(
            read > 0,
            "the stream ended after {} of {count} events",
            seen.get()
        );
        reader.feed(&buf[..read], &mut on_data);
    }
    latencies
}

/// Stream latency at a steady rate, then throughput for a burst, over one SSE connection.
pub(super) async fn stream(settings: &Settings, table: &mut Table, ours: bool) {
    let kind = if ours {
        "tower-push-stream"
    } else {
        "axum-sse"
    };
    let server = Server::start(kind);
    let mut control = Conn::connect(server.control).await.expect("connect");
    let mut conn = Conn::connect(server.addr).await.expect("connect");
    conn.send(&get_request("/stream", Some("text/event-stream")))
        .await
        .expect("send");
    let head = conn.head().await.expect("stream head");
    assert_eq!(head.status, 200, "{kind} stream");
    assert!(head.chunked, "{kind} stream is chunked");
    conn.buf.drain(..head.end);
    let mut reader = SseReader {
        partial: Vec::new(),
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    let count = (settings.steady_rate as f64 * settings.steady_for.as_secs_f64()) as usize;
    control
        .post(&format!("/steady?n={count}&rate={}", settings.steady_rate))
        .await
        .expect("steady");
    let mut latencies = read_events(&mut conn, &mut reader, count, true).await;
    latencies.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    let name = |what: &str| {
        format!(
            "stream latency at {} events/s, publish to receive, {what}",
            settings.steady_rate
        )
    };
    table.add(&name("p50"), "ms", None, ours, p50);
    table.add(&name("p99"), "ms", Some((1.0, false)), ours, p99);

    let burst = settings.burst;
    let started = Instant::now();
    control
        .post(&format!("/burst?n={burst}"))
        .await
        .expect("burst");
    read_events(&mut conn, &mut reader, burst, false).await;
    let elapsed = started.elapsed().as_secs_f64();
    let eps = burst as f64 / elapsed;
    table.add(
        &format!("stream throughput, {burst} events, one connection"),
        "events/s",
        Some((1.5, true)),
        ours,
        eps,
    );
    let (_, lagged) = control.stats().await.expect("stats");
    eprintln!(
        "   {kind:17} stream: p50 {p50:.3} ms, p99 {p99:.3} ms at {}/s; {eps:.0} events/s; lagged {lagged}",
        settings.steady_rate
    );
    assert_eq!(lagged, 0, "the broadcast baseline lagged");
}
