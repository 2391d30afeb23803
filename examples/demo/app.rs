//! The demo's routes: the page, long polling, streaming and publishing on the topics of the
//! embedded log (`default` unless a request names others). `main.rs` serves them; the browser,
//! metrics and multiplexing tests serve the same routes in-process.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use tower::ServiceExt;
use tower_push::authorize::{Access, Check, Verdict};
use tower_push::compression::{Coding, Compression};
use tower_push::format::{AutoFormat, Framing, SseFormat};
use tower_push::memory::Topic;
use tower_push::server;
use tower_push::source::{Outcome, Subscribe};
use tower_push::{
    BoxError, ChunkedStream, ChunkedStreamLayer, ConfigError, EventData, LongPoll, LongPollLayer,
    MemoryLog, Shutdown,
};

/// The page at `GET /`: a publish form and two live panes, one on `EventSource`, one on a
/// long-poll loop.
pub(crate) const PAGE: &str = include_str!("index.html");

/// The largest event a client may publish.
const MAX_EVENT_BYTES: usize = 64 * 1024;

/// The demo's settings: the command line's tuning flags, with their defaults (written once,
/// in the flags), and what the flags that name a file or a list give.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Settings {
    /// How long a poll without events is held before it answers 204, in milliseconds
    #[arg(long = "hold-ms", value_name = "MILLIS", value_parser = millis, default_value = "25000")]
    pub(crate) hold: Duration,
    /// How many events the log keeps per topic
    #[arg(long, value_name = "EVENTS", default_value_t = 1024)]
    pub(crate) retention: usize,
    /// How long a quiet stream waits before it sends a heartbeat, in milliseconds
    #[arg(long = "heartbeat-ms", value_name = "MILLIS", value_parser = millis, default_value = "15000")]
    pub(crate) heartbeat: Duration,
    /// How long a stream lives before it ends and the client resumes, in milliseconds
    #[arg(long = "max-stream-ms", value_name = "MILLIS", value_parser = millis, default_value = "300000")]
    pub(crate) max_stream: Duration,
    /// The `retry:` hint of SSE streams: how long EventSource waits before it reconnects, in
    /// milliseconds
    #[arg(long = "sse-retry-ms", value_name = "MILLIS", value_parser = millis, default_value = "1000")]
    pub(crate) sse_retry: Duration,
    /// The most polls held at once, and the most streams open at once (`--max-held`); beyond,
    /// `503 overloaded` with a `Retry-After`. Over HTTP/1.1 each keeps its connection, and so a
    /// file descriptor: by default each kind may take a quarter of the open-files limit (256
    /// each under the usual 1024, `server::held_cap`), and the other half is left for requests
    /// that answer at once, publishers and the listener, so that the server never runs out of
    /// descriptors.
    #[arg(skip = server::held_cap())]
    pub(crate) max_held: usize,
    /// Who may read and publish which topics (`--tokens`); `None`: everyone, everything.
    #[arg(skip)]
    pub(crate) tokens: Option<Tokens>,
    /// How answers are compressed for the clients that accept it (`--compression`); `None`:
    /// never.
    #[arg(skip = Some(Compression::new()))]
    pub(crate) compression: Option<Compression>,
}

impl Default for Settings {
    /// The settings of a command line without flags.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            settings: Settings,
        }
        <Defaults as clap::Parser>::parse_from(["demo"]).settings
    }
}

/// The demo's command line: where to listen, the [`Settings`] a user may change, and the two
/// flags that name a file or a list.
#[derive(clap::Args, Debug)]
pub(crate) struct Flags {
    #[command(flatten)]
    pub(crate) serve: server::Flags,
    #[command(flatten)]
    tuning: Settings,
    /// Only clients with a token in this file may read and publish: one line per token, `TOKEN
    /// TOPIC[,TOPIC...]` (`*` for every topic), `#` starts a comment. A client sends its token
    /// as `Authorization: Bearer TOKEN` or as the cookie `push_token` (the page sets it).
    /// SIGHUP reads the file again. Without it, everyone may read and publish everything
    #[arg(long, value_name = "FILE")]
    tokens: Option<std::path::PathBuf>,
    /// The content codings offered to clients that accept them, in the order of preference
    /// that settles ties (`gzip,deflate,zstd,br`), or `none`. Each event is flushed through the
    /// compressor, so it arrives as fast as uncompressed. A gzip stream keeps about 2 KiB more,
    /// zstd 34 KiB, br 320 KiB. Default: gzip and deflate, if this build has them (the crate's
    /// feature `compression-gzip`)
    #[arg(long, value_name = "CODINGS")]
    compression: Option<String>,
}

impl Flags {
    /// The settings the flags give; the tokens file is read.
    pub(crate) fn settings(&self) -> Result<Settings, String> {
        let mut settings = self.tuning.clone();
        settings.max_held = self.serve.max_held();
        if let Some(path) = &self.tokens {
            settings.tokens = Some(Tokens::load(path)?);
        }
        settings.compression = match self.compression.as_deref() {
            None => settings.compression,
            Some("none") => None,
            Some(list) => {
                let codings = list
                    .split(',')
                    .map(|name| name.trim().parse::<Coding>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|err| format!("--compression: {err}, or none"))?;
                Some(Compression::new().codings(codings))
            }
        };
        Ok(settings)
    }
}

/// The tokens of `--tokens FILE` and the topics each grants, shared by every route and read
/// again on `SIGHUP`.
#[derive(Clone)]
pub(crate) struct Tokens {
    path: std::path::PathBuf,
    grants: std::sync::Arc<std::sync::RwLock<Grants>>,
}

/// Each token's topics; `None` for a token that grants every topic (`*`).
type Grants = std::collections::HashMap<String, Option<std::collections::HashSet<String>>>;

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves.
        let count = self.grants.read().map_or(0, |grants| grants.len());
        f.debug_struct("Tokens")
            .field("path", &self.path)
            .field("tokens", &count)
            .finish()
    }
}

impl Tokens {
    /// Reads the tokens file at `path`.
    pub(crate) fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read the tokens file {}: {err}", path.display()))?;
        let tokens = Self::parse(&text).map_err(|err| format!("{}: {err}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            ..tokens
        })
    }

    /// Tokens from text: one line per token, as in the file (which [`reload`](Self::reload)
    /// cannot read again).
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        Ok(Self {
            path: std::path::PathBuf::new(),
            grants: std::sync::Arc::new(std::sync::RwLock::new(Self::grants(text)?)),
        })
    }

    fn read(path: &std::path::Path) -> Result<Grants, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read the tokens file {}: {err}", path.display()))?;
        Self::grants(&text).map_err(|err| format!("{}: {err}", path.display()))
    }

    fn grants(text: &str) -> Result<Grants, String> {
        let mut grants = Grants::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(token), Some(topics), None) = (words.next(), words.next(), words.next())
            else {
                return Err(format!("line {}: write TOKEN TOPIC[,TOPIC...]", i + 1));
            };
            let topics = (topics != "*").then(|| topics.split(',').map(str::to_owned).collect());
            if grants.insert(token.to_owned(), topics).is_some() {
                return Err(format!("line {}: this token is listed twice", i + 1));
            }
        }
        Ok(grants)
    }

    /// Reads the file again; on failure the tokens stay as they were.
    pub(crate) fn reload(&self) -> Result<usize, String> {
        let grants = Self::read(&self.path)?;
        let count = grants.len();
        *self
            .grants
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = grants;
        Ok(count)
    }

    /// The token of a request: `Authorization: Bearer TOKEN`, else the cookie `push_token`.
    fn token(request: &http::request::Parts) -> Option<&str> {
        let bearer = request
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        bearer.or_else(|| {
            let cookies = request.headers.get_all(header::COOKIE).iter();
            cookies
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(';'))
                .find_map(|cookie| cookie.trim().strip_prefix("push_token="))
        })
    }

    /// Whether `request` may read or publish `topic` (`None`: the route's own topic, `stats`
    /// on `/stats`, else `default`). The server's numbers on `/stats` are for any valid token.
    pub(crate) fn verdict(&self, request: &http::request::Parts, topic: Option<&str>) -> Verdict {
        let grants = self
            .grants
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(granted) = Self::token(request).and_then(|token| grants.get(token)) else {
            return Verdict::Unauthenticated;
        };
        let topic = match (topic, request.uri.path()) {
            (Some(topic), _) => topic,
            (None, "/stats") => return Verdict::Allow,
            (None, _) => "default",
        };
        match granted {
            Some(topics) if !topics.contains(topic) => Verdict::Deny,
            _ => Verdict::Allow,
        }
    }

    /// The check for the layers' `authorize`.
    fn check(&self) -> impl Fn(&http::request::Parts, Option<&str>, Access) -> Check + Send + Sync {
        let tokens = self.clone();
        move |request, topic, _| Check::ready(tokens.verdict(request, topic))
    }
}

/// A flag's value in milliseconds.
fn millis(value: &str) -> Result<Duration, String> {
    value
        .parse()
        .map(Duration::from_millis)
        .map_err(|err| format!("{err}: a whole number of milliseconds"))
}

/// Exits as `clap` does for a bad command line, for a problem found after parsing (a setting
/// the layers refuse, an address that cannot be bound): the message and the usage on stderr,
/// status 2.
pub(crate) fn exit_usage<P: clap::CommandFactory>(problem: impl std::fmt::Display) -> ! {
    P::command()
        .error(clap::error::ErrorKind::ValueValidation, problem)
        .exit()
}

/// The body of every demo answer.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The most topics clients may create by publishing.
const MAX_TOPICS: usize = 256;

/// The demo's routes over one log: the `default` topic, and any topics a request names.
#[derive(Clone, Debug)]
pub(crate) struct Demo {
    log: MemoryLog,
    topic: Topic,
    poll: LongPoll<Topic>,
    stream: ChunkedStream<Topic>,
    /// The same layers over the whole log, for requests that name their topics
    /// (`?topics=a,b`): one request, several topics, one composite cursor.
    many_poll: LongPoll<MemoryLog>,
    many_stream: ChunkedStream<MemoryLog>,
    /// The `stats` topic: one snapshot of the server's numbers a second, for the page's panel.
    stats: Topic,
    stats_stream: ChunkedStream<Topic>,
    /// Who may publish where, with `--tokens`.
    tokens: Option<Tokens>,
}

impl Demo {
    /// Builds the log and both layers from `settings`; `shutdown` drains them.
    pub(crate) fn new(settings: &Settings, shutdown: &Shutdown) -> Result<Self, ConfigError> {
        let log = MemoryLog::builder()
            .retention(settings.retention)
            .max_topics(MAX_TOPICS)
            .build()?;
        let (poll, stream) = layers(settings, shutdown)?;
        let mut demo = Self::with(log, &poll, &stream);
        demo.tokens = settings.tokens.clone();
        Ok(demo)
    }

    /// The routes over `log`, with both layers as they are.
    pub(crate) fn with(log: MemoryLog, poll: &LongPollLayer, stream: &ChunkedStreamLayer) -> Self {
        let topic = log.topic("default");
        // The page's third pane follows `default` and `news`; subscribing creates no topic.
        log.topic("news");
        let stats = log.topic("stats");
        Self {
            many_poll: poll.layer(log.clone()),
            many_stream: stream.layer(log.clone()),
            poll: poll.layer(topic.clone()),
            stats_stream: stream.layer(stats.clone()),
            stream: stream.layer(topic.clone()),
            topic,
            stats,
            log,
            tokens: None,
        }
    }

    /// Publishes a snapshot of the server's numbers on the `stats` topic every `every`, for as
    /// long as the returned task runs: held polls, open streams, events published per second,
    /// and (with the `metrics` feature) the p99 from publish to client over the last minute.
    pub(crate) fn spawn_stats(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let demo = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut last = demo.topic.head().seq();
            // The p99 is over the last minute, as `histogram_quantile(0.99, rate(...[1m]))`
            // would be: the histogram now against the one a minute ago (at first, against
            // nothing: since the start).
            let minute = (60.0 / every.as_secs_f64()).ceil() as usize;
            let mut latencies = std::collections::VecDeque::from([Vec::new()]);
            loop {
                ticks.tick().await;
                let head = demo.topic.head().seq();
                let per_second = (head - last) as f64 / every.as_secs_f64();
                last = head;
                let latency = metrics::publish_to_write_buckets();
                let p99_ms = metrics::p99_ms(&latencies[0], &latency);
                latencies.push_back(latency);
                if latencies.len() > minute {
                    latencies.pop_front();
                }
                let snapshot = serde_json::json!({
                    "parked_polls": demo.poll.held(),
                    "open_streams": demo.stream.held(),
                    "events_per_second": per_second,
                    "p99_ms": p99_ms,
                });
                let data = EventData::from_serialize(&snapshot).expect("a JSON object");
                demo.stats.publish(data);
            }
        })
    }

    /// The topic the routes serve.
    pub(crate) fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Answers one request.
    ///
    /// The route is chosen here, before the answer's future is made, so that the future holds
    /// only what its route needs: hyper keeps it for as long as the request lasts, which for a
    /// held poll or an open stream is minutes. One `async fn` over every route would be as large
    /// as its largest route plus the whole `Demo` in every held poll (4.4 KB where the poll
    /// needs a tenth of that; the bench's `--only stacks` measures it).
    pub(crate) fn handle(&self, req: Request<server::Body>) -> Answer {
        match req.uri().path() {
            "/stats" => return answer(self.stats_stream.clone().oneshot(req)),
            "/metrics" => return Box::pin(std::future::ready(metrics::scrape())),
            _ => {}
        }
        // `POST /publish?topic=NAME` publishes on that topic, created if needed.
        let name = match req.uri().path() {
            "/publish" => query_param(req.uri(), "topic").map(str::to_owned),
            _ => None,
        };
        let verdict = match &self.tokens {
            Some(tokens) if req.uri().path() == "/publish" => {
                let (parts, body) = req.into_parts();
                let verdict = tokens.verdict(&parts, Some(name.as_deref().unwrap_or("default")));
                (Request::from_parts(parts, body), verdict)
            }
            _ => (req, Verdict::Allow),
        };
        let (req, verdict) = verdict;
        let target = match verdict {
            Verdict::Allow => match &name {
                Some(name) => self.publish_topic(name),
                None => Ok(self.topic.clone()),
            },
            // Publishing creates a topic: a refusal saying there is no such topic would be
            // untrue, and this one tells nothing of which topics exist.
            Verdict::Deny => Err((
                StatusCode::FORBIDDEN,
                "forbidden",
                "this token may not publish on this topic".to_owned(),
            )),
            _ => Err((
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "send a token: Authorization: Bearer TOKEN, or the cookie push_token".to_owned(),
            )),
        };
        let publish = move |body| {
            std::future::ready(match target {
                Ok(topic) => publish_to(&topic, body),
                Err((status, code, message)) => {
                    let mut refused = error(status, code, &message);
                    if status == StatusCode::UNAUTHORIZED {
                        let bearer = HeaderValue::from_static("Bearer");
                        refused
                            .headers_mut()
                            .insert(header::WWW_AUTHENTICATE, bearer);
                    }
                    refused
                }
            })
        };
        if query_param(req.uri(), "topics").is_some() {
            route(req, &self.many_poll, &self.many_stream, publish)
        } else {
            route(req, &self.poll, &self.stream, publish)
        }
    }

    /// The topic `name` to publish on: created if it does not exist yet, within [`MAX_TOPICS`].
    /// On refusal, the status, code and message of the answer.
    fn publish_topic(&self, name: &str) -> Result<Topic, (StatusCode, &'static str, String)> {
        let allowed =
            |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'~');
        if name.is_empty() || name.len() > 128 || !name.bytes().all(allowed) {
            let message = "a topic is 1 to 128 ASCII letters, digits or -_.:~";
            return Err((StatusCode::BAD_REQUEST, "invalid_topic", message.to_owned()));
        }
        let full = |err: tower_push::memory::TooManyTopics| {
            let status = StatusCode::SERVICE_UNAVAILABLE;
            (status, "topics_full", err.to_string())
        };
        self.log.try_topic(name).map_err(full)
    }
}

/// The routes as a tower service, which the server clones for each connection.
impl tower::Service<Request<server::Body>> for Demo {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future =
        futures_util::future::Map<Answer, fn(Response<Body>) -> Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<server::Body>) -> Self::Future {
        use futures_util::FutureExt as _;
        self.handle(req).map(Ok)
    }
}

/// The raw value of the query parameter `name`, if the request has one.
fn query_param<'a>(uri: &'a http::Uri, name: &str) -> Option<&'a str> {
    // By bytes: every poll goes through here, and `str::split` sets up a searcher per call.
    let mut rest = uri.query()?;
    loop {
        let end = rest.bytes().position(|b| b == b'&').unwrap_or(rest.len());
        let pair = &rest[..end];
        if let Some(value) = pair.strip_prefix(name) {
            match value.as_bytes().first() {
                None => return Some(""),
                // `=` and `&` are ASCII: the cuts are on character boundaries.
                Some(b'=') => return Some(&value[1..]),
                Some(_) => {}
            }
        }
        rest = rest.get(end + 1..)?;
    }
}

/// The demo's metrics: a Prometheus recorder installed once per process, with the `metrics`
/// feature; without it, `/metrics` says how to get them.
pub(crate) mod metrics {
    use super::Body;
    use http::Response;

    #[cfg(feature = "metrics")]
    fn handle() -> &'static metrics_exporter_prometheus::PrometheusHandle {
        use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
        static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
            std::sync::OnceLock::new();
        HANDLE.get_or_init(|| {
            // Histograms with the crate's buckets rather than the exporter's default summaries:
            // buckets add up across instances, and `histogram_quantile` alerts need them.
            let mut builder = PrometheusBuilder::new();
            for name in tower_push::metrics::HISTOGRAMS {
                let matcher = Matcher::Full((*name).to_owned());
                builder = builder
                    .set_buckets_for_metric(matcher, tower_push::metrics::BUCKETS)
                    .expect("the crate's buckets are not empty");
            }
            let handle = builder
                .install_recorder()
                .expect("no other metrics recorder in this process");
            tower_push::metrics::describe();
            handle
        })
    }

    /// Installs the recorder (at start, so that nothing recorded before it is lost).
    pub(crate) fn install() {
        #[cfg(feature = "metrics")]
        handle();
    }

    /// `GET /metrics`: every metric in Prometheus's text format.
    pub(crate) fn scrape() -> Response<Body> {
        #[cfg(feature = "metrics")]
        {
            use http_body_util::BodyExt;
            let text = handle().render();
            let mut response = Response::new(http_body_util::Full::from(text).boxed_unsync());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        #[cfg(not(feature = "metrics"))]
        {
            let message =
                "built without the `metrics` feature: cargo run --example demo --features cli,metrics,compression-full";
            super::error(http::StatusCode::NOT_FOUND, "metrics_off", message)
        }
    }

    /// The publish-to-write histogram as it stands: each bucket's upper bound with its
    /// cumulative count, summed over both layers (`sum by (le)`), ascending, `+Inf` last.
    /// Empty without the feature or before any event was delivered.
    pub(crate) fn publish_to_write_buckets() -> Vec<(f64, f64)> {
        #[cfg(feature = "metrics")]
        {
            let prefix = format!("{}_bucket{{", tower_push::metrics::PUBLISH_TO_WRITE);
            let mut buckets: Vec<(f64, f64)> = Vec::new();
            for line in handle().render().lines() {
                let Some(labels) = line.strip_prefix(&prefix) else {
                    continue;
                };
                let Some((_, le)) = labels.split_once(r#"le=""#) else {
                    continue;
                };
                let le = le.split('"').next().unwrap_or_default();
                let bound = match le {
                    "+Inf" => Ok(f64::INFINITY),
                    bound => bound.parse::<f64>(),
                };
                let count = line.rsplit(' ').next().unwrap_or_default().parse::<f64>();
                let (Ok(bound), Ok(count)) = (bound, count) else {
                    continue;
                };
                match buckets.iter_mut().find(|(le, _)| *le == bound) {
                    Some((_, sum)) => *sum += count,
                    None => buckets.push((bound, count)),
                }
            }
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            buckets
        }
        #[cfg(not(feature = "metrics"))]
        Vec::new()
    }

    /// The p99 in milliseconds of what the histogram recorded between two of its states (an
    /// empty `earlier`: since the start), computed as Prometheus's `histogram_quantile(0.99,
    /// ...)` does over an increase: the bucket the 99th percentile falls in, interpolated
    /// linearly within it (from 0 in the first), and the largest finite bound when it falls
    /// in `+Inf`. `None` when nothing was recorded in between.
    pub(crate) fn p99_ms(earlier: &[(f64, f64)], now: &[(f64, f64)]) -> Option<f64> {
        let count_at = |le: f64| {
            let before = earlier.iter().find(|(bound, _)| *bound == le);
            now.iter()
                .find(|(bound, _)| *bound == le)
                .map_or(0.0, |(_, n)| *n)
                - before.map_or(0.0, |(_, n)| *n)
        };
        let buckets: Vec<(f64, f64)> = now.iter().map(|(le, _)| (*le, count_at(*le))).collect();
        let &(last, total) = buckets.last()?;
        if last != f64::INFINITY || total <= 0.0 {
            return None;
        }
        let rank = 0.99 * total;
        let index = buckets.iter().position(|(_, count)| *count >= rank)?;
        if index == buckets.len() - 1 {
            return buckets.len().checked_sub(2).map(|i| buckets[i].0 * 1000.0);
        }
        let (start, below) = match index {
            0 => (0.0, 0.0),
            i => buckets[i - 1],
        };
        let (end, count) = buckets[index];
        let seconds = start + (end - start) * (rank - below) / (count - below);
        Some(seconds * 1000.0)
    }
}

/// Both layers with the demo's settings, drained by `shutdown`.
pub(crate) fn layers(
    settings: &Settings,
    shutdown: &Shutdown,
) -> Result<(LongPollLayer, ChunkedStreamLayer), ConfigError> {
    let mut poll = LongPollLayer::builder()
        .hold_timeout(settings.hold)
        .max_held(settings.max_held)
        .shutdown(shutdown.clone());
    let sse = SseFormat::new().retry(settings.sse_retry);
    let mut stream = ChunkedStreamLayer::builder()
        .heartbeat_interval(settings.heartbeat)
        .max_lifetime(settings.max_stream)
        .max_held(settings.max_held)
        .format(AutoFormat::new(Framing::Ndjson).sse(sse))
        .shutdown(shutdown.clone());
    if let Some(compression) = &settings.compression {
        poll = poll.compression(compression.clone());
        stream = stream.compression(compression.clone());
    }
    if let Some(tokens) = &settings.tokens {
        // Checked when a request comes, and every 60 s while it is held (a stream lives up to
        // five minutes): a token taken out of the file ends its streams within a minute.
        poll = poll.authorize(tokens.check());
        stream = stream.authorize(tokens.check());
    }
    Ok((poll.build()?, stream.build()?))
}

/// The future of one demo answer.
pub(crate) type Answer =
    std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>;

/// A layer's answer (the layers never fail) as a demo answer.
fn answer<F, L>(layer_answer: F) -> Answer
where
    F: std::future::Future<Output = Result<Response<L>, Infallible>> + Send + 'static,
    L: http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    use futures_util::FutureExt as _;
    Box::pin(layer_answer.map(|response| match response {
        Ok(response) => response.map(|body| body.boxed_unsync()),
        Err(never) => match never {},
    }))
}

/// The demo's routes over any event source: the page, `/poll`, `/stream`, and `/publish`, which
/// reads the body and hands it to `publish`. Like [`Demo::handle`], it routes before it makes
/// the answer's future.
fn route<S, P, F>(
    req: Request<server::Body>,
    poll: &LongPoll<S>,
    stream: &ChunkedStream<S>,
    publish: P,
) -> Answer
where
    S: tower::Service<Subscribe, Response = Outcome> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    P: FnOnce(Bytes) -> F + Send + 'static,
    F: std::future::Future<Output = Response<Body>> + Send,
{
    let ready = |response| -> Answer { Box::pin(std::future::ready(response)) };
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/") => ready(page()),
        // Any method: the layers answer GET and HEAD, and 405 with `Allow` otherwise.
        (_, "/poll") => answer(poll.clone().oneshot(req)),
        (_, "/stream") => answer(stream.clone().oneshot(req)),
        (&Method::POST, "/publish") => Box::pin(async move {
            match read_event(req).await {
                Ok(body) => publish(body).await,
                Err(refused) => refused,
            }
        }),
        (_, "/") => ready(not_allowed("GET, HEAD", "use GET /")),
        (_, "/publish") => ready(not_allowed("POST", "use POST /publish")),
        _ => ready(error(StatusCode::NOT_FOUND, "not_found", "no such route")),
    }
}

/// `405 method_not_allowed` with the `Allow` header the status requires.
fn not_allowed(allow: &'static str, message: &str) -> Response<Body> {
    let mut refused = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
    );
    let allow = HeaderValue::from_static(allow);
    refused.headers_mut().insert(header::ALLOW, allow);
    refused
}

/// Reads the body of a publish request, at most [`MAX_EVENT_BYTES`]; the error is the answer.
async fn read_event(req: Request<server::Body>) -> Result<Bytes, Response<Body>> {
    let body = req.into_body().collect_at_most(MAX_EVENT_BYTES).await;
    body.map_err(|err| error(err.status(), err.code(), &err.to_string()))
}

/// Publishes one event's JSON data on `topic`: `{"id":"<cursor>"}`, or `400 invalid_json`.
pub(crate) fn publish_to(topic: &Topic, body: Bytes) -> Response<Body> {
    match EventData::from_json(body) {
        Ok(data) => json(
            StatusCode::OK,
            format!(r#"{{"id":"{}"}}"#, topic.publish(data)),
        ),
        Err(err) => error(StatusCode::BAD_REQUEST, "invalid_json", &err.to_string()),
    }
}

fn page() -> Response<Body> {
    let mut response = Response::new(Full::from(PAGE).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::from(body).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A JSON error answer: `{"error":"<code>","message":"<message>"}`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": code, "message": message });
    json(status, body.to_string())
}
