//! Send times precise to tens of microseconds for the fixed-rate mode.
//!
//! tokio's timer wheel has millisecond slots and rounds a deadline up to the next one, and a parked worker wakes
//! when the kernel lets it: a send due at t leaves anywhere in [t, t + ~2 ms). That is as long as the latencies a
//! 1 ms target is about, so the fixed-rate mode takes its send times from this pacer instead.
//!
//! One thread, `loadgen-pacer`, holds every pending deadline of the run in a heap. It sleeps on a condition variable
//! until [`SPIN`] before the earliest one (its timer slack lowered to 1 µs, so the kernel's hrtimer wakes it on
//! time instead of up to 50 µs late), spins through the rest, and then completes the waiting task's oneshot; the
//! task records how late it actually got to run, which includes waking its tokio worker. Why a thread and not one
//! `timerfd` per agent: one heap serves any number of agents with one timer and no file descriptors, and a worker
//! that is busy with replies cannot delay the clock, only the task it wakes (which the send lag then shows).
//!
//! CPU cost is bounded: the thread spins at most [`SPIN`] per distinct deadline, so at 3,000 sends a second at most
//! 3,000 × 50 µs = 15 % of one core, and it sleeps otherwise (measured in BENCHMARKS.md, "Load generator send lag").
//! Deadlines within the spin window of one another share it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// How long before a deadline the pacer stops sleeping and spins. Above what a sleep overshoots by on an idle
/// machine with 1 µs timer slack (a few to a few tens of µs), so most sends leave within a few µs of their time.
pub(crate) const SPIN: Duration = Duration::from_micros(50);

struct Entry {
    due: Instant,
    /// Orders deadlines that are equal, first asked first released.
    seq: u64,
    fire: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    closed: bool,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    changed: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock guards a heap of plain values: one a panic left behind is still consistent enough to drain.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The run's pacer. Dropping it stops its thread; deadlines still pending then fall back to tokio's timer.
pub(crate) struct Pacer {
    inner: Arc<Inner>,
}

impl Pacer {
    /// Starts the pacing thread. If the thread cannot be started, every wait falls back to tokio's timer (still
    /// never early), and a warning says so.
    pub fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let theirs = inner.clone();
        if let Err(err) = std::thread::Builder::new().name("loadgen-pacer".into()).spawn(move || run(&theirs)) {
            tracing::warn!(error = %err, "no pacing thread: fixed-rate sends fall back to tokio's millisecond timer");
            inner.lock().closed = true;
        }
        Pacer { inner }
    }

    /// Waits until `due`, never returning before it.
    pub async fn until(&self, due: Instant) {
        let (fire, fired) = oneshot::channel();
        {
            let mut state = self.inner.lock();
            if state.closed {
                drop(fire);
            } else {
                state.seq += 1;
                let seq = state.seq;
                let earliest = state.heap.peek().is_none_or(|Reverse(first)| due < first.due);
                state.heap.push(Reverse(Entry { due, seq, fire }));
                if earliest {
                    self.inner.changed.notify_one();
                }
            }
        }
        // `Err`: the pacer stopped (or never started) with this deadline pending.
        if fired.await.is_err() {
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        }
        // The guarantee, whatever released us: the pacer fires only at or past `due`, tokio's timer rounds up.
        debug_assert!(Instant::now() >= due);
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        state.closed = true;
        // Pending waiters get `Err` and fall back to tokio's timer.
        state.heap.clear();
        drop(state);
        self.inner.changed.notify_one();
    }
}

fn run(inner: &Inner) {
    lower_timer_slack();
    let mut state = inner.lock();
    loop {
        if state.closed {
            return;
        }
        let Some(Reverse(first)) = state.heap.peek() else {
            state = inner.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            continue;
        };
        let due = first.due;
        let now = Instant::now();
        if due <= now {
            if let Some(Reverse(entry)) = state.heap.pop() {
                // A waiter that went away (its run stopped) no longer needs the wake-up.
                let _ = entry.fire.send(());
            }
            continue;
        }
        let left = due - now;
        if left > SPIN {
            // Woken early by a new earliest deadline or by the drop; either way the loop looks again.
            state = inner.changed.wait_timeout(state, left - SPIN).unwrap_or_else(|p| p.into_inner()).0;
        } else {
            // The last stretch: spin without the lock, so that agents can queue their next deadlines meanwhile.
            drop(state);
            while Instant::now() < due {
                std::hint::spin_loop();
            }
            state = inner.lock();
        }
    }
}

/// The kernel may delay a sleeping thread's wake-up by its timer slack (50 µs by default) to batch timers; the
/// pacer wants its wake-ups on time. Only this thread's slack changes.
#[cfg(target_os = "linux")]
fn lower_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and changes only the calling thread's timer slack.
    if unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) } != 0 {
        tracing::debug!("PR_SET_TIMERSLACK refused; the pacer's sleeps may overshoot by the default slack");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_timer_slack() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every deadline is released once, none before its time, including ones asked out of order and equal ones.
    #[tokio::test]
    async fn every_wait_returns_once_and_never_early() {
        let pacer = Arc::new(Pacer::start());
        let start = Instant::now() + Duration::from_millis(2);
        // Out of order (a later deadline asked first) and two tasks on each deadline.
        let offsets_us = [900u64, 100, 500, 100, 0, 700, 300, 300];
        let waits = offsets_us.iter().map(|&us| {
            let pacer = pacer.clone();
            let due = start + Duration::from_micros(us);
            tokio::spawn(async move {
                pacer.until(due).await;
                (due, Instant::now())
            })
        });
        let done = futures::future::join_all(waits).await;
        assert_eq!(done.len(), offsets_us.len());
        for result in done {
            let (due, returned) = result.expect("wait task");
            assert!(returned >= due, "returned {:?} before its deadline", due - returned);
        }
    }

    /// A deadline already past returns at once; after the pacer is gone, waits still hold (tokio's timer).
    #[tokio::test]
    async fn past_deadlines_and_a_stopped_pacer() {
        let pacer = Pacer::start();
        let past = Instant::now();
        pacer.until(past).await;
        drop(pacer);
        let pacer = Pacer { inner: Arc::new(Inner::default()) };
        pacer.inner.lock().closed = true;
        let due = Instant::now() + Duration::from_millis(3);
        pacer.until(due).await;
        assert!(Instant::now() >= due);
    }
}
