//! `--only throughput`: requests per second over keep-alive connections, every poll answered at
//! once, against the `ready` baseline (and, through [`throughput_at`], against the peers of
//! `--only nchan`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{get_request, Conn};
use crate::process::Server;
use crate::{cursor, Settings};

/// Requests per second over keep-alive connections, every request answered at once.
pub(super) async fn throughput(settings: &Settings, ours: bool) -> f64 {
    let (kind, path) = if ours {
        ("tower-push-poll", format!("/poll?after={}", cursor(0)))
    } else {
        ("ready", "/poll".to_owned())
    };
    let server = Server::start(kind);
    throughput_at(settings, kind, server.addr, &path).await
}

/// Requests per second to `addr` over keep-alive connections, each sending `GET path`.
pub(super) async fn throughput_at(
    settings: &Settings,
    kind: &str,
    addr: SocketAddr,
    path: &str,
) -> f64 {
    let request: Arc<[u8]> = get_request(path, None).into();
    let warm_up = Duration::from_millis(500);
    let start = Instant::now() + warm_up;
    let end = start + settings.throughput_for;
    let tasks: Vec<_> = (0..settings.connections)
        .map(|_| {
            let request = request.clone();
            tokio::spawn(async move {
                let mut conn = Conn::connect(addr).await.expect("connect");
                let mut counted = 0u64;
                let mut body = None;
                loop {
                    conn.send(&request).await.expect("send");
                    let (status, len) = conn.response().await.expect("response");
                    assert_eq!(status, 200);
                    body.get_or_insert(len);
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    if now >= start {
                        counted += 1;
                    }
                }
                (counted, body.unwrap_or(0))
            })
        })
        .collect();
    let mut total = 0;
    let mut body = 0;
    for task in tasks {
        let (counted, len) = task.await.expect("client task");
        total += counted;
        body = len;
    }
    let rps = total as f64 / settings.throughput_for.as_secs_f64();
    eprintln!("   {kind:17} throughput: {rps:.0} req/s ({body}-byte bodies)");
    rps
}
