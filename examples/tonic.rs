//! A tonic server with a real gRPC service (the standard health service) and the demo's push
//! routes on the same port. gRPC needs HTTP/2; the push routes answer HTTP/1.1 too.
//!
//! ```text
//! cargo run --example tonic -- --addr 127.0.0.1:3000
//! curl -N localhost:3000/stream
//! grpcurl -plaintext localhost:3000 grpc.health.v1.Health/Check
//! ```

mod common;

#[tokio::main]
async fn main() {
    let addr = common::parse_addr();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|err| panic!("cannot listen on {addr}: {err}"));
    println!("tonic example listening on http://{addr}");
    let app = common::App::new();
    let router = app.router();
    common::serve_tonic(listener, router, app.shutdown, common::ctrl_c_or_sigterm()).await;
}
