//! The ingest queue: where frames wait between the broker and the processor loop,
//! bounded by the bytes they really hold (`--ingest-buffer-bytes`).
//!
//! async-nats bounds each subscription's buffer in messages. A bound in bytes made
//! of that has to assume every frame is `--max-payload` (64 KiB): 256 MiB came to
//! 2,048 messages per subscription, a few milliseconds of a burst of 0.5 KB frames,
//! and honest bursts were dropped as "slow consumer" with most of the budget unused.
//!
//! So one task moves every data message, as soon as the client hands it over,
//! into a queue that counts what each message holds ([`cost`]). The processor
//! loop reads the queue. What does not fit is dropped here, counted (in all and
//! per session, `stats.dropped_count`) and logged at most every few seconds. The
//! client's own buffers (`--ingest-buffer` messages each, allocated as used) then
//! hold only what arrives between two runs of this task: the task does nothing
//! else, so it keeps up with the socket.
//!
//! # Ordering
//!
//! The processor answers a request only after every frame the broker routed
//! before it (server/processor.rs, "Ordering"). A frame may still sit in the
//! client's buffer when the request arrives, not yet moved: [`Intake::flush`]
//! has the task move everything already delivered before the loop catches up.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::{Message, Subscriber};
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::protocol::id::SessionId;
use crate::protocol::subjects;
use crate::server::app::App;
use crate::server::metrics::IngestCounters;
use crate::server::ratelimit::LogThrottle;

/// What a queued message costs beyond its subject and payload: the `Message`
/// itself, the queue's slot and the allocator's rounding. Counted so a flood of
/// tiny frames is bounded too.
const OVERHEAD: usize = std::mem::size_of::<Message>() + 64;

/// How often at most the "dropped" warning is logged.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Sessions whose drops are counted one by one until the processor collects
/// them (every second): past this, only the total counts. Bounds what a flood
/// of made-up ids can cost here (~40 bytes an entry).
const MAX_DROPPED_IDS: usize = 16_384;

/// Most messages one flush moves: far more than the client buffers between two
/// runs of the task, so the bound is only there so a flush always ends.
const FLUSH_LIMIT: usize = 1 << 20;

/// The bytes a queued message holds, as counted against `--ingest-buffer-bytes`.
///
/// Its payload is a slice of the client's 64 KiB read buffer, which stays
/// allocated while any slice of it does. Queued messages came one after another
/// from the socket, so the buffers they pin are mostly filled by themselves:
/// counting the slices is counting the buffers, to within one of them.
pub fn cost(message: &Message) -> usize {
    message.payload.len()
        + message.subject.len()
        + message.reply.as_ref().map_or(0, |r| r.len())
        + OVERHEAD
}

/// What the task that fills the queue and the loop that empties it share.
/// The counters are the service's (`Metrics::ingest`), for `sessions.stats`
/// and `/metrics`.
struct Shared {
    app: Arc<App>,
    /// Dropped, per session, until the processor collects them.
    by_session: std::sync::Mutex<HashMap<SessionId, u64>>,
    log: LogThrottle,
}

impl Shared {
    fn counters(&self) -> &IngestCounters {
        &self.app.metrics.ingest
    }

    /// Queues `message` if it fits, else drops and counts it.
    fn push(&self, queue: &mpsc::UnboundedSender<Message>, message: Message) {
        let counters = self.counters();
        let limit = self.app.limits.ingest_buffer_bytes;
        let cost = cost(&message);
        let before = counters.held.fetch_add(cost, Relaxed);
        if before + cost > limit {
            counters.held.fetch_sub(cost, Relaxed);
            self.dropped_one(&message, before, limit);
            return;
        }
        counters.peak.fetch_max(before + cost, Relaxed);
        if queue.send(message).is_err() {
            // The processor is gone (stopping): nothing will read it.
            counters.held.fetch_sub(cost, Relaxed);
        }
    }

    fn dropped_one(&self, message: &Message, held: usize, limit: usize) {
        self.counters().dropped.fetch_add(1, Relaxed);
        let id =
            subjects::parse_data(&message.subject).and_then(|(id, _)| SessionId::parse(id).ok());
        if let Some(id) = id {
            let mut by_session = self.by_session.lock().unwrap_or_else(|p| p.into_inner());
            let room = by_session.len() < MAX_DROPPED_IDS;
            match by_session.get_mut(&id) {
                Some(n) => *n += 1,
                None if room => {
                    by_session.insert(id, 1);
                }
                None => {}
            }
        }
        if let Some(suppressed) = self.log.allow(DROP_LOG_INTERVAL) {
            let subject: String = message.subject.chars().take(120).collect();
            tracing::warn!(
                %subject,
                held_bytes = held,
                limit_bytes = limit,
                suppressed,
                "the ingest buffer is full (--ingest-buffer-bytes): frames dropped \
                 before the processor could read them"
            );
        }
    }
}

/// What the loop asks of the task.
enum Command {
    /// Move everything the client already delivered, then answer.
    Flush(oneshot::Sender<()>),
    /// Unsubscribe and end.
    Stop(oneshot::Sender<()>),
}

/// The processor's end of the queue: a stream of data messages, in the order
/// each subscription delivered them.
pub struct Intake {
    queue: mpsc::UnboundedReceiver<Message>,
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
}

impl Intake {
    /// Starts the task that moves `subscriptions`' messages into a queue of at
    /// most `app.limits.ingest_buffer_bytes`.
    pub fn start(subscriptions: Vec<Subscriber>, app: Arc<App>) -> Self {
        app.metrics
            .ingest
            .limit
            .store(app.limits.ingest_buffer_bytes, Relaxed);
        let shared = Arc::new(Shared {
            app,
            by_session: Default::default(),
            log: Default::default(),
        });
        let (sender, queue) = mpsc::unbounded_channel();
        let (commands, inbox) = mpsc::channel(4);
        tokio::spawn(mover(
            Subscriptions::new(subscriptions),
            sender,
            Arc::clone(&shared),
            inbox,
        ));
        Intake {
            queue,
            shared,
            commands,
        }
    }

    /// Returns once every message the client had delivered when this was
    /// called is in the queue (or dropped, the queue being full).
    pub async fn flush(&self) {
        let (done, finished) = oneshot::channel();
        if self.commands.send(Command::Flush(done)).await.is_ok() {
            // An error: the task ended, and moved everything it will.
            let _ = finished.await;
        }
    }

    /// Unsubscribes from the broker; what is queued can still be read.
    pub async fn stop(&self) {
        let (done, finished) = oneshot::channel();
        if self.commands.send(Command::Stop(done)).await.is_ok() {
            let _ = finished.await;
        }
    }

    /// The sessions whose frames were dropped since the last call, and how many.
    pub fn take_dropped(&self) -> HashMap<SessionId, u64> {
        std::mem::take(
            &mut *self
                .shared
                .by_session
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }
}

impl futures::Stream for Intake {
    type Item = Message;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Message>> {
        let polled = self.queue.poll_recv(cx);
        if let Poll::Ready(Some(message)) = &polled {
            let held = &self.shared.counters().held;
            held.fetch_sub(cost(message), Relaxed);
        }
        polled
    }
}

/// The task: moves messages from the subscriptions into the queue until they
/// end or it is told to stop.
///
/// Outside tokio's cooperative budget: within it a channel answers `Pending`
/// after 128 receives, and the task would go to the back of the run queue
/// while the client's connection task hands over thousands of messages per
/// turn: it fell behind, and the client's buffer overflowed. Instead it moves
/// everything the client holds each time it runs, then waits for more.
///
/// Not a fixed number per turn either: the connection task reads until its own
/// budget of 128 socket reads runs out, up to 64 KiB each, so one turn of it can
/// hand over 10,000 frames of 0.75 KB and more of smaller ones. With 4,096 moved
/// per turn, `paddock bench` (600,000 frames blasted at 100 sessions) overflowed
/// the client's 262,144 messages in its fourth round. What one turn here moves is
/// bounded by what the client can hold (`--ingest-buffer` per subscription), at
/// some 100 ns each.
async fn mover(
    mut subscriptions: Subscriptions,
    queue: mpsc::UnboundedSender<Message>,
    shared: Arc<Shared>,
    mut commands: mpsc::Receiver<Command>,
) {
    tokio::task::unconstrained(async move {
        loop {
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(Command::Flush(done)) => {
                        move_ready(&mut subscriptions, &queue, &shared);
                        let _ = done.send(());
                    }
                    Some(Command::Stop(done)) => {
                        for subscription in &mut subscriptions.all {
                            if let Err(e) = subscription.unsubscribe().await {
                                tracing::debug!(error = %e, "could not unsubscribe a data subscription");
                            }
                        }
                        let _ = done.send(());
                        return;
                    }
                    // The processor is gone.
                    None => return,
                },
                message = subscriptions.next() => match message {
                    Some(message) => shared.push(&queue, message),
                    // Every subscription ended: dropping the sender ends the stream.
                    None => return,
                },
            }
            // On a runtime of several threads the client may go on handing
            // over while this runs: past what it can hold, let others run.
            while move_ready(&mut subscriptions, &queue, &shared) == FLUSH_LIMIT {
                tokio::task::yield_now().await;
            }
        }
    })
    .await;
}

/// Moves what the client already holds into the queue, at most [`FLUSH_LIMIT`]
/// messages; answers how many.
fn move_ready(
    subscriptions: &mut Subscriptions,
    queue: &mpsc::UnboundedSender<Message>,
    shared: &Shared,
) -> usize {
    let mut moved = 0;
    while moved < FLUSH_LIMIT
        && let Some(Some(message)) = subscriptions.next().now_or_never()
    {
        shared.push(queue, message);
        moved += 1;
    }
    moved
}

/// Every data subscription (two, or two per owned partition), polled in turn
/// from where the last message came. Not `SelectAll`: it re-queues its stream in
/// a FuturesUnordered after every item, a measurable cost per frame; this is
/// `select` for any number.
struct Subscriptions {
    all: Vec<Subscriber>,
    next: usize,
}

impl Subscriptions {
    fn new(all: Vec<Subscriber>) -> Self {
        Subscriptions { all, next: 0 }
    }
}

impl futures::Stream for Subscriptions {
    type Item = Message;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Message>> {
        let this = &mut *self;
        let n = this.all.len();
        let mut ended = 0;
        for i in 0..n {
            let k = (this.next + i) % n;
            match this.all[k].poll_next_unpin(cx) {
                Poll::Ready(Some(message)) => {
                    this.next = if k + 1 == n { 0 } else { k + 1 };
                    return Poll::Ready(Some(message));
                }
                Poll::Ready(None) => ended += 1,
                Poll::Pending => {}
            }
        }
        if ended == n {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::app::Limits;

    fn frame(id: &SessionId, bytes: usize) -> Message {
        Message {
            subject: subjects::data(id, subjects::DataKind::Telemetry).into(),
            reply: None,
            payload: vec![b' '; bytes].into(),
            headers: None,
            status: None,
            description: None,
            length: bytes,
        }
    }

    #[test]
    fn the_queue_holds_what_fits_in_its_bytes_and_counts_the_rest_per_session() {
        let (honest, flood) = (SessionId::new_v4(), SessionId::new_v4());
        let one = cost(&frame(&honest, 500));
        let app = Arc::new(App::new(Limits {
            ingest_buffer_bytes: 10 * one,
            ..Limits::default()
        }));
        let shared = Shared {
            app,
            by_session: Default::default(),
            log: Default::default(),
        };
        let (sender, mut queue) = mpsc::unbounded_channel();
        // Ten small frames fit, whatever --max-payload is: bytes, not a count.
        for _ in 0..10 {
            shared.push(&sender, frame(&honest, 500));
        }
        shared.push(&sender, frame(&flood, 500));
        shared.push(&sender, frame(&flood, 500));
        let counters = &shared.app.metrics.ingest;
        assert_eq!(counters.held.load(Relaxed), 10 * one);
        assert_eq!(counters.dropped.load(Relaxed), 2);
        assert_eq!(counters.peak.load(Relaxed), 10 * one);
        let dropped = std::mem::take(&mut *shared.by_session.lock().unwrap());
        assert_eq!(dropped, HashMap::from([(flood, 2)]));
        // Everything queued is there to be read.
        let mut read = 0;
        while queue.try_recv().is_ok() {
            read += 1;
        }
        assert_eq!(read, 10);
    }
}
