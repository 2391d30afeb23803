//! Closing finished connections on a background thread of low priority.
//!
//! A connection that ends still has its teardown to do: hyper's read and write buffers and the
//! cached header map freed, the socket taken off the runtime's `epoll` set and closed. After a
//! publish, thousands of clients that have their answer close their connection at once, and a
//! runtime thread that tears each one down as it ends does that work between the answers it
//! still has to write. Handed here instead, the teardown waits until the CPUs have nothing more
//! urgent to do (BENCHMARKS.md, "Connections closed in the background").

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::{self, Sender};
use std::sync::OnceLock;
use std::task::{Context, Poll};

/// A finished connection, waiting to be dropped.
type Finished = Pin<Box<dyn Send>>;

/// The closing thread's queue; `None` when the thread could not be started (everything is then
/// dropped where it ends, as without this module).
static CLOSER: OnceLock<Option<Sender<Finished>>> = OnceLock::new();

/// Drops `finished` on the closing thread, starting it the first time; where it cannot be
/// started, drops it here.
fn close(finished: Finished) {
    let closer = CLOSER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Finished>();
        std::thread::Builder::new()
            .name("tower-push-close".into())
            .spawn(move || {
                lower_priority();
                // At nice 19, anything else that wants a CPU gets it first.
                for finished in rx {
                    drop(finished);
                }
            })
            .ok()
            .map(|_| tx)
    });
    match closer {
        // The thread never ends while the process holds the sender, so a send cannot fail;
        // if it did, what it gives back is dropped here.
        Some(tx) => drop(tx.send(finished)),
        None => drop(finished),
    }
}

/// Gives the calling thread the lowest scheduling priority (nice 19): it then runs when the
/// CPUs are otherwise idle, or gets a small share of one when they never are.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // Linux applies a nice value to the one thread whose id it is given.
        let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
    }
}

/// A connection's future, boxed, whose remains go to the closing thread when it finishes.
pub(super) struct CloseInBackground<F> {
    connection: Option<Pin<Box<F>>>,
}

impl<F> CloseInBackground<F>
where
    F: Future + Send + 'static,
{
    pub(super) fn new(connection: F) -> Self {
        Self {
            connection: Some(Box::pin(connection)),
        }
    }
}

impl<F> Future for CloseInBackground<F>
where
    F: Future + Send + 'static,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let connection = self.connection.as_mut().expect("polled after completion");
        let output = std::task::ready!(connection.as_mut().poll(cx));
        if let Some(finished) = self.connection.take() {
            close(finished);
        }
        Poll::Ready(output)
    }
}
