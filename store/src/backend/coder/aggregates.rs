//! `AggregateSql` on Coder's schema: the metrics snapshotter's reads; the demo-data writer is refused.

use uuid::Uuid;

use super::CoderDb;
use crate::backend::AggregateSql;
use crate::model::*;
use crate::rows::{
    ActivityDay, ActivitySpan, AgentStatsWindow, BuildDuration, DemoHistory, DemoStat, TemplateDayUsers, TemplateRow,
    UserActivityDay, WorkspaceStateCounts,
};
use crate::StoreError;

impl AggregateSql for CoderDb {
    async fn active_template_ids(&self) -> Result<Vec<Uuid>, StoreError> {
        Err(StoreError::Invalid("coder backend: active_template_ids not yet written".into()))
    }
    async fn user_activity_days(&self) -> Result<Vec<ActivityDay>, StoreError> {
        Err(StoreError::Invalid("coder backend: user_activity_days not yet written".into()))
    }
    async fn user_activity_by_day(&self) -> Result<Vec<UserActivityDay>, StoreError> {
        Err(StoreError::Invalid("coder backend: user_activity_by_day not yet written".into()))
    }
    async fn template_users_by_day(&self) -> Result<Vec<TemplateDayUsers>, StoreError> {
        Err(StoreError::Invalid("coder backend: template_users_by_day not yet written".into()))
    }
    async fn template_unique_users(&self) -> Result<Vec<(Uuid, i64)>, StoreError> {
        Err(StoreError::Invalid("coder backend: template_unique_users not yet written".into()))
    }
    async fn recent_build_durations(
        &self,
        _started_after: UnixMicros,
        _per_template: i64,
    ) -> Result<Vec<BuildDuration>, StoreError> {
        Err(StoreError::Invalid("coder backend: recent_build_durations not yet written".into()))
    }
    async fn agent_stats_window(&self, _since: UnixMicros) -> Result<AgentStatsWindow, StoreError> {
        Err(StoreError::Invalid("coder backend: agent_stats_window not yet written".into()))
    }
    async fn workspace_state_counts(&self, _heartbeat_after: UnixMicros) -> Result<WorkspaceStateCounts, StoreError> {
        Err(StoreError::Invalid("coder backend: workspace_state_counts not yet written".into()))
    }
    async fn template_by_id(&self, _template_id: Uuid) -> Result<Option<TemplateRow>, StoreError> {
        Err(StoreError::Invalid("coder backend: template_by_id not yet written".into()))
    }
    async fn insert_demo_fixtures(&self, _organization_id: Uuid, _h: &DemoHistory) -> Result<(), StoreError> {
        Err(StoreError::Invalid("coder backend: insert_demo_fixtures not yet written".into()))
    }
    async fn insert_demo_stats(&self, _stats: &[DemoStat], _days: &[ActivitySpan]) -> Result<(), StoreError> {
        Err(StoreError::Invalid("coder backend: insert_demo_stats not yet written".into()))
    }
}
