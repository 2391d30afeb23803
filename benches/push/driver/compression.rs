//! `--only compression`: SSE streams of the demo program (a child process, as users run it)
//! in each coding it offers against the same streams uncompressed, in the same run: memory
//! per stream after it has sent a feed of events, the server's CPU per delivered event, the
//! bytes on the wire per event and the time from publish to an event decoded by a client.
//! And the same figures, in-process, for NDJSON streams through tower-http's `CompressionLayer`
//! (gzip at its defaults) against the same streams uncompressed.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{find, Conn};
use crate::process::{cpu_ns, example, Server};
use crate::{cursor, nchan, order_json, percentile, unix_nanos, Settings};

use super::table::Table;

/// The tests' decoders: a client's view of each coding.
#[allow(unreachable_pub)]
#[path = "../../../tests/common/decode.rs"]
mod decode;

/// The codings measured, each against identity: gzip as the demo offers it by default, zstd
/// and br with `--compression zstd` and `--compression br` (they are offered only when named).
const CODINGS: [&str; 3] = ["gzip", "zstd", "br"];

/// How many events each stream is sent, and how far apart they are published.
const EVENTS: usize = 50;
const PACE: Duration = Duration::from_millis(30);

/// One round of `--only compression`, each side in the order `order` gives (compressed first,
/// or last).
pub(super) async fn compression(settings: &Settings, table: &mut Table, order: [bool; 2]) {
    let n = settings.parked;
    // One stream alone: what compression adds to an event's way, without a fan-out's queue.
    for coding in CODINGS {
        for compressed in order {
            let accept = if compressed { coding } else { "identity" };
            let alone = feed(Target::Demo(coding), accept, 0).await;
            let row = |what: &str| format!("{what}, one SSE stream of the demo program, {coding}");
            table.add(
                &row("publish to decoded, p50"),
                "ms",
                None,
                compressed,
                alone.p50,
            );
            table.add(
                &row("publish to decoded, p99"),
                "ms",
                None,
                compressed,
                alone.p99,
            );
            table.add(
                &row("bytes on the wire per event"),
                "B",
                Some((0.40, false)),
                compressed,
                alone.bytes,
            );
        }
    }
    for coding in CODINGS {
        for compressed in order {
            let accept = if compressed { coding } else { "identity" };
            let figures = feed(Target::Demo(coding), accept, n).await;
            let row =
                |what: &str| format!("{what}, N={n} SSE streams of the demo program, {coding}");
            table.add(
                &row("memory per stream after 50 events"),
                "KiB",
                None,
                compressed,
                figures.kib,
            );
            table.add(
                &row("server CPU per delivered event"),
                "us",
                None,
                compressed,
                figures.cpu_us,
            );
            table.add(
                &row("bytes on the wire per event"),
                "B",
                Some((0.40, false)),
                compressed,
                figures.bytes,
            );
            table.add(
                &row("publish to decoded, p50"),
                "ms",
                None,
                compressed,
                figures.p50,
            );
            table.add(
                &row("publish to decoded, p99"),
                "ms",
                None,
                compressed,
                figures.p99,
            );
            eprintln!(
                "   demo {accept:8} N={n}: {:.2} KiB per stream, {:.2} us CPU per event, {:.0} B per event, \
                 publish to decoded p50 {:.2} ms p99 {:.2} ms",
                figures.kib, figures.cpu_us, figures.bytes, figures.p50, figures.p99
            );
        }
    }
    for coding in CODINGS {
        let (bytes, us) = alone(coding);
        let row = |what: &str| {
            format!("{what}, each event compressed alone (shared by every stream, in-process), {coding}")
        };
        table.add(&row("bytes on the wire per event"), "B", None, true, bytes);
        table.add(&row("CPU per compression"), "us", None, true, us);
        eprintln!("   {coding:4} each event alone: {bytes:.0} B, {us:.2} us per compression");
    }
    // tower-http's `CompressionLayer` (gzip at its defaults) around the stream layer, NDJSON
    // (which its default predicate compresses), against the same layer told not to compress.
    for gzip in order {
        let kind = match gzip {
            true => "tower-push-ndjson-gzip",
            false => "tower-push-ndjson",
        };
        let figures = feed(Target::InProcess(kind), "gzip", n).await;
        let row = |what: &str| {
            format!("{what}, N={n} NDJSON streams through tower-http's gzip (in-process)")
        };
        table.add(
            &row("memory per stream after 50 events"),
            "KiB",
            None,
            gzip,
            figures.kib,
        );
        table.add(
            &row("server CPU per delivered event"),
            "us",
            None,
            gzip,
            figures.cpu_us,
        );
        table.add(
            &row("bytes on the wire per event"),
            "B",
            None,
            gzip,
            figures.bytes,
        );
        table.add(
            &row("publish to decoded, p50"),
            "ms",
            None,
            gzip,
            figures.p50,
        );
        table.add(
            &row("publish to decoded, p99"),
            "ms",
            None,
            gzip,
            figures.p99,
        );
        eprintln!(
            "   {kind:22} N={n}: {:.2} KiB per stream, {:.2} us CPU per event, {:.0} B per event, \
             publish to decoded p50 {:.2} ms p99 {:.2} ms",
            figures.kib, figures.cpu_us, figures.bytes, figures.p50, figures.p99
        );
    }
}

/// The other design: each event compressed once, with nothing before it, so that every stream
/// could send the same bytes (a stream then keeps no compressor at all). Its bytes per event,
/// as the SSE frame the demo sends (`id:` and `data:` lines) with the flush, and the CPU of one
/// compression in microseconds: the codecs at the levels and window the layers use by default.
fn alone(coding: &str) -> (f64, f64) {
    let frames: Vec<Vec<u8>> = (0..EVENTS)
        .map(|i| format!("id: 1a2b3c4d5e6f7a8b-{i}\ndata: {}\n\n", order_json(i)).into_bytes())
        .collect();
    let started = Instant::now();
    let mut bytes = 0;
    for frame in &frames {
        bytes += match coding {
            "gzip" => {
                let mut deflate = flate2::Compress::new(flate2::Compression::new(6), false);
                let mut out = Vec::with_capacity(frame.len() + 64);
                deflate
                    .compress_vec(frame, &mut out, flate2::FlushCompress::Sync)
                    .expect("deflate");
                out.len()
            }
            "br" => {
                let mut writer = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 12);
                std::io::Write::write_all(&mut writer, frame).expect("brotli");
                std::io::Write::flush(&mut writer).expect("brotli");
                writer.get_ref().len()
            }
            "zstd" => {
                let mut out = vec![0; frame.len() + 64];
                let mut context = zstd_safe::CCtx::create();
                context
                    .set_parameter(zstd_safe::CParameter::WindowLog(12))
                    .expect("zstd");
                context.compress2(&mut out[..], frame).expect("zstd")
            }
            other => unreachable!("{other}"),
        };
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / EVENTS as f64;
    (bytes as f64 / EVENTS as f64, us)
}

/// What one side of a round measured.
struct Figures {
    kib: f64,
    cpu_us: f64,
    bytes: f64,
    p50: f64,
    p99: f64,
}

/// Whose streams a side of a round reads.
#[derive(Clone, Copy)]
enum Target {
    /// The demo program offering this coding: SSE streams, published to over `POST /publish`.
    Demo(&'static str),
    /// The bench's own server of this kind: NDJSON streams, published to over its control
    /// service's `POST /publish-order`.
    InProcess(&'static str),
}

/// Starts `target`, opens `n` streams with `Accept-Encoding: accept` and one more that decodes
/// what it reads, publishes [`EVENTS`] order events [`PACE`] apart, and measures.
async fn feed(target: Target, accept: &str, n: usize) -> Figures {
    let (server, path, framing, delimiter) = match target {
        Target::Demo(coding) => {
            let port = nchan::free_port();
            let mut command = Command::new(example("demo", super::peer::DEMO_FEATURES));
            command.args(["--addr", &format!("127.0.0.1:{port}")]);
            command.args(["--max-held", &(n + 16).to_string()]);
            if coding != "gzip" {
                command.args(["--compression", coding]);
            }
            let server = Server::listening(command, port).await;
            (
                server,
                "/stream".to_owned(),
                "text/event-stream",
                &b"\n\n"[..],
            )
        }
        Target::InProcess(kind) => (
            Server::start(kind),
            format!("/?after={}", cursor(1)),
            "application/x-ndjson",
            &b"\n"[..],
        ),
    };
    let mut control = Conn::connect(server.control).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: {framing}\r\n\
         accept-encoding: {accept}\r\n\r\n"
    );
    let before = server.rss_kib();
    let opened = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::with_capacity(n);
    for _ in 0..n {
        let (request, opened) = (request.clone(), opened.clone());
        let addr = server.addr;
        readers.push(tokio::spawn(async move {
            let mut socket = TcpStream::connect(addr).await.expect("connect");
            socket.set_nodelay(true).expect("TCP_NODELAY");
            socket.write_all(request.as_bytes()).await.expect("send");
            // Reads everything, as a client that keeps up does; counts the stream open once its
            // head has come.
            let mut buf = vec![0; 16 * 1024];
            let (mut head, mut open) = (Vec::new(), false);
            loop {
                let read = socket.read(&mut buf).await.unwrap_or(0);
                if read == 0 {
                    return;
                }
                if !open {
                    head.extend_from_slice(&buf[..read]);
                    if find(&head, b"\r\n\r\n").is_some() {
                        open = true;
                        head = Vec::new();
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
        // Keep the listen backlog from overflowing.
        if readers.len() % 256 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while opened.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "{accept}: streams did not open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut probe = Probe::open(server.addr, &request, delimiter).await;
    let cpu = cpu_ns(server.child.id());
    let mut latencies = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let publish = match target {
            Target::Demo(_) => {
                let event = order_json(i);
                format!(
                    "POST /publish HTTP/1.1\r\nhost: 127.0.0.1\r\n\
                     content-type: application/json\r\ncontent-length: {}\r\n\r\n{event}",
                    event.len()
                )
            }
            Target::InProcess(_) => format!(
                "POST /publish-order?i={i} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n\r\n"
            ),
        };
        control.send(publish.as_bytes()).await.expect("publish");
        let (status, _) = control.response().await.expect("publish");
        assert_eq!(status, 200, "{publish}");
        latencies.push(probe.next_event().await);
        tokio::time::sleep(PACE).await;
    }
    // The other streams read every event (the pace leaves them time), and the server is idle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_ns = cpu_ns(server.child.id()) - cpu;
    let after = server.rss_kib();
    for reader in readers {
        reader.abort();
    }
    latencies.sort_by(f64::total_cmp);
    Figures {
        kib: after.saturating_sub(before) as f64 / (n + 1) as f64,
        cpu_us: cpu_ns as f64 / 1e3 / ((n + 1) * EVENTS) as f64,
        bytes: probe.wire as f64 / EVENTS as f64,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
    }
}

/// A stream that decodes what it reads, as a client does: how long each event took from its
/// publish to being decoded, and how many body bytes came over the wire.
struct Probe {
    socket: TcpStream,
    buf: Vec<u8>,
    decoder: Option<decode::Decoder>,
    decoded: Vec<u8>,
    wire: usize,
    /// What ends a message: `\n\n` for SSE, `\n` for NDJSON.
    delimiter: &'static [u8],
}

impl Probe {
    async fn open(addr: std::net::SocketAddr, request: &str, delimiter: &'static [u8]) -> Self {
        let mut socket = TcpStream::connect(addr).await.expect("connect");
        socket.set_nodelay(true).expect("TCP_NODELAY");
        socket.write_all(request.as_bytes()).await.expect("send");
        let mut probe = Self {
            socket,
            buf: Vec::new(),
            decoder: None,
            decoded: Vec::new(),
            wire: 0,
            delimiter,
        };
        let end = loop {
            if let Some(end) = find(&probe.buf, b"\r\n\r\n") {
                break end;
            }
            probe.fill().await;
        };
        let head = String::from_utf8_lossy(&probe.buf[..end]).to_ascii_lowercase();
        let coding = head
            .lines()
            .find_map(|line| line.strip_prefix("content-encoding:"))
            .map(str::trim);
        probe.decoder = decode::Decoder::of(coding);
        probe.buf.drain(..end + 4);
        probe
    }

    async fn fill(&mut self) {
        let mut chunk = [0; 16 * 1024];
        let read = self.socket.read(&mut chunk).await.expect("read");
        assert!(read > 0, "the stream ended");
        self.buf.extend_from_slice(&chunk[..read]);
    }

    /// Reads until the next event's `data:` line is decoded; its latency in ms.
    async fn next_event(&mut self) -> f64 {
        loop {
            if let Some(at) = find(&self.decoded, self.delimiter) {
                let message: Vec<u8> = self.decoded.drain(..at + self.delimiter.len()).collect();
                if let Some(t) = find(&message, b"\"t\":") {
                    let digits: String = message[t + 4..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .map(|&b| b as char)
                        .collect();
                    let published: u64 = digits.parse().expect("t");
                    return unix_nanos().saturating_sub(published) as f64 / 1e6;
                }
                continue;
            }
            // One chunk: `size\r\n data \r\n`.
            while let Some(line) = find(&self.buf, b"\r\n") {
                let size =
                    usize::from_str_radix(std::str::from_utf8(&self.buf[..line]).unwrap(), 16)
                        .expect("chunk size");
                if self.buf.len() < line + 2 + size + 2 {
                    break;
                }
                let data: Vec<u8> = self.buf[line + 2..line + 2 + size].to_vec();
                self.buf.drain(..line + 2 + size + 2);
                self.wire += size;
                match &mut self.decoder {
                    Some(decoder) => self.decoded.extend(decoder.feed(&data)),
                    None => self.decoded.extend_from_slice(&data),
                }
            }
            if find(&self.decoded, self.delimiter).is_none() {
                self.fill().await;
            }
        }
    }
}
