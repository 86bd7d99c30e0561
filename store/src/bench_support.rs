//! **Benchmark support only — not part of the store's API.**
//!
//! Hidden from the docs and used only by `store/examples/store_bench.rs`, which compares the
//! batchers with the naive way of writing the same rows: **one transaction per row**. Server
//! code must never call anything here; the batchers exist so that nothing writes stats or
//! metadata one row at a time.
//!
//! Both helpers run through the store's counted `begin`/`commit`, so the benchmark reads the
//! number of transactions from [`Store::queries`] exactly as it does for the batchers.

use uuid::Uuid;

use crate::backend::BatchSql;
use crate::batch::stats::StatsFlush;
use crate::batch::Flush;
use crate::model::{now_micros, StatsReport};
use crate::rows::StatsRow;
use crate::{ResolvedAgent, Store, StoreError};

/// Insert one `workspace_agent_stats` row for `agent` in its own transaction.
///
/// This is the stats batcher's own write path handed a one-row batch (same table, same
/// INSERT, one row in `VALUES`), so the comparison isolates the effect of batching.
pub async fn insert_stats_row_per_tx(
    store: &Store,
    agent: &ResolvedAgent,
    report: StatsReport,
) -> Result<(), StoreError> {
    let flusher = StatsFlush { core: store.inner.core.clone(), max_rows: 1 };
    let mut one = vec![StatsRow {
        id: Uuid::new_v4(),
        created_at: now_micros(),
        agent_id: agent.id,
        workspace_id: agent.workspace_id,
        template_id: agent.template_id,
        user_id: agent.owner_id,
        report,
    }];
    flusher.flush(&mut one).await.map(|_| ())
}

/// Update one metadata key of `agent` in its own transaction (one UPDATE, one commit, no
/// notification). Returns the number of rows changed (0 if the key was never described).
///
/// No `workspace_agent_metadata_batch` notification is published, so on PostgreSQL this is a
/// lower bound on what a per-row path would cost (the batched path publishes one NOTIFY per
/// flush).
pub async fn update_metadata_row_per_tx(
    store: &Store,
    agent_id: Uuid,
    key: &str,
    value: &str,
    error: &str,
) -> Result<u64, StoreError> {
    store.core().db.update_metadata_row_per_tx(agent_id, key, value, error, now_micros()).await
}
