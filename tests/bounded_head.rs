//! What a poll parked with a large request head costs, measured as this process's memory (the
//! server and a raw client together). One test alone in its file, so that nothing else
//! allocates in the process meanwhile.

mod common;

use common::{data, serve, RawResponse, SECOND};
use tower_push::{LongPollLayer, MemoryLog};

/// This process's resident memory, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_poll_with_a_large_head_costs_a_bounded_amount() {
    const POLLS: usize = 200;
    let topic = MemoryLog::new().topic("t");
    let layer = LongPollLayer::builder()
        .hold_timeout(60 * SECOND)
        .build()
        .unwrap();
    let poll = serve(layer.layer(topic.clone())).await;
    let path = format!("/poll?after={}", topic.head());
    // Just under the default `max_head_bytes` of 32 KiB; a larger head gets `431`.
    let big: &'static str = "x".repeat(30 * 1024).leak();
    let too_big = "x".repeat(40 * 1024);
    let refused = RawResponse::get(poll, &path, &[("x-big", &too_big)]).await;
    assert_eq!(refused.status, 431);

    let before = rss();
    let mut held = Vec::new();
    for _ in 0..POLLS {
        let path = path.clone();
        // A raw client: it keeps nothing of its request once sent.
        held.push(tokio::spawn(async move {
            RawResponse::get(poll, &path, &[("x-big", big)])
                .await
                .status
        }));
    }
    common::parked(&topic, POLLS).await;
    let each = rss().saturating_sub(before) / POLLS;
    println!(
        "a parked poll with a 30 KiB header: {} KiB, server and client",
        each / 1024
    );
    // hyper's read buffer grown to hold the head, the poll itself (which keeps no head while it
    // waits), and the client's side; a 400 KB head cost 523 KB per parked poll before heads
    // were bounded.
    assert!(each < 160 * 1024, "{} KiB per parked poll", each / 1024);
    topic.publish(data(1));
    for poll in held {
        assert_eq!(poll.await.unwrap(), 200);
    }
}
