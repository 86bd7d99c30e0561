//! Bounded write batchers: one background task per batcher collects items from a bounded queue
//! and writes them in **one transaction per flush**.
//!
//! * **Flush triggers:** the accumulator reaches `flush_at` items, `flush_interval` elapses, an
//!   explicit [`Batcher::flush`], or shutdown ([`Batcher::shutdown`], or every handle dropped).
//! * **Bounded memory:** at most `queue_capacity` items wait in the queue and at most
//!   `flush_at` (stats: `max_rows` while a failing flush is retried) sit in the accumulator.
//! * **Full queue:** [`Batcher::enqueue`] never blocks (handlers must not stall on a slow
//!   database); an item that does not fit is dropped and counted in [`BatcherStats::dropped`].
//! * **Failed flush:** each batcher decides (stats keep rows for the next tick, as Coder's
//!   DBBatcher; metadata and heartbeats drop them, as the next report supersedes them), counted
//!   in [`BatcherStats::flush_errors`]. After a failure, size triggers wait for the next tick so
//!   a dead database does not turn into a hot retry loop.

pub(crate) mod heartbeat;
pub(crate) mod metadata;
pub(crate) mod stats;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::StoreError;

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

/// What a batcher writes, and how.
pub(crate) trait Flush: Send + Sync + 'static {
    type Item: Send + 'static;
    type Acc: Send + Default + 'static;

    /// Add one item; returns false if the accumulator refused it (counted as dropped).
    fn push(&self, acc: &mut Self::Acc, item: Self::Item) -> bool;
    fn len(acc: &Self::Acc) -> usize;
    /// Write `acc` in one transaction. On success `acc` must be left empty; on failure the
    /// implementation leaves in `acc` what it wants retried.
    fn flush(&self, acc: &mut Self::Acc) -> impl Future<Output = Result<usize, StoreError>> + Send;
}

/// Counters of one batcher.
#[derive(Debug, Default)]
pub(crate) struct BatchCounters {
    enqueued: AtomicU64,
    dropped: AtomicU64,
    flushes: AtomicU64,
    flush_errors: AtomicU64,
    items_flushed: AtomicU64,
}

/// A snapshot of one batcher's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatcherStats {
    /// Items accepted into the queue.
    pub enqueued: u64,
    /// Items dropped: queue full, accumulator full, or batcher shut down.
    pub dropped: u64,
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
            dropped: self.dropped.load(Ordering::Relaxed),
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
                    if !flusher.push(&mut acc, item) {
                        counters.dropped(1);
                    }
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
                            if !flusher.push(&mut acc, item) {
                                counters.dropped(1);
                            }
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

async fn do_flush<F: Flush>(flusher: &F, acc: &mut F::Acc, failing: &mut bool, counters: &BatchCounters) {
    if F::len(acc) == 0 {
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
            tracing::warn!(error = %e, pending = F::len(acc), "batcher flush failed");
        }
    }
}
