//! The DERP map as StreamDERPMaps serves it: one poller per server reads the store's map every check interval
//! (coderd's `DERPMapUpdateFrequency`, 5 s), and at once when `agentwire derp set` announces a new one
//! ([`crate::site_config`]), while at least one stream is open; every stream watches the poller's value. Streams
//! never touch the database; a server with no stream open does not poll. With no map stored, the map is the default
//! one (the embedded relay's region), or an empty map when there is none.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentwire_store::{Store, SITE_CONFIG_DERP_MAP};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use super::derp_json::{empty_derp_map, parse_derp_map};
use crate::proto::tailnet::v2 as pb;
use crate::site_config::Rereads;

/// The map as last read: `None` until the first read succeeded.
pub type Current = Option<Arc<pb::DerpMap>>;

pub struct DerpMaps {
    store: Store,
    interval: Duration,
    /// Served while no map is stored.
    default: Option<Arc<pb::DerpMap>>,
    tx: watch::Sender<Current>,
    /// Whether the poller runs; checked and set under this lock together with the subscriber count.
    running: Mutex<bool>,
    stop: CancellationToken,
}

impl DerpMaps {
    pub fn new(store: Store, interval: Duration, stop: CancellationToken) -> Arc<Self> {
        Self::with_default(store, interval, None, stop)
    }

    /// As [`DerpMaps::new`], serving `default` while no map is stored.
    pub fn with_default(
        store: Store,
        interval: Duration,
        default: Option<Arc<pb::DerpMap>>,
        stop: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(DerpMaps { store, interval, default, tx: watch::channel(None).0, running: Mutex::new(false), stop })
    }

    /// The map served while none is stored (the embedded relay's region), if any.
    pub fn default_map(&self) -> Option<Arc<pb::DerpMap>> {
        self.default.clone()
    }

    /// Views open now: one per StreamDERPMaps stream being served, and the server's own.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// A view of the current map (`None` until the first read succeeded); starts the poller if it is idle.
    pub fn subscribe(self: &Arc<Self>) -> watch::Receiver<Current> {
        let Ok(mut running) = self.running.lock() else { return self.tx.subscribe() };
        let rx = self.tx.subscribe();
        if !*running {
            *running = true;
            tokio::spawn(self.clone().poll());
        }
        rx
    }

    async fn poll(self: Arc<Self>) {
        let mut rereads = Rereads::subscribe(&self.store, SITE_CONFIG_DERP_MAP, self.interval).await;
        let mut last: Option<String> = None;
        loop {
            match self.store.derp_map().await {
                Ok(json) => {
                    let json = json.unwrap_or_default();
                    if last.as_deref() != Some(json.as_str()) || self.tx.borrow().is_none() {
                        let map = match (json.is_empty(), &self.default) {
                            (true, Some(default)) => Ok(default.clone()),
                            (true, None) => Ok(Arc::new(empty_derp_map())),
                            (false, _) => parse_derp_map(&json).map(Arc::new),
                        };
                        match map {
                            Ok(map) => {
                                self.tx.send_replace(Some(map));
                                last = Some(json);
                            }
                            Err(err) => {
                                tracing::warn!(error = %err, "the configured DERP map does not decode; keeping the last")
                            }
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "reading the DERP map"),
            }
            if !rereads.wait(&self.stop).await {
                break;
            }
            let Ok(mut running) = self.running.lock() else { break };
            if self.tx.receiver_count() == 0 {
                *running = false;
                // Stale by the next start; the first stream then waits for a fresh read.
                self.tx.send_replace(None);
                return;
            }
        }
        if let Ok(mut running) = self.running.lock() {
            *running = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use agentwire_store::StoreOptions;

    use super::*;

    /// `agentwire derp set` announces its write, and the poller reads it then, not at its next check.
    #[tokio::test]
    async fn an_announced_map_is_read_without_waiting_for_the_interval() {
        let store = Store::open("sqlite::memory:", StoreOptions::default()).await.expect("store");
        let stop = CancellationToken::new();
        let maps = DerpMaps::new(store.clone(), Duration::from_secs(3600), stop.clone());
        let mut watched = maps.subscribe();
        let bound = Duration::from_secs(10);
        let first = tokio::time::timeout(bound, watched.wait_for(Option::is_some)).await.expect("first read");
        assert!(first.expect("open").as_ref().is_some_and(|m| m.regions.is_empty()));
        let before = store.queries().snapshot();
        store.admin().set_derp_map(r#"{"Regions":{"7":{"RegionID":7,"RegionCode":"seven"}}}"#).await.expect("set");
        let read = tokio::time::timeout(bound, watched.wait_for(|m| m.as_ref().is_some_and(|m| m.regions.len() == 1)))
            .await
            .expect("the announced map");
        assert_eq!(read.expect("open").as_ref().map(|m| m.regions[&7].region_code.clone()).as_deref(), Some("seven"));
        assert_eq!(store.queries().snapshot().since(&before).get("GetSiteConfig"), 1);
        stop.cancel();
    }
}
