//! The Coder backend's lookups (agent token, `site_configs`, API keys, a watcher's metadata) and batched flushes
//! (stats with the activity bump, metadata, heartbeats), against databases that Coder's own code migrated
//! (`interop coderdb migrate`), either seeded by Coder's code (`seed`) or, where a case needs rows in states a seeded
//! deployment does not have (jobs pending, keys expired, builds in every transition), with rows inserted here the way
//! coderd's provisioner and API leave them. Each case asserts the rows as Coder reads them and the statements and
//! transactions it cost.

#[path = "../../tests/common/coderdb.rs"]
mod coderdb;

use std::time::Duration;

use agentwire_store::pubsub::{
    decode_metadata_batch_payload, workspace_event_payload, workspace_owner_channel, METADATA_BATCH_CHANNEL,
    STATS_UPDATE_KIND,
};
use agentwire_store::*;
use sqlx::PgPool;
use uuid::Uuid;

/// coderd's prebuilds system user (migration 000310), whose workspaces are never bumped by activity.
const PREBUILDS_USER: &str = "c42fdf75-3097-471c-8c33-fb52454d81c0";

fn quiet_options() -> StoreOptions {
    let hour = Duration::from_secs(3600);
    StoreOptions {
        stats_flush_interval: hour,
        metadata_flush_interval: hour,
        heartbeat_flush_interval: hour,
        ..StoreOptions::default()
    }
}

/// A provisioner job's state, as Coder's generated `job_status` derives it from the job's times and error.
#[derive(Debug, Clone, Copy)]
enum Job {
    Pending,
    Running,
    Succeeded,
    Failed,
    Canceled,
}

impl Job {
    /// `started_at, canceled_at, completed_at, error`.
    fn columns(self) -> &'static str {
        match self {
            Job::Pending => "NULL, NULL, NULL, NULL",
            Job::Running => "now() - interval '1 minute', NULL, NULL, NULL",
            Job::Succeeded => "now() - interval '1 minute', NULL, now(), NULL",
            Job::Failed => "now() - interval '1 minute', NULL, now(), 'boom'",
            Job::Canceled => "now() - interval '1 minute', now(), now(), NULL",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Build {
    id: Uuid,
    job_id: Uuid,
    resource_id: Uuid,
}

/// The seeded deployment: a pool on the Coder database, and the default organization its migrations create.
struct Coder {
    url: String,
    pool: PgPool,
    org: Uuid,
}

async fn coder() -> (Coder, Store) {
    let url = coderdb::migrated_db().await;
    let pool = PgPool::connect(&url).await.unwrap();
    let org: String =
        sqlx::query_scalar("SELECT id::text FROM organizations WHERE is_default").fetch_one(&pool).await.unwrap();
    let store = Store::open_coder(&url, quiet_options()).await.unwrap();
    (Coder { url, pool, org: org.parse().unwrap() }, store)
}

impl Coder {
    async fn exec(&self, sql: &str) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn micros(&self, expr: &str) -> Option<i64> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT (EXTRACT(EPOCH FROM ({expr})) * 1000000)::bigint")))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn user(&self, username: &str, status: &str) -> Uuid {
        let id = Uuid::new_v4();
        self.exec(&format!(
            "INSERT INTO users (id, email, username, hashed_password, created_at, updated_at, status, login_type) \
             VALUES ('{id}', '{username}@example.com', '{username}', '\\x00', now(), now(), '{status}', 'password'); \
             INSERT INTO organization_members (user_id, organization_id, created_at, updated_at) \
             VALUES ('{id}', '{}', now(), now())",
            self.org
        ))
        .await;
        id
    }

    async fn job(&self, kind: &str, initiator: Uuid, state: Job) -> Uuid {
        let id = Uuid::new_v4();
        self.exec(&format!(
            "INSERT INTO provisioner_jobs (id, created_at, updated_at, started_at, canceled_at, completed_at, error, \
               organization_id, initiator_id, provisioner, storage_method, type, input, file_id) \
             VALUES ('{id}', now(), now(), {}, '{}', '{initiator}', 'terraform', 'file', '{kind}', '{{}}', \
               gen_random_uuid())",
            state.columns(),
            self.org
        ))
        .await;
        id
    }

    /// A template (default activity bump: one hour) and its active version; `(template, version)`.
    async fn template(&self, name: &str, created_by: Uuid) -> (Uuid, Uuid) {
        let (template, version) = (Uuid::new_v4(), Uuid::new_v4());
        let job = self.job("template_version_import", created_by, Job::Succeeded).await;
        self.exec(&format!(
            "INSERT INTO templates (id, created_at, updated_at, organization_id, name, provisioner, \
               active_version_id, created_by) \
             VALUES ('{template}', now(), now(), '{org}', '{name}', 'terraform', '{version}', '{created_by}'); \
             INSERT INTO template_versions (id, template_id, organization_id, created_at, updated_at, name, readme, \
               job_id, created_by) \
             VALUES ('{version}', '{template}', '{org}', now(), now(), 'v1', '', '{job}', '{created_by}')",
            org = self.org
        ))
        .await;
        (template, version)
    }

    async fn workspace(&self, owner: Uuid, template: Uuid, name: &str) -> Uuid {
        let id = Uuid::new_v4();
        self.exec(&format!(
            "INSERT INTO workspaces (id, created_at, updated_at, owner_id, organization_id, template_id, name, \
               autostart_schedule, ttl) \
             VALUES ('{id}', now(), now(), '{owner}', '{}', '{template}', '{name}', 'CRON_TZ=UTC 0 9 * * 1-5', \
               28800000000000)",
            self.org
        ))
        .await;
        id
    }

    /// A build of `workspace` with its job in `state` and one resource.
    async fn build(&self, workspace: Uuid, version: Uuid, number: i32, transition: &str, state: Job) -> Build {
        let initiator: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT owner_id::text FROM workspaces WHERE id = '{workspace}'"
        )))
        .fetch_one(&self.pool)
        .await
        .unwrap();
        let job_id = self.job("workspace_build", initiator.parse().unwrap(), state).await;
        let (id, resource_id) = (Uuid::new_v4(), Uuid::new_v4());
        self.exec(&format!(
            "INSERT INTO workspace_builds (id, created_at, updated_at, workspace_id, template_version_id, \
               build_number, transition, initiator_id, job_id, reason) \
             VALUES ('{id}', now(), now(), '{workspace}', '{version}', {number}, '{transition}', '{initiator}', \
               '{job_id}', 'initiator'); \
             INSERT INTO workspace_resources (id, created_at, job_id, transition, type, name) \
             VALUES ('{resource_id}', now(), '{job_id}', '{transition}', 'docker_container', 'dev')"
        ))
        .await;
        Build { id, job_id, resource_id }
    }

    async fn set_job(&self, job: Uuid, state: Job) {
        let cols = state.columns();
        self.exec(&format!(
            "UPDATE provisioner_jobs SET (started_at, canceled_at, completed_at, error) = ({cols}) WHERE id = '{job}'"
        ))
        .await;
    }

    /// An agent on `resource` with Coder's defaults; `(id, token)`.
    async fn agent(&self, resource: Uuid, name: &str) -> (Uuid, Uuid) {
        let (id, token) = (Uuid::new_v4(), Uuid::new_v4());
        self.exec(&format!(
            "INSERT INTO workspace_agents (id, created_at, updated_at, name, resource_id, auth_token, architecture, \
               operating_system) \
             VALUES ('{id}', now(), now(), '{name}', '{resource}', '{token}', 'amd64', 'linux')"
        ))
        .await;
        (id, token)
    }

    async fn describe_metadata(&self, agent: Uuid, key: &str, order: i32) {
        self.exec(&format!(
            "INSERT INTO workspace_agent_metadata (workspace_agent_id, display_name, key, script, timeout, interval, \
               display_order) \
             VALUES ('{agent}', 'Display {key}', '{key}', 'echo {key}', 5, 10, {order})"
        ))
        .await;
    }
}

/// One user, template, workspace, succeeded start build and agent: what `coder create` leaves behind.
struct Deployment {
    owner: Uuid,
    template: Uuid,
    version: Uuid,
    workspace: Uuid,
    build: Build,
    agent: Uuid,
    token: Uuid,
}

async fn deployment(c: &Coder, username: &str) -> Deployment {
    let owner = c.user(username, "active").await;
    let (template, version) = c.template(&format!("{username}-tpl"), owner).await;
    let workspace = c.workspace(owner, template, &format!("{username}-ws")).await;
    let build = c.build(workspace, version, 1, "start", Job::Succeeded).await;
    let (agent, token) = c.agent(build.resource_id, "main").await;
    Deployment { owner, template, version, workspace, build, agent, token }
}

async fn resolve(store: &Store, token: Uuid) -> Option<ResolvedAgent> {
    store.resolve_agent_by_token(&token.to_string()).await.unwrap()
}

/// The token's agent is live but its build is neither the latest nor in its shutdown case: coderd's query finds no
/// row for it, and the endpoint refuses what it resolves to with the same 401.
async fn stale(store: &Store, token: Uuid) -> bool {
    let a = resolve(store, token).await.expect("a live agent's token finds its row");
    !a.is_latest_build && !a.in_shutdown_case
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_token_fills_every_field_in_one_statement() {
    let (c, store) = coder().await;
    let d = deployment(&c, "alice").await;
    c.exec(&format!(
        "UPDATE workspace_agents SET environment_variables = '{{\"A\":\"1\",\"B\":\"two words\"}}', \
           display_apps = '{{vscode,web_terminal}}', subsystems = '{{envbox,exectrace}}', \
           lifecycle_state = 'ready', started_at = '2026-01-02 03:04:05.123456+00', \
           ready_at = '2026-01-02 03:04:06.5+00', first_connected_at = '2026-01-02 03:04:00+00', \
           api_key_scope = 'no_user_data', connection_timeout_seconds = 120, troubleshooting_url = 'https://help', \
           motd_file = '/etc/motd', directory = '/home/coder', expanded_directory = '/home/coder/x', \
           version = 'v2.30.0', api_version = '2.7', logs_length = 10, display_order = 3, \
           created_at = '2026-01-02 03:03:59.999999+00' \
         WHERE id = '{}'",
        d.agent
    ))
    .await;

    let before = store.queries().snapshot();
    let a = resolve(&store, d.token).await.expect("the agent resolves");
    let diff = store.queries().snapshot().since(&before);
    assert_eq!((diff.total(), diff.begins), (1, 0), "{diff:?}");
    assert_eq!(diff.get("GetAuthenticatedWorkspaceAgentAndBuildByAuthToken"), 1);

    assert_eq!((a.id, a.name.as_str(), a.resource_id, a.parent_id), (d.agent, "main", d.build.resource_id, None));
    // jsonb's own text: the manifest parses it as JSON, spacing and all.
    assert_eq!(a.environment_variables.as_deref(), Some(r#"{"A": "1", "B": "two words"}"#));
    assert_eq!(a.display_apps, r#"["vscode","web_terminal"]"#);
    assert_eq!(a.subsystems, r#"["envbox","exectrace"]"#);
    assert_eq!(a.lifecycle_state, "ready");
    assert_eq!(a.started_at, Some(1_767_323_045_123_456));
    assert_eq!(a.ready_at, Some(1_767_323_046_500_000));
    assert_eq!(a.first_connected_at, Some(1_767_323_040_000_000));
    assert_eq!(a.created_at, 1_767_323_039_999_999);
    assert_eq!(a.api_key_scope, "no_user_data");
    assert_eq!(a.connection_timeout_seconds, 120);
    assert_eq!((a.troubleshooting_url.as_str(), a.motd_file.as_str()), ("https://help", "/etc/motd"));
    assert_eq!((a.directory.as_str(), a.expanded_directory.as_str()), ("/home/coder", "/home/coder/x"));
    assert_eq!((a.version.as_str(), a.api_version.as_str()), ("v2.30.0", "2.7"));
    assert_eq!((a.architecture.as_str(), a.operating_system.as_str()), ("amd64", "linux"));
    assert_eq!((a.logs_length, a.logs_overflowed, a.display_order), (10, false, 3));
    assert_eq!((a.workspace_id, a.workspace_name.as_str(), a.organization_id), (d.workspace, "alice-ws", c.org));
    assert_eq!(a.autostart_schedule.as_deref(), Some("CRON_TZ=UTC 0 9 * * 1-5"));
    assert_eq!((a.owner_id, a.owner_username.as_str()), (d.owner, "alice"));
    assert_eq!((a.template_id, a.template_name.as_str()), (d.template, "alice-tpl"));
    assert_eq!((a.build_id, a.build_number, a.build_transition.as_str()), (d.build.id, 1, "start"));
    assert_eq!(a.template_version_id, d.version);
    assert!(a.is_latest_build && !a.in_shutdown_case);

    // Coder's defaults: every display app, no subsystem, no environment, never started.
    let (sub, sub_token) = c.agent(d.build.resource_id, "dev").await;
    c.exec(&format!("UPDATE workspace_agents SET parent_id = '{}' WHERE id = '{sub}'", d.agent)).await;
    let s = resolve(&store, sub_token).await.expect("a sub-agent resolves");
    assert_eq!((s.id, s.parent_id), (sub, Some(d.agent)));
    assert_eq!(s.display_apps, r#"["vscode","vscode_insiders","web_terminal","ssh_helper","port_forwarding_helper"]"#);
    assert_eq!((s.subsystems.as_str(), s.environment_variables.as_deref()), ("[]", None));
    assert_eq!((s.lifecycle_state.as_str(), s.started_at, s.api_key_scope.as_str()), ("created", None, "all"));

    // An unknown token costs its one statement and finds nothing; a malformed one costs nothing.
    assert!(resolve(&store, Uuid::new_v4()).await.is_none());
    let before = store.queries().snapshot();
    assert!(store.resolve_agent_by_token("not-a-uuid").await.unwrap().is_none());
    assert_eq!(store.queries().snapshot().since(&before).total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_token_follows_coderds_build_rules() {
    let (c, store) = coder().await;
    let d = deployment(&c, "bob").await;

    // A stop build pending or running right after the agent's succeeded start: the shutdown case.
    let stop = c.build(d.workspace, d.version, 2, "stop", Job::Pending).await;
    let a = resolve(&store, d.token).await.expect("shutdown case, pending stop");
    assert!(!a.is_latest_build && a.in_shutdown_case);
    assert_eq!(a.build_number, 1);
    c.set_job(stop.job_id, Job::Running).await;
    assert!(resolve(&store, d.token).await.expect("shutdown case, running stop").in_shutdown_case);

    // Once the stop ends (however it ends), coderd v2.30's query finds no row for the old build's agent: here it
    // comes back with both verdicts false, which the endpoint refuses with coderd's 401.
    for end in [Job::Succeeded, Job::Failed, Job::Canceled] {
        c.set_job(stop.job_id, end).await;
        assert!(stale(&store, d.token).await, "stop {end:?}");
    }

    // The shutdown case needs the start build to have succeeded, and the stop to come right after it.
    let failed = c.build(d.workspace, d.version, 3, "start", Job::Failed).await;
    let (_, failed_token) = c.agent(failed.resource_id, "main").await;
    assert!(resolve(&store, failed_token).await.expect("latest build").is_latest_build);
    c.build(d.workspace, d.version, 4, "stop", Job::Pending).await;
    assert!(stale(&store, failed_token).await, "its start build failed");
    c.build(d.workspace, d.version, 5, "start", Job::Succeeded).await;
    c.build(d.workspace, d.version, 6, "start", Job::Succeeded).await;
    let skipped = c.build(d.workspace, d.version, 7, "start", Job::Succeeded).await;
    let (_, skipped_token) = c.agent(skipped.resource_id, "main").await;
    c.build(d.workspace, d.version, 8, "start", Job::Succeeded).await;
    assert!(stale(&store, skipped_token).await, "superseded by a start");

    // The newest build's agent resolves; deleting it, or its workspace, leaves no row at all.
    let latest = c.build(d.workspace, d.version, 9, "start", Job::Succeeded).await;
    let (agent, token) = c.agent(latest.resource_id, "main").await;
    let a = resolve(&store, token).await.expect("latest build");
    assert!(a.is_latest_build && !a.in_shutdown_case);
    assert_eq!(a.build_number, 9);
    c.exec(&format!("UPDATE workspace_agents SET deleted = true WHERE id = '{agent}'")).await;
    assert!(resolve(&store, token).await.is_none(), "deleted agent");
    c.exec(&format!("UPDATE workspace_agents SET deleted = false WHERE id = '{agent}'")).await;
    assert!(resolve(&store, token).await.is_some());
    c.exec(&format!("UPDATE workspaces SET deleted = true WHERE id = '{}'", d.workspace)).await;
    assert!(resolve(&store, token).await.is_none(), "deleted workspace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_configs_are_read_by_key() {
    let (c, store) = coder().await;
    c.exec(
        "INSERT INTO site_configs (key, value) VALUES ('derp_map', '{\"Regions\":{}}'), \
         ('announcement_banners', '[{\"enabled\":true,\"message\":\"hi\",\"background_color\":\"#fff\"}]')",
    )
    .await;
    let before = store.queries().snapshot();
    assert_eq!(store.derp_map().await.unwrap().as_deref(), Some(r#"{"Regions":{}}"#));
    assert_eq!(store.queries().snapshot().since(&before).get("GetSiteConfig"), 1);
    assert!(store.announcement_banners().await.unwrap().unwrap().contains("\"hi\""));
    assert_eq!(store.service_banner().await.unwrap(), None);
}

/// An API key as coderd's `apikey.Generate` stores it: a 10-character id, the SHA-256 of the 22-character secret as
/// raw bytes, scope `coder:all`, the wildcard allow list. Returns the token a client sends.
async fn api_key(c: &Coder, user: Uuid, login_type: &str, extra: &str) -> String {
    let id: String = (0..10).map(|i| char::from(b'a' + (Uuid::new_v4().as_bytes()[i] % 26))).collect();
    let secret = "S3cr3tS3cr3tS3cr3tS3cr";
    c.exec(&format!(
        "INSERT INTO api_keys (id, hashed_secret, user_id, last_used, expires_at, created_at, updated_at, login_type, \
           lifetime_seconds, scopes, allow_list) \
         VALUES ('{id}', sha256('{secret}'::bytea), '{user}', '0001-01-01', now() + interval '1 day', now(), now(), \
           '{login_type}', 86400, '{{coder:all}}', '{{*:*}}'); \
         UPDATE api_keys SET id = id {extra} WHERE id = '{id}'"
    ))
    .await;
    format!("{id}-{secret}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_checked_as_coderds_middleware_does() {
    let (c, store) = coder().await;
    let user = c.user("carol", "active").await;
    let key = |login: &'static str, extra: &'static str| {
        let c = &c;
        async move { api_key(c, user, login, extra).await }
    };

    let good = key("password", "").await;
    let before = store.queries().snapshot();
    assert_eq!(store.user_by_api_key(&good).await.unwrap(), Some(user));
    let diff = store.queries().snapshot().since(&before);
    assert_eq!((diff.total(), diff.get("GetAPIKeyByID"), diff.begins), (1, 1, 0), "{diff:?}");
    assert_eq!(store.user_by_api_key(&format!("{}X", &good[..good.len() - 1])).await.unwrap(), None, "wrong secret");
    assert_eq!(store.user_by_api_key("aaaaaaaaaa-S3cr3tS3cr3tS3cr3tS3cr").await.unwrap(), None, "unknown id");
    assert_eq!(store.user_by_api_key(&key("token", "").await).await.unwrap(), Some(user), "a coder tokens create key");

    let refused = [
        (", expires_at = now() - interval '1 second'", "expired"),
        (", scopes = '{coder:application_connect}'", "an application-connect key"),
        (", scopes = '{workspace:read}'", "a narrowed scope"),
        (", allow_list = '{workspace:00000000-0000-0000-0000-000000000001}'", "an allow list"),
    ];
    for (extra, why) in refused {
        assert_eq!(store.user_by_api_key(&key("password", extra).await).await.unwrap(), None, "{why}");
    }
    assert_eq!(
        store.user_by_api_key(&key("oauth2_provider_app", "").await).await.unwrap(),
        None,
        "an OAuth2 app token"
    );

    // An OIDC key needs its link, with an OAuth token coderd would not have to refresh.
    let oidc = key("oidc", "").await;
    assert_eq!(store.user_by_api_key(&oidc).await.unwrap(), None, "no user link");
    c.exec(&format!(
        "INSERT INTO user_links (user_id, login_type, linked_id, oauth_expiry) \
         VALUES ('{user}', 'oidc', 'sub', now() - interval '1 minute')"
    ))
    .await;
    assert_eq!(store.user_by_api_key(&oidc).await.unwrap(), None, "expired OAuth token");
    c.exec(&format!("UPDATE user_links SET oauth_expiry = now() + interval '1 hour' WHERE user_id = '{user}'")).await;
    assert_eq!(store.user_by_api_key(&oidc).await.unwrap(), Some(user));
    c.exec(&format!("UPDATE user_links SET oauth_expiry = '0001-01-01 00:00:00+00' WHERE user_id = '{user}'")).await;
    assert_eq!(store.user_by_api_key(&oidc).await.unwrap(), Some(user), "a token without expiry");

    // coderd lets a dormant user in (activating the account), refuses a suspended one.
    c.exec(&format!("UPDATE users SET status = 'dormant' WHERE id = '{user}'")).await;
    assert_eq!(store.user_by_api_key(&good).await.unwrap(), Some(user), "dormant");
    c.exec(&format!("UPDATE users SET status = 'suspended' WHERE id = '{user}'")).await;
    assert_eq!(store.user_by_api_key(&good).await.unwrap(), None, "suspended");
    c.exec(&format!("UPDATE users SET status = 'active', deleted = true WHERE id = '{user}'")).await;
    assert_eq!(store.user_by_api_key(&good).await.unwrap(), None, "deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_metadata_for_user_checks_ownership_and_keeps_coderds_order() {
    let (c, store) = coder().await;
    let d = deployment(&c, "dave").await;
    let other = c.user("eve", "active").await;
    c.describe_metadata(d.agent, "load", 2).await;
    c.describe_metadata(d.agent, "cpu", 1).await;
    c.describe_metadata(d.agent, "disk", 1).await;
    c.exec(&format!(
        "UPDATE workspace_agent_metadata SET value = '0.5', error = '', collected_at = '2026-01-02 03:04:05+00' \
         WHERE workspace_agent_id = '{}' AND key = 'load'",
        d.agent
    ))
    .await;

    let before = store.queries().snapshot();
    let rows = store.agent_metadata_for_user(d.owner, d.agent).await.unwrap().expect("the owner's agent");
    let diff = store.queries().snapshot().since(&before);
    assert_eq!((diff.total(), diff.get("GetWorkspaceAgentMetadataForOwner")), (1, 1), "{diff:?}");
    let keys: Vec<&str> = rows.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys, ["cpu", "disk", "load"]);
    let load = &rows[2];
    assert_eq!((load.display_name.as_str(), load.script.as_str()), ("Display load", "echo load"));
    assert_eq!((load.value.as_str(), load.timeout, load.interval, load.display_order), ("0.5", 5, 10, 2));
    assert_eq!(load.collected_at, 1_767_323_045_000_000);
    assert_eq!(rows[0].collected_at, -62_135_596_800_000_000, "Coder's zero time, never collected");

    assert!(store.agent_metadata_for_user(other, d.agent).await.unwrap().is_none(), "not the user's");
    assert!(store.agent_metadata_for_user(d.owner, Uuid::new_v4()).await.unwrap().is_none(), "unknown agent");
    let (bare, _) = c.agent(d.build.resource_id, "bare").await;
    assert_eq!(store.agent_metadata_for_user(d.owner, bare).await.unwrap(), Some(vec![]), "no metadata");
    c.exec(&format!("UPDATE workspace_agents SET deleted = true WHERE id = '{bare}'")).await;
    assert!(store.agent_metadata_for_user(d.owner, bare).await.unwrap().is_none(), "deleted agent");
    c.exec(&format!("UPDATE workspaces SET deleted = true WHERE id = '{}'", d.workspace)).await;
    assert!(store.agent_metadata_for_user(d.owner, d.agent).await.unwrap().is_none(), "deleted workspace");
}

/// The workspace's `last_used_at` and its first build's deadline.
async fn activity(c: &Coder, d: &Deployment) -> (i64, i64) {
    let used = c.micros(&format!("(SELECT last_used_at FROM workspaces WHERE id = '{}')", d.workspace)).await;
    let deadline = c.micros(&format!("(SELECT deadline FROM workspace_builds WHERE id = '{}')", d.build.id)).await;
    (used.unwrap(), deadline.unwrap())
}

/// A `workspace_agent_stats` row as read back.
#[derive(sqlx::FromRow)]
struct StoredStats {
    agent_id: String,
    workspace_id: String,
    template_id: String,
    user_id: String,
    connections_by_proto: String,
    connection_count: i64,
    rx_bytes: i64,
    connection_median_latency_ms: f64,
    session_count_vscode: i64,
    session_count_ssh: i64,
    usage: bool,
}

fn report(connections: i64) -> StatsReport {
    StatsReport {
        connections_by_proto: if connections > 0 { r#"{"ssh":1,"vscode":2}"#.into() } else { String::new() },
        connection_count: connections,
        rx_packets: 1,
        rx_bytes: 100,
        tx_packets: 2,
        tx_bytes: 200,
        connection_median_latency_ms: 12.5,
        session_count_vscode: 2,
        session_count_jetbrains: 0,
        session_count_reconnecting_pty: 0,
        session_count_ssh: 1,
        usage: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_flush_inserts_marks_use_bumps_and_notifies_in_one_transaction() {
    let (c, store) = coder().await;
    let busy = deployment(&c, "frank").await;
    let idle = deployment(&c, "grace").await;
    let capped = deployment(&c, "heidi").await;
    for (d, max) in [
        (&busy, "'0001-01-01 00:00:00+00'"),
        (&idle, "'0001-01-01 00:00:00+00'"),
        (&capped, "now() + interval '30 minutes'"),
    ] {
        c.exec(&format!(
            "UPDATE workspace_builds SET deadline = now() + interval '10 minutes', max_deadline = {max} WHERE id = '{}'",
            d.build.id
        ))
        .await;
    }
    let mut events = store.pubsub().subscribe(&workspace_owner_channel(busy.owner)).await.unwrap();

    let scope = |d: &Deployment| {
        let store = store.clone();
        let token = d.token;
        async move { store.into_agent_scope(resolve(&store, token).await.unwrap()) }
    };
    let (busy_scope, idle_scope, capped_scope) = (scope(&busy).await, scope(&idle).await, scope(&capped).await);
    assert!(busy_scope.enqueue_stats(report(3)));
    assert!(busy_scope.enqueue_stats(report(1)));
    assert!(idle_scope.enqueue_stats(report(0)));
    // A protocol name jsonb cannot hold costs that row its breakdown, not the flush.
    assert!(capped_scope.enqueue_stats(StatsReport { connections_by_proto: r#"{"ss\u0000h":1}"#.into(), ..report(1) }));

    let before = store.queries().snapshot();
    let flushed_at = c.micros("now()").await.unwrap();
    store.flush().await;
    let diff = store.queries().snapshot().since(&before);
    assert_eq!(store.batcher_stats().stats.flush_errors, 0, "{:?}", store.batcher_stats());
    assert_eq!((diff.begins, diff.commits, diff.rollbacks), (1, 1, 0), "one transaction: {diff:?}");
    assert_eq!(diff.get("InsertWorkspaceAgentStats"), 1, "{diff:?}");
    assert_eq!(diff.get("BatchUpdateWorkspaceLastUsedAt"), 1, "{diff:?}");
    assert_eq!(diff.get("ActivityBumpWorkspace"), 1, "{diff:?}");
    assert_eq!(
        diff.get("pg_notify"),
        1,
        "the events of every active workspace in one statement, in the transaction: {diff:?}"
    );
    assert_eq!(diff.notifications, 2, "one event per active workspace: {diff:?}");
    assert_eq!(diff.total(), 4, "{diff:?}");

    // The rows, as Coder's template insights read them.
    let rows: Vec<StoredStats> = sqlx::query_as(
        "SELECT agent_id::text, workspace_id::text, template_id::text, user_id::text, connections_by_proto::text, \
           connection_count, rx_bytes, connection_median_latency_ms, session_count_vscode, session_count_ssh, usage \
         FROM workspace_agent_stats ORDER BY connection_count DESC, workspace_id",
    )
    .fetch_all(&c.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4);
    let first = &rows[0];
    assert_eq!(
        [&first.agent_id, &first.workspace_id, &first.template_id, &first.user_id],
        [busy.agent, busy.workspace, busy.template, busy.owner].map(|id| id.to_string()).each_ref()
    );
    assert_eq!(first.connections_by_proto, r#"{"ssh": 1, "vscode": 2}"#);
    assert_eq!((first.connection_count, first.rx_bytes, first.connection_median_latency_ms), (3, 100, 12.5));
    assert_eq!((first.session_count_vscode, first.session_count_ssh, first.usage), (2, 1, false));
    let by_proto: Vec<&str> = rows.iter().map(|r| r.connections_by_proto.as_str()).collect();
    assert_eq!(by_proto.iter().filter(|p| **p == "{}").count(), 2, "the idle and the NUL rows: {by_proto:?}");
    let created = c.micros("(SELECT min(created_at) FROM workspace_agent_stats)").await.unwrap();
    assert!((created - flushed_at).abs() < 60_000_000, "created_at is the report's time");

    // Activity: last use and the deadline bump for the workspaces with connections; the idle one keeps both.
    let hour = 3_600_000_000;
    let (used, deadline) = activity(&c, &busy).await;
    assert!(used >= flushed_at - 1_000_000, "last_used_at set");
    assert!((deadline - (flushed_at + hour)).abs() < 60_000_000, "bumped to now + the template's hour");
    let (used, deadline) = activity(&c, &capped).await;
    assert!(used >= flushed_at - 1_000_000);
    let max = c.micros(&format!("(SELECT max_deadline FROM workspace_builds WHERE id = '{}')", capped.build.id)).await;
    assert_eq!(Some(deadline), max, "capped at max_deadline");
    let (used, deadline) = activity(&c, &idle).await;
    assert_eq!(used, c.micros("'0001-01-01 00:00:00+00'::timestamptz").await.unwrap(), "never used");
    assert!(deadline < flushed_at + 11 * 60_000_000, "not bumped");

    let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap().unwrap();
    assert_eq!(event, workspace_event_payload(STATS_UPDATE_KIND, busy.workspace, None));

    // Every row decodes with coderd's types (the referee checks each stats row as coderd's insights read it).
    for d in [&busy, &idle, &capped] {
        let read = coderdb::read_agent(&c.url, &d.agent.to_string()).await;
        assert!(!read["stats"].as_array().expect("stats").is_empty(), "{}", read["stats"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_bump_keeps_coderds_conditions() {
    let (c, store) = coder().await;
    let hour = 3_600_000_000;
    // A workspace per rule of coderd's statement, and whether a flush with a connection bumps its start build.
    struct Case {
        name: &'static str,
        deadline: &'static str,
        stop_after: bool,
        activity_bump: &'static str,
        prebuild: bool,
        bumps: bool,
    }
    let cases = [
        Case {
            name: "due",
            deadline: "now() + interval '10 minutes'",
            stop_after: false,
            activity_bump: "3600000000000",
            prebuild: false,
            bumps: true,
        },
        Case {
            name: "fresh",
            deadline: "now() + interval '59 minutes'",
            stop_after: false,
            activity_bump: "3600000000000",
            prebuild: false,
            bumps: false,
        },
        Case {
            name: "manual",
            deadline: "'0001-01-01 00:00:00+00'",
            stop_after: false,
            activity_bump: "3600000000000",
            prebuild: false,
            bumps: false,
        },
        Case {
            name: "stopping",
            deadline: "now() + interval '10 minutes'",
            stop_after: true,
            activity_bump: "3600000000000",
            prebuild: false,
            bumps: false,
        },
        Case {
            name: "nobump",
            deadline: "now() + interval '10 minutes'",
            stop_after: false,
            activity_bump: "0",
            prebuild: false,
            bumps: false,
        },
        Case {
            name: "subsecond",
            deadline: "now() + interval '10 minutes'",
            stop_after: false,
            activity_bump: "999999999",
            prebuild: false,
            bumps: false,
        },
        Case {
            name: "prebuild",
            deadline: "now() + interval '10 minutes'",
            stop_after: false,
            activity_bump: "3600000000000",
            prebuild: true,
            bumps: false,
        },
    ];
    let mut seen = Vec::new();
    for case in &cases {
        let d = deployment(&c, case.name).await;
        c.exec(&format!("UPDATE templates SET activity_bump = {} WHERE id = '{}'", case.activity_bump, d.template))
            .await;
        c.exec(&format!("UPDATE workspace_builds SET deadline = {} WHERE id = '{}'", case.deadline, d.build.id)).await;
        // The agent resolves before the stop build exists (the shutdown case would let it in anyway).
        let scope = store.into_agent_scope(resolve(&store, d.token).await.unwrap());
        if case.stop_after {
            c.build(d.workspace, d.version, 2, "stop", Job::Running).await;
        }
        if case.prebuild {
            c.exec(&format!("UPDATE workspaces SET owner_id = '{PREBUILDS_USER}' WHERE id = '{}'", d.workspace)).await;
        }
        let (_, before) = activity(&c, &d).await;
        assert!(scope.enqueue_stats(report(1)));
        seen.push((case, d, before));
    }
    let now = c.micros("now()").await.unwrap();
    store.flush().await;
    assert_eq!(store.batcher_stats().stats.flush_errors, 0);
    for (case, d, before) in seen {
        let (_, after) = activity(&c, &d).await;
        if case.bumps {
            assert!((after - (now + hour)).abs() < 60_000_000, "{}: bumped to now + 1 h", case.name);
        } else {
            assert_eq!(after, before, "{}: left alone", case.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_flush_updates_described_keys_and_notifies_in_one_transaction() {
    let (c, store) = coder().await;
    let a = deployment(&c, "ivan").await;
    let b = deployment(&c, "judy").await;
    for d in [&a, &b] {
        c.describe_metadata(d.agent, "cpu", 0).await;
        c.describe_metadata(d.agent, "mem", 1).await;
    }
    let mut batches = store.pubsub().subscribe(METADATA_BATCH_CHANNEL).await.unwrap();
    let scope_a = store.into_agent_scope(resolve(&store, a.token).await.unwrap());
    let scope_b = store.into_agent_scope(resolve(&store, b.token).await.unwrap());
    let update = |key: &str, value: &str, error: &str| MetadataUpdate {
        key: key.into(),
        value: value.into(),
        error: error.into(),
    };
    let queued =
        scope_a.enqueue_metadata(&[update("cpu", "1%", ""), update("cpu", "2%", ""), update("undescribed", "x", "")]);
    assert_eq!(queued.accepted, 3);
    scope_b.enqueue_metadata(&[update("mem", "", "collect failed")]);

    let before = store.queries().snapshot();
    let now = c.micros("now()").await.unwrap();
    store.flush().await;
    let diff = store.queries().snapshot().since(&before);
    assert_eq!(store.batcher_stats().metadata.flush_errors, 0);
    assert_eq!((diff.begins, diff.commits), (1, 1), "{diff:?}");
    assert_eq!(diff.get("BatchUpdateWorkspaceAgentMetadata"), 1, "{diff:?}");
    assert_eq!((diff.get("pg_notify"), diff.notifications, diff.total()), (1, 1, 2), "{diff:?}");

    let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
        "SELECT workspace_agent_id::text, key, value, error, (EXTRACT(EPOCH FROM collected_at) * 1000000)::bigint \
         FROM workspace_agent_metadata ORDER BY workspace_agent_id = $1::uuid DESC, key",
    )
    .bind(a.agent.to_string())
    .fetch_all(&c.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4, "the undescribed key made no row: {rows:?}");
    let (cpu_a, mem_a, cpu_b, mem_b) = (&rows[0], &rows[1], &rows[2], &rows[3]);
    assert_eq!((cpu_a.1.as_str(), cpu_a.2.as_str(), cpu_a.3.as_str()), ("cpu", "2%", ""), "the latest value wins");
    assert!((cpu_a.4 - now).abs() < 60_000_000, "collected at the server's time");
    assert_eq!((mem_a.2.as_str(), mem_a.4), ("", -62_135_596_800_000_000), "untouched");
    assert_eq!(cpu_b.2, "");
    assert_eq!((mem_b.2.as_str(), mem_b.3.as_str()), ("", "collect failed"));
    let read = coderdb::read_agent(&c.url, &b.agent.to_string()).await;
    let mem = read["metadata"].as_array().expect("metadata").iter().find(|m| m["key"] == "mem").cloned();
    assert_eq!(mem.map(|m| m["error"].clone()), Some("collect failed".into()), "{}", read["metadata"]);

    let message = tokio::time::timeout(Duration::from_secs(10), batches.recv()).await.unwrap().unwrap();
    let mut ids = decode_metadata_batch_payload(&message).unwrap();
    ids.sort();
    let mut want = vec![a.agent, b.agent];
    want.sort();
    assert_eq!(ids, want);

    // The benchmark's per-row shape: one key, its own transaction, its own counter.
    let before = store.queries().snapshot();
    let changed = bench_support::update_metadata_row_per_tx(&store, a.agent, "mem", "3 GiB", "").await.unwrap();
    let diff = store.queries().snapshot().since(&before);
    assert_eq!(changed, 1);
    assert_eq!(
        (diff.begins, diff.commits, diff.get("BenchUpdateWorkspaceAgentMetadataRow"), diff.total()),
        (1, 1, 1, 1)
    );
    assert_eq!(bench_support::update_metadata_row_per_tx(&store, a.agent, "nope", "x", "").await.unwrap(), 0);
    let mem: String = sqlx::query_scalar(
        "SELECT value FROM workspace_agent_metadata WHERE workspace_agent_id = $1::uuid AND key = 'mem'",
    )
    .bind(a.agent.to_string())
    .fetch_one(&c.pool)
    .await
    .unwrap();
    assert_eq!(mem, "3 GiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_refresh_connections_in_one_statement_never_backwards() {
    let (c, store) = coder().await;
    let a = deployment(&c, "mallory").await;
    let b = deployment(&c, "niaj").await;
    let (replica_a, replica_b) = (Uuid::new_v4(), Uuid::new_v4());
    // b was seen by a newer write (its replica's own refresh) than the heartbeat about to be flushed.
    c.exec(&format!(
        "UPDATE workspace_agents SET first_connected_at = now() - interval '1 hour', \
           last_connected_at = now() + interval '1 hour', last_connected_replica_id = '{replica_b}', \
           disconnected_at = now() - interval '2 hours' WHERE id = '{}'",
        b.agent
    ))
    .await;
    let scope_a = store.into_agent_scope(resolve(&store, a.token).await.unwrap());
    let scope_b = store.into_agent_scope(resolve(&store, b.token).await.unwrap());
    assert!(scope_a.heartbeat(replica_a));
    assert!(scope_a.heartbeat(replica_a));
    assert!(scope_b.heartbeat(replica_a));

    let before = store.queries().snapshot();
    let now = c.micros("now()").await.unwrap();
    store.flush().await;
    let diff = store.queries().snapshot().since(&before);
    assert_eq!(store.batcher_stats().heartbeats.flush_errors, 0);
    assert_eq!(
        (diff.begins, diff.commits, diff.get("BatchUpdateWorkspaceAgentHeartbeats"), diff.total()),
        (1, 1, 1, 1)
    );

    let row = |agent: Uuid| {
        let pool = c.pool.clone();
        async move {
            sqlx::query_as::<_, (Option<i64>, Option<String>, i64, Option<i64>, Option<i64>)>(
                "SELECT (EXTRACT(EPOCH FROM last_connected_at) * 1000000)::bigint, last_connected_replica_id::text, \
                   (EXTRACT(EPOCH FROM updated_at) * 1000000)::bigint, \
                   (EXTRACT(EPOCH FROM first_connected_at) * 1000000)::bigint, \
                   (EXTRACT(EPOCH FROM disconnected_at) * 1000000)::bigint \
                 FROM workspace_agents WHERE id = $1::uuid",
            )
            .bind(agent.to_string())
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let (last, replica, updated, first, disconnected) = row(a.agent).await;
    assert!((last.unwrap() - now).abs() < 60_000_000, "last_connected_at refreshed");
    assert_eq!(replica, Some(replica_a.to_string()));
    assert!(updated >= last.unwrap(), "updated_at is the write's time");
    assert_eq!((first, disconnected), (None, None), "a refresh is not a connect");
    let (last, replica, _, first, disconnected) = row(b.agent).await;
    assert!(last.unwrap() > now + 3_000_000_000, "never moved backwards");
    assert_eq!(replica, Some(replica_b.to_string()));
    assert!(first.is_some() && disconnected.is_some());
    let read = coderdb::read_agent(&c.url, &a.agent.to_string()).await;
    assert_eq!(read["agent"]["last_connected_replica_id"], replica_a.to_string(), "{}", read["agent"]);
}

fn seeded_uuid(v: &serde_json::Value) -> Uuid {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("a uuid in the seed, not {v}"))
}

/// The deployment Coder's own code seeded (fixtures, provisioner, sub-agent API, API key): its tokens resolve as
/// coderd's middleware resolves them, its owner's key authenticates, and its workspace takes the flushes' activity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_seeded_by_coder_resolves_authenticates_and_takes_activity() {
    let db = coderdb::fresh_coder_db().await;
    let seed = &db.seed;
    let store = Store::open_coder(&db.url, quiet_options()).await.unwrap();
    let pool = PgPool::connect(&db.url).await.unwrap();
    let c = Coder { url: db.url.clone(), pool, org: seeded_uuid(&seed["organization"]["id"]) };

    let a = resolve(&store, seeded_uuid(&seed["agent"]["token"])).await.expect("the seeded agent");
    assert_eq!((a.id, a.name.as_str()), (seeded_uuid(&seed["agent"]["id"]), "main"));
    assert_eq!((a.workspace_id, a.workspace_name.as_str()), (seeded_uuid(&seed["workspace"]["id"]), "dev"));
    assert_eq!((a.owner_id, a.owner_username.as_str()), (seeded_uuid(&seed["owner"]["id"]), "owner"));
    assert_eq!((a.template_id, a.template_name.as_str()), (seeded_uuid(&seed["template"]["id"]), "docker"));
    assert_eq!(a.template_version_id, seeded_uuid(&seed["template"]["active_version_id"]));
    assert_eq!((a.build_id, a.build_number), (seeded_uuid(&seed["workspace"]["build_id"]), 1));
    assert_eq!((a.organization_id, a.connection_timeout_seconds, a.api_key_scope.as_str()), (c.org, 120, "all"));
    assert_eq!(a.display_apps, r#"["vscode","ssh_helper","port_forwarding_helper","web_terminal"]"#);
    assert!(a.environment_variables.as_deref().is_some_and(|e| e.contains(r#""EDITOR": "vim""#)), "{a:?}");
    assert!(a.is_latest_build && !a.in_shutdown_case);

    let sub = resolve(&store, seeded_uuid(&seed["sub_agent"]["token"])).await.expect("the sub-agent");
    assert_eq!(sub.parent_id, Some(a.id));
    assert!(resolve(&store, seeded_uuid(&seed["superseded"]["agent_token"])).await.is_some());
    // coderd refuses both: the deleted workspace's agent finds no row, the superseded build's one is stale.
    assert!(resolve(&store, seeded_uuid(&seed["deleted"]["agent_token"])).await.is_none());
    assert!(stale(&store, seeded_uuid(&seed["superseded"]["old_agent_token"])).await);
    assert_eq!(seed["stale_tokens"].as_array().map(Vec::len), Some(2), "{}", seed["stale_tokens"]);

    // The key coderd's apikey.Generate made: our hash of its secret is the digest coderd stored.
    let token = seed["owner"]["api_token"].as_str().expect("api token");
    assert_eq!(store.user_by_api_key(token).await.unwrap(), Some(a.owner_id));

    // A report with a connection: last use now, the deadline (due in 30 minutes) bumped to now + the template's
    // hour, inside the 8 h max deadline; a metadata value for a described key; a heartbeat. coderd's own subscribers
    // listen for the flushes' notices.
    let owner = seed["owner"]["id"].as_str().expect("owner id");
    let agent_id = seed["agent"]["id"].as_str().expect("agent id");
    let channels = coderdb::channels(owner, agent_id).await;
    let channel = |key: &str| channels[key].as_str().unwrap_or_else(|| panic!("no {key} in {channels}")).to_owned();
    let wait = Duration::from_secs(30);
    let mut events = coderdb::Listener::spawn(&db.url, &channel("workspace_owner"), 1, wait).await;
    let mut batches = coderdb::Listener::spawn(&db.url, &channel("agent_metadata_batch"), 1, wait).await;
    let replica = Uuid::new_v4();
    let scope = store.into_agent_scope(a);
    assert!(scope.enqueue_stats(report(1)));
    scope.enqueue_metadata(&[MetadataUpdate { key: "cpu".into(), value: "12%".into(), error: String::new() }]);
    assert!(scope.heartbeat(replica));
    let now = c.micros("now()").await.unwrap();
    store.flush().await;
    let stats = store.batcher_stats();
    let errors = (stats.stats.flush_errors, stats.metadata.flush_errors, stats.heartbeats.flush_errors);
    assert_eq!(errors, (0, 0, 0), "{stats:?}");
    let workspace = seeded_uuid(&seed["workspace"]["id"]);
    let build = seeded_uuid(&seed["workspace"]["build_id"]);
    let used = c.micros(&format!("(SELECT last_used_at FROM workspaces WHERE id = '{workspace}')")).await.unwrap();
    let deadline = c.micros(&format!("(SELECT deadline FROM workspace_builds WHERE id = '{build}')")).await.unwrap();
    assert!(used >= now - 1_000_000, "last_used_at set");
    assert!((deadline - (now + 3_600_000_000)).abs() < 60_000_000, "bumped by the template's hour");

    // What was written, read back with coderd's own queries and types.
    let read = coderdb::read_agent(&db.url, agent_id).await;
    let rows = read["stats"].as_array().expect("stats rows");
    assert_eq!(rows.len(), 1, "{}", read["stats"]);
    assert_eq!(rows[0]["connections_by_proto"], serde_json::json!({"ssh": 1, "vscode": 2}), "{}", rows[0]);
    assert_eq!((rows[0]["connection_count"].as_i64(), rows[0]["usage"].as_bool()), (Some(1), Some(false)));
    assert_eq!(rows[0]["workspace_id"], seed["workspace"]["id"]);
    assert_eq!(rows[0]["user_id"], seed["owner"]["id"]);
    assert_eq!(rows[0]["template_id"], seed["template"]["id"]);
    let cpu = read["metadata"].as_array().expect("metadata").iter().find(|m| m["key"] == "cpu").cloned();
    assert_eq!(cpu.as_ref().map(|m| m["value"].clone()), Some(serde_json::json!("12%")), "{}", read["metadata"]);
    let replica_read = &read["agent"]["last_connected_replica_id"];
    assert_eq!(*replica_read, replica.to_string(), "{replica_read}");
    assert_ne!(read["workspace"]["last_used_at"], seed["workspace"]["last_used_at"]);
    assert_ne!(read["latest_build"]["deadline"], seed["workspace"]["deadline"]);

    let event = tokio::time::timeout(wait, events.next()).await.expect("a workspace event").expect("event");
    assert_eq!(event["decoder"], "wspubsub.HandleWorkspaceEvent", "{event}");
    let want = serde_json::json!({"kind": "stats_update", "workspace_id": seed["workspace"]["id"]});
    assert_eq!(event["decoded"], want, "{event}");
    assert!(events.finish().await.1);
    let batch = tokio::time::timeout(wait, batches.next()).await.expect("a metadata batch").expect("batch");
    assert_eq!(batch["decoded"]["agent_ids"], serde_json::json!([agent_id]), "{batch}");
    assert!(batches.finish().await.1);
}
