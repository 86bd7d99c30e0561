//! [`BuildSql`] on agentwire's schema, for both engines: `IN` lists, since SQLite has no arrays.

use uuid::Uuid;

use crate::backend::{rows_per_statement, with_pool, AgentwireDb, BuildSql};
use crate::model::id;
use crate::StoreError;

/// Counted under Coder's name for the read its connection monitor makes per agent, which this one replaces for
/// every session at once.
const SUPERSEDED_BUILDS: &str = "GetLatestWorkspaceBuildByWorkspaceID";

impl BuildSql for AgentwireDb {
    async fn superseded_builds(&self, build_ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let mut superseded = Vec::new();
        for chunk in build_ids.chunks(rows_per_statement(1)) {
            self.counters.hit(SUPERSEDED_BUILDS);
            let ids: Vec<String> = with_pool!(self, read, |eng, pool| {
                let mut qb = sqlx::QueryBuilder::new(
                    "SELECT b.id FROM workspace_builds b JOIN workspaces w ON w.id = b.workspace_id \
                     WHERE (w.deleted OR EXISTS (SELECT 1 FROM workspace_builds n \
                       WHERE n.workspace_id = b.workspace_id AND n.build_number > b.build_number)) \
                     AND b.id IN (",
                );
                let mut list = qb.separated(", ");
                for build in chunk {
                    list.push_bind(id(*build));
                }
                qb.push(")");
                qb.build_query_scalar().fetch_all(pool).await?
            });
            for text in ids {
                superseded
                    .push(Uuid::parse_str(&text).map_err(|e| StoreError::corrupt("workspace_builds", e.to_string()))?);
            }
        }
        Ok(superseded)
    }
}
