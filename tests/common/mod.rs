//! A real hyper server on 127.0.0.1:0 and a small HTTP/1.1 client over real sockets.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tower::{Service, ServiceExt};
use tower_push::PushBody;

/// Serves `service` on a fresh loopback port until the test's runtime ends.
pub async fn serve<S>(service: S) -> SocketAddr
where
    S: Service<Request<Incoming>, Response = Response<PushBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            stream.set_nodelay(true).unwrap();
            let service = service.clone();
            let hyper_service = hyper::service::service_fn(move |req| service.clone().oneshot(req));
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), hyper_service)
                    .await;
            });
        }
    });
    addr
}

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
    let mut request = Request::get(path).header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, http::HeaderValue::from_bytes(value).unwrap());
    }
    send(addr, request.body(Empty::<Bytes>::new()).unwrap()).await
}

async fn send(addr: SocketAddr, request: Request<Empty<Bytes>>) -> Reply {
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

/// Serves `service` like [`serve`], and drains gracefully once `stop` is triggered: the returned
/// handle finishes when every connection has closed.
pub async fn serve_until<S>(
    service: S,
    stop: tower_push::Shutdown,
) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    S: Service<Request<Incoming>, Response = Response<PushBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = wait_for(&stop) => break,
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
    });
    (addr, handle)
}

async fn wait_for(stop: &tower_push::Shutdown) {
    while !stop.is_triggered() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// An HTTP/1.1 response read byte by byte from a raw socket, with its chunked framing decoded
/// by hand, so tests see exactly what went over the wire and when.
pub struct RawResponse {
    stream: TcpStream,
    buf: Vec<u8>,
    pub status: u16,
    pub head: String,
    /// Decoded body bytes not yet taken as messages.
    body: Vec<u8>,
    pub ended: bool,
}

impl RawResponse {
    /// Sends `GET path` with `headers` and reads the response head.
    pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        use tokio::io::AsyncWriteExt;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Self {
            stream,
            buf: Vec::new(),
            status: 0,
            head: String::new(),
            body: Vec::new(),
            ended: false,
        };
        let end = loop {
            if let Some(i) = find(&response.buf, b"\r\n\r\n") {
                break i;
            }
            assert!(response.fill().await, "connection closed before the head");
        };
        response.head = String::from_utf8(response.buf[..end].to_vec()).unwrap();
        response.buf.drain(..end + 4);
        response.status = response.head[9..12].parse().unwrap();
        response
    }

    /// A header of the head, by lowercase name.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    async fn fill(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.unwrap();
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Decodes one chunk of the chunked body into `body`; false at the terminating chunk.
    async fn chunk(&mut self) -> bool {
        let line = loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                break i;
            }
            assert!(
                self.fill().await,
                "connection closed inside chunked framing"
            );
        };
        let size_text = std::str::from_utf8(&self.buf[..line]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap(), 16).unwrap();
        while self.buf.len() < line + 2 + size + 2 {
            assert!(self.fill().await, "connection closed inside a chunk");
        }
        self.body
            .extend_from_slice(&self.buf[line + 2..line + 2 + size]);
        self.buf.drain(..line + 2 + size + 2);
        if size == 0 {
            self.ended = true;
        }
        size > 0
    }

    /// The next complete message ending in `delimiter` (`\n` for NDJSON, `\n\n` for SSE), or
    /// `None` when the body ended.
    pub async fn message(&mut self, delimiter: &[u8]) -> Option<String> {
        loop {
            if let Some(i) = find(&self.body, delimiter) {
                let message: Vec<u8> = self.body.drain(..i + delimiter.len()).collect();
                return Some(String::from_utf8(message).unwrap());
            }
            if self.ended || !self.chunk().await {
                assert!(
                    self.body.is_empty(),
                    "partial message at the end: {:?}",
                    self.body
                );
                return None;
            }
        }
    }

    /// Whether the server closed the body: the terminating chunk arrived and nothing is left.
    pub async fn assert_ended(&mut self) {
        assert!(self.ended || !self.chunk().await, "body did not end");
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

/// Waits (in real time, at most 10 s) until `n` subscriptions are parked on `topic`.
pub async fn parked(topic: &tower_push::memory::Topic, n: usize) {
    let wait = async {
        while topic.parked_subscriptions() != n {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("expected {n} parked, have {}", topic.parked_subscriptions()));
}
