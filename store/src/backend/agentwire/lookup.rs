//! [`LookupSql`] on agentwire's schema: the store-wide reads (the token lookup, `site_configs`, user API keys and
//! a watcher's metadata read), written once for both engines.

use uuid::Uuid;

use crate::api_key::constant_time_eq;
use crate::backend::{qa, qs, with_pool, AgentwireDb, LookupSql};
use crate::counting::Stmt;
use crate::model::{id, now_micros, Metadata, ResolvedAgent};
use crate::StoreError;

const RESOLVE_AGENT_BY_TOKEN: Stmt = Stmt::new(
    "GetAuthenticatedWorkspaceAgentAndBuildByAuthToken",
    // Any live agent's token resolves, with two verdicts for the caller: whether its build is the
    // workspace's latest, and whether Coder MAIN's shutdown exception holds (a succeeded `start`
    // build whose successor is a `stop` still pending or running: the agent must be able to report
    // its shutdown). The endpoint admits either and answers 403 otherwise, so a stale agent learns
    // why instead of getting the 401 an unknown token gets.
    "SELECT a.id, a.name, a.resource_id, a.parent_id, a.directory, a.expanded_directory, \
       a.environment_variables, a.motd_file, a.troubleshooting_url, \
       a.connection_timeout_seconds, a.architecture, a.operating_system, a.version, \
       a.api_version, a.lifecycle_state, a.started_at, a.ready_at, a.logs_length, \
       a.logs_overflowed, a.display_apps, a.subsystems, a.api_key_scope, \
       a.first_connected_at, a.created_at, a.display_order, \
       w.id AS workspace_id, w.name AS workspace_name, w.organization_id, \
       w.autostart_schedule, u.id AS owner_id, u.username AS owner_username, \
       t.id AS template_id, t.name AS template_name, \
       b.id AS build_id, b.build_number, b.transition AS build_transition, \
       b.template_version_id, (b.build_number = lb.build_number) AS is_latest_build, \
       (b.transition = 'start' AND bj.completed_at IS NOT NULL AND bj.canceled_at IS NULL \
         AND COALESCE(bj.error, '') = '' \
         AND lb.build_number = b.build_number + 1 AND lb.transition = 'stop' \
         AND lj.completed_at IS NULL AND lj.canceled_at IS NULL \
         AND COALESCE(lj.error, '') = '') AS in_shutdown_case \
     FROM workspace_agents a \
     JOIN workspace_resources r ON r.id = a.resource_id \
     JOIN workspace_builds b ON b.job_id = r.job_id \
     JOIN provisioner_jobs bj ON bj.id = b.job_id \
     JOIN workspaces w ON w.id = b.workspace_id \
     JOIN users u ON u.id = w.owner_id \
     JOIN templates t ON t.id = w.template_id \
     JOIN workspace_builds lb ON lb.workspace_id = w.id AND lb.build_number = \
       (SELECT MAX(x.build_number) FROM workspace_builds x WHERE x.workspace_id = w.id) \
     JOIN provisioner_jobs lj ON lj.id = lb.job_id \
     WHERE a.auth_token = $1 AND a.deleted = FALSE AND w.deleted = FALSE",
);
const GET_SITE_CONFIG: Stmt = Stmt::new("GetSiteConfig", "SELECT value FROM site_configs WHERE key = $1");
const USER_BY_API_KEY: Stmt = Stmt::new(
    "GetAPIKeyByID",
    "SELECT k.user_id, k.hashed_secret FROM api_keys k JOIN users u ON u.id = k.user_id \
     WHERE k.id = $1 AND k.expires_at > $2 AND u.deleted = FALSE",
);
// The agent row is the anchor: no agent (or not the user's) gives no row at all, an owned agent
// without metadata one row of NULLs.
const AGENT_METADATA_FOR_USER: Stmt = Stmt::new(
    "GetWorkspaceAgentMetadataForOwner",
    "SELECT m.key, m.display_name, m.script, m.value, m.error, m.timeout, m.interval, m.collected_at, \
       m.display_order \
     FROM workspace_agents a \
     JOIN workspace_resources r ON r.id = a.resource_id \
     JOIN workspace_builds b ON b.job_id = r.job_id \
     JOIN workspaces w ON w.id = b.workspace_id \
     LEFT JOIN workspace_agent_metadata m ON m.workspace_agent_id = a.id \
     WHERE a.id = $1 AND w.owner_id = $2 AND a.deleted = FALSE AND w.deleted = FALSE \
     ORDER BY m.display_order, m.key",
);

/// A row of [`AGENT_METADATA_FOR_USER`]: all NULL for an owned agent without metadata.
#[derive(sqlx::FromRow)]
struct OwnedMetadataRow {
    key: Option<String>,
    display_name: Option<String>,
    script: Option<String>,
    value: Option<String>,
    error: Option<String>,
    timeout: Option<i64>,
    interval: Option<i64>,
    collected_at: Option<i64>,
    display_order: Option<i64>,
}

impl LookupSql for AgentwireDb {
    async fn resolve_agent_by_token(&self, token: Uuid) -> Result<Option<ResolvedAgent>, StoreError> {
        let row = with_pool!(self, read, |eng, pool| {
            qa!(self.counters, eng, RESOLVE_AGENT_BY_TOKEN, ResolvedAgent).bind(id(token)).fetch_optional(pool).await?
        });
        Ok(row)
    }

    async fn site_config(&self, key: &str) -> Result<Option<String>, StoreError> {
        let v = with_pool!(self, read, |eng, pool| {
            qs!(self.counters, eng, GET_SITE_CONFIG, String).bind(key).fetch_optional(pool).await?
        });
        Ok(v)
    }

    async fn user_by_api_key(&self, key_id: &str, hashed_secret: &str) -> Result<Option<Uuid>, StoreError> {
        let row = with_pool!(self, read, |eng, pool| {
            qa!(self.counters, eng, USER_BY_API_KEY, (String, String))
                .bind(key_id)
                .bind(now_micros())
                .fetch_optional(pool)
                .await?
        });
        let Some((user_id, hashed)) = row else {
            return Ok(None);
        };
        if !constant_time_eq(hashed.as_bytes(), hashed_secret.as_bytes()) {
            return Ok(None);
        }
        Uuid::parse_str(&user_id).map(Some).map_err(|e| StoreError::corrupt("api_keys", e.to_string()))
    }

    async fn agent_metadata_for_user(
        &self,
        user_id: Uuid,
        agent_id: Uuid,
    ) -> Result<Option<Vec<Metadata>>, StoreError> {
        let rows = with_pool!(self, read, |eng, pool| {
            qa!(self.counters, eng, AGENT_METADATA_FOR_USER, OwnedMetadataRow)
                .bind(id(agent_id))
                .bind(id(user_id))
                .fetch_all(pool)
                .await?
        });
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            rows.into_iter()
                .filter_map(|r| {
                    Some(Metadata {
                        key: r.key?,
                        display_name: r.display_name.unwrap_or_default(),
                        script: r.script.unwrap_or_default(),
                        value: r.value.unwrap_or_default(),
                        error: r.error.unwrap_or_default(),
                        timeout: r.timeout.unwrap_or_default(),
                        interval: r.interval.unwrap_or_default(),
                        collected_at: r.collected_at.unwrap_or_default(),
                        display_order: r.display_order.unwrap_or_default(),
                    })
                })
                .collect(),
        ))
    }
}
