//! `redis-server` as a child process, started for each test on a free loopback port.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::external::{free_port, Process, Program};
use super::SECOND;

pub const REDIS_SERVER: Program = Program::new("redis-server", "redis-server");
/// What makes nodes a cluster (`redis-cli --cluster create`).
pub const REDIS_CLI: Program = Program::new("redis-cli", "redis-tools");

/// A `redis-server` child process, killed on drop.
pub struct Redis {
    process: Option<Process>,
    program: PathBuf,
    port: u16,
    dir: PathBuf,
    persistent: bool,
    /// A node of a Redis Cluster (`cluster-enabled yes`).
    cluster: bool,
}

impl Redis {
    /// Starts a server on a free loopback port.
    pub async fn start(persistent: bool) -> Self {
        Self::start_as(persistent, false).await
    }

    async fn start_as(persistent: bool, cluster: bool) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("tower-push-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Self {
            process: None,
            program: REDIS_SERVER.path(),
            port,
            dir,
            persistent,
            cluster,
        };
        redis.spawn().await;
        redis
    }

    pub async fn spawn(&mut self) {
        let mut command = Command::new(&self.program);
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .arg("--dir")
            .arg(&self.dir);
        if self.persistent {
            // Every write reaches the disk before it is acknowledged, so a kill loses nothing.
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        if self.cluster {
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]);
        }
        self.process = Some(Process::spawn(&mut command));
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = Instant::now() + 10 * SECOND;
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not come up");
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server (`SIGSTOP`): it keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let process = self.process.as_ref().expect("a running redis-server");
        let sent = Command::new("kill")
            .args([signal, &process.id().to_string()])
            .status();
        assert!(sent.unwrap().success(), "kill {signal}");
    }

    /// Kills the server (and reaps it).
    pub fn kill(&mut self) {
        self.process = None;
    }

    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of `redis-server` nodes on free loopback ports, each a primary for a third
/// of the slots (no replicas), made with `redis-cli --cluster create`; killed on drop.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    /// Starts three nodes (with `appendfsync always` if `persistent`) and makes them a cluster.
    pub async fn start(persistent: bool) -> Self {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(Redis::start_as(persistent, true).await);
        }
        let cli = REDIS_CLI.path();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let output = Command::new(cli)
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = Self { nodes };
        cluster.wait_ok().await;
        cluster
    }

    /// The URL of the first node, through which a client finds the others.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Starts node `i` again (on its directory: its cluster configuration and its data), and
    /// waits until the cluster is whole.
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i].spawn().await;
        self.wait_ok().await;
    }

    /// Waits until every node says the cluster is whole (`cluster_state:ok`).
    pub async fn wait_ok(&self) {
        let deadline = Instant::now() + 30 * SECOND;
        for node in &self.nodes {
            loop {
                let mut conn = node.conn().await;
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster is not whole: {info}"
                );
                sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
