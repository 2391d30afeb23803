//! What the integration tests share: a real hyper server on 127.0.0.1:0, two HTTP/1.1 clients over
//! real sockets (hyper's, and a raw one that shows exactly what went over the wire), waits, and
//! the harness for tests that need an external program ([`external`]).
#![allow(dead_code, unreachable_pub)]

pub mod decode;
pub mod nginx;
#[cfg(feature = "redis")]
pub mod redis_server;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tower::{Service, ServiceExt};
use tower_push::{
    ChunkedStreamBuilder, ChunkedStreamLayer, Cursor, EventData, LongPollLayer, Shutdown,
};

pub const SECOND: Duration = Duration::from_secs(1);

/// `Accept` headers that choose a stream's framing.
pub const SSE: (&str, &str) = ("accept", "text/event-stream");
pub const NDJSON: (&str, &str) = ("accept", "application/x-ndjson");

/// The event the tests publish as number `n`: `{"n":n}`.
pub fn data(n: u64) -> EventData {
    EventData::from_serialize(&serde_json::json!({ "n": n })).unwrap()
}

/// An event source whose state never changes (a log that has ended, one that was deleted): it
/// answers every subscription at once with what its function makes of it.
#[derive(Clone, Copy)]
pub struct Answers(pub fn(&tower_push::source::Subscribe) -> tower_push::source::Outcome);

impl Service<tower_push::source::Subscribe> for Answers {
    type Response = tower_push::source::Outcome;
    type Error = Infallible;
    type Future = std::future::Ready<Result<tower_push::source::Outcome, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tower_push::source::Subscribe) -> Self::Future {
        std::future::ready(Ok((self.0)(&req)))
    }
}

/// A long-poll layer that holds a poll for `hold`, with every other setting at its default.
pub fn poll_layer(hold: Duration) -> LongPollLayer {
    LongPollLayer::builder().hold_timeout(hold).build().unwrap()
}

/// A new topic `t`, and a server of long polls on it that holds each poll for `hold`.
pub async fn poll_server(hold: Duration) -> (tower_push::memory::Topic, SocketAddr) {
    let topic = tower_push::MemoryLog::new().topic("t");
    let addr = serve(poll_layer(hold).layer(topic.clone())).await;
    (topic, addr)
}

/// A stream layer's builder with heartbeats an hour apart, so that a stream carries only what
/// the test publishes; every other setting is at its default until the test sets it.
pub fn quiet_stream() -> ChunkedStreamBuilder {
    ChunkedStreamLayer::builder().heartbeat_interval(Duration::from_secs(3600))
}

// ---------------------------------------------------------------------------------------------
// The server

/// What the servers here serve: any HTTP service that never fails, as the layers are.
pub trait TestService<B>:
    Service<Request<Incoming>, Response = Response<B>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static
{
}

impl<S, B> TestService<B> for S where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static
{
}

/// The bodies they answer with.
pub trait TestBody:
    http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + 'static
{
}

impl<B> TestBody for B where
    B: http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

/// Serves `service` on a fresh loopback port until the test's runtime ends.
pub async fn serve<S, B>(service: S) -> SocketAddr
where
    S: TestService<B>,
    B: TestBody,
{
    serve_until(service, Shutdown::new()).await.0
}

/// Serves `service` on a fresh loopback port with the crate's serving loop, as the programs do
/// (`tower_push::server::Server` with its defaults), until the test's runtime ends.
#[cfg(feature = "server")]
pub async fn serve_program<S, B>(service: S) -> SocketAddr
where
    S: Service<Request<tower_push::server::Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower_push::BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tower_push::server::Server::new();
    tokio::spawn(server.serve(listener, service, std::future::pending()));
    addr
}

/// Serves `service` like [`serve`], and drains gracefully once `stop` is triggered: the returned
/// handle finishes when every connection has closed.
pub async fn serve_until<S, B>(service: S, stop: Shutdown) -> (SocketAddr, JoinHandle<()>)
where
    S: TestService<B>,
    B: TestBody,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, serve_on(listener, service, stop))
}

/// Serves `service` on `listener` until `stop` is triggered; then stops accepting at once
/// (the port is free again) and drains gracefully: the handle finishes when every connection
/// has closed.
pub fn serve_on<S, B>(listener: TcpListener, service: S, stop: Shutdown) -> JoinHandle<()>
where
    S: TestService<B>,
    B: TestBody,
{
    tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stop.wait() => break,
            };
            let Ok((stream, _)) = accepted else { continue };
            stream.set_nodelay(true).unwrap();
            let service = service.clone();
            let hyper_service = hyper::service::service_fn(move |req| service.clone().oneshot(req));
            let connection = builder
                .serve_connection(TokioIo::new(stream), hyper_service)
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
        drop(listener);
        graceful.shutdown().await;
    })
}

// ---------------------------------------------------------------------------------------------
// A client for complete answers

/// A complete answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Asserts that this is a refusal with `status` and the error `code` in its JSON body.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.json()["error"], code, "{self:?}");
    }

    /// The anti-buffering headers every long-poll answer must carry, and none of the
    /// connection-specific ones.
    pub fn assert_push_headers(&self) {
        assert_eq!(
            self.header("cache-control"),
            Some("no-cache, no-store, no-transform"),
            "{self:?}"
        );
        assert_eq!(self.header("x-accel-buffering"), Some("no"), "{self:?}");
        for forbidden in ["transfer-encoding", "connection", "keep-alive"] {
            assert!(self.header(forbidden).is_none(), "{forbidden} in {self:?}");
        }
    }
}

/// Sends one GET over a new HTTP/1.1 connection and reads the whole answer.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    get_with(addr, path, &[]).await
}

/// Sends one GET with extra headers over a new HTTP/1.1 connection.
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &[u8])]) -> Reply {
    request(addr, http::Method::GET, path, headers).await
}

/// Sends one request without a body over a new HTTP/1.1 connection.
pub async fn request(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    headers: &[(&str, &[u8])],
) -> Reply {
    let request = request_head(addr, method, path, headers);
    send(addr, request.body(Empty::<Bytes>::new()).unwrap()).await
}

/// The head of a request to `addr`, with its `host` and `headers`, for the caller to give a body.
pub fn request_head(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    headers: &[(&str, impl AsRef<[u8]>)],
) -> http::request::Builder {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        let value = http::HeaderValue::from_bytes(value.as_ref()).unwrap();
        request = request.header(*name, value);
    }
    request
}

/// Sends `request` over a new HTTP/1.1 connection and reads the whole answer.
pub async fn send<B>(addr: SocketAddr, request: Request<B>) -> Reply
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// POSTs `json` to `path` over a new HTTP/1.1 connection: the status and the JSON body.
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    json: &str,
) -> (StatusCode, serde_json::Value) {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let request = Request::post(path)
        .header("host", "test")
        .body(http_body_util::Full::new(Bytes::from(json.to_owned())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

// ---------------------------------------------------------------------------------------------
// A client that reads the wire

/// How a response body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The terminating chunk arrived.
    Complete,
    /// The connection closed before it (a proxy gave up on the upstream, say).
    Cut,
}

/// An HTTP/1.1 response read off a raw socket: its chunked framing (and gzip, when the response
/// is gzip-encoded) is decoded by hand and incrementally, so tests see exactly what went over the
/// wire, and each message as soon as its bytes arrive.
pub struct RawResponse {
    stream: TcpStream,
    /// Bytes read off the socket and not decoded yet.
    buf: Vec<u8>,
    pub status: u16,
    pub head: String,
    decoder: Option<decode::Decoder>,
    /// Decoded body bytes not yet taken as messages.
    body: Vec<u8>,
    end: Option<End>,
    /// The body's bytes as they went over the wire (chunk data, before decoding).
    wire: usize,
}

impl RawResponse {
    /// Sends `GET path` with `headers` and reads the response head.
    pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        Self::try_get(addr, path, headers)
            .await
            .unwrap_or_else(|err| panic!("GET {path}: {err}"))
    }

    /// Like [`get`](Self::get), but a connection that is refused, breaks or closes before the
    /// head is an error, as a reconnecting client sees it, not a panic.
    pub async fn try_get(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Self> {
        let mut stream = TcpStream::connect(addr).await?;
        let mut request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Self {
            stream,
            buf: Vec::new(),
            status: 0,
            head: String::new(),
            decoder: None,
            body: Vec::new(),
            end: None,
            wire: 0,
        };
        let end = loop {
            if let Some(i) = find(&response.buf, b"\r\n\r\n") {
                break i;
            }
            if !response.fill().await {
                let closed = std::io::ErrorKind::UnexpectedEof;
                return Err(std::io::Error::new(
                    closed,
                    "connection closed before the head",
                ));
            }
        };
        response.head = String::from_utf8(response.buf[..end].to_vec()).unwrap();
        response.buf.drain(..end + 4);
        response.status = response.head[9..12].parse().unwrap();
        response.decoder = decode::Decoder::of(response.header("content-encoding").as_deref());
        Ok(response)
    }

    /// The body of an answer with a `Content-Length` (a long poll's), or `None` if the
    /// connection closed before all of it arrived.
    pub async fn content(&mut self) -> Option<String> {
        let length: usize = self
            .header("content-length")
            .map_or(0, |l| l.parse().unwrap());
        while self.buf.len() < length {
            if !self.fill().await {
                return None;
            }
        }
        Some(String::from_utf8(self.buf.drain(..length).collect()).unwrap())
    }

    /// The raw bytes of an answer with a `Content-Length`, undecoded.
    pub async fn raw_content(&mut self) -> Vec<u8> {
        let length: usize = self.header("content-length").unwrap().parse().unwrap();
        while self.buf.len() < length {
            assert!(
                self.fill().await,
                "the connection closed before the body's end"
            );
        }
        self.buf.drain(..length).collect()
    }

    /// How many bytes of body arrived in chunks so far, as they went over the wire.
    pub fn wire_bytes(&self) -> usize {
        self.wire
    }

    /// A header of the head, by name.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    /// The bytes that arrived after the head and are not decoded yet.
    pub fn unread(&self) -> &[u8] {
        &self.buf
    }

    /// Reads more off the socket; false when the connection closed (or broke).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Decodes the next chunk into `body`; sets `end` at the terminating chunk or a cut.
    async fn chunk(&mut self) {
        let line = loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                break i;
            }
            if !self.fill().await {
                self.end = Some(End::Cut);
                return;
            }
        };
        let size_text = std::str::from_utf8(&self.buf[..line]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap(), 16).unwrap();
        while self.buf.len() < line + 2 + size + 2 {
            if !self.fill().await {
                self.end = Some(End::Cut);
                return;
            }
        }
        let data = &self.buf[line + 2..line + 2 + size];
        self.wire += size;
        match &mut self.decoder {
            // Whatever the sender flushed through its encoder decodes completely.
            Some(decoder) => self.body.append(&mut decoder.feed(data)),
            None => self.body.extend_from_slice(data),
        }
        self.buf.drain(..line + 2 + size + 2);
        if size == 0 {
            self.end = Some(End::Complete);
        }
    }

    /// The next complete message ending in `delimiter` (`\n` for NDJSON, `\n\n` for SSE), or how
    /// the body ended.
    pub async fn message(&mut self, delimiter: &[u8]) -> Result<String, End> {
        loop {
            if let Some(i) = find(&self.body, delimiter) {
                let message: Vec<u8> = self.body.drain(..i + delimiter.len()).collect();
                return Ok(String::from_utf8(message).unwrap());
            }
            if let Some(end) = self.end {
                assert!(
                    self.body.is_empty(),
                    "partial message at the end: {:?}",
                    String::from_utf8_lossy(&self.body)
                );
                return Err(end);
            }
            self.chunk().await;
        }
    }

    /// The whole rest of the body, which must end with the terminating chunk.
    pub async fn body(&mut self) -> String {
        while self.end.is_none() {
            self.chunk().await;
        }
        assert_eq!(self.end, Some(End::Complete), "the body was cut");
        String::from_utf8(std::mem::take(&mut self.body)).unwrap()
    }

    /// Asserts that the server closed the body: the next chunk is the terminating one, and no
    /// message is left.
    pub async fn assert_ended(&mut self) {
        if self.end.is_none() {
            self.chunk().await;
        }
        assert_eq!(self.end, Some(End::Complete), "body did not end");
        assert!(
            self.body.is_empty(),
            "left over: {:?}",
            String::from_utf8_lossy(&self.body)
        );
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Waits

/// Asserts that every cursor in `foreign` (of another topic, log or source) gets the resync
/// answer, never events: `410 epoch_mismatch` from the long poll at `poll`; from the NDJSON
/// stream at `stream` the same `410` or, when the source answers only after the stream has
/// started (a source that asks a backend), a stream whose one message is that resync.
pub async fn assert_foreign_cursors_resync(
    poll: SocketAddr,
    stream: SocketAddr,
    foreign: &[Cursor],
) {
    for cursor in foreign {
        let reply = get(poll, &format!("/poll?after={cursor}")).await;
        assert_eq!(reply.status, 410, "{cursor} on /poll: {reply:?}");
        assert_eq!(reply.json()["error"], "epoch_mismatch", "{cursor} on /poll");
        let reply = get(stream, &format!("/stream?after={cursor}")).await;
        assert!(
            matches!(reply.status.as_u16(), 200 | 410),
            "{cursor} on /stream: {reply:?}"
        );
        let lines: Vec<&[u8]> = reply
            .body
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "{cursor} on /stream: one message, no event: {reply:?}"
        );
        let message: serde_json::Value = serde_json::from_slice(lines[0]).unwrap();
        assert_eq!(message["error"], "epoch_mismatch", "{cursor} on /stream");
    }
}

/// Waits in real time until `ready` holds, checking every millisecond; panics after `within`,
/// naming `what` it waited for.
pub async fn wait_until(what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
    let wait = async {
        while !ready() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(within, wait)
        .await
        .unwrap_or_else(|_| panic!("waited {within:?} for {what}"));
}

/// An event source that counts the subscriptions parked on it.
pub trait Parked {
    fn parked_subscriptions(&self) -> usize;
}

impl Parked for tower_push::memory::Topic {
    fn parked_subscriptions(&self) -> usize {
        self.parked_subscriptions()
    }
}

#[cfg(feature = "redis")]
impl Parked for tower_push::redis::RedisTopic {
    fn parked_subscriptions(&self) -> usize {
        self.parked_subscriptions()
    }
}

/// Waits (in real time, at most 10 s) until `n` subscriptions are parked on `topic`.
pub async fn parked(topic: &impl Parked, n: usize) {
    let what = format!("{n} parked subscriptions");
    wait_until(&what, 10 * SECOND, || topic.parked_subscriptions() == n).await;
}

/// Runs `n` requests made by `request` at once, each ending after a jittered `limit` (jitter
/// 0.5), and asserts that each ended between half the limit and the limit after they started,
/// and that they did not all end together.
pub async fn assert_spread<R>(n: usize, limit: Duration, request: impl Fn() -> R)
where
    R: std::future::Future<Output = ()> + Send + 'static,
{
    let started = tokio::time::Instant::now();
    let ends = (0..n).map(|_| {
        let request = request();
        tokio::spawn(async move {
            request.await;
            started.elapsed()
        })
    });
    let mut ends = futures_util::future::try_join_all(ends).await.unwrap();
    assert!(
        ends.iter().all(|d| *d >= limit / 2 && *d <= limit),
        "{ends:?}"
    );
    ends.sort();
    ends.dedup();
    assert!(ends.len() > 1, "all ended together: {ends:?}");
}

// ---------------------------------------------------------------------------------------------
// Tests that need an external program

/// The harness of test targets whose tests need an external program (nginx, a browser, Redis).
///
/// A target sets `harness = false` and lists its tests with [`main!`](external::main). A test
/// whose program is missing is reported as ignored, never as passed; under `CI=true` it fails
/// instead, naming the program and the Debian package that provides it. Each test is a plain
/// `fn` that starts its own runtime: an `async fn` under `#[tokio::main(...)]` with the flavor
/// (and `start_paused`) it would have had under `#[tokio::test(...)]`. Arguments are those of
/// `cargo test`: a name filter, `--list`, `--ignored`, `--exact`, `--test-threads`.
///
/// ```ignore
/// common::external::main! {
///     [] => [a_test_that_needs_nothing],
///     [NGINX] => [first_test, second_test],
///     [REDIS_SERVER] => redis::[a_test_of_the_module_redis],
/// }
/// ```
pub mod external {
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, ExitCode, Stdio};
    use std::time::Duration;

    use libtest_mimic::{Arguments, Failed, Trial};
    use tokio::net::TcpStream;

    /// A program that tests need, and the Debian package that provides it.
    #[derive(Clone, Copy, Debug)]
    pub struct Program {
        pub name: &'static str,
        pub package: &'static str,
        /// The oldest version the tests work with (`major.minor`), and how to get a newer one.
        pub min_version: Option<(&'static str, &'static str)>,
    }

    impl Program {
        pub const fn new(name: &'static str, package: &'static str) -> Self {
            Self {
                name,
                package,
                min_version: None,
            }
        }

        /// The same program, at `version` (`major.minor`) or later; `how` says how to get it.
        pub const fn at_least(mut self, version: &'static str, how: &'static str) -> Self {
            self.min_version = Some((version, how));
            self
        }

        /// Where the program is installed, if it is (and recent enough): the first directory
        /// of `PATH` that holds it, or else one of the usual system directories (`/usr/sbin` is
        /// not on every user's `PATH`).
        pub fn find(&self) -> Option<PathBuf> {
            self.located().filter(|path| self.too_old(path).is_none())
        }

        fn located(&self) -> Option<PathBuf> {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let usual = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin"];
            std::env::split_paths(&path)
                .chain(usual.map(PathBuf::from))
                .map(|dir| dir.join(self.name))
                .find(|path| is_executable(path))
        }

        /// The version the program at `path` reports (`--version`), if it is older than the
        /// tests need.
        fn too_old(&self, path: &Path) -> Option<String> {
            let (wanted, _) = self.min_version?;
            let output = std::process::Command::new(path).arg("--version").output();
            let text = String::from_utf8_lossy(&output.map(|o| o.stdout).unwrap_or_default())
                .trim()
                .to_owned();
            let numbers = |text: &str| -> Vec<u32> {
                let digits = text.trim_start_matches(|c: char| !c.is_ascii_digit());
                let version = digits.split_whitespace().next().unwrap_or("");
                version.split('.').map_while(|n| n.parse().ok()).collect()
            };
            (numbers(&text) < numbers(wanted)).then_some(text)
        }

        /// Why the program cannot be used: not installed, or too old.
        fn problem(&self) -> String {
            match (self.located(), self.min_version) {
                (Some(path), Some((wanted, how))) => match self.too_old(&path) {
                    Some(found) => format!(
                        "`{}` {found:?} is older than the {wanted} the tests need ({how})",
                        self.name
                    ),
                    None => format!("`{}` is usable", self.name),
                },
                _ => format!("`{}` (Debian package `{}`)", self.name, self.package),
            }
        }

        /// Where the program is installed; panics when it is not (the harness has ignored or
        /// failed the tests that need it then).
        pub fn path(&self) -> PathBuf {
            self.find()
                .unwrap_or_else(|| panic!("{}", not_installed(&[*self])))
        }
    }

    fn is_executable(path: &Path) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            path.metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        }
        #[cfg(not(unix))]
        {
            path.is_file()
        }
    }

    fn not_installed(programs: &[Program]) -> String {
        let list: Vec<_> = programs.iter().map(Program::problem).collect();
        format!("not usable: {}", list.join(", "))
    }

    /// The example `name`, built with every feature as a user builds it (a no-op when `cargo
    /// test --all-features` built it already): the path of its executable.
    #[allow(dead_code)]
    pub fn example(name: &str) -> PathBuf {
        let output = std::process::Command::new(env!("CARGO"))
            .args(["build", "--example", name, "--all-features"])
            .args(["--message-format=json-render-diagnostics", "--quiet"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap();
        assert!(output.status.success(), "the {name} example does not build");
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|message| message["target"]["name"] == name)
            .find_map(|message| message["executable"].as_str().map(Into::into))
            .expect("cargo names the example's executable")
    }

    /// Whether this is a CI run (`CI=true`), where a missing program fails the tests that need it.
    fn ci() -> bool {
        std::env::var("CI").as_deref() == Ok("true")
    }

    /// A test: its name and its body, which starts its own runtime.
    pub type Test = (&'static str, fn());

    /// Lists test functions as [`Test`]s, each named after its function.
    #[allow(unused_macros)]
    macro_rules! tests {
        ($($test:ident),* $(,)?) => {
            vec![$((stringify!($test), $test as fn())),*]
        };
        ($module:ident :: $($test:ident),* $(,)?) => {
            vec![$((concat!(stringify!($module), "::", stringify!($test)), $module::$test as fn())),*]
        };
    }
    #[allow(unused_imports)]
    pub(crate) use tests;

    /// The `main` of a target: a [`Suite`] of its tests, each group after the programs it needs
    /// (`[]` for none), run as the command line chooses. A group may carry attributes (`#[cfg(feature = "redis")]`).
    #[allow(unused_macros)]
    macro_rules! main {
        ($($(#[$attr:meta])* [$($program:expr),* $(,)?] => $($module:ident ::)? [$($test:ident),* $(,)?]),* $(,)?) => {
            fn main() -> std::process::ExitCode {
                let suite = $crate::common::external::Suite::new();
                $(
                    $(#[$attr])*
                    let suite = suite.needing(
                        &[$($program),*],
                        $crate::common::external::tests![$($module ::)? $($test),*],
                    );
                )*
                suite.run()
            }
        };
    }
    #[allow(unused_imports)]
    pub(crate) use main;

    /// The tests of one target.
    #[derive(Debug, Default)]
    #[must_use]
    pub struct Suite {
        trials: Vec<Trial>,
        /// A line for each group of tests ignored for a missing program.
        notices: Vec<String>,
    }

    impl Suite {
        pub fn new() -> Self {
            Self::default()
        }

        /// Adds `tests`, which need all of `programs`.
        pub fn needing(mut self, programs: &[Program], tests: Vec<Test>) -> Self {
            let missing: Vec<Program> = programs
                .iter()
                .filter(|program| program.find().is_none())
                .copied()
                .collect();
            let ignore = !missing.is_empty() && !ci();
            if ignore {
                let tests = match tests.len() {
                    1 => "1 test".to_owned(),
                    n => format!("{n} tests"),
                };
                let missing = not_installed(&missing);
                self.notices.push(format!("{tests} ignored, {missing}"));
            }
            for (name, test) in tests {
                let missing = missing.clone();
                let trial = Trial::test(name, move || {
                    if !missing.is_empty() {
                        let why = if ci() {
                            "; CI=true requires this test"
                        } else {
                            ""
                        };
                        return Err(Failed::from(format!("{}{why}", not_installed(&missing))));
                    }
                    test();
                    Ok(())
                });
                self.trials.push(trial.with_ignored_flag(ignore));
            }
            self
        }

        /// Adds `tests`, which need no program.
        pub fn plain(self, tests: Vec<Test>) -> Self {
            self.needing(&[], tests)
        }

        /// Runs the tests chosen by the command line, and reports like `cargo test`.
        pub fn run(self) -> ExitCode {
            let args = Arguments::from_args();
            if !args.list {
                for notice in &self.notices {
                    eprintln!("{notice}");
                }
            }
            libtest_mimic::run(&args, self.trials).exit_code()
        }
    }

    /// A child process, killed and reaped when dropped, so that a failing test leaves none
    /// behind.
    #[derive(Debug)]
    pub struct Process(Child);

    impl Process {
        /// Starts `command` with its standard streams closed.
        pub fn spawn(command: &mut Command) -> Self {
            let child = command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{:?} does not start: {e}", command.get_program()));
            Self(child)
        }

        /// The process's id.
        pub fn id(&self) -> u32 {
            self.0.id()
        }

        /// Whether the process has exited.
        pub fn exited(&mut self) -> bool {
            self.0.try_wait().unwrap().is_some()
        }

        /// Waits until `port` on the loopback interface accepts connections and `ready` holds
        /// (true), or the process exited first (false), for at most `within`.
        pub async fn listening(
            &mut self,
            port: u16,
            within: Duration,
            ready: impl Fn() -> bool,
        ) -> Result<bool, tokio::time::error::Elapsed> {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            tokio::time::timeout(within, async {
                loop {
                    if self.exited() {
                        return false;
                    }
                    if ready() && TcpStream::connect(addr).await.is_ok() {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
        }
    }

    impl Drop for Process {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// One of this crate's programs started by `command` for a free loopback port (which it
    /// gets as `--addr 127.0.0.1:PORT`), once it listens: a port another process took first
    /// makes it exit, and another port is tried.
    #[allow(dead_code)]
    pub async fn program_listening(command: impl Fn(&str) -> Command) -> (Process, SocketAddr) {
        // Bounded: a program that never shows as the port's listener fails the test, rather than
        // starting copies of itself on port after port.
        for _ in 0..20 {
            let port = free_port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut process = Process::spawn(&mut command(&addr.to_string()));
            match process
                .listening(port, Duration::from_secs(30), || true)
                .await
            {
                // The port accepts connections, but maybe those of a process that took it
                // between `free_port` and the program's bind (a Redis or an nginx of another
                // test): then the program fails to bind and exits, and the tests would talk to
                // the other one.
                Ok(true) if listens_itself(process.id(), port) => return (process, addr),
                Ok(_) => continue,
                Err(_) => panic!("{addr} is not listened on within 30 s"),
            }
        }
        panic!("the program did not hold the listener of any of 20 free ports");
    }

    /// Whether process `pid` holds a socket listening on `port` of the loopback interface (on
    /// Linux, from `/proc`; elsewhere, and when `/proc` cannot tell, it is taken to).
    fn listens_itself(pid: u32, port: u16) -> bool {
        let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
            return true;
        };
        // `local_address` is `0100007F:PORT` in hex, state `0A` is LISTEN, the inode the tenth
        // field.
        let local = format!("0100007F:{port:04X}");
        let inodes: Vec<String> = table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
                    .then(|| fields.get(9).map(|inode| format!("socket:[{inode}]")))
                    .flatten()
            })
            .collect();
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return true;
        };
        fds.filter_map(Result::ok)
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|link| {
                inodes
                    .iter()
                    .any(|inode| link.as_os_str() == inode.as_str())
            })
    }

    /// A port on the loopback interface that is free now. Another process may take it before the
    /// program meant for it binds it: then that program exits, and the test tries another port.
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}
