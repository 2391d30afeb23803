//! The tables of `--only durable` (every server in memory, but for `durable-streams` 0.1.5,
//! which always writes its WAL) and `--only durable-disk` (every server on its disk store:
//! tower-push's file store, the Node server's `dataDir`, 0.1.5's WAL): tower-push against each
//! Durable Streams peer, run after run. The servers and the measurements are in `durable.rs`.

use crate::{durable, Settings};

use super::compare::parked_peer;
use super::peer::Peer;
use super::table::Table;

/// `--only durable`: the Durable Streams peers found, a table against each, and one against
/// the demo program (the same serving path with the embedded log: what a parked reader costs
/// beyond a parked poll).
pub(super) struct AgainstDurable {
    /// Every server on its disk store.
    disk: bool,
    /// The server the others are compared with.
    ours: durable::Kind,
    peers: Vec<durable::Program>,
    /// A table against each server compared, and why it was skipped if it was.
    tables: Vec<(durable::Kind, Table)>,
    /// Against the demo program, for the servers in memory and on disk.
    demo: Option<Table>,
}

impl AgainstDurable {
    /// Looks for both peers; a missing one gets a table that says why it was skipped.
    pub(super) fn find(disk: bool) -> Self {
        let mut peers = Vec::new();
        let mut tables = Vec::new();
        let found = [
            (durable::Kind::Rust, durable::find_rust()),
            (durable::Kind::Node, durable::find_node()),
        ];
        for (kind, found) in found {
            let mut table = Table::new(kind.name());
            match found {
                Ok(program) => {
                    println!("Durable Streams peer: {}", program.version);
                    peers.push(program);
                }
                Err(reason) => {
                    println!("Durable Streams peer {} skipped: {reason}", kind.name());
                    table.skipped = Some(reason);
                }
            }
            tables.push((kind, table));
        }
        let demo = Table::new("the demo program's parked polls");
        Self {
            disk,
            ours: durable::Kind::TowerPush,
            peers,
            tables,
            demo: Some(demo),
        }
    }

    /// `--only durable-redis`: tower-push's durable example as two processes on one Redis
    /// (synced before every answer), against one process on its file store and against
    /// `durable-streams` 0.1.5 (its WAL); skipped, with the reason, without `redis-server`.
    pub(super) fn find_redis() -> Self {
        let mut against = Self::find(true);
        against.ours = durable::Kind::TowerPushRedis;
        against.demo = None;
        against
            .tables
            .retain(|(kind, _)| *kind == durable::Kind::Rust);
        against.peers.retain(|p| p.kind == durable::Kind::Rust);
        let mut one = Table::new("tower-push, one process on its file store");
        if let Err(reason) = durable::find_redis() {
            println!("tower-push on Redis skipped: {reason}");
            one.skipped = Some(reason.clone());
            for (_, table) in &mut against.tables {
                table.skipped = Some(reason.clone());
            }
        }
        against.tables.insert(0, (durable::Kind::TowerPush, one));
        let ours = durable::Kind::TowerPushRedis.name();
        let tables = std::mem::take(&mut against.tables);
        against.tables = tables.into_iter().map(|(k, t)| (k, t.of(ours))).collect();
        against
    }

    fn program(&self, kind: durable::Kind) -> Option<&durable::Program> {
        self.peers.iter().find(|p| p.kind == kind)
    }

    /// Adds tower-push's figure and each peer's to the table against that peer.
    fn add(&mut self, name: &str, unit: &'static str, figures: &[(durable::Kind, f64)]) {
        let ours = figures
            .iter()
            .find(|(kind, _)| *kind == self.ours)
            .map(|&(_, value)| value);
        for (kind, table) in &mut self.tables {
            let theirs = figures.iter().find(|(k, _)| k == kind);
            if let (Some(ours), Some(&(_, theirs))) = (ours, theirs) {
                table.add(name, unit, None, true, ours);
                table.add(name, unit, None, false, theirs);
            }
        }
    }

    /// One run: fan-out at every size, then append throughput, every server in turn, the
    /// order rotating between runs.
    pub(super) async fn run(&mut self, settings: &Settings, run: usize, limit: u64) {
        if self.tables.iter().all(|(_, table)| table.skipped.is_some()) {
            return;
        }
        let mut order = vec![self.ours];
        let compared = self
            .tables
            .iter()
            .filter(|(_, table)| table.skipped.is_none());
        order.extend(compared.map(|(kind, _)| *kind));
        let servers = order.len();
        order.rotate_left(run % servers);
        for &n in &settings.fanout {
            // The client and each server hold the n connections, plus a few of their own.
            if n as u64 + 512 > limit {
                eprintln!(
                    "   N={n} skipped: the open-files limit is {limit}, too few for {n} connections"
                );
                continue;
            }
            let mut p50 = Vec::new();
            let mut p99 = Vec::new();
            let mut memory = Vec::new();
            for &kind in &order {
                let fanout = durable::fanout(kind, self.program(kind), self.disk, n).await;
                p50.push((kind, fanout.p50));
                p99.push((kind, fanout.p99));
                memory.push((kind, fanout.per_reader_kib));
            }
            let name =
                |what: &str| format!("fan-out N={n}, append to last reader's answer, {what}");
            self.add(&name("p50"), "ms", &p50);
            self.add(&name("p99"), "ms", &p99);
            self.add(&format!("memory per parked reader, N={n}"), "KiB", &memory);
            let Some(table) = &mut self.demo else {
                continue;
            };
            let demo = parked_peer(Peer::Demo, None, n).await;
            let ours = memory
                .iter()
                .find(|(kind, _)| *kind == durable::Kind::TowerPush);
            let name = format!("memory per parked reader (ours) or poll (demo), N={n}");
            table.add(
                &name,
                "KiB",
                Some((1.10, false)),
                true,
                ours.map_or(0.0, |m| m.1),
            );
            table.add(&name, "KiB", Some((1.10, false)), false, demo.per_poll);
        }
        for &writers in &settings.writers {
            let (mut rates, mut p50, mut p99) = (Vec::new(), Vec::new(), Vec::new());
            for &kind in &order {
                let program = self.program(kind);
                let appends =
                    durable::appends(kind, program, self.disk, writers, settings.appends).await;
                rates.push((kind, appends.rate));
                p50.push((kind, appends.p50));
                p99.push((kind, appends.p99));
            }
            let name = |what: &str| {
                format!(
                    "appends by {writers} idempotent writer{}, {what}",
                    if writers == 1 { "" } else { "s" }
                )
            };
            self.add(&name("acknowledged per second"), "appends/s", &rates);
            self.add(&name("latency p50"), "ms", &p50);
            self.add(&name("latency p99"), "ms", &p99);
        }
        if self.disk && self.ours == durable::Kind::TowerPush && settings.recovery_streams > 0 {
            let mut recovery = Vec::new();
            for &kind in &order {
                let (streams, bytes) = (settings.recovery_streams, settings.recovery_bytes);
                let took = durable::recovery(kind, self.program(kind), streams, bytes).await;
                recovery.push((kind, took));
            }
            let name = format!(
                "recovery after kill -9, {} streams and {} MB, until the first answer",
                settings.recovery_streams,
                settings.recovery_bytes >> 20
            );
            self.add(&name, "s", &recovery);
        }
    }

    pub(super) fn print(&self, settings: &Settings) {
        for (_, table) in &self.tables {
            table.print(settings.runs);
        }
        if let Some(demo) = &self.demo {
            demo.print(settings.runs);
        }
    }
}
