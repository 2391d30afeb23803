//! The demo page in headless Chromium, driven over WebDriver by `chromedriver`.
//!
//! The test serves the demo's own routes and page (`examples/demo/app.rs` and `index.html`)
//! in-process, with a short stream lifetime, opens the page, publishes through its form, and
//! reads both panes. It records the `Last-Event-ID` of every `/stream` request the browser makes,
//! so it sees `EventSource` resume where it left off. It writes a screenshot of the page to
//! `target/browser-demo.png`.
//!
//! It needs `chromium` and `chromedriver`: without them it is reported as ignored, and under
//! `CI=true` as failed.

#[allow(dead_code)]
#[path = "../examples/demo/app.rs"]
mod app;
mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::{Demo, Settings};
use common::external::{free_port, Process, Program};
use common::{parked, wait_until, SECOND};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};
use tower_push::{server, Shutdown};

const CHROMIUM: Program = Program::new("chromium", "chromium");
const CHROMEDRIVER: Program = Program::new("chromedriver", "chromium-driver");

common::external::main! {
    [CHROMIUM, CHROMEDRIVER] => [
        both_panes_show_every_event_once_in_order_across_stream_reconnects,
        the_page_sends_its_token_as_a_cookie_where_eventsource_cannot_send_a_header,
    ],
}

/// The `Last-Event-ID` of each `/stream` request, in order of arrival.
type StreamRequests = Arc<Mutex<Vec<Option<String>>>>;

/// The `Accept-Encoding` of each `/stream` request and the `Content-Encoding` of its answer, in
/// every test of this binary.
static STREAM_CODINGS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Serves the demo's routes on a fresh loopback port, recording `/stream` requests.
async fn serve(demo: Demo, streams: StreamRequests) -> SocketAddr {
    common::serve_program(tower::service_fn(
        move |req: http::Request<server::Body>| {
            // The `EventSource` of the single-topic pane; the two-topic pane's names its topics.
            let topics = req.uri().query().is_some_and(|q| q.contains("topics="));
            if req.uri().path() == "/stream" && !topics {
                let last_event_id = req
                    .headers()
                    .get("last-event-id")
                    .map(|v| v.to_str().unwrap().to_owned());
                streams.lock().unwrap().push(last_event_id);
            }
            let stream = req.uri().path() == "/stream";
            let header = |headers: &http::HeaderMap, name| {
                headers
                    .get(name)
                    .map_or("", |v| v.to_str().unwrap())
                    .to_owned()
            };
            let accepted = header(req.headers(), "accept-encoding");
            let answer = tower::Service::call(&mut demo.clone(), req);
            async move {
                let response = answer.await?;
                if stream && response.status() == http::StatusCode::OK {
                    let coding = header(response.headers(), "content-encoding");
                    STREAM_CODINGS.lock().unwrap().push((accepted, coding));
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        },
    ))
    .await
}

/// A `chromedriver` child process; killed when dropped.
struct Driver {
    /// Held to be killed with the driver.
    _process: Process,
    url: String,
}

impl Driver {
    async fn start() -> Self {
        let chromedriver = CHROMEDRIVER.path();
        for _ in 0..5 {
            let port = free_port();
            let mut process =
                Process::spawn(Command::new(&chromedriver).arg(format!("--port={port}")));
            let listening = process.listening(port, 10 * SECOND, || true).await;
            if listening.expect("chromedriver did not listen") {
                let url = format!("http://127.0.0.1:{port}");
                return Self {
                    _process: process,
                    url,
                };
            }
            // The port was taken in between: try another.
        }
        panic!("chromedriver did not start");
    }
}

/// What the page shows, read in one script.
#[derive(Debug)]
struct Page {
    /// `(id, text)` of each event in the SSE pane, top to bottom.
    sse: Vec<(String, String)>,
    /// The same for the long-poll pane.
    poll: Vec<(String, String)>,
    /// Events each pane received again and did not show.
    duplicates: (u64, u64),
    /// Resync notes on the page.
    notes: u64,
    /// The SSE pane's status line.
    sse_status: String,
    /// `(topic, text)` of each event in the two-topic pane.
    topics: Vec<(String, String)>,
    /// How many publishes the form completed, and the id of the last one.
    published: (u64, Option<String>),
}

const READ_PAGE: &str = r##"
const items = (pane) => [...document.querySelectorAll("#" + pane + " li[data-id]")]
  .map((li) => [li.dataset.id, li.dataset.text]);
const published = document.getElementById("published").dataset;
return {
  sse: items("sse"),
  poll: items("poll"),
  duplicates: [Number(document.getElementById("sse").dataset.duplicates),
               Number(document.getElementById("poll").dataset.duplicates)],
  notes: document.querySelectorAll("li.note").length,
  sseStatus: document.querySelector("#sse .status").textContent,
  topics: [...document.querySelectorAll("#topics li[data-id]")]
    .map((li) => [li.dataset.topic, li.dataset.text]),
  published: [Number(published.count), published.id || null],
};
"##;

async fn read_page(client: &Client) -> Page {
    let value = client.execute(READ_PAGE, vec![]).await.unwrap();
    let pairs = |v: &Value| -> Vec<(String, String)> {
        serde_json::from_value(v.clone()).expect("pairs of strings")
    };
    Page {
        sse: pairs(&value["sse"]),
        poll: pairs(&value["poll"]),
        duplicates: serde_json::from_value(value["duplicates"].clone()).unwrap(),
        notes: value["notes"].as_u64().unwrap(),
        sse_status: value["sseStatus"].as_str().unwrap().to_owned(),
        topics: pairs(&value["topics"]),
        published: serde_json::from_value(value["published"].clone()).unwrap(),
    }
}

/// Polls the page until `ready` holds, for at most `within`.
async fn wait_for_page(
    client: &Client,
    what: &str,
    within: Duration,
    ready: impl Fn(&Page) -> bool,
) -> Page {
    let deadline = Instant::now() + within;
    loop {
        let page = read_page(client).await;
        if ready(&page) {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "waited {within:?} for {what}: {page:#?}"
        );
        sleep(Duration::from_millis(25)).await;
    }
}

/// Publishes `text` through the page's form; returns the id the server gave it.
async fn publish(client: &Client, text: &str) -> String {
    let before = read_page(client).await.published.0;
    let input = client.find(Locator::Css("#message")).await.unwrap();
    input.send_keys(text).await.unwrap();
    client
        .find(Locator::Css("#publish button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let page = wait_for_page(client, "the publish", 5 * SECOND, |page| {
        page.published.0 == before + 1
    })
    .await;
    page.published.1.unwrap()
}

/// A WebDriver session of headless Chromium with its profile in `profile`.
async fn session(driver: &Driver, profile: &std::path::Path) -> Client {
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM.path(),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--window-size=1100,1300",
                format!("--user-data-dir={}", profile.display()),
            ],
        }
    });
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities.as_object().unwrap().clone())
        .connect(&driver.url)
        .await
        .expect("a WebDriver session")
}

/// The demo with `--tokens`: without a token the page's requests are refused; once the page's
/// token form has set the `push_token` cookie, its `EventSource`, its long polls and its
/// publishes carry it, and both panes show what it publishes.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_sends_its_token_as_a_cookie_where_eventsource_cannot_send_a_header() {
    let tokens = app::Tokens::parse("t0ken default,news\n").unwrap();
    let settings = Settings {
        hold: 2 * SECOND,
        tokens: Some(tokens),
        ..Settings::default()
    };
    let demo = Demo::new(&settings, &Shutdown::new()).unwrap();
    let topic = demo.topic().clone();
    let addr = serve(demo, StreamRequests::default()).await;
    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let client = session(&driver, profile.path()).await;
    let scenario = tokio::spawn(cookie_scenario(client.clone(), addr, topic));
    let outcome = scenario.await;
    let _ = client.close().await;
    drop(driver);
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

async fn cookie_scenario(client: Client, addr: SocketAddr, topic: tower_push::memory::Topic) {
    client.goto(&format!("http://{addr}/")).await.unwrap();
    // Without the cookie, the page's requests are refused: nothing waits on the topic, and a
    // publish through the form fails.
    sleep(Duration::from_secs(1)).await;
    assert_eq!(topic.parked_subscriptions(), 0);
    let input = client.find(Locator::Css("#message")).await.unwrap();
    input.send_keys("refused").await.unwrap();
    let button = client.find(Locator::Css("#publish button")).await.unwrap();
    button.click().await.unwrap();
    let status = client.find(Locator::Css("#published")).await.unwrap();
    let refused = async {
        loop {
            let text = status.text().await.unwrap();
            if text.starts_with("publish failed") {
                break text;
            }
            sleep(Duration::from_millis(25)).await;
        }
    };
    let text = tokio::time::timeout(5 * SECOND, refused)
        .await
        .expect("the page says the publish failed within 5 s");
    assert!(text.contains("token"), "{text}");
    assert_eq!(topic.head().seq(), 0, "nothing was published");

    // The token, through the page's form: it sets the cookie and reloads.
    let token = client.find(Locator::Css("#token-value")).await.unwrap();
    token.send_keys("t0ken").await.unwrap();
    let button = client.find(Locator::Css("#token button")).await.unwrap();
    button.click().await.unwrap();
    // The SSE pane, the long-poll pane and the two-topic pane wait on the topic.
    parked(&topic, 3).await;
    let id = publish(&client, "with a cookie").await;
    let expected = vec![(id, "with a cookie".to_owned())];
    let page = wait_for_page(&client, "both panes", 10 * SECOND, |page| {
        page.sse.len() == 1 && page.poll.len() == 1
    })
    .await;
    assert_eq!(page.sse, expected);
    assert_eq!(page.poll, expected);
}

/// Where the screenshot goes: `target/` of this crate, or `CARGO_TARGET_DIR` when set.
fn screenshot_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("browser-demo.png")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn both_panes_show_every_event_once_in_order_across_stream_reconnects() {
    // The demo with short streams: each ends after at most 1.5 s and EventSource reconnects.
    let settings = Settings {
        hold: 2 * SECOND,
        max_stream: Duration::from_millis(1500),
        ..Settings::default()
    };
    app::metrics::install();
    let demo = Demo::new(&settings, &Shutdown::new()).unwrap();
    // The page's live panel follows the server's own numbers, a sample every 300 ms here.
    let _stats = demo.spawn_stats(Duration::from_millis(300));
    let topic = demo.topic().clone();
    let epoch = demo.topic().epoch().to_string();
    let streams = StreamRequests::default();
    let addr = serve(demo, streams.clone()).await;

    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let client = session(&driver, profile.path()).await;

    // Run the scenario in a task so the browser session is closed even when it fails.
    let scenario = tokio::spawn(scenario(client.clone(), addr, topic, epoch, streams));
    let outcome = scenario.await;
    let _ = client.close().await;
    drop(driver);
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

async fn scenario(
    client: Client,
    addr: SocketAddr,
    topic: tower_push::memory::Topic,
    epoch: String,
    streams: StreamRequests,
) {
    // Before any publish, the stream opens with the topic's head as its id.
    let opening = topic.head().to_string();
    client.goto(&format!("http://{addr}/")).await.unwrap();
    assert_eq!(client.title().await.unwrap(), "tower-push demo");

    // The panes are connected once the stream, the poll and the two-topic stream are parked on
    // the topic.
    parked(&topic, 3).await;

    // Publish a few messages; both panes show all of them, in order.
    let mut expected: Vec<(String, String)> = Vec::new();
    for text in ["first", "second", "third"] {
        let id = publish(&client, text).await;
        expected.push((id, text.to_owned()));
    }
    let panes_show = |expected: &[(String, String)]| {
        let expected = expected.to_vec();
        move |page: &Page| page.sse.len() >= expected.len() && page.poll.len() >= expected.len()
    };
    let page = wait_for_page(&client, "both panes", 10 * SECOND, panes_show(&expected)).await;
    assert_eq!(page.sse, expected);
    assert_eq!(page.poll, expected);

    // The stream ends (its lifetime is short) and EventSource comes back with the last id.
    let last = expected.last().unwrap().0.clone();
    wait_until("a reconnect with Last-Event-ID", 10 * SECOND, || {
        streams.lock().unwrap().contains(&Some(last.clone()))
    })
    .await;

    // Publish while the stream is down: after its end and before EventSource reconnects (the
    // demo's retry hint is 1 s). The reconnect resumes from the last id the pane saw.
    for text in ["while reconnecting", "again while reconnecting"] {
        wait_for_page(&client, "the stream to end", 10 * SECOND, |page| {
            page.sse_status.starts_with("stream ended")
        })
        .await;
        let requests_before = streams.lock().unwrap().len();
        let id = publish(&client, text).await;
        assert_eq!(
            streams.lock().unwrap().len(),
            requests_before,
            "published after EventSource had already reconnected"
        );
        let resume_from = expected.last().unwrap().0.clone();
        expected.push((id, text.to_owned()));
        wait_until("the reconnect", 10 * SECOND, || {
            streams.lock().unwrap().len() > requests_before
        })
        .await;
        assert_eq!(
            streams.lock().unwrap()[requests_before],
            Some(resume_from),
            "EventSource resumes from the last event it showed"
        );
        wait_for_page(
            &client,
            "the event after the reconnect",
            10 * SECOND,
            |page| page.sse.len() >= expected.len(),
        )
        .await;
    }

    // A few more while streams come and go.
    for text in ["fourth", "fifth", "sixth"] {
        let id = publish(&client, text).await;
        expected.push((id, text.to_owned()));
    }
    let page = wait_for_page(&client, "all events", 10 * SECOND, panes_show(&expected)).await;
    assert_eq!(
        page.sse, expected,
        "SSE pane: nothing lost, nothing repeated"
    );
    assert_eq!(
        page.poll, expected,
        "long-poll pane: nothing lost, nothing repeated"
    );
    assert_eq!(page.duplicates, (0, 0), "no event was delivered twice");
    assert_eq!(page.notes, 0, "no resync");

    // The two-topic pane showed every event of `default` on its one connection; an event on
    // `news`, published through the form's topic choice, joins it there and nowhere else.
    client
        .execute(
            r#"document.getElementById("topic").value = "news";"#,
            vec![],
        )
        .await
        .unwrap();
    publish(&client, "news flash").await;
    let page = wait_for_page(&client, "the news event", 10 * SECOND, |page| {
        page.topics.len() > expected.len()
    })
    .await;
    let mut want: Vec<(String, String)> = expected
        .iter()
        .map(|(_, text)| ("default".to_owned(), text.clone()))
        .collect();
    want.push(("news".to_owned(), "news flash".to_owned()));
    assert_eq!(page.topics, want, "two topics, one pane, in order");
    assert_eq!(
        page.sse, expected,
        "the news event is not on the default topic"
    );
    assert_eq!(page.poll, expected);
    for (id, _) in &expected {
        assert!(
            id.starts_with(&format!("{epoch}-")),
            "{id} is of this topic"
        );
    }

    // Every reconnect carried an id the server had sent: the opening id or an event's id.
    // Chromium accepts every coding the demo offers, and the demo prefers gzip: the page showed
    // each event from compressed streams, each event flushed through the compressor.
    let codings = STREAM_CODINGS.lock().unwrap().clone();
    assert!(!codings.is_empty());
    for (accepted, coding) in &codings {
        assert!(accepted.contains("zstd"), "{codings:?}");
        assert_eq!(coding, "gzip", "{codings:?}");
    }
    let streams = streams.lock().unwrap().clone();
    assert_eq!(
        streams[0], None,
        "the first stream request has no Last-Event-ID"
    );
    assert!(streams.len() >= 3, "{streams:?}");
    for last_event_id in &streams[1..] {
        let id = last_event_id
            .as_ref()
            .expect("every reconnect sends Last-Event-ID");
        assert!(
            *id == opening || expected.iter().any(|(event, _)| event == id),
            "{id} is neither the opening id {opening} nor an event's id: {expected:?}"
        );
    }

    // The live panel drew the server's numbers while the events were published: samples keep
    // coming, the page's own poll and streams show, and so does the publish rate and, with the
    // `metrics` feature, the p99 from publish to client. The page's highest sample of held
    // requests, not its last: the streams here end every 1.5 s and reopen a second later, so
    // any one sample may fall in that second.
    let panel = r##"
        const chart = (id) => document.getElementById(id).dataset;
        return {
            samples: Number(document.getElementById("server").dataset.samples),
            parked: Math.max(...samples.parked_polls),
            streams: Math.max(...samples.open_streams),
            rate: Number(chart("events_per_second").max),
            p99: chart("p99_ms").last,
            points: document.querySelectorAll("#server polyline[points*=',']").length,
        };
    "##;
    let read_panel = || async { client.execute(panel, vec![]).await.unwrap() };
    let first = read_panel().await;
    let started = std::time::Instant::now();
    let panel = loop {
        let panel = read_panel().await;
        if panel["samples"].as_u64() > first["samples"].as_u64() {
            break panel;
        }
        assert!(
            started.elapsed() < 10 * SECOND,
            "the panel stopped updating: {panel}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(panel["samples"].as_u64().unwrap() >= 3, "{panel}");
    assert!(
        panel["parked"].as_f64().unwrap() >= 1.0,
        "the page's poll is parked: {panel}"
    );
    assert!(
        panel["streams"].as_f64().unwrap() >= 2.0,
        "/stream and /stats: {panel}"
    );
    assert!(
        panel["rate"].as_f64().unwrap() >= 1.0,
        "publishes showed: {panel}"
    );
    assert_eq!(panel["points"], 4, "every chart has a line: {panel}");
    if cfg!(feature = "metrics") {
        let p99: f64 = panel["p99"].as_str().unwrap().parse().unwrap();
        assert!(p99 > 0.0, "{panel}");
    }

    let png = client.screenshot().await.unwrap();
    let path = screenshot_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &png).unwrap();
    let written = std::fs::read(&path).unwrap();
    assert!(
        written.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{path:?} is a PNG"
    );
    eprintln!("screenshot: {}", path.display());
}
