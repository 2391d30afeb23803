//! The demo's routes: the page, long polling, streaming and publishing on the topics of the
//! embedded log (`default` unless a request names others). `main.rs` serves them; the browser
//! test serves the same routes in-process.
// Each includer uses a part.
#![allow(dead_code)]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tower::ServiceExt;
use tower_push::format::{AutoFormat, Framing, SseFormat};
use tower_push::io::{Protocol, WriteTimeout};
use tower_push::memory::Topic;
use tower_push::source::{Outcome, Subscribe};
use tower_push::{
    BoxError, ChunkedStream, ChunkedStreamLayer, ConfigError, EventData, LongPoll, LongPollLayer,
    MemoryLog, Shutdown,
};

/// The page at `GET /`: a publish form and two live panes, one on `EventSource`, one on a
/// long-poll loop.
pub(crate) const PAGE: &str = include_str!("index.html");

/// The largest event a client may publish.
const MAX_EVENT_BYTES: usize = 64 * 1024;

/// How many tasks a runtime thread runs between two looks at the network, where tokio's default
/// is 61.
///
/// One publish wakes every poll parked on its topic at once: 10,000 tasks, each with an answer
/// to write. Looking at the network every 61 of them, a runtime thread also picks up, between
/// the answers, the work that those answers cause (clients that read theirs and close or send
/// their next request), and the last answers wait behind it. Looking every 1,024 tasks, the
/// answers go out first: in the bench (three runs each), the fan-out p99 to 10,000 parked polls
/// went from 1.46x nginx + Nchan's to 1.19x with the interval at 1,000, and the server's CPU
/// time per answer fell by a third (BENCHMARKS.md). A thread with nothing left to run looks at
/// the network at once, as before, so this delays new work only while a fan-out is being
/// written: by at most 1,024 short tasks.
pub(crate) const EVENT_INTERVAL: u32 = 1024;

/// The demo's runtime: tokio's multi-threaded runtime with I/O and timers, and
/// [`EVENT_INTERVAL`].
pub(crate) fn runtime() -> tokio::runtime::Builder {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all().event_interval(EVENT_INTERVAL);
    runtime
}

/// The demo's settings, with the command line's defaults.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// How long a poll is held without events before it answers `204`.
    pub(crate) hold: Duration,
    /// How many events the log keeps.
    pub(crate) retention: usize,
    /// How long a stream may stay silent before it sends a heartbeat.
    pub(crate) heartbeat: Duration,
    /// How long a stream lives before it ends and the client reconnects.
    pub(crate) max_stream: Duration,
    /// The `retry:` hint of SSE streams: how long `EventSource` waits before it reconnects.
    pub(crate) sse_retry: Duration,
    /// The most polls held at once, and the most streams open at once; beyond, `503 overloaded`
    /// with a `Retry-After`. Over HTTP/1.1 each keeps its connection, and so a file descriptor:
    /// each kind may take a quarter of the open-files limit (256 each under the usual 1024), and
    /// the other half is left for requests that answer at once, publishers and the listener, so
    /// that the server never runs out of descriptors and fails to accept anyone.
    pub(crate) max_held: usize,
    /// How long a client may take to send a request head: a slowloris client, which sends its
    /// head a byte at a time or stops halfway, is closed then. 10 s: a real client sends its
    /// head at once, even on a slow network.
    pub(crate) header_read: Duration,
    /// How long a write may make no progress: a client that stopped reading would otherwise
    /// keep the answer or frames waiting for it in memory. 30 s: longer than the stalls of a
    /// client that still reads; parked polls and quiet streams write nothing and are never cut.
    pub(crate) write_stall: Duration,
    /// How long open connections get to close after the stop: 10 s, enough to write the
    /// answered polls and ended streams, and well within the 30 s an orchestrator usually waits
    /// between SIGTERM and SIGKILL.
    pub(crate) drain: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            hold: Duration::from_secs(25),
            retention: 1024,
            heartbeat: Duration::from_secs(15),
            max_stream: Duration::from_secs(300),
            sse_retry: Duration::from_secs(1),
            max_held: usize::try_from(open_files() / 4).unwrap_or(usize::MAX),
            header_read: Duration::from_secs(10),
            write_stall: Duration::from_secs(30),
            drain: Duration::from_secs(10),
        }
    }
}

/// The soft limit on open files of this process, which bounds its connections; 1024, the usual
/// default, where it cannot be read.
fn open_files() -> u64 {
    #[cfg(unix)]
    let limit = rlimit::Resource::NOFILE.get_soft().ok();
    #[cfg(not(unix))]
    let limit = None;
    limit.unwrap_or(1024)
}

/// The demo's command line: where to listen, and the [`Settings`] a user may change. The
/// programs flatten it into their own `clap` parser, beside their own flags.
#[derive(clap::Args, Debug)]
pub(crate) struct Flags {
    /// Where to listen; HOST may be a name such as `localhost`
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:3000")]
    pub(crate) addr: String,
    /// How long a poll without events is held before it answers 204, in milliseconds
    #[arg(long, value_name = "MILLIS", default_value_t = millis(Settings::default().hold))]
    hold_ms: u64,
    /// How many events the log keeps per topic
    #[arg(long, value_name = "EVENTS", default_value_t = Settings::default().retention)]
    retention: usize,
    /// How long a quiet stream waits before it sends a heartbeat, in milliseconds
    #[arg(long, value_name = "MILLIS", default_value_t = millis(Settings::default().heartbeat))]
    heartbeat_ms: u64,
    /// How long a stream lives before it ends and the client resumes, in milliseconds
    #[arg(long, value_name = "MILLIS", default_value_t = millis(Settings::default().max_stream))]
    max_stream_ms: u64,
    /// The `retry:` hint of SSE streams: how long EventSource waits before it reconnects, in
    /// milliseconds
    #[arg(long, value_name = "MILLIS", default_value_t = millis(Settings::default().sse_retry))]
    sse_retry_ms: u64,
}

impl Flags {
    /// The settings the flags give, the others at their defaults.
    pub(crate) fn settings(&self) -> Settings {
        Settings {
            hold: Duration::from_millis(self.hold_ms),
            retention: self.retention,
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            max_stream: Duration::from_millis(self.max_stream_ms),
            sse_retry: Duration::from_millis(self.sse_retry_ms),
            ..Settings::default()
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Exits as `clap` does for a bad command line, for a problem found after parsing (a setting
/// the layers refuse, an address that cannot be bound): the message and the usage on stderr,
/// status 2.
pub(crate) fn exit_usage<P: clap::CommandFactory>(problem: impl std::fmt::Display) -> ! {
    P::command()
        .error(clap::error::ErrorKind::ValueValidation, problem)
        .exit()
}

/// The body of every demo answer.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The most topics clients may create by publishing.
const MAX_TOPICS: usize = 256;

/// The demo's routes over one log: the `default` topic, and any topics a request names.
#[derive(Clone, Debug)]
pub(crate) struct Demo {
    log: MemoryLog,
    topic: Topic,
    poll: LongPoll<Topic>,
    stream: ChunkedStream<Topic>,
    /// The same layers over the whole log, for requests that name their topics
    /// (`?topics=a,b`): one request, several topics, one composite cursor.
    many_poll: LongPoll<MemoryLog>,
    many_stream: ChunkedStream<MemoryLog>,
    /// The `stats` topic: one snapshot of the server's numbers a second, for the page's panel.
    stats: Topic,
    stats_stream: ChunkedStream<Topic>,
}

impl Demo {
    /// Builds the log and both layers from `settings`; `shutdown` drains them.
    pub(crate) fn new(settings: &Settings, shutdown: &Shutdown) -> Result<Self, ConfigError> {
        let log = MemoryLog::builder()
            .retention(settings.retention)
            .max_topics(MAX_TOPICS)
            .build()?;
        let (poll, stream) = layers(settings, shutdown)?;
        let topic = log.topic("default");
        // The page's third pane follows `default` and `news`; subscribing creates no topic.
        log.topic("news");
        let stats = log.topic("stats");
        Ok(Self {
            many_poll: poll.layer(log.clone()),
            many_stream: stream.layer(log.clone()),
            poll: poll.layer(topic.clone()),
            stats_stream: stream.layer(stats.clone()),
            stream: stream.layer(topic.clone()),
            topic,
            stats,
            log,
        })
    }

    /// Publishes a snapshot of the server's numbers on the `stats` topic every `every`, for as
    /// long as the returned task runs: held polls, open streams, events published per second,
    /// and (with the `metrics` feature) the p99 from publish to client.
    pub(crate) fn spawn_stats(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let demo = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut last = demo.topic.head().seq();
            loop {
                ticks.tick().await;
                let head = demo.topic.head().seq();
                let per_second = (head - last) as f64 / every.as_secs_f64();
                last = head;
                let snapshot = serde_json::json!({
                    "parked_polls": demo.poll.parked_polls(),
                    "open_streams": demo.stream.open_streams(),
                    "events_per_second": per_second,
                    "p99_ms": metrics::p99_publish_to_write_ms(),
                });
                let data = EventData::from_serialize(&snapshot).expect("a JSON object");
                demo.stats.publish(data);
            }
        })
    }

    /// The log behind the routes.
    pub(crate) fn log(&self) -> &MemoryLog {
        &self.log
    }

    /// The topic the routes serve.
    pub(crate) fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Answers one request.
    ///
    /// The route is chosen here, before the answer's future is made, so that the future holds
    /// only what its route needs: hyper keeps it for as long as the request lasts, which for a
    /// held poll or an open stream is minutes. One `async fn` over every route would be as large
    /// as its largest route plus the whole `Demo` in every held poll (4.4 KB where the poll
    /// needs a tenth of that; the bench's `--only stacks` measures it).
    pub(crate) fn handle<B>(&self, req: Request<B>) -> Answer
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        match req.uri().path() {
            "/stats" => return answer(self.stats_stream.clone().oneshot(req)),
            "/metrics" => return Box::pin(std::future::ready(metrics::scrape())),
            _ => {}
        }
        // `POST /publish?topic=NAME` publishes on that topic, created if needed.
        let target = match query_param(req.uri(), "topic") {
            Some(name) if req.uri().path() == "/publish" => self.publish_topic(name),
            _ => Ok(self.topic.clone()),
        };
        let publish = move |body| {
            std::future::ready(match target {
                Ok(topic) => publish_to(&topic, body),
                Err((status, code, message)) => error(status, code, &message),
            })
        };
        if query_param(req.uri(), "topics").is_some() {
            route(req, &self.many_poll, &self.many_stream, publish)
        } else {
            route(req, &self.poll, &self.stream, publish)
        }
    }

    /// The topic `name` to publish on: created if it does not exist yet, within [`MAX_TOPICS`].
    /// On refusal, the status, code and message of the answer.
    fn publish_topic(&self, name: &str) -> Result<Topic, (StatusCode, &'static str, String)> {
        let allowed =
            |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'~');
        if name.is_empty() || name.len() > 128 || !name.bytes().all(allowed) {
            let message = "a topic is 1 to 128 ASCII letters, digits or -_.:~";
            return Err((StatusCode::BAD_REQUEST, "invalid_topic", message.to_owned()));
        }
        let full = |err: tower_push::memory::TooManyTopics| {
            let status = StatusCode::SERVICE_UNAVAILABLE;
            (status, "topics_full", err.to_string())
        };
        self.log.try_topic(name).map_err(full)
    }
}

/// The raw value of the query parameter `name`, if the request has one.
fn query_param<'a>(uri: &'a http::Uri, name: &str) -> Option<&'a str> {
    uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// The demo's metrics: a Prometheus recorder installed once per process, with the `metrics`
/// feature; without it, `/metrics` says how to get them.
pub(crate) mod metrics {
    use super::Body;
    use http::Response;

    #[cfg(feature = "metrics")]
    fn handle() -> &'static metrics_exporter_prometheus::PrometheusHandle {
        static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
            std::sync::OnceLock::new();
        HANDLE.get_or_init(|| {
            let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .expect("no other metrics recorder in this process");
            tower_push::metrics::describe();
            handle
        })
    }

    /// Installs the recorder (at start, so that nothing recorded before it is lost).
    pub(crate) fn install() {
        #[cfg(feature = "metrics")]
        handle();
    }

    /// `GET /metrics`: every metric in Prometheus's text format.
    pub(crate) fn scrape() -> Response<Body> {
        #[cfg(feature = "metrics")]
        {
            use http_body_util::BodyExt;
            let text = handle().render();
            let mut response = Response::new(http_body_util::Full::from(text).boxed_unsync());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        #[cfg(not(feature = "metrics"))]
        {
            let message =
                "built without the `metrics` feature: cargo run --example demo --features metrics";
            super::error(http::StatusCode::NOT_FOUND, "metrics_off", message)
        }
    }

    /// The p99 from publish to client over both layers, in milliseconds, from the recorder's
    /// summaries; `None` without the feature or before any event was delivered.
    pub(crate) fn p99_publish_to_write_ms() -> Option<f64> {
        #[cfg(feature = "metrics")]
        {
            let handle = handle();
            handle.run_upkeep();
            let quantile = r#"quantile="0.99""#;
            handle
                .render()
                .lines()
                .filter(|line| line.starts_with(tower_push::metrics::PUBLISH_TO_WRITE))
                .filter(|line| line.contains(quantile))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .filter(|seconds| seconds.is_finite())
                .reduce(f64::max)
                .map(|seconds| seconds * 1000.0)
        }
        #[cfg(not(feature = "metrics"))]
        None
    }
}

/// Both layers with the demo's settings, drained by `shutdown`.
pub(crate) fn layers(
    settings: &Settings,
    shutdown: &Shutdown,
) -> Result<(LongPollLayer, ChunkedStreamLayer), ConfigError> {
    let poll = LongPollLayer::builder()
        .hold_timeout(settings.hold)
        .max_parked(settings.max_held)
        .shutdown(shutdown.clone())
        .build()?;
    let sse = SseFormat::new().retry(settings.sse_retry);
    let stream = ChunkedStreamLayer::builder()
        .heartbeat_interval(settings.heartbeat)
        .max_lifetime(settings.max_stream)
        .max_streams(settings.max_held)
        .format(AutoFormat::new(Framing::Ndjson).sse(sse))
        .shutdown(shutdown.clone())
        .build()?;
    Ok((poll, stream))
}

/// The future of one demo answer.
pub(crate) type Answer =
    std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>;

/// A layer's answer (the layers never fail) as a demo answer.
fn answer<F, L>(layer_answer: F) -> Answer
where
    F: std::future::Future<Output = Result<Response<L>, Infallible>> + Send + 'static,
    L: http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    use futures_util::FutureExt as _;
    Box::pin(layer_answer.map(|response| match response {
        Ok(response) => response.map(|body| body.boxed_unsync()),
        Err(never) => match never {},
    }))
}

/// The demo's routes over any event source: the page, `/poll`, `/stream`, and `/publish`, which
/// reads the body and hands it to `publish`. Like [`Demo::handle`], it routes before it makes
/// the answer's future.
pub(crate) fn route<S, B, P, F>(
    req: Request<B>,
    poll: &LongPoll<S>,
    stream: &ChunkedStream<S>,
    publish: P,
) -> Answer
where
    S: tower::Service<Subscribe, Response = Outcome> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::error::Error + Send + Sync + 'static,
    P: FnOnce(Bytes) -> F + Send + 'static,
    F: std::future::Future<Output = Response<Body>> + Send,
{
    let ready = |response| -> Answer { Box::pin(std::future::ready(response)) };
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/") => ready(page()),
        // Any method: the layers answer GET and HEAD, and 405 with `Allow` otherwise.
        (_, "/poll") => answer(poll.clone().oneshot(req)),
        (_, "/stream") => answer(stream.clone().oneshot(req)),
        (&Method::POST, "/publish") => Box::pin(async move {
            match read_event(req).await {
                Ok(body) => publish(body).await,
                Err(refused) => refused,
            }
        }),
        (_, "/") => ready(not_allowed("GET, HEAD", "use GET /")),
        (_, "/publish") => ready(not_allowed("POST", "use POST /publish")),
        _ => ready(error(StatusCode::NOT_FOUND, "not_found", "no such route")),
    }
}

/// `405 method_not_allowed` with the `Allow` header the status requires.
fn not_allowed(allow: &'static str, message: &str) -> Response<Body> {
    let mut refused = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
    );
    let allow = HeaderValue::from_static(allow);
    refused.headers_mut().insert(header::ALLOW, allow);
    refused
}

/// Reads the body of a publish request, at most [`MAX_EVENT_BYTES`]; the error is the answer.
pub(crate) async fn read_event<B>(req: Request<B>) -> Result<Bytes, Response<Body>>
where
    B: http_body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(req.into_body(), MAX_EVENT_BYTES)
        .collect()
        .await
    {
        Ok(body) => Ok(body.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            let message = format!("an event is at most {MAX_EVENT_BYTES} bytes");
            Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "event_too_large",
                &message,
            ))
        }
        Err(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "body_error",
            "could not read the body",
        )),
    }
}

/// Publishes one event's JSON data on `topic`: `{"id":"<cursor>"}`, or `400 invalid_json`.
pub(crate) fn publish_to(topic: &Topic, body: Bytes) -> Response<Body> {
    match EventData::from_json(body) {
        Ok(data) => json(
            StatusCode::OK,
            format!(r#"{{"id":"{}"}}"#, topic.publish(data)),
        ),
        Err(err) => error(StatusCode::BAD_REQUEST, "invalid_json", &err.to_string()),
    }
}

fn page() -> Response<Body> {
    let mut response = Response::new(Full::from(PAGE).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::from(body).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A JSON error answer: `{"error":"<code>","message":"<message>"}`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": code, "message": message });
    json(status, body.to_string())
}

/// Serves `demo` with plain hyper (HTTP/1.1 and HTTP/2 on one port) until `stop` resolves, then
/// drains: `shutdown` answers held polls and ends streams, and the function returns when every
/// connection has closed (`true`) or the drain window of `settings` has passed (`false`).
pub(crate) async fn serve(
    listener: TcpListener,
    demo: Demo,
    settings: &Settings,
    shutdown: Shutdown,
    stop: impl std::future::Future<Output = ()>,
) -> bool {
    let handle = move |req| demo.handle(req);
    serve_with(listener, handle, settings, shutdown, stop).await
}

/// Like [`serve`], for any handler.
pub(crate) async fn serve_with<H, F>(
    listener: TcpListener,
    handle: H,
    settings: &Settings,
    shutdown: Shutdown,
    stop: impl std::future::Future<Output = ()>,
) -> bool
where
    H: Fn(Request<hyper::body::Incoming>) -> F + Clone + Send + 'static,
    F: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    use hyper::server::conn::{http1, http2};
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut h1 = http1::Builder::new();
    // hyper enforces the header-read timeout only with a timer.
    h1.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    // An HTTP/2 client multiplexes its polls and streams over one connection: at most 100 at a
    // time (hyper's default is 200), so that one connection cannot take a large share of the
    // caps of the layers.
    h2.timer(TokioTimer::new()).max_concurrent_streams(100);
    let (header_read, write_stall) = (settings.header_read, settings.write_stall);
    let mut stop = std::pin::pin!(stop);
    loop {
        let stream = tokio::select! {
            stream = accept(&listener) => stream,
            () = &mut stop => break,
        };
        // Without TCP_NODELAY a small write waits for the ACK of the previous one (Nagle), and
        // a push message can sit in the kernel for up to 40 ms. hyper has no server switch for
        // it: it is set on each accepted socket.
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        let service = hyper::service::service_fn(move |req| {
            let answer = handle(req);
            async move { Ok::<_, Infallible>(answer.await) }
        });
        let (h1, h2, watcher) = (h1.clone(), h2.clone(), graceful.watcher());
        tokio::spawn(async move {
            // Which protocol, told from the first bytes without reading them, so that each
            // connection gets only its own protocol's machinery (hyper-util's `auto` builder
            // reads them into a buffer of its own, about 7 KB more per connection). A client
            // that sends nothing, or a part of the HTTP/2 preface, within the header-read
            // timeout is closed here.
            let Some(protocol) = Protocol::sniff(&stream, header_read).await else {
                return;
            };
            let io = TokioIo::new(WriteTimeout::new(stream, write_stall));
            // The connection gets a task of its own, which holds the connection and nothing
            // else: this task, which also holds both builders and the sniffing, ends here, and
            // an HTTP/1.1 connection is not made as large as an HTTP/2 one.
            match protocol {
                Protocol::Http2 => drop(tokio::spawn(
                    watcher.watch(h2.serve_connection(io, service)),
                )),
                _ => drop(tokio::spawn(
                    watcher.watch(h1.serve_connection(io, service)),
                )),
            }
        });
    }
    // Held polls answer, streams send their final message, then connections close.
    shutdown.trigger();
    drop(listener);
    timeout(settings.drain, graceful.shutdown()).await.is_ok()
}

/// The next connection. When accepting fails (out of file descriptors, say), waits for open
/// connections to close before trying again, 100 ms and then twice as long each time up to 1 s,
/// with one log line per wait, rather than failing again at once in a busy loop.
async fn accept(listener: &TcpListener) -> TcpStream {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return stream,
            Err(err) => {
                eprintln!("accept failed: {err}; trying again in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Resolves on Ctrl-C, or on SIGTERM where there is one.
pub(crate) async fn ctrl_c_or_sigterm() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
