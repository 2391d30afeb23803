//! The scaling curve of `--only scaling`: its tables (over HTTP/1.1 against Nchan, and the demo
//! over HTTP/2) and every run's figures as CSV, which `benches/plot.py` draws.

use std::path::Path;

use crate::{median, Settings};

use super::compare::{Parked, Point};
use super::load::H2_STREAMS;
use super::peer::Peer;
use super::table::figure;

/// Prints the scaling curve (medians over runs) and writes every run's figures as CSV.
pub(super) fn print_curve(settings: &Settings, curve: &[Point], with_nchan: bool, limit: u64) {
    let median_of = |peer: Peer, n: usize, value: fn(&Parked) -> f64| {
        let values: Vec<f64> = curve
            .iter()
            .filter(|p| p.peer == peer && p.n == n)
            .map(|p| value(&p.parked))
            .collect();
        median(&values)
    };
    // The median over runs of the per-run ratio of the demo program / Nchan.
    let ratio_of = |n: usize, value: fn(&Parked) -> f64| {
        let ratios: Vec<f64> = curve
            .iter()
            .filter(|p| p.peer == Peer::Demo && p.n == n)
            .filter_map(|ours| {
                let theirs = curve
                    .iter()
                    .find(|p| p.peer == Peer::Nchan && p.n == n && p.run == ours.run)?;
                Some(value(&ours.parked) / value(&theirs.parked))
            })
            .collect();
        median(&ratios)
    };
    let p50: fn(&Parked) -> f64 = |p| p.latency.p50;
    let p99: fn(&Parked) -> f64 = |p| p.latency.p99;
    let memory: fn(&Parked) -> f64 = |p| p.per_poll;
    println!();
    println!(
        "How cost grows with the number of parked polls, on the demo program as users run it: \
         fan-out after one publish (ms, publish to last byte) and memory per parked poll (KiB, \
         RSS growth / N); medians of {} runs, ratios the demo program / Nchan in the same run.",
        settings.runs
    );
    println!();
    println!(
        "| N | demo p50 | p99 | KiB/poll | Nchan p50 | p99 | KiB/poll | \
         p99 ratio | memory ratio |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    if !with_nchan {
        println!("| Nchan peer skipped (see above) | | | | | | | | |");
    }
    for &n in &settings.scaling {
        if !curve.iter().any(|p| p.peer == Peer::Demo && p.n == n) {
            println!(
                "| {n} | skipped: the open-files limit is {limit}, too few for {n} \
                 connections in one process | | | | | | | |"
            );
            continue;
        }
        let mut line = format!("| {n} ");
        for value in [p50, p99, memory] {
            line += &format!("| {} ", figure(median_of(Peer::Demo, n, value)));
        }
        if with_nchan {
            for value in [p50, p99, memory] {
                line += &format!("| {} ", figure(median_of(Peer::Nchan, n, value)));
            }
            for value in [p99, memory] {
                line += &format!("| {:.2}x ", ratio_of(n, value));
            }
        } else {
            line += "| | | | | ";
        }
        println!("{line}|");
    }
    let h2: Vec<usize> = settings
        .scaling
        .iter()
        .copied()
        .filter(|&n| curve.iter().any(|p| p.peer == Peer::DemoHttp2 && p.n == n))
        .collect();
    if !h2.is_empty() {
        println!();
        println!(
            "The same over HTTP/2: the demo program, {H2_STREAMS} parked polls on each \
             connection (prior knowledge); medians of {} runs.",
            settings.runs
        );
        println!();
        println!("| N | connections | p50 | p99 | KiB/poll | server CPU per answer (us) |");
        println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
        let cpu: fn(&Parked) -> f64 = |p| p.cpu_us;
        for n in h2 {
            let mut line = format!("| {n} | {} ", n.div_ceil(H2_STREAMS));
            for value in [p50, p99, memory, cpu] {
                line += &format!("| {} ", figure(median_of(Peer::DemoHttp2, n, value)));
            }
            println!("{line}|");
        }
    }
    let path = settings.csv.clone().unwrap_or_else(|| {
        // `<target>/release/deps/push-<hash>`
        let exe = std::env::current_exe().expect("own executable");
        let target = exe.ancestors().nth(3).unwrap_or(Path::new("target"));
        target.join("push-scaling.csv")
    });
    let mut csv = String::from(
        "peer,n,run,p50_ms,p99_ms,max_ms,kib_per_poll,rss_before_kib,rss_after_kib,\
         cpu_us_per_answer\n",
    );
    for point in curve {
        let p = &point.parked;
        csv += &format!(
            "{},{},{},{:.3},{:.3},{:.3},{:.3},{},{},{:.2}\n",
            point.peer.name(),
            point.n,
            point.run + 1,
            p.latency.p50,
            p.latency.p99,
            p.latency.max,
            p.per_poll,
            p.rss_kib.0,
            p.rss_kib.1,
            p.cpu_us,
        );
    }
    match std::fs::write(&path, csv) {
        Ok(()) => println!("\nscaling curve written to {}", path.display()),
        Err(err) => eprintln!("could not write {}: {err}", path.display()),
    }
}
