//! A restart and its clients' return, measured: N SSE clients that behave like `EventSource`
//! (they follow `retry:` and resume with `Last-Event-ID`) and N long-poll clients that follow
//! `Push-Retry-Ms` are connected to a server; the server shuts down, a new one takes the same
//! port at once, and the new server records when each client first comes back. Every client
//! must end with every event exactly once, in order.
//!
//! The figures (peak arrivals per 100 ms, with and without the spread) are printed; run with
//! `cargo test --test stampede -- --nocapture` to see them.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{data, RawResponse, SECOND};
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use tower::ServiceExt;
use tower_push::format::{AutoFormat, Framing, SseFormat};
use tower_push::memory::Topic;
use tower_push::{ChunkedStreamLayer, Cursor, LongPollLayer, MemoryLog, PushBody, Shutdown};

/// Events published before the restart and after it.
const EVENTS: u64 = 3;
/// How long a client waits after a refused connection, as `EventSource` does with its last
/// `retry:` (here the 1 s that the streams announce when they open).
const REFUSED_RETRY: Duration = SECOND;

/// When each client came back, by client id, measured from the old server's shutdown.
type Arrivals = Arc<Mutex<HashMap<String, Duration>>>;

/// One server process: both layers on one port, `/poll` and `/stream`, recording arrivals.
struct Server {
    shutdown: Shutdown,
    task: JoinHandle<()>,
}

impl Server {
    fn start(listener: TcpListener, topic: Topic, window: Duration, arrivals: Arrivals) -> Self {
        let shutdown = Shutdown::new();
        let poll = LongPollLayer::builder()
            .hold_timeout(600 * SECOND)
            .reconnect_window(window)
            .shutdown(shutdown.clone())
            .build()
            .unwrap()
            .layer(topic.clone());
        let sse = SseFormat::new().retry(REFUSED_RETRY);
        let stream = ChunkedStreamLayer::builder()
            .heartbeat_interval(600 * SECOND)
            .max_lifetime(3600 * SECOND)
            .reconnect_window(window)
            .format(AutoFormat::new(Framing::Sse).sse(sse))
            .shutdown(shutdown.clone())
            .build()
            .unwrap()
            .layer(topic);
        let started = Instant::now();
        let service = tower::service_fn(move |req: Request<Incoming>| {
            if let Some(client) = req.headers().get("x-client") {
                let client = client.to_str().unwrap().to_owned();
                let mut arrivals = arrivals.lock().unwrap();
                arrivals.entry(client).or_insert_with(|| started.elapsed());
            }
            let (poll, stream) = (poll.clone(), stream.clone());
            async move {
                let response: Response<PushBody> = if req.uri().path() == "/stream" {
                    stream.oneshot(req).await?
                } else {
                    poll.oneshot(req).await?
                };
                Ok::<_, Infallible>(response)
            }
        });
        let task = common::serve_on(listener, service, shutdown.clone());
        Self { shutdown, task }
    }
}

/// What a client saw: the sequence numbers of the events it processed, in order.
type Seen = Vec<u64>;

/// A long-poll client: polls from its cursor, follows `Push-Retry-Ms`, and stops once it has
/// `until` events.
async fn poll_client(addr: SocketAddr, id: String, start: Cursor, until: u64) -> Seen {
    let mut cursor = start.to_string();
    let mut seen = Vec::new();
    while (seen.len() as u64) < until {
        let path = format!("/poll?after={cursor}");
        let headers = [("x-client", id.as_str())];
        let Ok(mut response) = RawResponse::try_get(addr, &path, &headers).await else {
            sleep(REFUSED_RETRY).await;
            continue;
        };
        let body = response.content().await;
        match (response.status, body) {
            (200, Some(body)) => {
                let body: serde_json::Value = serde_json::from_str(&body).unwrap();
                for event in body["events"].as_array().unwrap() {
                    let id: Cursor = event["id"].as_str().unwrap().parse().unwrap();
                    seen.push(id.seq());
                }
                cursor = body["cursor"].as_str().unwrap().to_owned();
            }
            (204, _) => {
                cursor = response.header("push-cursor").unwrap();
                if let Some(wait) = response.header("push-retry-ms") {
                    sleep(Duration::from_millis(wait.parse().unwrap())).await;
                }
            }
            // A draining server's 503, or a cut answer: come back like after a refusal.
            _ => sleep(REFUSED_RETRY).await,
        }
    }
    seen
}

/// An SSE client that behaves like `EventSource`: it keeps the last `id:` and the last
/// `retry:`, and when the stream ends or the connection fails it waits that long and
/// reconnects with `Last-Event-ID`.
async fn sse_client(addr: SocketAddr, id: String, start: Cursor, until: u64) -> Seen {
    let mut last_id = start.to_string();
    let mut retry = REFUSED_RETRY;
    let mut seen = Vec::new();
    while (seen.len() as u64) < until {
        let headers = [
            ("x-client", id.as_str()),
            ("accept", "text/event-stream"),
            ("last-event-id", last_id.as_str()),
        ];
        let Ok(mut stream) = RawResponse::try_get(addr, "/stream", &headers).await else {
            sleep(retry).await;
            continue;
        };
        if stream.status != 200 {
            sleep(retry).await;
            continue;
        }
        while let Ok(message) = stream.message(b"\n\n").await {
            let mut event_id = None;
            let mut name = None;
            let mut has_data = false;
            for line in message.lines() {
                if let Some(value) = line.strip_prefix("retry: ") {
                    retry = Duration::from_millis(value.parse().unwrap());
                } else if let Some(value) = line.strip_prefix("id: ") {
                    event_id = Some(value.to_owned());
                } else if let Some(value) = line.strip_prefix("event: ") {
                    name = Some(value.to_owned());
                } else if line.starts_with("data: ") {
                    has_data = true;
                }
            }
            if let Some(event_id) = event_id {
                if has_data && name.is_none() {
                    seen.push(event_id.parse::<Cursor>().unwrap().seq());
                }
                last_id = event_id;
            }
            if (seen.len() as u64) >= until {
                return seen;
            }
        }
        sleep(retry).await;
    }
    seen
}

/// The most arrivals in one 100 ms slot, and the time from the shutdown to the last arrival.
fn peak_per_100ms(arrivals: &Arrivals) -> (usize, Duration) {
    let arrivals = arrivals.lock().unwrap();
    let mut slots: HashMap<u128, usize> = HashMap::new();
    for at in arrivals.values() {
        *slots.entry(at.as_millis() / 100).or_default() += 1;
    }
    let last = arrivals.values().max().copied().unwrap_or_default();
    (slots.values().max().copied().unwrap_or(0), last)
}

/// Connects `n` clients of each kind, restarts the server with `window`, and returns the peak
/// arrivals per 100 ms and the time until the last client was back.
async fn restart(n: usize, window: Duration) -> (usize, Duration) {
    let topic = MemoryLog::new().topic("feed");
    let start = topic.head();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ignored = Arrivals::default();
    let old = Server::start(listener, topic.clone(), window, ignored);

    let until = 2 * EVENTS;
    let mut clients = Vec::new();
    for i in 0..n {
        clients.push(tokio::spawn(poll_client(
            addr,
            format!("p{i}"),
            start,
            until,
        )));
        clients.push(tokio::spawn(sse_client(
            addr,
            format!("s{i}"),
            start,
            until,
        )));
    }
    for n in 1..=EVENTS {
        topic.publish(data(n));
    }
    let parked = async {
        while topic.parked_subscriptions() < 2 * n {
            sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(60 * SECOND, parked)
        .await
        .expect("every client caught up and parked");

    // The restart: the old server drains, and the new one listens on the port at once.
    let arrivals = Arrivals::default();
    old.shutdown.trigger();
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(_) => sleep(Duration::from_millis(1)).await,
        }
    };
    let new = Server::start(listener, topic.clone(), window, arrivals.clone());
    timeout(20 * SECOND, old.task).await.unwrap().unwrap();
    for n in EVENTS + 1..=until {
        topic.publish(data(n));
    }

    let expected: Vec<u64> = (1..=until).collect();
    for client in clients {
        let seen = timeout(60 * SECOND, client).await.unwrap().unwrap();
        assert_eq!(seen, expected, "every event once, in order");
    }
    assert_eq!(
        arrivals.lock().unwrap().len(),
        2 * n,
        "every client came back"
    );
    new.shutdown.trigger();
    timeout(20 * SECOND, new.task).await.unwrap().unwrap();
    peak_per_100ms(&arrivals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_spreads_the_return_of_its_clients() {
    // Each client holds a socket at each end, in this one process.
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let n = usize::try_from((limit.saturating_sub(200) / 4).min(1000)).unwrap();
    let window = 2 * SECOND;
    let (spread_peak, spread_last) = restart(n, window).await;
    let (burst_peak, burst_last) = restart(n, Duration::ZERO).await;
    let total = 2 * n;
    println!(
        "{total} clients ({n} SSE, {n} long poll) after a restart: \
         peak per 100 ms {spread_peak} with a {window:?} reconnect window \
         (last back after {spread_last:?}), {burst_peak} without (last back after {burst_last:?})"
    );
    assert!(
        spread_peak < total / 5,
        "with the spread, the peak per 100 ms ({spread_peak}) is well under {total}/5"
    );
    assert!(
        burst_peak > spread_peak,
        "without it the return is a burst ({burst_peak} against {spread_peak})"
    );
}
