//! Sources whose logs end or are deleted, and requests whose start position a service in front
//! of the layers has read: the core's answers with the default formats, over real sockets.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{get, poll_layer, serve, Answers, RawResponse, NDJSON};
use http::request::Parts;
use http::HeaderValue;
use http::Request;
use tower::ServiceExt;
use tower_push::format::{NdjsonFormat, StreamEnd, StreamFormat};
use tower_push::source::{Batch, Outcome, Position};
use tower_push::{ChunkedStreamLayer, Cursor, CursorError, Epoch, Event, EventData, Rejection};

const EPOCH: Epoch = Epoch::new(9);

/// A log of three events that has ended: events after a cursor below 3, `Closed` at 3.
const ENDED: Answers = Answers(|req| {
    let head = Cursor::new(EPOCH, 3);
    let after = match req.position() {
        Position::After(cursor) => cursor.seq(),
        Position::Oldest => 0,
        Position::Head => return Outcome::Head(head),
    };
    if after >= 3 {
        return Outcome::Closed { head };
    }
    let events = (after + 1..=3)
        .map(|seq| Event::new(Cursor::new(EPOCH, seq), EventData::from_bytes("raw\nbytes")))
        .collect();
    Outcome::Events(Batch::new(events).unwrap().reaching_head(true))
});

/// A log that was deleted after its second event: events after a cursor below 2, `Gone` from 2.
const DELETED: Answers = Answers(|req| match req.position() {
    Position::After(cursor) if cursor.seq() < 2 => {
        let event = Event::new(Cursor::new(EPOCH, 2), EventData::from_json("2").unwrap());
        Outcome::Events(Batch::new(vec![event]).unwrap())
    }
    _ => Outcome::Gone,
});

/// Reads the whole NDJSON stream after `after`, which must open with 200 and end: its messages,
/// and the body they came in (for failure messages).
async fn ndjson_stream(addr: SocketAddr, after: Cursor) -> (Vec<serde_json::Value>, String) {
    let mut stream = RawResponse::get(addr, &format!("/stream?after={after}"), &[NDJSON]).await;
    assert_eq!(stream.status, 200);
    let body = stream.body().await;
    let lines = body
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (lines, body)
}

#[tokio::test(start_paused = true)]
async fn a_long_poll_at_the_end_of_a_closed_log_answers_at_once() {
    let addr = serve(poll_layer(Duration::from_secs(60)).layer(ENDED)).await;
    let started = tokio::time::Instant::now();
    let at_end = Cursor::new(EPOCH, 3);
    let reply = get(addr, &format!("/poll?after={at_end}")).await;
    assert_eq!(started.elapsed(), Duration::ZERO, "no hold");
    // The default closed answer is the timeout answer: 204 with the cursor kept.
    assert_eq!(reply.status, 204);
    assert_eq!(
        reply.header("push-cursor"),
        Some(at_end.to_string().as_str())
    );

    // Raw payloads stay valid JSON in the default format.
    let reply = get(addr, &format!("/poll?after={}", Cursor::new(EPOCH, 2))).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["events"][0]["data"], "raw\nbytes");
}

#[tokio::test]
async fn a_stream_ends_with_a_closed_message_after_the_last_events() {
    let addr = serve(ChunkedStreamLayer::new().layer(ENDED)).await;
    let (lines, body) = ndjson_stream(addr, Cursor::new(EPOCH, 1)).await;
    assert_eq!(lines.len(), 3, "{body}");
    assert_eq!(lines[0]["data"], "raw\nbytes");
    assert_eq!(
        lines[2],
        serde_json::json!({ "end": "closed", "cursor": Cursor::new(EPOCH, 3).to_string() })
    );
}

/// NDJSON, for a protocol whose clients name their position as `?from=<seq>`.
#[derive(Clone, Debug)]
struct Numbered;

impl StreamFormat for Numbered {
    fn start(&self, parts: &Parts) -> Result<Option<Position>, Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let Some(seq) = query.split('&').find_map(|pair| pair.strip_prefix("from=")) else {
            return Ok(None);
        };
        let seq = seq
            .parse()
            .map_err(|_| Rejection::MalformedCursor(CursorError::InvalidSequence))?;
        Ok(Some(Position::After(Cursor::new(EPOCH, seq))))
    }

    fn content_type(&self) -> HeaderValue {
        NdjsonFormat.content_type()
    }

    fn event(&self, event: &Event, out: &mut Vec<u8>) {
        NdjsonFormat.event(event, out);
    }

    fn heartbeat(&self, out: &mut Vec<u8>) {
        NdjsonFormat.heartbeat(out);
    }

    fn end(&self, end: &StreamEnd, out: &mut Vec<u8>) {
        NdjsonFormat.end(end, out);
    }
}

#[tokio::test]
async fn a_start_position_the_format_reads_wins_over_the_query() {
    let layer = ChunkedStreamLayer::builder()
        .format(Numbered)
        .build()
        .unwrap();
    let request = Request::builder()
        .uri("/stream?after=garbage&from=2")
        .body(())
        .unwrap();
    let response = layer.layer(ENDED).oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200, "the malformed `after` is not read");
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(text.lines().filter(|l| !l.is_empty()).count(), 2, "{text}");
    assert!(text.contains("\"end\":\"closed\""));

    // Without its own position, the request's cursor is read as usual; a malformed position of
    // the format's own is refused with the format's rejection.
    let plain = Request::builder()
        .uri("/stream?after=garbage")
        .body(())
        .unwrap();
    let response = layer.layer(ENDED).oneshot(plain).await.unwrap();
    assert_eq!(response.status(), 400);
    let bad = Request::builder().uri("/stream?from=x").body(()).unwrap();
    let response = layer.layer(ENDED).oneshot(bad).await.unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test(start_paused = true)]
async fn a_long_poll_on_a_deleted_log_answers_404_at_once() {
    let addr = serve(poll_layer(Duration::from_secs(60)).layer(DELETED)).await;
    let started = tokio::time::Instant::now();
    let reply = get(addr, &format!("/poll?after={}", Cursor::new(EPOCH, 2))).await;
    assert_eq!(started.elapsed(), Duration::ZERO, "no hold");
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"], "topic_gone");
}

#[tokio::test]
async fn a_stream_ends_with_the_gone_message_when_its_log_is_deleted() {
    let addr = serve(ChunkedStreamLayer::new().layer(DELETED)).await;
    let gone = RawResponse::get(
        addr,
        &format!("/stream?after={}", Cursor::new(EPOCH, 2)),
        &[NDJSON],
    )
    .await;
    assert_eq!(gone.status, 404, "refused before the stream starts");

    let (lines, body) = ndjson_stream(addr, Cursor::new(EPOCH, 1)).await;
    assert_eq!(lines.len(), 2, "{body}");
    assert_eq!(lines[0]["data"], 2);
    assert_eq!(lines[1]["error"], "topic_gone", "{body}");
}
