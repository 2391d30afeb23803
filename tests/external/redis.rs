//! The Redis Streams source against a real `redis-server` started for each test on a free
//! loopback port. Without `redis-server` the tests that need it are reported as ignored, and
//! under `CI=true` as failed.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::redis_server::Redis;
use common::{
    assert_foreign_cursors_resync, data, get, parked, poll_layer, serve, RawResponse, SECOND,
};
use http_body_util::{BodyExt, Empty};
use tokio::time::{sleep, timeout, Instant};
use tower::ServiceExt;
use tower_push::redis::{RedisSource, RedisTopic};
use tower_push::{ChunkedStreamLayer, Cursor};

/// A server on a free port with the default settings, and a source on it.
async fn with_source(persistent: bool) -> (Redis, RedisSource) {
    let redis = Redis::start(persistent).await;
    let source = source_on(&redis).await;
    (redis, source)
}

async fn source_on(redis: &Redis) -> RedisSource {
    RedisSource::builder(redis.url()).build().await.unwrap()
}

/// Publishes, retrying while Redis is away, for at most 10 seconds.
async fn publish_retrying(topic: &RedisTopic, n: u64) -> Cursor {
    let deadline = Instant::now() + 10 * SECOND;
    loop {
        match topic.publish(data(n)).await {
            Ok(id) => return id,
            Err(err) => {
                assert!(err.is_unavailable(), "{err:?}");
                assert!(Instant::now() < deadline, "redis did not come back: {err}");
                sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn two_servers_share_one_feed() {
    let redis = Redis::start(false).await;
    let (a, b) = (source_on(&redis).await, source_on(&redis).await);
    let (topic_a, topic_b) = (a.topic("feed").unwrap(), b.topic("feed").unwrap());
    let layer = poll_layer(5 * SECOND);
    let addrs = [
        serve(layer.layer(topic_a.clone())).await,
        serve(layer.layer(topic_b.clone())).await,
    ];
    const N: u64 = 60;
    let first = topic_a.publish(data(1)).await.unwrap();
    assert_eq!(first.seq(), 1);

    let publisher = tokio::spawn(async move {
        for n in 2..=N {
            let topic = if n % 2 == 0 { &topic_b } else { &topic_a };
            let id = topic.publish(data(n)).await.unwrap();
            assert_eq!(id.seq(), n);
            if n % 5 == 0 {
                sleep(Duration::from_millis(3)).await;
            }
        }
    });

    let mut cursor = Cursor::zero(first.epoch()).to_string();
    let mut seen = Vec::new();
    let mut polls = 0;
    timeout(30 * SECOND, async {
        while (seen.len() as u64) < N {
            let reply = get(addrs[polls % 2], &format!("/poll?after={cursor}")).await;
            polls += 1;
            if reply.status == 204 {
                continue;
            }
            assert_eq!(reply.status, 200, "{reply:?}");
            let body = reply.json();
            for event in body["events"].as_array().unwrap() {
                let id: Cursor = event["id"].as_str().unwrap().parse().unwrap();
                seen.push((id.seq(), event["data"]["n"].as_u64().unwrap()));
            }
            cursor = body["cursor"].as_str().unwrap().to_owned();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {N} events arrived", seen.len()));
    publisher.await.unwrap();
    let expected: Vec<_> = (1..=N).map(|n| (n, n)).collect();
    assert_eq!(seen, expected);
    assert!(polls >= 2, "both servers answered");
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn a_stream_survives_a_redis_restart_without_losing_events() {
    let (mut redis, source) = with_source(true).await;
    let topic = source.topic("feed").unwrap();
    let layer = ChunkedStreamLayer::builder()
        .heartbeat_interval(3600 * SECOND)
        .build()
        .unwrap();
    let addr = serve(layer.layer(topic.clone())).await;
    let first = topic.publish(data(1)).await.unwrap();
    let start = Cursor::zero(first.epoch());
    let mut stream = RawResponse::get(addr, &format!("/stream?after={start}"), &[]).await;
    assert_eq!(stream.status, 200);

    let mut ids = Vec::new();
    for n in 2..=10 {
        topic.publish(data(n)).await.unwrap();
    }
    read(&mut stream, &mut ids, 10).await;

    // Every event is delivered, so the stream is parked at the head: restart Redis under it.
    redis.restart().await;
    for n in 11..=20 {
        let id = publish_retrying(&topic, n).await;
        assert_eq!(id, Cursor::new(first.epoch(), n), "same stream, same epoch");
    }
    read(&mut stream, &mut ids, 20).await;
    let expected: Vec<_> = (1..=20).map(|n| Cursor::new(first.epoch(), n)).collect();
    assert_eq!(ids, expected);
}

/// Reads NDJSON event lines until `ids` holds `upto` ids, checking each line's data.
async fn read(stream: &mut RawResponse, ids: &mut Vec<Cursor>, upto: u64) {
    while (ids.len() as u64) < upto {
        let line = timeout(10 * SECOND, stream.message(b"\n"))
            .await
            .expect("events keep arriving")
            .expect("the stream stays open");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let Some(id) = value["id"].as_str() else {
            panic!("unexpected line {line:?}");
        };
        let id: Cursor = id.parse().unwrap();
        assert_eq!(value["data"]["n"].as_u64(), Some(id.seq()));
        ids.push(id);
    }
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn the_reader_catches_up_after_a_restart_with_lost_data_as_a_new_epoch() {
    let (mut redis, source) = with_source(false).await;
    let topic = source.topic("feed").unwrap();
    let addr = serve(poll_layer(5 * SECOND).layer(topic.clone())).await;
    let old = topic.publish(data(1)).await.unwrap();
    // Without persistence the restart loses the stream: the old cursor is of another epoch now.
    redis.restart().await;
    let new = publish_retrying(&topic, 2).await;
    assert_ne!(new.epoch(), old.epoch());
    assert_eq!(new.seq(), 1);
    let reply = timeout(10 * SECOND, get(addr, &format!("/poll?after={old}")))
        .await
        .unwrap();
    reply.assert_error(410, "epoch_mismatch");
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn ten_thousand_parked_polls_cost_one_blocking_read_per_topic() {
    let (redis, source) = with_source(false).await;
    let topics = [source.topic("a").unwrap(), source.topic("b").unwrap()];
    let layer = poll_layer(60 * SECOND);
    const POLLS: usize = 10_000;
    let mut heads = Vec::new();
    for topic in &topics {
        heads.push(topic.publish(data(0)).await.unwrap());
    }
    // Driven in-process: 10 000 sockets would exceed common file-descriptor limits, and the
    // layer and source do the same work either way.
    let mut polls = Vec::with_capacity(POLLS);
    for i in 0..POLLS {
        let service = layer.layer(topics[i % 2].clone());
        let request = http::Request::get(format!("/poll?after={}", heads[i % 2]))
            .body(Empty::<Bytes>::new())
            .unwrap();
        polls.push(tokio::spawn(service.oneshot(request)));
    }
    timeout(30 * SECOND, async {
        while topics
            .iter()
            .map(RedisTopic::parked_subscriptions)
            .sum::<usize>()
            < POLLS
        {
            if let Some(done) = polls.iter().position(|poll| poll.is_finished()) {
                let response = polls.swap_remove(done).await.unwrap().unwrap();
                panic!("a poll was answered before any publish: {response:?}");
            }
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every poll parks");
    assert_eq!(topics[0].parked_subscriptions(), POLLS / 2);

    // Sample CLIENT LIST until both readers are caught blocked at once (each also runs a short
    // script about once a second). Never more than: 2 readers, 1 shared connection, and ours.
    let mut conn = redis.conn().await;
    let deadline = Instant::now() + 10 * SECOND;
    loop {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .unwrap();
        let clients = list.lines().count();
        let blocked = list
            .lines()
            .filter(|line| line.split(' ').any(|field| field == "cmd=xread"))
            .filter(|line| {
                line.split(' ')
                    .any(|f| f.starts_with("flags=") && f.contains('b'))
            })
            .count();
        println!("CLIENT LIST: {clients} clients, {blocked} blocked in XREAD");
        assert!(
            clients <= 4,
            "{clients} clients for {POLLS} parked polls:\n{list}"
        );
        assert!(blocked <= 2, "{blocked} blocking reads:\n{list}");
        if blocked == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "readers never blocked:\n{list}");
        sleep(Duration::from_millis(50)).await;
    }

    for topic in &topics {
        topic.publish(data(1)).await.unwrap();
    }
    timeout(30 * SECOND, async {
        for poll in polls {
            let response = poll.await.unwrap().unwrap();
            assert_eq!(response.status(), 200);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["events"][0]["data"]["n"], 1);
        }
    })
    .await
    .expect("one publish answers every parked poll");
    assert_eq!(
        topics[0].parked_subscriptions() + topics[1].parked_subscriptions(),
        0
    );
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn a_deleted_and_recreated_stream_is_a_new_epoch() {
    let (redis, source) = with_source(false).await;
    let topic = source.topic("feed").unwrap();
    let addr = serve(poll_layer(10 * SECOND).layer(topic.clone())).await;
    for n in 1..=3 {
        topic.publish(data(n)).await.unwrap();
    }
    let old = Cursor::new(topic.publish(data(4)).await.unwrap().epoch(), 4);
    // A poll parked at the head when the stream goes away.
    let parked = tokio::spawn(async move { get(addr, &format!("/poll?after={old}")).await });
    common::parked(&topic, 1).await;

    let mut conn = redis.conn().await;
    let _: () = redis::cmd("DEL")
        .arg("push:feed")
        .query_async(&mut conn)
        .await
        .unwrap();
    let new = topic.publish(data(5)).await.unwrap();
    assert_ne!(new.epoch(), old.epoch());
    assert_eq!(new.seq(), 1);

    // The parked poll learns it within the hold (the reader checks the epoch every second).
    let reply = timeout(5 * SECOND, parked).await.unwrap().unwrap();
    reply.assert_error(410, "epoch_mismatch");
    // And a new poll with the old cursor too, from any process.
    let other =
        serve(poll_layer(10 * SECOND).layer(source_on(&redis).await.topic("feed").unwrap())).await;
    let reply = get(other, &format!("/poll?after={old}")).await;
    assert_eq!(reply.status, 410);
    assert_eq!(reply.json()["head"], new.to_string());
    // The new epoch's cursors work.
    let reply = get(other, &format!("/poll?after={}", Cursor::zero(new.epoch()))).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["cursor"], new.to_string());
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn redis_down_answers_503_within_the_hold() {
    let mut redis = Redis::start(false).await;
    let source = RedisSource::builder(redis.url())
        .timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let topic = source.topic("feed").unwrap();
    let hold = 3 * SECOND;
    let addr = serve(poll_layer(hold).layer(topic.clone())).await;
    let head = topic.publish(data(1)).await.unwrap();
    redis.kill();

    // A poll that came in before the reader noticed may still hold (and answer 204); none may
    // hang past the hold, and once the outage is known, polls answer 503.
    let deadline = Instant::now() + 10 * SECOND;
    loop {
        let started = Instant::now();
        let reply = timeout(hold + 2 * SECOND, get(addr, &format!("/poll?after={head}")))
            .await
            .expect("a poll never hangs past the hold");
        if reply.status == 503 {
            assert!(
                started.elapsed() < hold,
                "answered after {:?}",
                started.elapsed()
            );
            break;
        }
        assert_eq!(reply.status, 204, "{reply:?}");
        assert!(Instant::now() < deadline, "no 503 while redis is down");
    }
    // A poll without a cursor needs Redis at once.
    let reply = timeout(hold + 2 * SECOND, get(addr, "/poll"))
        .await
        .unwrap();
    assert_eq!(reply.status, 503);
    // Publishing fails clearly.
    let err = topic.publish(data(2)).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn bad_settings_are_errors() {
    let err = RedisSource::builder("not a url").build().await.unwrap_err();
    assert!(err.is_config(), "{err:?}");
    let err = RedisSource::builder("redis://127.0.0.1:1")
        .retention(0)
        .build()
        .await
        .unwrap_err();
    assert!(err.is_config());
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn bad_names_and_foreign_streams_are_errors() {
    let (redis, source) = with_source(false).await;
    assert!(source.topic("").unwrap_err().is_config());
    assert!(source.topic("x:epoch").unwrap_err().is_config());
    // A stream written by someone else is an error, not a panic or a silent skip.
    let mut conn = redis.conn().await;
    let _: String = redis::cmd("XADD")
        .arg("push:foreign")
        .arg("*")
        .arg("k")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = source.publish("foreign", data(1)).await.unwrap_err();
    assert!(err.is_refused(), "{err:?}");
    let parts = Arc::new(http::Request::new(()).into_parts().0);
    let subscribe =
        tower_push::source::Subscribe::new(tower_push::source::Position::Oldest, 10, parts);
    let err = source
        .topic("foreign")
        .unwrap()
        .oneshot(subscribe)
        .await
        .unwrap_err();
    assert!(err.is_corrupt(), "{err:?}");
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn an_idle_reader_retires_and_a_new_subscription_restarts_it() {
    let redis = Redis::start(false).await;
    let source = RedisSource::builder(redis.url())
        .reader_idle(2 * SECOND)
        .build()
        .await
        .unwrap();
    let topic = source.topic("feed").unwrap();
    let addr = serve(poll_layer(SECOND).layer(topic.clone())).await;
    let first = topic.publish(data(1)).await.unwrap();
    let mut conn = redis.conn().await;
    let mut clients = async || -> usize {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .unwrap();
        list.lines().count()
    };
    let reply = get(
        addr,
        &format!("/poll?after={}", Cursor::zero(first.epoch())),
    )
    .await;
    assert_eq!(reply.status, 200);
    // The reader, the shared connection, and ours.
    assert_eq!(clients().await, 3);
    let deadline = Instant::now() + 10 * SECOND;
    while clients().await != 2 {
        assert!(Instant::now() < deadline, "the reader never retired");
        sleep(Duration::from_millis(50)).await;
    }
    // A new poll starts a reader again and is answered when an event arrives.
    let poll = tokio::spawn(async move { get(addr, &format!("/poll?after={first}")).await });
    parked(&topic, 1).await;
    let second = topic.publish(data(2)).await.unwrap();
    let reply = timeout(5 * SECOND, poll).await.unwrap().unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["cursor"], second.to_string());
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn expired_and_ahead_cursors_get_explicit_answers() {
    let redis = Redis::start(false).await;
    let mut conn = redis.conn().await;
    // Small stream nodes, so that `MAXLEN ~` can trim a short stream.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("stream-node-max-entries")
        .arg(4)
        .query_async(&mut conn)
        .await
        .unwrap();
    let source = RedisSource::builder(redis.url())
        .retention(8)
        .window(4)
        .build()
        .await
        .unwrap();
    let topic = source.topic("feed").unwrap();
    let addr = serve(poll_layer(5 * SECOND).layer(topic.clone())).await;
    let mut last = topic.publish(data(1)).await.unwrap();
    for n in 2..=40 {
        last = topic.publish(data(n)).await.unwrap();
    }
    let epoch = last.epoch();
    let first: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg("push:feed")
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let first_seq: u64 = first[0].0.strip_prefix("0-").unwrap().parse().unwrap();
    assert!(first_seq > 1, "the stream was trimmed");

    let reply = get(addr, &format!("/poll?after={}", Cursor::zero(epoch))).await;
    assert_eq!(reply.status, 410, "{reply:?}");
    let body = reply.json();
    assert_eq!(body["error"], "cursor_expired");
    assert_eq!(
        body["oldest"],
        Cursor::new(epoch, first_seq - 1).to_string()
    );
    assert_eq!(body["head"], last.to_string());

    // The oldest retained cursor reads on from there, behind the reader's small window.
    let reply = get(
        addr,
        &format!("/poll?after={}", Cursor::new(epoch, first_seq - 1)),
    )
    .await;
    assert_eq!(reply.status, 200);
    let events = reply.json()["events"].as_array().unwrap().clone();
    assert_eq!(events[0]["data"]["n"], first_seq);

    let reply = get(addr, &format!("/poll?after={}", Cursor::new(epoch, 41))).await;
    reply.assert_error(400, "cursor_ahead");
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn a_cursor_of_another_topic_or_source_gets_a_resync_on_both_layers() {
    let (redis, source) = with_source(false).await;
    let (a, b) = (source.topic("a").unwrap(), source.topic("b").unwrap());
    let mut a_head = None;
    for n in 1..=20 {
        a_head = Some(a.publish(data(n)).await.unwrap());
        b.publish(data(n)).await.unwrap();
    }
    let a_head = a_head.unwrap();
    let other = RedisSource::builder(redis.url())
        .key_prefix("other:")
        .build()
        .await
        .unwrap()
        .topic("b")
        .unwrap();
    let other_head = other.publish(data(1)).await.unwrap();
    let poll = serve(poll_layer(5 * SECOND).layer(b.clone())).await;
    let stream = serve(ChunkedStreamLayer::new().layer(b)).await;
    let foreign = [Cursor::new(a_head.epoch(), 11), a_head, other_head];
    assert_foreign_cursors_resync(poll, stream, &foreign).await;
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn one_request_follows_several_topics_of_one_source() {
    let (_redis, source) = with_source(false).await;
    let (inbox, presence) = (
        source.topic("inbox").unwrap(),
        source.topic("presence").unwrap(),
    );
    let poll = serve(poll_layer(5 * SECOND).layer(source.clone())).await;
    let stream = serve(ChunkedStreamLayer::new().layer(source.clone())).await;

    // Both topics' heads, as one composite cursor.
    let first = inbox.publish(data(1)).await.unwrap();
    presence.publish(data(1)).await.unwrap();
    let reply = get(poll, "/poll?topics=inbox,presence&after=x").await;
    assert_eq!(reply.status, 400, "{reply:?}");
    // The source answers heads after a round trip: the stream's opening message names them.
    let sse = [("accept", "text/event-stream")];
    let mut opened = RawResponse::get(stream, "/stream?topics=inbox,presence", &sse).await;
    let message = opened.message(b"\n\n").await.unwrap();
    let cursor = message
        .strip_prefix("id: ")
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("{message:?}"))
        .to_owned();
    drop(opened);
    assert_eq!(cursor.split('.').next().unwrap(), first.to_string());

    // A poll parked on both is woken by either, and resumes each where it was.
    let mut received: Vec<(String, u64)> = Vec::new();
    let mut cursor = cursor;
    let publisher = {
        let (inbox, presence) = (inbox.clone(), presence.clone());
        tokio::spawn(async move {
            for n in 2..=11 {
                let topic = if n % 3 == 0 { &presence } else { &inbox };
                topic.publish(data(n)).await.unwrap();
                sleep(Duration::from_millis(2)).await;
            }
        })
    };
    timeout(30 * SECOND, async {
        while received.len() < 10 {
            let path = format!("/poll?topics=inbox,presence&after={cursor}");
            let reply = get(poll, &path).await;
            if reply.status == 204 {
                continue;
            }
            assert_eq!(reply.status, 200, "{reply:?}");
            let body = reply.json();
            for event in body["events"].as_array().unwrap() {
                let topic = event["topic"].as_str().unwrap().to_owned();
                received.push((topic, event["data"]["n"].as_u64().unwrap()));
            }
            cursor = body["cursor"].as_str().unwrap().to_owned();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {received:?} arrived"));
    publisher.await.unwrap();
    for (topic, want) in [
        ("inbox", [2, 4, 5, 7, 8, 10, 11].as_slice()),
        ("presence", &[3, 6, 9]),
    ] {
        let got: Vec<u64> = received
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(got, want, "{topic}: in order, nothing lost or repeated");
    }

    // A topic this source was never asked for is refused, and never remembered.
    let reply = get(poll, "/poll?topics=inbox,elsewhere").await;
    reply.assert_error(400, "unknown_topic");
    assert_eq!(reply.json()["topic"], "elsewhere");
    assert!(source.find_topic("elsewhere").is_none());
}
