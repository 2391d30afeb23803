//! Both layers behind a real nginx with a common production configuration: proxy buffering left
//! on, HTTP/1.1 to the upstream, a short `proxy_read_timeout`, and gzip for JSON, NDJSON and
//! event streams, read by a client that accepts gzip as browsers do.
//!
//! Each test starts its own nginx (in the foreground, with its own prefix, configuration, logs
//! and pid file in a temporary directory) in front of a server on `127.0.0.1:0`. They need the
//! `nginx` program: without it they are reported as ignored, and under `CI=true` as failed.

use crate::common;

use std::time::Duration;

use common::nginx::{Nginx, PROXY_READ_TIMEOUT};
use common::{data, parked, poll_layer, serve, End, RawResponse, NDJSON, SECOND, SSE};
use http::Response;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tower::Layer;
use tower_push::headers::X_ACCEL_BUFFERING;
use tower_push::memory::Topic;
use tower_push::{ChunkedStreamLayer, MemoryLog, PushBody, Shutdown};

const GZIP: (&str, &str) = ("accept-encoding", "gzip");

// ---------------------------------------------------------------------------------------------
// Helpers

/// The next message of `stream` that is not a heartbeat.
async fn event(stream: &mut RawResponse, delimiter: &[u8]) -> Result<String, End> {
    loop {
        let message = stream.message(delimiter).await?;
        if !is_heartbeat(&message) {
            return Ok(message);
        }
    }
}

fn is_heartbeat(message: &str) -> bool {
    message == "{\"heartbeat\":true}\n" || message == ": heartbeat\n\n"
}

fn stream_layer(heartbeat: Duration, shutdown: &Shutdown) -> ChunkedStreamLayer {
    ChunkedStreamLayer::builder()
        .heartbeat_interval(heartbeat)
        .max_lifetime(Duration::from_secs(600))
        .shutdown(shutdown.clone())
        .build()
        .unwrap()
}

/// Reads a stream's opening message, which must arrive at once and carry the head of `topic`
/// as its `id:` (SSE's start cursor).
async fn assert_opens_at_the_head(stream: &mut RawResponse, delimiter: &[u8], topic: &Topic) {
    let open = timeout(2 * SECOND, stream.message(delimiter)).await;
    let open = open.expect("the opening id arrives at once").unwrap();
    assert_eq!(open, format!("id: {}\n\n", topic.head()));
}

/// nginx in front of streams of a new topic with a heartbeat every `heartbeat`, and an NDJSON
/// stream through it that accepts gzip as browsers do, opened with 200.
async fn stream_through_nginx(heartbeat: Duration) -> (Topic, Nginx, RawResponse) {
    let topic = MemoryLog::new().topic("t");
    let layer = stream_layer(heartbeat, &Shutdown::new());
    let nginx = Nginx::start(serve(layer.layer(topic.clone())).await).await;
    let stream = RawResponse::get(nginx.addr, "/stream", &[NDJSON, GZIP]).await;
    assert_eq!(stream.status, 200, "{}", stream.head);
    (topic, nginx, stream)
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

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn through_nginx_each_event_arrives_before_the_next_is_published() {
    let topic = MemoryLog::new().topic("t");
    let layer = stream_layer(SECOND, &Shutdown::new());
    let nginx = Nginx::start(serve(layer.layer(topic.clone())).await).await;

    for (accept, delimiter, opens) in FRAMINGS {
        let mut stream = RawResponse::get(nginx.addr, "/stream", &[accept, GZIP]).await;
        assert_eq!(stream.status, 200, "{}", stream.head);
        assert_eq!(stream.header("content-encoding").as_deref(), Some("gzip"));
        // nginx consumes X-Accel-* headers and never passes them on.
        assert_eq!(stream.header("x-accel-buffering"), None);
        if opens {
            assert_opens_at_the_head(&mut stream, delimiter, &topic).await;
        }
        for n in 1..=5 {
            parked(&topic, 1).await;
            let published = Instant::now();
            let id = topic.publish(data(n));
            let message = timeout(2 * SECOND, event(&mut stream, delimiter))
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

/// The layers compress a stream themselves: nginx passes it through as it is, whether its own
/// gzip is on (it leaves an answer that has a `Content-Encoding` alone) or off, and each event
/// still arrives, and decodes, before the next is published.
#[tokio::main(flavor = "current_thread")]
pub(crate) async fn compressed_streams_pass_through_with_nginx_gzip_on_and_off() {
    let topic = MemoryLog::new().topic("t");
    let layer = ChunkedStreamLayer::builder()
        .heartbeat_interval(SECOND)
        .compression(tower_push::compression::Compression::new().codings([
            tower_push::compression::Coding::Gzip,
            tower_push::compression::Coding::Deflate,
            tower_push::compression::Coding::Brotli,
            tower_push::compression::Coding::Zstd,
        ]))
        .build()
        .unwrap();
    let upstream = serve(layer.layer(topic.clone())).await;
    for gzip in [true, false] {
        let nginx = Nginx::start_with(&[upstream], gzip, PROXY_READ_TIMEOUT).await;
        for coding in ["gzip", "br", "zstd", "deflate"] {
            for (accept, delimiter, opens) in FRAMINGS {
                let encoding = ("accept-encoding", coding);
                let mut stream = RawResponse::get(nginx.addr, "/stream", &[accept, encoding]).await;
                assert_eq!(stream.status, 200, "{}", stream.head);
                assert_eq!(
                    stream.header("content-encoding").as_deref(),
                    Some(coding),
                    "gzip {gzip}"
                );
                if opens {
                    assert_opens_at_the_head(&mut stream, delimiter, &topic).await;
                }
                for n in 1..=3 {
                    parked(&topic, 1).await;
                    let id = topic.publish(data(n));
                    let message = timeout(2 * SECOND, event(&mut stream, delimiter))
                        .await
                        .unwrap_or_else(|_| {
                            panic!("{coding}, nginx gzip {gzip}: event {n} was held")
                        })
                        .unwrap();
                    assert_eq!(event_of(&message, accept), (id.to_string(), n));
                }
                if gzip && coding == "zstd" && accept == SSE {
                    // Quiet for longer than nginx's read timeout: the compressed heartbeats,
                    // each flushed, keep the stream open, and the next event still comes.
                    tokio::time::sleep(PROXY_READ_TIMEOUT + SECOND).await;
                    let id = topic.publish(data(4));
                    let message = timeout(2 * SECOND, event(&mut stream, delimiter))
                        .await
                        .expect("the stream outlived the proxy's read timeout")
                        .unwrap();
                    assert_eq!(event_of(&message, accept), (id.to_string(), 4));
                }
                drop(stream);
                parked(&topic, 0).await;
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn without_x_accel_buffering_nginx_holds_the_events() {
    for (accept, delimiter, opens) in FRAMINGS {
        let topic = MemoryLog::new().topic("t");
        let shutdown = Shutdown::new();
        let layer = stream_layer(SECOND, &shutdown);
        let service = tower::util::MapResponseLayer::new(without_accel_header)
            .layer(layer.layer(topic.clone()));
        let nginx = Nginx::start(serve(service).await).await;

        // Read in a task: nginx holds even the response head.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let addr = nginx.addr;
        let reader = tokio::spawn(async move {
            let mut stream = RawResponse::get(addr, "/stream", &[accept, GZIP]).await;
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

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn heartbeats_keep_a_quiet_stream_open_past_the_proxy_read_timeout() {
    let (topic, _nginx, mut stream) = stream_through_nginx(Duration::from_millis(500)).await;
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
    let message = timeout(2 * SECOND, event(&mut stream, b"\n"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event_of(&message, NDJSON), (id.to_string(), 1));
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn without_heartbeats_nginx_cuts_a_quiet_stream_at_the_proxy_read_timeout() {
    let (_topic, nginx, mut stream) = stream_through_nginx(Duration::from_secs(3600)).await;
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

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn a_hold_below_the_proxy_read_timeout_ends_in_a_clean_204() {
    let topic = MemoryLog::new().topic("t");
    let below = Duration::from_millis(1500);
    let above = PROXY_READ_TIMEOUT + SECOND;
    let short = Nginx::start(serve(poll_layer(below).layer(topic.clone())).await).await;
    let long = Nginx::start(serve(poll_layer(above).layer(topic.clone())).await).await;
    let start = topic.head().to_string();
    let path = format!("/poll?after={start}");

    let timed = |addr| {
        let path = path.clone();
        async move {
            let sent = Instant::now();
            let reply = RawResponse::get(addr, &path, &[GZIP]).await;
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
    assert!(held.unread().is_empty());
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
            let mut reply = RawResponse::get(addr, &path, &[GZIP]).await;
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
