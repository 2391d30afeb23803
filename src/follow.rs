//! The request pipeline both layers share: admitting a request, then following its event source.
//!
//! A layer hands every request to [`Pipeline::admit`], which refuses a method other than `GET`
//! and `HEAD` (`405`), a head larger than it keeps (`431`), any request while shutting down
//! (`503 shutting_down`), reads the cursor (`400 malformed_cursor`) and takes a place under the
//! caps (`503 overloaded`). An admitted request becomes a [`Follow`]: the source, the
//! subscription, the place under the caps and the shutdown signal, driven one [`Step`] at a time.
//! What a layer adds on top is only its own: a long poll races the steps against its hold timer
//! and answers once; a stream writes every step as a frame until its lifetime ends.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::request::Parts;
use http::Method;
use http::Response;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::authorize::{Authorizer, Checks, Decision};
use crate::limit::{Limits, Slot};
use crate::request::CursorParam;
use crate::shutdown::{self, Shutdown};
use crate::source::EventSource;
use crate::source::{Batch, Origin, Outcome, Position, Subscribe};
use crate::sync::MutexExt;
use crate::telemetry::{self, Kind, Recording, Telemetry};
use crate::topics::TopicsParam;
use crate::{BoxError, CompositeCursor, Cursor, Event, PushBody, Rejection};

/// What a layer knows before any request: built from the builders' shared settings by
/// [`Shared::build`](crate::config::Shared::build).
#[derive(Debug)]
pub(crate) struct Pipeline {
    /// Which layer it serves, for metrics.
    pub(crate) kind: Kind,
    pub(crate) limits: Limits,
    pub(crate) max_events: usize,
    pub(crate) max_answer_bytes: usize,
    pub(crate) max_head_bytes: usize,
    pub(crate) param: CursorParam,
    /// Where a multiplexed request names its topics, and how many it may name.
    pub(crate) topics: TopicsParam,
    pub(crate) origin: Origin,
    pub(crate) shutdown: Option<Shutdown>,
    pub(crate) reconnect_window: Duration,
    /// The last answer encoded for a batch, for the other polls answered with the same batch.
    pub(crate) shared_answer: Mutex<SharedAnswers>,
    /// The last stream frame encoded for a batch, per format key (a handful of keys at most:
    /// one per framing in use).
    pub(crate) shared_frame: Mutex<Vec<(Batch, crate::format::FrameKey, bytes::Bytes)>>,
    /// An empty request head, shared by the waiting requests that need theirs no more.
    pub(crate) no_head: Arc<Parts>,
    /// Who may read which topics, if anyone is checked.
    pub(crate) authorizer: Option<Authorizer>,
    /// How often a held request checks its authorization again: set when requests are held
    /// longer than the authorizer's interval.
    pub(crate) recheck: Option<Duration>,
    /// How answers are compressed, if they are (never with an empty list of codings).
    pub(crate) compression: Option<Arc<crate::compression::Compression>>,
}

/// What a layer remembers to share answers: the batch the last poll was answered with, and the
/// answer encoded for a batch that more than one poll got.
#[derive(Debug, Default)]
pub(crate) struct SharedAnswers {
    /// The last batch answered, kept only to notice the second poll answered with it; its
    /// answer is not kept, so that polls at cursors of their own pay for nothing more.
    last: Option<Batch>,
    answer: Option<SharedAnswer>,
}

/// How many headers a poll's answer gets after the format wrote it: `Cache-Control` and
/// `X-Accel-Buffering` ([`crate::headers::long_poll`]), `Vary` and `Content-Encoding`
/// ([`crate::compression`]).
const ANSWER_HEADERS: usize = 4;

/// An answer encoded once for a batch: what each poll answered with that batch gets a copy of.
#[derive(Debug)]
pub(crate) struct SharedAnswer {
    batch: Batch,
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: bytes::Bytes,
}

impl SharedAnswer {
    fn response(&self) -> Response<PushBody> {
        let mut response = Response::new(PushBody::full(self.body.clone()));
        *response.status_mut() = self.status;
        // Room for what every answer adds on its way out (the anti-buffering headers, `Vary`,
        // `Content-Encoding`): a plain clone is exactly full, and the first of those would
        // grow it again, once per answer of a fan-out.
        let headers = response.headers_mut();
        headers.reserve(self.headers.len() + ANSWER_HEADERS);
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        response
    }
}

impl Pipeline {
    /// How many admitted requests hold a place now.
    pub(crate) fn held(&self) -> usize {
        self.limits.current()
    }

    /// Admits the request with head `parts` to follow `source`, or answers why it is refused.
    /// `start` is the format's say on where the request starts ([`PollFormat::start`]): a
    /// position, or `None` to read the layer's cursor parameter; `refuse` writes a refusal in
    /// the format ([`PollFormat::rejection`]). Both layers admit through here, so a request is
    /// refused for the same reasons, with the same answer, whichever layer it meets.
    ///
    /// [`PollFormat::start`]: crate::format::PollFormat::start
    /// [`PollFormat::rejection`]: crate::format::PollFormat::rejection
    // The refusal is the answer itself, made once per refused request: boxing it would
    // allocate for nothing.
    #[allow(clippy::result_large_err)]
    pub(crate) fn admit<S>(
        self: &Arc<Self>,
        parts: Parts,
        source: &S,
        start: impl FnOnce(&Parts) -> Result<Option<Position>, Rejection>,
        refuse: impl FnOnce(&Rejection) -> Response<PushBody>,
    ) -> Result<Follow<S>, Response<PushBody>>
    where
        S: Service<Subscribe> + Clone,
    {
        // The coding the request accepts, read before its head is given away or refused.
        let compression = self.compression.as_deref();
        let choice = crate::compression::negotiate(&parts.headers, compression);
        self.try_admit(parts, source, start, choice)
            .map_err(|rejection| {
                telemetry::rejected(self.kind, &rejection);
                crate::compression::answer(refuse(&rejection), choice, compression)
            })
    }

    fn try_admit<S>(
        self: &Arc<Self>,
        parts: Parts,
        source: &S,
        start: impl FnOnce(&Parts) -> Result<Option<Position>, Rejection>,
        choice: Option<crate::compression::Choice>,
    ) -> Result<Follow<S>, Rejection>
    where
        S: Service<Subscribe> + Clone,
    {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return Err(Rejection::MethodNotAllowed);
        }
        let size = head_size(&parts);
        if size > self.max_head_bytes {
            let max = self.max_head_bytes;
            return Err(Rejection::HeadTooLarge { size, max });
        }
        if self.shutdown.as_ref().is_some_and(Shutdown::is_triggered) {
            let retry_after = crate::random::retry_after();
            return Err(Rejection::ShuttingDown { retry_after });
        }
        // The format may say where the request starts, in its protocol's terms.
        let start = start(&parts)?;
        let topics = match start {
            Some(_) => None,
            None => self.topics.topics(&parts).map_err(Rejection::Topics)?,
        };
        let (position, positions) = match (&topics, start) {
            (None, Some(position)) => (position, None),
            (None, None) => {
                let position = self.param.position(&parts, self.origin);
                (position.map_err(Rejection::MalformedCursor)?, None)
            }
            (Some(topics), _) => {
                let positions = self.param.positions(&parts, topics.len());
                (
                    self.origin.into(),
                    positions.map_err(Rejection::MalformedCursor)?,
                )
            }
        };
        // Who may read what, before anything of a topic is looked at.
        let mut watch = None;
        if let Some(authorizer) = &self.authorizer {
            let checks = match &topics {
                Some(topics) => authorizer.start(&parts, topics.iter().map(Some)),
                None => authorizer.start(&parts, [None]),
            };
            let pending = match checks.now() {
                Some(decision) => {
                    refuse_unless_allowed(decision)?;
                    None
                }
                None => Some(checks),
            };
            if pending.is_some() || self.recheck.is_some() {
                watch = Some(Box::new(Watch {
                    checks: pending,
                    recheck: self
                        .recheck
                        .map(|every| Box::pin(tokio::time::sleep(every))),
                }));
            }
        }
        let Ok(slot) = self.limits.acquire(&parts) else {
            let retry_after = crate::random::retry_after();
            return Err(Rejection::Overloaded { retry_after });
        };
        let subscribe = Subscribe::new(position, self.max_events, Arc::new(parts));
        let many = topics.map(|topics| Box::new(Many::new(topics, positions, &subscribe)));
        let cursor = match position {
            Position::After(cursor) if many.is_none() => Some(cursor),
            _ => None,
        };
        Ok(Follow {
            telemetry: Telemetry::admitted(self.kind, cursor),
            pipeline: self.clone(),
            // The clone that was made ready is the one to call (tower's usual swap): here the
            // source is made ready in the follower, so either copy will do.
            source: source.clone(),
            subscribe,
            call: None,
            many,
            shutdown: self.shutdown.as_ref().map(Shutdown::wait),
            slot: Some(slot),
            detached: false,
            choice,
            watch,
        })
    }
}

/// The answer for a request whose authorization decided `decision`: none if allowed.
fn refuse_unless_allowed(decision: Decision) -> Result<(), Rejection> {
    match decision {
        Decision::Allow => Ok(()),
        Decision::Unauthenticated => Err(Rejection::Unauthenticated),
        // Exactly as a topic the source does not serve.
        Decision::Deny(topic) => Err(Rejection::UnknownTopic { topic }),
    }
}

/// The authorization of an admitted request: checks still running, and when to check again.
struct Watch {
    checks: Option<Checks>,
    recheck: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// One step of following a source.
#[derive(Debug)]
pub(crate) enum Step {
    /// Events after the position; the follower now stands after the last of them.
    Events(Batch),
    /// The request named no cursor, and the source said where the head is (for a multiplexed
    /// request: where every topic stands); the follower now stands there.
    Head(CompositeCursor),
    /// The source's log has ended where the follower stands (for a multiplexed request: every
    /// topic's log): nothing more will come.
    Closed(CompositeCursor),
}

/// The topics of a multiplexed request, each followed by a subscription of its own.
struct Many<S>
where
    S: Service<Subscribe>,
{
    lanes: Vec<Lane<S>>,
    // The lane that goes first in the next answer. It turns round, so that a busy topic cannot
    // crowd the others out of answers bounded in events and bytes.
    next: usize,
    // Whether every lane has a cursor: until then there is no composite cursor to write.
    positioned: bool,
}

/// One topic of a multiplexed request.
struct Lane<S>
where
    S: Service<Subscribe>,
{
    topic: Arc<str>,
    subscribe: Subscribe,
    // Boxed: a request holds one per topic, and the source's futures need not be `Unpin`.
    call: Option<Pin<Box<S::Future>>>,
    // Events that came with the lane's first position (a request from the oldest event), kept
    // for the first answer.
    ready: Option<Batch>,
    // Whether the topic's log has ended where the lane stands: it is not asked again.
    closed: bool,
}

impl<S> Many<S>
where
    S: Service<Subscribe>,
{
    /// The lanes of `topics`, after `positions` if the request named them, else from where
    /// `subscribe` starts.
    fn new(topics: Vec<Arc<str>>, positions: Option<Vec<Cursor>>, subscribe: &Subscribe) -> Self {
        let positioned = positions.is_some();
        let mut positions = positions.into_iter().flatten();
        let lanes = topics
            .into_iter()
            .map(|topic| {
                let subscribe = match positions.next() {
                    Some(cursor) => subscribe.after(cursor),
                    None => subscribe.clone(),
                };
                Lane {
                    subscribe: subscribe.for_topic(topic.clone()),
                    topic,
                    call: None,
                    ready: None,
                    closed: false,
                }
            })
            .collect();
        Self {
            lanes,
            next: 0,
            positioned,
        }
    }

    /// The composite cursor of where every lane stands, with lane `moved` at `at` if given;
    /// `None` while a lane has no cursor yet.
    fn composite_cursor(&self, moved: Option<(usize, Cursor)>) -> Option<CompositeCursor> {
        let mut positions = Vec::with_capacity(self.lanes.len());
        for (i, lane) in self.lanes.iter().enumerate() {
            positions.push(match (moved, lane.subscribe.position()) {
                (Some((j, at)), _) if i == j => at,
                (_, Position::After(cursor)) => cursor,
                (_, Position::Head | Position::Oldest) => return None,
            });
        }
        Some(CompositeCursor::composite(positions))
    }

    /// The rejection for lane `i`'s `outcome`, one that is neither events nor a head.
    fn refusal(&self, i: usize, outcome: Outcome) -> Rejection {
        let topic = self.lanes[i].topic.clone();
        let moved = |cursor| self.composite_cursor(Some((i, cursor)));
        match outcome {
            Outcome::Resync(resync) => match (moved(resync.oldest()), moved(resync.head())) {
                (Some(oldest), Some(head)) => Rejection::TopicResync {
                    topic,
                    resync,
                    oldest,
                    head,
                },
                _ => Rejection::SourceUnavailable,
            },
            Outcome::Ahead { head } => match moved(head) {
                Some(head) => Rejection::TopicAhead { topic, head },
                None => Rejection::SourceUnavailable,
            },
            Outcome::UnknownTopic => Rejection::UnknownTopic { topic: Some(topic) },
            Outcome::Gone => Rejection::Gone { topic: Some(topic) },
            Outcome::Events(_) | Outcome::Head(_) | Outcome::Closed { .. } => {
                Rejection::SourceUnavailable
            }
        }
    }
}

impl<S> Lane<S>
where
    S: Service<Subscribe, Response = Outcome>,
{
    /// Calls `source` for this lane if it has no call in flight, and polls the call.
    fn poll(&mut self, source: &mut S, cx: &mut Context<'_>) -> Poll<Result<Outcome, S::Error>> {
        let call = match &mut self.call {
            Some(call) => call,
            None => {
                ready!(source.poll_ready(cx))?;
                self.call
                    .insert(Box::pin(source.call(self.subscribe.clone())))
            }
        };
        let outcome = ready!(call.as_mut().poll(cx));
        self.call = None;
        Poll::Ready(outcome)
    }

    fn positioned(&self) -> bool {
        matches!(self.subscribe.position(), Position::After(_))
    }
}

pin_project! {
    /// An admitted request following its source: asks for what comes after its position, one
    /// call at a time, and moves the position on with every answer.
    pub(crate) struct Follow<S>
    where
        S: Service<Subscribe>,
    {
        source: S,
        subscribe: Subscribe,
        // The source's future; `None` between calls and while the source is not ready.
        #[pin]
        call: Option<S::Future>,
        // The topics of a multiplexed request, which `subscribe` and `call` then do not follow.
        many: Option<Box<Many<S>>>,
        #[pin]
        shutdown: Option<shutdown::Wait>,
        // The place under the layer's caps, given back by `release` or on drop.
        slot: Option<Slot>,
        // Whether the request head has storage of its own yet.
        detached: bool,
        // The coding the request accepts, when the layer compresses.
        choice: Option<crate::compression::Choice>,
        // Authorization checks still running, and the timer of the next one; `None` for a
        // request that is not checked again.
        watch: Option<Box<Watch>>,
        // The most bytes of event data one step hands over.
        // The layer's settings: the byte bound of a step, the reconnect window.
        pipeline: Arc<Pipeline>,
        // Metrics and the request's span; nothing without the `metrics` feature.
        telemetry: Telemetry,
    }
}

impl<S> Follow<S>
where
    S: Service<Subscribe>,
{
    /// What the request records.
    pub(crate) fn telemetry(&self) -> Recording<'_> {
        Recording {
            telemetry: &self.telemetry,
            meters: self.pipeline.limits.meters(),
        }
    }

    /// Where a request for one topic stands, once it or its source has named a cursor; `None`
    /// for a multiplexed request.
    pub(crate) fn cursor(&self) -> Option<Cursor> {
        match self.subscribe.position() {
            Position::After(cursor) if self.many.is_none() => Some(cursor),
            _ => None,
        }
    }

    /// What the client sends back to resume from where the request stands, once known: its
    /// cursor, or the composite cursor of a multiplexed request.
    pub(crate) fn composite_cursor(&self) -> Option<CompositeCursor> {
        match &self.many {
            Some(many) => many.composite_cursor(None),
            None => self.cursor().map(CompositeCursor::from),
        }
    }
}

impl<S> Follow<S>
where
    S: EventSource,
{
    /// `response` in the coding the request accepts, if the layer compresses.
    pub(crate) fn compress(&self, response: Response<PushBody>) -> Response<PushBody> {
        let compression = self.pipeline.compression.as_deref();
        crate::compression::answer(response, self.choice, compression)
    }

    /// The coding the request accepts and the layer's compression settings, for an answer
    /// that outlives the follower (a stream's body).
    pub(crate) fn compression(
        &self,
    ) -> Option<(
        crate::compression::Choice,
        Arc<crate::compression::Compression>,
    )> {
        Some((self.choice?, self.pipeline.compression.clone()?))
    }

    /// The request's head.
    pub(crate) fn parts(&self) -> &Parts {
        self.subscribe.parts()
    }

    /// Gives the request head storage of its own, once, for a request that is going to wait:
    /// see [`Subscribe::detach_parts`].
    pub(crate) fn detach(self: Pin<&mut Self>) {
        let this = self.project();
        if std::mem::replace(this.detached, true) {
            return;
        }
        match this.many {
            None => this.subscribe.detach_parts(),
            // The lanes share the head: copy it once, for all of them.
            Some(many) => {
                let mut copy = this.subscribe.clone();
                copy.replace_parts(Arc::new(this.subscribe.parts().clone()));
                copy.detach_parts();
                let parts = copy.shared_parts();
                for lane in &mut many.lanes {
                    lane.subscribe.replace_parts(parts.clone());
                }
                this.subscribe.replace_parts(parts);
            }
        }
    }

    /// Lets go of the request head, once, for a request that waits for the answer to a call it
    /// has already made and will make no other (a long poll after a cursor): the source had the
    /// head when it was called, and keeps its own clone if it needs it later. The request then
    /// holds no head at all while it waits. Anything else gets [`detach`](Self::detach).
    pub(crate) fn release_head(self: Pin<&mut Self>) {
        if self.watch.is_some() {
            // Its credentials are checked again while it waits.
            return self.detach();
        }
        let last_call = match &self.many {
            None => self.call.is_some() && matches!(self.subscribe.position(), Position::After(_)),
            Some(many) => many
                .lanes
                .iter()
                .all(|lane| lane.call.is_some() && lane.positioned() && lane.ready.is_none()),
        };
        if !last_call {
            return self.detach();
        }
        let this = self.project();
        if !std::mem::replace(this.detached, true) {
            let none = &this.pipeline.no_head;
            for lane in this.many.iter_mut().flat_map(|many| &mut many.lanes) {
                lane.subscribe.replace_parts(none.clone());
            }
            this.subscribe.replace_parts(none.clone());
        }
    }

    /// Drives the source until it answers, and maps its answer: events and the head move the
    /// position on; a cursor it cannot serve and a failure become the [`Rejection`] to answer
    /// with (a failure is logged here, once).
    pub(crate) fn poll_step(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Step, Rejection>> {
        let mut this = self.project();
        if let Some(watch) = this.watch {
            ready!(poll_watch(
                watch,
                this.subscribe,
                this.many,
                this.pipeline,
                cx
            ))?;
            if watch.checks.is_none() && watch.recheck.is_none() {
                // Checked, and not to be checked again: the request holds nothing for it.
                *this.watch = None;
            }
        }
        if let Some(many) = this.many {
            let step = ready!(poll_many(many, this.source, this.pipeline, cx))?;
            if let Step::Events(batch) = &step {
                this.telemetry
                    .delivered(this.pipeline.limits.meters(), batch.events());
            }
            return Poll::Ready(Ok(step));
        }
        if this.call.is_none() {
            match ready!(this.source.poll_ready(cx)) {
                Ok(()) => this
                    .call
                    .set(Some(this.source.call(this.subscribe.clone()))),
                Err(err) => return Poll::Ready(Err(failed(err))),
            }
        }
        let call = this.call.as_mut().as_pin_mut().expect("set above");
        let outcome = ready!(call.poll(cx));
        this.call.set(None);
        Poll::Ready(match outcome.map_err(failed)? {
            Outcome::Events(mut batch) => {
                // Bytes bound what one answer or frame holds until the client reads it; the
                // events left out come with the next step, from the advanced position.
                batch.truncate_to_bytes(this.pipeline.max_answer_bytes);
                this.telemetry
                    .delivered(this.pipeline.limits.meters(), batch.events());
                this.subscribe.advance(batch.last());
                Ok(Step::Events(batch))
            }
            Outcome::Head(cursor) => {
                this.subscribe.advance(cursor);
                Ok(Step::Head(cursor.into()))
            }
            Outcome::Resync(resync) => Err(Rejection::Resync(resync)),
            Outcome::Ahead { head } => Err(Rejection::CursorAhead { head }),
            Outcome::UnknownTopic => Err(Rejection::UnknownTopic { topic: None }),
            Outcome::Closed { head } => {
                this.subscribe.advance(head);
                Ok(Step::Closed(head.into()))
            }
            Outcome::Gone => Err(Rejection::Gone { topic: None }),
        })
    }

    /// Whether the shutdown signal has been triggered; registers for it otherwise.
    pub(crate) fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool {
        let shutdown = self.project().shutdown.as_pin_mut();
        shutdown.is_some_and(|wait| wait.poll(cx).is_ready())
    }

    /// A delay drawn at random from the reconnect window: when the client of a request that a
    /// shutdown ends should come back, so that clients ended together do not return together.
    pub(crate) fn reconnect_delay(&self) -> Duration {
        crate::random::within(self.pipeline.reconnect_window)
    }

    /// The answer for `batch`: a copy of the one already encoded for this very batch, or what
    /// `encode` writes, kept for the next poll answered with it.
    pub(crate) fn shared_answer(
        &self,
        batch: &Batch,
        encode: impl FnOnce() -> Response<PushBody>,
    ) -> Response<PushBody> {
        if batch.is_merged() {
            // The answer of one multiplexed request: nobody else gets this batch.
            return encode();
        }
        let mut shared = self.pipeline.shared_answer.locked();
        if let Some(answer) = shared.answer.as_ref().filter(|a| a.batch.same(batch)) {
            return answer.response();
        }
        let response = encode();
        // The second poll answered with this batch: keep its answer for the others.
        let repeated = shared.last.as_ref().is_some_and(|last| last.same(batch));
        match response.body().shared_bytes() {
            Some(body) if repeated => {
                shared.answer = Some(SharedAnswer {
                    batch: batch.clone(),
                    status: response.status(),
                    headers: response.headers().clone(),
                    body,
                });
            }
            _ => shared.last = Some(batch.clone()),
        }
        response
    }

    /// The frame of `batch` in the format of `key`: the bytes already encoded for this very batch
    /// and key, or what `encode` writes, kept for the next stream that sends it.
    pub(crate) fn shared_frame(
        &self,
        batch: &Batch,
        key: crate::format::FrameKey,
        encode: impl FnOnce() -> bytes::Bytes,
    ) -> bytes::Bytes {
        if batch.is_merged() {
            return encode();
        }
        let mut shared = self.pipeline.shared_frame.locked();
        let slot = shared
            .iter()
            .position(|(_, shared_key, _)| *shared_key == key);
        if let Some((shared_batch, _, frame)) = slot.map(|i| &shared[i]) {
            if shared_batch.same(batch) {
                return frame.clone();
            }
        }
        let frame = encode();
        let entry = (batch.clone(), key, frame.clone());
        match slot {
            Some(i) => shared[i] = entry,
            // A new key: keep at most a few, so that formats with ever-new keys cannot grow it.
            None if shared.len() < 4 => shared.push(entry),
            None => shared[0] = entry,
        }
        frame
    }

    /// Gives back the place under the caps and drops the source's future and the shutdown
    /// registration at once, for a request that has its last answer, without waiting for the
    /// server to drop it.
    pub(crate) fn release(self: Pin<&mut Self>) {
        let mut this = self.project();
        this.slot.take();
        this.call.set(None);
        this.many.take();
        this.shutdown.set(None);
        this.watch.take();
    }
}

/// Drives a request's authorization: waits for its checks, and starts them again each time
/// the re-check timer fires. Ready with `Ok` while the request may go on.
fn poll_watch<S>(
    watch: &mut Watch,
    subscribe: &Subscribe,
    many: &Option<Box<Many<S>>>,
    pipeline: &Pipeline,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Rejection>>
where
    S: Service<Subscribe>,
{
    loop {
        if let Some(checks) = &mut watch.checks {
            let decision = ready!(checks.poll(cx));
            watch.checks = None;
            refuse_unless_allowed(decision)?;
        }
        let Some(timer) = &mut watch.recheck else {
            return Poll::Ready(Ok(()));
        };
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Ready(Ok(()));
        }
        let (Some(authorizer), Some(every)) = (&pipeline.authorizer, pipeline.recheck) else {
            return Poll::Ready(Ok(()));
        };
        timer.as_mut().reset(tokio::time::Instant::now() + every);
        let parts = subscribe.parts();
        watch.checks = Some(match many {
            Some(many) => authorizer.start(parts, many.lanes.iter().map(|l| Some(&l.topic))),
            None => authorizer.start(parts, [None]),
        });
    }
}

/// One step of a multiplexed request: first a position in every topic (reported once, as a
/// [`Step::Head`], if the request named no cursor), then the events of the topics that have
/// some, each tagged with its topic and the composite cursor after it, within the pipeline's
/// bounds on events and bytes for the whole answer.
fn poll_many<S>(
    many: &mut Many<S>,
    source: &mut S,
    pipeline: &Pipeline,
    cx: &mut Context<'_>,
) -> Poll<Result<Step, Rejection>>
where
    S: EventSource,
{
    if !many.positioned {
        let mut waiting = false;
        for i in 0..many.lanes.len() {
            let lane = &mut many.lanes[i];
            if lane.positioned() {
                continue;
            }
            match lane.poll(source, cx) {
                Poll::Pending => waiting = true,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(failed(err))),
                Poll::Ready(Ok(Outcome::Head(cursor))) => lane.subscribe.advance(cursor),
                Poll::Ready(Ok(Outcome::Closed { head })) => {
                    lane.subscribe.advance(head);
                    lane.closed = true;
                }
                Poll::Ready(Ok(Outcome::Events(batch))) => {
                    // From the oldest event: the lane stands just before the batch, which is
                    // the first answer for that position.
                    let first = batch.events()[0].id();
                    let before = Cursor::new(first.epoch(), first.seq().saturating_sub(1));
                    lane.subscribe.advance(before);
                    lane.ready = Some(batch);
                }
                Poll::Ready(Ok(outcome)) => return Poll::Ready(Err(many.refusal(i, outcome))),
            }
        }
        if waiting {
            return Poll::Pending;
        }
        many.positioned = true;
        let resume = many
            .composite_cursor(None)
            .expect("every lane has a cursor");
        return Poll::Ready(Ok(Step::Head(resume)));
    }
    let count = many.lanes.len();
    let mut events: Vec<Event> = Vec::new();
    let mut bytes = 0;
    'lanes: for turn in 0..count {
        let i = (many.next + turn) % count;
        let lane = &mut many.lanes[i];
        if lane.closed {
            continue;
        }
        let batch = loop {
            let outcome = match lane.ready.take() {
                Some(batch) => Outcome::Events(batch),
                None => match lane.poll(source, cx) {
                    Poll::Pending => continue 'lanes,
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(failed(err))),
                    Poll::Ready(Ok(outcome)) => outcome,
                },
            };
            match outcome {
                Outcome::Events(batch) => break batch,
                // Not what a source answers a cursor, but harmless: wait after it.
                Outcome::Head(cursor) => lane.subscribe.advance(cursor),
                Outcome::Closed { head } => {
                    lane.subscribe.advance(head);
                    lane.closed = true;
                    continue 'lanes;
                }
                // Events of other topics go out first: the refusal's composite cursors must not
                // hold positions the client has not been given. The lane asks again next time.
                _ if !events.is_empty() => break 'lanes,
                outcome => return Poll::Ready(Err(many.refusal(i, outcome))),
            }
        };
        for event in batch.events() {
            let full = events.len() >= pipeline.max_events
                || bytes + event.size() > pipeline.max_answer_bytes;
            if full && !events.is_empty() {
                // The rest comes with the next answer, read again from where the lane stands.
                break;
            }
            bytes += event.size();
            many.lanes[i].subscribe.advance(event.id());
            let resume = many
                .composite_cursor(None)
                .expect("every lane has a cursor");
            let topic = many.lanes[i].topic.clone();
            events.push(event.clone().tagged(topic, resume));
        }
        if events.len() >= pipeline.max_events || bytes >= pipeline.max_answer_bytes {
            // Full: the lanes not polled yet come first in the next answer.
            many.next = (i + 1) % count;
            return Poll::Ready(Ok(Step::Events(Batch::merged(events))));
        }
    }
    if events.is_empty() {
        if many.lanes.iter().all(|lane| lane.closed) {
            let resume = many
                .composite_cursor(None)
                .expect("every lane has a cursor");
            return Poll::Ready(Ok(Step::Closed(resume)));
        }
        // Every lane waits for its source, registered to be woken.
        return Poll::Pending;
    }
    many.next = (many.next + 1) % count;
    Poll::Ready(Ok(Step::Events(Batch::merged(events))))
}

/// The bytes of a request head as a held request keeps it: the URI and every header.
fn head_size(parts: &Parts) -> usize {
    let uri = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len())
        + parts.uri.authority().map_or(0, |a| a.as_str().len());
    let headers: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    uri + headers
}

fn failed<E: Into<BoxError>>(err: E) -> Rejection {
    let err: BoxError = err.into();
    tracing::warn!(error = %err, "event source failed");
    Rejection::SourceUnavailable
}

impl<S> fmt::Debug for Follow<S>
where
    S: Service<Subscribe>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Follow")
            .field("position", &self.subscribe.position())
            .field("calling", &self.call.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
impl Pipeline {
    /// Checks the defaults both builders document for the settings they share.
    pub(crate) fn assert_shared_defaults(&self) {
        assert_eq!(self.limits.max(), None, "no cap");
        assert_eq!(self.limits.max_per_key(), None, "no cap per key");
        assert_eq!(self.max_events, 256);
        assert_eq!(self.max_answer_bytes, 256 * 1024);
        assert_eq!(self.max_head_bytes, 32 * 1024);
        assert_eq!(self.param, CursorParam::default());
        assert_eq!(self.topics, TopicsParam::default());
        assert_eq!(self.topics.max(), 16);
        assert_eq!(self.origin, Origin::Head);
        assert!(self.shutdown.is_none());
        assert_eq!(self.reconnect_window, Duration::from_secs(5));
    }
}
