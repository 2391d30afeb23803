//! `--only topics`: polls that follow several topics against polls of one topic.

use tower_push::{Cursor, Epoch};

use crate::{cursor, percentile, Settings, EPOCH};

use super::parked::park_then_publish;

/// `--only topics`: polls that follow K topics (K = 1, 10, 64; the bench topic and K - 1
/// quiet ones) against polls of the bench topic alone, in the same run: memory per parked
/// poll, and the fan-out of one publish on the bench topic.
pub(super) async fn topics(settings: &Settings, rows: &mut Vec<TopicsRow>) {
    let n = settings.parked;
    let single = format!("/poll?after={}", cursor(1));
    let (kib, latencies) = park_then_publish("tower-push-poll", &single, n, true).await;
    let base = TopicsRow::new(0, kib, &latencies);
    eprintln!("   one topic          {base:?}");
    for k in [1, 10, 64] {
        let names: Vec<String> = std::iter::once("bench".to_owned())
            .chain((1..k).map(|i| format!("t{i}")))
            .collect();
        let positions: Vec<String> = std::iter::once(cursor(1).to_string())
            .chain(
                names[1..]
                    .iter()
                    .map(|name| Cursor::zero(Epoch::new(EPOCH).derive(name)).to_string()),
            )
            .collect();
        let path = format!(
            "/poll?topics={}&after={}",
            names.join(","),
            positions.join(".")
        );
        let (kib, latencies) = park_then_publish("tower-push-topics", &path, n, true).await;
        let row = TopicsRow::new(k, kib, &latencies);
        eprintln!("   K={k:<3}             {row:?}");
        rows.push(TopicsRow {
            single: Some(Box::new(base.clone())),
            ..row
        });
    }
}

/// One measurement of `--only topics`, with the single-topic one of the same run.
#[derive(Clone, Debug)]
pub(super) struct TopicsRow {
    topics: usize,
    kib: f64,
    p50: f64,
    p99: f64,
    single: Option<Box<TopicsRow>>,
}

impl TopicsRow {
    fn new(topics: usize, kib: f64, latencies: &[f64]) -> Self {
        Self {
            topics,
            kib,
            p50: percentile(latencies, 0.5),
            p99: percentile(latencies, 0.99),
            single: None,
        }
    }
}

/// Prints the medians of `--only topics` over the runs, as ratios to the single-topic
/// polls of the same runs.
pub(super) fn print_topics(settings: &Settings, rows: &[TopicsRow]) {
    println!();
    println!(
        "Several topics per poll (N = {} parked polls; K topics each, one publish on one of them)",
        settings.parked
    );
    println!("| K | KiB per parked poll | x one topic | fan-out p50 ms | x | fan-out p99 ms | x |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for k in [1, 10, 64] {
        let of_k: Vec<&TopicsRow> = rows.iter().filter(|r| r.topics == k).collect();
        let median = |value: &dyn Fn(&TopicsRow) -> f64| {
            let mut values: Vec<f64> = of_k.iter().map(|r| value(r)).collect();
            values.sort_by(f64::total_cmp);
            percentile(&values, 0.5)
        };
        let single = |value: fn(&TopicsRow) -> f64| {
            median(&|r: &TopicsRow| r.single.as_deref().map_or(f64::NAN, value))
        };
        let ratio = |value: fn(&TopicsRow) -> f64| {
            median(&|r: &TopicsRow| value(r) / r.single.as_deref().map_or(f64::NAN, value))
        };
        println!(
            "| {k} | {:.2} (one topic {:.2}) | {:.2}x | {:.2} | {:.2}x | {:.2} | {:.2}x |",
            median(&|r| r.kib),
            single(|r| r.kib),
            ratio(|r| r.kib),
            median(&|r| r.p50),
            ratio(|r| r.p50),
            median(&|r| r.p99),
            ratio(|r| r.p99),
        );
    }
}
