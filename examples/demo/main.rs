//! The tower-push demo: long polling and streaming on the embedded in-memory log, served by
//! hyper (HTTP/1.1 and HTTP/2 on one port).
//!
//! ```text
//! cargo run --example demo --features cli -- --help    # every flag, with its default
//! cargo run --example demo --features cli -- --addr localhost:3000 --hold-ms 25000
//! ```
//!
//! Routes:
//! - `GET /`: a page that publishes from a form and shows the feed live in two panes, one fed
//!   by `EventSource` on `/stream`, one by a long-poll loop on `/poll` (`examples/demo/index.html`).
//! - `GET /poll[?after=<cursor>]`: long poll on the default topic.
//! - `GET /stream[?after=<cursor>]`: a stream of the default topic, SSE when the request accepts
//!   `text/event-stream`, NDJSON otherwise; resumes from `Last-Event-ID` too.
//! - `POST /publish[?topic=<name>]`: the body is one event's JSON data; answers
//!   `{"id":"<cursor>"}`.
//! - `GET /poll?topics=a,b` and `GET /stream?topics=a,b`: several topics on one request.
//! - `GET /stats`: an SSE stream of the server's numbers, one sample a second (the page's panel).
//! - `GET /metrics`: every metric in Prometheus's text format, with `--features metrics`.
//!
//! Ctrl-C or SIGTERM shuts it down gracefully: held polls answer at once, streams end with a
//! final message, and the process exits once every connection has closed (or after a drain
//! window of 10 seconds).
//!
//! It is served by `tower_push::server::Server`: slow and stalled clients are cut off (a request
//! head must arrive within 10 s, a body within 30 s, a write must make progress within 30 s),
//! and beyond `--max-held` (a quarter of the open-files limit by default) each, polls and
//! streams are answered `503 overloaded`.
//!
//! Try it: open <http://localhost:3000/> in a browser, or
//!
//! ```text
//! curl -i localhost:3000/poll                       # waits 25 s (the hold), then 204 with Push-Cursor
//! curl -N localhost:3000/stream                     # NDJSON lines as events arrive
//! curl -N -H 'accept: text/event-stream' localhost:3000/stream
//! curl -d '{"text":"hi"}' localhost:3000/publish    # {"id":"…-1"}
//! curl -i 'localhost:3000/poll?after=<Push-Cursor>' # 200 with the event
//! ```

use clap::Parser;
use tower_push::server::{self, Server};
use tower_push::Shutdown;

mod app;

use app::{exit_usage, Demo};

// Allocate with jemalloc: a parked poll then costs about 6 KiB of memory instead of 10 with
// glibc's malloc, measured with 10,000 of them (BENCHMARKS.md, "What the connection stack
// costs"). Most of a parked HTTP/1.1 connection is hyper's 8 KiB read buffer, of which a poll's
// request uses a few hundred bytes; jemalloc leaves the pages nobody wrote to out of memory.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The tower-push demo: long polling and streaming on the embedded in-memory log.
#[derive(Parser)]
#[command(name = "demo")]
struct Cli {
    #[command(flatten)]
    flags: app::Flags,
    #[command(flatten)]
    threads: server::Threads,
}

fn main() {
    let cli = Cli::parse();
    #[cfg(unix)]
    if cli.threads.threads > 0 {
        return run_per_thread(cli);
    }
    let runtime = server::runtime().build().unwrap_or_else(|err| {
        eprintln!("cannot start the runtime: {err}");
        std::process::exit(1);
    });
    runtime.block_on(run(cli));
}

async fn run(cli: Cli) {
    app::metrics::install();
    let settings = cli
        .flags
        .settings()
        .unwrap_or_else(|err| exit_usage::<Cli>(err));
    reload_on_hangup(&settings);
    let shutdown = Shutdown::new();
    let demo = Demo::new(&settings, &shutdown).unwrap_or_else(|err| exit_usage::<Cli>(err));

    let topic = demo.topic();
    println!(
        "tower-push demo: topic {}, epoch {}",
        topic.name(),
        topic.epoch()
    );
    let _stats = demo.spawn_stats(std::time::Duration::from_secs(1));
    // Ctrl-C or SIGTERM: held polls answer and streams end, then connections close.
    cli.flags
        .serve
        .serve(Server::new().shutdown(shutdown), demo.clone())
        .await;
}

/// With `--tokens FILE`: reads the file again on every SIGHUP (a token taken out of it ends its
/// streams within a minute, at their next check).
fn reload_on_hangup(settings: &app::Settings) {
    #[cfg(unix)]
    if let Some(tokens) = settings.tokens.clone() {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            eprintln!("cannot listen for SIGHUP: the tokens file is read once");
            return;
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match tokens.reload() {
                    Ok(count) => eprintln!("tokens file read again: {count} tokens"),
                    Err(err) => eprintln!("{err}; the tokens stay as they were"),
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = settings;
}

/// `--threads N`: the same routes, served by `Server::serve_per_thread`.
#[cfg(unix)]
fn run_per_thread(cli: Cli) {
    app::metrics::install();
    let settings = cli
        .flags
        .settings()
        .unwrap_or_else(|err| exit_usage::<Cli>(err));
    let shutdown = Shutdown::new();
    let demo = Demo::new(&settings, &shutdown).unwrap_or_else(|err| exit_usage::<Cli>(err));
    let addr = &cli.flags.serve.addr;
    let socket_addr = cli.flags.serve.socket_addr();
    println!(
        "tower-push demo listening on http://{socket_addr} from {} threads (topic {}, epoch {})",
        cli.threads.threads,
        demo.topic().name(),
        demo.topic().epoch()
    );
    let stats = demo.clone();
    let hangup = settings.clone();
    let stop = async move {
        reload_on_hangup(&hangup);
        let _stats = stats.spawn_stats(std::time::Duration::from_secs(1));
        server::ctrl_c_or_sigterm().await;
    };
    let served = Server::new().shutdown(shutdown).serve_per_thread(
        socket_addr,
        cli.threads.threads,
        demo,
        stop,
    );
    match served {
        Ok(drained) => eprintln!("stopped: {drained}"),
        Err(err) => exit_usage::<Cli>(format!("cannot serve on {addr}: {err}")),
    }
}
