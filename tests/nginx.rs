//! Both layers behind a real nginx with a common production configuration: proxy buffering left
//! on, HTTP/1.1 to the upstream, a short `proxy_read_timeout`, and gzip for JSON, NDJSON and
//! event streams, read by a client that accepts gzip as browsers do.
//!
//! Each test starts its own nginx (in the foreground, with its own prefix, configuration, logs
//! and pid file in a temporary directory) in front of a server on `127.0.0.1:0`. They need the
//! `nginx` program; without it they print a notice and pass, except under `CI=true`, where a
//! missing nginx fails them.

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{parked, serve};
use flate2::write::GzDecoder;
use http::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tower::Layer;
use tower_push::headers::X_ACCEL_BUFFERING;
use tower_push::{ChunkedStreamLayer, EventData, LongPollLayer, MemoryLog, PushBody, Shutdown};

/// nginx's `proxy_read_timeout` in these tests: how long it waits for the next bytes from the
/// upstream before it gives up on the response.
const PROXY_READ_TIMEOUT: Duration = Duration::from_secs(3);
const SECOND: Duration = Duration::from_secs(1);

const SSE: (&str, &str) = ("accept", "text/event-stream");
const NDJSON: (&str, &str) = ("accept", "application/x-ndjson");
const GZIP: (&str, &str) = ("accept-encoding", "gzip");

// ---------------------------------------------------------------------------------------------
// nginx as a child process

/// The nginx program, or `None` (after a notice) when it is absent and this is not CI.
fn nginx_program() -> Option<PathBuf> {
    let found = std::iter::once(PathBuf::from("/usr/sbin/nginx"))
        .chain(
            std::env::var_os("PATH")
                .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .map(|dir| dir.join("nginx")),
        )
        .find(|path| path.is_file());
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("nginx is not installed, and CI=true requires the nginx tests to run");
        }
        eprintln!("skipped: nginx is not installed (install the `nginx` package to run this test)");
    }
    found
}

/// A running nginx in front of one upstream; stopped when dropped.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx on a free loopback port, proxying everything to `upstream`.
    async fn start(program: &PathBuf, upstream: SocketAddr) -> Self {
        // A port is free when we ask and taken by nginx a moment later; in the rare case that
        // another process takes it in between, nginx exits and we try another one.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let dir = tempfile::tempdir().unwrap();
            let conf = dir.path().join("nginx.conf");
            std::fs::write(&conf, config(dir.path(), addr, upstream)).unwrap();
            let child = Command::new(program)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(&conf)
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nginx starts");
            let mut nginx = Self { child, addr, dir };
            if nginx.ready().await {
                return nginx;
            }
            let log = nginx.error_log();
            assert!(
                log.contains("Address already in use"),
                "nginx did not start:\n{log}"
            );
        }
        panic!("no free port for nginx after 5 attempts");
    }

    /// Waits until nginx has bound its port (it writes its pid file after that), or has exited.
    async fn ready(&mut self) -> bool {
        let pid = self.dir.path().join("nginx.pid");
        let deadline = Instant::now() + 10 * SECOND;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if pid.exists() && TcpStream::connect(self.addr).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("nginx did not start within 10 s:\n{}", self.error_log());
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A common production configuration: buffering on (the default, stated), HTTP/1.1 with
/// keep-alive to the upstream, a short read timeout, and gzip for push content types.
fn config(dir: &std::path::Path, listen: SocketAddr, upstream: SocketAddr) -> String {
    let dir = dir.display();
    format!(
        r#"master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    gzip on;
    gzip_proxied any;
    gzip_types application/json application/x-ndjson text/event-stream;
    gzip_min_length 1;

    server {{
        listen {listen};
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
            proxy_read_timeout {timeout}s;
        }}
    }}
}}
"#,
        timeout = PROXY_READ_TIMEOUT.as_secs(),
    )
}

// ---------------------------------------------------------------------------------------------
// A client that reads a chunked, gzip-encoded response as it arrives

/// How a response body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The terminating chunk arrived.
    Complete,
    /// The connection closed before it (nginx gave up on the upstream).
    Cut,
}

/// An HTTP/1.1 response read off a raw socket: chunked framing and gzip are decoded
/// incrementally, so each message is seen as soon as its bytes arrive.
struct Client {
    tcp: TcpStream,
    buf: Vec<u8>,
    status: u16,
    head: String,
    gzip: Option<GzDecoder<Vec<u8>>>,
    /// Decoded body bytes not yet taken as messages.
    text: Vec<u8>,
    end: Option<End>,
}

impl Client {
    /// Sends `GET path` with `headers` and reads the response head.
    async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut client = Self {
            tcp,
            buf: Vec::new(),
            status: 0,
            head: String::new(),
            gzip: None,
            text: Vec::new(),
            end: None,
        };
        let end = loop {
            if let Some(i) = find(&client.buf, b"\r\n\r\n") {
                break i;
            }
            assert!(client.fill().await, "connection closed before the head");
        };
        client.head = String::from_utf8(client.buf[..end].to_vec()).unwrap();
        client.buf.drain(..end + 4);
        client.status = client.head[9..12].parse().unwrap();
        if client.header("content-encoding").as_deref() == Some("gzip") {
            client.gzip = Some(GzDecoder::new(Vec::new()));
        }
        client
    }

    /// A header of the head, by name.
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n = self.tcp.read(&mut chunk).await.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Decodes the next chunk into `text`; sets `end` at the terminating chunk or a cut.
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
        match &mut self.gzip {
            Some(gzip) => {
                gzip.write_all(data).unwrap();
                // Whatever nginx flushed through its gzip filter decodes completely.
                gzip.flush().unwrap();
                self.text.append(gzip.get_mut());
            }
            None => self.text.extend_from_slice(data),
        }
        self.buf.drain(..line + 2 + size + 2);
        if size == 0 {
            self.end = Some(End::Complete);
        }
    }

    /// The next complete message ending in `delimiter`, or how the body ended.
    async fn message(&mut self, delimiter: &[u8]) -> Result<String, End> {
        loop {
            if let Some(i) = find(&self.text, delimiter) {
                let message: Vec<u8> = self.text.drain(..i + delimiter.len()).collect();
                return Ok(String::from_utf8(message).unwrap());
            }
            if let Some(end) = self.end {
                assert!(
                    self.text.is_empty(),
                    "partial message at the end: {:?}",
                    String::from_utf8_lossy(&self.text)
                );
                return Err(end);
            }
            self.chunk().await;
        }
    }

    /// The whole (chunked) body, decoded.
    async fn body(&mut self) -> String {
        while self.end.is_none() {
            self.chunk().await;
        }
        assert_eq!(self.end, Some(End::Complete), "the body was cut");
        String::from_utf8(std::mem::take(&mut self.text)).unwrap()
    }

    /// The next message that is not a heartbeat.
    async fn event(&mut self, delimiter: &[u8]) -> Result<String, End> {
        loop {
            let message = self.message(delimiter).await?;
            if !is_heartbeat(&message) {
                return Ok(message);
            }
        }
    }
}

fn is_heartbeat(message: &str) -> bool {
    message == "{\"heartbeat\":true}\n" || message == ": heartbeat\n\n"
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn data(n: u64) -> EventData {
    EventData::from_serialize(&serde_json::json!({ "n": n })).unwrap()
}

fn stream_layer(heartbeat: Duration, shutdown: &Shutdown) -> ChunkedStreamLayer {
    ChunkedStreamLayer::builder()
        .heartbeat_interval(heartbeat)
        .max_lifetime(Duration::from_secs(600))
        .shutdown(shutdown.clone())
        .build()
        .unwrap()
}

fn without_accel_header(mut response: Response<PushBody>) -> Response<PushBody> {
    response.headers_mut().remove(X_ACCEL_BUFFERING);
    response
}

/// The framings under test: the `Accept` header, the message delimiter, and whether the stream
/// opens with a message of its own (SSE sends the start cursor as `id:`).
const FRAMINGS: [((&str, &str), &[u8], bool); 2] = [(NDJSON, b"\n", false), (SSE, b"\n\n", true)];

fn event_of(message: &str, framing: (&str, &str)) -> (String, u64) {
    if framing == SSE {
        let mut lines = message.lines();
        let id = lines
            .next()
            .unwrap()
            .strip_prefix("id: ")
            .unwrap()
            .to_owned();
        let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
        let value: serde_json::Value = serde_json::from_str(data).unwrap();
        (id, value["n"].as_u64().unwrap())
    } else {
        let value: serde_json::Value = serde_json::from_str(message).unwrap();
        (
            value["id"].as_str().unwrap().to_owned(),
            value["data"]["n"].as_u64().unwrap(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn through_nginx_each_event_arrives_before_the_next_is_published() {
    let Some(program) = nginx_program() else {
        return;
    };
    let topic = MemoryLog::new().topic("t");
    let layer = stream_layer(SECOND, &Shutdown::new());
    let nginx = Nginx::start(&program, serve(layer.layer(topic.clone())).await).await;

    for (accept, delimiter, opens) in FRAMINGS {
        let mut stream = Client::get(nginx.addr, "/stream", &[accept, GZIP]).await;
        assert_eq!(stream.status, 200, "{}", stream.head);
        assert_eq!(stream.header("content-encoding").as_deref(), Some("gzip"));
        // nginx consumes X-Accel-* headers and never passes them on.
        assert_eq!(stream.header("x-accel-buffering"), None);
        if opens {
            let open = timeout(2 * SECOND, stream.message(delimiter)).await;
            let open = open.expect("the opening id arrives at once").unwrap();
            assert_eq!(open, format!("id: {}\n\n", topic.head()));
        }
        for n in 1..=5 {
            parked(&topic, 1).await;
            let published = Instant::now();
            let id = topic.publish(data(n));
            let message = timeout(2 * SECOND, stream.event(delimiter))
                .await
                .unwrap_or_else(|_| panic!("event {n} did not arrive within 2 s through nginx"))
                .unwrap();
            assert_eq!(event_of(&message, accept), (id.to_string(), n));
            eprintln!(
                "{}: event {n} arrived {:?} after it was published",
                accept.1,
                published.elapsed()
            );
        }
        drop(stream);
        parked(&topic, 0).await;
    }
}

#[tokio::test]
async fn without_x_accel_buffering_nginx_holds_the_events() {
    let Some(program) = nginx_program() else {
        return;
    };
    for (accept, delimiter, opens) in FRAMINGS {
        let topic = MemoryLog::new().topic("t");
        let shutdown = Shutdown::new();
        let layer = stream_layer(SECOND, &shutdown);
        let service = tower::util::MapResponseLayer::new(without_accel_header)
            .layer(layer.layer(topic.clone()));
        let nginx = Nginx::start(&program, serve(service).await).await;

        // Read in a task: nginx holds even the response head.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let addr = nginx.addr;
        let reader = tokio::spawn(async move {
            let mut stream = Client::get(addr, "/stream", &[accept, GZIP]).await;
            assert_eq!(stream.status, 200, "{}", stream.head);
            assert_eq!(stream.header("content-encoding").as_deref(), Some("gzip"));
            loop {
                let message = stream.message(delimiter).await;
                let ended = message.is_err();
                let _ = tx.send((message, Instant::now()));
                if ended {
                    return;
                }
            }
        });

        parked(&topic, 1).await;
        let published = Instant::now();
        let id = topic.publish(data(1));
        // Heartbeats go out every second too: not even they push the event through.
        let held = timeout(1500 * Duration::from_millis(1), rx.recv()).await;
        assert!(
            held.is_err(),
            "{}: without X-Accel-Buffering, nginx passed {:?} on within 1.5 s",
            accept.1,
            held.unwrap()
        );
        assert_eq!(
            topic.parked_subscriptions(),
            1,
            "the stream stays open upstream"
        );

        // The event was held, not lost: when the stream ends, nginx sends everything.
        shutdown.trigger();
        let mut messages = Vec::new();
        while let Some((message, at)) = timeout(5 * SECOND, rx.recv()).await.unwrap() {
            match message {
                Ok(message) => messages.push((message, at)),
                Err(end) => {
                    assert_eq!(end, End::Complete);
                    break;
                }
            }
        }
        reader.await.unwrap();
        let messages: Vec<_> = messages
            .into_iter()
            .filter(|(message, _)| !is_heartbeat(message))
            .collect();
        let skip = usize::from(opens);
        let (event, arrived) = &messages[skip];
        assert_eq!(event_of(event, accept), (id.to_string(), 1));
        eprintln!(
            "{}: without the header, event 1 arrived {:?} after it was published, with the end \
             of the stream",
            accept.1,
            *arrived - published
        );
        assert!(messages[skip + 1].0.contains("shutdown"), "{messages:?}");
    }
}

#[tokio::test]
async fn heartbeats_keep_a_quiet_stream_open_past_the_proxy_read_timeout() {
    let Some(program) = nginx_program() else {
        return;
    };
    let topic = MemoryLog::new().topic("t");
    let layer = stream_layer(Duration::from_millis(500), &Shutdown::new());
    let nginx = Nginx::start(&program, serve(layer.layer(topic.clone())).await).await;

    let mut stream = Client::get(nginx.addr, "/stream", &[NDJSON, GZIP]).await;
    assert_eq!(stream.status, 200, "{}", stream.head);
    let opened = Instant::now();
    let quiet = 2 * PROXY_READ_TIMEOUT + SECOND / 2;
    let mut heartbeats = 0;
    while opened.elapsed() < quiet {
        let message = timeout(2 * SECOND, stream.message(b"\n"))
            .await
            .expect("a heartbeat every 500 ms")
            .unwrap_or_else(|end| {
                panic!("the stream ended ({end:?}) after {:?}", opened.elapsed())
            });
        assert_eq!(message, "{\"heartbeat\":true}\n");
        heartbeats += 1;
    }
    assert!(heartbeats >= 10, "{heartbeats} heartbeats in {quiet:?}");

    let id = topic.publish(data(1));
    let message = timeout(2 * SECOND, stream.event(b"\n"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event_of(&message, NDJSON), (id.to_string(), 1));
}

#[tokio::test]
async fn without_heartbeats_nginx_cuts_a_quiet_stream_at_the_proxy_read_timeout() {
    let Some(program) = nginx_program() else {
        return;
    };
    let topic = MemoryLog::new().topic("t");
    let layer = stream_layer(Duration::from_secs(3600), &Shutdown::new());
    let nginx = Nginx::start(&program, serve(layer.layer(topic.clone())).await).await;

    let mut stream = Client::get(nginx.addr, "/stream", &[NDJSON, GZIP]).await;
    assert_eq!(stream.status, 200, "{}", stream.head);
    let opened = Instant::now();
    let end = timeout(2 * PROXY_READ_TIMEOUT, stream.message(b"\n"))
        .await
        .expect("nginx gives up on the quiet upstream");
    let after = opened.elapsed();
    assert_eq!(end, Err(End::Cut), "nginx cuts the response");
    assert!(
        after >= PROXY_READ_TIMEOUT - SECOND / 10,
        "cut after {after:?}"
    );
    assert!(
        nginx.error_log().contains("upstream timed out"),
        "{}",
        nginx.error_log()
    );
}

#[tokio::test]
async fn a_hold_below_the_proxy_read_timeout_ends_in_a_clean_204() {
    let Some(program) = nginx_program() else {
        return;
    };
    let topic = MemoryLog::new().topic("t");
    let below = Duration::from_millis(1500);
    let above = PROXY_READ_TIMEOUT + SECOND;
    let layer = |hold| LongPollLayer::builder().hold_timeout(hold).build().unwrap();
    let short = Nginx::start(&program, serve(layer(below).layer(topic.clone())).await).await;
    let long = Nginx::start(&program, serve(layer(above).layer(topic.clone())).await).await;
    let start = topic.head().to_string();
    let path = format!("/poll?after={start}");

    let timed = |addr| {
        let path = path.clone();
        async move {
            let sent = Instant::now();
            let reply = Client::get(addr, &path, &[GZIP]).await;
            (reply, sent.elapsed())
        }
    };
    let ((held, held_for), (cut, cut_after)) = tokio::join!(timed(short.addr), timed(long.addr));

    // Below: the server's own 204, with the cursor, and no body.
    assert_eq!(held.status, 204, "{}", held.head);
    assert_eq!(held.header("push-cursor"), Some(start.clone()));
    assert!(
        held_for >= below - SECOND / 10,
        "answered after {held_for:?}"
    );
    assert!(held.buf.is_empty());
    // Above: nginx gives up first and answers 504 itself.
    assert_eq!(cut.status, 504, "{}", cut.head);
    assert!(
        cut_after >= PROXY_READ_TIMEOUT - SECOND / 10 && cut_after < above,
        "504 after {cut_after:?}"
    );

    // A poll that gets an event is a 200 whose gzip JSON decodes to the event.
    let poll = tokio::spawn({
        let addr = short.addr;
        let path = path.clone();
        async move {
            let mut reply = Client::get(addr, &path, &[GZIP]).await;
            let body = reply.body().await;
            (reply.status, reply.header("push-cursor"), body)
        }
    });
    parked(&topic, 1).await;
    let id = topic.publish(data(1));
    let (status, cursor, body) = timeout(5 * SECOND, poll).await.unwrap().unwrap();
    assert_eq!(status, 200);
    assert_eq!(cursor, Some(id.to_string()));
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["events"][0]["id"], id.to_string());
    assert_eq!(body["events"][0]["data"]["n"], 1);
}
