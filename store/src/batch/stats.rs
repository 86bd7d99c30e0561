//! Stats batcher: `workspace_agent_stats` rows, one multi-row INSERT per chunk, one transaction
//! per flush (Coder's `workspacestats.DBBatcher`: 1 s or 1024 rows, forced flush at 80 %).

use std::sync::Arc;

use uuid::Uuid;

use super::Flush;
use crate::backend::{begin, commit, rows_per_statement, with_pool};
use crate::model::{id, StatsReport, UnixMicros};
use crate::{Core, StoreError};

/// Statement name under which each multi-row stats INSERT is counted.
pub const INSERT_STATS: &str = "InsertWorkspaceAgentStats";
const COLS: usize = 18;

#[derive(Debug, Clone)]
pub(crate) struct StatsRow {
    pub id: Uuid,
    pub created_at: UnixMicros,
    pub agent_id: Uuid,
    pub workspace_id: Uuid,
    pub template_id: Uuid,
    pub user_id: Uuid,
    pub report: StatsReport,
}

pub(crate) struct StatsFlush {
    pub core: Arc<Core>,
    /// Rows kept while flushes fail; beyond this new rows are dropped.
    pub max_rows: usize,
}

impl Flush for StatsFlush {
    type Item = StatsRow;
    type Acc = Vec<StatsRow>;

    fn push(&self, acc: &mut Vec<StatsRow>, item: StatsRow) -> bool {
        if acc.len() >= self.max_rows {
            return false;
        }
        acc.push(item);
        true
    }

    fn len(acc: &Vec<StatsRow>) -> usize {
        acc.len()
    }

    async fn flush(&self, acc: &mut Vec<StatsRow>) -> Result<usize, StoreError> {
        // On error the rows stay in `acc` and are retried at the next flush, as Coder does.
        write(&self.core, acc).await?;
        let n = acc.len();
        acc.clear();
        Ok(n)
    }
}

async fn write(core: &Core, rows: &[StatsRow]) -> Result<(), StoreError> {
    with_pool!(&core.db, write, |eng, pool| {
        let mut tx = begin(&core.counters, eng, pool).await?;
        for chunk in rows.chunks(rows_per_statement(COLS)) {
            core.counters.hit(INSERT_STATS);
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO workspace_agent_stats (id, created_at, agent_id, workspace_id, \
                 template_id, user_id, connections_by_proto, connection_count, rx_packets, \
                 rx_bytes, tx_packets, tx_bytes, connection_median_latency_ms, \
                 session_count_vscode, session_count_jetbrains, session_count_reconnecting_pty, \
                 session_count_ssh, usage) ",
            );
            qb.push_values(chunk, |mut b, r| {
                let s = &r.report;
                let by_proto =
                    if s.connections_by_proto.is_empty() { "{}".to_owned() } else { s.connections_by_proto.clone() };
                b.push_bind(id(r.id))
                    .push_bind(r.created_at)
                    .push_bind(id(r.agent_id))
                    .push_bind(id(r.workspace_id))
                    .push_bind(id(r.template_id))
                    .push_bind(id(r.user_id))
                    .push_bind(by_proto)
                    .push_bind(s.connection_count)
                    .push_bind(s.rx_packets)
                    .push_bind(s.rx_bytes)
                    .push_bind(s.tx_packets)
                    .push_bind(s.tx_bytes)
                    .push_bind(s.connection_median_latency_ms)
                    .push_bind(s.session_count_vscode)
                    .push_bind(s.session_count_jetbrains)
                    .push_bind(s.session_count_reconnecting_pty)
                    .push_bind(s.session_count_ssh)
                    .push_bind(s.usage);
            });
            qb.build().execute(&mut *tx).await?;
        }
        commit(&core.counters, tx).await
    })
}
