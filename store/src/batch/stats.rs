//! Stats batcher: `workspace_agent_stats` rows, one multi-row INSERT per chunk, one transaction
//! per flush (Coder's `workspacestats.DBBatcher`: 1 s or 1024 rows, forced flush at 80 %).
//!
//! The same transaction carries what Coder does per call for a report with connections: the
//! workspace activity bump (`ActivityBumpWorkspace`, once per workspace per flush instead of once
//! per report), the usage tracker's `last_used_at` (Coder flushes that every 60 s on its own), and
//! the `stats_update` workspace event (on PostgreSQL a NOTIFY in the flush transaction; per report it
//! would be a write transaction per report), and the daily-activity rollup the metrics snapshotter reads.

use std::sync::Arc;

use uuid::Uuid;

use super::{publish_unsent, Flush, Pushed};
use crate::aggregates::fold_activity;
use crate::backend::BatchSql;
use crate::pubsub::{workspace_event_payload, workspace_owner_channel, STATS_UPDATE_KIND};
use crate::rows::StatsRow;
use crate::{Core, StoreError};

pub(crate) struct StatsFlush {
    pub core: Arc<Core>,
    /// Rows kept while flushes fail; beyond this new rows are dropped.
    pub max_rows: usize,
}

impl Flush for StatsFlush {
    type Item = StatsRow;
    type Acc = Vec<StatsRow>;

    fn push(&self, acc: &mut Vec<StatsRow>, item: StatsRow) -> Pushed {
        if acc.len() >= self.max_rows {
            return Pushed::Refused;
        }
        acc.push(item);
        Pushed::Added
    }

    fn len(acc: &Vec<StatsRow>) -> usize {
        acc.len()
    }

    async fn flush(&self, acc: &mut Vec<StatsRow>) -> Result<usize, StoreError> {
        // On error the rows stay in `acc` and are retried at the next flush, as Coder does.
        let active = active_workspaces(acc);
        let events: Vec<(String, String)> = active
            .iter()
            .map(|(owner, ws)| (workspace_owner_channel(*owner), workspace_event_payload(STATS_UPDATE_KIND, *ws, None)))
            .collect();
        let notices: Vec<(&str, &str)> = events.iter().map(|(c, p)| (c.as_str(), p.as_str())).collect();
        let days = fold_activity(
            acc.iter().filter(|r| r.report.connection_count > 0).map(|r| (r.template_id, r.user_id, r.created_at)),
        );
        let workspaces: Vec<Uuid> = active.iter().map(|(_, ws)| *ws).collect();
        let sent = self.core.db.flush_stats(acc, &days, &workspaces, &notices).await?;
        // The rows are written; if a message is lost, watchers see the next update.
        publish_unsent(&self.core, sent, &notices, "workspace stats update").await;
        let n = acc.len();
        acc.clear();
        Ok(n)
    }
}

/// (owner, workspace) of the workspaces with a live connection in this flush: the reports that count as activity.
fn active_workspaces(rows: &[StatsRow]) -> Vec<(Uuid, Uuid)> {
    let set: std::collections::BTreeSet<(Uuid, Uuid)> = rows
        .iter()
        .filter(|r| r.report.connection_count > 0 && !r.report.usage)
        .map(|r| (r.user_id, r.workspace_id))
        .collect();
    set.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StatsReport;
    use crate::{Store, StoreOptions};

    /// A flush retried after its commit reached the database (the answer lost with the connection) succeeds
    /// instead of failing on the primary key for ever, and stores each row once.
    #[tokio::test]
    async fn a_retried_flush_of_committed_rows_succeeds_and_stores_them_once() {
        let store = Store::open("sqlite::memory:", StoreOptions::default()).await.unwrap();
        let flush = StatsFlush { core: store.inner.core.clone(), max_rows: 16 };
        let row = |_| StatsRow {
            id: Uuid::new_v4(),
            created_at: 1,
            agent_id: Uuid::new_v4(),
            workspace_id: Uuid::new_v4(),
            template_id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            report: StatsReport::default(),
        };
        let rows: Vec<StatsRow> = (0..3).map(row).collect();
        let mut acc = rows.clone();
        assert_eq!(flush.flush(&mut acc).await.unwrap(), 3);
        let mut again = rows;
        again.push(row(3));
        assert_eq!(flush.flush(&mut again).await.unwrap(), 4);
        let stored: i64 = crate::backend::with_pool!(store.core().db.agentwire(), read, |eng, pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM workspace_agent_stats").fetch_one(pool).await.unwrap()
        });
        assert_eq!(stored, 4);
        store.close().await;
    }
}
