//! Compressed answers over real HTTP/1.1 and HTTP/2 sockets, each coding decoded as a client
//! does, as the bytes arrive.

mod common;

use std::io::Read as _;
use std::time::Duration;

use common::decode::Decoder;
use common::{parked, quiet_stream, serve, RawResponse, NDJSON, SECOND, SSE};
use http_body_util::BodyExt;
use tokio::time::{timeout, Instant};
use tower::ServiceBuilder;
use tower_push::compression::{Coding, Compression};
use tower_push::{ChunkedStreamLayer, EventData, LongPollLayer, MemoryLog};

const CODINGS: [&str; 4] = ["gzip", "deflate", "br", "zstd"];

/// Every coding, br included (which `Compression::new` leaves out).
fn every_coding() -> Compression {
    Compression::new().codings([Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd])
}

/// An order event of about 300 bytes: objects with the same keys every time, as feeds are.
fn order(n: u64) -> EventData {
    let status = ["paid", "packed", "shipped", "delivered"][n as usize % 4];
    EventData::from_serialize(&serde_json::json!({
        "id": format!("ord_{:06}", n * 7919 % 1_000_000),
        "type": "order.updated",
        "status": status,
        "customer": {"id": format!("cus_{}", n * 31 % 10_000), "name": "Ada Lovelace", "email": "ada@example.com"},
        "items": [{"sku": format!("SKU-{}", 1000 + n % 90), "qty": 1 + n % 3, "price": 19.99}],
        "total": 19.99 * (1 + n % 3) as f64,
        "currency": "EUR",
        "updated_at": format!("2026-12-03T23:{:02}:{:02}.{:03}Z", n / 60 % 60, n % 60, n * 7 % 1000),
    }))
    .unwrap()
}

fn stream_layer(heartbeat: Duration) -> ChunkedStreamLayer {
    ChunkedStreamLayer::builder()
        .heartbeat_interval(heartbeat)
        .max_lifetime(Duration::from_secs(3600))
        .compression(every_coding())
        .build()
        .unwrap()
}

/// The next message that carries data, past the SSE opening (`id: <cursor>` alone).
async fn next_event(stream: &mut RawResponse, delimiter: &[u8]) -> String {
    loop {
        let message = timeout(5 * SECOND, stream.message(delimiter))
            .await
            .expect("the event stayed in the compressor")
            .unwrap();
        if delimiter == b"\n" || message.contains("\ndata: ") {
            return message;
        }
        assert!(message.starts_with("id: "), "{message:?}");
    }
}

/// Reads the raw bytes of the stream's chunks as they arrive, so that what the decoder makes of
/// each chunk is what a client has at that moment.
async fn open(addr: std::net::SocketAddr, coding: &str, accept: (&str, &str)) -> RawResponse {
    let stream = RawResponse::get(addr, "/", &[accept, ("accept-encoding", coding)]).await;
    assert_eq!(stream.status, 200, "{}", stream.head);
    assert_eq!(stream.header("content-encoding").as_deref(), Some(coding));
    assert_eq!(stream.header("vary").as_deref(), Some("accept-encoding"));
    assert!(stream.header("content-length").is_none());
    stream
}

#[tokio::test]
async fn each_event_decodes_before_the_next_is_published() {
    for coding in CODINGS {
        for (accept, delimiter) in [(SSE, &b"\n\n"[..]), (NDJSON, &b"\n"[..])] {
            let topic = MemoryLog::new().topic("orders");
            let addr = serve(stream_layer(Duration::from_secs(3600)).layer(topic.clone())).await;
            let mut stream = open(addr, coding, accept).await;
            let mut latencies = Vec::new();
            for n in 0..50 {
                // The stream has sent everything and waits: nothing would push bytes out but the
                // compressor's own flush.
                parked(&topic, 1).await;
                let published = Instant::now();
                let id = topic.publish(order(n));
                let message = next_event(&mut stream, delimiter).await;
                latencies.push(published.elapsed());
                assert!(message.contains(&id.to_string()), "{coding}: {message}");
                assert!(message.contains(&format!("ord_{:06}", n * 7919 % 1_000_000)));
            }
            latencies.sort();
            println!(
                "{coding} {}: publish to decoded p50 {:?}, max {:?}",
                accept.1, latencies[25], latencies[49]
            );
        }
    }
}

#[tokio::test]
async fn heartbeats_and_the_final_message_decode_and_end_the_coded_stream() {
    for coding in CODINGS {
        let topic = MemoryLog::new().topic("orders");
        let layer = ChunkedStreamLayer::builder()
            .heartbeat_interval(Duration::from_millis(50))
            .max_lifetime(Duration::from_millis(400))
            .lifetime_jitter(0.0)
            .compression(every_coding())
            .build()
            .unwrap();
        let addr = serve(layer.layer(topic.clone())).await;
        let mut stream = open(addr, coding, SSE).await;
        parked(&topic, 1).await;
        topic.publish(order(1));
        let event = next_event(&mut stream, b"\n\n").await;
        assert!(event.contains("ord_007919"), "{coding}: {event}");
        // A quiet stream's heartbeat is a comment, and decodes on its own.
        let heartbeat = timeout(5 * SECOND, stream.message(b"\n\n"))
            .await
            .unwrap()
            .unwrap();
        assert!(heartbeat.starts_with(':'), "{coding}: {heartbeat:?}");
        // The lifetime's end: the final message, then the end of the coded stream (gzip's
        // checksum and length checked by the decoder), then the end of the body.
        let last = loop {
            let message = timeout(5 * SECOND, stream.message(b"\n\n"))
                .await
                .unwrap()
                .unwrap();
            if !message.starts_with(':') {
                break message;
            }
        };
        assert!(
            last.contains("event: end") || last.contains("retry"),
            "{coding}: {last}"
        );
        stream.assert_ended().await;
    }
}

#[tokio::test]
async fn a_compressed_stream_resumes_from_last_event_id() {
    for coding in CODINGS {
        let topic = MemoryLog::new().topic("orders");
        let ids: Vec<_> = (0..20).map(|n| topic.publish(order(n))).collect();
        let addr = serve(stream_layer(Duration::from_secs(3600)).layer(topic.clone())).await;
        let last_seen = ids[9].to_string();
        let mut stream = RawResponse::get(
            addr,
            "/",
            &[
                SSE,
                ("accept-encoding", coding),
                ("last-event-id", &last_seen),
            ],
        )
        .await;
        assert_eq!(stream.header("content-encoding").as_deref(), Some(coding));
        for id in &ids[10..] {
            let message = next_event(&mut stream, b"\n\n").await;
            assert!(
                message.starts_with(&format!("id: {id}\n")),
                "{coding}: {message}"
            );
        }
    }
}

#[tokio::test]
async fn compression_saves_most_of_a_feeds_bytes() {
    // The same 200 events, uncompressed and in each coding, as the bytes on the wire count.
    let topic = MemoryLog::new().topic("orders");
    let addr = serve(stream_layer(Duration::from_secs(3600)).layer(topic.clone())).await;
    let mut streams = Vec::new();
    for coding in ["identity"].into_iter().chain(CODINGS) {
        let stream = RawResponse::get(addr, "/", &[SSE, ("accept-encoding", coding)]).await;
        streams.push((coding, stream));
    }
    for n in 0..200 {
        parked(&topic, streams.len()).await;
        topic.publish(order(n));
        for (_, stream) in &mut streams {
            next_event(stream, b"\n\n").await;
        }
    }
    let wire: Vec<(&str, usize)> = streams.iter().map(|(c, s)| (*c, s.wire_bytes())).collect();
    let identity = wire[0].1 as f64;
    for (coding, bytes) in &wire[1..] {
        let ratio = *bytes as f64 / identity;
        println!("{coding}: {bytes} of {identity} bytes on the wire ({ratio:.3}x)");
        assert!(ratio < 0.4, "{coding}: {ratio:.3}x of identity");
    }
}

/// A long-poll layer on a topic of twenty orders, compressing answers of `min_size` bytes or
/// more in every coding: its address, the topic and the cursor before the orders.
async fn twenty_orders_compressed_above(
    min_size: usize,
) -> (
    std::net::SocketAddr,
    tower_push::memory::Topic,
    tower_push::Cursor,
) {
    let topic = MemoryLog::new().topic("orders");
    let start = topic.head();
    let layer = LongPollLayer::builder()
        .hold_timeout(Duration::from_millis(100))
        .compression(every_coding().min_size(min_size))
        .build()
        .unwrap();
    let addr = serve(layer.layer(topic.clone())).await;
    for n in 0..20 {
        topic.publish(order(n));
    }
    (addr, topic, start)
}

#[tokio::test]
async fn long_poll_answers_are_compressed_above_the_minimum_size() {
    let (addr, topic, start) = twenty_orders_compressed_above(512).await;
    for coding in CODINGS {
        // Twenty events: several KiB, compressed whole.
        let path = format!("/?after={start}");
        let mut answer = RawResponse::get(addr, &path, &[("accept-encoding", coding)]).await;
        assert_eq!(answer.status, 200, "{}", answer.head);
        assert_eq!(answer.header("content-encoding").as_deref(), Some(coding));
        assert_eq!(answer.header("vary").as_deref(), Some("accept-encoding"));
        let length: usize = answer.header("content-length").unwrap().parse().unwrap();
        let body = answer.raw_content().await;
        assert_eq!(body.len(), length);
        let json = decode_whole(coding, &body);
        let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(json["events"].as_array().unwrap().len(), 20, "{coding}");
    }
    // One small event: not worth compressing, unless identity is refused.
    let small = topic.head();
    topic.publish(EventData::from_json("1").unwrap());
    let path = format!("/?after={small}");
    let mut plain = RawResponse::get(addr, &path, &[("accept-encoding", "gzip")]).await;
    assert!(plain.header("content-encoding").is_none(), "{}", plain.head);
    assert_eq!(plain.header("vary").as_deref(), Some("accept-encoding"));
    assert!(plain.content().await.unwrap().contains("\"data\":1"));
    let mut forced =
        RawResponse::get(addr, &path, &[("accept-encoding", "gzip, identity;q=0")]).await;
    assert_eq!(forced.header("content-encoding").as_deref(), Some("gzip"));
    let body = forced.raw_content().await;
    assert!(String::from_utf8(decode_whole("gzip", &body))
        .unwrap()
        .contains("\"data\":1"));
    // A hold that ends empty is a 204, without a body to compress.
    let path = format!("/?after={}", topic.head());
    let empty = RawResponse::get(addr, &path, &[("accept-encoding", "gzip")]).await;
    assert_eq!(empty.status, 204);
    assert!(empty.header("content-encoding").is_none());
}

/// Every line of `head` named `name`, values trimmed.
fn header_lines(head: &str, name: &str) -> Vec<String> {
    head.lines()
        .skip(1)
        .filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn polls_answered_with_one_shared_answer_each_get_its_headers_once() {
    let (addr, _, start) = twenty_orders_compressed_above(512).await;
    // The same batch for every poll: from the second on, each gets a copy of one answer,
    // whatever coding it then goes out in.
    let path = format!("/?after={start}");
    for accept in ["", "", "gzip", "", "gzip", "identity"] {
        let headers: &[(&str, &str)] = if accept.is_empty() {
            &[]
        } else {
            &[("accept-encoding", accept)]
        };
        let mut answer = RawResponse::get(addr, &path, headers).await;
        assert_eq!(answer.status, 200, "{}", answer.head);
        for (name, value) in [
            ("vary", "accept-encoding"),
            ("cache-control", "no-cache, no-store, no-transform"),
            ("x-accel-buffering", "no"),
            ("content-type", "application/json"),
        ] {
            assert_eq!(
                header_lines(&answer.head, name),
                [value],
                "{name} for {accept:?}: {}",
                answer.head
            );
        }
        let coding = (accept == "gzip").then_some("gzip");
        assert_eq!(answer.header("content-encoding").as_deref(), coding);
        let body = answer.raw_content().await;
        let json = match coding {
            Some(coding) => decode_whole(coding, &body),
            None => body,
        };
        let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(json["events"].as_array().unwrap().len(), 20, "{accept:?}");
    }
}

#[tokio::test]
async fn malformed_or_unknown_codings_get_identity() {
    let topic = MemoryLog::new().topic("orders");
    let start = topic.head();
    topic.publish(order(1));
    let path = format!("/?after={start}");
    let addr = serve(stream_layer(Duration::from_secs(3600)).layer(topic.clone())).await;
    for field in [
        "gzip;q=2",
        "gzip;q=abc",
        "compress",
        "x-unknown, *;q=0",
        "identity",
    ] {
        let mut stream = RawResponse::get(addr, &path, &[SSE, ("accept-encoding", field)]).await;
        assert_eq!(stream.status, 200, "{field}: {}", stream.head);
        assert!(stream.header("content-encoding").is_none(), "{field}");
        assert_eq!(stream.header("vary").as_deref(), Some("accept-encoding"));
        let message = next_event(&mut stream, b"\n\n").await;
        assert!(message.contains("ord_"), "{field}: {message}");
    }
    // Without compression configured, nothing says it varies.
    let plain = serve(quiet_stream().build().unwrap().layer(topic.clone())).await;
    let stream = RawResponse::get(plain, &path, &[SSE, ("accept-encoding", "gzip")]).await;
    assert!(stream.header("content-encoding").is_none());
    assert!(stream.header("vary").is_none());
}

#[tokio::test]
async fn tower_http_compression_around_leaves_a_compressed_answer_alone() {
    let topic = MemoryLog::new().topic("orders");
    let service = ServiceBuilder::new()
        .layer(tower_http::compression::CompressionLayer::new())
        .service(stream_layer(Duration::from_secs(3600)).layer(topic.clone()));
    let addr = serve(service).await;
    // NDJSON, which tower-http's default predicate would compress.
    let mut stream = open(addr, "gzip", NDJSON).await;
    parked(&topic, 1).await;
    topic.publish(order(7));
    let line = timeout(5 * SECOND, stream.message(b"\n"))
        .await
        .unwrap()
        .unwrap();
    assert!(line.contains("ord_055433"), "{line}");
}

#[tokio::test]
async fn compressed_streams_over_http2() {
    let topic = MemoryLog::new().topic("orders");
    let addr = serve(stream_layer(Duration::from_secs(3600)).layer(topic.clone())).await;
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(connection);
    for coding in CODINGS {
        let request = http::Request::get(format!("http://{addr}/"))
            .header("accept", "text/event-stream")
            .header("accept-encoding", coding)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.headers()["content-encoding"], coding);
        let mut body = response.into_body();
        let mut decoder = Decoder::of(Some(coding)).unwrap();
        for n in 0..5 {
            parked(&topic, 1).await;
            let id = topic.publish(order(n));
            let mut decoded = Vec::new();
            while !(decoded.ends_with(b"\n\n") && decoded.windows(6).any(|w| w == b"data: ")) {
                let frame = timeout(5 * SECOND, body.frame())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                decoded.extend(decoder.feed(&frame.into_data().unwrap()));
            }
            let text = String::from_utf8(decoded).unwrap();
            assert!(
                text.contains(&format!("id: {id}\ndata: ")),
                "{coding}: {text}"
            );
        }
    }
}

#[test]
fn codings_this_build_leaves_out_are_refused_when_built() {
    for coding in [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd] {
        let built = LongPollLayer::builder()
            .compression(Compression::new().codings([coding]))
            .build();
        assert_eq!(built.is_ok(), coding.is_built(), "{coding}");
    }
    let err = ChunkedStreamLayer::builder()
        .compression(Compression::new().window(100))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("window"), "{err}");
}

/// A whole compressed answer, decoded with the decoders' reading side (which checks gzip's and
/// zlib's checksums).
fn decode_whole(coding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        "deflate" => {
            flate2::read::ZlibDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        other => out = Decoder::of(Some(other)).unwrap().feed(body),
    }
    out
}
