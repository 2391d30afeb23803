//! The bench's processes: a server started as a child process, what `/proc` tells of any
//! process (resident memory, CPU time, children), and the open-files limit every process of
//! the bench asks for.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};

/// The open-files limit every bench process asks for: 50,000 parked polls need a little over
/// 50,000 descriptors in the client and as many in the server (nginx's worker inherits it).
/// Where the hard limit is lower and cannot be raised, the sizes that do not fit are skipped.
const OPEN_FILES: u64 = 262_144;

/// The open-files limit (soft, hard) before and after [`raise_open_files`].
#[derive(Clone, Copy, Debug)]
pub(super) struct OpenFiles {
    pub(super) at_start: (u64, u64),
    pub(super) now: (u64, u64),
}

/// Raises the open-files limit of this process (and so of the servers it starts): the hard
/// limit to [`OPEN_FILES`] where the process may (it needs `CAP_SYS_RESOURCE`, and the kernel's
/// `fs.nr_open` caps it), and the soft limit to the hard one.
pub(super) fn raise_open_files() -> OpenFiles {
    const NOFILE: rlimit::Resource = rlimit::Resource::NOFILE;
    let at_start = rlimit::getrlimit(NOFILE).unwrap_or((0, 0));
    let (soft, hard) = at_start;
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(OPEN_FILES);
    let wanted = OPEN_FILES.min(ceiling);
    let raised = hard < wanted && rlimit::setrlimit(NOFILE, wanted, wanted).is_ok();
    if !raised && soft < hard {
        let _ = rlimit::setrlimit(NOFILE, hard, hard);
    }
    OpenFiles {
        at_start,
        now: rlimit::getrlimit(NOFILE).unwrap_or(at_start),
    }
}

/// A server child process.
pub(super) struct Server {
    pub(super) child: Child,
    /// The service under test.
    pub(super) addr: SocketAddr,
    /// The control service: publish, stats.
    pub(super) control: SocketAddr,
}

/// Starts `command` (`what` names it in panics) with its standard input and output piped, and
/// reads the first line it prints: what a process of the bench reports once it is ready (its
/// ports, or `error <reason>`). The process exits when its standard input closes.
pub(super) fn spawn_reporting(mut command: Command, what: &str) -> (Child, String) {
    let mut child = spawn(&mut command, true, what);
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|err| panic!("read the first line of {what}: {err}"));
    (child, line)
}

/// Starts `command` (`what` names it in panics) with its standard error inherited; a process
/// that `reports` on its standard output gets it and its input piped (it exits when its input
/// closes), any other gets neither.
fn spawn(command: &mut Command, reports: bool, what: &str) -> Child {
    let pipe = || match reports {
        true => Stdio::piped(),
        false => Stdio::null(),
    };
    command
        .stdin(pipe())
        .stdout(pipe())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|err| panic!("start {what}: {err}"))
}

impl Server {
    pub(super) fn start(kind: &str) -> Self {
        let exe = std::env::current_exe().expect("own executable");
        let mut command = Command::new(exe);
        command.args(["serve", kind]);
        Self::spawn(command)
    }

    /// Starts `command`, which prints the ports of the service under test and of its control
    /// service on its first line and exits when its standard input closes.
    pub(super) fn spawn(command: Command) -> Self {
        let (child, line) = spawn_reporting(command, "the server");
        let ports: Vec<u16> = line
            .split_whitespace()
            .map(|p| p.parse().expect("the server prints its ports"))
            .collect();
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        Self {
            child,
            addr: addr(ports[0]),
            control: addr(ports[1]),
        }
    }

    /// Starts `program` with `args`, a program that listens on `port` (which the arguments
    /// name) and serves everything there; waits until it accepts connections. A server that
    /// recovers its data first may take long: the wait ends when it exits, or after 600 s.
    pub(super) async fn listening(mut command: Command, port: u16) -> Self {
        let what = format!("{command:?}");
        let mut child = spawn(&mut command, false, &what);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{command:?} exited ({status}) before it listened on {addr}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{command:?} did not listen on {addr} within 600 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Self {
            child,
            addr,
            control: addr,
        }
    }

    /// Resident memory in KiB, from `/proc/<pid>/status`.
    pub(super) fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

/// The resident memory of process `pid` in KiB, from `/proc/<pid>/status`.
pub(super) fn rss_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// The time the threads of process `pid` have spent on a CPU, in nanoseconds: the first field of
/// `/proc/<pid>/task/<tid>/schedstat`, summed over its threads.
pub(super) fn cpu_ns(pid: u32) -> u64 {
    cpu_ns_by_thread(pid).values().sum()
}

/// The processes whose parent is `pid`, from `/proc/<n>/stat`.
pub(super) fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            // `<pid> (<comm>) <state> <ppid> ...`, where comm may hold spaces and parentheses.
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// One of this package's examples, built in release mode with `features` (the features its
/// documentation runs it with) by the cargo that runs the bench: the program a user runs, so
/// that what the bench measures is what a user gets. Built once per bench process.
pub(super) fn example(name: &str, features: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    // `target/release/deps/push-<hash>` -> `target/release/examples/<name>`.
    let exe = std::env::current_exe().expect("own executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join("examples").join(name);
    if !built.iter().any(|done| done == name) {
        eprintln!("   building `{name}` with --features {features} ...");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet", "--example", name])
            .args(["--features", features])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo");
        assert!(status.success(), "cargo build --example {name} failed");
        built.push(name.to_owned());
    }
    path
}

/// How many connections to `port` the server has taken the whole request of and not
/// answered: its established sockets on `port` with nothing left in their receive queue
/// (`/proc/net/tcp`; answered clients close theirs). A count that needs nothing of the server,
/// so that every server is waited for alike.
pub(super) fn read_sockets(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    // `sl local_address rem_address st tx_queue:rx_queue ...`
                    let mut fields = line.split_whitespace().skip(1);
                    let local = fields.next().unwrap_or("");
                    let _remote = fields.next();
                    let state = fields.next().unwrap_or("");
                    let queues = fields.next().unwrap_or("");
                    let local_port = local.rsplit(':').next().unwrap_or("");
                    u16::from_str_radix(local_port, 16) == Ok(port)
                        && state == "01"
                        && queues.ends_with(":00000000")
                })
                .count()
        })
        .sum()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Context switches of `pid`'s threads so far, voluntary and not, from
/// `/proc/<pid>/task/*/status`.
pub(super) fn switches(pid: u32) -> (u64, u64) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    let mut total = (0, 0);
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            let count = |prefix: &str| {
                line.strip_prefix(prefix)
                    .and_then(|n| n.trim().parse::<u64>().ok())
            };
            if let Some(n) = count("voluntary_ctxt_switches:") {
                total.0 += n;
            } else if let Some(n) = count("nonvoluntary_ctxt_switches:") {
                total.1 += n;
            }
        }
    }
    total
}

/// CPU time in nanoseconds of `pid`'s threads so far, summed per thread name
/// (`/proc/<pid>/task/*/comm` and `schedstat`).
pub(super) fn cpu_ns_by_thread(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let ns = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        *by_name.entry(name.trim().to_owned()).or_insert(0) += ns;
    }
    by_name
}
