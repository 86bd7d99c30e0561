//! Change notifications between the store's writers and whoever watches (other replicas, the
//! server's own watchers).
//!
//! Channel names and payloads follow Coder's **MAIN era** (2026, see the crate doc):
//! * `workspace_owner:<owner_uuid>`: JSON `{"kind":…,"workspace_id":…,"agent_id":…}`
//!   ([`workspace_event_payload`]);
//! * `agent-logs:<agent_uuid>`: JSON `{"created_after":<id>}`;
//! * `workspace_agent_metadata_batch`: concatenated 22-character unpadded base64 agent UUIDs,
//!   at most [`crate::DEFAULT_METADATA_NOTIFY_MAX_IDS`] per message (under the 8000-byte NOTIFY
//!   limit).
//!
//! and one of agentwire's own, [`SITE_CONFIG_CHANNEL`]: the `site_configs` key the operator just wrote.
//!
//! Two implementations: [`InProcessPubsub`] (SQLite, single process) and [`PgPubsub`]
//! (`pg_notify` + one shared, reconnecting `LISTEN` connection per store).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures::future::BoxFuture;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::backend::q;
use crate::counting::{QueryCounters, Stmt};
use crate::engine::Engine;
use crate::StoreError;

/// Channel that carries batched metadata notifications (MAIN era).
pub const METADATA_BATCH_CHANNEL: &str = "workspace_agent_metadata_batch";
/// Channel on which [`crate::Admin`] announces its writes of a setting that servers serve from memory (the DERP map,
/// the announcement banners), so that they re-read it at once; the payload is the `site_configs` key written.
/// agentwire's own: coderd announces nothing, so beside it only the servers' re-read interval brings its changes.
pub const SITE_CONFIG_CHANNEL: &str = "agentwire_site_config";
/// PostgreSQL's NOTIFY payload limit is "less than 8000 bytes".
pub const PG_NOTIFY_MAX_PAYLOAD: usize = 7999;
/// Default bound of a subscriber's queue; a subscriber that falls further behind loses messages
/// (counted in [`Pubsub::dropped`]) rather than growing memory without limit.
pub const DEFAULT_SUBSCRIBER_QUEUE: usize = 256;

/// Coder's `WorkspaceEvent` kind for new stats with live connections; it carries only the workspace id.
pub const STATS_UPDATE_KIND: &str = "stats_update";
/// Coder's `WorkspaceEvent` kind for an agent connecting or disconnecting; it carries the agent id.
pub const AGENT_CONNECTION_UPDATE_KIND: &str = "agt_connection_update";

/// `workspace_owner:<owner>` channel name.
pub fn workspace_owner_channel(owner_id: Uuid) -> String {
    format!("workspace_owner:{owner_id}")
}

/// `agent-logs:<agent>` channel name.
pub fn agent_logs_channel(agent_id: Uuid) -> String {
    format!("agent-logs:{agent_id}")
}

/// Coder's `WorkspaceEvent` JSON. `kind` is one of Coder's kinds (`agt_lifecycle_update`, …);
/// `agent_id` is omitted when `None`.
pub fn workspace_event_payload(kind: &str, workspace_id: Uuid, agent_id: Option<Uuid>) -> String {
    match agent_id {
        Some(a) => {
            format!(r#"{{"kind":"{kind}","workspace_id":"{workspace_id}","agent_id":"{a}"}}"#)
        }
        None => format!(r#"{{"kind":"{kind}","workspace_id":"{workspace_id}"}}"#),
    }
}

/// `{"created_after":N}` for `agent-logs:<agent>`.
pub fn agent_logs_payload(created_after: i64) -> String {
    format!(r#"{{"created_after":{created_after}}}"#)
}

/// One agent UUID as Coder's metadata batch encodes it: base64 (standard alphabet, no padding)
/// of the 16 bytes, 22 ASCII characters.
pub fn encode_agent_id_b64(id: Uuid) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(id.as_bytes())
}

/// Split agent ids into `workspace_agent_metadata_batch` payloads of at most `max_ids` ids.
pub fn metadata_batch_payloads(ids: &[Uuid], max_ids: usize) -> Vec<String> {
    ids.chunks(max_ids.max(1)).map(|chunk| chunk.iter().map(|id| encode_agent_id_b64(*id)).collect()).collect()
}

/// Decode a `workspace_agent_metadata_batch` payload; `None` if its length is not a multiple of
/// 22 or an id does not decode (Coder's subscribers then treat the message as invalid).
pub fn decode_metadata_batch_payload(payload: &str) -> Option<Vec<Uuid>> {
    if !payload.len().is_multiple_of(22) {
        return None;
    }
    payload
        .as_bytes()
        .chunks(22)
        .map(|c| {
            let bytes = base64::engine::general_purpose::STANDARD_NO_PAD.decode(c).ok()?;
            Uuid::from_slice(&bytes).ok()
        })
        .collect()
}

/// A live subscription. Dropping it unsubscribes (lazily: the publisher side prunes it).
#[derive(Debug)]
pub struct Subscription {
    channel: String,
    rx: mpsc::Receiver<String>,
}

impl Subscription {
    /// The channel subscribed to.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Next message; `None` once the pubsub has shut down.
    pub async fn recv(&mut self) -> Option<String> {
        self.rx.recv().await
    }

    /// Next message if one is already queued.
    pub fn try_recv(&mut self) -> Option<String> {
        self.rx.try_recv().ok()
    }
}

/// Publish/subscribe on named channels.
pub trait Pubsub: Send + Sync + 'static {
    /// Publish `payload` on `channel`. On PostgreSQL the payload must be under 8000 bytes.
    fn publish<'a>(&'a self, channel: &'a str, payload: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Subscribe; messages published after this returns are delivered.
    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Subscription, StoreError>>;
    /// Messages dropped because a subscriber's queue was full.
    fn dropped(&self) -> u64;
    /// How many times the connection messages arrive on was lost and is back, listening again: whatever was
    /// published in between is lost for every subscriber (Coder's pubsub tells each `ErrDroppedMessages`). A
    /// subscriber that must not miss a change reads the state again when this moves. Never moves in process.
    fn reconnects(&self) -> u64 {
        0
    }
}

type Subscribers = HashMap<String, Vec<mpsc::Sender<String>>>;

/// Deliver to every live subscriber of `channel`, pruning closed ones; returns drops.
fn fan_out(subs: &mut Subscribers, channel: &str, payload: &str) -> u64 {
    let mut dropped = 0;
    if let Some(list) = subs.get_mut(channel) {
        list.retain(|tx| match tx.try_send(payload.to_owned()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                dropped += 1;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if list.is_empty() {
            subs.remove(channel);
        }
    }
    dropped
}

/// In-process pubsub for single-process (SQLite) deployments.
#[derive(Debug)]
pub struct InProcessPubsub {
    subs: Mutex<Subscribers>,
    queue: usize,
    dropped: AtomicU64,
    counters: Arc<QueryCounters>,
}

impl InProcessPubsub {
    /// New pubsub whose subscribers each buffer up to `queue` messages.
    pub(crate) fn new(queue: usize, counters: Arc<QueryCounters>) -> Self {
        InProcessPubsub { subs: Mutex::new(HashMap::new()), queue: queue.max(1), dropped: AtomicU64::new(0), counters }
    }
}

impl Pubsub for InProcessPubsub {
    fn publish<'a>(&'a self, channel: &'a str, payload: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.counters.notified(1);
            let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
            let d = fan_out(&mut subs, channel, payload);
            self.dropped.fetch_add(d, Ordering::Relaxed);
            Ok(())
        })
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Subscription, StoreError>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(self.queue);
            let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
            subs.entry(channel.to_owned()).or_default().push(tx);
            Ok(Subscription { channel: channel.to_owned(), rx })
        })
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

const PG_NOTIFY: Stmt = Stmt::new("pg_notify", "SELECT pg_notify($1, $2)");

/// Delay between attempts to re-establish the LISTEN connection after a hard failure.
pub const DEFAULT_LISTENER_RETRY: Duration = Duration::from_secs(1);

enum ListenCmd {
    Subscribe { channel: String, tx: mpsc::Sender<String>, ack: oneshot::Sender<Result<(), StoreError>> },
}

/// PostgreSQL pubsub: `pg_notify` through the store's pool, and one background task that owns a
/// [`PgListener`] shared by all of this store's subscriptions. The listener reconnects by itself
/// (and re-issues its LISTENs); notifications sent while it was disconnected are lost, as with
/// Coder's pq listener, and each loss is counted in [`Pubsub::reconnects`] once the LISTENs are
/// back, so that a subscriber that reads again then misses nothing.
pub struct PgPubsub {
    pool: PgPool,
    cmd: mpsc::Sender<ListenCmd>,
    queue: usize,
    dropped: Arc<AtomicU64>,
    reconnects: Arc<AtomicU64>,
    counters: Arc<QueryCounters>,
}

impl std::fmt::Debug for PgPubsub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPubsub")
            .field("dropped", &self.dropped)
            .field("reconnects", &self.reconnects)
            .finish_non_exhaustive()
    }
}

impl PgPubsub {
    pub(crate) fn new(pool: PgPool, queue: usize, counters: Arc<QueryCounters>) -> Self {
        let (cmd, cmd_rx) = mpsc::channel(64);
        let dropped = Arc::new(AtomicU64::new(0));
        let reconnects = Arc::new(AtomicU64::new(0));
        tokio::spawn(listen_loop(pool.clone(), cmd_rx, dropped.clone(), reconnects.clone()));
        PgPubsub { pool, cmd, queue: queue.max(1), dropped, reconnects, counters }
    }
}

impl Pubsub for PgPubsub {
    fn publish<'a>(&'a self, channel: &'a str, payload: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if payload.len() > PG_NOTIFY_MAX_PAYLOAD {
                return Err(StoreError::Pubsub(format!(
                    "payload of {} bytes exceeds the {PG_NOTIFY_MAX_PAYLOAD}-byte NOTIFY limit",
                    payload.len()
                )));
            }
            q!(self.counters, Engine::Postgres, PG_NOTIFY).bind(channel).bind(payload).execute(&self.pool).await?;
            self.counters.notified(1);
            Ok(())
        })
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Subscription, StoreError>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(self.queue);
            let (ack, ack_rx) = oneshot::channel();
            self.cmd
                .send(ListenCmd::Subscribe { channel: channel.to_owned(), tx, ack })
                .await
                .map_err(|_| StoreError::Pubsub("listener task is gone".into()))?;
            ack_rx.await.map_err(|_| StoreError::Pubsub("listener task is gone".into()))??;
            Ok(Subscription { channel: channel.to_owned(), rx })
        })
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }
}

async fn listen_loop(
    pool: PgPool,
    mut cmd_rx: mpsc::Receiver<ListenCmd>,
    dropped: Arc<AtomicU64>,
    reconnects: Arc<AtomicU64>,
) {
    let mut subs: Subscribers = HashMap::new();
    let mut listener: Option<PgListener> = None;
    // A connection was lost: the next one that listens again is a reconnect.
    let mut lost = false;

    enum Event {
        Cmd(Option<ListenCmd>),
        Notification(Result<Option<sqlx::postgres::PgNotification>, sqlx::Error>),
    }

    loop {
        if listener.is_none() {
            match PgListener::connect_with(&pool).await {
                Ok(mut l) => {
                    // A lost connection is then replaced inside `try_recv`, LISTENs included, before it says so.
                    l.eager_reconnect(true);
                    // Re-LISTEN everything we had, after a hard failure.
                    let channels: Vec<&str> = subs.keys().map(String::as_str).collect();
                    if let Err(e) = l.listen_all(channels).await {
                        tracing::warn!(error = %e, "pubsub: re-listen failed; retrying");
                        tokio::time::sleep(DEFAULT_LISTENER_RETRY).await;
                        continue;
                    }
                    listener = Some(l);
                    if std::mem::take(&mut lost) {
                        reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!("pubsub: listening again; what was published meanwhile is lost");
                    }
                }
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "pubsub: cannot open LISTEN connection; retrying");
                    // Still serve subscribe commands so callers see the error instead of hanging.
                    match tokio::time::timeout(DEFAULT_LISTENER_RETRY, cmd_rx.recv()).await {
                        Ok(Some(ListenCmd::Subscribe { ack, .. })) => {
                            let _ = ack.send(Err(StoreError::Pubsub(format!("LISTEN connection unavailable: {e}"))));
                        }
                        Ok(None) => return,
                        Err(_) => {}
                    }
                    continue;
                }
            }
        }
        let Some(l) = listener.as_mut() else { continue };

        // Compute the event first, then act on it, so the listener is not borrowed by two
        // select branches at once. `try_recv` is cancel-safe (sqlx reads into a buffer).
        let event = tokio::select! {
            cmd = cmd_rx.recv() => Event::Cmd(cmd),
            n = l.try_recv() => Event::Notification(n),
        };
        match event {
            Event::Cmd(None) => return,
            Event::Cmd(Some(ListenCmd::Subscribe { channel, tx, ack })) => {
                // Prune channels whose subscribers are all gone, and stop listening to them.
                let dead: Vec<String> = subs
                    .iter_mut()
                    .filter_map(|(c, list)| {
                        list.retain(|t| !t.is_closed());
                        list.is_empty().then(|| c.clone())
                    })
                    .collect();
                for c in dead {
                    subs.remove(&c);
                    if c != channel {
                        if let Err(e) = l.unlisten(&c).await {
                            tracing::debug!(error = %e, channel = %c, "pubsub: unlisten failed");
                        }
                    }
                }
                let result = if subs.contains_key(&channel) {
                    Ok(())
                } else {
                    l.listen(&channel).await.map_err(StoreError::from)
                };
                if result.is_ok() {
                    subs.entry(channel).or_default().push(tx);
                }
                let _ = ack.send(result);
            }
            Event::Notification(Ok(Some(n))) => {
                let d = fan_out(&mut subs, n.channel(), n.payload());
                dropped.fetch_add(d, Ordering::Relaxed);
            }
            Event::Notification(Ok(None)) => {
                // Connection lost, and (eager reconnect) already replaced, LISTENs included.
                reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "pubsub: LISTEN connection lost and re-established; what was published meanwhile is lost"
                );
            }
            Event::Notification(Err(sqlx::Error::PoolClosed)) => return,
            Event::Notification(Err(e)) => {
                tracing::warn!(error = %e, "pubsub: listener failed; reconnecting");
                listener = None;
                lost = true;
                tokio::time::sleep(DEFAULT_LISTENER_RETRY).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_payload_roundtrip_and_limit() {
        let ids: Vec<Uuid> = (0..1000).map(|_| Uuid::new_v4()).collect();
        let payloads = metadata_batch_payloads(&ids, crate::DEFAULT_METADATA_NOTIFY_MAX_IDS);
        assert_eq!(payloads.len(), 3); // ceil(1000 / 363)
        let mut back = Vec::new();
        for p in &payloads {
            assert!(p.len() <= PG_NOTIFY_MAX_PAYLOAD, "{}", p.len());
            back.extend(decode_metadata_batch_payload(p).unwrap());
        }
        assert_eq!(back, ids);
        assert_eq!(encode_agent_id_b64(Uuid::nil()), "AAAAAAAAAAAAAAAAAAAAAA");
        assert!(decode_metadata_batch_payload("abc").is_none());
    }
}
