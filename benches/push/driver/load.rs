//! The parked load: `n` clients that each send one poll and wait for its whole answer, over
//! HTTP/1.1 (a connection each) or HTTP/2 (many polls on a connection).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;

use crate::client::{source, Conn};

/// Opens `n` connections, each sending `request` and waiting for the whole answer; each
/// task resolves with the instant the answer was complete. With `spread`, the connections
/// come from the [`SOURCES`] addresses in turn and close with a reset.
///
/// [`SOURCES`]: crate::client::SOURCES
pub(super) fn spawn_clients(
    addr: SocketAddr,
    request: Vec<u8>,
    n: usize,
    spread: bool,
) -> Vec<tokio::task::JoinHandle<std::io::Result<Instant>>> {
    // Connect in waves, so that the listen backlog never overflows.
    let gate = Arc::new(Semaphore::new(256));
    let request: Arc<[u8]> = request.into();
    (0..n)
        .map(|i| {
            let (gate, request) = (gate.clone(), request.clone());
            tokio::spawn(async move {
                let permit = gate.acquire_owned().await.expect("semaphore");
                let mut conn = if spread {
                    Conn::connect_from(addr, source(i)).await?
                } else {
                    Conn::connect(addr).await?
                };
                conn.send(&request).await?;
                drop(permit);
                let (status, _) = conn.response().await?;
                let done = Instant::now();
                if status != 200 {
                    return Err(std::io::Error::other(format!("status {status}")));
                }
                Ok(done)
            })
        })
        .collect()
}

/// How many polls share one HTTP/2 connection in the scaling curve: the demo's
/// `max_concurrent_streams`.
pub(super) const H2_STREAMS: usize = 100;

/// Opens `n / H2_STREAMS` HTTP/2 connections (prior knowledge, from the [`SOURCES`]
/// addresses in turn) and sends [`H2_STREAMS`] requests for `path` on each, `n` in all; each
/// task resolves with the instant its whole answer was in.
///
/// [`SOURCES`]: crate::client::SOURCES
pub(super) async fn spawn_h2_clients(
    addr: SocketAddr,
    path: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<std::io::Result<Instant>>> {
    use http_body_util::{BodyExt as _, Empty};
    let uri: http::Uri = format!("http://{addr}{path}").parse().expect("URI");
    let mut clients = Vec::with_capacity(n);
    for c in 0..n.div_ceil(H2_STREAMS) {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(source(c), 0)).expect("bind");
        let stream = socket.connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (sender, connection) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .handshake(TokioIo::new(stream))
                .await
                .expect("HTTP/2 handshake");
        tokio::spawn(connection);
        for _ in 0..H2_STREAMS.min(n - c * H2_STREAMS) {
            let (mut sender, uri) = (sender.clone(), uri.clone());
            clients.push(tokio::spawn(async move {
                let request = Request::get(uri)
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(std::io::Error::other)?;
                let status = response.status();
                response
                    .into_body()
                    .collect()
                    .await
                    .map_err(std::io::Error::other)?;
                let done = Instant::now();
                if status != StatusCode::OK {
                    return Err(std::io::Error::other(format!("status {status}")));
                }
                Ok(done)
            }));
        }
    }
    clients
}
