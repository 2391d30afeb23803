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
//! and 50,000 polls on tower-push and Nchan and writes the curve to `push-scaling.csv` in the
//! target directory, which `benches/plot.py` draws.
//!
//! `--only durable` (with `--features durable`; not part of the default run) sets tower-push's
//! Durable Streams service against the protocol's other servers, `durable-streams-server` from
//! crates.io and the Node reference server `@durable-streams/server` from npm (pinned in
//! `benches/durable-peers/`; `npm ci` there installs it): long-poll fan-out to 1,000 and
//! 10,000 readers, memory per parked reader, and append throughput. A peer that is not
//! installed is skipped, and its table says why. See the `durable` module at the end.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
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
    let open_files = raise_open_files();
    if args.first().map(String::as_str) == Some("serve") {
        let kind = args.get(1).cloned().unwrap_or_default();
        if kind == "nginx" {
            nchan::serve(&args[2..]);
        } else if kind == "durable" {
            #[cfg(feature = "durable")]
            durable::serve();
            #[cfg(not(feature = "durable"))]
            panic!("the durable server needs --features durable");
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
                 [--scaling N,N,...] [--csv PATH] [--appends N] [--head-pad BYTES] \
                 [--only memory,fanout,throughput,stream,nchan,scaling,stacks,topics,durable]"
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

/// The open-files limit every bench process asks for: 50,000 parked polls need a little over
/// 50,000 descriptors in the client and as many in the server (nginx's worker inherits it).
/// Where the hard limit is lower and cannot be raised, the sizes that do not fit are skipped.
const OPEN_FILES: u64 = 262_144;

/// The open-files limit (soft, hard) before and after [`raise_open_files`].
#[derive(Clone, Copy, Debug)]
struct OpenFiles {
    at_start: (u64, u64),
    now: (u64, u64),
}

/// Raises the open-files limit of this process (and so of the servers it starts): the hard
/// limit to [`OPEN_FILES`] where the process may (it needs `CAP_SYS_RESOURCE`, and the kernel's
/// `fs.nr_open` caps it), and the soft limit to the hard one.
fn raise_open_files() -> OpenFiles {
    const NOFILE: rlimit::Resource = rlimit::Resource::NOFILE;
    let at_start = rlimit::getrlimit(NOFILE).unwrap_or((0, 0));
    let (soft, hard) = at_start;
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(OPEN_FILES);
    let wanted = OPEN_FILES.min(ceiling);
    let raised = hard < wanted && rlimit::setrlimit(NOFILE, wanted, wanted).is_ok();
    if !raised && soft < hard {
        let _ = rlimit::setrlimit(NOFILE, hard, hard);
    }
    OpenFiles {
        at_start,
        now: rlimit::getrlimit(NOFILE).unwrap_or(at_start),
    }
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
                "--appends" => {
                    settings.appends = value()?.parse().map_err(|e| format!("--appends: {e}"))?;
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
/// | `tower-push-poll-1-thread` | the same on one runtime worker thread (nginx: one worker) |
/// | `tower-push-stream` | `ChunkedStreamLayer` (SSE) over the same kind of topic |
/// | `pending` | a hyper handler that never answers |
/// | `notify` | a hyper handler that waits on a `Notify`, then answers the newest event from a shared `Mutex<Vec<Bytes>>` |
/// | `ready` | a hyper handler that answers tower-push's bytes at once |
/// | `axum-sse` | axum's `Sse` over a `tokio::sync::broadcast` receiver |
// Every process of this bench, the servers and the load client, allocates with jemalloc, as the
// demo and the examples do: both sides of every ratio against a hand-written baseline use the
// same allocator. (Before, they used glibc's malloc; BENCHMARKS.md has both.)
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The demo's server loop, measured as one of the connection stacks (`--only stacks`).
#[path = "../examples/demo/app.rs"]
mod demo_app;

mod server {
    use super::*;

    pub(super) fn run(kind: &str) {
        std::thread::spawn(|| {
            // The driver holds our stdin; when it goes away, so do we.
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            std::process::exit(0);
        });
        // Every server, tower-push's and the baselines', runs on the demo's runtime settings.
        let mut runtime = demo_app::runtime();
        let kind = match kind.strip_suffix("-1-thread") {
            Some(kind) => {
                runtime.worker_threads(1);
                kind
            }
            None => kind,
        };
        let (kind, stack) = kind.split_once('@').unwrap_or((kind, "http1"));
        let stack = stack.to_owned();
        let runtime = runtime.build().expect("tokio runtime");
        // With the `metrics` feature the servers record into a Prometheus recorder, as a
        // deployment would, so that the table shows what recording costs.
        #[cfg(feature = "metrics")]
        let _prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("the only recorder of this process");
        runtime.block_on(async {
            let main = listen();
            let control = listen();
            let port = |l: &TcpListener| l.local_addr().expect("local address").port();
            println!("{} {}", port(&main), port(&control));
            std::io::stdout().flush().expect("stdout");
            let mut state = State::new(kind == "axum-sse").await;
            // The demo program itself (`@demo-app`): its `Demo` routes and its server loop, with
            // a hold long enough to outlast the measurement and no cap on held polls. Polls go
            // to `/poll` without a cursor (they park at the head of `default`), and the control
            // listener publishes on that topic and counts its parked polls.
            let demo = (stack == "demo-app").then(|| {
                let settings = demo_app::Settings {
                    hold: Duration::from_secs(600),
                    max_held: usize::MAX,
                    ..demo_app::Settings::default()
                };
                let shutdown = tower_push::Shutdown::new();
                let demo = demo_app::Demo::new(&settings, &shutdown).expect("demo settings");
                state.topic = demo.topic().clone();
                (demo, settings, shutdown)
            });
            tokio::spawn(serve(control, {
                let state = state.clone();
                hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(state.control(req)) }
                })
            }));
            if let Some((demo, settings, shutdown)) = demo {
                demo_app::serve(main, demo, &settings, shutdown, std::future::pending()).await;
                return;
            }
            match kind {
                "tower-push-poll" => {
                    let poll = LongPollLayer::builder()
                        .hold_timeout(Duration::from_secs(600))
                        .build()
                        .expect("long-poll settings")
                        .layer(state.topic.clone());
                    serve_on_stack(&stack, main, poll).await;
                }
                "tower-push-topics" => {
                    let poll = LongPollLayer::builder()
                        .hold_timeout(Duration::from_secs(600))
                        .max_topics(64)
                        .build()
                        .expect("long-poll settings")
                        .layer(state.log.clone());
                    serve_on_stack(&stack, main, poll).await;
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

    pub(super) fn listen() -> TcpListener {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind");
        socket.listen(8192).expect("listen")
    }

    /// Accepts connections forever and serves each with `service` over HTTP/1.1, with
    /// TCP_NODELAY, the same way for every server.
    pub(super) async fn serve<S, B>(listener: TcpListener, service: S)
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

    /// Serves the long-poll service `poll` on one of the connection stacks a user might pick:
    /// `http1` (hyper's `http1::Builder`, as every other server here), `auto` and `auto-http1`
    /// (hyper-util's `auto` builder, and with `http1_only`), `axum` (`axum::serve` with the
    /// service at `/poll`), and `demo` (the demo's server loop: the protocol told from the
    /// first bytes, hyper's own builder for it, a write timeout and graceful shutdown).
    async fn serve_on_stack<S>(stack: &str, listener: TcpListener, poll: tower_push::LongPoll<S>)
    where
        S: tower::Service<
                tower_push::source::Subscribe,
                Response = tower_push::source::Outcome,
                Error = Infallible,
            > + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        use hyper_util::rt::TokioExecutor;
        use hyper_util::server::conn::auto;
        match stack {
            "http1" => {
                serve(
                    listener,
                    hyper::service::service_fn(move |req| poll.clone().oneshot(req)),
                )
                .await;
            }
            "auto" | "auto-http1" => {
                let mut builder = auto::Builder::new(TokioExecutor::new());
                if stack == "auto-http1" {
                    builder = builder.http1_only();
                }
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let (builder, poll) = (builder.clone(), poll.clone());
                    tokio::spawn(async move {
                        let service =
                            hyper::service::service_fn(move |req| poll.clone().oneshot(req));
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
            "axum" => {
                let router = axum::Router::new().route_service("/poll", poll);
                axum::serve(listener, router).await.expect("axum");
            }
            "demo" => {
                let handle = move |req: Request<Incoming>| {
                    let poll = poll.clone();
                    async move {
                        let response = poll.oneshot(req).await.unwrap_or_else(|e| match e {});
                        response.map(|body| body.boxed_unsync())
                    }
                };
                let settings = demo_app::Settings::default();
                let shutdown = tower_push::Shutdown::new();
                demo_app::serve_with(
                    listener,
                    handle,
                    &settings,
                    shutdown,
                    std::future::pending(),
                )
                .await;
            }
            other => panic!("unknown connection stack {other:?}"),
        }
    }

    /// What every server process holds: tower-push's topic and the baselines' state. Only
    /// the part its kind uses is ever touched.
    #[derive(Clone)]
    struct State {
        /// The log of `topic`, with 63 quiet topics `t1` to `t63` beside it.
        log: MemoryLog,
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
            for i in 1..64 {
                log.topic(&format!("t{i}"));
            }
            Self {
                log,
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
        let mut command = Command::new(exe);
        command.args(["serve", kind]);
        Self::spawn(command)
    }

    /// Starts `command`, which prints the ports of the service under test and of its control
    /// service on its first line and exits when its standard input closes.
    fn spawn(mut command: Command) -> Self {
        let mut child = command
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
        rss_kib(self.child.id())
    }
}

/// The resident memory of process `pid` in KiB, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// The time the threads of process `pid` have spent on a CPU, in nanoseconds: the first field of
/// `/proc/<pid>/task/<tid>/schedstat`, summed over its threads.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// The processes whose parent is `pid`, from `/proc/<n>/stat`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            // `<pid> (<comm>) <state> <ppid> ...`, where comm may hold spaces and parentheses.
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
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

/// `--head-pad BYTES`: every GET of the load client carries an `x-pad` header of that many
/// bytes, as a client with large cookies or a hostile one would send; 0 (no such header) by
/// default.
static HEAD_PAD: AtomicUsize = AtomicUsize::new(0);

fn get_request(path: &str, accept: Option<&str>) -> Vec<u8> {
    let mut accept = accept.map_or(String::new(), |a| format!("accept: {a}\r\n"));
    let pad = HEAD_PAD.load(Ordering::Relaxed);
    if pad > 0 {
        accept.push_str(&format!("x-pad: {}\r\n", "a".repeat(pad)));
    }
    format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{accept}\r\n").into_bytes()
}

fn post_request(path: &str) -> Vec<u8> {
    format!("POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n\r\n").into_bytes()
}

/// Where the parked clients of `--only nchan` and `--only scaling` connect from: 127.0.0.2 to
/// 127.0.0.9 in turn (all of 127.0.0.0/8 is loopback on Linux), so that no source address needs
/// more than N/8 ephemeral ports: 6,250 each at 50,000 polls, of the 28,232 in Linux's default
/// `ip_local_port_range`.
const SOURCES: usize = 8;

fn source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % SOURCES) as u8))
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

    /// Connects from `source` (port chosen by the kernel) and closes with a reset
    /// (`SO_LINGER` 0), so that tens of thousands of clients leave no `TIME_WAIT` behind to
    /// hold the ports of the next round.
    async fn connect_from(addr: SocketAddr, source: IpAddr) -> std::io::Result<Self> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        // A zero linger never blocks (the deprecation is about other values).
        #[allow(deprecated)]
        socket.set_linger(Some(Duration::ZERO))?;
        let stream = socket.connect(addr).await?;
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
        let (head, body_len) = self.whole_response().await?;
        self.buf.drain(..head.end + body_len);
        Ok((head.status, body_len))
    }

    /// Reads one whole response and returns its status and body as sent (with its chunk
    /// framing, if chunked).
    async fn response_body(&mut self) -> std::io::Result<(u16, Vec<u8>)> {
        let (head, body_len) = self.whole_response().await?;
        let body = self.buf[head.end..head.end + body_len].to_vec();
        self.buf.drain(..head.end + body_len);
        Ok((head.status, body))
    }

    /// Reads until the buffer holds one whole response; returns its head and body length.
    async fn whole_response(&mut self) -> std::io::Result<(Head, usize)> {
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
        Ok((head, body_len))
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

/// nginx with its Nchan module, the peer of `--only nchan` and `--only scaling`.
///
/// The driver starts `push serve nginx <nginx> <module> <connections>`: that process writes a
/// configuration into a temporary directory, runs nginx in the foreground (`daemon off;`, a
/// master and one worker process) on a free loopback port, prints the port and the master's
/// pid, and stops nginx when its standard input closes, like every other server here, so that
/// no nginx outlives the bench. The driver reads the memory of the master and its worker, and
/// talks to Nchan over HTTP only: `/poll` is a long-poll subscriber location whose cursor is
/// Nchan's message id (`?last_event_id=<time>:<tag>`), `/publish` a publisher location on the
/// same channel, which also answers the channel's subscriber count.
mod nchan {
    use super::*;

    /// Where the Debian package `libnginx-mod-nchan` puts the module.
    const MODULE: &str = "ngx_nchan_module.so";

    /// An nginx program that can load Nchan.
    #[derive(Clone, Debug)]
    pub(super) struct Program {
        nginx: PathBuf,
        /// `None` when Nchan is built into nginx.
        module: Option<PathBuf>,
        /// nginx's version and the module's path, for the report.
        pub(super) description: String,
    }

    /// Finds nginx and the Nchan module (`NGINX` and `NCHAN_MODULE` override where), and checks
    /// with `nginx -t` that the configuration the bench writes loads; the error says why not.
    pub(super) fn find() -> Result<Program, String> {
        const SBIN: [&str; 3] = ["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"];
        const MODULES: [&str; 2] = ["/usr/lib/nginx/modules", "/usr/local/nginx/modules"];
        let nginx = match std::env::var_os("NGINX") {
            Some(path) => PathBuf::from(path),
            None => {
                let path = std::env::var_os("PATH").unwrap_or_default();
                std::env::split_paths(&path)
                    .chain(SBIN.map(PathBuf::from))
                    .map(|dir| dir.join("nginx"))
                    .find(|candidate| candidate.is_file())
                    .ok_or("nginx not found in PATH or /usr/sbin (Debian package `nginx`)")?
            }
        };
        let version = Command::new(&nginx)
            .arg("-V")
            .output()
            .map_err(|e| format!("{} -V: {e}", nginx.display()))?;
        // nginx prints its version and build settings on stderr.
        let version = String::from_utf8_lossy(&version.stderr).into_owned();
        let modules_path = version
            .split_whitespace()
            .find_map(|arg| arg.strip_prefix("--modules-path="))
            .map(PathBuf::from);
        let module = match std::env::var_os("NCHAN_MODULE") {
            Some(path) => Some(PathBuf::from(path)),
            None => modules_path
                .into_iter()
                .chain(MODULES.map(PathBuf::from))
                .map(|dir| dir.join(MODULE))
                .find(|candidate| candidate.is_file()),
        };
        // Compiled in with `--add-module=<path to nchan>`, it needs no `load_module`.
        let built_in = version
            .split_whitespace()
            .any(|arg| arg.starts_with("--add-module=") && arg.contains("nchan"));
        if module.is_none() && !built_in {
            return Err(format!(
                "the Nchan module not found ({MODULE} in nginx's modules path; \
                 Debian package `libnginx-mod-nchan`)"
            ));
        }
        let program = Program {
            description: format!(
                "{}, {}",
                version.lines().next().unwrap_or("nginx").trim(),
                module
                    .as_ref()
                    .map_or("Nchan built in".to_owned(), |m| m.display().to_string()),
            ),
            nginx,
            module: if built_in { None } else { module },
        };
        let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
        let conf = program.write_config(dir.path(), free_port(), 64)?;
        let test = program
            .command(dir.path(), &conf)
            .arg("-t")
            .output()
            .map_err(|e| format!("{} -t: {e}", program.nginx.display()))?;
        if !test.status.success() {
            let said = String::from_utf8_lossy(&test.stderr);
            let reason = said
                .lines()
                .find(|l| l.contains("[emerg]"))
                .unwrap_or_else(|| said.lines().next().unwrap_or("no output"));
            return Err(format!("nginx -t failed: {}", reason.trim()));
        }
        Ok(program)
    }

    impl Program {
        fn command(&self, dir: &Path, conf: &Path) -> Command {
            let mut command = Command::new(&self.nginx);
            command
                .arg("-p")
                .arg(dir)
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-c")
                .arg(conf)
                .args(["-g", "daemon off;"]);
            command
        }

        /// The configuration: one worker process with room for `connections` (its open-files
        /// limit is the bench's, inherited), no access log, keep-alive without a request limit
        /// (nginx closes a connection after 1,000 requests by default, which the throughput
        /// clients would see as an error), and the two locations.
        fn write_config(
            &self,
            dir: &Path,
            port: u16,
            connections: usize,
        ) -> Result<PathBuf, String> {
            let load = self
                .module
                .as_ref()
                .map_or(String::new(), |m| format!("load_module {};\n", m.display()));
            let d = dir.display();
            let config = format!(
                r#"{load}worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    keepalive_requests 1000000000;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        location = /poll {{
            nchan_subscriber longpoll;
            nchan_channel_id bench;
            nchan_subscriber_timeout 600s;
        }}
        location = /publish {{
            nchan_publisher;
            nchan_channel_id bench;
        }}
    }}
}}
"#
            );
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, config).map_err(|e| format!("write {}: {e}", conf.display()))?;
            Ok(conf)
        }
    }

    /// A loopback port that was free a moment ago.
    pub(super) fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    /// `push serve nginx <nginx> <module or -> <connections>`: runs nginx until standard input
    /// closes; prints `<port> <master pid>` once it listens, or `error <reason>`.
    pub(super) fn serve(args: &[String]) {
        let program = Program {
            nginx: PathBuf::from(&args[0]),
            module: (args[1] != "-").then(|| PathBuf::from(&args[1])),
            description: String::new(),
        };
        let connections: usize = args[2].parse().expect("connections");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let error_log =
            || std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        let mut started = None;
        for _ in 0..5 {
            let port = free_port();
            let conf = program
                .write_config(dir.path(), port, connections)
                .expect("write the configuration");
            let _ = std::fs::remove_file(dir.path().join("nginx.pid"));
            let mut child = program
                .command(dir.path(), &conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nginx");
            // nginx writes its pid file once it has bound its port.
            let deadline = Instant::now() + Duration::from_secs(10);
            let listening = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break false;
                }
                if dir.path().join("nginx.pid").exists()
                    && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                {
                    break true;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break false;
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            if listening {
                started = Some((child, port, conf));
                break;
            }
            if !error_log().contains("Address already in use") {
                break;
            }
        }
        let Some((mut child, port, conf)) = started else {
            let log = error_log();
            println!(
                "error {}",
                log.lines().last().unwrap_or("nginx did not start")
            );
            return;
        };
        println!("{port} {}", child.id());
        std::io::stdout().flush().expect("stdout");
        // The driver holds our stdin; when it goes away, nginx goes too.
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        let workers = children(child.id());
        let _ = program
            .command(dir.path(), &conf)
            .args(["-s", "stop"])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(child.try_wait(), Ok(None)) {
            // A worker outlives a killed master, so it goes first.
            for worker in workers {
                let _ = Command::new("kill")
                    .args(["-KILL", &worker.to_string()])
                    .status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A running nginx with Nchan, seeded with two messages on the bench channel.
    pub(super) struct Nginx {
        wrapper: Child,
        pub(super) master: u32,
        pub(super) addr: SocketAddr,
        /// The id of the first message: polls after it are answered at once, with the second.
        pub(super) older: String,
        /// The id of the newest message: polls after it park.
        pub(super) newest: String,
    }

    impl Nginx {
        /// Starts nginx with room for `connections` and publishes the two seed messages.
        pub(super) async fn start(program: &Program, connections: usize) -> Self {
            let exe = std::env::current_exe().expect("own executable");
            let module = program
                .module
                .as_ref()
                .map_or("-".to_owned(), |m| m.display().to_string());
            let mut wrapper = Command::new(exe)
                .arg("serve")
                .arg("nginx")
                .arg(&program.nginx)
                .arg(module)
                .arg(connections.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start the nginx process");
            let stdout = wrapper.stdout.take().expect("piped stdout");
            let mut line = String::new();
            BufReader::new(stdout)
                .read_line(&mut line)
                .expect("read nginx's port");
            if let Some(reason) = line.strip_prefix("error ") {
                panic!("nginx did not start: {}", reason.trim());
            }
            let mut words = line.split_whitespace();
            let port: u16 = words.next().and_then(|p| p.parse().ok()).expect("port");
            let master: u32 = words.next().and_then(|p| p.parse().ok()).expect("pid");
            let mut nginx = Self {
                wrapper,
                master,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                older: String::new(),
                newest: String::new(),
            };
            let mut control = Conn::connect(nginx.addr).await.expect("connect to nginx");
            nginx.older = publish(&mut control, r#"{"n":-1,"t":0}"#).await;
            nginx.newest = publish(&mut control, SEED).await;
            nginx
        }

        /// The resident memory of the master and its workers, in KiB.
        pub(super) fn rss_kib(&self) -> u64 {
            rss_kib(self.master) + children(self.master).into_iter().map(rss_kib).sum::<u64>()
        }

        /// CPU time of nginx's master and worker, in nanoseconds.
        pub(super) fn cpu_ns(&self) -> u64 {
            cpu_ns(self.master) + children(self.master).into_iter().map(cpu_ns).sum::<u64>()
        }
    }

    impl Drop for Nginx {
        fn drop(&mut self) {
            // Closing the wrapper's stdin stops nginx; the wrapper exits once nginx has.
            drop(self.wrapper.stdin.take());
            let _ = self.wrapper.wait();
        }
    }

    /// The channel information Nchan's publisher location answers, as JSON.
    async fn channel(conn: &mut Conn, request: &[u8]) -> serde_json::Value {
        conn.send(request).await.expect("send to nginx");
        let (status, body) = conn.response_body().await.expect("nginx answers");
        assert!(
            (200..300).contains(&status),
            "Nchan's publisher answered {status}"
        );
        serde_json::from_slice(&body).expect("Nchan's channel information is JSON")
    }

    /// Publishes `data` and returns its message id.
    pub(super) async fn publish(conn: &mut Conn, data: &str) -> String {
        let request = format!(
            "POST /publish HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/json\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{data}",
            data.len()
        );
        let info = channel(conn, request.as_bytes()).await;
        info["last_message_id"]
            .as_str()
            .expect("last_message_id")
            .to_owned()
    }

    /// The subscribers parked on the channel.
    pub(super) async fn subscribers(conn: &mut Conn) -> usize {
        let request = "GET /publish HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/json\r\n\r\n";
        let info = channel(conn, request.as_bytes()).await;
        info["subscribers"].as_u64().expect("subscribers") as usize
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

    pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
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

    struct Table {
        /// What tower-push is set against: the column's name.
        against: &'static str,
        rows: Vec<Row>,
        /// Why the other side was not measured, if it was not.
        skipped: Option<String>,
    }

    impl Table {
        fn new(against: &'static str) -> Self {
            Self {
                against,
                rows: Vec::new(),
                skipped: None,
            }
        }

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
            let against = self.against;
            println!(
                "Medians of {runs} runs; ratio: the median over runs of tower-push / {against} \
                 measured in the same run."
            );
            println!();
            println!("| measurement | unit | tower-push | {against} | ratio | target | met |");
            println!("| --- | --- | ---: | ---: | ---: | --- | --- |");
            if let Some(reason) = &self.skipped {
                println!("| {against} peer | skipped: {reason} | | | | | |");
            }
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
        #[cfg(feature = "durable")]
        let mut against_durable = durable_part.then(AgainstDurable::find);
        #[cfg(not(feature = "durable"))]
        if durable_part {
            println!("--only durable skipped: it needs `--features durable`");
        }
        let mut table = Table::new("baseline");
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
                for stack in ["auto", "auto-http1", "axum", "demo", "demo-app"] {
                    let kind = format!("tower-push-poll@{stack}");
                    let path = if stack == "demo-app" { "/poll" } else { &path };
                    let kib = park(&kind, path, settings.parked).await;
                    eprintln!(
                        "   stack {stack:10} {kib:.2} KiB per parked poll, {:.2}x hyper's http1::Builder ({http1:.2})",
                        kib / http1
                    );
                }
            }
            if settings.only.iter().any(|p| p == "topics") {
                topics(&settings, &mut topic_rows).await;
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
            #[cfg(feature = "durable")]
            if let Some(against) = &mut against_durable {
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
        #[cfg(feature = "durable")]
        if let Some(against) = &against_durable {
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

    /// `--only durable`: the Durable Streams peers found, and a table against each.
    #[cfg(feature = "durable")]
    struct AgainstDurable {
        peers: Vec<durable::Program>,
        tables: Vec<(durable::Kind, Table)>,
    }

    #[cfg(feature = "durable")]
    impl AgainstDurable {
        /// Looks for both peers; a missing one gets a table that says why it was skipped.
        fn find() -> Self {
            let mut peers = Vec::new();
            let mut tables = Vec::new();
            let found = [
                (durable::Kind::Rust, durable::find_rust()),
                (durable::Kind::Node, durable::find_node()),
            ];
            for (kind, found) in found {
                let mut table = Table::new(kind.name());
                match found {
                    Ok(program) => {
                        println!("Durable Streams peer: {}", program.version);
                        peers.push(program);
                    }
                    Err(reason) => {
                        println!("Durable Streams peer {} skipped: {reason}", kind.name());
                        table.skipped = Some(reason);
                    }
                }
                tables.push((kind, table));
            }
            Self { peers, tables }
        }

        fn program(&self, kind: durable::Kind) -> Option<&durable::Program> {
            self.peers.iter().find(|p| p.kind == kind)
        }

        /// Adds tower-push's figure and each peer's to the table against that peer.
        fn add(&mut self, name: &str, unit: &'static str, figures: &[(durable::Kind, f64)]) {
            let ours = figures
                .iter()
                .find(|(kind, _)| *kind == durable::Kind::TowerPush)
                .map(|&(_, value)| value);
            for (kind, table) in &mut self.tables {
                let theirs = figures.iter().find(|(k, _)| k == kind);
                if let (Some(ours), Some(&(_, theirs))) = (ours, theirs) {
                    table.add(name, unit, None, true, ours);
                    table.add(name, unit, None, false, theirs);
                }
            }
        }

        /// One run: fan-out at every size, then append throughput, every server in turn, the
        /// order rotating between runs.
        async fn run(&mut self, settings: &Settings, run: usize, limit: u64) {
            let mut order = vec![durable::Kind::TowerPush];
            order.extend(self.peers.iter().map(|p| p.kind));
            let servers = order.len();
            order.rotate_left(run % servers);
            for &n in &settings.fanout {
                // The client and each server hold the n connections, plus a few of their own.
                if n as u64 + 512 > limit {
                    eprintln!(
                        "   N={n} skipped: the open-files limit is {limit}, too few for {n} connections"
                    );
                    continue;
                }
                let mut p50 = Vec::new();
                let mut p99 = Vec::new();
                let mut memory = Vec::new();
                for &kind in &order {
                    let fanout = durable::fanout(kind, self.program(kind), n).await;
                    p50.push((kind, fanout.p50));
                    p99.push((kind, fanout.p99));
                    memory.push((kind, fanout.per_reader_kib));
                }
                let name =
                    |what: &str| format!("fan-out N={n}, append to last reader's answer, {what}");
                self.add(&name("p50"), "ms", &p50);
                self.add(&name("p99"), "ms", &p99);
                self.add(&format!("memory per parked reader, N={n}"), "KiB", &memory);
            }
            for connections in [1, settings.connections] {
                let mut rates = Vec::new();
                for &kind in &order {
                    let program = self.program(kind);
                    let rate = durable::appends(kind, program, connections, settings.appends).await;
                    rates.push((kind, rate));
                }
                let name = format!(
                    "append throughput, {} appends, {connections} connection{}",
                    settings.appends,
                    if connections == 1 { "" } else { "s" }
                );
                self.add(&name, "appends/s", &rates);
            }
        }

        fn print(&self, settings: &Settings) {
            for (_, table) in &self.tables {
                table.print(settings.runs);
            }
        }
    }

    /// Parks `n` polls; for tower-push and the `Notify` baseline, then publishes one event and
    /// times every client's answer.
    async fn parked(settings: &Settings, table: &mut Table, n: usize, ours: bool) {
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
    async fn park_then_publish(kind: &str, path: &str, n: usize, publish: bool) -> (f64, Vec<f64>) {
        let server = Server::start(kind);
        let mut control = Conn::connect(server.control).await.expect("connect");
        control.stats().await.expect("stats");
        let before = server.rss_kib();
        let clients = spawn_clients(server.addr, get_request(path, None), n, false);
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

    /// `--only topics`: polls that follow K topics (K = 1, 10, 64; the bench topic and K - 1
    /// quiet ones) against polls of the bench topic alone, in the same run: memory per parked
    /// poll, and the fan-out of one publish on the bench topic.
    async fn topics(settings: &Settings, rows: &mut Vec<TopicsRow>) {
        let n = settings.parked;
        let single = format!("/poll?after={}", cursor(1));
        let (kib, latencies) = park_then_publish("tower-push-poll", &single, n, true).await;
        let base = TopicsRow::new(0, kib, &latencies);
        eprintln!("   one topic          {base:?}");
        for k in [1, 10, 64] {
            let names: Vec<String> = std::iter::once("bench".to_owned())
                .chain((1..k).map(|i| format!("t{i}")))
                .collect();
            let positions: Vec<String> = std::iter::once(cursor(1).to_string())
                .chain(
                    names[1..]
                        .iter()
                        .map(|name| Cursor::zero(Epoch::new(EPOCH).derive(name)).to_string()),
                )
                .collect();
            let path = format!(
                "/poll?topics={}&after={}",
                names.join(","),
                positions.join(".")
            );
            let (kib, latencies) = park_then_publish("tower-push-topics", &path, n, true).await;
            let row = TopicsRow::new(k, kib, &latencies);
            eprintln!("   K={k:<3}             {row:?}");
            rows.push(TopicsRow {
                single: Some(Box::new(base.clone())),
                ..row
            });
        }
    }

    /// One measurement of `--only topics`, with the single-topic one of the same run.
    #[derive(Clone, Debug)]
    struct TopicsRow {
        topics: usize,
        kib: f64,
        p50: f64,
        p99: f64,
        single: Option<Box<TopicsRow>>,
    }

    impl TopicsRow {
        fn new(topics: usize, kib: f64, latencies: &[f64]) -> Self {
            Self {
                topics,
                kib,
                p50: percentile(latencies, 0.5),
                p99: percentile(latencies, 0.99),
                single: None,
            }
        }
    }

    /// Prints the medians of `--only topics` over the runs, as ratios to the single-topic
    /// polls of the same runs.
    fn print_topics(settings: &Settings, rows: &[TopicsRow]) {
        println!();
        println!(
            "Several topics per poll (N = {} parked polls; K topics each, one publish on one of them)",
            settings.parked
        );
        println!(
            "| K | KiB per parked poll | x one topic | fan-out p50 ms | x | fan-out p99 ms | x |"
        );
        println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for k in [1, 10, 64] {
            let of_k: Vec<&TopicsRow> = rows.iter().filter(|r| r.topics == k).collect();
            let median = |value: &dyn Fn(&TopicsRow) -> f64| {
                let mut values: Vec<f64> = of_k.iter().map(|r| value(r)).collect();
                values.sort_by(f64::total_cmp);
                percentile(&values, 0.5)
            };
            let single = |value: fn(&TopicsRow) -> f64| {
                median(&|r: &TopicsRow| r.single.as_deref().map_or(f64::NAN, value))
            };
            let ratio = |value: fn(&TopicsRow) -> f64| {
                median(&|r: &TopicsRow| value(r) / r.single.as_deref().map_or(f64::NAN, value))
            };
            println!(
                "| {k} | {:.2} (one topic {:.2}) | {:.2}x | {:.2} | {:.2}x | {:.2} | {:.2}x |",
                median(&|r| r.kib),
                single(|r| r.kib),
                ratio(|r| r.kib),
                median(&|r| r.p50),
                ratio(|r| r.p50),
                median(&|r| r.p99),
                ratio(|r| r.p99),
            );
        }
    }

    /// Parks `n` polls on `path` and returns the server's memory growth per parked poll, in KiB.
    async fn park(kind: &str, path: &str, n: usize) -> f64 {
        let (per_poll, _) = park_then_publish(kind, path, n, false).await;
        eprintln!("   {kind:17} {path}: {per_poll:.2} KiB per parked poll (N={n})");
        per_poll
    }

    /// Opens `n` connections, each sending `request` and waiting for the whole answer; each
    /// task resolves with the instant the answer was complete. With `spread`, the connections
    /// come from the [`SOURCES`] addresses in turn and close with a reset.
    fn spawn_clients(
        addr: SocketAddr,
        request: Vec<u8>,
        n: usize,
        spread: bool,
    ) -> Vec<tokio::task::JoinHandle<std::io::Result<Instant>>> {
        // Connect in waves, so that the listen backlog never overflows.
        let gate = Arc::new(Semaphore::new(256));
        let request: Arc<[u8]> = request.into();
        (0..n)
            .map(|i| {
                let (gate, request) = (gate.clone(), request.clone());
                tokio::spawn(async move {
                    let permit = gate.acquire_owned().await.expect("semaphore");
                    let mut conn = if spread {
                        Conn::connect_from(addr, source(i)).await?
                    } else {
                        Conn::connect(addr).await?
                    };
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

    pub(super) async fn wait_parked(control: &mut Conn, n: usize) {
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
        throughput_at(settings, kind, server.addr, &path).await
    }

    /// Requests per second to `addr` over keep-alive connections, each sending `GET path`.
    async fn throughput_at(settings: &Settings, kind: &str, addr: SocketAddr, path: &str) -> f64 {
        let request: Arc<[u8]> = get_request(path, None).into();
        let warm_up = Duration::from_millis(500);
        let start = Instant::now() + warm_up;
        let end = start + settings.throughput_for;
        let tasks: Vec<_> = (0..settings.connections)
            .map(|_| {
                let request = request.clone();
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

    /// The long-poll servers of `--only nchan` and `--only scaling`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Peer {
        TowerPush,
        /// tower-push on a runtime with one worker thread, as nginx has one worker process:
        /// the info rows of `--only nchan`.
        TowerPushOneThread,
        /// The demo program (its routes and its server loop), at the size of the memory row.
        Demo,
        /// The demo program with its polls over HTTP/2, [`H2_STREAMS`] on each connection: the
        /// scaling curve's way past the open-files limit.
        DemoHttp2,
        Nchan,
    }

    impl Peer {
        fn name(self) -> &'static str {
            match self {
                Self::TowerPush => "tower-push",
                Self::TowerPushOneThread => "tower-push-1-thread",
                Self::Demo => "tower-push-demo",
                Self::DemoHttp2 => "tower-push-demo-h2",
                Self::Nchan => "nchan",
            }
        }
    }

    /// A running long-poll server of the peer comparison, and a connection to where it takes
    /// publishes: tower-push's control listener, or Nchan's publisher location.
    enum Target {
        TowerPush(Server),
        /// The demo program: polls without a cursor park at the head of its topic.
        Demo(Server),
        Nchan(nchan::Nginx),
    }

    impl Target {
        /// Starts `peer`; nginx gets room for `connections`.
        async fn start(
            peer: Peer,
            program: Option<&nchan::Program>,
            connections: usize,
        ) -> (Self, Conn) {
            match peer {
                Peer::TowerPush | Peer::TowerPushOneThread => {
                    let kind = if peer == Peer::TowerPush {
                        "tower-push-poll"
                    } else {
                        "tower-push-poll-1-thread"
                    };
                    let server = Server::start(kind);
                    let mut control = Conn::connect(server.control).await.expect("connect");
                    control.stats().await.expect("stats");
                    (Self::TowerPush(server), control)
                }
                Peer::Demo | Peer::DemoHttp2 => {
                    let server = Server::start("tower-push-poll@demo-app");
                    let mut control = Conn::connect(server.control).await.expect("connect");
                    control.stats().await.expect("stats");
                    (Self::Demo(server), control)
                }
                Peer::Nchan => {
                    let program = program.expect("Nchan is installed");
                    let nginx = nchan::Nginx::start(program, connections).await;
                    let control = Conn::connect(nginx.addr).await.expect("connect");
                    (Self::Nchan(nginx), control)
                }
            }
        }

        fn addr(&self) -> SocketAddr {
            match self {
                Self::TowerPush(server) | Self::Demo(server) => server.addr,
                Self::Nchan(nginx) => nginx.addr,
            }
        }

        /// A poll after the newest event: it parks.
        fn parked_path(&self) -> String {
            match self {
                Self::TowerPush(_) => format!("/poll?after={}", cursor(1)),
                Self::Demo(_) => "/poll".to_owned(),
                Self::Nchan(nginx) => format!("/poll?last_event_id={}", nginx.newest),
            }
        }

        /// A poll after the event before the newest: answered at once with one event.
        fn ready_path(&self) -> String {
            match self {
                Self::TowerPush(_) | Self::Demo(_) => format!("/poll?after={}", cursor(0)),
                Self::Nchan(nginx) => format!("/poll?last_event_id={}", nginx.older),
            }
        }

        /// The server's processes: ours, or nginx's master and worker.
        fn pids(&self) -> Vec<u32> {
            match self {
                Self::TowerPush(server) | Self::Demo(server) => vec![server.child.id()],
                Self::Nchan(nginx) => {
                    let mut pids = vec![nginx.master];
                    pids.extend(children(nginx.master));
                    pids
                }
            }
        }

        /// CPU time in nanoseconds: the server process, or nginx's master and worker.
        fn cpu_ns(&self) -> u64 {
            match self {
                Self::TowerPush(server) | Self::Demo(server) => cpu_ns(server.child.id()),
                Self::Nchan(nginx) => nginx.cpu_ns(),
            }
        }

        /// Resident memory in KiB: the server process, or nginx's master and worker.
        fn rss_kib(&self) -> u64 {
            match self {
                Self::TowerPush(server) | Self::Demo(server) => server.rss_kib(),
                Self::Nchan(nginx) => nginx.rss_kib(),
            }
        }

        async fn waiting(&self, control: &mut Conn) -> usize {
            match self {
                Self::TowerPush(_) | Self::Demo(_) => control.stats().await.expect("stats").0,
                Self::Nchan(_) => nchan::subscribers(control).await,
            }
        }

        async fn publish(&self, control: &mut Conn) {
            match self {
                Self::TowerPush(_) | Self::Demo(_) => {
                    control.post("/publish").await.expect("publish");
                }
                Self::Nchan(_) => {
                    nchan::publish(control, &event_json(1)).await;
                }
            }
        }
    }

    /// Who takes part in one run of the peer comparison.
    struct Sides<'a> {
        /// `None` when Nchan is not installed: tower-push is then measured alone.
        nchan: Option<&'a nchan::Program>,
        /// Who goes first at each size, alternating between runs.
        first: Peer,
        /// The open-files limit of every process: sizes above it are skipped.
        limit: u64,
    }

    impl Sides<'_> {
        /// The order of this run: tower-push and Nchan (when installed) alternate. With
        /// `others`, tower-push on one thread comes first or last, and the demo program right
        /// before or after Nchan.
        fn order(&self, others: bool) -> Vec<Peer> {
            let mut order = if self.first == Peer::TowerPush {
                vec![Peer::TowerPush, Peer::Nchan]
            } else {
                vec![Peer::Nchan, Peer::TowerPush]
            };
            if self.nchan.is_none() {
                order.retain(|&peer| peer != Peer::Nchan);
            } else if others && self.first == Peer::TowerPush {
                order.insert(1, Peer::Demo);
                order.push(Peer::TowerPushOneThread);
            } else if others {
                order.insert(1, Peer::Demo);
                order.insert(0, Peer::TowerPushOneThread);
            }
            order
        }
    }

    /// What one round of parked polls measured.
    #[derive(Clone, Copy, Debug)]
    struct Parked {
        rss_before: u64,
        rss_after: u64,
        per_poll: f64,
        p50: f64,
        p99: f64,
        max: f64,
        /// The server's CPU time from the publish until every client had its answer, per
        /// answer, in microseconds.
        cpu_us: f64,
    }

    /// One point of the scaling curve: a peer, a number of parked polls, a run.
    #[derive(Clone, Copy, Debug)]
    struct Point {
        peer: Peer,
        n: usize,
        run: usize,
        parked: Parked,
    }

    /// `--only nchan` and `--only scaling`, one run: parks polls on both peers at every size
    /// either part asks for (each size measured once and shared), then, for `nchan`, measures
    /// ready-poll throughput on both.
    async fn compare(
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
            for peer in sides.order(versus && n == settings.parked) {
                let parked = parked_peer(peer, sides.nchan, n).await;
                if matches!(peer, Peer::Demo | Peer::Nchan) && versus && n == settings.parked {
                    // Nchan's figures are also the other side of the demo program's rows.
                    let ours = peer == Peer::Demo;
                    let name = |what: &str| format!("{what}, N={n}, the demo program");
                    let memory = name("memory per parked poll");
                    table.add(&memory, "KiB", Some((1.0, false)), ours, parked.per_poll);
                    let p99 = name("fan-out, publish to last byte, p99");
                    table.add(&p99, "ms", None, ours, parked.p99);
                }
                if peer == Peer::Demo {
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
                        parked.p99,
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
                    table.add(&name("p50"), "ms", None, ours, parked.p50);
                    table.add(&name("p99"), "ms", target, ours, parked.p99);
                    table.add(&name("max"), "ms", None, ours, parked.max);
                }
                if settings.wants("scaling") && settings.scaling.contains(&n) {
                    curve.push(Point {
                        peer,
                        n,
                        run,
                        parked,
                    });
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
            for peer in sides.order(true) {
                if peer == Peer::Demo {
                    continue;
                }
                let (target, _control) = Target::start(peer, sides.nchan, connections + 64).await;
                let path = target.ready_path();
                let rps = throughput_at(settings, peer.name(), target.addr(), &path).await;
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

    /// How many polls share one HTTP/2 connection in the scaling curve: the demo's
    /// `max_concurrent_streams`.
    const H2_STREAMS: usize = 100;

    /// Opens `n / H2_STREAMS` HTTP/2 connections (prior knowledge, from the [`SOURCES`]
    /// addresses in turn) and sends [`H2_STREAMS`] requests for `path` on each, `n` in all; each
    /// task resolves with the instant its whole answer was in.
    async fn spawn_h2_clients(
        addr: SocketAddr,
        path: &str,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<std::io::Result<Instant>>> {
        use http_body_util::{BodyExt as _, Empty};
        let uri: http::Uri = format!("http://{addr}{path}").parse().expect("URI");
        let mut clients = Vec::with_capacity(n);
        for c in 0..n.div_ceil(H2_STREAMS) {
            let socket = TcpSocket::new_v4().expect("socket");
            socket.bind(SocketAddr::new(source(c), 0)).expect("bind");
            let stream = socket.connect(addr).await.expect("connect");
            stream.set_nodelay(true).expect("TCP_NODELAY");
            let (sender, connection) =
                hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .handshake(TokioIo::new(stream))
                    .await
                    .expect("HTTP/2 handshake");
            tokio::spawn(connection);
            for _ in 0..H2_STREAMS.min(n - c * H2_STREAMS) {
                let (mut sender, uri) = (sender.clone(), uri.clone());
                clients.push(tokio::spawn(async move {
                    let request = Request::get(uri)
                        .body(Empty::<Bytes>::new())
                        .expect("request");
                    let response = sender
                        .send_request(request)
                        .await
                        .map_err(std::io::Error::other)?;
                    let status = response.status();
                    response
                        .into_body()
                        .collect()
                        .await
                        .map_err(std::io::Error::other)?;
                    let done = Instant::now();
                    if status != StatusCode::OK {
                        return Err(std::io::Error::other(format!("status {status}")));
                    }
                    Ok(done)
                }));
            }
        }
        clients
    }

    /// Parks `n` polls on `peer`, each on its own connection, reads the memory growth, then
    /// publishes one event and times every client's answer.
    async fn parked_peer(peer: Peer, program: Option<&nchan::Program>, n: usize) -> Parked {
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
        if let Some(mut perf) = profile {
            let _ = Command::new("kill")
                .args(["-INT", &perf.id().to_string()])
                .status();
            let _ = perf.wait();
        }
        latencies.sort_by(f64::total_cmp);
        let parked = Parked {
            rss_before,
            rss_after,
            per_poll,
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            max: percentile(&latencies, 1.0),
            cpu_us,
        };
        eprintln!(
            "   {:17} N={n}: fan-out p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, \
             server CPU {cpu_us:.1} us per answer; \
             {per_poll:.2} KiB per parked poll (RSS {rss_before} to {rss_after} KiB)",
            peer.name(),
            parked.p50,
            parked.p99,
            parked.max,
        );
        parked
    }

    /// Prints the scaling curve (medians over runs) and writes every run's figures as CSV.
    fn print_curve(settings: &Settings, curve: &[Point], with_nchan: bool, limit: u64) {
        let median_of = |peer: Peer, n: usize, value: fn(&Parked) -> f64| {
            let values: Vec<f64> = curve
                .iter()
                .filter(|p| p.peer == peer && p.n == n)
                .map(|p| value(&p.parked))
                .collect();
            median(&values)
        };
        // The median over runs of the per-run ratio tower-push / Nchan.
        let ratio_of = |n: usize, value: fn(&Parked) -> f64| {
            let ratios: Vec<f64> = curve
                .iter()
                .filter(|p| p.peer == Peer::TowerPush && p.n == n)
                .filter_map(|ours| {
                    let theirs = curve
                        .iter()
                        .find(|p| p.peer == Peer::Nchan && p.n == n && p.run == ours.run)?;
                    Some(value(&ours.parked) / value(&theirs.parked))
                })
                .collect();
            median(&ratios)
        };
        let p50: fn(&Parked) -> f64 = |p| p.p50;
        let p99: fn(&Parked) -> f64 = |p| p.p99;
        let memory: fn(&Parked) -> f64 = |p| p.per_poll;
        println!();
        println!(
            "How cost grows with the number of parked polls: fan-out after one publish (ms, \
             publish to last byte) and memory per parked poll (KiB, RSS growth / N); medians of \
             {} runs, ratios tower-push / Nchan as above.",
            settings.runs
        );
        println!();
        println!(
            "| N | tower-push p50 | p99 | KiB/poll | Nchan p50 | p99 | KiB/poll | \
             p99 ratio | memory ratio |"
        );
        println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        if !with_nchan {
            println!("| Nchan peer skipped (see above) | | | | | | | | |");
        }
        for &n in &settings.scaling {
            if !curve.iter().any(|p| p.peer == Peer::TowerPush && p.n == n) {
                println!(
                    "| {n} | skipped: the open-files limit is {limit}, too few for {n} \
                     connections in one process | | | | | | | |"
                );
                continue;
            }
            let mut line = format!("| {n} ");
            for value in [p50, p99, memory] {
                line += &format!("| {} ", figure(median_of(Peer::TowerPush, n, value)));
            }
            if with_nchan {
                for value in [p50, p99, memory] {
                    line += &format!("| {} ", figure(median_of(Peer::Nchan, n, value)));
                }
                for value in [p99, memory] {
                    line += &format!("| {:.2}x ", ratio_of(n, value));
                }
            } else {
                line += "| | | | | ";
            }
            println!("{line}|");
        }
        let h2: Vec<usize> = settings
            .scaling
            .iter()
            .copied()
            .filter(|&n| curve.iter().any(|p| p.peer == Peer::DemoHttp2 && p.n == n))
            .collect();
        if !h2.is_empty() {
            println!();
            println!(
                "The same over HTTP/2: the demo program, {H2_STREAMS} parked polls on each \
                 connection (prior knowledge); medians of {} runs.",
                settings.runs
            );
            println!();
            println!("| N | connections | p50 | p99 | KiB/poll | server CPU per answer (us) |");
            println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
            let cpu: fn(&Parked) -> f64 = |p| p.cpu_us;
            for n in h2 {
                let mut line = format!("| {n} | {} ", n.div_ceil(H2_STREAMS));
                for value in [p50, p99, memory, cpu] {
                    line += &format!("| {} ", figure(median_of(Peer::DemoHttp2, n, value)));
                }
                println!("{line}|");
            }
        }
        let path = settings.csv.clone().unwrap_or_else(|| {
            // `<target>/release/deps/push-<hash>`
            let exe = std::env::current_exe().expect("own executable");
            let target = exe.ancestors().nth(3).unwrap_or(Path::new("target"));
            target.join("push-scaling.csv")
        });
        let mut csv = String::from(
            "peer,n,run,p50_ms,p99_ms,max_ms,kib_per_poll,rss_before_kib,rss_after_kib,\
             cpu_us_per_answer\n",
        );
        for point in curve {
            let p = &point.parked;
            csv += &format!(
                "{},{},{},{:.3},{:.3},{:.3},{:.3},{},{},{:.2}\n",
                point.peer.name(),
                point.n,
                point.run + 1,
                p.p50,
                p.p99,
                p.max,
                p.per_poll,
                p.rss_before,
                p.rss_after,
                p.cpu_us,
            );
        }
        match std::fs::write(&path, csv) {
            Ok(()) => println!("\nscaling curve written to {}", path.display()),
            Err(err) => eprintln!("could not write {}: {err}", path.display()),
        }
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

/// `--only durable`: tower-push's Durable Streams service (`DurableStreams` over a
/// `MemoryStore`) against the protocol's other servers, each in a child process on a free
/// loopback port:
///
/// - `durable-streams-server`, the Rust server on crates.io, found in `PATH` or
///   `~/.cargo/bin` (`DURABLE_STREAMS_SERVER` overrides where); and
/// - `@durable-streams/server`, the Node reference server, pinned in
///   `benches/durable-peers/package.json` and started by `benches/durable-peers/serve.mjs`
///   (after `npm ci` there; `NODE` overrides which `node`).
///
/// A peer that is not installed is skipped, and the table says why. Every server holds a long
/// poll for 600 s, so no reader times out while the others park. Readers park with
/// `GET <stream>?offset=<tail>&live=long-poll`, the tail being the `Stream-Next-Offset` of the
/// seed append. tower-push and the Node server count their held polls (tower-push's
/// `DurableStreams::parked_polls`, the Node server's list of pending polls, both answered on a
/// control port); for the Rust server, which has no such counter, the bench waits until every
/// reader has sent its request and then a settle delay of 1 s plus 0.1 ms per reader.
#[cfg(feature = "durable")]
mod durable {
    use super::*;

    /// How long every server holds a long poll.
    const HOLD: Duration = Duration::from_secs(600);

    /// The path of the bench stream on every server.
    const STREAM: &str = "/v1/stream/bench";

    /// The body of every append: one small JSON message.
    const MESSAGE: &str = r#"{"n":1}"#;

    /// `push serve durable`: `DurableStreams` over a `MemoryStore` on the first port, and
    /// `GET /stats` (the number of held polls) on the second, served like every other server.
    pub(super) fn serve() {
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
            let main = server::listen();
            let control = server::listen();
            let port = |l: &TcpListener| l.local_addr().expect("local address").port();
            println!("{} {}", port(&main), port(&control));
            std::io::stdout().flush().expect("stdout");
            let store = tower_push::durable::MemoryStore::new();
            let service = tower_push::durable::DurableStreams::builder(store)
                .prefix("/v1/stream")
                .long_poll(LongPollLayer::builder().hold_timeout(HOLD))
                .build()
                .expect("durable settings");
            tokio::spawn(server::serve(control, {
                let service = service.clone();
                hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let answer = text(format!("{} 0", service.parked_polls()));
                    std::future::ready(Ok::<_, Infallible>(answer))
                })
            }));
            server::serve(
                main,
                hyper::service::service_fn(move |req| service.clone().oneshot(req)),
            )
            .await;
        });
    }

    /// The servers of `--only durable`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Kind {
        TowerPush,
        /// `durable-streams-server` from crates.io.
        Rust,
        /// `@durable-streams/server` from npm.
        Node,
    }

    impl Kind {
        pub(super) fn name(self) -> &'static str {
            match self {
                Self::TowerPush => "tower-push",
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
        let output = Command::new(&program)
            .arg("--version")
            .output()
            .map_err(|e| format!("{} --version: {e}", program.display()))?;
        let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        Ok(Program {
            kind: Kind::Rust,
            program,
            version,
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
        })
    }

    /// A running server of `--only durable`, and whether it counts its held polls on its
    /// control port.
    pub(super) struct Running {
        server: Server,
        counts: bool,
    }

    impl Running {
        pub(super) async fn start(kind: Kind, program: Option<&Program>) -> Self {
            match kind {
                Kind::TowerPush => Self {
                    server: Server::start("durable"),
                    counts: true,
                },
                Kind::Node => {
                    let program = program.expect("the Node peer is installed");
                    let mut command = Command::new(&program.program);
                    command
                        .arg(node_dir().join("serve.mjs"))
                        .arg(HOLD.as_millis().to_string())
                        .current_dir(node_dir());
                    Self {
                        server: Server::spawn(command),
                        counts: true,
                    }
                }
                Kind::Rust => {
                    let program = program.expect("durable-streams-server is installed");
                    Self {
                        server: start_rust(program).await,
                        counts: false,
                    }
                }
            }
        }

        pub(super) fn addr(&self) -> SocketAddr {
            self.server.addr
        }

        pub(super) fn rss_kib(&self) -> u64 {
            self.server.rss_kib()
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
            tail.expect("the append answers Stream-Next-Offset")
        }

        /// Waits until `n` readers are parked: counted by the server, or for a server that
        /// cannot count, sent by the clients and a settle delay later.
        pub(super) async fn wait_parked(&self, sent: &AtomicUsize, n: usize) {
            let deadline = Instant::now() + Duration::from_secs(120);
            if self.counts {
                let mut control = Conn::connect(self.server.control).await.expect("connect");
                super::driver::wait_parked(&mut control, n).await;
            } else {
                loop {
                    let done = sent.load(Ordering::Relaxed);
                    if done >= n {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "only {done} of {n} readers sent their request after 120 s"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let settle = Duration::from_secs(1) + Duration::from_micros(100 * n as u64);
                tokio::time::sleep(settle).await;
            }
        }
    }

    /// Starts `durable-streams-server` on a free loopback port, holding long polls for
    /// [`HOLD`], and waits until it accepts connections.
    async fn start_rust(program: &Program) -> Server {
        let port = nchan::free_port();
        let child = Command::new(&program.program)
            .env("DS_SERVER__BIND_ADDRESS", format!("127.0.0.1:{port}"))
            .env("DS_STORAGE__MODE", "memory")
            .env(
                "DS_TRANSPORT__CONNECTION__LONG_POLL_TIMEOUT_SECS",
                HOLD.as_secs().to_string(),
            )
            // Logging every request would cost it what the others do not pay.
            .env("DS_OBSERVABILITY__RUST_LOG", "warn")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start durable-streams-server");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "durable-streams-server did not listen on {addr} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Server {
            child,
            addr,
            control: addr,
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
    pub(super) async fn fanout(kind: Kind, program: Option<&Program>, n: usize) -> Fanout {
        let running = Running::start(kind, program).await;
        let tail = running.create().await;
        let rss_before = running.rss_kib();
        let request: Arc<[u8]> =
            get_request(&format!("{STREAM}?offset={tail}&live=long-poll"), None).into();
        let sent = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Semaphore::new(256));
        let addr = running.addr();
        let readers: Vec<_> = (0..n)
            .map(|i| {
                let (gate, request, sent) = (gate.clone(), request.clone(), sent.clone());
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
            p50: driver::percentile(&latencies, 0.50),
            p99: driver::percentile(&latencies, 0.99),
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

    /// Appends `total` messages to a fresh stream on `kind` over `connections` keep-alive
    /// connections, each sending its next append when the last is answered; appends per second.
    pub(super) async fn appends(
        kind: Kind,
        program: Option<&Program>,
        connections: usize,
        total: usize,
    ) -> f64 {
        let running = Running::start(kind, program).await;
        running.create().await;
        let addr = running.addr();
        let request: Arc<[u8]> = append_request().into();
        let mut conns = Vec::with_capacity(connections);
        for _ in 0..connections {
            conns.push(Conn::connect(addr).await.expect("connect"));
        }
        let start = Instant::now();
        let tasks: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, mut conn)| {
                let request = request.clone();
                // The first `total % connections` connections send one more.
                let count = total / connections + usize::from(i < total % connections);
                tokio::spawn(async move {
                    for _ in 0..count {
                        let (status, _) = exchange(&mut conn, &request).await;
                        assert!(matches!(status, 200 | 204), "append: {status}");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("append task");
        }
        let rate = total as f64 / start.elapsed().as_secs_f64();
        eprintln!(
            "   {:24} {total} appends over {connections} connection(s): {rate:.0}/s",
            kind.name()
        );
        rate
    }
}
