//! A real hyper server on 127.0.0.1:0 and a small HTTP/1.1 client over real sockets.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tower::{Service, ServiceExt};
use tower_push::PushBody;

/// Serves `service` on a fresh loopback port until the test's runtime ends.
pub async fn serve<S>(service: S) -> SocketAddr
where
    S: Service<Request<Incoming>, Response = Response<PushBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            stream.set_nodelay(true).unwrap();
            let service = service.clone();
            let hyper_service = hyper::service::service_fn(move |req| service.clone().oneshot(req));
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), hyper_service)
                    .await;
            });
        }
    });
    addr
}

/// A complete answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The anti-buffering headers every long-poll answer must carry, and none of the
    /// connection-specific ones.
    pub fn assert_push_headers(&self) {
        assert_eq!(
            self.header("cache-control"),
            Some("no-cache, no-store, no-transform"),
            "{self:?}"
        );
        assert_eq!(self.header("x-accel-buffering"), Some("no"), "{self:?}");
        for forbidden in ["transfer-encoding", "connection", "keep-alive"] {
            assert!(self.header(forbidden).is_none(), "{forbidden} in {self:?}");
        }
    }
}

/// Sends one GET over a new HTTP/1.1 connection and reads the whole answer.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    get_with(addr, path, &[]).await
}

/// Sends one GET with extra headers over a new HTTP/1.1 connection.
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &[u8])]) -> Reply {
    let mut request = Request::get(path).header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, http::HeaderValue::from_bytes(value).unwrap());
    }
    send(addr, request.body(Empty::<Bytes>::new()).unwrap()).await
}

async fn send(addr: SocketAddr, request: Request<Empty<Bytes>>) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}
