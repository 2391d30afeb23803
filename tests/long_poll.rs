//! The long-poll layer over real HTTP/1.1 connections to a real hyper server.

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use common::{data, get, get_with, parked, poll_layer, poll_server, serve};
use tokio::io::AsyncWriteExt;
use tokio::time::{timeout, Instant};
use tower_push::source::{Outcome, Subscribe};
use tower_push::{Cursor, LongPollLayer, MemoryLog};

/// The `n` of each event in a long poll's answer, in order.
fn numbers(reply: &common::Reply) -> Vec<u64> {
    let body = reply.json();
    let events = body["events"].as_array().unwrap();
    events
        .iter()
        .map(|e| e["data"]["n"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn held_poll_is_answered_when_an_event_is_published() {
    let (topic, addr) = poll_server(Duration::from_secs(60)).await;
    let head = topic.head();

    let poll = tokio::spawn(async move { get(addr, &format!("/poll?after={head}")).await });
    parked(&topic, 1).await;
    let id = topic.publish(data(1));

    let reply = timeout(Duration::from_secs(5), poll)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.status, 200);
    reply.assert_push_headers();
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("push-cursor"), Some(id.to_string().as_str()));
    assert_eq!(
        reply.json(),
        serde_json::json!({
            "events": [{ "id": id.to_string(), "data": { "n": 1 } }],
            "cursor": id.to_string(),
        })
    );
    assert_eq!(topic.parked_subscriptions(), 0);
}

#[tokio::test(start_paused = true)]
async fn empty_hold_answers_204_and_keeps_the_cursor() {
    let topic = MemoryLog::new().topic("t");
    let hold = Duration::from_secs(25);
    let addr = serve(poll_layer(hold).layer(topic.clone())).await;
    let cursor = topic.publish(data(1));

    let started = Instant::now();
    let reply = get(addr, &format!("/poll?after={cursor}")).await;
    assert!(
        started.elapsed() >= hold,
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(reply.status, 204);
    reply.assert_push_headers();
    assert!(reply.body.is_empty());
    assert_eq!(
        reply.header("push-cursor"),
        Some(cursor.to_string().as_str())
    );

    // A first poll without a cursor learns where it stands from the 204 too.
    let reply = get(addr, "/poll").await;
    assert_eq!(reply.status, 204);
    reply.assert_push_headers();
    assert_eq!(
        reply.header("push-cursor"),
        Some(cursor.to_string().as_str())
    );
}

#[tokio::test(start_paused = true)]
async fn poll_without_cursor_starts_at_the_head_or_the_oldest() {
    let log = MemoryLog::new();
    let topic = log.topic("t");
    topic.publish(data(1));
    topic.publish(data(2));

    let from_head = serve(poll_layer(Duration::from_secs(5)).layer(topic.clone())).await;
    let reply = get(from_head, "/poll").await;
    assert_eq!(reply.status, 204, "only new events from the head");

    let oldest = LongPollLayer::builder()
        .origin(tower_push::source::Origin::Oldest)
        .build()
        .unwrap();
    let from_oldest = serve(oldest.layer(topic.clone())).await;
    let reply = get(from_oldest, "/poll").await;
    assert_eq!(reply.status, 200);
    assert_eq!(numbers(&reply), [1, 2]);
}

/// The poll loop of a well-behaved client: follow `Push-Cursor` until `count` events arrived.
async fn poll_loop(addr: std::net::SocketAddr, start: Cursor, count: u64) -> Vec<u64> {
    let mut cursor = start.to_string();
    let mut received = Vec::new();
    while (received.len() as u64) < count {
        let reply = get(addr, &format!("/poll?after={cursor}")).await;
        reply.assert_push_headers();
        let next = reply
            .header("push-cursor")
            .expect("every answer has a cursor");
        match reply.status.as_u16() {
            200 => {
                let body = reply.json();
                assert_eq!(body["cursor"], next);
                for event in body["events"].as_array().unwrap() {
                    received.push(event["data"]["n"].as_u64().unwrap());
                }
                assert_eq!(
                    body["events"].as_array().unwrap().last().unwrap()["id"],
                    next
                );
            }
            204 => assert_eq!(next, cursor, "an empty hold keeps the cursor"),
            other => panic!("unexpected {other}: {:?}", reply.body),
        }
        cursor = next.to_owned();
    }
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_gap_between_answers_under_a_full_speed_publisher() {
    const EVENTS: u64 = 3000;
    const CLIENTS: usize = 6;
    let log = MemoryLog::builder()
        .retention(EVENTS as usize)
        .build()
        .unwrap();
    let topic = log.topic("t");
    let poll = LongPollLayer::builder()
        .hold_timeout(Duration::from_millis(500))
        .max_events(37)
        .build()
        .unwrap();
    let addr = serve(poll.layer(topic.clone())).await;
    let start = topic.head();

    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(poll_loop(addr, start, EVENTS)))
        .collect();
    let publisher = {
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || {
            for n in 1..=EVENTS {
                topic.publish(data(n));
                if n % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };
    publisher.await.unwrap();
    for client in clients {
        let received = timeout(Duration::from_secs(60), client)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(received, (1..=EVENTS).collect::<Vec<_>>());
    }
    assert_eq!(topic.parked_subscriptions(), 0);
}

#[tokio::test]
async fn malformed_cursors_get_400_with_a_code() {
    let (topic, addr) = poll_server(Duration::from_secs(60)).await;
    let epoch = topic.head().epoch();
    let long = "1".repeat(200);
    let repeated = format!("/poll?after={epoch}-0&after={epoch}-0");
    let cases = [
        ("/poll?after=", "cursor is empty"),
        ("/poll?after=garbage", "no '-'"),
        ("/poll?after=zz-1", "epoch"),
        ("/poll?after=%FF%FE", "utf-8"),
        (&format!("/poll?after={long}") as &str, "at most 64"),
        (
            &format!("/poll?after={epoch}-99999999999999999999"),
            "64 bits",
        ),
        (&format!("/poll?after={epoch}-007"), "leading zeros"),
        (&repeated, "more than once"),
    ];
    for (path, message) in cases {
        let reply = timeout(Duration::from_secs(5), get(addr, path))
            .await
            .unwrap();
        assert_eq!(reply.status, 400, "{path}");
        reply.assert_push_headers();
        let body = reply.json();
        assert_eq!(body["error"], "malformed_cursor", "{path}");
        let text = body["message"].as_str().unwrap();
        assert!(text.contains(message), "{path}: {text}");
    }

    let reply = get_with(addr, "/poll", &[("last-event-id", b"\xff\xfe")]).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"], "malformed_cursor");
    assert_eq!(topic.parked_subscriptions(), 0);
}

/// Polls after `cursor`, which must be refused within 5 s (never held) with `status`, the push
/// headers and the error `code`: the body of the refusal, for the test to check the rest.
async fn refused_at_once(
    addr: std::net::SocketAddr,
    cursor: Cursor,
    status: u16,
    code: &str,
) -> serde_json::Value {
    let reply = timeout(
        Duration::from_secs(5),
        get(addr, &format!("/poll?after={cursor}")),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, status);
    reply.assert_push_headers();
    let body = reply.json();
    assert_eq!(body["error"], code);
    body
}

#[tokio::test]
async fn cursor_ahead_of_the_head_gets_400_cursor_ahead() {
    let (topic, addr) = poll_server(Duration::from_secs(60)).await;
    let head = topic.publish(data(1));
    let ahead = Cursor::new(head.epoch(), 99);
    let body = refused_at_once(addr, ahead, 400, "cursor_ahead").await;
    assert_eq!(body["head"], head.to_string());
}

#[tokio::test]
async fn expired_cursor_gets_410_and_the_cursors_to_resync_from() {
    let topic = MemoryLog::builder()
        .retention(3)
        .build()
        .unwrap()
        .topic("t");
    let addr = serve(poll_layer(Duration::from_secs(60)).layer(topic.clone())).await;
    let first = topic.publish(data(1));
    for n in 2..=10 {
        topic.publish(data(n));
    }
    let body = refused_at_once(addr, first, 410, "cursor_expired").await;
    let epoch = first.epoch();
    assert_eq!(body["oldest"], Cursor::new(epoch, 7).to_string());
    assert_eq!(body["head"], Cursor::new(epoch, 10).to_string());

    // Resyncing from `oldest` gets every retained event.
    let oldest = body["oldest"].as_str().unwrap();
    let reply = get(addr, &format!("/poll?after={oldest}")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(numbers(&reply), [8, 9, 10]);
}

#[tokio::test]
async fn cursor_from_before_a_restart_gets_410_not_a_hang() {
    let before = MemoryLog::new().topic("t");
    before.publish(data(1));
    let old_cursor = before.publish(data(2));

    // The server restarts: a new log with a new epoch, and fewer events than the old cursor
    // counted, so comparing numbers would hold the request forever.
    let after = MemoryLog::new().topic("t");
    after.publish(data(1));
    let addr = serve(poll_layer(Duration::from_secs(60)).layer(after.clone())).await;

    for path in [format!("/poll?after={old_cursor}"), "/poll".to_owned()] {
        let headers: &[(&str, &[u8])] = if path == "/poll" {
            &[("last-event-id", old_cursor.to_string().into_bytes().leak())]
        } else {
            &[]
        };
        let reply = timeout(Duration::from_secs(5), get_with(addr, &path, headers))
            .await
            .expect("answered at once, not held");
        assert_eq!(reply.status, 410);
        reply.assert_push_headers();
        let body = reply.json();
        assert_eq!(body["error"], "epoch_mismatch");
        assert_eq!(body["head"], after.head().to_string());
        assert_eq!(body["oldest"], after.oldest().to_string());
    }
}

/// A source that fails, in `call` or in `poll_ready`.
#[derive(Clone)]
struct Broken {
    in_ready: bool,
}

impl tower::Service<Subscribe> for Broken {
    type Response = Outcome;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Outcome, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.in_ready {
            return Poll::Ready(Err(std::io::Error::other("backend down")));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Subscribe) -> Self::Future {
        Box::pin(async { Err(std::io::Error::other("backend down")) })
    }
}

#[tokio::test]
async fn failing_source_gets_503_with_a_code() {
    for in_ready in [false, true] {
        let addr = serve(poll_layer(Duration::from_secs(60)).layer(Broken { in_ready })).await;
        let reply = timeout(Duration::from_secs(5), get(addr, "/poll"))
            .await
            .unwrap();
        assert_eq!(reply.status, 503);
        reply.assert_push_headers();
        assert_eq!(reply.json()["error"], "source_unavailable");
    }
}

/// A source that never answers at all, not even with the head.
#[derive(Clone)]
struct Silent;

impl tower::Service<Subscribe> for Silent {
    type Response = Outcome;
    type Error = Infallible;
    type Future = std::future::Pending<Result<Outcome, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Subscribe) -> Self::Future {
        std::future::pending()
    }
}

#[tokio::test(start_paused = true)]
async fn source_that_never_names_the_head_gets_503_after_the_hold() {
    let addr = serve(poll_layer(Duration::from_secs(10)).layer(Silent)).await;
    let reply = get(addr, "/poll").await;
    assert_eq!(reply.status, 503);
    reply.assert_push_headers();
}

#[tokio::test]
async fn client_that_disconnects_mid_hold_leaves_no_waiter() {
    let (topic, addr) = poll_server(Duration::from_secs(600)).await;
    let mut streams = Vec::new();
    for _ in 0..20 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /poll HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        streams.push(stream);
    }
    parked(&topic, 20).await;
    drop(streams);
    parked(&topic, 0).await;
}

#[tokio::test]
async fn max_events_splits_a_backlog_over_answers() {
    let topic = MemoryLog::new().topic("t");
    let poll = LongPollLayer::builder().max_events(2).build().unwrap();
    let addr = serve(poll.layer(topic.clone())).await;
    let start = topic.head();
    for n in 1..=5 {
        topic.publish(data(n));
    }
    let mut cursor = start.to_string();
    let mut sizes = Vec::new();
    while cursor != topic.head().to_string() {
        let reply = get(addr, &format!("/poll?after={cursor}")).await;
        assert_eq!(reply.status, 200);
        sizes.push(reply.json()["events"].as_array().unwrap().len());
        cursor = reply.header("push-cursor").unwrap().to_owned();
    }
    assert_eq!(sizes, [2, 2, 1]);
}

#[tokio::test]
async fn a_percent_encoded_parameter_name_is_the_same_parameter() {
    let (topic, addr) = poll_server(Duration::from_secs(60)).await;
    let first = topic.publish(data(1));
    let ids: Vec<_> = (2..=4)
        .map(|n| topic.publish(data(n)).to_string())
        .collect();

    // `aft%65r` is `after`: ignoring it would start at the head and skip events 2 to 4.
    let reply = get(addr, &format!("/poll?aft%65r={first}")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let answered: Vec<_> = reply.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(answered, ids);
}

#[tokio::test]
async fn polls_woken_by_one_publish_share_one_encoded_answer() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let topic = MemoryLog::new().topic("t");
    let service = LongPollLayer::new().layer(topic.clone());
    let head = topic.head();
    let polls: Vec<_> = (0..50)
        .map(|_| {
            let request = http::Request::get(format!("/poll?after={head}"))
                .body(())
                .unwrap();
            tokio::spawn(service.clone().oneshot(request))
        })
        .collect();
    parked(&topic, 50).await;
    topic.publish(data(1));
    let mut bodies = Vec::new();
    for poll in polls {
        let response = poll.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["push-cursor"], topic.head().to_string());
        let mut body = response.into_body();
        bodies.push(body.frame().await.unwrap().unwrap().into_data().unwrap());
    }
    // The same bytes, in at most two buffers: the first poll answered with the batch encodes
    // it alone (a poll at a cursor of its own keeps nothing for others), the second encodes it
    // for all the others.
    assert!(bodies.iter().all(|body| body == &bodies[0]));
    let buffers: std::collections::HashSet<_> = bodies.iter().map(|body| body.as_ptr()).collect();
    assert!(
        buffers.len() <= 2,
        "{} encodings for 50 polls",
        buffers.len()
    );
}
