//! The tower-push demo: long polling and streaming on the embedded in-memory log, served by
//! hyper (HTTP/1.1 and HTTP/2 on one port).
//!
//! ```text
//! cargo run --example demo -- [--addr 127.0.0.1:3000] [--hold-ms 25000] [--retention 1024]
//!                             [--heartbeat-ms 15000] [--max-stream-ms 300000]
//!                             [--sse-retry-ms 1000]
//! ```
//!
//! Routes:
//! - `GET /`: a page that publishes from a form and shows the feed live in two panes, one fed
//!   by `EventSource` on `/stream`, one by a long-poll loop on `/poll` (`examples/demo/index.html`).
//! - `GET /poll[?after=<cursor>]`: long poll on the default topic.
//! - `GET /stream[?after=<cursor>]`: a stream of the default topic, SSE when the request accepts
//!   `text/event-stream`, NDJSON otherwise; resumes from `Last-Event-ID` too.
//! - `POST /publish`: the body is one event's JSON data; answers `{"id":"<cursor>"}`.
//!
//! Ctrl-C or SIGTERM shuts it down gracefully: held polls answer at once, streams end with a
//! final message, and the process exits once every connection has closed (or after a drain
//! window of 10 seconds).
//!
//! Try it: open <http://localhost:3000/> in a browser, or
//!
//! ```text
//! curl -i localhost:3000/poll                       # waits, then 204 with Push-Cursor
//! curl -N localhost:3000/stream                     # NDJSON lines as events arrive
//! curl -N -H 'accept: text/event-stream' localhost:3000/stream
//! curl -d '{"text":"hi"}' localhost:3000/publish    # {"id":"…-1"}
//! curl -i 'localhost:3000/poll?after=<Push-Cursor>' # 200 with the event
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use tower_push::Shutdown;

mod app;

use app::{Demo, Settings};

fn usage(problem: &str) -> ! {
    eprintln!("error: {problem}");
    eprintln!(
        "usage: demo [--addr HOST:PORT] [--hold-ms MILLIS] [--retention EVENTS] \
         [--heartbeat-ms MILLIS] [--max-stream-ms MILLIS] [--sse-retry-ms MILLIS]"
    );
    std::process::exit(2)
}

fn parse_args() -> (SocketAddr, Settings) {
    let mut addr: SocketAddr = ([127, 0, 0, 1], 3000).into();
    let mut settings = Settings::default();
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        if flag == "--help" || flag == "-h" {
            usage("help requested");
        }
        let Some(value) = argv.next() else {
            usage(&format!("{flag} needs a value"));
        };
        match flag.as_str() {
            "--addr" => {
                addr = value
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("--addr {value:?} is not HOST:PORT")));
            }
            "--hold-ms" => settings.hold = millis(&flag, &value),
            "--heartbeat-ms" => settings.heartbeat = millis(&flag, &value),
            "--max-stream-ms" => settings.max_stream = millis(&flag, &value),
            "--sse-retry-ms" => settings.sse_retry = millis(&flag, &value),
            "--retention" => {
                settings.retention = value
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("--retention {value:?} is not a number")));
            }
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    (addr, settings)
}

fn millis(flag: &str, value: &str) -> Duration {
    let ms: u64 = value
        .parse()
        .unwrap_or_else(|_| usage(&format!("{flag} {value:?} is not a number of milliseconds")));
    Duration::from_millis(ms)
}

#[tokio::main]
async fn main() {
    let (addr, settings) = parse_args();
    let shutdown = Shutdown::new();
    let demo = Demo::new(&settings, &shutdown).unwrap_or_else(|err| usage(&err.to_string()));

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|err| usage(&format!("cannot listen on {addr}: {err}")));
    println!(
        "tower-push demo listening on http://{} (topic {}, epoch {})",
        listener.local_addr().expect("bound"),
        demo.topic().name(),
        demo.log().epoch()
    );
    if app::serve(listener, demo, shutdown, app::ctrl_c_or_sigterm()).await {
        println!("all connections closed");
    } else {
        eprintln!(
            "drain window of {:?} passed; exiting anyway",
            app::DRAIN_WINDOW
        );
    }
}
