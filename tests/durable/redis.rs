//! The Redis store, served by the durable example (`--redis URL`) as a user runs it, several
//! processes on one `redis-server`, each started by the test on a free loopback port: the
//! official suite and client through an nginx that sends consecutive requests to alternate
//! processes, live reads across processes, `kill -9` of a process and of Redis, and a stopped
//! or emptied Redis.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::common::external::{program_listening, Process};
use super::common::nginx::Nginx;
use super::common::redis_server::Redis;
#[cfg(feature = "redis-cluster")]
use super::common::redis_server::RedisCluster;
use super::common::RawResponse;
use super::{
    client_follows_and_resumes, conformance_suite, crash_cycles, durable_example, get, kill_9,
    offset, post, put, runtime, send, Client, Crash,
};
use http::Method;
use tower_push::durable::{RedisStore, RedisStoreBuilder};

/// The durable example on the Redis at `url`, with `args` (a long-poll hold of 1 s unless they
/// say otherwise), listening on a free port.
async fn example_on(binary: &Path, url: &str, args: &[&str]) -> (Process, SocketAddr) {
    program_listening(|addr| {
        let mut command = Command::new(binary);
        command.args(["--addr", addr, "--redis", url]).args(args);
        if !args.contains(&"--hold-ms") {
            command.args(["--hold-ms", "1000"]);
        }
        command
    })
    .await
}

/// Two durable examples on one Redis behind an nginx that sends each request to the next of
/// them in turn.
struct Pair<R = Redis> {
    redis: R,
    a: (Process, SocketAddr),
    b: (Process, SocketAddr),
    nginx: Nginx,
}

impl Pair {
    async fn start(persistent: bool, args: &[&str]) -> Self {
        let redis = Redis::start(persistent).await;
        let url = redis.url();
        Pair::on(redis, &url, args).await
    }
}

impl<R> Pair<R> {
    /// Two examples on the Redis (`redis`) at `url`, with `args`, behind nginx.
    async fn on(redis: R, url: &str, args: &[&str]) -> Self {
        let binary = durable_example();
        let a = example_on(&binary, url, args).await;
        let b = example_on(&binary, url, args).await;
        let read_timeout = Duration::from_secs(60);
        let nginx = Nginx::start_with(&[a.1, b.1], false, read_timeout).await;
        Self { redis, a, b, nginx }
    }

    /// Checks that nginx sent the requests so far (at least `least`) to both processes, about
    /// half each.
    fn assert_alternated(&self, least: usize) {
        let used = self.nginx.upstreams_used();
        let to_a = used.iter().filter(|u| **u == self.a.1.to_string()).count();
        let to_b = used.iter().filter(|u| **u == self.b.1.to_string()).count();
        println!("{to_a} requests to one process, {to_b} to the other");
        assert!(to_a + to_b >= least, "{used:?}");
        assert!(to_a.abs_diff(to_b) * 5 < to_a + to_b, "{to_a} and {to_b}");
    }
}

pub(crate) fn the_official_suite_passes_through_nginx_alternating_over_two_processes() {
    let runtime = runtime(false);
    let pair = runtime.block_on(Pair::start(false, &[]));
    conformance_suite(pair.nginx.addr);
    pair.assert_alternated(1000);
}

/// The same over a Redis Cluster of three nodes, the streams spread over them by hash slot.
#[cfg(feature = "redis-cluster")]
pub(crate) fn the_official_suite_passes_through_nginx_over_two_processes_on_a_redis_cluster() {
    let runtime = runtime(false);
    let pair = runtime.block_on(async {
        let cluster = RedisCluster::start(false).await;
        let url = cluster.url();
        Pair::on(cluster, &url, &["--redis-cluster"]).await
    });
    conformance_suite(pair.nginx.addr);
    pair.assert_alternated(1000);
    let spread = runtime.block_on(async {
        let mut sizes = Vec::new();
        for node in &pair.redis.nodes {
            let mut conn = node.conn().await;
            let size: usize = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
            sizes.push(size);
        }
        sizes
    });
    println!("keys on each node: {spread:?}");
    assert!(spread.iter().all(|&n| n > 0), "{spread:?}");
}

pub(crate) fn the_official_python_client_follows_live_through_nginx_over_two_processes() {
    let runtime = runtime(false);
    let pair = runtime.block_on(Pair::start(false, &[]));
    let addr = pair.nginx.addr;
    client_follows_and_resumes(&Client::python(), &runtime, addr, || addr);
    pair.assert_alternated(20);
}

/// Appends through one process, read live through the other with long polls and with SSE:
/// every append arrives once, in order; prints how long after its answer it arrived.
pub(crate) fn appends_through_one_process_are_read_live_through_the_other() {
    const APPENDS: u64 = 200;
    let runtime = runtime(false);
    runtime.block_on(async {
        let pair = Pair::start(false, &["--hold-ms", "20000"]).await;
        let (a, b) = (pair.a.1, pair.b.1);
        let path = "/v1/stream/across";
        assert_eq!(put(a, path, "application/json").await.status, 201);
        let long_poll = tokio::spawn(follow_long_poll(b, path, APPENDS));
        let sse = tokio::spawn(follow_sse(b, path, APPENDS));
        // Both readers are parked on B before the first append.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut acknowledged = Vec::new();
        for n in 0..APPENDS {
            let reply = post(a, path, "application/json", &format!("{{\"n\":{n}}}")).await;
            assert_eq!(reply.status, 204);
            acknowledged.push(Instant::now());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for (mode, reader) in [("long-poll", long_poll), ("sse", sse)] {
            let arrived = reader.await.unwrap();
            let mut delays: Vec<Duration> = arrived
                .iter()
                .zip(&acknowledged)
                .map(|(arrived, acked)| arrived.saturating_duration_since(*acked))
                .collect();
            delays.sort();
            let at = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize];
            println!(
                "{mode}: append answered by one process to read through the other: p50 {:?}, \
                 p99 {:?}, max {:?} over {APPENDS}",
                at(0.5),
                at(0.99),
                at(1.0)
            );
        }
    });
}

/// Follows `path` on `addr` with long polls from the start until `count` values arrived,
/// checking that they are `{"n":0}`, `{"n":1}`, ... once each; when each arrived.
async fn follow_long_poll(addr: SocketAddr, path: &str, count: u64) -> Vec<Instant> {
    let mut arrived = Vec::new();
    let mut at = "-1".to_owned();
    while (arrived.len() as u64) < count {
        let reply = get(addr, &format!("{path}?offset={at}&live=long-poll")).await;
        let now = Instant::now();
        if reply.status == 200 {
            for value in reply.json().as_array().unwrap() {
                assert_eq!(value["n"], arrived.len() as u64, "long-poll");
                arrived.push(now);
            }
        } else {
            assert_eq!(reply.status, 204);
        }
        at = reply.header("stream-next-offset").unwrap().to_owned();
    }
    arrived
}

/// Like [`follow_long_poll`], with one SSE read.
async fn follow_sse(addr: SocketAddr, path: &str, count: u64) -> Vec<Instant> {
    let mut stream = RawResponse::get(
        addr,
        &format!("{path}?offset=-1&live=sse"),
        &[("accept", "text/event-stream")],
    )
    .await;
    assert_eq!(stream.status, 200);
    let mut arrived = Vec::new();
    while (arrived.len() as u64) < count {
        let message = stream.message(b"\n\n").await.expect("an SSE event");
        let now = Instant::now();
        if !message.starts_with("event: data") {
            continue;
        }
        let data: String = message
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(str::trim_start)
            .collect();
        let values: serde_json::Value = serde_json::from_str(&data).unwrap();
        for value in values.as_array().unwrap() {
            assert_eq!(value["n"], arrived.len() as u64, "sse");
            arrived.push(now);
        }
    }
    arrived
}

/// A durable example on a Redis that keeps every acknowledged write (`appendfsync always`),
/// killed and replaced by a new process each cycle.
struct ProcessOnRedis {
    binary: std::path::PathBuf,
    redis: Redis,
    process: Option<Process>,
}

impl Crash for ProcessOnRedis {
    async fn start(&mut self) -> SocketAddr {
        let (process, addr) = example_on(&self.binary, &self.redis.url(), &[]).await;
        self.process = Some(process);
        addr
    }

    fn kill(&mut self) {
        kill_9(self.process.take().expect("a running example"));
    }
}

pub(crate) fn kill_9_of_a_process_loses_no_acknowledged_append() {
    let redis = runtime(false).block_on(Redis::start(true));
    let mut crash = ProcessOnRedis {
        binary: durable_example(),
        redis,
        process: None,
    };
    crash_cycles(&mut crash, 10);
}

/// A durable example on a Redis with `appendfsync always`, whose `redis-server` is killed and
/// started again on its directory each cycle, while the example goes on.
struct RedisKilled {
    binary: std::path::PathBuf,
    redis: Redis,
    running: bool,
    example: Option<(Process, SocketAddr)>,
}

impl Crash for RedisKilled {
    async fn start(&mut self) -> SocketAddr {
        if !self.running {
            self.redis.spawn().await;
            self.running = true;
        }
        let (_, addr) = match &self.example {
            Some(example) => example,
            None => {
                let started = example_on(&self.binary, &self.redis.url(), &[]).await;
                self.example.insert(started)
            }
        };
        let addr = *addr;
        // The example reconnects by itself: its first requests may still find Redis away.
        let deadline = Instant::now() + Duration::from_secs(10);
        while get(addr, "/v1/stream/crash-0").await.status == 503 {
            assert!(Instant::now() < deadline, "the example did not reconnect");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        addr
    }

    fn kill(&mut self) {
        self.redis.kill();
        self.running = false;
    }
}

/// A durable example on a Redis Cluster of three nodes with `appendfsync always`: each cycle
/// kills (`kill -9`) the example and one node, and starts them again (the node on its
/// directory, where its cluster configuration and its data are).
#[cfg(feature = "redis-cluster")]
struct ClusterNodeKilled {
    binary: std::path::PathBuf,
    cluster: RedisCluster,
    node_down: bool,
    example: Option<Process>,
}

#[cfg(feature = "redis-cluster")]
impl Crash for ClusterNodeKilled {
    async fn start(&mut self) -> SocketAddr {
        if self.node_down {
            self.cluster.restart(2).await;
            self.node_down = false;
        }
        let url = self.cluster.url();
        let (process, addr) = example_on(&self.binary, &url, &["--redis-cluster"]).await;
        self.example = Some(process);
        // Until the cluster knows the node is back, its slots may still answer 503.
        let deadline = Instant::now() + Duration::from_secs(30);
        for stream in 0..4 {
            let path = format!("/v1/stream/crash-{stream}");
            while matches!(get(addr, &path).await.status.as_u16(), 503) {
                assert!(Instant::now() < deadline, "{path} did not come back");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        addr
    }

    fn kill(&mut self) {
        kill_9(self.example.take().expect("a running example"));
        self.cluster.nodes[2].kill();
        self.node_down = true;
    }
}

#[cfg(feature = "redis-cluster")]
pub(crate) fn kill_9_of_a_cluster_node_and_a_process_loses_no_acknowledged_append() {
    let cluster = runtime(false).block_on(RedisCluster::start(true));
    let mut crash = ClusterNodeKilled {
        binary: durable_example(),
        cluster,
        node_down: false,
        example: None,
    };
    crash_cycles(&mut crash, 5);
}

pub(crate) fn kill_9_of_redis_with_appendfsync_always_loses_no_acknowledged_append() {
    let redis = runtime(false).block_on(Redis::start(true));
    let mut crash = RedisKilled {
        binary: durable_example(),
        redis,
        running: true,
        example: None,
    };
    crash_cycles(&mut crash, 10);
}

/// Redis stopped (`SIGSTOP`): an append answers `503` with `Retry-After` within the store's
/// timeout; a reader parked on the other process stays parked and gets the next append once
/// Redis goes on.
pub(crate) fn a_stopped_redis_answers_503_and_parked_readers_resume() {
    runtime(false).block_on(async {
        let pair = Pair::start(false, &["--hold-ms", "20000"]).await;
        let (a, b) = (pair.a.1, pair.b.1);
        let path = "/v1/stream/paused";
        assert_eq!(put(a, path, "text/plain").await.status, 201);
        let parked = tokio::spawn(async move {
            get(b, &format!("{path}?offset={}&live=long-poll", offset(0))).await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;

        pair.redis.pause();
        let asked = Instant::now();
        let refused = post(a, path, "text/plain", "while stopped").await;
        let waited = asked.elapsed();
        refused.assert_error(503, "store_unavailable");
        assert_eq!(refused.header("retry-after"), Some("1"));
        assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
        assert!(!parked.is_finished(), "the parked reader answered");
        pair.redis.resume();

        // The append answered 503 may or may not have been made; the next one surely is.
        let deadline = Instant::now() + Duration::from_secs(10);
        while post(a, path, "text/plain", "back").await.status != 204 {
            assert!(Instant::now() < deadline, "appends did not come back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let read = tokio::time::timeout(Duration::from_secs(5), parked)
            .await
            .expect("the parked reader resumed")
            .unwrap();
        assert_eq!(read.status, 200);
        // The first append reached Redis and ran once it went on, or it did not.
        let body = String::from_utf8(read.body.to_vec()).unwrap();
        assert!(
            ["back", "while stopped", "while stoppedback"].contains(&body.as_str()),
            "{body:?}"
        );
    });
}

/// Redis restarted without its data: a parked reader and every later read learn that the
/// stream is gone (`404`), never another stream's data; the processes reconnect by themselves.
pub(crate) fn a_redis_restarted_empty_answers_404_and_the_processes_reconnect() {
    runtime(false).block_on(async {
        let mut pair = Pair::start(false, &["--hold-ms", "20000"]).await;
        let (a, b) = (pair.a.1, pair.b.1);
        let path = "/v1/stream/forgotten";
        assert_eq!(put(a, path, "text/plain").await.status, 201);
        assert_eq!(post(a, path, "text/plain", "one").await.status, 204);
        let parked = tokio::spawn(async move {
            get(b, &format!("{path}?offset={}&live=long-poll", offset(1))).await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;

        pair.redis.restart().await;
        let woken = tokio::time::timeout(Duration::from_secs(10), parked)
            .await
            .expect("the parked reader was told")
            .unwrap();
        woken.assert_error(404, "stream_not_found");
        for addr in [a, b] {
            let deadline = Instant::now() + Duration::from_secs(10);
            let read = loop {
                let read = get(addr, &format!("{path}?offset=-1")).await;
                if read.status != 503 || Instant::now() > deadline {
                    break read;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            read.assert_error(404, "stream_not_found");
        }
        // A new stream at the path is a new incarnation: the old offset is not in it.
        assert_eq!(put(b, path, "text/plain").await.status, 201);
        let old = get(a, &format!("{path}?offset={}", offset(1))).await;
        assert_eq!(old.status, 400, "{:?}", old.body);
    });
}

/// Names that a careless key scheme would map to one key (braces, escapes, case), a long
/// one and a unicode one: each its own stream.
pub(crate) fn names_are_never_confused() {
    runtime(false).block_on(async {
        let redis = Redis::start(false).await;
        let (_process, addr) = example_on(&durable_example(), &redis.url(), &[]).await;
        let long = "n".repeat(1000);
        let names = [
            "a{b}",
            "a%257Bb%257D",
            "A{B}",
            "a}b{",
            "%25",
            "%2525",
            "caf%C3%A9",
            long.as_str(),
        ];
        for (i, name) in names.iter().enumerate() {
            let path = format!("/v1/stream/{name}");
            assert_eq!(put(addr, &path, "text/plain").await.status, 201, "{name}");
            assert_eq!(
                post(addr, &path, "text/plain", &i.to_string()).await.status,
                204
            );
        }
        for (i, name) in names.iter().enumerate() {
            let read = get(addr, &format!("/v1/stream/{name}?offset=-1")).await;
            assert_eq!(read.body, i.to_string(), "{name}");
        }
    });
}

/// A stream past its TTL leaves Redis: nothing of it stays behind.
pub(crate) fn a_stream_past_its_ttl_leaves_redis() {
    runtime(false).block_on(async {
        let redis = Redis::start(false).await;
        let (_process, addr) = example_on(&durable_example(), &redis.url(), &[]).await;
        let path = "/v1/stream/brief";
        let headers = [("content-type", "text/plain"), ("stream-ttl", "1")];
        assert_eq!(
            send(addr, Method::PUT, path, &headers, "").await.status,
            201
        );
        assert_eq!(post(addr, path, "text/plain", "data").await.status, 204);
        assert_eq!(
            keys(&redis).await.len(),
            2,
            "the stream's data and what is known about it"
        );
        // Expired after a second; Redis drops the keys a second later.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert_eq!(keys(&redis).await, Vec::<String>::new());
        let read = get(addr, &format!("{path}?offset=-1")).await;
        read.assert_error(404, "stream_not_found");
    });
}

/// The store's keys in `redis`.
async fn keys(redis: &Redis) -> Vec<String> {
    let mut conn = redis.conn().await;
    redis::cmd("KEYS")
        .arg("ds:*")
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Seeded random operations (creates, forks, appends with producers, `Stream-Seq` and closing,
/// reads with small budgets, deletes) on the Redis store and on the memory store: every answer
/// is the same, but for the epochs each store picks (matched one to one). 8 seeds;
/// `REDIS_STORE_SEEDS=N` runs N.
pub(crate) fn the_redis_store_answers_as_the_memory_store_does() {
    runtime(false).block_on(async {
        let redis = Redis::start(false).await;
        let url = redis.url();
        answers_as_the_memory_store(|prefix| RedisStore::builder(&url).key_prefix(prefix)).await;
    });
}

/// The same on a Redis Cluster of three nodes, where a fork and its source may be on two.
#[cfg(feature = "redis-cluster")]
pub(crate) fn on_a_redis_cluster_the_store_answers_as_the_memory_store_does() {
    runtime(false).block_on(async {
        let cluster = RedisCluster::start(false).await;
        let url = cluster.url();
        let store = |prefix: String| RedisStore::builder(&url).key_prefix(prefix).cluster();
        answers_as_the_memory_store(store).await;
    });
}

/// Runs the seeded operations on a Redis store that `store` builds for a key prefix.
async fn answers_as_the_memory_store(store: impl Fn(String) -> RedisStoreBuilder) {
    use tower_push::durable::{
        Append, Create, ForkFrom, Info, MemoryStore, Offset, Producer, Store,
    };
    const OPERATIONS: usize = 400;
    let seeds: u64 = std::env::var("REDIS_STORE_SEEDS").map_or(8, |n| n.parse().unwrap());

    /// A store's answer, its epochs replaced by the order in which this run first saw them.
    fn seen(epochs: &mut Vec<u64>, info: &Info) -> String {
        let class = match epochs.iter().position(|e| *e == info.epoch) {
            Some(at) => at,
            None => {
                epochs.push(info.epoch);
                epochs.len() - 1
            }
        };
        let mut info = info.clone();
        info.epoch = class as u64;
        format!("{info:?}")
    }

    {
        for seed in 0..seeds {
            let redis_store = store(format!("seed{seed}:")).build().unwrap();
            let memory = MemoryStore::new();
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move |n: u64| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % n
            };
            for op in 0..OPERATIONS {
                let path = format!("/{}{}", ["s", "f"][next(2) as usize], next(3));
                let json = next(2) == 0;
                let ct = if json {
                    "application/json"
                } else {
                    "text/plain"
                };
                let (a, b) = match next(10) {
                    0 | 1 => {
                        let mut create = Create::new((next(4) != 0).then(|| ct.to_owned()));
                        create.closed = next(8) == 0;
                        if next(3) == 0 {
                            let source = format!("/s{}", next(3));
                            let offset = (next(2) == 0).then(|| Offset::new(next(6)));
                            let mut fork = ForkFrom::new(source, offset);
                            fork.sub_offset = [0, 0, 1, 2][next(4) as usize];
                            create.fork = Some(fork);
                        }
                        if next(4) == 0 {
                            create.body = (if json { "[1,2]" } else { "hi" }).into();
                        }
                        if next(6) == 0 {
                            create.ttl = Some(1_000_000 + next(3));
                        }
                        let a = redis_store.create(&path, create.clone()).await;
                        let b = memory.create(&path, create).await;
                        (
                            a.map(|c| format!("{} {}", c.created, seen(&mut ours, &c.info))),
                            b.map(|c| format!("{} {}", c.created, seen(&mut theirs, &c.info))),
                        )
                    }
                    2..=5 => {
                        let body = match (json, next(6)) {
                            (_, 0) => String::new(),
                            (true, 1) => "[]".to_owned(),
                            (true, 2) => "{not json".to_owned(),
                            (true, 3) => format!("[{op},{{\"k\":\"v\\n\"}}]"),
                            (true, _) => format!("{{\"op\":{op}}}"),
                            (false, _) => format!("text {op}\n"),
                        };
                        let mut append = Append::new(ct, body);
                        append.close = next(10) == 0;
                        if next(2) == 0 {
                            let id = format!("p{}", next(2));
                            append.producer = Some(Producer::new(id, next(3), next(5)));
                        }
                        if next(4) == 0 {
                            append.stream_seq =
                                Some(["a", "b", "c", "ab"][next(4) as usize].into());
                        }
                        let a = redis_store.append(&path, append.clone()).await;
                        let b = memory.append(&path, append).await;
                        (a.map(|x| format!("{x:?}")), b.map(|x| format!("{x:?}")))
                    }
                    6..=8 => {
                        let after = (next(4) != 0).then(|| Offset::new(next(8)));
                        let (chunks, bytes) = (next(5) as usize, 1 + next(30) as usize);
                        let a = redis_store.read(&path, after, chunks, bytes).await;
                        let b = memory.read(&path, after, chunks, bytes).await;
                        let show = |epochs: &mut Vec<u64>, r: tower_push::durable::Read| {
                            format!("{} {:?} {:?}", seen(epochs, &r.info), r.from, r.chunks)
                        };
                        (
                            a.map(|r| show(&mut ours, r)),
                            b.map(|r| show(&mut theirs, r)),
                        )
                    }
                    _ => {
                        let a = redis_store.delete(&path).await;
                        let b = memory.delete(&path).await;
                        (a.map(|()| String::new()), b.map(|()| String::new()))
                    }
                };
                assert_eq!(a, b, "seed {seed}, operation {op} on {path}");
            }
        }
    }
}
