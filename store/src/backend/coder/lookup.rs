//! `LookupSql` on Coder's schema: the token lookup as coderd's agent middleware does it, users' API keys,
//! `site_configs`, and a watcher's metadata read.

use uuid::Uuid;

use super::CoderDb;
use crate::api_key::constant_time_eq;
use crate::backend::{qa, qs, LookupSql};
use crate::counting::Stmt;
use crate::engine::Engine;
use crate::model::{id, now_micros, Metadata, ResolvedAgent};
use crate::StoreError;

/// coderd's `GetAuthenticatedWorkspaceAgentAndBuildByAuthToken`, widened to everything the session needs (owner,
/// template, both build verdicts) so the session never reads the agent again.
///
/// coderd's WHERE keeps a token of a deleted agent or workspace out, and also one whose build is neither the latest
/// nor in its shutdown case. The first two are kept out here too; the third comes back with both verdicts false, as
/// from agentwire's own schema, and the endpoint refuses it with the same 401 coderd answers ("Workspace agent not
/// authorized."), counting it as a stale build rather than an unknown token. The verdicts are coderd's: the latest
/// build by number, or a succeeded `start` build right before a latest `stop` whose job is pending or running.
///
/// Shapes are the agentwire backend's: enum arrays as compact JSON arrays (`array_to_json`), the environment as
/// the jsonb's text, times as unix microseconds, integers widened to bigint.
const RESOLVE_AGENT_BY_TOKEN: Stmt = Stmt::new(
    "GetAuthenticatedWorkspaceAgentAndBuildByAuthToken",
    "SELECT a.id::text AS id, a.name, a.resource_id::text AS resource_id, a.parent_id::text AS parent_id, \
       a.directory, a.expanded_directory, a.environment_variables::text AS environment_variables, \
       a.motd_file, a.troubleshooting_url, a.connection_timeout_seconds::bigint AS connection_timeout_seconds, \
       a.architecture, a.operating_system, a.version, a.api_version, a.lifecycle_state::text AS lifecycle_state, \
       (EXTRACT(EPOCH FROM a.started_at) * 1000000)::bigint AS started_at, \
       (EXTRACT(EPOCH FROM a.ready_at) * 1000000)::bigint AS ready_at, \
       a.logs_length::bigint AS logs_length, a.logs_overflowed, \
       COALESCE(array_to_json(a.display_apps)::text, '[]') AS display_apps, \
       COALESCE(array_to_json(a.subsystems)::text, '[]') AS subsystems, \
       a.api_key_scope::text AS api_key_scope, \
       (EXTRACT(EPOCH FROM a.first_connected_at) * 1000000)::bigint AS first_connected_at, \
       (EXTRACT(EPOCH FROM a.created_at) * 1000000)::bigint AS created_at, \
       a.display_order::bigint AS display_order, \
       w.id::text AS workspace_id, w.name AS workspace_name, w.organization_id::text AS organization_id, \
       w.autostart_schedule, u.id::text AS owner_id, u.username AS owner_username, \
       t.id::text AS template_id, t.name AS template_name, \
       b.id::text AS build_id, b.build_number::bigint AS build_number, b.transition::text AS build_transition, \
       b.template_version_id::text AS template_version_id, \
       v.is_latest AS is_latest_build, v.in_shutdown_case \
     FROM workspace_agents a \
     JOIN workspace_resources r ON r.id = a.resource_id \
     JOIN workspace_builds b ON b.job_id = r.job_id \
     JOIN provisioner_jobs bj ON bj.id = b.job_id \
     JOIN workspaces w ON w.id = b.workspace_id \
     JOIN users u ON u.id = w.owner_id \
     JOIN templates t ON t.id = w.template_id \
     CROSS JOIN LATERAL ( \
       SELECT lb.build_number = b.build_number AS is_latest, \
         (b.transition = 'start' \
          AND bj.job_status = 'succeeded' \
          AND lb.build_number = b.build_number + 1 AND lb.transition = 'stop' \
          AND lj.job_status IN ('pending', 'running')) AS in_shutdown_case \
       FROM workspace_builds lb JOIN provisioner_jobs lj ON lj.id = lb.job_id \
       WHERE lb.workspace_id = b.workspace_id \
       ORDER BY lb.build_number DESC LIMIT 1) v \
     WHERE a.auth_token = $1::uuid AND w.deleted = FALSE AND a.deleted = FALSE",
);

const GET_SITE_CONFIG: Stmt = Stmt::new("GetSiteConfig", "SELECT value FROM site_configs WHERE key = $1");

/// coderd's `GetAPIKeyByID` with, in the same statement, what its API key middleware checks after it
/// (`ExtractAPIKey`): expiry, the user (deleted, suspended), and the OAuth link of a GitHub or OIDC key.
///
/// The hash comes back hex-encoded: `hashed_secret` is the raw SHA-256 of the secret (coderd's
/// `apikey.HashSecret`), and `hash_api_key_secret` gives the same digest as lowercase hex, so the two compare as
/// equal-length strings in constant time.
///
/// Where coderd's middleware would do more than read, this refuses instead of guessing, so a key is never worth more
/// here than in coderd:
/// * scopes and allow list: coderd evaluates them with RBAC on every request; the callers of this lookup act with the
///   user's full rights, so only a key of scope `coder:all` with the wildcard allow list (what `coder login` and
///   `coder tokens create` make) passes;
/// * `oauth2_provider_app` keys: coderd checks the token's audience against its access URL, which a read cannot;
/// * GitHub/OIDC keys whose link's OAuth token expired: coderd refreshes it with the provider; here they are refused
///   until coderd has refreshed it (at the user's next request to coderd).
///
/// A dormant user passes: coderd's middleware activates the account and lets the request through; the activation
/// (a write and an audit entry) stays coderd's. coderd's hourly `last_used`/`expires_at` refresh of the key is not
/// made either: a lookup writes nothing.
const USER_BY_API_KEY: Stmt = Stmt::new(
    "GetAPIKeyByID",
    "SELECT k.user_id::text, encode(k.hashed_secret, 'hex') \
     FROM api_keys k JOIN users u ON u.id = k.user_id \
     WHERE k.id = $1 AND k.expires_at >= to_timestamp($2::float8 / 1e6) \
       AND u.deleted = FALSE AND u.status <> 'suspended' \
       AND 'coder:all' = ANY(k.scopes) AND '*:*' = ANY(k.allow_list) \
       AND k.login_type <> 'oauth2_provider_app' \
       AND (k.login_type NOT IN ('github', 'oidc') OR EXISTS ( \
         SELECT 1 FROM user_links l WHERE l.user_id = k.user_id AND l.login_type = k.login_type \
           AND (l.oauth_expiry = '0001-01-01 00:00:00+00' \
                OR l.oauth_expiry >= to_timestamp($2::float8 / 1e6))))",
);

/// coderd's watcher runs `GetWorkspaceAgentAndWorkspaceByID` (in `ExtractWorkspaceAgentAndWorkspaceParam`: live
/// agent, live workspace, owner not deleted, a workspace build's job), authorizes, then `GetWorkspaceAgentMetadata`;
/// here the three are one statement, counted under the agentwire backend's name for it so the metric reads the same
/// on both schemas. The agent row is the anchor: no agent (or not the user's) gives no row, an owned agent
/// without metadata one row of NULLs. The order is coderd's watcher's (`convertWorkspaceAgentMetadata`).
const AGENT_METADATA_FOR_USER: Stmt = Stmt::new(
    "GetWorkspaceAgentMetadataForOwner",
    "SELECT m.key, m.display_name, m.script, m.value, m.error, m.timeout, m.interval, \
       (EXTRACT(EPOCH FROM m.collected_at) * 1000000)::bigint AS collected_at, \
       m.display_order::bigint AS display_order \
     FROM workspace_agents a \
     JOIN workspace_resources r ON r.id = a.resource_id \
     JOIN provisioner_jobs j ON j.id = r.job_id \
     JOIN workspace_builds b ON b.job_id = j.id \
     JOIN workspaces w ON w.id = b.workspace_id \
     JOIN users u ON u.id = w.owner_id \
     LEFT JOIN workspace_agent_metadata m ON m.workspace_agent_id = a.id \
     WHERE a.id = $1::uuid AND w.owner_id = $2::uuid AND a.deleted = FALSE AND w.deleted = FALSE \
       AND u.deleted = FALSE AND j.type = 'workspace_build' \
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

const PG: Engine = Engine::Postgres;

impl LookupSql for CoderDb {
    async fn resolve_agent_by_token(&self, token: Uuid) -> Result<Option<ResolvedAgent>, StoreError> {
        let row = qa!(self.counters, PG, RESOLVE_AGENT_BY_TOKEN, ResolvedAgent)
            .bind(id(token))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row)
    }

    async fn site_config(&self, key: &str) -> Result<Option<String>, StoreError> {
        let v = qs!(self.counters, PG, GET_SITE_CONFIG, String).bind(key).fetch_optional(&self.pool).await?;
        Ok(v)
    }

    async fn user_by_api_key(&self, key_id: &str, hashed_secret: &str) -> Result<Option<Uuid>, StoreError> {
        let row = qa!(self.counters, PG, USER_BY_API_KEY, (String, String))
            .bind(key_id)
            .bind(now_micros())
            .fetch_optional(&self.pool)
            .await?;
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
        let rows = qa!(self.counters, PG, AGENT_METADATA_FOR_USER, OwnedMetadataRow)
            .bind(id(agent_id))
            .bind(id(user_id))
            .fetch_all(&self.pool)
            .await?;
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
