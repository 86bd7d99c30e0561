//! Deployment-wide settings served from memory instead of read per call: the DERP map
//! ([`crate::tailnet::derp_map`]) and the announcement banners ([`crate::agentapi::Banners`]). Each has one loop per
//! server that reads its `site_configs` key, decodes it when the stored text changed, keeps the last good value when
//! it does not decode, and reads again when [`Rereads::wait`] says so: after its interval, or as soon as an operator's
//! write of that key is announced on [`SITE_CONFIG_CHANNEL`] (agentwire's `Admin` announces the writes of both).
//!
//! Who hears an announcement: every server on the same PostgreSQL database (`pg_notify`); on SQLite only the process
//! that wrote, as its pubsub is in-process, so a write from another process (`agentwire derp set` beside a running
//! server) is seen at the next interval. coderd announces nothing: beside it (`--coder-db`) the interval is how stale
//! a setting changed in coderd may be served.

use std::time::Duration;

use agentwire_store::pubsub::SITE_CONFIG_CHANNEL;
use agentwire_store::{Store, Subscription};
use tokio_util::sync::CancellationToken;

/// When a watcher of one `site_configs` key reads it again.
pub struct Rereads {
    key: &'static str,
    interval: Duration,
    /// `None` when the subscription failed or the pubsub closed: the interval alone then.
    announcements: Option<Subscription>,
}

impl Rereads {
    /// Subscribes to the announcements. Call it before the first read, so that a write landing after that read is
    /// announced to this watcher.
    pub async fn subscribe(store: &Store, key: &'static str, interval: Duration) -> Self {
        let announcements = match store.pubsub().subscribe(SITE_CONFIG_CHANNEL).await {
            Ok(subscription) => Some(subscription),
            Err(err) => {
                tracing::warn!(key, error = %err, "subscribing to site configuration writes; re-reading on the interval only");
                None
            }
        };
        Rereads { key, interval, announcements }
    }

    /// Waits until the key should be read again: `interval` has passed, or a write of the key was announced. `false`
    /// once `stop` fires.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let interval = tokio::time::sleep(self.interval);
        tokio::pin!(interval);
        loop {
            let announced = tokio::select! {
                _ = stop.cancelled() => return false,
                _ = &mut interval => return true,
                announced = next(&mut self.announcements) => announced,
            };
            match announced {
                Some(key) if key == self.key => return true,
                // Another setting's write.
                Some(_) => {}
                None => self.announcements = None,
            }
        }
    }
}

/// The next announcement; `None` once the pubsub closed; never, without a subscription.
async fn next(announcements: &mut Option<Subscription>) -> Option<String> {
    match announcements {
        Some(subscription) => subscription.recv().await,
        None => std::future::pending().await,
    }
}
