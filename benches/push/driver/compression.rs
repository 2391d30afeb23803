//! `--only compression`: NDJSON streams held open through tower-http's `CompressionLayer`,
//! gzip at its defaults, against the same streams through the same layer without compressing,
//! in the same run: memory per open stream (the compressor each compressed stream keeps).

use crate::{cursor, Settings};

use super::parked::park_with;
use super::table::Table;

/// One round of `--only compression`, in the order `order` gives (gzip first, or last).
pub(super) async fn compression(settings: &Settings, table: &mut Table, order: [bool; 2]) {
    let n = settings.parked;
    let path = format!("/?after={}", cursor(1));
    for gzip in order {
        let kind = match gzip {
            true => "tower-push-ndjson-gzip",
            false => "tower-push-ndjson",
        };
        let kib = park_with(kind, &path, &["accept-encoding: gzip"], n).await;
        let name = format!("memory per open NDJSON stream, N={n}, gzip at tower-http's defaults");
        table.add(&name, "KiB", None, gzip, kib);
    }
}
