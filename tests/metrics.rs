//! The metrics, scraped from the demo's `/metrics` over a real socket after a scenario whose
//! every count is known: polls parked and answered, streams, a resync, an overload. One test
//! of the recorder alone in its file: the recorder is global to the process. Beside it, the
//! demo's p99 from buckets, on numbers worked out by hand.
#![cfg(feature = "metrics")]

mod common;

#[allow(dead_code)]
#[path = "../examples/demo/app.rs"]
mod app;

use std::collections::HashMap;
use std::time::Duration;

use app::{Demo, Settings};
use common::{get, get_with, parked, serve_program, RawResponse, NDJSON, SECOND};
use tower_push::{Cursor, Epoch, Shutdown};

/// The scraped samples, by name with labels as Prometheus writes them
/// (`tower_push_answers_total{layer="long_poll",kind="events"}`).
async fn scrape(addr: std::net::SocketAddr) -> HashMap<String, f64> {
    let reply = get(addr, "/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    std::str::from_utf8(&reply.body)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scraped_metrics_count_what_happened() {
    app::metrics::install();
    let settings = Settings {
        hold: 60 * SECOND,
        heartbeat: 3600 * SECOND,
        max_held: 4,
        ..Settings::default()
    };
    let demo = Demo::new(&settings, &Shutdown::new()).unwrap();
    let topic = demo.topic().clone();
    let addr = serve_program(demo).await;
    let head = topic.head();

    // Two streams and three polls wait at the head; one publish answers them all.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let path = format!("/stream?after={head}");
        streams.push(RawResponse::get(addr, &path, &[NDJSON]).await);
    }
    let poll_at = |cursor: Cursor| {
        let path = format!("/poll?after={cursor}");
        tokio::spawn(async move { get(addr, &path).await })
    };
    let polls: Vec<_> = (0..3).map(|_| poll_at(head)).collect();
    parked(&topic, 5).await;
    let published = topic.publish(common::data(1));
    for poll in polls {
        assert_eq!(poll.await.unwrap().status, 200);
    }
    for stream in &mut streams {
        let line = stream.message(b"\n").await.unwrap();
        assert!(line.contains(&published.to_string()), "{line}");
    }

    // A cursor of another log: one resync answer.
    let foreign = Cursor::new(Epoch::new(7), 1);
    assert_eq!(
        get(addr, &format!("/poll?after={foreign}")).await.status,
        410
    );

    // Four polls fill the cap of four; a fifth is refused.
    let held: Vec<_> = (0..4).map(|_| poll_at(published)).collect();
    parked(&topic, 2 + 4).await;
    let refused = get_with(addr, &format!("/poll?after={published}"), &[]).await;
    assert_eq!(refused.status, 503);

    let metrics = scrape(addr).await;
    let value = |name: &str| {
        metrics
            .get(name)
            .copied()
            .unwrap_or_else(|| panic!("no {name} in {metrics:#?}"))
    };
    let expected = [
        ("tower_push_parked_polls", 4.0),
        ("tower_push_open_streams", 2.0),
        // The caps, for "how full": `--max-held` 4 on each layer.
        (r#"tower_push_held_limit{layer="long_poll"}"#, 4.0),
        (r#"tower_push_held_limit{layer="stream"}"#, 4.0),
        (
            r#"tower_push_answers_total{layer="long_poll",kind="events"}"#,
            3.0,
        ),
        (
            r#"tower_push_answers_total{layer="long_poll",kind="epoch_mismatch"}"#,
            1.0,
        ),
        (
            r#"tower_push_answers_total{layer="long_poll",kind="overloaded"}"#,
            1.0,
        ),
        (
            r#"tower_push_answers_total{layer="stream",kind="stream"}"#,
            2.0,
        ),
        (
            r#"tower_push_events_delivered_total{layer="long_poll"}"#,
            3.0,
        ),
        (r#"tower_push_events_delivered_total{layer="stream"}"#, 2.0),
        ("tower_push_stream_frames_total", 2.0),
        (
            r#"tower_push_publish_to_write_seconds_count{layer="long_poll"}"#,
            3.0,
        ),
        (
            r#"tower_push_publish_to_write_seconds_count{layer="stream"}"#,
            2.0,
        ),
        // The three answered with events and the resync.
        ("tower_push_poll_hold_seconds_count", 4.0),
    ];
    for (name, count) in expected {
        assert_eq!(value(name), count, "{name}");
    }
    // Histograms with the crate's buckets, not summaries: both stream events took less than
    // 5 s, and the cumulative counts never decrease.
    for bound in tower_push::metrics::BUCKETS {
        let name =
            format!(r#"tower_push_publish_to_write_seconds_bucket{{layer="stream",le="{bound}"}}"#);
        assert!(metrics.contains_key(&name), "no {name}");
    }
    let bucket = |le: &str| {
        value(&format!(
            r#"tower_push_publish_to_write_seconds_bucket{{layer="stream",le="{le}"}}"#
        ))
    };
    assert_eq!(bucket("5"), 2.0);
    assert_eq!(bucket("+Inf"), 2.0);
    assert!(bucket("0.0005") <= bucket("0.001") && bucket("0.001") <= bucket("5"));
    assert!(
        !metrics.keys().any(|name| name.contains("quantile=")),
        "no summaries"
    );
    // The demo's p99 comes from the same buckets: the five deliveries of the scenario (three
    // polls and two streams, summed over both layers) all took less than 5 s.
    let p99 = app::metrics::p99_ms(&[], &app::metrics::publish_to_write_buckets()).unwrap();
    assert!(p99 > 0.0 && p99 < 5000.0, "{p99} ms");
    assert!(
        !metrics
            .keys()
            .any(|name| name.starts_with("tower_push_stream_heartbeats_total")),
        "no heartbeat in an hour-long interval"
    );

    // The streams' clients leave: their ends are counted once the server notices.
    drop(streams);
    let ends = r#"tower_push_stream_ends_total{reason="client_gone"}"#;
    let noticed = async {
        loop {
            let metrics = scrape(addr).await;
            if metrics.get(ends) == Some(&2.0) && metrics["tower_push_open_streams"] == 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(10 * SECOND, noticed)
        .await
        .expect("both ends counted");
    for poll in held {
        poll.abort();
    }
}

/// The demo's stats panel computes its p99 from the buckets as `histogram_quantile` does: the
/// bucket the rank falls in, linear within it, from 0 in the first, and the largest finite
/// bound when the rank falls in `+Inf`.
#[test]
fn the_panel_p99_interpolates_within_its_bucket() {
    use app::metrics::p99_ms;
    let close = |got: Option<f64>, want: f64| {
        let got = got.unwrap_or_else(|| panic!("no p99, wanted {want}"));
        assert!((got - want).abs() < 1e-9, "{got} ms, not {want}");
    };
    let inf = f64::INFINITY;
    // 100 samples: 50 under 1 ms, 40 more under 2 ms, 10 more under 5 ms. Rank 99 is the 9th
    // of the 10 in (2, 5]: 2 + 3 * 9 / 10 ms.
    let now = [(0.001, 50.0), (0.002, 90.0), (0.005, 100.0), (inf, 100.0)];
    close(p99_ms(&[], &now), 4.7);
    // All in the first bucket: interpolated from 0, rank 0.99 of 1 ms.
    let first = [(0.001, 100.0), (0.002, 100.0), (inf, 100.0)];
    close(p99_ms(&[], &first), 0.99);
    // Past the last finite bound: that bound.
    let slow = [(0.001, 1.0), (0.002, 1.0), (inf, 100.0)];
    close(p99_ms(&[], &slow), 2.0);
    // Over an interval: only what was recorded since `earlier`, here 10 samples in (1, 2] ms.
    let earlier = [(0.001, 50.0), (0.002, 80.0), (0.005, 90.0), (inf, 90.0)];
    close(p99_ms(&earlier, &now), 1.0 + 9.9 / 10.0);
    // Nothing recorded, or nothing since `earlier`: no p99.
    assert_eq!(p99_ms(&[], &[]), None);
    assert_eq!(p99_ms(&now, &now), None);
}
