//! The demo's routes on the embedded log in an axum `Router`: the layered services mounted with
//! `route_service`, per-topic routes (`/topics/{topic}/poll`, `/stream`, `/publish`) whose
//! handlers share the log with the publish handler through state.
//!
//! ```text
//! cargo run --example axum -- --addr 127.0.0.1:3000
//! curl -d '{"text":"hi"}' localhost:3000/topics/chat/publish
//! curl -N -H 'accept: text/event-stream' 'localhost:3000/topics/chat/stream'
//! ```

mod common;

#[tokio::main]
async fn main() {
    let addr = common::parse_addr();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|err| panic!("cannot listen on {addr}: {err}"));
    println!("axum example listening on http://{addr}");
    let app = common::App::new();
    let router = app.router();
    common::serve_axum(listener, router, app.shutdown, common::ctrl_c_or_sigterm()).await;
}
