//! The crate's serving loop (`tower_push::server::Server`) against clients that hold what they
//! should not: bodies that never finish, many uploads at once, more connections than the cap.
//! Deadlines on heads and writes, the drain and the protocol sniffing are tested on every
//! program's stack in `stacks.rs`.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use common::SECOND;
use http::{Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tower_push::server::{self, Server};
use tower_push::PushBody;

/// `POST /publish` reads its body (at most 64 KiB) and answers `200` with its length, or the
/// read's error; anything else answers `200 ok` at once.
async fn handle(req: Request<server::Body>) -> Result<Response<PushBody>, Infallible> {
    if req.uri().path() != "/publish" {
        return Ok(Response::new(PushBody::full("ok")));
    }
    let (status, text) = match req.into_body().collect_at_most(64 * 1024).await {
        Ok(body) => (StatusCode::OK, body.len().to_string()),
        Err(err) => (err.status(), err.code().to_owned()),
    };
    let mut response = Response::new(PushBody::full(text));
    *response.status_mut() = status;
    Ok(response)
}

async fn start(server: Server) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = tower::service_fn(handle);
    tokio::spawn(server.serve(listener, service, std::future::pending()));
    addr
}

/// A publish that announces `length` bytes and sends three of them.
async fn slow_publish(addr: SocketAddr, length: usize) -> TcpStream {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let head =
        format!("POST /publish HTTP/1.1\r\nhost: test\r\ncontent-length: {length}\r\n\r\nabc");
    socket.write_all(head.as_bytes()).await.unwrap();
    socket
}

/// Everything the server sends until it closes `socket`, or `None` if it is still open after
/// `wait`.
async fn read_to_close(socket: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut received = Vec::new();
    let read = timeout(wait, socket.read_to_end(&mut received)).await;
    read.ok()
        .map(|_| String::from_utf8_lossy(&received).into_owned())
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_answered_408_and_its_connection_closed() {
    let addr = start(Server::new().body_read_timeout(Duration::from_millis(300))).await;
    let mut socket = slow_publish(addr, 60_000).await;
    let started = tokio::time::Instant::now();
    let reply = read_to_close(&mut socket, 5 * SECOND)
        .await
        .expect("the connection is closed after the deadline");
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.ends_with("body_timeout"), "{reply}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < 3 * SECOND,
        "{took:?}"
    );

    // A body that arrives whole in time is read as before.
    let (status, body) = common::post_json(addr, "/publish", r#"{"n":1}"#).await;
    assert_eq!((status.as_u16(), body), (200, serde_json::json!(7)));
}

#[tokio::test]
async fn beyond_max_body_reads_uploads_get_503_and_reads_are_not_counted() {
    let server = Server::new()
        .max_body_reads(2)
        .body_read_timeout(Duration::from_millis(600));
    let addr = start(server).await;
    let mut slow = vec![
        slow_publish(addr, 60_000).await,
        slow_publish(addr, 60_000).await,
    ];
    // Both are being read: the server has taken their places once a third is refused.
    let refused = timeout(5 * SECOND, async {
        loop {
            let (status, body) = common::post_json(addr, "/publish", "1").await;
            if status == 503 {
                break body;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a third upload refused");
    assert_eq!(refused["error"], "overloaded");
    // Requests without a body take no place.
    let reply = common::get(addr, "/poll").await;
    assert_eq!(
        (reply.status, &reply.body[..]),
        (StatusCode::OK, &b"ok"[..])
    );
    // The slow ones time out and give their places back.
    for socket in &mut slow {
        let reply = read_to_close(socket, 5 * SECOND).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    }
    let (status, _) = common::post_json(addr, "/publish", "1").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn beyond_max_connections_the_server_waits_for_one_to_close() {
    waits_for_a_place(Server::new().max_connections(2)).await;
}

#[tokio::test]
async fn a_connection_torn_down_in_place_frees_its_place_too() {
    let server = Server::new().max_connections(2).close_in_background(false);
    waits_for_a_place(server).await;
}

/// With two places, a third connection is answered once one of the first two closes.
async fn waits_for_a_place(server: Server) {
    let addr = start(server).await;
    let mut open = vec![
        TcpStream::connect(addr).await.unwrap(),
        TcpStream::connect(addr).await.unwrap(),
    ];
    for socket in &mut open {
        socket
            .write_all(b"GET /a HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0; 256];
        let n = socket.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    // The kernel completes the handshake of a third; the server does not take it up.
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(b"GET /b HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_to_close(&mut third, Duration::from_millis(500)).await,
        None,
        "answered beyond the cap"
    );
    drop(open.pop());
    let reply = read_to_close(&mut third, 5 * SECOND)
        .await
        .expect("answered once a place was free");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[tokio::test]
async fn the_drain_reports_the_connections_it_had_to_leave_open() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::new().drain_timeout(Duration::from_millis(200));
    let served = tokio::spawn(server.serve(listener, tower::service_fn(handle), async {
        let _ = stopped.await;
    }));
    // Half a body: its connection cannot close by itself within the drain timeout.
    let _slow = slow_publish(addr, 60_000).await;
    let reply = common::get(addr, "/poll").await;
    assert_eq!(reply.status, StatusCode::OK);
    stop.send(()).unwrap();
    let drained = timeout(5 * SECOND, served).await.unwrap().unwrap();
    assert!(!drained.is_complete());
    assert_eq!(drained.still_open(), 1);
}

#[cfg(unix)]
#[tokio::test]
async fn serving_from_threads_of_their_own_answers_and_drains_every_thread() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let stop = async {
            let _ = stopped.await;
        };
        let service = tower::service_fn(handle);
        Server::new()
            .drain_timeout(Duration::from_millis(300))
            .serve_per_thread(addr, 2, service, stop)
            .unwrap()
    });
    // Both listeners answer: many connections, each one request.
    let mut answered = 0;
    for _ in 0..20 {
        let reply = timeout(5 * SECOND, async {
            loop {
                match TcpStream::connect(addr).await {
                    Ok(_) => break common::get(addr, "/poll").await,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        answered += 1;
    }
    assert_eq!(answered, 20);
    let (status, body) = common::post_json(addr, "/publish", r#"{"n":1}"#).await;
    assert_eq!((status.as_u16(), body), (200, serde_json::json!(7)));
    // Half a body on one connection: it cannot close by itself within the drain timeout.
    let _slow = slow_publish(addr, 60_000).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    let drained = tokio::task::spawn_blocking(move || server.join().unwrap())
        .await
        .unwrap();
    assert_eq!(drained.still_open(), 1, "{drained}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listeners are closed"
    );
}
