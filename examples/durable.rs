//! A Durable Streams server on the embedded store: every stream under `/v1/stream/`.
//!
//! ```sh
//! cargo run --example durable --features durable -- --addr 127.0.0.1:4437
//! curl -X PUT -H 'content-type: text/plain' http://127.0.0.1:4437/v1/stream/hello
//! curl -X POST -H 'content-type: text/plain' -d 'hi' http://127.0.0.1:4437/v1/stream/hello
//! curl 'http://127.0.0.1:4437/v1/stream/hello?offset=-1'
//! curl -N 'http://127.0.0.1:4437/v1/stream/hello?offset=-1&live=sse'
//! ```
//!
//! Ctrl-C (or SIGTERM) drains it: held long polls answer `204` with their offset, SSE streams
//! end, new requests get `503`, and the server exits once every connection has closed (or after
//! 10 seconds).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tower::ServiceExt;
use tower_push::durable::{DurableStreams, MemoryStore};
use tower_push::{ChunkedStreamLayer, LongPollLayer, Shutdown};

/// Serves the Durable Streams protocol under /v1/stream/ from memory.
#[derive(Parser, Debug)]
struct Args {
    /// Where to listen.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:4437")]
    addr: SocketAddr,
    /// How long a `live=long-poll` read waits for data before it answers 204, in milliseconds.
    #[arg(long, value_name = "MILLIS", default_value_t = 25_000)]
    hold: u64,
    /// The most streams kept in memory.
    #[arg(long, value_name = "STREAMS", default_value_t = 100_000)]
    max_streams: usize,
    /// The most bytes of stream data kept in memory.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    max_bytes: usize,
    /// The largest request body, in bytes; larger ones get 413.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    max_body: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let shutdown = Shutdown::new();
    let store = MemoryStore::builder()
        .max_streams(args.max_streams)
        .max_bytes(args.max_bytes)
        .build();
    let service = DurableStreams::builder(store)
        .prefix("/v1/stream")
        .max_body_bytes(args.max_body)
        .long_poll(
            LongPollLayer::builder()
                .hold_timeout(Duration::from_millis(args.hold))
                .shutdown(shutdown.clone()),
        )
        .sse(
            ChunkedStreamLayer::builder()
                .max_lifetime(Duration::from_secs(60))
                .lifetime_jitter(0.1)
                .shutdown(shutdown.clone()),
        )
        .build()?;

    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    println!(
        "serving Durable Streams on http://{}/v1/stream/",
        listener.local_addr()?
    );
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(ctrl_c_or_sigterm());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    eprintln!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Each append and each event goes out at once, not after the previous ACK (Nagle).
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let hyper_service = service_fn(move |req: hyper::Request<Incoming>| {
            let service = service.clone();
            async move { Ok::<_, Infallible>(service.oneshot(req).await.unwrap_or_else(|e| match e {})) }
        });
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), hyper_service);
            let _ = watcher.watch(connection.into_owned()).await;
        });
    }
    // Held polls answer and streams end; then connections close.
    shutdown.trigger();
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!("connections still open after 10 s; exiting anyway");
    }
    Ok(())
}

/// Resolves on Ctrl-C, or on SIGTERM where there is one.
async fn ctrl_c_or_sigterm() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
