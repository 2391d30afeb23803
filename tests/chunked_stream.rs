//! The stream layer over real HTTP/1.1 sockets, reading the raw bytes off the wire.

mod common;

use std::time::Duration;

use common::{
    assert_spread, data, get_with, parked, quiet_stream, serve, serve_until, RawResponse, NDJSON,
    SECOND, SSE,
};
use futures_util::StreamExt;
use tokio::time::{timeout, Instant};
use tower_push::format::{AutoFormat, Framing, SseFormat};
use tower_push::{
    ChunkedStreamLayer, Cursor, EventData, EventName, LongPollLayer, MemoryLog, Shutdown,
};

fn quiet_layer() -> ChunkedStreamLayer {
    quiet_stream()
        .max_lifetime(Duration::from_secs(7200))
        .build()
        .unwrap()
}

/// Streams without heartbeats that end after `lifetime`, less up to `jitter` of it.
fn lifetime_layer(lifetime: Duration, jitter: f64) -> ChunkedStreamLayer {
    quiet_stream()
        .max_lifetime(lifetime)
        .lifetime_jitter(jitter)
        .build()
        .unwrap()
}

fn assert_stream_headers(response: &RawResponse, content_type: &str) {
    assert_eq!(response.status, 200, "{}", response.head);
    assert_eq!(
        response.header("content-type").as_deref(),
        Some(content_type)
    );
    assert_eq!(
        response.header("cache-control").as_deref(),
        Some("no-cache, no-transform")
    );
    assert_eq!(response.header("x-accel-buffering").as_deref(), Some("no"));
    // hyper frames the body itself; the layer never sets these.
    assert_eq!(
        response.header("transfer-encoding").as_deref(),
        Some("chunked")
    );
    assert!(response.header("connection").is_none());
    assert!(response.header("keep-alive").is_none());
    assert!(response.header("content-length").is_none());
}

#[tokio::test]
async fn each_ndjson_event_arrives_before_the_next_is_published() {
    let topic = MemoryLog::new().topic("t");
    let addr = serve(quiet_layer().layer(topic.clone())).await;
    let mut stream = RawResponse::get(addr, "/stream", &[NDJSON]).await;
    assert_stream_headers(&stream, "application/x-ndjson");
    let start = topic.head();
    assert_eq!(stream.header("push-cursor"), Some(start.to_string()));

    for n in 1..=5 {
        parked(&topic, 1).await;
        let id = topic.publish(data(n));
        let line = timeout(5 * SECOND, stream.message(b"\n"))
            .await
            .expect("the event arrived while the stream stays open")
            .unwrap();
        assert_eq!(
            line,
            format!("{{\"id\":\"{id}\",\"data\":{{\"n\":{n}}}}}\n")
        );
    }
}

#[tokio::test]
async fn each_sse_event_arrives_with_exact_fields() {
    let topic = MemoryLog::new().topic("t");
    let layer = ChunkedStreamLayer::builder()
        .heartbeat_interval(Duration::from_secs(3600))
        .format(AutoFormat::new(Framing::Ndjson).sse(SseFormat::new().retry(2 * SECOND)))
        .build()
        .unwrap();
    let addr = serve(layer.layer(topic.clone())).await;
    let start = topic.head();
    let mut stream = RawResponse::get(addr, "/stream", &[SSE]).await;
    assert_stream_headers(&stream, "text/event-stream");

    let open = timeout(5 * SECOND, stream.message(b"\n\n")).await.unwrap();
    assert_eq!(open.unwrap(), format!("retry: 2000\nid: {start}\n\n"));

    parked(&topic, 1).await;
    let id = topic.publish(data(1));
    let message = timeout(5 * SECOND, stream.message(b"\n\n")).await.unwrap();
    assert_eq!(message.unwrap(), format!("id: {id}\ndata: {{\"n\":1}}\n\n"));

    parked(&topic, 1).await;
    let name = EventName::new("greeting").unwrap();
    let id = topic.publish_named(name, EventData::from_json("\"hi\"").unwrap());
    let message = timeout(5 * SECOND, stream.message(b"\n\n")).await.unwrap();
    assert_eq!(
        message.unwrap(),
        format!("id: {id}\nevent: greeting\ndata: \"hi\"\n\n")
    );
}

#[tokio::test]
async fn last_event_id_resumes_exactly_after_it() {
    let topic = MemoryLog::new().topic("t");
    let addr = serve(quiet_layer().layer(topic.clone())).await;
    let ids: Vec<Cursor> = (1..=5).map(|n| topic.publish(data(n))).collect();

    let resume = ids[1].to_string();
    let mut stream = RawResponse::get(
        addr,
        "/stream?after=ignored",
        &[SSE, ("last-event-id", &resume)],
    )
    .await;
    assert_stream_headers(&stream, "text/event-stream");
    assert_eq!(stream.header("push-cursor"), Some(resume.clone()));
    let mut messages = Vec::new();
    while messages.len() < 4 {
        messages.push(
            timeout(5 * SECOND, stream.message(b"\n\n"))
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(messages[0], format!("id: {resume}\n\n"));
    for (message, n) in messages[1..].iter().zip(3..) {
        let id = ids[n as usize - 1];
        assert_eq!(*message, format!("id: {id}\ndata: {{\"n\":{n}}}\n\n"));
    }

    // The same over NDJSON with the query parameter.
    let mut stream = RawResponse::get(addr, &format!("/stream?after={resume}"), &[NDJSON]).await;
    for n in 3..=5 {
        let line = timeout(5 * SECOND, stream.message(b"\n"))
            .await
            .unwrap()
            .unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["id"], ids[n - 1].to_string());
        assert_eq!(value["data"]["n"], n);
    }
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_their_cadence_and_reset_on_events() {
    let topic = MemoryLog::new().topic("t");
    let every = Duration::from_secs(15);
    let layer = ChunkedStreamLayer::builder()
        .heartbeat_interval(every)
        .max_lifetime(Duration::from_secs(3600))
        .build()
        .unwrap();
    let addr = serve(layer.layer(topic.clone())).await;

    for (accept, delimiter, heartbeat) in [
        (NDJSON, &b"\n"[..], "{\"heartbeat\":true}\n"),
        (SSE, &b"\n\n"[..], ": heartbeat\n\n"),
    ] {
        let mut stream = RawResponse::get(addr, "/stream", &[accept]).await;
        if accept == SSE {
            stream.message(delimiter).await.unwrap(); // the opening id
        }
        let opened = Instant::now();
        for beat in 1..=3u32 {
            let message = stream.message(delimiter).await.unwrap();
            assert_eq!(message, heartbeat);
            assert_eq!(opened.elapsed(), every * beat, "heartbeat {beat}");
        }

        // An event 10 s into an interval restarts it: the next heartbeat comes 15 s after the
        // event, not 5 s.
        tokio::time::sleep(Duration::from_secs(10)).await;
        topic.publish(data(1));
        let event_at = Instant::now();
        let event = stream.message(delimiter).await.unwrap();
        assert!(event.contains("\"n\":1"), "{event}");
        let message = stream.message(delimiter).await.unwrap();
        assert_eq!(message, heartbeat);
        assert_eq!(event_at.elapsed(), every);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn falling_behind_retention_ends_with_a_resync_message() {
    let log = MemoryLog::builder().retention(3).build().unwrap();
    let topic = log.topic("t");
    let addr = serve(quiet_layer().layer(topic.clone())).await;

    for (accept, delimiter) in [(NDJSON, &b"\n"[..]), (SSE, &b"\n\n"[..])] {
        let mut stream = RawResponse::get(addr, "/stream", &[accept]).await;
        if accept == SSE {
            stream.message(delimiter).await.unwrap();
        }
        let start = topic.head();
        parked(&topic, 1).await;
        // Ten events at once on this single-threaded runtime: the stream wakes only after all
        // of them, when seven are already gone.
        for n in 1..=10 {
            topic.publish(data(n));
        }
        let last = timeout(5 * SECOND, stream.message(delimiter))
            .await
            .unwrap()
            .unwrap();
        let json = match accept {
            NDJSON => last.trim_end().to_owned(),
            _ => {
                let body = last.strip_prefix("event: resync\ndata: ").expect(&last);
                body.trim_end().to_owned()
            }
        };
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["error"], "cursor_expired");
        assert_eq!(
            value["oldest"],
            Cursor::new(start.epoch(), start.seq() + 7).to_string()
        );
        assert_eq!(value["head"], topic.head().to_string());
        timeout(5 * SECOND, stream.assert_ended()).await.unwrap();
    }
}

#[tokio::test]
async fn refused_start_cursors_get_the_long_poll_answers() {
    let before_restart = MemoryLog::new().topic("t").publish(data(1));
    let topic = MemoryLog::builder()
        .retention(2)
        .build()
        .unwrap()
        .topic("t");
    let addr = serve(quiet_layer().layer(topic.clone())).await;
    let first = topic.publish(data(1));
    for n in 2..=5 {
        topic.publish(data(n));
    }
    let ahead = Cursor::new(first.epoch(), 99);
    let cases = [
        (format!("/stream?after={first}"), 410, "cursor_expired"),
        (
            format!("/stream?after={before_restart}"),
            410,
            "epoch_mismatch",
        ),
        (format!("/stream?after={ahead}"), 400, "cursor_ahead"),
        ("/stream?after=nope".to_owned(), 400, "malformed_cursor"),
    ];
    for (path, status, code) in cases {
        for accept in [SSE, NDJSON] {
            let reply = get_with(addr, &path, &[(accept.0, accept.1.as_bytes())]).await;
            assert_eq!(reply.status, status, "{path}");
            assert_eq!(reply.json()["error"], code, "{path}");
            assert_eq!(reply.header("content-type"), Some("application/json"));
            assert_eq!(
                reply.header("cache-control"),
                Some("no-cache, no-transform")
            );
            assert_eq!(reply.header("x-accel-buffering"), Some("no"));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn streams_end_cleanly_at_their_lifetime() {
    let topic = MemoryLog::new().topic("t");
    let lifetime = Duration::from_secs(120);
    let addr = serve(lifetime_layer(lifetime, 0.0).layer(topic.clone())).await;
    let id = topic.publish(data(1));

    let opened = Instant::now();
    let mut stream = RawResponse::get(addr, "/stream", &[NDJSON]).await;
    let line = stream.message(b"\n").await.unwrap();
    assert_eq!(
        line,
        format!("{{\"end\":\"lifetime\",\"cursor\":\"{id}\"}}\n")
    );
    assert_eq!(opened.elapsed(), lifetime);
    stream.assert_ended().await;
    assert_eq!(topic.parked_subscriptions(), 0);
}

#[tokio::test(start_paused = true)]
async fn lifetimes_are_spread_by_jitter() {
    let topic = MemoryLog::new().topic("t");
    let lifetime = Duration::from_secs(100);
    let addr = serve(lifetime_layer(lifetime, 0.5).layer(topic.clone())).await;
    assert_spread(8, lifetime, move || async move {
        let mut stream = RawResponse::get(addr, "/stream", &[NDJSON]).await;
        let line = stream.message(b"\n").await.unwrap();
        assert!(line.starts_with("{\"end\":\"lifetime\""));
    })
    .await;
}

#[tokio::test]
async fn shutdown_drains_streams_and_parked_polls() {
    let topic = MemoryLog::new().topic("t");
    let shutdown = Shutdown::new();
    let stream_layer = quiet_stream().shutdown(shutdown.clone()).build().unwrap();
    let poll_layer = LongPollLayer::builder()
        .hold_timeout(Duration::from_secs(3600))
        .shutdown(shutdown.clone())
        .build()
        .unwrap();
    let server_stop = Shutdown::new();
    let (stream_addr, stream_server) =
        serve_until(stream_layer.layer(topic.clone()), server_stop.clone()).await;
    let (poll_addr, poll_server) =
        serve_until(poll_layer.layer(topic.clone()), server_stop.clone()).await;

    let cursor = topic.publish(data(1));
    let mut ndjson =
        RawResponse::get(stream_addr, &format!("/stream?after={cursor}"), &[NDJSON]).await;
    let mut sse = RawResponse::get(stream_addr, &format!("/stream?after={cursor}"), &[SSE]).await;
    sse.message(b"\n\n").await.unwrap();
    let poll =
        tokio::spawn(async move { common::get(poll_addr, &format!("/poll?after={cursor}")).await });
    parked(&topic, 3).await;

    shutdown.trigger();
    let line = timeout(5 * SECOND, ndjson.message(b"\n"))
        .await
        .unwrap()
        .unwrap();
    // Each end carries its own reconnection delay, drawn from the 5 s reconnect window.
    let end: serde_json::Value = serde_json::from_str(&line).unwrap();
    let retry_ms = end["retry_ms"].as_u64().unwrap();
    assert!(retry_ms <= 5000, "{line}");
    assert_eq!(
        line,
        format!("{{\"end\":\"shutdown\",\"cursor\":\"{cursor}\",\"retry_ms\":{retry_ms}}}\n")
    );
    timeout(5 * SECOND, ndjson.assert_ended()).await.unwrap();
    let message = timeout(5 * SECOND, sse.message(b"\n\n"))
        .await
        .unwrap()
        .unwrap();
    let retry_ms: u64 = message
        .strip_prefix("retry: ")
        .and_then(|rest| rest.split('\n').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no retry field first: {message:?}"));
    assert!(retry_ms <= 5000, "{message}");
    assert_eq!(
        message,
        format!(
            "retry: {retry_ms}\nevent: end\ndata: \
             {{\"end\":\"shutdown\",\"cursor\":\"{cursor}\",\"retry_ms\":{retry_ms}}}\n\n"
        )
    );
    timeout(5 * SECOND, sse.assert_ended()).await.unwrap();
    let reply = timeout(5 * SECOND, poll).await.unwrap().unwrap();
    assert_eq!(reply.status, 204);
    assert_eq!(
        reply.header("push-cursor"),
        Some(cursor.to_string().as_str())
    );
    let retry_ms: u64 = reply.header("push-retry-ms").unwrap().parse().unwrap();
    assert!(retry_ms <= 5000);
    let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert_eq!(retry_after, retry_ms.div_ceil(1000));

    // New requests are refused with a spread Retry-After while the server drains.
    for addr in [stream_addr, poll_addr] {
        let reply = get_with(addr, "/x", &[]).await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.json()["error"], "shutting_down");
        let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=5).contains(&retry));
    }

    // hyper's graceful shutdown now finishes: nothing is left open.
    server_stop.trigger();
    timeout(5 * SECOND, stream_server)
        .await
        .expect("streams drained")
        .unwrap();
    timeout(5 * SECOND, poll_server)
        .await
        .expect("polls drained")
        .unwrap();
    assert_eq!(topic.parked_subscriptions(), 0);
}

#[tokio::test]
async fn an_independent_sse_parser_reads_the_same_ids_and_data() {
    use eventsource_stream::Eventsource;
    use http_body_util::BodyDataStream;

    let topic = MemoryLog::new().topic("t");
    let addr = serve(quiet_layer().layer(topic.clone())).await;
    let start = topic.head();

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(format!("/stream?after={start}"))
        .header("host", "test")
        .header("accept", "text/event-stream")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let mut events = BodyDataStream::new(response.into_body()).eventsource();

    let mut published = Vec::new();
    for n in 1..=3 {
        let id = topic.publish(data(n));
        published.push((id.to_string(), format!("{{\"n\":{n}}}")));
    }
    let name = EventName::new("named").unwrap();
    let id = topic.publish_named(name, EventData::from_json("[1,\n2]").unwrap());
    published.push((id.to_string(), "[1, 2]".to_owned()));

    for (id, data) in &published {
        let event = timeout(5 * SECOND, events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&event.id, id);
        assert_eq!(&event.data, data);
        let expected = if id == &published[3].0 {
            "named"
        } else {
            "message"
        };
        assert_eq!(event.event, expected);
    }
}

#[tokio::test]
async fn streams_woken_by_one_publish_share_one_encoded_frame() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let topic = MemoryLog::new().topic("t");
    let service = ChunkedStreamLayer::new().layer(topic.clone());
    let head = topic.head();
    let mut bodies = Vec::new();
    for i in 0..20 {
        // Half NDJSON, half SSE: each framing is encoded once.
        let accept = if i % 2 == 0 {
            "application/x-ndjson"
        } else {
            "text/event-stream"
        };
        let request = http::Request::get(format!("/stream?after={head}"))
            .header("accept", accept)
            .body(())
            .unwrap();
        let response = service.clone().oneshot(request).await.unwrap();
        let mut body = response.into_body();
        if i % 2 == 1 {
            // SSE opens with the start cursor, a frame of its own.
            body.frame().await.unwrap().unwrap();
        }
        bodies.push(body);
    }
    let reading: Vec<_> = bodies
        .into_iter()
        .map(|mut body| {
            tokio::spawn(async move {
                let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
                (frame, body)
            })
        })
        .collect();
    parked(&topic, 20).await;
    let id = topic.publish(data(1));
    let mut frames = Vec::new();
    for read in reading {
        frames.push(read.await.unwrap().0);
    }
    let (ndjson, sse): (Vec<_>, Vec<_>) = frames.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    for framing in [ndjson, sse] {
        let first = framing[0].1;
        assert!(std::str::from_utf8(first)
            .unwrap()
            .contains(&id.to_string()));
        for (_, frame) in &framing {
            assert_eq!(frame, &first);
            assert_eq!(frame.as_ptr(), first.as_ptr(), "one encoding per framing");
        }
    }
}
