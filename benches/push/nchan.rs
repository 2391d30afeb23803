//! nginx with its Nchan module, the peer of `--only nchan` and `--only scaling`.
//!
//! The driver starts `push serve nginx <nginx> <module> <connections>`: that process writes a
//! configuration into a temporary directory, runs nginx in the foreground (`daemon off;`, a
//! master and one worker process) on a free loopback port, prints the port and the master's
//! pid, and stops nginx when its standard input closes, like every other server here, so that
//! no nginx outlives the bench. The driver reads the memory of the master and its worker, and
//! talks to Nchan over HTTP only: `/poll` is a long-poll subscriber location whose cursor is
//! Nchan's message id (`?last_event_id=<time>:<tag>`), `/publish` a publisher location on the
//! same channel, which also answers the channel's subscriber count.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::Conn;
use crate::process::{children, cpu_ns, rss_kib, spawn_reporting};
use crate::SEED;

/// Where the Debian package `libnginx-mod-nchan` puts the module.
const MODULE: &str = "ngx_nchan_module.so";

/// An nginx program that can load Nchan.
#[derive(Clone, Debug)]
pub(super) struct Program {
    nginx: PathBuf,
    /// `None` when Nchan is built into nginx.
    module: Option<PathBuf>,
    /// nginx's version and the module's path, for the report.
    pub(super) description: String,
}

/// Finds nginx and the Nchan module (`NGINX` and `NCHAN_MODULE` override where), and checks
/// with `nginx -t` that the configuration the bench writes loads; the error says why not.
pub(super) fn find() -> Result<Program, String> {
    const SBIN: [&str; 3] = ["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"];
    const MODULES: [&str; 2] = ["/usr/lib/nginx/modules", "/usr/local/nginx/modules"];
    let nginx = match std::env::var_os("NGINX") {
        Some(path) => PathBuf::from(path),
        None => {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .chain(SBIN.map(PathBuf::from))
                .map(|dir| dir.join("nginx"))
                .find(|candidate| candidate.is_file())
                .ok_or("nginx not found in PATH or /usr/sbin (Debian package `nginx`)")?
        }
    };
    let version = Command::new(&nginx)
        .arg("-V")
        .output()
        .map_err(|e| format!("{} -V: {e}", nginx.display()))?;
    // nginx prints its version and build settings on stderr.
    let version = String::from_utf8_lossy(&version.stderr).into_owned();
    let modules_path = version
        .split_whitespace()
        .find_map(|arg| arg.strip_prefix("--modules-path="))
        .map(PathBuf::from);
    let module = match std::env::var_os("NCHAN_MODULE") {
        Some(path) => Some(PathBuf::from(path)),
        None => modules_path
            .into_iter()
            .chain(MODULES.map(PathBuf::from))
            .map(|dir| dir.join(MODULE))
            .find(|candidate| candidate.is_file()),
    };
    // Compiled in with `--add-module=<path to nchan>`, it needs no `load_module`.
    let built_in = version
        .split_whitespace()
        .any(|arg| arg.starts_with("--add-module=") && arg.contains("nchan"));
    if module.is_none() && !built_in {
        return Err(format!(
            "the Nchan module not found ({MODULE} in nginx's modules path; \
             Debian package `libnginx-mod-nchan`)"
        ));
    }
    let program = Program {
        description: format!(
            "{}, {}",
            version.lines().next().unwrap_or("nginx").trim(),
            module
                .as_ref()
                .map_or("Nchan built in".to_owned(), |m| m.display().to_string()),
        ),
        nginx,
        module: if built_in { None } else { module },
    };
    let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let conf = program.write_config(dir.path(), free_port(), 64)?;
    let test = program
        .command(dir.path(), &conf)
        .arg("-t")
        .output()
        .map_err(|e| format!("{} -t: {e}", program.nginx.display()))?;
    if !test.status.success() {
        let said = String::from_utf8_lossy(&test.stderr);
        let reason = said
            .lines()
            .find(|l| l.contains("[emerg]"))
            .unwrap_or_else(|| said.lines().next().unwrap_or("no output"));
        return Err(format!("nginx -t failed: {}", reason.trim()));
    }
    Ok(program)
}

impl Program {
    fn command(&self, dir: &Path, conf: &Path) -> Command {
        let mut command = Command::new(&self.nginx);
        command
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(conf)
            .args(["-g", "daemon off;"]);
        command
    }

    /// The configuration: one worker process with room for `connections` (its open-files
    /// limit is the bench's, inherited), no access log, keep-alive without a request limit
    /// (nginx closes a connection after 1,000 requests by default, which the throughput
    /// clients would see as an error), and the two locations.
    fn write_config(&self, dir: &Path, port: u16, connections: usize) -> Result<PathBuf, String> {
        let load = self
            .module
            .as_ref()
            .map_or(String::new(), |m| format!("load_module {};\n", m.display()));
        let d = dir.display();
        let config = format!(
            r#"{load}worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    keepalive_requests 1000000000;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        location = /poll {{
            nchan_subscriber longpoll;
            nchan_channel_id bench;
            nchan_subscriber_timeout 600s;
        }}
        location = /publish {{
            nchan_publisher;
            nchan_channel_id bench;
        }}
    }}
}}
"#
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config).map_err(|e| format!("write {}: {e}", conf.display()))?;
        Ok(conf)
    }
}

/// A loopback port that was free a moment ago.
pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `push serve nginx <nginx> <module or -> <connections>`: runs nginx until standard input
/// closes; prints `<port> <master pid>` once it listens, or `error <reason>`.
pub(super) fn serve(args: &[String]) {
    let program = Program {
        nginx: PathBuf::from(&args[0]),
        module: (args[1] != "-").then(|| PathBuf::from(&args[1])),
        description: String::new(),
    };
    let connections: usize = args[2].parse().expect("connections");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let error_log = || std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
    let mut started = None;
    for _ in 0..5 {
        let port = free_port();
        let conf = program
            .write_config(dir.path(), port, connections)
            .expect("write the configuration");
        let _ = std::fs::remove_file(dir.path().join("nginx.pid"));
        let mut child = program
            .command(dir.path(), &conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        // nginx writes its pid file once it has bound its port.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listening = loop {
            if let Ok(Some(_)) = child.try_wait() {
                break false;
            }
            if dir.path().join("nginx.pid").exists()
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                break true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if listening {
            started = Some((child, port, conf));
            break;
        }
        if !error_log().contains("Address already in use") {
            break;
        }
    }
    let Some((mut child, port, conf)) = started else {
        let log = error_log();
        println!(
            "error {}",
            log.lines().last().unwrap_or("nginx did not start")
        );
        return;
    };
    println!("{port} {}", child.id());
    std::io::stdout().flush().expect("stdout");
    // The driver holds our stdin; when it goes away, nginx goes too.
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    let workers = children(child.id());
    let _ = program
        .command(dir.path(), &conf)
        .args(["-s", "stop"])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if matches!(child.try_wait(), Ok(None)) {
        // A worker outlives a killed master, so it goes first.
        for worker in workers {
            let _ = Command::new("kill")
                .args(["-KILL", &worker.to_string()])
                .status();
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A running nginx with Nchan, seeded with two messages on the bench channel.
pub(super) struct Nginx {
    wrapper: Child,
    pub(super) master: u32,
    pub(super) addr: SocketAddr,
    /// The id of the first message: polls after it are answered at once, with the second.
    pub(super) older: String,
    /// The id of the newest message: polls after it park.
    pub(super) newest: String,
}

impl Nginx {
    /// Starts nginx with room for `connections` and publishes the two seed messages.
    pub(super) async fn start(program: &Program, connections: usize) -> Self {
        let exe = std::env::current_exe().expect("own executable");
        let module = program
            .module
            .as_ref()
            .map_or("-".to_owned(), |m| m.display().to_string());
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .arg("nginx")
            .arg(&program.nginx)
            .arg(module)
            .arg(connections.to_string());
        let (wrapper, line) = spawn_reporting(command, "the nginx process");
        if let Some(reason) = line.strip_prefix("error ") {
            panic!("nginx did not start: {}", reason.trim());
        }
        let mut words = line.split_whitespace();
        let port: u16 = words.next().and_then(|p| p.parse().ok()).expect("port");
        let master: u32 = words.next().and_then(|p| p.parse().ok()).expect("pid");
        let mut nginx = Self {
            wrapper,
            master,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            older: String::new(),
            newest: String::new(),
        };
        let mut control = Conn::connect(nginx.addr).await.expect("connect to nginx");
        nginx.older = publish(&mut control, r#"{"n":-1,"t":0}"#).await;
        nginx.newest = publish(&mut control, SEED).await;
        nginx
    }

    /// The resident memory of the master and its workers, in KiB.
    pub(super) fn rss_kib(&self) -> u64 {
        rss_kib(self.master) + children(self.master).into_iter().map(rss_kib).sum::<u64>()
    }

    /// CPU time of nginx's master and worker, in nanoseconds.
    pub(super) fn cpu_ns(&self) -> u64 {
        cpu_ns(self.master) + children(self.master).into_iter().map(cpu_ns).sum::<u64>()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Closing the wrapper's stdin stops nginx; the wrapper exits once nginx has.
        drop(self.wrapper.stdin.take());
        let _ = self.wrapper.wait();
    }
}

/// The channel information Nchan's publisher location answers, as JSON.
async fn channel(conn: &mut Conn, request: &[u8]) -> serde_json::Value {
    conn.send(request).await.expect("send to nginx");
    let (status, body) = conn.response_body().await.expect("nginx answers");
    assert!(
        (200..300).contains(&status),
        "Nchan's publisher answered {status}"
    );
    serde_json::from_slice(&body).expect("Nchan's channel information is JSON")
}

/// Publishes `data` and returns its message id.
pub(super) async fn publish(conn: &mut Conn, data: &str) -> String {
    let request = format!(
        "POST /publish HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/json\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{data}",
        data.len()
    );
    let info = channel(conn, request.as_bytes()).await;
    info["last_message_id"]
        .as_str()
        .expect("last_message_id")
        .to_owned()
}

/// The subscribers parked on the channel.
pub(super) async fn subscribers(conn: &mut Conn) -> usize {
    let request = "GET /publish HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/json\r\n\r\n";
    let info = channel(conn, request.as_bytes()).await;
    info["subscribers"].as_u64().expect("subscribers") as usize
}
