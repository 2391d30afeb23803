//! The demo's routes (`/poll`, `/stream`, `/publish`) on the embedded log, served by plain hyper
//! with hyper-util's `auto` builder: HTTP/1.1 and HTTP/2 (prior knowledge) on one port.
//!
//! ```text
//! cargo run --example hyper -- --addr 127.0.0.1:3000
//! curl --http2-prior-knowledge -N localhost:3000/stream
//! ```

mod common;

#[tokio::main]
async fn main() {
    let addr = common::parse_addr();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|err| panic!("cannot listen on {addr}: {err}"));
    println!("hyper example listening on http://{addr}");
    let shutdown = tower_push::Shutdown::new();
    let demo = common::Demo::new(&common::Settings::default(), &shutdown).expect("valid settings");
    common::serve_hyper(listener, demo, shutdown, common::ctrl_c_or_sigterm()).await;
}
