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

use crate::backend::{begin, commit, q, with_pool};
use crate::batch::stats::{StatsFlush, StatsRow};
use crate::batch::Flush;
use crate::counting::Stmt;
use crate::model::{id, now_micros, StatsReport};
use crate::{ResolvedAgent, Store, StoreError};

/// The per-row metadata write: Coder's single-key `UpdateWorkspaceAgentMetadata` shape, one
/// `(agent, key)` per statement. Counted under its own name so it never mixes with the batched
/// statement in the counters.
const UPDATE_METADATA_ROW: Stmt = Stmt::new(
    "BenchUpdateWorkspaceAgentMetadataRow",
    "UPDATE workspace_agent_metadata SET value = $3, error = $4, collected_at = $5 \
     WHERE workspace_agent_id = $1 AND key = $2",
);

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
    let core = store.core();
    let now = now_micros();
    let changed = with_pool!(&core.db, write, |eng, pool| {
        let mut tx = begin(&core.counters, eng, pool).await?;
        let done = q!(core.counters, eng, UPDATE_METADATA_ROW)
            .bind(id(agent_id))
            .bind(key)
            .bind(value)
            .bind(error)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        commit(&core.counters, tx).await?;
        done.rows_affected()
    });
    Ok(changed)
}
