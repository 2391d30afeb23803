//! Micro-benchmarks: cursor parsing and formatting, and encoding one event in each wire format.
//!
//! `cargo bench --bench micro`.
// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tower_push::format::{JsonFormat, NdjsonFormat, PollFormat, SseFormat, StreamFormat};
use tower_push::source::Batch;
use tower_push::{Cursor, Epoch, Event, EventData};

/// A small event, like the ones the macro benchmarks publish.
fn event() -> Event {
    let data = EventData::from_json(r#"{"n":42,"t":1700000000000000000}"#).expect("JSON");
    Event::new(
        Cursor::new(Epoch::new(0x5eed_cafe_f00d_beef), 123_456),
        data,
    )
}

fn cursor(c: &mut Criterion) {
    let cursor = Cursor::new(Epoch::new(0x5eed_cafe_f00d_beef), 123_456);
    let text = cursor.to_string();
    let mut group = c.benchmark_group("cursor");
    group.bench_function("parse", |b| {
        b.iter(|| black_box(&text).parse::<Cursor>().expect("valid"))
    });
    group.bench_function("parse_bytes", |b| {
        b.iter(|| Cursor::parse_bytes(black_box(text.as_bytes())).expect("valid"))
    });
    group.bench_function("to_string", |b| b.iter(|| black_box(cursor).to_string()));
    group.finish();
}

fn encode(c: &mut Criterion) {
    let event = event();
    let mut group = c.benchmark_group("encode one event");
    group.bench_function("json envelope (long-poll answer)", |b| {
        b.iter_batched(
            || Batch::new(vec![event.clone()]).expect("one event"),
            |batch| JsonFormat.events(black_box(&batch)),
            criterion::BatchSize::SmallInput,
        )
    });
    let mut out = Vec::with_capacity(256);
    group.bench_function("ndjson line", |b| {
        b.iter(|| {
            out.clear();
            NdjsonFormat.event(black_box(&event), &mut out);
            black_box(out.len())
        })
    });
    let sse = SseFormat::new();
    group.bench_function("sse event", |b| {
        b.iter(|| {
            out.clear();
            sse.event(black_box(&event), &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, cursor, encode);
criterion_main!(benches);
