//! The doorbells of the streams that have readers in this process, rung by one Pub/Sub
//! subscription per process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::{PubSubSink, PubSubStream};
use futures_core::Stream;
use tokio::sync::mpsc;

use crate::durable::store::Doorbell;
use crate::sync::MutexExt;

/// How often streams without readers are unsubscribed.
const SWEEP: Duration = Duration::from_secs(5);

/// The doorbell of each stream (by key base, which is also its channel) that has readers here.
#[derive(Default)]
pub(super) struct Bells(Mutex<HashMap<Arc<str>, Doorbell>>);

impl Bells {
    /// The doorbell of the stream at `base`; a new one is subscribed to through `subscribe`.
    pub(super) fn doorbell(
        &self,
        base: &str,
        subscribe: &mpsc::UnboundedSender<Arc<str>>,
    ) -> Doorbell {
        let mut bells = self.0.locked();
        if let Some(doorbell) = bells.get(base) {
            return doorbell.clone();
        }
        let base: Arc<str> = base.into();
        let doorbell = Doorbell::new();
        bells.insert(base.clone(), doorbell.clone());
        // Rung once the subscription stands, so a change before it is not missed.
        let _ = subscribe.send(base);
        doorbell
    }

    pub(super) fn ring(&self, base: &str) {
        if let Some(doorbell) = self.0.locked().get(base) {
            doorbell.ring();
        }
    }

    fn ring_all(&self) {
        self.0.locked().values().for_each(Doorbell::ring);
    }

    pub(super) fn len(&self) -> usize {
        self.0.locked().len()
    }

    /// Forgets the streams that nobody waits on any more; returns them.
    fn sweep(&self) -> Vec<Arc<str>> {
        let mut gone = Vec::new();
        self.0.locked().retain(|base, doorbell| {
            let keep = doorbell.is_shared();
            if !keep {
                gone.push(base.clone());
            }
            keep
        });
        gone
    }

    fn all(&self) -> Vec<Arc<str>> {
        self.0.locked().keys().cloned().collect()
    }
}

/// Follows the channels of the streams with readers here, ringing their doorbells, until the
/// store is dropped (`commands` closes). Reconnects with back-off when the connection breaks,
/// and then wakes every reader to look again.
pub(super) async fn follow(
    client: ::redis::Client,
    bells: Arc<Bells>,
    mut commands: mpsc::UnboundedReceiver<Arc<str>>,
    timeout: Duration,
) {
    let mut back_off = Duration::from_millis(50);
    loop {
        let connected = tokio::time::timeout(timeout, client.get_async_pubsub()).await;
        let Ok(Ok(pubsub)) = connected else {
            tokio::select! {
                () = tokio::time::sleep(back_off) => {}
                closed = commands.recv() => if closed.is_none() { return },
            }
            back_off = (back_off * 2).min(Duration::from_secs(1));
            continue;
        };
        back_off = Duration::from_millis(50);
        let (mut sink, mut messages) = pubsub.split();
        // Everything asked for so far (and whatever is still queued) is subscribed below.
        while commands.try_recv().is_ok() {}
        bells.sweep();
        let all = bells.all();
        if !all.is_empty() && !subscribe(&mut sink, &all, timeout).await {
            continue;
        }
        bells.ring_all();
        if !serve(&bells, &mut sink, &mut messages, &mut commands, timeout).await {
            return;
        }
        bells.ring_all();
    }
}

/// Serves one connection: `false` once the store is gone, `true` when the connection broke.
async fn serve(
    bells: &Bells,
    sink: &mut PubSubSink,
    messages: &mut PubSubStream,
    commands: &mut mpsc::UnboundedReceiver<Arc<str>>,
    timeout: Duration,
) -> bool {
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(base) = command else { return false };
                if !subscribe(sink, std::slice::from_ref(&base), timeout).await {
                    return true;
                }
                bells.ring(&base);
            }
            message = next(messages) => match message {
                Some(message) => bells.ring(message.get_channel_name()),
                None => return true,
            },
            _ = sweep.tick() => {
                let gone = bells.sweep();
                if !gone.is_empty() {
                    let unsubscribe = sink.unsubscribe(gone.iter().map(|b| &**b).collect::<Vec<_>>());
                    if !matches!(tokio::time::timeout(timeout, unsubscribe).await, Ok(Ok(()))) {
                        return true;
                    }
                }
            }
        }
    }
}

async fn subscribe(sink: &mut PubSubSink, bases: &[Arc<str>], timeout: Duration) -> bool {
    let channels: Vec<&str> = bases.iter().map(|b| &**b).collect();
    matches!(
        tokio::time::timeout(timeout, sink.subscribe(channels)).await,
        Ok(Ok(()))
    )
}

async fn next(messages: &mut PubSubStream) -> Option<::redis::Msg> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *messages).poll_next(cx)).await
}
