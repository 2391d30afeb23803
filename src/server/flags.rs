//! The command-line flags every push program takes (feature `cli`).

use std::net::SocketAddr;

use tokio::net::TcpListener;

use super::{ctrl_c_or_sigterm, held_cap, Drained, HttpService, Server};

/// The flags every push program takes, for a [clap](https://docs.rs/clap) command line
/// (feature `cli`): where to listen, and how many requests the layers may hold. Flatten it into
/// the program's own arguments, so that every program names these settings the same way.
///
/// `--addr` defaults to `127.0.0.1:3000`; a program that listens elsewhere by default says so
/// on its own arguments: `#[command(mut_arg("addr", |arg| arg.default_value("127.0.0.1:4437")))]`.
///
/// # Examples
///
/// ```no_run
/// use clap::Parser;
/// use tower_push::server::{self, Flags, Server};
/// use tower_push::{LongPollLayer, MemoryLog, Shutdown};
///
/// /// Long polling on one topic.
/// #[derive(Parser)]
/// struct Args {
///     #[command(flatten)]
///     serve: Flags,
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let args = Args::parse();
///     server::runtime().build()?.block_on(async {
///         let shutdown = Shutdown::new();
///         let poll = LongPollLayer::builder()
///             .max_held(args.serve.max_held())
///             .shutdown(shutdown.clone())
///             .build()?
///             .layer(MemoryLog::new().topic("news"));
///         // Prints `listening on http://127.0.0.1:3000`; Ctrl-C or SIGTERM drains it.
///         args.serve.serve(Server::new().shutdown(shutdown), poll).await;
///         Ok(())
///     })
/// }
/// ```
#[derive(clap::Args, Clone, Debug)]
// No argument group of its own: a program's own arguments may be a type named `Flags` too, and
// clap refuses two groups of one name.
#[group(skip)]
// Its documentation is for Rust users: it is not the `--help` text of a program without one.
#[command(about = None, long_about = None)]
#[non_exhaustive]
pub struct Flags {
    /// Where to listen; HOST may be a name such as `localhost`
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:3000")]
    pub addr: String,
    /// The most polls held at once, and the most streams open at once; beyond, 503 overloaded.
    /// Each held request over HTTP/1.1 keeps a connection, and so a file descriptor, and about
    /// 6 KiB of memory. Default: a quarter of the open-files limit
    #[arg(long, value_name = "REQUESTS")]
    pub max_held: Option<usize>,
}

/// `--threads`, for the programs that serve with [`Flags::run`] and so can serve from several
/// single-threaded runtimes (feature `cli`); flatten it beside [`Flags`].
///
/// On the machine the crate is measured on (2 cores, the load client on the same machine),
/// `--threads 2` held a parked read of the Durable Streams example in 2.7 KiB against 6.6 on
/// the multi-threaded runtime, with fan-out and appends within the noise (BENCHMARKS.md).
/// What one thread takes it does not share: a thread with more connections than another does
/// not hand any over.
///
/// # Examples
///
/// ```no_run
/// use clap::Parser;
/// use tower_push::server::{Flags, Server, Threads};
/// use tower_push::{LongPollLayer, MemoryLog};
///
/// /// Long polling on one topic.
/// #[derive(Parser)]
/// struct Args {
///     #[command(flatten)]
///     serve: Flags,
///     #[command(flatten)]
///     threads: Threads,
/// }
///
/// let args = Args::parse();
/// let poll = LongPollLayer::builder()
///     .max_held(args.serve.max_held())
///     .build()?
///     .layer(MemoryLog::new().topic("news"));
/// // Blocks until Ctrl-C or SIGTERM; `--threads 2` serves from two threads.
/// args.serve.run(args.threads, Server::new(), poll, std::future::pending());
/// # Ok::<(), tower_push::ConfigError>(())
/// ```
#[derive(clap::Args, Clone, Copy, Debug, Default)]
#[group(skip)]
#[command(about = None, long_about = None)]
#[non_exhaustive]
pub struct Threads {
    /// Serve from this many threads, each with a listener of its own (SO_REUSEPORT) and a
    /// single-threaded runtime, as nginx's worker processes; 0 serves from one multi-threaded
    /// runtime with work stealing
    #[arg(long, value_name = "THREADS", default_value_t = 0)]
    pub threads: usize,
}

impl Flags {
    /// The cap `--max-held` gives each of held polls and open streams; [`held_cap`] without it.
    pub fn max_held(&self) -> usize {
        self.max_held.unwrap_or_else(held_cap)
    }

    /// Serves `service` until Ctrl-C or SIGTERM, as [`serve`](Self::serve) does, on the
    /// runtimes `threads` asks for: one multi-threaded runtime ([`runtime`](super::runtime))
    /// for 0, else that many threads with a single-threaded runtime and a listener each
    /// ([`Server::serve_per_thread`]). Blocks until the drain ends, then prints `stopped: …`.
    ///
    /// `background` runs beside the server on the calling thread's runtime until the stop (a
    /// task that reads a file again on SIGHUP, a stats publisher): it may spawn tasks and
    /// listen for signals there.
    ///
    /// Exits the process with clap's I/O error (exit code 74) when a runtime cannot be built or
    /// `--addr` cannot be bound, and where there is no `SO_REUSEPORT` (not Unix) when
    /// `--threads` is not 0.
    pub fn run<S: HttpService>(
        &self,
        threads: Threads,
        server: Server,
        service: S,
        background: impl std::future::Future<Output = ()> + 'static,
    ) {
        let stop = async {
            tokio::select! {
                () = background => std::future::pending::<()>().await,
                () = ctrl_c_or_sigterm() => {}
            }
        };
        let drained = match threads.threads {
            0 => {
                let runtime = super::runtime()
                    .build()
                    .unwrap_or_else(|err| exit_io(format!("cannot start the runtime: {err}")));
                runtime.block_on(async {
                    let listener = self.listen().await;
                    server.serve(listener, service, stop).await
                })
            }
            #[cfg(not(unix))]
            _ => exit_io("--threads needs SO_REUSEPORT, a Unix socket option".to_owned()),
            #[cfg(unix)]
            threads => {
                let mut addr = self.socket_addr();
                if addr.port() == 0 {
                    // A port for every thread's listener, said before they listen.
                    let free = std::net::TcpListener::bind(addr).and_then(|l| l.local_addr());
                    addr = free
                        .unwrap_or_else(|err| exit_io(format!("cannot listen on {addr}: {err}")));
                }
                println!("listening on http://{addr} from {threads} threads");
                server
                    .serve_per_thread(addr, threads, service, stop)
                    .unwrap_or_else(|err| exit_io(format!("cannot serve on {addr}: {err}")))
            }
        };
        eprintln!("stopped: {drained}");
    }

    /// Binds `--addr` and prints `listening on http://ADDR` on standard output; exits the process
    /// with clap's I/O error (`error: cannot listen on ADDR: REASON`, exit code 74) when it
    /// cannot.
    pub async fn listen(&self) -> TcpListener {
        let addr = &self.addr;
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(err) => exit_io(format!("cannot listen on {addr}: {err}")),
        };
        match listener.local_addr() {
            Ok(local) => println!("listening on http://{local}"),
            Err(err) => exit_io(format!("cannot listen on {addr}: {err}")),
        }
        listener
    }

    /// Serves `service` with `server` on `--addr` ([`listen`](Self::listen)) until Ctrl-C or
    /// SIGTERM ([`ctrl_c_or_sigterm`]), then drains (see [`Server::serve`]) and says how the
    /// drain ended on standard error (`stopped: all connections closed`, or how many were cut).
    pub async fn serve(&self, server: Server, service: impl HttpService) {
        let listener = self.listen().await;
        let drained: Drained = server.serve(listener, service, ctrl_c_or_sigterm()).await;
        eprintln!("stopped: {drained}");
    }

    /// The first address `--addr` resolves to, for [`Server::serve_per_thread`]; exits the
    /// process with clap's I/O error when there is none.
    pub fn socket_addr(&self) -> SocketAddr {
        use std::net::ToSocketAddrs;
        let addr = &self.addr;
        match addr.to_socket_addrs().map(|mut all| all.next()) {
            Ok(Some(resolved)) => resolved,
            Ok(None) => exit_io(format!("cannot resolve {addr}")),
            Err(err) => exit_io(format!("cannot resolve {addr}: {err}")),
        }
    }
}

/// Exits as clap does for an I/O error: `error: MESSAGE` on standard error, exit code 74.
fn exit_io(message: String) -> ! {
    clap::Error::raw(clap::error::ErrorKind::Io, message + "\n").exit()
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::Flags as ServerFlags;

    /// A program's own flags, named as the demo names them, with the server's flattened in.
    #[derive(clap::Args)]
    struct Flags {
        #[command(flatten)]
        serve: ServerFlags,
        #[arg(long)]
        hold_ms: Option<u64>,
    }

    #[derive(Parser)]
    struct Program {
        #[command(flatten)]
        flags: Flags,
    }

    /// A program that listens elsewhere by default.
    #[derive(Parser)]
    #[command(mut_arg("addr", |arg| arg.default_value("127.0.0.1:4437")))]
    struct Elsewhere {
        #[command(flatten)]
        serve: ServerFlags,
    }

    #[test]
    fn flattens_into_a_program_whose_own_flags_have_the_same_name() {
        Program::command().debug_assert();
        let program = Program::parse_from(["program", "--addr", "[::1]:0", "--max-held", "7"]);
        assert_eq!(program.flags.serve.addr, "[::1]:0");
        assert_eq!(program.flags.serve.max_held(), 7);
        let defaults = Program::parse_from(["program"]);
        assert_eq!(defaults.flags.serve.addr, "127.0.0.1:3000");
        Elsewhere::command().debug_assert();
        let help = Elsewhere::command().render_help().to_string();
        assert!(help.contains("[default: 127.0.0.1:4437]"), "{help}");
        assert_eq!(Elsewhere::parse_from(["e"]).serve.addr, "127.0.0.1:4437");
        assert_eq!(defaults.flags.serve.max_held(), super::held_cap());
        assert!(defaults.flags.hold_ms.is_none());
    }
}
