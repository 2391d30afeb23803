//! Authorization per topic over real sockets, from a hostile client's point of view: no token,
//! a wrong token, a forbidden topic alone and among allowed ones, forbidden against missing
//! byte for byte, a foreign cursor, revocation while a poll is held and while a stream is
//! open, and a check that waits.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{get_with, serve, RawResponse, Reply};
use tower_push::authorize::{Access, Check, Verdict};
use tower_push::{ChunkedStreamLayer, Cursor, EventData, LongPollLayer, MemoryLog};

/// Tokens and the topics each grants; shared, so that a test can revoke one.
#[derive(Clone, Default)]
struct Grants(Arc<Mutex<HashMap<String, HashSet<String>>>>);

impl Grants {
    fn new(grants: &[(&str, &[&str])]) -> Self {
        let map = grants
            .iter()
            .map(|(token, topics)| {
                let topics = topics.iter().map(|t| (*t).to_owned()).collect();
                ((*token).to_owned(), topics)
            })
            .collect();
        Self(Arc::new(Mutex::new(map)))
    }

    fn revoke(&self, token: &str) {
        self.0.lock().unwrap().remove(token);
    }

    /// The check: the bearer token (or the `push_token` cookie) must grant the topic.
    fn check(&self, request: &http::request::Parts, topic: Option<&str>) -> Verdict {
        let header = request
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let grants = self.0.lock().unwrap();
        match header.and_then(|token| grants.get(token)) {
            None => Verdict::Unauthenticated,
            Some(topics) if topic.is_some_and(|t| topics.contains(t)) => Verdict::Allow,
            Some(_) => Verdict::Deny,
        }
    }
}

fn event(n: u64) -> EventData {
    EventData::from_serialize(&serde_json::json!({ "n": n })).unwrap()
}

/// The composite cursor that reads `names` of `log` from their oldest events.
fn oldest(log: &MemoryLog, names: &[&str]) -> String {
    let cursors: Vec<String> = names
        .iter()
        .map(|name| Cursor::zero(log.topic(name).epoch()).to_string())
        .collect();
    cursors.join(".")
}

/// A log with the topics `names`, each holding one event.
fn log(names: &[&str]) -> MemoryLog {
    let log = MemoryLog::new();
    for name in names {
        log.topic(name).publish(event(1));
    }
    log
}

/// A long poll and a stream over `log`, both checked by `grants`, re-checking every `every`.
async fn servers(log: &MemoryLog, grants: &Grants, every: Duration) -> (SocketAddr, SocketAddr) {
    let check = |grants: &Grants| {
        let grants = grants.clone();
        move |request: &http::request::Parts, topic: Option<&str>, access: Access| {
            assert_eq!(access, Access::Read);
            Check::ready(grants.check(request, topic))
        }
    };
    // The two builders are different types with the same authorization settings.
    macro_rules! checked {
        ($builder:expr) => {
            $builder
                .authorize(check(grants))
                .reauthorize_every(every)
                .build()
                .unwrap()
                .layer(log.clone())
        };
    }
    let poll = checked!(LongPollLayer::builder().hold_timeout(Duration::from_secs(10)));
    let stream = checked!(ChunkedStreamLayer::builder().heartbeat_interval(Duration::from_secs(5)));
    (serve(poll).await, serve(stream).await)
}

async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &[u8])> = bearer
        .iter()
        .map(|b| ("authorization", b.as_bytes()))
        .collect();
    get_with(addr, path, &headers).await
}

/// The answer without the headers that differ from one answer to the next.
fn comparable(reply: &Reply) -> (u16, Vec<(String, String)>, bytes::Bytes) {
    let mut headers: Vec<_> = reply
        .headers
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    (reply.status.as_u16(), headers, reply.body.clone())
}

#[tokio::test]
async fn requests_without_valid_credentials_get_401_on_both_layers() {
    let log = log(&["a"]);
    let grants = Grants::new(&[("good", &["a"])]);
    let (poll, stream) = servers(&log, &grants, Duration::from_secs(60)).await;
    for addr in [poll, stream] {
        for token in [None, Some("wrong")] {
            let from_oldest = format!("/?topics=a&after={}", oldest(&log, &["a"]));
            for path in ["/?topics=a", &from_oldest] {
                let reply = get(addr, path, token).await;
                assert_eq!(reply.status, 401, "{path} {token:?}");
                assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
                assert_eq!(reply.json()["error"], "unauthenticated");
                // Nothing of the topic: no cursor, no head.
                assert!(reply.json().get("head").is_none());
            }
        }
        // The same requests with the token: the head of the answer is enough.
        let headers = [("authorization", "Bearer good")];
        let from_oldest = format!("/?topics=a&after={}", oldest(&log, &["a"]));
        let allowed = RawResponse::get(addr, &from_oldest, &headers).await;
        assert_eq!(allowed.status, 200);
    }
}

#[tokio::test]
async fn a_forbidden_topic_answers_byte_for_byte_as_a_missing_one() {
    // "secret" exists on one server, and the token may not read it; on the other it does not
    // exist, and the token could.
    let grants = Grants::new(&[("t", &["a"])]);
    let with_secret = log(&["a", "secret"]);
    let (poll_forbidden, stream_forbidden) =
        servers(&with_secret, &grants, Duration::from_secs(60)).await;
    let both = format!(
        "/?topics=secret,a&after={}",
        oldest(&with_secret, &["secret", "a"])
    );
    let everything = Grants::new(&[("t", &["a", "secret"])]);
    let (poll_missing, stream_missing) =
        servers(&log(&["a"]), &everything, Duration::from_secs(60)).await;
    for (forbidden, missing) in [
        (poll_forbidden, poll_missing),
        (stream_forbidden, stream_missing),
    ] {
        for path in ["/?topics=secret", "/?topics=a,secret", &both] {
            let refused = get(forbidden, path, Some("t")).await;
            let absent = get(missing, path, Some("t")).await;
            assert_eq!(comparable(&refused), comparable(&absent), "{path}");
            assert_eq!(refused.status, 400, "{path}");
            assert_eq!(refused.json()["error"], "unknown_topic");
            assert_eq!(refused.json()["topic"], "secret");
        }
    }
}

#[tokio::test]
async fn a_multiplexed_request_with_one_forbidden_topic_is_refused_whole() {
    let log = log(&["a", "b", "secret"]);
    let grants = Grants::new(&[("t", &["a", "b"])]);
    let (poll, stream) = servers(&log, &grants, Duration::from_secs(60)).await;
    // From the oldest event: "a" and "b" have events ready, but nothing of them goes out.
    for addr in [poll, stream] {
        let path = format!(
            "/?topics=a,secret,b&after={}",
            oldest(&log, &["a", "secret", "b"])
        );
        let reply = get(addr, &path, Some("t")).await;
        assert_eq!(reply.status, 400);
        let body = String::from_utf8(reply.body.to_vec()).unwrap();
        assert!(!body.contains("\"a\"") && !body.contains("\"b\""), "{body}");
        assert!(!body.contains("cursor") && !body.contains("head"), "{body}");
    }
    // Without the forbidden topic, the same request is answered with events.
    let path = format!("/?topics=a,b&after={}", oldest(&log, &["a", "b"]));
    let reply = get(poll, &path, Some("t")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[tokio::test]
async fn a_foreign_cursor_or_last_event_id_reads_nothing_of_the_topic_it_came_from() {
    let log = log(&["a"]);
    let secret = log.topic("secret");
    for n in 2..=9 {
        secret.publish(event(n));
    }
    let grants = Grants::new(&[("t", &["a"])]);
    let (poll, stream) = servers(&log, &grants, Duration::from_secs(60)).await;
    // A cursor of "secret" sent for "a": as a cursor parameter to the poll, and as the
    // `Last-Event-ID` that `EventSource` sends back to the stream.
    let foreign = secret.head().to_string();
    let by_cursor = get(poll, &format!("/?topics=a&after={foreign}"), Some("t")).await;
    let headers: [(&str, &[u8]); 3] = [
        ("authorization", b"Bearer t"),
        ("accept", b"text/event-stream"),
        ("last-event-id", foreign.as_bytes()),
    ];
    let by_last_event_id = get_with(stream, "/?topics=a", &headers).await;
    for reply in [by_cursor, by_last_event_id] {
        // Another epoch: "a" must resync, told in "a"'s own cursors only.
        assert_eq!(reply.status, 410);
        assert_eq!(reply.json()["error"], "epoch_mismatch");
        assert_eq!(reply.json()["topic"], "a");
        let body = String::from_utf8(reply.body.to_vec()).unwrap();
        assert!(
            !body.contains("secret") && !body.contains(&foreign),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_held_poll_ends_with_401_soon_after_its_token_is_revoked() {
    let log = log(&["a"]);
    let grants = Grants::new(&[("t", &["a"]), ("other", &["a"])]);
    let every = Duration::from_millis(200);
    let (poll, _) = servers(&log, &grants, every).await;
    let started = Instant::now();
    let held = tokio::spawn(async move { get(poll, "/?topics=a", Some("t")).await });
    let kept = tokio::spawn(async move { get(poll, "/?topics=a", Some("other")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    grants.revoke("t");
    let reply = held.await.unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error"], "unauthenticated");
    // Within an interval or two of the revocation, not at the end of the 10 s hold.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Another token's poll is still held, and answered by the next event.
    assert!(!kept.is_finished());
    log.topic("a").publish(event(2));
    assert_eq!(kept.await.unwrap().status, 200);
    // The revoked token's next request is refused at once.
    assert_eq!(get(poll, "/?topics=a", Some("t")).await.status, 401);
}

#[tokio::test]
async fn an_open_stream_ends_with_a_final_message_after_its_token_is_revoked() {
    let log = log(&["a"]);
    let grants = Grants::new(&[("t", &["a"])]);
    let (_, stream) = servers(&log, &grants, Duration::from_millis(200)).await;
    let headers = [
        ("authorization", "Bearer t"),
        ("accept", "text/event-stream"),
    ];
    let path = format!("/?topics=a&after={}", oldest(&log, &["a"]));
    let mut response = RawResponse::get(stream, &path, &headers).await;
    assert_eq!(response.status, 200);
    // The first message with an event (after the one that names the composite cursor).
    let within = Duration::from_secs(5);
    loop {
        let message = tokio::time::timeout(within, response.message(b"\n\n")).await;
        let message = message.expect("an event within 5 s").unwrap();
        if message.contains("\"n\":1") {
            break;
        }
    }
    grants.revoke("t");
    let started = Instant::now();
    let last = loop {
        let message = tokio::time::timeout(within, response.message(b"\n\n")).await;
        let message = message.expect("the final message within 5 s").unwrap();
        if !message.starts_with(':') {
            break message;
        }
    };
    assert!(last.contains("unauthenticated"), "{last}");
    response.assert_ended().await;
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_check_that_waits_is_waited_for_and_costs_the_answer_nothing() {
    let log = log(&["a", "secret"]);
    let grants = Grants::new(&[("t", &["a"])]);
    let slow = {
        let grants = grants.clone();
        move |request: &http::request::Parts, topic: Option<&str>, _: Access| {
            let verdict = grants.check(request, topic);
            Check::new(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                verdict
            })
        }
    };
    let poll = LongPollLayer::builder()
        .hold_timeout(Duration::from_secs(10))
        .authorize(slow)
        .build()
        .unwrap()
        .layer(log.clone());
    let addr = serve(poll).await;
    let path = format!("/?topics=a&after={}", oldest(&log, &["a"]));
    let allowed = get(addr, &path, Some("t")).await;
    assert_eq!(allowed.status, 200);
    let path = format!("/?topics=a,secret&after={}", oldest(&log, &["a", "secret"]));
    let denied = get(addr, &path, Some("t")).await;
    assert_eq!(denied.status, 400);
    assert_eq!(denied.json()["topic"], "secret");
    assert_eq!(get(addr, "/?topics=a", None).await.status, 401);
}

// ---------------------------------------------------------------------------------------------
// The demo's `--tokens`

// These need the programs' flags (feature `cli`).
#[cfg(feature = "cli")]
#[allow(dead_code)]
#[path = "../examples/demo/app.rs"]
mod demo_app;

#[cfg(feature = "cli")]
#[tokio::test]
async fn the_demo_serves_each_token_its_topics_and_reads_the_file_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(
        &file,
        "# who may do what\nreader news\nwriter default,news\n",
    )
    .unwrap();
    let tokens = demo_app::Tokens::load(&file).unwrap();
    let settings = demo_app::Settings {
        hold: Duration::from_millis(50),
        tokens: Some(tokens.clone()),
        ..demo_app::Settings::default()
    };
    let demo = demo_app::Demo::new(&settings, &tower_push::Shutdown::new()).unwrap();
    let addr = common::serve_program(demo).await;
    let publish = |token: Option<&'static str>, topic: &'static str| async move {
        let mut request = http::Request::post(format!("/publish?topic={topic}"))
            .header("host", "test")
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = http_body_util::Full::new(bytes::Bytes::from_static(b"{\"n\":1}"));
        common::send(addr, request.body(body).unwrap()).await
    };

    // No token, a wrong one: 401 for reading and for publishing.
    for token in [None, Some("nobody")] {
        assert_eq!(get(addr, "/poll", token).await.status, 401);
        assert_eq!(get(addr, "/stream?topics=news", token).await.status, 401);
        let refused = publish(token, "news").await;
        assert_eq!(refused.status, 401);
        assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    }
    // The reader reads (and publishes on) news, and nothing else: a topic it may not read
    // answers as one that does not exist, and a publish elsewhere gets 403.
    assert_eq!(
        get(addr, "/poll?topics=news", Some("reader")).await.status,
        204
    );
    let refused = get(addr, "/poll?topics=news,default", Some("reader")).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["topic"], "default");
    let missing = get(addr, "/poll?topics=news,nosuch", Some("writer")).await;
    assert_eq!(missing.json()["error"], refused.json()["error"]);
    assert_eq!(get(addr, "/poll", Some("reader")).await.status, 400);
    assert_eq!(publish(Some("reader"), "news").await.status, 200);
    let refused = publish(Some("reader"), "default").await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["error"], "forbidden");
    // The writer publishes where it may, and the cookie carries a token as the header does.
    assert_eq!(publish(Some("writer"), "default").await.status, 200);
    assert_eq!(publish(Some("writer"), "other").await.status, 403);
    let cookie = [("cookie", &b"theme=dark; push_token=writer"[..])];
    assert_eq!(common::get_with(addr, "/poll", &cookie).await.status, 204);

    // The file again, without the reader: its next request is refused.
    std::fs::write(&file, "writer default,news\n").unwrap();
    assert_eq!(tokens.reload(), Ok(1));
    assert_eq!(
        get(addr, "/poll?topics=news", Some("reader")).await.status,
        401
    );
    // A file that does not parse leaves the tokens as they were.
    std::fs::write(&file, "writer\n").unwrap();
    assert!(tokens.reload().is_err());
    assert_eq!(
        get(addr, "/poll?topics=news", Some("writer")).await.status,
        204
    );
}

// ---------------------------------------------------------------------------------------------
// The axum example's JSON Web Tokens

#[cfg(feature = "cli")]
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/axum.rs"]
mod axum_example;

/// A token for `topics`, valid for `seconds` from now (negative: expired), signed with `secret`.
#[cfg(feature = "cli")]
fn jwt(secret: &[u8], topics: &[&str], seconds: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = axum_example::Claims {
        sub: "ada".to_owned(),
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        exp: now.saturating_add_signed(seconds),
    };
    let key = jsonwebtoken::EncodingKey::from_secret(secret).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

#[cfg(feature = "cli")]
#[tokio::test]
async fn the_axum_example_reads_each_topic_from_the_claims_of_a_json_web_token() {
    const SECRET: &[u8] = b"a secret of the test";
    let shutdown = tower_push::Shutdown::new();
    let (poll, stream) = axum_example::layers_checked(&shutdown, 100).unwrap();
    let log = axum_example::log().unwrap();
    log.topic("chat").publish(event(1));
    log.topic("secret").publish(event(1));
    let router =
        axum_example::router(&log, poll, stream).layer(axum::middleware::from_fn_with_state(
            axum_example::Jwt::new(SECRET).unwrap(),
            axum_example::authenticate,
        ));
    let addr = common::serve_program(router).await;
    let chat = jwt(SECRET, &["chat"], 60);
    let from_oldest = |topic: &str| {
        let cursor = Cursor::zero(log.topic(topic).epoch());
        format!("/topics/{topic}/poll?after={cursor}")
    };

    // No token, another key's, an expired one: 401.
    for token in [
        None,
        Some(jwt(b"another key", &["chat"], 60)),
        Some(jwt(SECRET, &["chat"], -60)),
    ] {
        let refused = get(addr, &from_oldest("chat"), token.as_deref()).await;
        assert_eq!(refused.status, 401, "{token:?}");
        assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    }
    // Its topic: the event. Another: exactly as a topic that does not exist.
    let read = get(addr, &from_oldest("chat"), Some(&chat)).await;
    assert_eq!(read.status, 200);
    let refused = get(addr, &from_oldest("secret"), Some(&chat)).await;
    let everything = jwt(SECRET, &["*"], 60);
    let missing = get(addr, "/topics/nosuch/poll", Some(&everything)).await;
    assert_eq!(comparable(&refused).0, comparable(&missing).0);
    assert_eq!(refused.json()["error"], missing.json()["error"]);
    assert_eq!(refused.json()["error"], "topic_not_found");
    // Multiplexed on the default routes: refused whole, naming only the forbidden topic.
    let path = format!(
        "/poll?topics=chat,secret&after={}",
        oldest(&log, &["chat", "secret"])
    );
    let refused = get(addr, &path, Some(&chat)).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["topic"], "secret");
    // Publishing: where the token may, and 403 elsewhere.
    let publish = |topic: &'static str, token: String| async move {
        let request = http::Request::post(format!("/topics/{topic}/publish"))
            .header("host", "test")
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"{\"n\":2}",
            )))
            .unwrap();
        common::send(addr, request).await
    };
    assert_eq!(publish("chat", chat.clone()).await.status, 200);
    assert_eq!(publish("secret", chat.clone()).await.status, 403);
}

/// The demo program itself: `--tokens FILE`, and the file read again on SIGHUP.
#[cfg(feature = "cli")]
#[tokio::test]
async fn the_demo_program_reads_its_tokens_file_again_on_sighup() {
    let binary = common::external::example("demo");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "early default\n").unwrap();
    let (process, addr) = common::external::program_listening(|addr| {
        let mut command = std::process::Command::new(&binary);
        command.args(["--addr", addr, "--hold-ms", "100", "--tokens"]);
        command.arg(&file);
        command
    })
    .await;
    assert_eq!(get(addr, "/poll", Some("early")).await.status, 204);
    assert_eq!(get(addr, "/poll", Some("late")).await.status, 401);
    std::fs::write(&file, "late default\n").unwrap();
    let hangup = std::process::Command::new("kill")
        .args(["-HUP", &process.id().to_string()])
        .status();
    assert!(hangup.unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(addr, "/poll", Some("late")).await.status != 204 {
        assert!(
            Instant::now() < deadline,
            "the new token is not taken after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(addr, "/poll", Some("early")).await.status, 401);
    // A file that cannot be read refuses the start, with the reason.
    let output = std::process::Command::new(&binary)
        .args(["--addr", "127.0.0.1:0", "--tokens"])
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot read the tokens file"), "{stderr}");
}
