//! A Durable Streams server: every stream under `/v1/stream/`, in memory, in a directory that
//! survives a crash with `--data-dir DIR` (feature `durable-file`), or in a Redis shared by
//! several processes with `--redis URL` (feature `redis`).
//!
//! ```sh
//! cargo run --example durable --features durable,cli -- --addr 127.0.0.1:4437
//! # or, on disk:
//! cargo run --example durable --features durable-file,cli -- --data-dir ./streams
//! # or in Redis, shared by every process started so:
//! cargo run --example durable --features durable,redis,cli -- --redis redis://127.0.0.1:6379
//! curl -X PUT -H 'content-type: text/plain' http://127.0.0.1:4437/v1/stream/hello
//! curl -X POST -H 'content-type: text/plain' -d 'hi' http://127.0.0.1:4437/v1/stream/hello
//! curl 'http://127.0.0.1:4437/v1/stream/hello?offset=-1'
//! curl -N 'http://127.0.0.1:4437/v1/stream/hello?offset=-1&live=sse'
//! ```
//!
//! Ctrl-C (or SIGTERM) drains it: held long polls answer `204` with their offset, SSE streams
//! end, new requests get `503`, and the server exits once every connection has closed (or after
//! 10 seconds). It is served by `tower_push::server::Server`, as the demo is: a request head
//! within 10 s, a body within 30 s, write progress within 30 s, connections within the
//! open-files limit.
//!
//! Built with `--features durable,cli,metrics`, it also answers `GET /metrics` (outside
//! `/v1/stream/`) in Prometheus's text format: held long-poll reads and open SSE reads count in
//! the layers' gauges, against their caps, as in the demo.

use std::collections::HashMap;
use std::time::Duration;

use clap::{error::ErrorKind, Parser};
use http::request::Parts;
use tower_push::authorize::{Access, Check, Verdict};
use tower_push::compression::Compression;
use tower_push::durable::{DurableStreams, MemoryStore, Store};
use tower_push::server::{self, Server};
use tower_push::{ChunkedStreamLayer, LongPollLayer, Shutdown};

// Allocate with jemalloc, as the demo does: most of a parked HTTP/1.1 connection is hyper's
// 8 KiB read buffer, of which a read's request uses a few hundred bytes; jemalloc leaves the
// pages nobody wrote to out of memory (BENCHMARKS.md, "What the connection stack costs").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Serves the Durable Streams protocol under /v1/stream/, from memory or from a directory.
/// Where the example listens without `--addr`.
const ADDR: &str = "127.0.0.1:4437";

/// The Durable Streams protocol under /v1/stream/, its streams in memory or in a data directory.
#[derive(Parser, Debug)]
#[command(mut_arg("addr", |arg| arg.default_value(ADDR)))]
struct Args {
    // `--addr` and `--max-held`: the most long-poll reads held at once, and the most SSE reads
    // open at once.
    #[command(flatten)]
    serve: server::Flags,
    #[command(flatten)]
    threads: server::Threads,
    /// How long a `live=long-poll` read waits for data before it answers 204, in milliseconds.
    #[arg(long, value_name = "MILLIS", default_value_t = 25_000)]
    hold_ms: u64,
    /// Keep the streams in this directory (created if need be), so that they survive a restart
    /// and a crash: an append is answered once it is synced to disk. Without it, the streams
    /// live in memory only. Needs the `durable-file` feature.
    #[arg(long, value_name = "DIR", conflicts_with = "redis")]
    data_dir: Option<std::path::PathBuf>,
    /// Keep the streams in this Redis (7.0 or later), shared with every process started with
    /// the same --redis and --redis-prefix: any of them answers any request. An append is as
    /// durable as Redis's `appendfsync` makes it (`always`: on Redis's disk before the answer).
    /// Needs the `redis` feature.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// The prefix of the store's keys in --redis.
    #[arg(long, value_name = "PREFIX", default_value = "ds:")]
    redis_prefix: String,
    /// --redis names one node of a Redis Cluster, whose nodes share the streams by hash slot.
    /// Needs the `redis-cluster` feature.
    #[arg(long, requires = "redis")]
    redis_cluster: bool,
    /// The most bytes the log in --data-dir may take; beyond, appends get 507.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 30)]
    max_log_bytes: u64,
    /// The most streams kept.
    #[arg(long, value_name = "STREAMS", default_value_t = 100_000)]
    max_streams: usize,
    /// The most bytes of stream data kept (in memory, also with --data-dir).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    max_bytes: usize,
    /// The largest request body, in bytes; larger ones get 413.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    max_body: usize,
    /// Only clients with a token in this file may use the streams: one line per token, `TOKEN
    /// read|write PREFIX[,PREFIX...]`, where a prefix starts the stream names (after
    /// /v1/stream) it grants (`/` for all) and `write` grants creating, appending, closing and
    /// deleting as well as reading; `#` starts a comment. A client sends its token as
    /// `Authorization: Bearer TOKEN` or as the cookie `push_token`. Without it, every stream
    /// is open to everyone. SIGHUP reads the file again
    #[arg(long, value_name = "FILE")]
    tokens: Option<std::path::PathBuf>,
    /// Compress answers for the clients that accept it, in these content codings, in the order
    /// of preference that settles ties (`gzip,deflate,zstd,br`): catch-up reads whole, live
    /// reads with every event flushed. Needs the crate's `compression-*` features. Default: no
    /// compression
    #[arg(long, value_name = "CODINGS", value_delimiter = ',')]
    compression: Vec<tower_push::compression::Coding>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(url) = args.redis.clone() {
        return on_redis(args, url);
    }
    let Some(dir) = args.data_dir.clone() else {
        let store = MemoryStore::builder()
            .max_streams(args.max_streams)
            .max_bytes(args.max_bytes)
            .build();
        return serve(args, store);
    };
    #[cfg(feature = "durable-file")]
    {
        let memory = MemoryStore::builder()
            .max_streams(args.max_streams)
            .max_bytes(args.max_bytes);
        let store = tower_push::durable::FileStore::builder()
            .memory(memory)
            .max_log_bytes(args.max_log_bytes)
            .open(&dir)
            .unwrap_or_else(|err| clap::Error::raw(ErrorKind::Io, format!("{err}\n")).exit());
        serve(args, store)
    }
    #[cfg(not(feature = "durable-file"))]
    {
        let message = format!(
            "--data-dir {} needs the durable-file feature: cargo run --example durable \
             --features durable-file,cli\n",
            dir.display()
        );
        clap::Error::raw(ErrorKind::InvalidValue, message).exit()
    }
}

/// Serves the streams of the Redis at `url`; exits (69) if it does not answer at start.
#[cfg(feature = "redis")]
fn on_redis(args: Args, url: String) -> Result<(), Box<dyn std::error::Error>> {
    use tower_push::durable::{RedisStore, RedisStoreBuilder};
    #[cfg(feature = "redis-cluster")]
    fn cluster(builder: RedisStoreBuilder) -> RedisStoreBuilder {
        builder.cluster()
    }
    #[cfg(not(feature = "redis-cluster"))]
    fn cluster(_: RedisStoreBuilder) -> RedisStoreBuilder {
        let message = "--redis-cluster needs the redis-cluster feature: cargo run --example \
                       durable --features durable,redis-cluster,cli\n";
        clap::Error::raw(ErrorKind::InvalidValue, message).exit()
    }
    let builder = RedisStore::builder(&url).key_prefix(&args.redis_prefix);
    let builder = match args.redis_cluster {
        true => cluster(builder),
        false => builder,
    };
    let store = builder
        .build()
        .unwrap_or_else(|err| clap::Error::raw(ErrorKind::InvalidValue, format!("{err}\n")).exit());
    let started = store.clone();
    let ready = async move {
        if let Err(err) = started.ping().await {
            eprintln!("error: redis at {url}: {err}");
            std::process::exit(69);
        }
    };
    serve_with(args, store, ready)
}

#[cfg(not(feature = "redis"))]
fn on_redis(_: Args, url: String) -> Result<(), Box<dyn std::error::Error>> {
    let message = format!(
        "--redis {url} needs the redis feature: cargo run --example durable --features \
         durable,redis,cli\n"
    );
    clap::Error::raw(ErrorKind::InvalidValue, message).exit()
}

fn serve<St: Store>(args: Args, store: St) -> Result<(), Box<dyn std::error::Error>> {
    serve_with(args, store, async {})
}

/// Serves `store`, after `ready` (a check of what the store needs) on the program's runtime.
fn serve_with<St: Store>(
    args: Args,
    store: St,
    ready: impl std::future::Future<Output = ()> + 'static,
) -> Result<(), Box<dyn std::error::Error>> {
    // Before the layers are built, so that their caps are recorded.
    #[cfg(feature = "metrics")]
    let prometheus = metrics::install()?;
    let shutdown = Shutdown::new();
    let max_held = args.serve.max_held();
    let mut builder = DurableStreams::builder(store);
    let mut hangups = None;
    if let Some(path) = &args.tokens {
        let tokens = Tokens::load(path)
            .unwrap_or_else(|err| clap::Error::raw(ErrorKind::InvalidValue, err + "\n").exit());
        let tokens = std::sync::Arc::new(std::sync::RwLock::new(tokens));
        hangups = Some(reload_on_hangup(path.clone(), tokens.clone()));
        builder = builder.authorize(move |request: &Parts, stream: Option<&str>, access| {
            let tokens = tokens
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Check::ready(tokens.verdict(request, stream.unwrap_or_default(), access))
        });
    }
    if !args.compression.is_empty() {
        let compression = Compression::new().codings(args.compression.iter().copied());
        builder = builder.compression(compression);
    }
    let service = builder
        .prefix("/v1/stream")
        .max_body_bytes(args.max_body)
        .long_poll(
            LongPollLayer::builder()
                .hold_timeout(Duration::from_millis(args.hold_ms))
                .max_held(max_held)
                .shutdown(shutdown.clone()),
        )
        .sse(
            ChunkedStreamLayer::builder()
                .max_lifetime(Duration::from_secs(60))
                .lifetime_jitter(0.1)
                .max_held(max_held)
                .shutdown(shutdown.clone()),
        )
        .build()?;
    #[cfg(feature = "metrics")]
    let service = metrics::beside(service, prometheus);

    println!("Durable Streams under /v1/stream/");
    // Ctrl-C or SIGTERM: held reads answer and SSE streams end, then connections close.
    let background = async move {
        ready.await;
        match hangups {
            Some(hangups) => hangups.await,
            None => std::future::pending().await,
        }
    };
    let server = Server::new().shutdown(shutdown);
    args.serve.run(args.threads, server, service, background);
    Ok(())
}

/// Reads the tokens file again on every SIGHUP, for as long as it runs (on the program's
/// runtime); a file that does not read keeps the tokens as they were. Live reads whose token
/// went check again within a minute and end.
async fn reload_on_hangup(
    path: std::path::PathBuf,
    tokens: std::sync::Arc<std::sync::RwLock<Tokens>>,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            eprintln!("cannot listen for SIGHUP: the tokens file is read once");
            return std::future::pending().await;
        };
        while hangups.recv().await.is_some() {
            match Tokens::load(&path) {
                Ok(read) => {
                    eprintln!("tokens file read again: {} tokens", read.0.len());
                    *tokens
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = read;
                }
                Err(err) => eprintln!("{err}; the tokens stay as they were"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, tokens);
    std::future::pending().await
}

/// The tokens of `--tokens FILE`: what each may do, on which streams.
struct Tokens(HashMap<String, Grant>);

struct Grant {
    write: bool,
    prefixes: Vec<String>,
}

impl Tokens {
    fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read the tokens file {}: {err}", path.display()))?;
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let problem = |what: &str| format!("{}: line {}: {what}", path.display(), i + 1);
            let words: Vec<&str> = line.split_whitespace().collect();
            let [token, access, prefixes] = words[..] else {
                return Err(problem("write TOKEN read|write PREFIX[,PREFIX...]"));
            };
            let write = match access {
                "read" => false,
                "write" => true,
                _ => return Err(problem("the access is read or write")),
            };
            let prefixes = prefixes.split(',').map(str::to_owned).collect();
            if tokens
                .insert(token.to_owned(), Grant { write, prefixes })
                .is_some()
            {
                return Err(problem("this token is listed twice"));
            }
        }
        Ok(Self(tokens))
    }

    /// Whether `request` may do `access` on `stream`: its token (`Authorization: Bearer`, or
    /// the cookie `push_token`) must grant a prefix of the stream's name, and `write` for
    /// anything but reading.
    fn verdict(&self, request: &Parts, stream: &str, access: Access) -> Verdict {
        let bearer = request
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        let cookie = || {
            let cookies = request.headers.get_all(http::header::COOKIE).iter();
            cookies
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(';'))
                .find_map(|cookie| cookie.trim().strip_prefix("push_token="))
        };
        let Some(grant) = bearer.or_else(cookie).and_then(|t| self.0.get(t)) else {
            return Verdict::Unauthenticated;
        };
        let covered = grant
            .prefixes
            .iter()
            .any(|prefix| stream.starts_with(prefix));
        if covered && (grant.write || access == Access::Read) {
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    }
}

/// `GET /metrics` beside the streams, with the `metrics` feature.
#[cfg(feature = "metrics")]
mod metrics {
    use std::convert::Infallible;

    use http::{header, HeaderValue, Request, Response};
    use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
    use tower::Service;
    use tower_push::durable::{DurableStreams, ResponseFuture, Store};
    use tower_push::{server, PushBody};

    /// Installs a Prometheus recorder whose histograms have the crate's buckets (not the
    /// exporter's default summaries, which cannot be added up across instances).
    pub(crate) fn install() -> Result<PrometheusHandle, BuildError> {
        let mut builder = PrometheusBuilder::new();
        for name in tower_push::metrics::HISTOGRAMS {
            let matcher = Matcher::Full((*name).to_owned());
            builder = builder.set_buckets_for_metric(matcher, tower_push::metrics::BUCKETS)?;
        }
        let handle = builder.install_recorder()?;
        tower_push::metrics::describe();
        Ok(handle)
    }

    /// `streams`, and `GET /metrics` answered from `prometheus`.
    pub(crate) fn beside<St: Store>(
        mut streams: DurableStreams<St>,
        prometheus: PrometheusHandle,
    ) -> impl Service<
        Request<server::Body>,
        Response = Response<PushBody>,
        Error = Infallible,
        Future = ResponseFuture,
    > + Clone {
        tower::service_fn(move |req: Request<server::Body>| -> ResponseFuture {
            if req.uri().path() != "/metrics" {
                return streams.call(req);
            }
            let mut response = Response::new(PushBody::full(prometheus.render()));
            let text = HeaderValue::from_static("text/plain; version=0.0.4");
            response.headers_mut().insert(header::CONTENT_TYPE, text);
            Box::pin(std::future::ready(Ok(response)))
        })
    }
}
