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

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::response::sse::{Event as SseEvent, Sse};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{broadcast, Notify, Semaphore};
use tower::ServiceExt;
use tower_push::format::SseFormat;
use tower_push::{ChunkedStreamLayer, Cursor, Epoch, EventData, LongPollLayer, MemoryLog};

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
    if let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        if soft < hard {
            let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard);
        }
    }
    if args.first().map(String::as_str) == Some("serve") {
        let kind = args.get(1).cloned().unwrap_or_default();
        server::run(&kind);
        return;
    }
    let settings = match Settings::from_args(&args) {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("{message}");
            eprintln!(
                "usage: cargo bench --bench push [-- --quick] [--runs N] [--parked N] [--only memory,fanout,throughput,stream]"
            );
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(driver::run(settings));
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
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if settings.runs == 0 {
            return Err("--runs must be at least 1".to_owned());
        }
        Ok(settings)
    }

    fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }
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

/// Calls `publish(n, data)` `count` times at `rate` per second (as fast as possible for `None`),
/// on a thread of its own, like a producer outside the server's runtime.
fn publish_on_thread(
    count: u64,
    rate: Option<u64>,
    publish: impl Fn(u64, String) + Send + 'static,
) {
    std::thread::spawn(move || {
        let start = Instant::now();
        for n in 1..=count {
            if let Some(rate) = rate {
                let due = start + Duration::from_nanos(n * 1_000_000_000 / rate);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            publish(n, event_json(n));
        }
    });
}

fn query_u64(req: &Request<Incoming>, name: &str) -> u64 {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

fn text(body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::new(Full::new(body.into()))
}

/// The servers under test. Each runs in its own process (`push serve <kind>`), with two
/// listeners: the service under test alone on the first, so that nothing else shares its
/// connection futures, and a control service (publish, stats) on the second. The process prints
/// both ports on its first line and exits when its standard input closes (the driver died) or it
/// is killed.
///
/// | kind | service under test |
/// | --- | --- |
/// | `tower-push-poll` | `LongPollLayer` over a `MemoryLog` topic |
/// | `tower-push-stream` | `ChunkedStreamLayer` (SSE) over the same kind of topic |
/// | `pending` | a hyper handler that never answers |
/// | `notify` | a hyper handler that waits on a `Notify`, then answers the newest event from a shared `Mutex<Vec<Bytes>>` |
/// | `ready` | a hyper handler that answers tower-push's bytes at once |
/// | `axum-sse` | axum's `Sse` over a `tokio::sync::broadcast` receiver |
mod server {
    use super::*;

    pub(super) fn run(kind: &str) {
        std::thread::spawn(|| {
            // The driver holds our stdin; when it goes away, so do we.
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            std::process::exit(0);
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async {
            let main = listen();
            let control = listen();
            let port = |l: &TcpListener| l.local_addr().expect("local address").port();
            println!("{} {}", port(&main), port(&control));
            std::io::stdout().flush().expect("stdout");
            let state = State::new(kind == "axum-sse").await;
            tokio::spawn(serve(control, {
                let state = state.clone();
                hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(state.control(req)) }
                })
            }));
            match kind {
                "tower-push-poll" => {
                    let poll = LongPollLayer::builder()
                        .hold_timeout(Duration::from_secs(600))
                        .build()
                        .expect("long-poll settings")
                        .layer(state.topic.clone());
                    serve(
                        main,
                        hyper::service::service_fn(move |req| poll.clone().oneshot(req)),
                    )
                    .await;
                }
                "tower-push-stream" => {
                    let stream = ChunkedStreamLayer::builder()
                        .format(SseFormat::new())
                        .heartbeat_interval(Duration::from_secs(60))
                        .max_lifetime(Duration::from_secs(3600))
                        .build()
                        .expect("stream settings")
                        .layer(state.topic.clone());
                    serve(
                        main,
                        hyper::service::service_fn(move |req| stream.clone().oneshot(req)),
                    )
                    .await;
                }
                "pending" => {
                    let waiting = state.waiting.clone();
                    serve(
                        main,
                        hyper::service::service_fn(move |req: Request<Incoming>| {
                            drop(req);
                            waiting.fetch_add(1, Ordering::Relaxed);
                            std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>()
                        }),
                    )
                    .await;
                }
                // Where a parked poll's memory goes: the pending handler plus one piece of
                // what tower-push holds (`--probe`).
                "pending-parts" | "pending-sleep" | "pending-subscription" => {
                    let waiting = state.waiting.clone();
                    let topic = state.topic.clone();
                    let probe = kind.to_owned();
                    serve(
                        main,
                        hyper::service::service_fn(move |req: Request<Incoming>| {
                            let (parts, body) = req.into_parts();
                            drop(body);
                            let parts = Arc::new(parts);
                            let waiting = waiting.clone();
                            let mut topic = topic.clone();
                            let probe = probe.clone();
                            async move {
                                match probe.as_str() {
                                    "pending-parts" => {
                                        waiting.fetch_add(1, Ordering::Relaxed);
                                        std::future::pending::<()>().await;
                                    }
                                    "pending-sleep" => {
                                        drop(parts);
                                        waiting.fetch_add(1, Ordering::Relaxed);
                                        tokio::time::sleep(Duration::from_secs(600)).await;
                                    }
                                    _ => {
                                        use tower::Service as _;
                                        let position =
                                            tower_push::source::Position::After(cursor(1));
                                        let subscribe = tower_push::source::Subscribe::new(
                                            position, 256, parts,
                                        );
                                        let _ = topic.call(subscribe).await;
                                    }
                                }
                                Ok::<_, Infallible>(json(Bytes::new()))
                            }
                        }),
                    )
                    .await;
                }
                "notify" => {
                    serve(
                        main,
                        hyper::service::service_fn(move |req: Request<Incoming>| {
                            drop(req);
                            let state = state.clone();
                            async move {
                                let notified = state.notify.notified();
                                let mut notified = std::pin::pin!(notified);
                                notified.as_mut().enable();
                                state.waiting.fetch_add(1, Ordering::Relaxed);
                                notified.await;
                                state.waiting.fetch_sub(1, Ordering::Relaxed);
                                let latest = state.events.lock().expect("lock").last().cloned();
                                Ok::<_, Infallible>(json(latest.unwrap_or_default()))
                            }
                        }),
                    )
                    .await;
                }
                "ready" => {
                    let ready = ready_answer().await;
                    serve(
                        main,
                        hyper::service::service_fn(move |_req: Request<Incoming>| {
                            std::future::ready(Ok::<_, Infallible>(json(ready.clone())))
                        }),
                    )
                    .await;
                }
                "axum-sse" => {
                    let (sender, lagged) = (state.sender.clone(), state.lagged.clone());
                    let router = axum::Router::new().route(
                        "/stream",
                        axum::routing::get(move || sse_handler(sender.subscribe(), lagged.clone())),
                    );
                    serve(
                        main,
                        hyper::service::service_fn(move |req| router.clone().oneshot(req)),
                    )
                    .await;
                }
                other => panic!("unknown server kind {other:?}"),
            }
        });
    }

    fn listen() -> TcpListener {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind");
        socket.listen(8192).expect("listen")
    }

    /// Accepts connections forever and serves each with `service` over HTTP/1.1, with
    /// TCP_NODELAY, the same way for every server.
    async fn serve<S, B>(listener: TcpListener, service: S)
    where
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    /// What every server process holds: tower-push's topic and the baselines' state. Only
    /// the part its kind uses is ever touched.
    #[derive(Clone)]
    struct State {
        topic: tower_push::memory::Topic,
        waiting: Arc<AtomicUsize>,
        lagged: Arc<AtomicU64>,
        notify: Arc<Notify>,
        events: Arc<Mutex<Vec<Bytes>>>,
        sender: broadcast::Sender<(u64, String)>,
        /// Whether streams read the broadcast channel (axum) rather than the topic.
        broadcast_streams: bool,
    }

    impl State {
        async fn new(broadcast_streams: bool) -> Self {
            let log = MemoryLog::builder()
                .epoch(Epoch::new(EPOCH))
                .retention(262_144)
                .build()
                .expect("log settings");
            let topic = log.topic("bench");
            topic.publish(EventData::from_json(SEED).expect("seed is JSON"));
            Self {
                topic,
                waiting: Arc::new(AtomicUsize::new(0)),
                lagged: Arc::new(AtomicU64::new(0)),
                notify: Arc::new(Notify::new()),
                events: Arc::new(Mutex::new(vec![Bytes::from_static(SEED.as_bytes())])),
                sender: broadcast::channel(262_144).0,
                broadcast_streams,
            }
        }

        /// Publishes one event to tower-push's topic and to every baseline.
        fn publish(&self, n: u64, data: String) {
            let bytes = Bytes::from(data.clone());
            self.topic
                .publish(EventData::from_json(bytes.clone()).expect("JSON"));
            self.events.lock().expect("lock").push(bytes);
            self.notify.notify_waiters();
            let _ = self.sender.send((n, data));
        }

        /// The control service: `POST /publish` (one event), `POST /burst?n=` (as fast as
        /// possible), `POST /steady?n=&rate=` (at a steady rate), `GET /stats`.
        fn control(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
            // Streams publish to one side only: the other side's work must not slow it down.
            let stream_publisher = |state: State| {
                move |n: u64, data: String| {
                    if !state.broadcast_streams {
                        state
                            .topic
                            .publish(EventData::from_json(data).expect("JSON"));
                    } else {
                        let _ = state.sender.send((n, data));
                    }
                }
            };
            match (req.method(), req.uri().path()) {
                (&Method::POST, "/publish") => {
                    self.publish(1, event_json(1));
                    text("ok")
                }
                (&Method::POST, "/burst") => {
                    let publish = stream_publisher(self.clone());
                    publish_on_thread(query_u64(&req, "n"), None, publish);
                    text("ok")
                }
                (&Method::POST, "/steady") => {
                    let publish = stream_publisher(self.clone());
                    let rate = Some(query_u64(&req, "rate"));
                    publish_on_thread(query_u64(&req, "n"), rate, publish);
                    text("ok")
                }
                (&Method::GET, "/stats") => {
                    let waiting =
                        self.topic.parked_subscriptions() + self.waiting.load(Ordering::Relaxed);
                    text(format!("{waiting} {}", self.lagged.load(Ordering::Relaxed)))
                }
                _ => {
                    let mut response = text("not found");
                    *response.status_mut() = StatusCode::NOT_FOUND;
                    response
                }
            }
        }
    }

    /// What tower-push answers to `GET /poll?after=<epoch>-0` on a log holding the seed event:
    /// the `ready` baseline answers with exactly these bytes.
    async fn ready_answer() -> Bytes {
        let log = MemoryLog::builder()
            .epoch(Epoch::new(EPOCH))
            .build()
            .expect("log settings");
        let topic = log.topic("bench");
        topic.publish(EventData::from_json(SEED).expect("seed is JSON"));
        let request = Request::get(format!("/poll?after={}", cursor(0)))
            .body(())
            .expect("request");
        let response = LongPollLayer::new()
            .layer(topic)
            .oneshot(request)
            .await
            .unwrap_or_else(|e| match e {});
        response
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| match e {})
            .to_bytes()
    }

    /// What a Rust user writes for SSE over a broadcast channel with axum.
    async fn sse_handler(
        receiver: broadcast::Receiver<(u64, String)>,
        lagged: Arc<AtomicU64>,
    ) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
        let stream = futures_util::stream::unfold(receiver, move |mut receiver| {
            let lagged = lagged.clone();
            async move {
                loop {
                    match receiver.recv().await {
                        Ok((n, data)) => {
                            let event = SseEvent::default().id(n.to_string()).data(data);
                            return Some((Ok(event), receiver));
                        }
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            lagged.fetch_add(missed, Ordering::Relaxed);
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Sse::new(stream)
    }

    fn json(body: Bytes) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(body));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// A server child process.
struct Server {
    child: Child,
    /// The service under test.
    addr: SocketAddr,
    /// The control service: publish, stats.
    control: SocketAddr,
}

impl Server {
    fn start(kind: &str) -> Self {
        let exe = std::env::current_exe().expect("own executable");
        let mut child = Command::new(exe)
            .args(["serve", kind])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the server process");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's port");
        let ports: Vec<u16> = line
            .split_whitespace()
            .map(|p| p.parse().expect("the server prints its ports"))
            .collect();
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        Self {
            child,
            addr: addr(ports[0]),
            control: addr(ports[1]),
        }
    }

    /// Resident memory in KiB, from `/proc/<pid>/status`.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 client connection over raw TCP.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn get_request(path: &str, accept: Option<&str>) -> Vec<u8> {
    let accept = accept.map_or(String::new(), |a| format!("accept: {a}\r\n"));
    format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{accept}\r\n").into_bytes()
}

fn post_request(path: &str) -> Vec<u8> {
    format!("POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n\r\n").into_bytes()
}

/// A response head: status, and how its body is framed.
struct Head {
    status: u16,
    length: Option<usize>,
    chunked: bool,
    /// Where the body starts in the connection's buffer.
    end: usize,
}

fn parse_head(buf: &[u8]) -> Option<Head> {
    let end = find(buf, b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).expect("response head is text");
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut length = None;
    let mut chunked = false;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    Some(Head {
        status,
        length,
        chunked,
        end,
    })
}

/// The length of a complete chunked body at the start of `buf`, if it is all there.
fn chunked_len(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line = find(&buf[at..], b"\r\n")?;
        let size_text = std::str::from_utf8(&buf[at..at + line]).ok()?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).expect("chunk size");
        at += line + 2;
        if size == 0 {
            // No trailers from these servers: the final CRLF follows at once.
            return (buf.len() >= at + 2).then_some(at + 2);
        }
        if buf.len() < at + size + 2 {
            return None;
        }
        at += size + 2;
    }
}

impl Conn {
    async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(1024),
        })
    }

    async fn send(&mut self, request: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(request).await
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        if self.buf.capacity() - self.buf.len() < 512 {
            self.buf.reserve(4096);
        }
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    async fn head(&mut self) -> std::io::Result<Head> {
        loop {
            if let Some(head) = parse_head(&self.buf) {
                return Ok(head);
            }
            self.fill().await?;
        }
    }

    /// Reads one whole response and returns its status and body length.
    async fn response(&mut self) -> std::io::Result<(u16, usize)> {
        let head = self.head().await?;
        let body_len = loop {
            let body = &self.buf[head.end..];
            let complete = if head.status == 204 || head.status == 304 {
                Some(0)
            } else if let Some(length) = head.length {
                (body.len() >= length).then_some(length)
            } else if head.chunked {
                chunked_len(body)
            } else {
                panic!("a response without a length")
            };
            if let Some(len) = complete {
                break len;
            }
            self.fill().await?;
        };
        self.buf.drain(..head.end + body_len);
        Ok((head.status, body_len))
    }

    async fn post(&mut self, path: &str) -> std::io::Result<()> {
        self.send(&post_request(path)).await?;
        let (status, _) = self.response().await?;
        assert_eq!(status, 200, "POST {path}");
        Ok(())
    }

    /// The server's `/stats`: parked requests, and lagged broadcast events.
    async fn stats(&mut self) -> std::io::Result<(usize, u64)> {
        self.send(&get_request("/stats", None)).await?;
        let head = self.head().await?;
        let length = head.length.expect("stats has a length");
        while self.buf.len() < head.end + length {
            self.fill().await?;
        }
        let body = String::from_utf8_lossy(&self.buf[head.end..head.end + length]).into_owned();
        self.buf.drain(..head.end + length);
        let mut parts = body.split_whitespace();
        let waiting = parts.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        let lagged = parts.next().and_then(|l| l.parse().ok()).unwrap_or(0);
        Ok((waiting, lagged))
    }
}

mod driver {
    use super::*;

    /// One measured figure per run, for tower-push and its baseline.
    #[derive(Default)]
    struct Pair {
        ours: Vec<f64>,
        base: Vec<f64>,
    }

    fn median(values: &[f64]) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        match sorted.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        }
    }

    fn percentile(sorted: &[f64], p: f64) -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let rank = (p * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    /// A row of the table.
    struct Row {
        name: String,
        unit: &'static str,
        pair: Pair,
        /// `Some((bound, higher_is_better))`: the target on the ratio ours/baseline.
        target: Option<(f64, bool)>,
    }

    #[derive(Default)]
    struct Table {
        rows: Vec<Row>,
    }

    impl Table {
        fn row(&mut self, name: &str, unit: &'static str, target: Option<(f64, bool)>) -> usize {
            if let Some(at) = self.rows.iter().position(|r| r.name == name) {
                return at;
            }
            self.rows.push(Row {
                name: name.to_owned(),
                unit,
                pair: Pair::default(),
                target,
            });
            self.rows.len() - 1
        }

        fn add(
            &mut self,
            name: &str,
            unit: &'static str,
            target: Option<(f64, bool)>,
            ours: bool,
            value: f64,
        ) {
            let at = self.row(name, unit, target);
            let pair = &mut self.rows[at].pair;
            if ours {
                pair.ours.push(value);
            } else {
                pair.base.push(value);
            }
        }

        fn print(&self, runs: usize) {
            println!();
            println!(
                "Medians of {runs} runs; ratio: the median over runs of tower-push / baseline \
                 measured in the same run."
            );
            println!();
            println!("| measurement | unit | tower-push | baseline | ratio | target | met |");
            println!("| --- | --- | ---: | ---: | ---: | --- | --- |");
            for row in &self.rows {
                let (ours, base) = (median(&row.pair.ours), median(&row.pair.base));
                let ratios: Vec<f64> = (row.pair.ours.iter().zip(&row.pair.base))
                    .map(|(ours, base)| ours / base)
                    .collect();
                let ratio = median(&ratios);
                let (target, met) = match row.target {
                    Some((bound, true)) => (format!(">= {bound:.2}x"), ratio >= bound),
                    Some((bound, false)) => (format!("<= {bound:.2}x"), ratio <= bound),
                    None => (String::new(), true),
                };
                let met = match row.target {
                    None => "",
                    Some(_) if met => "yes",
                    Some(_) => "**no**",
                };
                println!(
                    "| {} | {} | {} | {} | {ratio:.2}x | {target} | {met} |",
                    row.name,
                    row.unit,
                    figure(ours),
                    figure(base),
                );
            }
        }
    }

    fn figure(value: f64) -> String {
        if value >= 1000.0 {
            format!("{value:.0}")
        } else if value >= 10.0 {
            format!("{value:.1}")
        } else {
            format!("{value:.2}")
        }
    }

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

    pub(super) async fn run(settings: Settings) {
        let started = Instant::now();
        println!("tower-push benchmarks (cargo bench --bench push)");
        machine();
        println!("settings: {settings:?}");
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
        let mut table = Table::default();
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
        }
        table.print(settings.runs);
        println!();
        println!(
            "load average at end: {}; total time {:.0} s",
            load_average(),
            started.elapsed().as_secs_f64()
        );
    }

    /// Parks `n` polls; for tower-push and the `Notify` baseline, then publishes one event and
    /// times every client's answer.
    async fn parked(settings: &Settings, table: &mut Table, n: usize, ours: bool) {
        let (kind, path) = if ours {
            ("tower-push-poll", format!("/poll?after={}", cursor(1)))
        } else {
            ("notify", "/poll".to_owned())
        };
        let server = Server::start(kind);
        let mut control = Conn::connect(server.control).await.expect("connect");
        control.stats().await.expect("stats");
        let before = server.rss_kib();
        let clients = spawn_clients(server.addr, get_request(&path, None), n);
        wait_parked(&mut control, n).await;
        let after = server.rss_kib();
        let per_poll = (after.saturating_sub(before)) as f64 / n as f64;
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
        if !settings.wants("fanout") || !settings.fanout.contains(&n) {
            return;
        }
        let published = Instant::now();
        control.post("/publish").await.expect("publish");
        let mut latencies = Vec::with_capacity(n);
        for client in clients {
            match client.await.expect("client task") {
                Ok(done) => latencies.push(done.duration_since(published).as_secs_f64() * 1e3),
                Err(err) => panic!("{kind}: a parked client failed: {err}"),
            }
        }
        latencies.sort_by(f64::total_cmp);
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

    /// Parks `n` polls on `path` and returns the server's memory growth per parked poll, in KiB.
    async fn park(kind: &str, path: &str, n: usize) -> f64 {
        let server = Server::start(kind);
        let mut control = Conn::connect(server.control).await.expect("connect");
        control.stats().await.expect("stats");
        let before = server.rss_kib();
        let clients = spawn_clients(server.addr, get_request(path, None), n);
        wait_parked(&mut control, n).await;
        let after = server.rss_kib();
        let per_poll = (after.saturating_sub(before)) as f64 / n as f64;
        eprintln!("   {kind:17} {path}: {per_poll:.2} KiB per parked poll (N={n})");
        drop(server);
        for client in clients {
            client.abort();
        }
        per_poll
    }

    /// Opens `n` connections, each sending `request` and waiting for the whole answer; each
    /// task resolves with the instant the answer was complete.
    fn spawn_clients(
        addr: SocketAddr,
        request: Vec<u8>,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<std::io::Result<Instant>>> {
        // Connect in waves, so that the listen backlog never overflows.
        let gate = Arc::new(Semaphore::new(256));
        let request: Arc<[u8]> = request.into();
        (0..n)
            .map(|_| {
                let (gate, request) = (gate.clone(), request.clone());
                tokio::spawn(async move {
                    let permit = gate.acquire_owned().await.expect("semaphore");
                    let mut conn = Conn::connect(addr).await?;
                    conn.send(&request).await?;
                    drop(permit);
                    let (status, _) = conn.response().await?;
                    let done = Instant::now();
                    if status != 200 {
                        return Err(std::io::Error::other(format!("status {status}")));
                    }
                    Ok(done)
                })
            })
            .collect()
    }

    async fn wait_parked(control: &mut Conn, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (waiting, _) = control.stats().await.expect("stats");
            if waiting >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {waiting} of {n} polls parked after 120 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the last allocations settle before memory is read.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// Requests per second over keep-alive connections, every request answered at once.
    async fn throughput(settings: &Settings, ours: bool) -> f64 {
        let (kind, path) = if ours {
            ("tower-push-poll", format!("/poll?after={}", cursor(0)))
        } else {
            ("ready", "/poll".to_owned())
        };
        let server = Server::start(kind);
        let request: Arc<[u8]> = get_request(&path, None).into();
        let warm_up = Duration::from_millis(500);
        let start = Instant::now() + warm_up;
        let end = start + settings.throughput_for;
        let tasks: Vec<_> = (0..settings.connections)
            .map(|_| {
                let request = request.clone();
                let addr = server.addr;
                tokio::spawn(async move {
                    let mut conn = Conn::connect(addr).await.expect("connect");
                    let mut counted = 0u64;
                    let mut body = None;
                    loop {
                        conn.send(&request).await.expect("send");
                        let (status, len) = conn.response().await.expect("response");
                        assert_eq!(status, 200);
                        body.get_or_insert(len);
                        let now = Instant::now();
                        if now >= end {
                            break;
                        }
                        if now >= start {
                            counted += 1;
                        }
                    }
                    (counted, body.unwrap_or(0))
                })
            })
            .collect();
        let mut total = 0;
        let mut body = 0;
        for task in tasks {
            let (counted, len) = task.await.expect("client task");
            total += counted;
            body = len;
        }
        let rps = total as f64 / settings.throughput_for.as_secs_f64();
        eprintln!("   {kind:17} throughput: {rps:.0} req/s ({body}-byte bodies)");
        rps
    }

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
    async fn stream(settings: &Settings, table: &mut Table, ours: bool) {
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
}
