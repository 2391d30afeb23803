//! `--only authorize`: polls parked on a layer that checks each request with `authorize` (a
//! lookup of the request's token in a set, answered at once or by a future, and checked again
//! while held or not), against the same polls on the same layer without a check, in the same
//! run: memory per parked poll and the fan-out of one publish.

use crate::{cursor, percentile, Settings};

use super::parked::park_then_publish;
use super::table::Table;

/// The checked servers, and how each row names its check.
const CHECKED: [(&str, &str); 3] = [
    ("tower-push-poll-authorized", "checked on arrival"),
    (
        "tower-push-poll-authorized-async",
        "checked on arrival by a future",
    ),
    (
        "tower-push-poll-authorized-rechecked",
        "checked again every 60 s while held",
    ),
];

/// One round of `--only authorize`: without a check, then with each (or the other way round,
/// as `order` says).
pub(super) async fn authorize(settings: &Settings, table: &mut Table, order: [bool; 2]) {
    let n = settings.parked;
    let path = format!("/poll?after={}&token=token-7", cursor(1));
    for checked in order {
        let kinds: &[(&str, &str)] = match checked {
            false => &[("tower-push-poll", "")],
            true => &CHECKED,
        };
        for (kind, how) in kinds {
            let (kib, latencies) = park_then_publish(kind, &path, n, true).await;
            let p99 = percentile(&latencies, 0.99);
            eprintln!("   {kind:37} N={n}: {kib:.2} KiB per parked poll, fan-out p99 {p99:.2} ms");
            // The unchecked polls are the baseline of every row.
            let rows: Vec<&str> = match checked {
                true => vec![how],
                false => CHECKED.iter().map(|(_, how)| *how).collect(),
            };
            for how in rows {
                // A poll that is checked again keeps its request head and a timer for it: the
                // row says what that costs, with no target.
                let target = (!how.contains("again")).then_some((1.02, false));
                let name = format!("memory per parked poll, N={n}, {how}");
                table.add(&name, "KiB", target, checked, kib);
                let name = format!("fan-out N={n}, {how}, publish to last byte, p99");
                table.add(&name, "ms", None, checked, p99);
            }
        }
    }
}
