//! Bounded waits for tests: each ends at [`WAIT`] at the latest and then fails, saying what it waited for. A hang
//! guard only: no assertion should depend on how long the wait took.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Every wait ends here at the latest: a hang fails the test instead of blocking it.
pub const WAIT: Duration = Duration::from_secs(15);

/// How often [`eventually`] and [`holds_for`] look at their condition.
pub const POLL: Duration = Duration::from_millis(10);

/// `future`'s output; panics naming `what` if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.unwrap_or_else(|_| panic!("timed out after {WAIT:?}: {what}"))
}

/// Returns once `done` holds, looking every [`POLL`]; panics naming `what` if it does not within [`WAIT`].
pub async fn eventually(what: &str, done: impl FnMut() -> bool) {
    eventually_within(what, WAIT, done).await
}

/// [`eventually`] with a bound of its own, for a subject slow by design (load warming up on a busy machine, a
/// database coming back); still a hang guard, not a measure.
pub async fn eventually_within(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Checks every [`POLL`] for `period` that `holds` still holds; panics naming `what` the first time it does not.
/// For a test whose subject is time passing (a session that must outlive several timeouts), not for waiting until
/// something has probably happened.
pub async fn holds_for(what: &str, period: Duration, mut holds: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        assert!(holds(), "{what} stopped holding after {:?}", start.elapsed());
        if start.elapsed() >= period {
            return;
        }
        tokio::time::sleep(POLL.min(period)).await;
    }
}
