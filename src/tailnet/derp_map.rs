//! The DERP map as StreamDERPMaps serves it: one poller per server reads the store's map every check interval
//! (coderd's `DERPMapUpdateFrequency`, 5 s) while at least one stream is open, and every stream watches the
//! poller's value. Streams never touch the database; a server with no stream open does not poll. With no map stored,
//! the map is the default one (the embedded relay's region), or an empty map when there is none.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentwire_store::Store;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use super::derp_json::{empty_derp_map, parse_derp_map};
use crate::proto::tailnet::v2 as pb;

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
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep(self.interval) => {}
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
