//! Overload caps, jittered holds, one poll per client, slow consumers and hostile input, over
//! real sockets.

mod common;

use std::time::Duration;

use common::{
    assert_foreign_cursors_resync, assert_spread, data, get, get_with, parked, poll_layer,
    poll_server, quiet_stream, request, serve, wait_until, RawResponse, SECOND,
};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;
use tower::ServiceExt;
use tower_push::{ChunkedStreamLayer, Cursor, EventData, LongPollLayer, MemoryLog};

fn topic_of(parts: &http::request::Parts) -> Option<String> {
    parts.uri.path().strip_prefix("/t/").map(str::to_owned)
}

#[tokio::test]
async fn polls_beyond_the_caps_get_503_overloaded() {
    let topic = MemoryLog::new().topic("t");
    let layer = LongPollLayer::builder()
        .hold_timeout(Duration::from_secs(60))
        .max_held(3)
        .max_held_per_key(2, topic_of)
        .build()
        .unwrap();
    let addr = serve(layer.layer(topic.clone())).await;
    let head = topic.head();

    let held: Vec<_> = ["/t/a", "/t/a", "/t/b"]
        .into_iter()
        .map(|path| tokio::spawn(async move { get(addr, &format!("{path}?after={head}")).await }))
        .collect();
    parked(&topic, 3).await;
    assert_eq!(layer.held(), 3);

    for path in ["/t/a", "/t/c", "/other"] {
        let reply = timeout(5 * SECOND, get(addr, &format!("{path}?after={head}")))
            .await
            .unwrap();
        assert_eq!(reply.status, 503, "{path}");
        reply.assert_push_headers();
        assert_eq!(reply.json()["error"], "overloaded");
        let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=5).contains(&retry));
    }

    topic.publish(data(1));
    for poll in held {
        assert_eq!(
            timeout(5 * SECOND, poll).await.unwrap().unwrap().status,
            200
        );
    }
    assert_eq!(layer.held(), 0, "every place was given back");
    let reply = get(addr, &format!("/t/a?after={head}")).await;
    assert_eq!(reply.status, 200, "room again");
}

#[tokio::test]
async fn streams_beyond_the_caps_get_503_overloaded() {
    let topic = MemoryLog::new().topic("t");
    let layer = ChunkedStreamLayer::builder()
        .max_held(2)
        .max_held_per_key(1, topic_of)
        .build()
        .unwrap();
    let addr = serve(layer.layer(topic.clone())).await;
    let ndjson = [("accept", "application/x-ndjson")];

    let first = RawResponse::get(addr, "/t/a", &ndjson).await;
    assert_eq!(first.status, 200);
    let same_key = RawResponse::get(addr, "/t/a", &ndjson).await;
    assert_eq!(same_key.status, 503);
    let second = RawResponse::get(addr, "/t/b", &ndjson).await;
    assert_eq!(second.status, 200);
    let over_total = RawResponse::get(addr, "/t/c", &ndjson).await;
    assert_eq!(over_total.status, 503);
    assert!(over_total.header("retry-after").is_some());
    assert_eq!(layer.held(), 2);

    drop(first);
    wait_until(
        "a disconnected stream to give its place back",
        5 * SECOND,
        || layer.held() == 1,
    )
    .await;
    let again = RawResponse::get(addr, "/t/a", &ndjson).await;
    assert_eq!(again.status, 200);
}

#[tokio::test(start_paused = true)]
async fn jittered_holds_spread_the_204s() {
    let topic = MemoryLog::new().topic("t");
    let hold = Duration::from_secs(100);
    let layer = LongPollLayer::builder()
        .hold_timeout(hold)
        .hold_jitter(0.5)
        .build()
        .unwrap();
    let addr = serve(layer.layer(topic.clone())).await;
    let head = topic.head();
    assert_spread(10, hold, move || async move {
        let reply = get(addr, &format!("/poll?after={head}")).await;
        assert_eq!(reply.status, 204);
    })
    .await;
}

#[tokio::test]
async fn a_second_poll_of_a_client_answers_the_first_at_once() {
    let topic = MemoryLog::new().topic("t");
    let layer = LongPollLayer::builder()
        .hold_timeout(Duration::from_secs(60))
        .one_poll_per_client(|parts| {
            let id = parts.headers.get("x-client-id")?.to_str().ok()?;
            Some(id.to_owned())
        })
        .build()
        .unwrap();
    let addr = serve(layer.layer(topic.clone())).await;
    let cursor = topic.publish(data(1));
    let path = format!("/poll?after={cursor}");

    let poll = |client: &'static str| {
        let path = path.clone();
        tokio::spawn(
            async move { get_with(addr, &path, &[("x-client-id", client.as_bytes())]).await },
        )
    };
    let first = poll("alice");
    let other = poll("bob");
    parked(&topic, 2).await;
    let second = poll("alice");

    let reply = timeout(5 * SECOND, first)
        .await
        .expect("answered at once")
        .unwrap();
    assert_eq!(reply.status, 204);
    assert_eq!(
        reply.header("push-cursor"),
        Some(cursor.to_string().as_str())
    );
    parked(&topic, 2).await;

    let id = topic.publish(data(2));
    for poll in [second, other] {
        let reply = timeout(5 * SECOND, poll).await.unwrap().unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("push-cursor"), Some(id.to_string().as_str()));
    }
}

/// A client that stops reading costs the server a fixed amount: the stream asks its source for
/// more only when the socket takes what it has, so when the client falls behind retention it
/// gets the resync message instead of an ever-growing buffer.
#[tokio::test]
async fn a_client_that_stops_reading_falls_behind_and_gets_a_resync() {
    let log = MemoryLog::builder().retention(50).build().unwrap();
    let topic = log.topic("t");
    let layer = quiet_stream().max_events(10).build().unwrap();
    let addr = serve(layer.layer(topic.clone())).await;
    let mut stream = RawResponse::get(addr, "/s", &[("accept", "application/x-ndjson")]).await;
    assert_eq!(stream.status, 200);

    // 64 MiB of events, far more than the socket buffers hold, while the client reads nothing.
    let payload = "x".repeat(64 * 1024);
    for _ in 0..1024 {
        topic.publish(EventData::from_serialize(&payload).unwrap());
        tokio::task::yield_now().await;
    }

    let mut events = 0;
    let last = loop {
        let line = timeout(10 * SECOND, stream.message(b"\n"))
            .await
            .unwrap()
            .expect("the stream ends with a message");
        if line.starts_with("{\"id\"") {
            events += 1;
            continue;
        }
        break line;
    };
    let value: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(value["error"], "cursor_expired", "{last}");
    assert!(
        events < 1024,
        "the stream did not buffer everything: {events} events"
    );
    timeout(5 * SECOND, stream.assert_ended()).await.unwrap();
    println!("the stalled client got {events} of 1024 events, then a resync");
}

#[tokio::test]
async fn hostile_requests_get_4xx_and_never_hang() {
    let (topic, addr) = poll_server(Duration::from_secs(60)).await;
    let epoch = topic.head().epoch();
    let long_value = "9".repeat(10_000);
    let many = "x=1&".repeat(500);
    let malformed = Some("malformed_cursor");
    type Case<'a> = (String, Vec<(&'a str, Vec<u8>)>, u16, Option<&'a str>);
    let cases: Vec<Case<'_>> = vec![
        (format!("/poll?after={long_value}"), vec![], 400, malformed),
        (
            format!("/poll?{many}after={epoch}-0&after={epoch}-1"),
            vec![],
            400,
            malformed,
        ),
        ("/poll?after=%00%01".to_owned(), vec![], 400, malformed),
        ("/poll?after=%E2%82".to_owned(), vec![], 400, malformed),
        (
            "/poll".to_owned(),
            vec![("last-event-id", vec![0xff; 100])],
            400,
            malformed,
        ),
        (
            "/poll".to_owned(),
            vec![("last-event-id", b"-".to_vec())],
            400,
            malformed,
        ),
        (
            "/poll".to_owned(),
            vec![(
                "last-event-id",
                format!("{epoch}-{}", u64::MAX).into_bytes(),
            )],
            400,
            Some("cursor_ahead"),
        ),
        // hyper refuses a head over its limit itself.
        (
            "/poll".to_owned(),
            vec![("x-huge", vec![b'a'; 1 << 20])],
            431,
            None,
        ),
    ];
    for (path, headers, status, code) in cases {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, &v[..])).collect();
        let reply = timeout(5 * SECOND, get_with(addr, &path, &headers))
            .await
            .unwrap_or_else(|_| panic!("{path} hung"));
        assert_eq!(reply.status, status, "{}", &path[..path.len().min(80)]);
        if let Some(code) = code {
            assert_eq!(reply.json()["error"], code);
        }
    }

    // Garbage instead of HTTP closes the connection; the server keeps serving.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"\x16\x03\x01 not http at all\r\n\r\n")
        .await
        .unwrap();
    let reply = timeout(
        5 * SECOND,
        get(addr, &format!("/poll?after={}", Cursor::new(epoch, 99))),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 400);
    assert_eq!(topic.parked_subscriptions(), 0);
}

#[tokio::test]
async fn a_cursor_of_another_topic_or_log_gets_a_resync_on_both_layers() {
    let log = MemoryLog::new();
    let (a, b) = (log.topic("a"), log.topic("b"));
    for n in 1..=20 {
        a.publish(data(n));
        b.publish(data(n));
    }
    let poll = serve(poll_layer(60 * SECOND).layer(b.clone())).await;
    let stream = serve(ChunkedStreamLayer::new().layer(b.clone())).await;
    // Before cursors were bound to their topic, `a`'s cursor 11 on `b` answered `b`'s events
    // 12 to 20 as if they followed, and silently skipped 1 to 11.
    let other_log = MemoryLog::new().topic("b");
    other_log.publish(data(1));
    let foreign = [
        Cursor::new(a.epoch(), 11),
        a.head(),
        Cursor::zero(a.epoch()),
        other_log.head(),
    ];
    assert_foreign_cursors_resync(poll, stream, &foreign).await;
}

/// One event of about `kib` KiB: a JSON string.
fn heavy(kib: usize) -> EventData {
    EventData::from_json(format!("\"{}\"", "x".repeat(kib * 1024 - 2))).unwrap()
}

#[tokio::test]
async fn big_events_are_split_by_bytes_so_an_unread_answer_stays_bounded() {
    let topic = MemoryLog::new().topic("t");
    let start = topic.head();
    for _ in 0..20 {
        topic.publish(heavy(64));
    }
    // 20 events of 64 KiB: 1.25 MiB in one answer before, 256 KiB (four events) now.
    let bound = 256 * 1024 + 4 * 100;
    let poll = serve(poll_layer(60 * SECOND).layer(topic.clone())).await;
    let mut cursor = start.to_string();
    let mut counts = Vec::new();
    while cursor != topic.head().to_string() {
        let reply = get(poll, &format!("/poll?after={cursor}")).await;
        assert_eq!(reply.status, 200);
        assert!(reply.body.len() <= bound, "{} bytes", reply.body.len());
        counts.push(reply.json()["events"].as_array().unwrap().len());
        cursor = reply.header("push-cursor").unwrap().to_owned();
    }
    assert_eq!(counts, [4, 4, 4, 4, 4], "every event once, four per answer");

    // A stream the client does not read holds at most one such frame at a time.
    let stream = ChunkedStreamLayer::new().layer(topic.clone());
    let request = http::Request::get(format!("/stream?after={start}"))
        .body(())
        .unwrap();
    let mut body = stream.oneshot(request).await.unwrap().into_body();
    let mut events = 0;
    while events < 20 {
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(frame.len() <= bound, "{} bytes", frame.len());
        events += frame
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
    }
    assert_eq!(events, 20);

    // An event larger than the bound still goes out, alone.
    let big = topic.publish(heavy(300));
    let reply = get(poll, &format!("/poll?after={cursor}")).await;
    assert_eq!(reply.json()["events"][0]["id"], big.to_string());
}

#[tokio::test]
async fn other_methods_get_405_with_allow_and_head_works() {
    let topic = MemoryLog::new().topic("t");
    let first = topic.publish(data(1));
    topic.publish(data(2));
    let poll = serve(poll_layer(60 * SECOND).layer(topic.clone())).await;
    let stream = serve(ChunkedStreamLayer::new().layer(topic.clone())).await;
    for addr in [poll, stream] {
        for method in [http::Method::PUT, http::Method::POST, http::Method::DELETE] {
            let reply = request(addr, method.clone(), "/", &[]).await;
            assert_eq!(reply.status, 405, "{method}: {reply:?}");
            assert_eq!(reply.header("allow"), Some("GET, HEAD"));
            assert_eq!(reply.json()["error"], "method_not_allowed");
        }
    }
    let path = format!("/?after={first}");
    let head = request(poll, http::Method::HEAD, &path, &[]).await;
    assert_eq!(head.status, 200, "{head:?}");
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("push-cursor"),
        Some(topic.head().to_string().as_str())
    );
}

#[tokio::test]
async fn a_head_larger_than_kept_gets_431() {
    let topic = MemoryLog::new().topic("t");
    let layer = LongPollLayer::builder()
        .hold_timeout(60 * SECOND)
        .max_head_bytes(4096)
        .build()
        .unwrap();
    let addr = serve(layer.layer(topic.clone())).await;
    let big = vec![b'a'; 5000];
    let reply = get_with(addr, "/", &[("x-big", &big)]).await;
    assert_eq!(reply.status, 431, "{reply:?}");
    assert_eq!(reply.json()["error"], "head_too_large");
    assert_eq!(topic.parked_subscriptions(), 0, "nothing was held");
    let small = vec![b'a'; 3000];
    let cursor = topic.publish(data(1));
    topic.publish(data(2));
    let reply = get_with(addr, &format!("/?after={cursor}"), &[("x-big", &small)]).await;
    assert_eq!(reply.status, 200);
}
