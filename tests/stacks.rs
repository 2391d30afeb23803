//! Both layers in the stacks users run: plain hyper (HTTP/1.1 and HTTP/2), axum, tonic beside a
//! real gRPC service, and tower-http's compression, timeout, trace and CORS layers, each over
//! real sockets.

// The examples themselves, so that these tests run the code a reader copies.
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/axum.rs"]
mod axum_example;
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/hyper.rs"]
mod hyper_example;
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/tonic.rs"]
mod tonic_example;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tower_http::compression::predicate::DefaultPredicate;
use tower_http::compression::{CompressionLayer, Predicate};
use tower_push::memory::Topic;
use tower_push::{
    ChunkedStreamBuilder, ChunkedStreamLayer, LongPollBuilder, LongPollLayer, MemoryLog, Shutdown,
};

const SECOND: Duration = Duration::from_secs(1);

/// What each example's `main` builds: the log, both layers, and the shutdown signal they share.
struct App {
    log: MemoryLog,
    poll: LongPollLayer,
    stream: ChunkedStreamLayer,
    shutdown: Shutdown,
}

impl App {
    fn with(poll: LongPollBuilder, stream: ChunkedStreamBuilder) -> Self {
        let shutdown = Shutdown::new();
        Self {
            log: MemoryLog::new(),
            poll: poll.shutdown(shutdown.clone()).build().unwrap(),
            stream: stream.shutdown(shutdown.clone()).build().unwrap(),
            shutdown,
        }
    }

    /// The topic of the routes without a topic in the path.
    fn topic(&self) -> Topic {
        self.log.topic("default")
    }

    /// The router of the axum and tonic examples.
    fn router(&self) -> axum::Router {
        axum_example::router(&self.log, self.poll.clone(), self.stream.clone())
    }

    /// The routes of the hyper example.
    fn hyper_routes(&self) -> hyper_example::Routes {
        hyper_example::Routes {
            topic: self.topic(),
            poll: self.poll.clone(),
            stream: self.stream.clone(),
        }
    }
}

/// An app whose holds end quickly, so 204s come in real time without slowing the suite.
fn quick_app() -> App {
    App::with(
        LongPollLayer::builder().hold_timeout(Duration::from_millis(300)),
        ChunkedStreamLayer::builder().heartbeat_interval(Duration::from_secs(3600)),
    )
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Serves `router` with the axum example's `serve` on a new port, for the rest of the test.
async fn serve_axum(router: axum::Router) -> SocketAddr {
    let (listener, addr) = listener().await;
    tokio::spawn(axum_example::serve(
        listener,
        router,
        std::future::pending(),
    ));
    addr
}

/// One connection, HTTP/1.1 or HTTP/2 with prior knowledge.
enum Client {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Client {
    async fn connect(addr: SocketAddr, version: Version) -> Self {
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        if version == Version::HTTP_2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Client::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Client::H1(sender)
        }
    }

    async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
        let mut request = Request::get(format!("http://test{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Empty::new()).unwrap();
        let response = match self {
            Client::H1(sender) => sender.send_request(request).await,
            Client::H2(sender) => sender.send_request(request).await,
        };
        response.unwrap()
    }
}

async fn publish(addr: SocketAddr, path: &str, json: &str) -> (StatusCode, serde_json::Value) {
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

/// No connection-specific headers on HTTP/2; on HTTP/1.1 only hyper's own chunked framing.
fn assert_no_connection_headers(response: &Response<Incoming>) {
    for name in ["connection", "keep-alive"] {
        assert!(response.headers().get(name).is_none(), "{name} present");
    }
    let framing = response.headers().get("transfer-encoding");
    match response.version() {
        Version::HTTP_2 => assert!(framing.is_none(), "transfer-encoding on HTTP/2"),
        _ => assert!(framing.is_none_or(|v| v == "chunked"), "{framing:?}"),
    }
    assert_eq!(response.headers()["x-accel-buffering"], "no");
}

/// The next data frame of a body, as text.
async fn next_text(body: &mut Incoming) -> String {
    loop {
        let frame = timeout(5 * SECOND, body.frame())
            .await
            .expect("a frame in time")
            .expect("the body is still open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            return String::from_utf8(data.to_vec()).unwrap();
        }
    }
}

/// Long poll (200 with an event, then 204 at the head) and a stream (an event as it is
/// published) through `addr`, over `version`.
async fn exercise(addr: SocketAddr, version: Version, prefix: &str) {
    let mut client = Client::connect(addr, version).await;

    let (status, first) = publish(addr, &format!("{prefix}/publish"), r#"{"n":1}"#).await;
    assert_eq!(status, 200);
    let first = first["id"].as_str().unwrap().to_owned();
    let epoch = first.split('-').next().unwrap();
    let response = client
        .get(&format!("{prefix}/poll?after={epoch}-0"), &[])
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), version);
    assert_no_connection_headers(&response);
    assert_eq!(response.headers()["push-cursor"], first.as_str());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["events"][0]["data"]["n"], 1);

    let response = client
        .get(&format!("{prefix}/poll?after={first}"), &[])
        .await;
    assert_eq!(response.status(), 204);
    assert_no_connection_headers(&response);
    assert_eq!(response.headers()["push-cursor"], first.as_str());

    for (accept, content_type) in [
        ("application/x-ndjson", "application/x-ndjson"),
        ("text/event-stream", "text/event-stream"),
    ] {
        // An HTTP/1.1 connection is busy for as long as a stream is open: one per stream.
        let mut client = Client::connect(addr, version).await;
        let response = client
            .get(
                &format!("{prefix}/stream?after={first}"),
                &[("accept", accept)],
            )
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), version);
        assert_eq!(response.headers()["content-type"], content_type);
        assert_no_connection_headers(&response);
        let mut body = response.into_body();
        if accept == "text/event-stream" {
            assert!(next_text(&mut body).await.contains("id: "));
        }
        for n in 2..=3 {
            let (_, id) = publish(
                addr,
                &format!("{prefix}/publish"),
                &format!("{{\"n\":{n}}}"),
            )
            .await;
            let text = next_text(&mut body).await;
            assert!(text.contains(id["id"].as_str().unwrap()), "{text}");
            assert!(text.contains(&format!("{{\"n\":{n}}}")), "{text}");
        }
    }
}

#[tokio::test]
async fn hyper_stack_over_http1_and_http2() {
    let (listener, addr) = listener().await;
    let app = quick_app();
    tokio::spawn(hyper_example::serve(
        listener,
        app.hyper_routes(),
        std::future::pending(),
    ));
    exercise(addr, Version::HTTP_11, "").await;
    exercise(addr, Version::HTTP_2, "").await;
}

#[tokio::test]
async fn axum_stack_with_topics_from_the_path() {
    let addr = serve_axum(quick_app().router()).await;
    exercise(addr, Version::HTTP_11, "").await;
    exercise(addr, Version::HTTP_11, "/topics/chat").await;
    exercise(addr, Version::HTTP_2, "/topics/other").await;

    let mut client = Client::connect(addr, Version::HTTP_11).await;
    let response = client.get("/topics/missing/poll", &[]).await;
    assert_eq!(response.status(), 404);
    let (status, body) = publish(addr, "/topics/bad%20name/publish", "1").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_topic");
    let (status, body) = publish(addr, "/topics/chat/publish", "{nope").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_json");
}

#[tokio::test]
async fn tonic_stack_serves_grpc_health_beside_the_push_routes() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let (listener, addr) = listener().await;
    let app = quick_app();
    tokio::spawn(tonic_example::serve(
        listener,
        app.router(),
        std::future::pending(),
    ));

    let channel = tonic::transport::Endpoint::new(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let check = |service: &str| HealthCheckRequest {
        service: service.to_owned(),
    };
    let answer = health.check(check("")).await.unwrap();
    assert_eq!(answer.get_ref().status(), ServingStatus::Serving);
    // A gRPC error passes through untouched too.
    let missing = health.check(check("no.such.Service")).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    exercise(addr, Version::HTTP_2, "").await;
    exercise(addr, Version::HTTP_11, "/topics/t").await;

    let answer = health.check(check("")).await.unwrap();
    assert_eq!(answer.get_ref().status(), ServingStatus::Serving);
}

/// Reads frames until `needle` shows up in the decoded text, or `wait` passes.
async fn arrives_within(
    body: &mut Incoming,
    decoder: &mut Option<flate2::write::GzDecoder<Vec<u8>>>,
    needle: &str,
    wait: Duration,
) -> bool {
    use std::io::Write;
    let deadline = tokio::time::Instant::now() + wait;
    let mut seen = String::new();
    loop {
        let Ok(frame) = tokio::time::timeout_at(deadline, body.frame()).await else {
            return false;
        };
        let Some(Ok(frame)) = frame else { return false };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match decoder {
            Some(gz) => {
                gz.write_all(&data).unwrap();
                gz.flush().unwrap();
                seen.push_str(&String::from_utf8_lossy(&std::mem::take(gz.get_mut())));
            }
            None => seen.push_str(&String::from_utf8_lossy(&data)),
        }
        if seen.contains(needle) {
            return true;
        }
    }
}

/// Streams through `CompressionLayer` with a client that accepts gzip; reports the
/// `content-encoding` and whether each event arrived before the next was published.
async fn stream_through_compression<P>(predicate: P, accept: &str) -> (Option<String>, Vec<bool>)
where
    P: Predicate + Send + Sync + 'static,
{
    let app = quick_app();
    let router = app
        .router()
        .layer(CompressionLayer::new().compress_when(predicate));
    let addr = serve_axum(router).await;

    let (_, first) = publish(addr, "/publish", "0").await;
    let first = first["id"].as_str().unwrap().to_owned();
    let mut client = Client::connect(addr, Version::HTTP_11).await;
    let response = client
        .get(
            &format!("/stream?after={first}"),
            &[("accept", accept), ("accept-encoding", "gzip")],
        )
        .await;
    let encoding = response
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut decoder = encoding
        .as_deref()
        .map(|_| flate2::write::GzDecoder::new(Vec::new()));
    let mut body = response.into_body();
    let mut prompt = Vec::new();
    for n in 1..=3 {
        let marker = format!("{{\"n\":{n}}}");
        publish(addr, "/publish", &marker).await;
        prompt.push(arrives_within(&mut body, &mut decoder, &marker, SECOND).await);
    }
    (encoding, prompt)
}

#[tokio::test]
async fn compression_with_the_predicate_leaves_streams_alone() {
    let predicate = DefaultPredicate::new().and(tower_push::compression::not_push);
    for accept in ["application/x-ndjson", "text/event-stream"] {
        let (encoding, prompt) = stream_through_compression(predicate.clone(), accept).await;
        assert_eq!(encoding, None, "{accept}");
        assert_eq!(
            prompt,
            [true, true, true],
            "{accept}: every event arrived at once"
        );
    }
}

#[tokio::test]
async fn compression_without_the_predicate_compresses_ndjson_streams() {
    // tower-http's default predicate skips SSE but not NDJSON: the stream goes out
    // gzip-encoded, with a compressor (and its window, hundreds of KiB) per open stream, and
    // every intermediary must decode it incrementally. Whether events are also delayed depends
    // on the compressor flushing when the body is pending, which current versions do.
    let (encoding, prompt) =
        stream_through_compression(DefaultPredicate::new(), "application/x-ndjson").await;
    assert_eq!(encoding.as_deref(), Some("gzip"));
    println!("events prompt through the compressor: {prompt:?}");
    // SSE is skipped by the default predicate already.
    let (encoding, _) =
        stream_through_compression(DefaultPredicate::new(), "text/event-stream").await;
    assert_eq!(encoding, None);
}

#[tokio::test]
async fn compression_predicate_keeps_compressing_other_responses() {
    use tower_http::compression::Predicate as _;
    let predicate = DefaultPredicate::new().and(tower_push::compression::not_push);
    let big = Response::new(http_body_util::Full::new(Bytes::from(vec![b'a'; 4096])));
    assert!(predicate.should_compress(&big));
}

#[tokio::test]
async fn an_outer_timeout_shorter_than_the_hold_cuts_polls() {
    use tower_http::timeout::TimeoutLayer;
    let hold = Duration::from_millis(600);
    for (outer, expected) in [
        (Duration::from_millis(100), StatusCode::REQUEST_TIMEOUT),
        (Duration::from_secs(30), StatusCode::NO_CONTENT),
    ] {
        let app = App::with(
            LongPollLayer::builder().hold_timeout(hold),
            ChunkedStreamLayer::builder(),
        );
        let router = app.router().layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            outer,
        ));
        let addr = serve_axum(router).await;
        let mut client = Client::connect(addr, Version::HTTP_11).await;
        let started = tokio::time::Instant::now();
        let response = client.get("/poll", &[]).await;
        assert_eq!(response.status(), expected, "outer timeout {outer:?}");
        assert!(started.elapsed() >= outer.min(hold));

        // The timeout covers only the response future: a stream outlives it.
        if expected == StatusCode::REQUEST_TIMEOUT {
            let response = client
                .get("/stream", &[("accept", "application/x-ndjson")])
                .await;
            assert_eq!(response.status(), 200);
            let mut body = response.into_body();
            tokio::time::sleep(outer * 3).await;
            publish(addr, "/publish", "{\"late\":true}").await;
            assert!(next_text(&mut body).await.contains("late"));
        }
    }
}

#[tokio::test]
async fn trace_and_cors_layers_around_both_layers() {
    use tower_http::cors::CorsLayer;
    use tower_http::trace::TraceLayer;
    let app = quick_app();
    let router = app
        .router()
        .layer(TraceLayer::new_for_http())
        .layer(CorsLayer::permissive());
    let addr = serve_axum(router).await;
    let mut client = Client::connect(addr, Version::HTTP_11).await;
    let (_, first) = publish(addr, "/publish", "1").await;
    let first = first["id"].as_str().unwrap().to_owned();

    let origin = [("origin", "https://app.example")];
    let response = client.get(&format!("/poll?after={first}"), &origin).await;
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");

    let headers = [
        ("origin", "https://app.example"),
        ("accept", "text/event-stream"),
    ];
    let response = client
        .get(&format!("/stream?after={first}"), &headers)
        .await;
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let mut body = response.into_body();
    assert!(next_text(&mut body).await.contains("id: "));
    publish(addr, "/publish", "{\"traced\":true}").await;
    assert!(next_text(&mut body).await.contains("traced"));
}

#[tokio::test]
async fn shutdown_drains_the_axum_and_tonic_stacks() {
    for stack in ["axum", "tonic", "hyper"] {
        let (listener, addr) = listener().await;
        let app = App::with(
            LongPollLayer::builder().hold_timeout(Duration::from_secs(3600)),
            ChunkedStreamLayer::builder().heartbeat_interval(Duration::from_secs(3600)),
        );
        let (topic, shutdown) = (app.topic(), app.shutdown.clone());
        // As in each example's `main`: the server stops when the layers start draining.
        let stop = shutdown.wait();
        let server = match stack {
            "axum" => tokio::spawn(async move {
                axum_example::serve(listener, app.router(), stop)
                    .await
                    .unwrap();
            }),
            "tonic" => tokio::spawn(async move {
                tonic_example::serve(listener, app.router(), stop)
                    .await
                    .unwrap();
            }),
            _ => tokio::spawn(async move {
                assert!(hyper_example::serve(listener, app.hyper_routes(), stop).await);
            }),
        };
        let mut client = Client::connect(addr, Version::HTTP_2).await;
        let stream = client
            .get("/stream", &[("accept", "application/x-ndjson")])
            .await;
        let poll = tokio::spawn(async move {
            let mut client = Client::connect(addr, Version::HTTP_11).await;
            client.get("/poll", &[]).await.status()
        });
        timeout(5 * SECOND, async {
            while topic.parked_subscriptions() < 2 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("stream and poll parked");
        shutdown.trigger();
        let mut body = stream.into_body();
        assert!(
            next_text(&mut body).await.contains("\"end\":\"shutdown\""),
            "{stack}"
        );
        assert_eq!(
            timeout(5 * SECOND, poll).await.unwrap().unwrap(),
            204,
            "{stack}"
        );
        drop(body);
        drop(client);
        timeout(5 * SECOND, server)
            .await
            .expect("server drained")
            .unwrap();
    }
}
