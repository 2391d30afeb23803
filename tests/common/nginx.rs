//! nginx as a child process, in front of the servers of a test.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use super::external::{free_port, Process, Program};
use super::SECOND;

pub const NGINX: Program = Program::new("nginx", "nginx");

/// nginx's `proxy_read_timeout` in these tests: how long it waits for the next bytes from the
/// upstream before it gives up on the response.
pub const PROXY_READ_TIMEOUT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------------
// nginx as a child process

/// A running nginx in front of one upstream or several; stopped when dropped.
pub struct Nginx {
    process: Process,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx on a free loopback port, proxying everything to `upstream`, with gzip on
    /// and [`PROXY_READ_TIMEOUT`].
    pub async fn start(upstream: SocketAddr) -> Self {
        Self::start_with(&[upstream], true, PROXY_READ_TIMEOUT).await
    }

    /// Starts nginx on a free loopback port, proxying each request to the next of `upstreams`
    /// in turn (nginx's round robin); with `gzip`, nginx compresses push content types itself;
    /// `read_timeout` is its `proxy_read_timeout`.
    pub async fn start_with(upstreams: &[SocketAddr], gzip: bool, read_timeout: Duration) -> Self {
        let program = NGINX.path();
        for _ in 0..5 {
            let port = free_port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let dir = tempfile::tempdir().unwrap();
            let conf = dir.path().join("nginx.conf");
            std::fs::write(
                &conf,
                config(dir.path(), addr, upstreams, gzip, read_timeout),
            )
            .unwrap();
            let process = Process::spawn(
                Command::new(&program)
                    .arg("-p")
                    .arg(dir.path())
                    .arg("-e")
                    .arg(dir.path().join("error.log"))
                    .arg("-c")
                    .arg(&conf)
                    .args(["-g", "daemon off;"]),
            );
            let mut nginx = Self { process, addr, dir };
            // nginx writes its pid file once it has bound its port.
            let pid = nginx.dir.path().join("nginx.pid");
            let listening = nginx.process.listening(port, 10 * SECOND, || pid.exists());
            match listening.await {
                Ok(true) => return nginx,
                Ok(false) => {
                    let log = nginx.error_log();
                    assert!(
                        log.contains("Address already in use"),
                        "nginx did not start:\n{log}"
                    );
                }
                Err(_) => panic!("nginx did not start within 10 s:\n{}", nginx.error_log()),
            }
        }
        panic!("no free port for nginx after 5 attempts");
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// The upstream that answered each request so far, in order (nginx writes its access log
    /// as each request ends).
    pub fn upstreams_used(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        log.lines().map(str::to_owned).collect()
    }
}

/// A common production configuration: buffering on (the default, stated), HTTP/1.1 with
/// keep-alive to the upstreams, a read timeout, and gzip for push content types.
fn config(
    dir: &std::path::Path,
    listen: SocketAddr,
    upstreams: &[SocketAddr],
    gzip: bool,
    read_timeout: Duration,
) -> String {
    let dir = dir.display();
    let gzip = if gzip { "on" } else { "off" };
    let servers: String = upstreams.iter().map(|u| format!("server {u}; ")).collect();
    format!(
        r#"master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    log_format upstream '$upstream_addr';
    access_log {dir}/access.log upstream;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    gzip {gzip};
    gzip_proxied any;
    gzip_types application/json application/x-ndjson text/event-stream;
    gzip_min_length 1;

    upstream app {{ {servers}keepalive 16; }}

    server {{
        listen {listen};
        location / {{
            proxy_pass http://app;
            proxy_set_header Host $http_host;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
            proxy_read_timeout {timeout}s;
        }}
    }}
}}
"#,
        timeout = read_timeout.as_secs(),
    )
}
