//! What a client that does not read costs: unread answers and streams of large events, over
//! HTTP/1.1 and over one HTTP/2 connection with a one-byte window, measured as this process's
//! memory. One test alone in its file, so that nothing else allocates in the process meanwhile.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{data, serve, RawResponse, SECOND};
use http::Request;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tower_push::memory::Topic;
use tower_push::{ChunkedStreamLayer, Cursor, EventData, LongPollLayer, MemoryLog};

/// How many requests each scenario leaves unread.
const UNREAD: usize = 60;
/// What they may cost together: `max_bytes` (256 KiB) and framing per request, with room for
/// allocator slack. Before answers were bounded by bytes, each one held 16.6 MB here.
const BOUND: usize = UNREAD * 512 * 1024;

/// This process's resident memory, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A topic with 256 events of 64 KiB: 16 MiB, all after `Cursor::zero`.
fn heavy_topic() -> (Topic, Cursor) {
    let topic = MemoryLog::new().topic("t");
    let start = Cursor::zero(topic.epoch());
    let event = EventData::from_json(format!("\"{}\"", "x".repeat(64 * 1024 - 2))).unwrap();
    for _ in 0..256 {
        topic.publish(event.clone());
    }
    (topic, start)
}

async fn servers(topic: &Topic) -> (SocketAddr, SocketAddr) {
    let poll = LongPollLayer::builder()
        .hold_timeout(60 * SECOND)
        .build()
        .unwrap();
    let poll = serve(poll.layer(topic.clone())).await;
    let stream = serve(ChunkedStreamLayer::new().layer(topic.clone())).await;
    (poll, stream)
}

fn assert_bounded(what: &str, before: usize) {
    let grown = rss().saturating_sub(before);
    println!(
        "{what}: {UNREAD} unread requests, memory +{} KiB",
        grown / 1024
    );
    assert!(
        grown < BOUND,
        "{what}: +{} KiB for {UNREAD} unread requests, bound {} KiB",
        grown / 1024,
        BOUND / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_answers_and_streams_stay_bounded_over_http1_and_http2() {
    let (topic, start) = heavy_topic();
    let (poll, stream) = servers(&topic).await;
    // Warm up the allocator and both paths once.
    let _ = common::get(poll, &format!("/poll?after={start}")).await;
    topic.publish(data(1));

    // HTTP/1.1: each request on its own connection, whose client reads only the head.
    let before = rss();
    let mut held = Vec::new();
    for i in 0..UNREAD {
        let (addr, path) = if i % 2 == 0 {
            (poll, "poll")
        } else {
            (stream, "stream")
        };
        held.push(RawResponse::get(addr, &format!("/{path}?after={start}"), &[]).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_bounded("HTTP/1.1", before);
    drop(held);

    // HTTP/2: every request on one connection whose windows let one byte through.
    let before = rss();
    let io = TokioIo::new(TcpStream::connect(poll).await.unwrap());
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(1)
        .initial_connection_window_size(1)
        .handshake::<_, Empty<Bytes>>(io)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut responses = Vec::new();
    for _ in 0..UNREAD {
        let request = Request::get(format!("http://{poll}/poll?after={start}"))
            .body(Empty::new())
            .unwrap();
        sender.ready().await.unwrap();
        responses.push(tokio::spawn(sender.send_request(request)));
    }
    let mut unread = Vec::new();
    for response in responses {
        let response = response.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        // Kept, not read: the server holds what it could not send.
        unread.push(response);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_bounded("HTTP/2, one-byte window", before);
    drop(unread);
}
