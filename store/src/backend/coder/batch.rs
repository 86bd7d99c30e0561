//! `BatchSql` on Coder's schema: the batchers' flushes into Coder's tables, each one transaction.

use uuid::Uuid;

use super::CoderDb;
use crate::backend::BatchSql;
use crate::model::*;
use crate::rows::{ActivitySpan, HeartbeatEntry, MetaEntry, StatsRow};
use crate::StoreError;

impl BatchSql for CoderDb {
    async fn flush_stats(
        &self,
        _rows: &[StatsRow],
        _days: &[ActivitySpan],
        _active: &[Uuid],
        _notices: &[(&str, &str)],
    ) -> Result<bool, StoreError> {
        Err(StoreError::Invalid("coder backend: flush_stats not yet written".into()))
    }
    async fn flush_metadata(&self, _entries: &[MetaEntry], _notices: &[(&str, &str)]) -> Result<bool, StoreError> {
        Err(StoreError::Invalid("coder backend: flush_metadata not yet written".into()))
    }
    async fn flush_heartbeats(&self, _entries: &[HeartbeatEntry]) -> Result<(), StoreError> {
        Err(StoreError::Invalid("coder backend: flush_heartbeats not yet written".into()))
    }
    async fn update_metadata_row_per_tx(
        &self,
        _agent_id: Uuid,
        _key: &str,
        _value: &str,
        _error: &str,
        _collected_at: UnixMicros,
    ) -> Result<u64, StoreError> {
        Err(StoreError::Invalid("coder backend: update_metadata_row_per_tx not yet written".into()))
    }
}
