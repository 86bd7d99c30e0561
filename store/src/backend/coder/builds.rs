//! [`BuildSql`] on Coder's schema: the check coderd's connection monitor makes per agent every 15 s
//! (`checkBuildIsLatest`), made for every session of this replica in one statement.

use uuid::Uuid;

use super::CoderDb;
use crate::backend::{rows_per_statement, BuildSql};
use crate::StoreError;

/// Counted under the query coderd runs for it per agent.
const SUPERSEDED_BUILDS: &str = "GetLatestWorkspaceBuildByWorkspaceID";

impl BuildSql for CoderDb {
    async fn superseded_builds(&self, build_ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let mut superseded = Vec::new();
        for chunk in build_ids.chunks(rows_per_statement(1)) {
            self.counters.hit(SUPERSEDED_BUILDS);
            let ids: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
            // coderd compares the build with the workspace's latest by build number; deleting a workspace is a
            // build of its own (transition `delete`), so no separate check of `workspaces.deleted` is needed.
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT b.id::text FROM workspace_builds b \
                 WHERE b.id = ANY($1::uuid[]) AND EXISTS (SELECT 1 FROM workspace_builds n \
                   WHERE n.workspace_id = b.workspace_id AND n.build_number > b.build_number)",
            )
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
            for text in rows {
                superseded
                    .push(Uuid::parse_str(&text).map_err(|e| StoreError::corrupt("workspace_builds", e.to_string()))?);
            }
        }
        Ok(superseded)
    }
}
