//! Bounded write batchers: one background task per batcher collects items from a bounded queue
//! and writes them in **one transaction per flush**.
//!
//! * **Flush triggers:** the accumulator reaches `flush_at` items, `flush_interval` elapses, an
//!   explicit [`Batcher::flush`], or shutdown ([`Batcher::shutdown`], or every handle dropped).
//! * **Bounded memory:** at most `queue_capacity` items wait in the queue and at most
//!   `flush_at` (stats: `max_rows` while a failing flush is retried) sit in the accumulator.
//! * **Full queue:** [`Batcher::enqueue`] never blocks (handlers must not stall on a slow
//!   database); an item that does not fit is refused and counted in [`BatcherStats::refused`]
//!   and [`BatcherStats::dropped`].
//! * **Failed flush:** each batcher decides (stats, heartbeats and monitor states keep what they
//!   hold for the next tick, stats as Coder's DBBatcher, heartbeats and monitor states bounded by
//!   one entry per agent or monitor; metadata
//!   drops the batch, as Coder does, the next report superseding it), counted in
//!   [`BatcherStats::flush_errors`]; every item a failed flush discards is counted in
//!   [`BatcherStats::dropped`]. After a failure, size triggers wait for the next tick so a dead
//!   database does not turn into a hot retry loop.
//! * **Accounting:** every item offered is accounted for, so an outage can be audited from the
//!   counters alone: `enqueued + refused == items_flushed + superseded + dropped + pending`.

pub(crate) mod heartbeat;
pub(crate) mod metadata;
pub(crate) mod monitors;
pub(crate) mod stats;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::{Core, StoreError};

/// Sizes and timings of one batcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Flush at least this often when anything is pending.
    pub flush_interval: Duration,
    /// Flush as soon as this many items (rows, or distinct keys) are pending.
    pub flush_at: usize,
    /// Items that may wait in the queue before `enqueue` starts dropping.
    pub queue_capacity: usize,
}

/// What [`Flush::push`] did with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Held for the next flush.
    Added,
    /// Merged with another item of the same key: one of the two (the older) will never be
    /// written, and is counted in [`BatcherStats::superseded`].
    Superseded,
    /// The accumulator is full; the item is dropped (counted).
    Refused,
}

/// What a batcher writes, and how.
pub(crate) trait Flush: Send + Sync + 'static {
    type Item: Send + 'static;
    type Acc: Send + Default + 'static;

    fn push(&self, acc: &mut Self::Acc, item: Self::Item) -> Pushed;
    /// Items held, each standing for exactly one item not superseded.
    fn len(acc: &Self::Acc) -> usize;
    /// Write `acc` in one transaction. On success `acc` must be left empty; on failure the
    /// implementation leaves in `acc` what it wants retried (what it removes counts as dropped).
    fn flush(&self, acc: &mut Self::Acc) -> impl Future<Output = Result<usize, StoreError>> + Send;
}

/// Publishes a flush's notifications (`(channel, payload)`) unless its backend `sent` them inside the flush
/// transaction. The rows are written by then, so a failed publish is logged, not returned.
pub(crate) async fn publish_unsent(core: &Core, sent: bool, notices: &[(&str, &str)], what: &str) {
    if sent {
        return;
    }
    for (channel, payload) in notices {
        if let Err(e) = core.pubsub.publish(channel, payload).await {
            tracing::warn!(error = %e, "publish {what}");
        }
    }
}

/// Counters of one batcher.
#[derive(Debug, Default)]
pub(crate) struct BatchCounters {
    enqueued: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    superseded: AtomicU64,
    flushes: AtomicU64,
    flush_errors: AtomicU64,
    items_flushed: AtomicU64,
}

/// A snapshot of one batcher's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatcherStats {
    /// Items accepted into the queue.
    pub enqueued: u64,
    /// Items refused at the queue (full, or the batcher shut down); never in `enqueued`.
    pub refused: u64,
    /// Items lost, whatever the reason: refused at the queue (included in `refused` too), over a
    /// full accumulator, or discarded by a failed flush that is not retried.
    pub dropped: u64,
    /// Items replaced by a newer one of the same key before they were written (the newer one is
    /// written instead).
    pub superseded: u64,
    /// Successful flushes (each one transaction).
    pub flushes: u64,
    /// Failed flushes.
    pub flush_errors: u64,
    /// Items written by successful flushes.
    pub items_flushed: u64,
}

impl BatchCounters {
    pub(crate) fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> BatcherStats {
        BatcherStats {
            enqueued: self.enqueued.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            superseded: self.superseded.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            flush_errors: self.flush_errors.load(Ordering::Relaxed),
            items_flushed: self.items_flushed.load(Ordering::Relaxed),
        }
    }
}

enum Msg<T> {
    Item(T),
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// Handle to one running batcher.
pub(crate) struct Batcher<F: Flush> {
    tx: mpsc::Sender<Msg<F::Item>>,
    counters: Arc<BatchCounters>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl<F: Flush> Batcher<F> {
    pub fn spawn(flusher: F, opts: BatchOptions, counters: Arc<BatchCounters>) -> Self {
        let (tx, rx) = mpsc::channel(opts.queue_capacity.max(1));
        let task = tokio::spawn(run(flusher, rx, opts, counters.clone()));
        Batcher { tx, counters, task: Mutex::new(Some(task)) }
    }

    /// Queue one item without waiting. Returns false (and counts a drop) if it did not fit.
    pub fn enqueue(&self, item: F::Item) -> bool {
        match self.tx.try_send(Msg::Item(item)) {
            Ok(()) => {
                self.counters.enqueued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                self.counters.dropped(1);
                false
            }
        }
    }

    /// Flush now and wait for it (control messages wait for queue space).
    pub async fn flush(&self) {
        let (ack, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Flush what is pending and stop the task. Later enqueues are dropped and counted.
    pub async fn shutdown(&self) {
        let (ack, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(ack)).await.is_ok() {
            let _ = rx.await;
        }
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    pub fn stats(&self) -> BatcherStats {
        self.counters.snapshot()
    }
}

async fn run<F: Flush>(
    flusher: F,
    mut rx: mpsc::Receiver<Msg<F::Item>>,
    opts: BatchOptions,
    counters: Arc<BatchCounters>,
) {
    let mut acc = F::Acc::default();
    let mut tick = tokio::time::interval(opts.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Set after a failed flush; size triggers then wait for the next tick.
    let mut failing = false;

    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Item(item)) => {
                    push(&flusher, &mut acc, item, &counters);
                    if !failing && F::len(&acc) >= opts.flush_at {
                        do_flush(&flusher, &mut acc, &mut failing, &counters).await;
                    }
                }
                Some(Msg::Flush(ack)) => {
                    do_flush(&flusher, &mut acc, &mut failing, &counters).await;
                    let _ = ack.send(());
                }
                Some(Msg::Shutdown(ack)) => {
                    rx.close();
                    // Drain what was queued before the shutdown request, then flush once.
                    while let Ok(msg) = rx.try_recv() {
                        if let Msg::Item(item) = msg {
                            push(&flusher, &mut acc, item, &counters);
                            if F::len(&acc) >= opts.flush_at {
                                do_flush(&flusher, &mut acc, &mut failing, &counters).await;
                            }
                        }
                    }
                    do_flush(&flusher, &mut acc, &mut failing, &counters).await;
                    let _ = ack.send(());
                    return;
                }
                None => {
                    do_flush(&flusher, &mut acc, &mut failing, &counters).await;
                    return;
                }
            },
            _ = tick.tick() => do_flush(&flusher, &mut acc, &mut failing, &counters).await,
        }
    }
}

fn push<F: Flush>(flusher: &F, acc: &mut F::Acc, item: F::Item, counters: &BatchCounters) {
    match flusher.push(acc, item) {
        Pushed::Added => {}
        Pushed::Superseded => {
            counters.superseded.fetch_add(1, Ordering::Relaxed);
        }
        Pushed::Refused => counters.dropped(1),
    }
}

async fn do_flush<F: Flush>(flusher: &F, acc: &mut F::Acc, failing: &mut bool, counters: &BatchCounters) {
    let held = F::len(acc);
    if held == 0 {
        return;
    }
    match flusher.flush(acc).await {
        Ok(n) => {
            *failing = false;
            counters.flushes.fetch_add(1, Ordering::Relaxed);
            counters.items_flushed.fetch_add(n as u64, Ordering::Relaxed);
        }
        Err(e) => {
            *failing = true;
            counters.flush_errors.fetch_add(1, Ordering::Relaxed);
            let kept = F::len(acc);
            let lost = held.saturating_sub(kept);
            counters.dropped(lost as u64);
            tracing::warn!(error = %e, kept, dropped = lost, "batcher flush failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Keyed last-wins items; flushes fail while `failures` is above zero, keeping the batch when `keep` is set.
    struct Fake {
        failures: AtomicU64,
        keep: bool,
        cap: usize,
    }

    impl Flush for Fake {
        type Item = (u32, u32);
        type Acc = HashMap<u32, u32>;

        fn push(&self, acc: &mut HashMap<u32, u32>, (key, value): (u32, u32)) -> Pushed {
            if acc.len() >= self.cap && !acc.contains_key(&key) {
                return Pushed::Refused;
            }
            match acc.insert(key, value) {
                Some(_) => Pushed::Superseded,
                None => Pushed::Added,
            }
        }

        fn len(acc: &HashMap<u32, u32>) -> usize {
            acc.len()
        }

        async fn flush(&self, acc: &mut HashMap<u32, u32>) -> Result<usize, StoreError> {
            if self.failures.load(Ordering::Relaxed) > 0 {
                self.failures.fetch_sub(1, Ordering::Relaxed);
                if !self.keep {
                    acc.clear();
                }
                return Err(StoreError::Closed);
            }
            let n = acc.len();
            acc.clear();
            Ok(n)
        }
    }

    fn batcher(keep: bool, failures: u64) -> Batcher<Fake> {
        let opts = BatchOptions { flush_interval: Duration::from_secs(3600), flush_at: 1000, queue_capacity: 8 };
        Batcher::spawn(Fake { failures: AtomicU64::new(failures), keep, cap: 4 }, opts, Arc::default())
    }

    /// offered = written + superseded + dropped, once nothing is pending.
    fn balanced(s: &BatcherStats) -> bool {
        s.enqueued + s.refused == s.items_flushed + s.superseded + s.dropped
    }

    #[tokio::test]
    async fn every_item_is_accounted_for_when_a_failed_flush_drops_its_batch() {
        let b = batcher(false, 1);
        for (k, v) in [(1, 1), (1, 2), (2, 1), (3, 1), (4, 1), (5, 1)] {
            assert!(b.enqueue((k, v)));
        }
        b.flush().await; // fails: the four keys held are dropped and counted
        let s = b.stats();
        assert_eq!((s.superseded, s.dropped, s.flush_errors, s.items_flushed), (1, 5, 1, 0), "{s:?}");
        assert!(balanced(&s), "{s:?}");
        assert!(b.enqueue((1, 3)));
        b.flush().await;
        let s = b.stats();
        assert_eq!((s.items_flushed, s.dropped), (1, 5), "{s:?}");
        assert!(balanced(&s), "{s:?}");
    }

    #[tokio::test]
    async fn a_kept_batch_lands_at_the_next_flush_and_nothing_is_dropped() {
        let b = batcher(true, 2);
        for (k, v) in [(1, 1), (2, 1), (1, 2)] {
            assert!(b.enqueue((k, v)));
        }
        b.flush().await;
        b.flush().await;
        let s = b.stats();
        assert_eq!((s.flush_errors, s.dropped, s.items_flushed), (2, 0, 0), "{s:?}");
        b.flush().await;
        let s = b.stats();
        assert_eq!((s.items_flushed, s.superseded, s.dropped), (2, 1, 0), "{s:?}");
        assert!(balanced(&s), "{s:?}");
    }

    #[tokio::test]
    async fn refusals_at_a_closed_queue_count_as_refused_and_dropped() {
        let b = batcher(true, 0);
        b.shutdown().await;
        assert!(!b.enqueue((1, 1)));
        let s = b.stats();
        assert_eq!((s.enqueued, s.refused, s.dropped), (0, 1, 1), "{s:?}");
        assert!(balanced(&s), "{s:?}");
    }
}
