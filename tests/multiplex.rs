//! Multiplexed subscriptions over real sockets: one request follows several topics of a
//! `MemoryLog` with one composite cursor, through both layers.

mod common;
#[allow(dead_code)]
#[path = "../examples/demo/app.rs"]
mod demo_app;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{get, serve, RawResponse, NDJSON, SSE};
use serde_json::Value;
use tower_push::{ChunkedStreamLayer, EventData, LongPollLayer, MemoryLog};

const TOPICS: [&str; 3] = ["inbox", "presence", "doc"];

/// `{"topic":"<topic>","i":<i>}`: the `i`-th event of `topic`, counted from 1.
fn event(topic: &str, i: u64) -> EventData {
    EventData::from_serialize(&serde_json::json!({ "topic": topic, "i": i })).unwrap()
}

/// A long poll and a stream over `log`, each on a server of its own.
async fn servers(log: &MemoryLog, hold: Duration) -> (SocketAddr, SocketAddr) {
    let poll = LongPollLayer::builder()
        .hold_timeout(hold)
        .max_events(16)
        .build()
        .unwrap()
        .layer(log.clone());
    let stream = ChunkedStreamLayer::builder()
        .heartbeat_interval(Duration::from_secs(5))
        .max_events(16)
        .build()
        .unwrap()
        .layer(log.clone());
    (serve(poll).await, serve(stream).await)
}

/// What a client received, per topic: the `i` of each event, in the order it came.
#[derive(Default, Debug)]
struct Received(HashMap<String, Vec<u64>>);

impl Received {
    /// Records one event object of an answer, checking that it is tagged with its own topic.
    fn record(&mut self, object: &Value) {
        let topic = object["topic"].as_str().expect("a topic on every event");
        assert_eq!(object["data"]["topic"], topic, "tagged with its own topic");
        let i = object["data"]["i"].as_u64().unwrap();
        self.0.entry(topic.to_owned()).or_default().push(i);
    }

    fn count(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }

    /// Every topic got exactly its events 1..=n, in order: nothing lost, nothing twice.
    fn assert_exact(&self, per_topic: u64, who: &str) {
        for topic in TOPICS {
            let got = self.0.get(topic).cloned().unwrap_or_default();
            let want: Vec<u64> = (1..=per_topic).collect();
            assert_eq!(got, want, "{who}: events of {topic}");
        }
    }
}

/// Publishes `per_topic` events on each topic as fast as it can, the topics interleaved.
fn publish_all(log: &MemoryLog, per_topic: u64) -> tokio::task::JoinHandle<()> {
    let topics: Vec<_> = TOPICS.iter().map(|name| log.topic(name)).collect();
    tokio::spawn(async move {
        for i in 1..=per_topic {
            for (k, topic) in topics.iter().enumerate() {
                // A different mix of topics in each round.
                if (i + k as u64) % 3 != 0 {
                    topic.publish(event(topic.name(), i));
                }
            }
            for (k, topic) in topics.iter().enumerate() {
                if (i + k as u64) % 3 == 0 {
                    topic.publish(event(topic.name(), i));
                }
            }
            if i % 8 == 0 {
                tokio::task::yield_now().await;
            }
        }
    })
}

/// The path that follows every topic on `route`: from the start, or after `cursor`.
fn every_topic(route: &str, cursor: Option<&str>) -> String {
    let topics = TOPICS.join(",");
    match cursor {
        Some(cursor) => format!("{route}?topics={topics}&after={cursor}"),
        None => format!("{route}?topics={topics}"),
    }
}

/// Follows the topics with one poll loop until it has `total` events.
async fn poll_loop(addr: SocketAddr, total: usize) -> Received {
    let mut received = Received::default();
    let mut cursor: Option<String> = None;
    while received.count() < total {
        let reply = get(addr, &every_topic("/poll", cursor.as_deref())).await;
        let header = reply.header("push-cursor").unwrap().to_owned();
        match reply.status.as_u16() {
            200 => {
                let body = reply.json();
                assert_eq!(body["cursor"], header.as_str());
                for object in body["events"].as_array().unwrap() {
                    received.record(object);
                }
            }
            204 => {}
            status => panic!("{status}: {:?}", reply.body),
        }
        assert_eq!(header.split('.').count(), TOPICS.len(), "{header}");
        cursor = Some(header);
    }
    received
}

/// Follows the topics with an NDJSON stream, reconnecting from the last line's composite cursor
/// after every `every` events.
async fn ndjson_loop(addr: SocketAddr, total: usize, every: usize) -> Received {
    let mut received = Received::default();
    let mut cursor: Option<String> = None;
    while received.count() < total {
        let path = every_topic("/stream", cursor.as_deref());
        let mut response = RawResponse::get(addr, &path, &[NDJSON]).await;
        assert_eq!(response.status, 200, "{}", response.head);
        if cursor.is_none() {
            let opened = response.header("push-cursor").unwrap();
            assert_eq!(opened.split('.').count(), TOPICS.len());
            cursor = Some(opened);
        }
        let mut taken = 0;
        while taken < every && received.count() < total {
            let line = response.message(b"\n").await.expect("a line");
            let object: Value = serde_json::from_str(&line).unwrap();
            if object.get("heartbeat").is_some() {
                continue;
            }
            received.record(&object);
            cursor = Some(object["cursor"].as_str().unwrap().to_owned());
            taken += 1;
        }
        // Dropped mid-stream: the next request resumes from the last line's cursor.
    }
    received
}

/// Follows the topics with SSE, reconnecting with `Last-Event-ID` after every `every` events.
async fn sse_loop(addr: SocketAddr, total: usize, every: usize) -> Received {
    let mut received = Received::default();
    let mut last_id: Option<String> = None;
    let path = every_topic("/stream", None);
    while received.count() < total {
        let mut headers = vec![SSE];
        if let Some(id) = &last_id {
            headers.push(("last-event-id", id.as_str()));
        }
        let mut response = RawResponse::get(addr, &path, &headers).await;
        assert_eq!(response.status, 200, "{}", response.head);
        let mut taken = 0;
        while taken < every && received.count() < total {
            let message = response.message(b"\n\n").await.expect("a message");
            let mut data = None;
            for line in message.lines() {
                if let Some(id) = line.strip_prefix("id: ") {
                    last_id = Some(id.to_owned());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data = Some(value.to_owned());
                }
            }
            if let Some(data) = data {
                let object: Value = serde_json::from_str(&data).unwrap();
                received.record(&object);
                taken += 1;
            }
        }
    }
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_topics_at_full_speed_lose_nothing_on_one_poll_loop_or_reconnecting_streams() {
    const PER_TOPIC: u64 = 600;
    let total = PER_TOPIC as usize * TOPICS.len();
    let log = MemoryLog::builder().retention(10_000).build().unwrap();
    for name in TOPICS {
        log.topic(name);
    }
    let (poll, stream) = servers(&log, Duration::from_secs(5)).await;
    // Every client starts at the head before the first publish, so it is owed every event.
    let clients = tokio::spawn(async move {
        tokio::join!(
            poll_loop(poll, total),
            ndjson_loop(stream, total, 5),
            sse_loop(stream, total, 7),
        )
    });
    common::wait_until("the clients park", Duration::from_secs(10), || {
        TOPICS
            .iter()
            .all(|name| log.topic(name).parked_subscriptions() >= 3)
    })
    .await;
    publish_all(&log, PER_TOPIC).await.unwrap();
    let (polled, ndjson, sse) = tokio::time::timeout(Duration::from_secs(60), clients)
        .await
        .expect("the clients get every event")
        .unwrap();
    polled.assert_exact(PER_TOPIC, "poll loop");
    ndjson.assert_exact(PER_TOPIC, "ndjson stream");
    sse.assert_exact(PER_TOPIC, "sse stream");
}

#[tokio::test]
async fn a_topic_that_expires_resyncs_alone_and_the_others_keep_their_positions() {
    let log = MemoryLog::builder().retention(4).build().unwrap();
    let (inbox, presence) = (log.topic("inbox"), log.topic("presence"));
    inbox.publish(event("inbox", 1));
    presence.publish(event("presence", 1));
    let (poll, stream) = servers(&log, Duration::from_millis(50)).await;

    // Where the client stands: both heads.
    let reply = get(poll, "/poll?topics=inbox,presence").await;
    assert_eq!(reply.status, 204);
    let cursor = reply.header("push-cursor").unwrap().to_owned();
    let [inbox_at, presence_at] = [inbox.head(), presence.head()].map(|c| c.to_string());
    assert_eq!(cursor, format!("{inbox_at}.{presence_at}"));

    // The client falls behind on presence only: its next event is dropped by retention.
    inbox.publish(event("inbox", 2));
    for i in 2..=10 {
        presence.publish(event("presence", i));
    }
    // What the client can still have comes first: inbox's event, then the refusal.
    let reply = get(poll, &format!("/poll?topics=inbox,presence&after={cursor}")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        reply.json()["events"][0]["data"],
        serde_json::json!({"topic": "inbox", "i": 2})
    );
    let cursor = reply.header("push-cursor").unwrap().to_owned();
    let inbox_at = inbox.head().to_string();
    assert_eq!(cursor, format!("{inbox_at}.{presence_at}"));
    let reply = get(poll, &format!("/poll?topics=inbox,presence&after={cursor}")).await;
    assert_eq!(reply.status, 410, "{:?}", reply.body);
    let body = reply.json();
    assert_eq!(body["error"], "cursor_expired");
    assert_eq!(body["topic"], "presence");
    let oldest = body["oldest"].as_str().unwrap();
    let head = body["head"].as_str().unwrap();
    // Inbox keeps its position in both; presence moves to its oldest retained event or head.
    let presence_oldest = presence.oldest().to_string();
    assert_eq!(oldest, format!("{inbox_at}.{presence_oldest}"));
    assert_eq!(head, format!("{inbox_at}.{}", presence.head()));

    // The stream refuses the same cursor with the same answer, before it starts.
    let refused = get(
        stream,
        &format!("/stream?topics=inbox,presence&after={cursor}"),
    )
    .await;
    assert_eq!(refused.status, 410);
    assert_eq!(refused.json()["topic"], "presence");

    // Resync presence from its oldest: its retained events come, in order, and inbox stays.
    inbox.publish(event("inbox", 3));
    let reply = get(poll, &format!("/poll?topics=inbox,presence&after={oldest}")).await;
    assert_eq!(reply.status, 200);
    let mut received = Received::default();
    for object in reply.json()["events"].as_array().unwrap() {
        received.record(object);
    }
    assert_eq!(received.0["inbox"], [3]);
    assert_eq!(received.0["presence"], [7, 8, 9, 10]);
    assert_eq!(
        reply.json()["cursor"],
        format!("{}.{}", inbox.head(), presence.head())
    );
}

#[tokio::test]
async fn a_stream_that_falls_behind_on_one_topic_ends_with_that_topics_resync() {
    let log = MemoryLog::builder().retention(2).build().unwrap();
    let (inbox, presence) = (log.topic("inbox"), log.topic("presence"));
    let (_, stream) = servers(&log, Duration::from_secs(1)).await;
    let mut response = RawResponse::get(stream, "/stream?topics=inbox,presence", &[NDJSON]).await;
    assert_eq!(response.status, 200);
    let opened = response.header("push-cursor").unwrap();
    // Published beyond retention while the stream waits (the test's runtime has one thread:
    // the stream runs only once they are all published): its next event is gone.
    common::wait_until("the stream parks", Duration::from_secs(5), || {
        presence.parked_subscriptions() == 1
    })
    .await;
    for i in 1..=5 {
        presence.publish(event("presence", i));
    }
    let line = response.message(b"\n").await.unwrap();
    let last: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(last["error"], "cursor_expired", "{last}");
    assert_eq!(last["topic"], "presence");
    let inbox_at = inbox.head().to_string();
    assert_eq!(opened.split('.').next().unwrap(), inbox_at);
    assert_eq!(
        last["oldest"],
        format!("{inbox_at}.{}", presence.oldest()),
        "inbox stays where it was"
    );
    response.assert_ended().await;
}

#[tokio::test]
async fn refusals_name_the_problem() {
    let log = MemoryLog::new();
    let (a, b) = (log.topic("a"), log.topic("b"));
    a.publish(event("a", 1));
    b.publish(event("b", 1));
    let (poll, stream) = servers(&log, Duration::from_millis(20)).await;
    let many: Vec<String> = (0..17).map(|i| format!("t{i}")).collect();
    let cases = [
        (
            format!("/x?topics={}", many.join(",")),
            400,
            "too_many_topics",
        ),
        ("/x?topics=a,a".to_owned(), 400, "invalid_topics"),
        ("/x?topics=a,b%20c".to_owned(), 400, "invalid_topics"),
        ("/x?topics=a,".to_owned(), 400, "invalid_topics"),
        ("/x?topics=a,nope".to_owned(), 400, "unknown_topic"),
        (
            format!("/x?topics=a,b&after={}", a.head()),
            400,
            "malformed_cursor",
        ),
        (
            format!("/x?topics=a,b&after={}.{}.{}", a.head(), b.head(), b.head()),
            400,
            "malformed_cursor",
        ),
        (
            format!("/x?topics=a,b&after={}.x", a.head()),
            400,
            "malformed_cursor",
        ),
        // a's cursor where b's belongs: another epoch for b.
        (
            format!("/x?topics=a,b&after={}.{}", a.head(), a.head()),
            410,
            "epoch_mismatch",
        ),
        (
            format!("/x?topics=a,b&after={}.{}", a.head(), b.head().next()),
            400,
            "cursor_ahead",
        ),
        // A request for one topic on a source that serves topics by name.
        ("/x".to_owned(), 400, "unknown_topic"),
    ];
    for (path, status, code) in &cases {
        for addr in [poll, stream] {
            let reply = get(addr, path).await;
            assert_eq!(reply.status, *status, "{path}: {:?}", reply.body);
            let body = reply.json();
            assert_eq!(body["error"], *code, "{path}");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
    let unknown = get(poll, "/x?topics=a,nope").await.json();
    assert_eq!(unknown["topic"], "nope");
    let foreign = format!("/x?topics=a,b&after={}.{}", a.head(), a.head());
    assert_eq!(get(poll, &foreign).await.json()["topic"], "b");
}

#[tokio::test]
async fn one_publish_wakes_only_the_requests_that_follow_its_topic() {
    let log = MemoryLog::new();
    let (a, b, c) = (log.topic("a"), log.topic("b"), log.topic("c"));
    let (poll, _) = servers(&log, Duration::from_secs(30)).await;
    let cursor = |topics: &[&tower_push::memory::Topic]| {
        topics
            .iter()
            .map(|t| t.head().to_string())
            .collect::<Vec<_>>()
            .join(".")
    };
    let ab = tokio::spawn(get(
        poll,
        Box::leak(format!("/poll?topics=a,b&after={}", cursor(&[&a, &b])).into_boxed_str()),
    ));
    let bc = tokio::spawn(get(
        poll,
        Box::leak(format!("/poll?topics=b,c&after={}", cursor(&[&b, &c])).into_boxed_str()),
    ));
    common::wait_until("both park", Duration::from_secs(5), || {
        a.parked_subscriptions() == 1
            && b.parked_subscriptions() == 2
            && c.parked_subscriptions() == 1
    })
    .await;
    a.publish(event("a", 1));
    let reply = ab.await.unwrap();
    assert_eq!(reply.status, 200);
    let events = reply.json()["events"].clone();
    assert_eq!(events.as_array().unwrap().len(), 1);
    assert_eq!(events[0]["topic"], "a");
    assert_eq!(events[0]["id"], a.head().to_string());
    // The answered poll let go of all its subscriptions; the other still waits on both.
    common::wait_until(
        "the answer frees its waiters",
        Duration::from_secs(5),
        || a.parked_subscriptions() == 0 && b.parked_subscriptions() == 1,
    )
    .await;
    assert!(!bc.is_finished());
    c.publish(event("c", 1));
    let reply = bc.await.unwrap();
    assert_eq!(reply.json()["events"][0]["topic"], "c");
    assert_eq!(reply.json()["cursor"], format!("{}.{}", b.head(), c.head()));
}

#[tokio::test]
async fn an_sse_stream_opens_with_the_composite_cursor_and_tags_every_event() {
    let log = MemoryLog::new();
    let (a, b) = (log.topic("a"), log.topic("b"));
    a.publish(event("a", 1));
    let (_, stream) = servers(&log, Duration::from_secs(1)).await;
    let mut response = RawResponse::get(stream, "/stream?topics=a,b", &[SSE]).await;
    assert_eq!(response.status, 200);
    let opened = format!("{}.{}", a.head(), b.head());
    assert_eq!(response.header("push-cursor").unwrap(), opened);
    assert_eq!(
        response.message(b"\n\n").await.unwrap(),
        format!("id: {opened}\n\n")
    );
    let id = b.publish(event("b", 1));
    let message = response.message(b"\n\n").await.unwrap();
    assert_eq!(
        message,
        format!(
            "id: {}.{id}\ndata: {{\"id\":\"{id}\",\"topic\":\"b\",\"data\":{{\"i\":1,\"topic\":\"b\"}}}}\n\n",
            a.head()
        )
    );
}

#[tokio::test]
async fn the_demo_publishes_on_named_topics_and_serves_several_on_one_request() {
    let settings = demo_app::Settings {
        hold: Duration::from_millis(50),
        ..demo_app::Settings::default()
    };
    let demo = demo_app::Demo::new(&settings, &tower_push::Shutdown::new()).unwrap();
    let addr = common::serve_program(demo).await;

    let (status, body) = common::post_json(addr, "/publish?topic=bad%20name", "1").await;
    assert_eq!(
        (status.as_u16(), &body["error"]),
        (400, &"invalid_topic".into())
    );
    let (status, body) = common::post_json(addr, "/publish?topic=news", "{nope").await;
    assert_eq!(
        (status.as_u16(), &body["error"]),
        (400, &"invalid_json".into())
    );

    // Both topics' heads, then one event on each, in one answer.
    let reply = get(addr, "/poll?topics=default,news").await;
    assert_eq!(reply.status, 204);
    let cursor = reply.header("push-cursor").unwrap().to_owned();
    let (status, news) = common::post_json(addr, "/publish?topic=news", r#"{"n":1}"#).await;
    assert_eq!(status, 200);
    let (_, default) = common::post_json(addr, "/publish", r#"{"n":2}"#).await;
    let reply = get(addr, &format!("/poll?topics=default,news&after={cursor}")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let events = reply.json()["events"].clone();
    let tagged: Vec<(&str, &str)> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["topic"].as_str().unwrap(), e["id"].as_str().unwrap()))
        .collect();
    let (news, default) = (
        news["id"].as_str().unwrap(),
        default["id"].as_str().unwrap(),
    );
    assert!(tagged.contains(&("news", news)) && tagged.contains(&("default", default)));
    assert_eq!(reply.json()["cursor"], format!("{default}.{news}"));

    // The single-topic routes are the default topic's, as before.
    let reply = get(addr, "/poll?after=").await;
    assert_eq!(reply.status, 400);
    let reply = get(addr, "/poll?topics=default,elsewhere").await;
    assert_eq!(reply.json()["error"], "unknown_topic");
}
