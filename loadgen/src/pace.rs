//! Send times precise to tens of microseconds for the fixed-rate mode.
//!
//! tokio's timer wheel has millisecond slots and rounds a deadline up to the next one, and a parked worker wakes
//! when its millisecond `epoll_wait` timeout ends: a send due at t leaves anywhere in [t, t + ~2 ms). That is as
//! long as the latencies a 1 ms target is about, so each fixed-rate schedule waits on a `timerfd` of its own instead:
//! the kernel's hrtimer makes the fd readable at the deadline, which wakes tokio's I/O driver out of its
//! `epoll_wait` at once, whatever the wheel's timeout. No thread spins and none is added: the cost is one
//! `timerfd_settime` and one `read` per send, and one file descriptor per agent.
//!
//! Tried first and dropped: one pacing thread sleeping until 50 µs before the earliest deadline of all agents, then
//! spinning. Its median was as good, but on this 2-core machine the spinning thread competed with the tokio workers
//! it woke and the server, and the send lag's p99 grew to 9–58 ms (BENCHMARKS.md, "Load generator send lag").

use std::time::Instant;

/// Waits for deadlines of one schedule, in order. Falls back to tokio's timer where there is no `timerfd` (other
/// systems, or a failed `timerfd_create`, which a warning reports once per schedule).
pub(crate) struct Pacer {
    #[cfg(target_os = "linux")]
    fd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl Pacer {
    pub fn new() -> Self {
        #[cfg(target_os = "linux")]
        {
            let fd = linux::timerfd().and_then(linux::register);
            match fd {
                Ok(fd) => Pacer { fd: Some(fd) },
                Err(err) => {
                    tracing::warn!(error = %err, "no timerfd: fixed-rate sends fall back to tokio's millisecond timer");
                    Pacer { fd: None }
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        Pacer {}
    }

    /// Waits until `due`, never returning before it.
    pub async fn until(&mut self, due: Instant) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            match linux::wait(fd, due).await {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "timerfd failed: fixed-rate sends fall back to tokio's timer");
                    self.fd = None;
                }
            }
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Instant;

    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    pub(super) fn timerfd() -> io::Result<OwnedFd> {
        // SAFETY: timerfd_create takes two integers and returns a new descriptor or -1.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub(super) fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
        // SAFETY: the `OwnedFd` is a valid open descriptor, owned by the `AsyncFd` from here on, so it stays open
        // and the same for the `AsyncFd`'s whole life.
        Ok(unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?)
    }

    /// Arms the timer for what is left until `due` and waits for it to expire; returns at once if `due` has passed.
    /// Relative arming: the timer runs from after `Instant::now()` was read, so it cannot expire before `due`.
    pub(super) async fn wait(fd: &AsyncFd<OwnedFd>, due: Instant) -> io::Result<()> {
        loop {
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            let spec = libc::itimerspec {
                it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
                it_value: libc::timespec {
                    tv_sec: left.as_secs().min(i64::MAX as u64) as libc::time_t,
                    // Below 10^9, so it fits every `c_long`.
                    tv_nsec: left.subsec_nanos() as libc::c_long,
                },
            };
            // SAFETY: the descriptor is a live timerfd; `spec` is a valid itimerspec and the old value is not asked.
            if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // Readable once the timer expired: reading takes the expiration count and clears the readiness.
            fd.async_io(Interest::READABLE, |fd| {
                let mut expirations = 0u64;
                // SAFETY: reads at most 8 bytes into a live u64 from a live descriptor.
                let n = unsafe { libc::read(fd.as_raw_fd(), (&raw mut expirations).cast(), 8) };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            })
            .await?;
            // The loop checks the time again: a readiness left over from an earlier arming cannot release us early.
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Every wait returns, none before its deadline: in order, equal, and already past.
    #[tokio::test]
    async fn waits_never_return_early() {
        let mut pacer = Pacer::new();
        let start = Instant::now() + Duration::from_millis(1);
        for us in [0u64, 100, 100, 250, 900, 2_000] {
            let due = start + Duration::from_micros(us);
            pacer.until(due).await;
            assert!(Instant::now() >= due);
        }
        let past = Instant::now().checked_sub(Duration::from_millis(5)).unwrap_or_else(Instant::now);
        pacer.until(past).await;
    }
}
