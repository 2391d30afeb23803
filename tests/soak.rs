//! A bounded soak on loopback: many clients running the poll loop and streams at once, clients
//! that disconnect mid-hold and mid-stream at random, and a fast publisher. Every client must end
//! with every event, in order, and every parked request must be gone at the end.

// The axum example itself, so that the soak runs the code a reader copies.
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/axum.rs"]
mod axum_example;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tower_push::{ChunkedStreamLayer, Cursor, EventData, LongPollLayer, MemoryLog};

const EVENTS: u64 = 4000;
const POLLERS: usize = 40;
const STREAMERS: usize = 10;

/// A small deterministic generator, seeded per client.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// What one client saw.
#[derive(Default, Debug)]
struct Tally {
    received: Vec<u64>,
    lost: u64,
    reordered: u64,
    duplicates: u64,
    disconnects: u64,
}

impl Tally {
    fn see(&mut self, n: u64) {
        let expected = self.received.last().map_or(1, |last| last + 1);
        match n.cmp(&expected) {
            std::cmp::Ordering::Equal => self.received.push(n),
            std::cmp::Ordering::Greater => {
                self.lost += n - expected;
                self.received.push(n);
            }
            std::cmp::Ordering::Less if self.received.contains(&n) => self.duplicates += 1,
            std::cmp::Ordering::Less => self.reordered += 1,
        }
    }

    fn done(&self) -> bool {
        self.received.last() == Some(&EVENTS)
    }
}

async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    sender
}

fn get(path: &str, accept: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", "soak")
        .header("accept", accept)
        .body(Empty::new())
        .unwrap()
}

async fn poller(addr: SocketAddr, start: Cursor, mut rng: Rng) -> Tally {
    let mut tally = Tally::default();
    let mut cursor = start.to_string();
    while !tally.done() {
        let mut sender = connect(addr).await;
        let request = get(&format!("/poll?after={cursor}"), "application/json");
        if rng.chance(10) {
            // Disconnect mid-hold: drop the request and its connection unanswered.
            let wait = Duration::from_millis(rng.next() % 30);
            let _ = timeout(wait, sender.send_request(request)).await;
            tally.disconnects += 1;
            continue;
        }
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let next = response.headers()["push-cursor"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        match status.as_u16() {
            200 => {
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                for event in body["events"].as_array().unwrap() {
                    tally.see(event["data"].as_u64().unwrap());
                }
            }
            204 => {}
            other => panic!("poll answered {other}: {body:?}"),
        }
        cursor = next;
    }
    tally
}

async fn streamer(addr: SocketAddr, start: Cursor, mut rng: Rng) -> Tally {
    let mut tally = Tally::default();
    let mut cursor = start.to_string();
    while !tally.done() {
        let mut sender = connect(addr).await;
        let response = sender
            .send_request(get(
                &format!("/stream?after={cursor}"),
                "application/x-ndjson",
            ))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut pending = Vec::new();
        'stream: while let Some(frame) = body.frame().await {
            let Ok(data) = frame.unwrap().into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
                if let Some(n) = value["data"].as_u64() {
                    tally.see(n);
                    cursor = value["id"].as_str().unwrap().to_owned();
                    if rng.chance(2) {
                        // Disconnect mid-stream: drop the body without reading on.
                        tally.disconnects += 1;
                        break 'stream;
                    }
                } else {
                    let known = value["heartbeat"] == true || value["end"] == "lifetime";
                    assert!(known, "unexpected line {value}");
                }
            }
        }
    }
    tally
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_nothing_lost_nothing_reordered_nothing_left_parked() {
    let poll = LongPollLayer::builder()
        .hold_timeout(Duration::from_millis(250))
        .max_events(64)
        .build()
        .unwrap();
    let stream = ChunkedStreamLayer::builder()
        .heartbeat_interval(Duration::from_millis(200))
        .max_lifetime(Duration::from_millis(700))
        .lifetime_jitter(0.5)
        .build()
        .unwrap();
    // Every event stays retained: a client here must never need to resync.
    let log = MemoryLog::builder()
        .retention(EVENTS as usize)
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum_example::router(&log, poll.clone(), stream.clone());
    let server = tower_push::server::Server::new();
    tokio::spawn(server.serve(listener, router, std::future::pending()));
    let topic = log.topic("default");
    let start = topic.head();
    let rss_before = rss_kib();

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("soak seed {seed}");
    let mut clients = Vec::new();
    for i in 0..POLLERS {
        let rng = Rng(seed.wrapping_mul(i as u64 + 1) | 1);
        clients.push(tokio::spawn(poller(addr, start, rng)));
    }
    for i in 0..STREAMERS {
        let rng = Rng(seed.wrapping_mul(i as u64 + 1001) | 1);
        clients.push(tokio::spawn(streamer(addr, start, rng)));
    }

    let peak = Arc::new(AtomicUsize::new(0));
    let monitor = {
        let (peak, poll, stream) = (peak.clone(), poll.clone(), stream.clone());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(poll.held() + stream.held(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let publisher = {
        let topic = topic.clone();
        tokio::spawn(async move {
            for n in 1..=EVENTS {
                topic.publish(EventData::from_serialize(&n).unwrap());
                if n % 40 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if n % 400 == 0 {
                    // A quiet spell: the clients catch up and park.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
    };

    let run = async {
        publisher.await.unwrap();
        let mut tallies = Vec::new();
        for client in clients {
            tallies.push(client.await.unwrap());
        }
        tallies
    };
    let tallies = timeout(Duration::from_secs(120), run)
        .await
        .expect("the soak finished in time");
    monitor.abort();

    // Nothing stays parked once the clients are gone.
    let settled = timeout(Duration::from_secs(10), async {
        while poll.held() + stream.held() + topic.parked_subscriptions() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    let sum = |f: fn(&Tally) -> u64| tallies.iter().map(f).sum::<u64>();
    let (lost, reordered, duplicates) =
        (sum(|t| t.lost), sum(|t| t.reordered), sum(|t| t.duplicates));
    println!(
        "soak: clients {} ({POLLERS} polling, {STREAMERS} streaming), events {EVENTS}, \
         lost {lost}, reordered {reordered}, duplicates {duplicates}, disconnects {}, \
         peak parked {}, left parked {}, rss {} KiB -> {} KiB",
        tallies.len(),
        sum(|t| t.disconnects),
        peak.load(Ordering::Relaxed),
        poll.held() + stream.held() + topic.parked_subscriptions(),
        rss_before,
        rss_kib(),
    );
    assert_eq!(lost, 0);
    assert_eq!(reordered, 0);
    assert!(tallies.iter().all(|t| t.received.len() as u64 == EVENTS));
    assert!(settled.is_ok(), "parked requests leaked");
    assert_eq!(topic.parked_subscriptions(), 0, "no waiter leaked");
}
