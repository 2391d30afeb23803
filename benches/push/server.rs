//! The servers under test. Each runs in its own process (`push serve <kind>`), with two
//! listeners: the service under test alone on the first, so that nothing else shares its
//! connection futures, and a control service (publish, stats) on the second. The process prints
//! both ports on its first line and exits when its standard input closes (the driver died) or it
//! is killed.
//!
//! | kind | service under test |
//! | --- | --- |
//! | `tower-push-poll` | `LongPollLayer` over a `MemoryLog` topic |
//! | `tower-push-poll-1-thread` | the same on one runtime worker thread (nginx: one worker) |
//! | `tower-push-poll-authorized` | `tower-push-poll` with an `authorize` check: the request's `token` query parameter looked up in a set of 1,000 tokens; checked again every 1,200 s, longer than the hold, as the default 60 s is longer than a 25 s hold |
//! | `tower-push-poll-authorized-async` | the same check answered by a future (`Check::new`) |
//! | `tower-push-poll-authorized-rechecked` | the same check at once, again every 60 s while held (shorter than the hold) |
//! | `tower-push-stream` | `ChunkedStreamLayer` (SSE) over the same kind of topic |
//! | `tower-push-ndjson` | `ChunkedStreamLayer` (NDJSON) inside tower-http's `CompressionLayer`, which compresses nothing here |
//! | `tower-push-ndjson-gzip` | the same, compressing every stream with gzip at tower-http's defaults |
//! | `pending` | a hyper handler that never answers |
//! | `notify` | a hyper handler that waits on a `Notify`, then answers the newest event from a shared `Mutex<Vec<Bytes>>` |
//! | `ready` | a hyper handler that answers tower-push's bytes at once |
//! | `axum-sse` | axum's `Sse` over a `tokio::sync::broadcast` receiver |

use std::convert::Infallible;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::response::sse::{Event as SseEvent, Sse};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{broadcast, Notify};
use tower::{Layer, ServiceExt};
use tower_push::authorize::{Access, Check, Verdict};
use tower_push::format::SseFormat;
use tower_push::{ChunkedStreamLayer, Epoch, EventData, LongPollLayer, MemoryLog};

use crate::{cursor, event_json, EPOCH, SEED};

pub(super) fn run(kind: &str) {
    std::thread::spawn(|| {
        // The driver holds our stdin; when it goes away, so do we.
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
    // Every server, tower-push's and the baselines', runs on the runtime the programs use.
    let mut runtime = tower_push::server::runtime();
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
                serve_on_stack(&stack, main, poll).await;
            }
            "tower-push-poll-authorized"
            | "tower-push-poll-authorized-async"
            | "tower-push-poll-authorized-rechecked" => {
                let wait = kind.ends_with("-async");
                let every = match kind.ends_with("-rechecked") {
                    true => Duration::from_secs(60),
                    false => Duration::from_secs(1200),
                };
                let tokens: Arc<std::collections::HashSet<String>> =
                    Arc::new((0..1000).map(|i| format!("token-{i}")).collect());
                let check = move |request: &http::request::Parts, _: Option<&str>, _: Access| {
                    let token = request
                        .uri
                        .query()
                        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("token=")));
                    let verdict = match token {
                        Some(token) if tokens.contains(token) => Verdict::Allow,
                        Some(_) => Verdict::Deny,
                        None => Verdict::Unauthenticated,
                    };
                    match wait {
                        true => Check::new(async move { verdict }),
                        false => Check::ready(verdict),
                    }
                };
                let poll = LongPollLayer::builder()
                    .hold_timeout(Duration::from_secs(600))
                    .authorize(check)
                    .reauthorize_every(every)
                    .build()
                    .expect("long-poll settings")
                    .layer(state.topic.clone());
                serve_on_stack(&stack, main, poll).await;
            }
            "tower-push-topics" => {
                let poll = LongPollLayer::builder()
                    .hold_timeout(Duration::from_secs(600))
                    .max_topics_per_request(64)
                    .build()
                    .expect("long-poll settings")
                    .layer(state.log.clone());
                serve_on_stack(&stack, main, poll).await;
            }
            "tower-push-ndjson" | "tower-push-ndjson-gzip" => {
                let stream = ChunkedStreamLayer::builder()
                    .heartbeat_interval(Duration::from_secs(60))
                    .max_lifetime(Duration::from_secs(3600))
                    .build()
                    .expect("stream settings")
                    .layer(state.topic.clone());
                // tower-http's compression with its defaults: gzip at its default level and
                // window, on NDJSON, which its default predicate compresses.
                let gzip = kind.ends_with("-gzip");
                let compressed = tower_http::compression::CompressionLayer::new()
                    .gzip(true)
                    .compress_when(
                        move |_: http::StatusCode,
                              _: http::Version,
                              _: &http::HeaderMap,
                              _: &http::Extensions| gzip,
                    )
                    .layer(stream);
                serve(
                    main,
                    hyper::service::service_fn(move |req| compressed.clone().oneshot(req)),
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
                                    let position = tower_push::source::Position::After(cursor(1));
                                    let subscribe =
                                        tower_push::source::Subscribe::new(position, 256, parts);
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
/// service at `/poll`), and `server` (`tower_push::server::Server`, the programs' serving
/// loop: the protocol told from the first bytes, hyper's own builder for it, deadlines, caps
/// and graceful shutdown).
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
                    let service = hyper::service::service_fn(move |req| poll.clone().oneshot(req));
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
        "server" => {
            let server = tower_push::server::Server::new();
            let _ = server.serve(listener, poll, std::future::pending()).await;
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

    /// The control service: `POST /publish` (one event), `POST /publish-order?i=` (the order
    /// feed's event `i`), `POST /burst?n=` (as fast as
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
            (&Method::POST, "/publish-order") => {
                let i = query_u64(&req, "i");
                self.publish(i, crate::order_json(i as usize));
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

pub(super) fn text(body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::new(Full::new(body.into()))
}
