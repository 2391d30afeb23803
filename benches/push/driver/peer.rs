//! The long-poll servers that `--only nchan` and `--only scaling` set against each other: who
//! they are, how each is started, polled, published to and measured, and who takes part in a
//! run in which order.

use std::net::SocketAddr;
use std::process::Command;

use crate::client::{get_request, Conn};
use crate::process::{children, cpu_ns, example, Server};
use crate::{cursor, event_json, nchan};

/// The features the README's command builds the demo program with.
pub(super) const DEMO_FEATURES: &str = "cli,metrics,compression-full";

/// The long-poll servers of `--only nchan` and `--only scaling`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Peer {
    TowerPush,
    /// tower-push on a runtime with one worker thread, as nginx has one worker process:
    /// the info rows of `--only nchan`.
    TowerPushOneThread,
    /// The demo program as users run it (`cargo run --release --example demo --features
    /// server,metrics,compression-full`), at the size of the memory row: started with its defaults but for
    /// `--hold-ms` (the measurement outlasts the 25 s hold) and `--max-held` (above the
    /// number of polls parked; by default it is a quarter of the open-files limit).
    Demo,
    /// The demo program with its polls over HTTP/2, [`H2_STREAMS`] on each connection: the
    /// scaling curve's way past the open-files limit.
    ///
    /// [`H2_STREAMS`]: super::load::H2_STREAMS
    DemoHttp2,
    /// A bare hyper handler (`http1::Builder`'s defaults, no timer) on tokio's multi-threaded
    /// runtime that waits on a `tokio::sync::Notify` and answers the newest event: what any
    /// server on hyper and tokio pays per answer, the floor under tower-push. The info rows
    /// of `--only nchan`.
    HyperFloor,
    Nchan,
}

impl Peer {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::TowerPush => "tower-push",
            Self::TowerPushOneThread => "tower-push-1-thread",
            Self::Demo => "tower-push-demo",
            Self::DemoHttp2 => "tower-push-demo-h2",
            Self::HyperFloor => "hyper-notify",
            Self::Nchan => "nchan",
        }
    }
}

/// A running long-poll server of the peer comparison, and a connection to where it takes
/// publishes: tower-push's control listener, or Nchan's publisher location.
pub(super) enum Target {
    TowerPush(Server),
    /// The demo program: polls without a cursor park at the head of its topic.
    Demo(Server),
    Nchan(nchan::Nginx),
}

impl Target {
    /// Starts `peer`; nginx gets room for `connections`.
    pub(super) async fn start(
        peer: Peer,
        program: Option<&nchan::Program>,
        connections: usize,
    ) -> (Self, Conn) {
        match peer {
            Peer::TowerPush | Peer::TowerPushOneThread | Peer::HyperFloor => {
                let kind = match peer {
                    Peer::TowerPush => "tower-push-poll",
                    Peer::TowerPushOneThread => "tower-push-poll-1-thread",
                    _ => "notify",
                };
                let server = Server::start(kind);
                let mut control = Conn::connect(server.control).await.expect("connect");
                control.stats().await.expect("stats");
                (Self::TowerPush(server), control)
            }
            Peer::Demo | Peer::DemoHttp2 => {
                let port = nchan::free_port();
                // `PUSH_DEMO_PROGRAM`: another build of the demo, to compare two builds
                // against the same Nchan.
                let program = std::env::var_os("PUSH_DEMO_PROGRAM")
                    .map_or_else(|| example("demo", DEMO_FEATURES), std::path::PathBuf::from);
                let mut command = Command::new(program);
                command.args(["--addr", &format!("127.0.0.1:{port}")]);
                command.args(["--hold-ms", "600000", "--max-held", "1000000"]);
                // More flags for the demo, to measure one of its settings against Nchan.
                if let Ok(extra) = std::env::var("PUSH_DEMO_ARGS") {
                    command.args(extra.split_whitespace());
                }
                let server = Server::listening(command, port).await;
                let control = Conn::connect(server.addr).await.expect("connect");
                (Self::Demo(server), control)
            }
            Peer::Nchan => {
                let program = program.expect("Nchan is installed");
                let nginx = nchan::Nginx::start(program, connections).await;
                let control = Conn::connect(nginx.addr).await.expect("connect");
                (Self::Nchan(nginx), control)
            }
        }
    }

    pub(super) fn addr(&self) -> SocketAddr {
        match self {
            Self::TowerPush(server) | Self::Demo(server) => server.addr,
            Self::Nchan(nginx) => nginx.addr,
        }
    }

    /// A poll after the newest event: it parks.
    pub(super) fn parked_path(&self) -> String {
        match self {
            Self::TowerPush(_) => format!("/poll?after={}", cursor(1)),
            Self::Demo(_) => "/poll".to_owned(),
            Self::Nchan(nginx) => format!("/poll?last_event_id={}", nginx.newest),
        }
    }

    /// A poll after the event before the newest: answered at once with one event. The demo
    /// program's cursors are its own: two events are published to it first, and the poll
    /// names the cursor of the first.
    pub(super) async fn ready_path(&self, control: &mut Conn) -> String {
        match self {
            Self::TowerPush(_) => format!("/poll?after={}", cursor(0)),
            Self::Demo(_) => {
                let first = publish_to_demo(control, 0).await;
                publish_to_demo(control, 1).await;
                format!("/poll?after={first}")
            }
            Self::Nchan(nginx) => format!("/poll?last_event_id={}", nginx.older),
        }
    }

    /// The server's processes: ours, or nginx's master and worker.
    pub(super) fn pids(&self) -> Vec<u32> {
        match self {
            Self::TowerPush(server) | Self::Demo(server) => vec![server.child.id()],
            Self::Nchan(nginx) => {
                let mut pids = vec![nginx.master];
                pids.extend(children(nginx.master));
                pids
            }
        }
    }

    /// CPU time in nanoseconds: the server process, or nginx's master and worker.
    pub(super) fn cpu_ns(&self) -> u64 {
        match self {
            Self::TowerPush(server) | Self::Demo(server) => cpu_ns(server.child.id()),
            Self::Nchan(nginx) => nginx.cpu_ns(),
        }
    }

    /// Resident memory in KiB: the server process, or nginx's master and worker.
    pub(super) fn rss_kib(&self) -> u64 {
        match self {
            Self::TowerPush(server) | Self::Demo(server) => server.rss_kib(),
            Self::Nchan(nginx) => nginx.rss_kib(),
        }
    }

    pub(super) async fn waiting(&self, control: &mut Conn) -> usize {
        match self {
            Self::TowerPush(_) => control.stats().await.expect("stats").0,
            // The gauge of held polls on the demo's `/metrics`.
            Self::Demo(_) => {
                // `tower_push::metrics::PARKED_POLLS`, which the bench does not need the
                // feature for.
                let metric = "tower_push_parked_polls ";
                control
                    .send(&get_request("/metrics", None))
                    .await
                    .expect("send");
                let (status, body) = control.response_body().await.expect("/metrics");
                assert_eq!(status, 200, "/metrics");
                let body = String::from_utf8_lossy(&body);
                let line = body.lines().find(|line| line.starts_with(metric));
                let value = line.and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok());
                value.unwrap_or(0.0) as usize
            }
            Self::Nchan(_) => nchan::subscribers(control).await,
        }
    }

    pub(super) async fn publish(&self, control: &mut Conn) {
        match self {
            Self::TowerPush(_) => {
                control.post("/publish").await.expect("publish");
            }
            Self::Demo(_) => {
                publish_to_demo(control, 1).await;
            }
            Self::Nchan(_) => {
                nchan::publish(control, &event_json(1)).await;
            }
        }
    }
}

/// Publishes event `n` to the demo program over `control`: the cursor it answers with.
async fn publish_to_demo(control: &mut Conn, n: u64) -> String {
    let data = event_json(n);
    let request = format!(
        "POST /publish HTTP/1.1\r\nhost: 127.0.0.1\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{data}",
        data.len()
    );
    control.send(request.as_bytes()).await.expect("publish");
    let (status, body) = control.response_body().await.expect("publish");
    assert_eq!(status, 200, "POST /publish");
    let answer: serde_json::Value = serde_json::from_slice(&body).expect("the demo answers JSON");
    answer["id"].as_str().expect("an id").to_owned()
}

/// Who takes part in one run of the peer comparison.
pub(super) struct Sides<'a> {
    /// `None` when Nchan is not installed: tower-push is then measured alone.
    pub(super) nchan: Option<&'a nchan::Program>,
    /// Who goes first at each size, alternating between runs.
    pub(super) first: Peer,
    /// The open-files limit of every process: sizes above it are skipped.
    pub(super) limit: u64,
}

impl Sides<'_> {
    /// The order of this run: tower-push and Nchan (when installed) alternate. With
    /// `others`, tower-push on one thread comes first or last, the demo program right
    /// before or after Nchan, and the bare hyper handler on its other side.
    pub(super) fn order(&self, others: bool) -> Vec<Peer> {
        let mut order = if self.first == Peer::TowerPush {
            vec![Peer::TowerPush, Peer::Nchan]
        } else {
            vec![Peer::Nchan, Peer::TowerPush]
        };
        if self.nchan.is_none() {
            order.retain(|&peer| peer != Peer::Nchan);
        } else if others && self.first == Peer::TowerPush {
            order.insert(1, Peer::Demo);
            order.push(Peer::HyperFloor);
            order.push(Peer::TowerPushOneThread);
        } else if others {
            order.insert(1, Peer::Demo);
            order.insert(0, Peer::HyperFloor);
            order.insert(0, Peer::TowerPushOneThread);
        }
        order
    }
}
