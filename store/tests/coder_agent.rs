//! `AgentScope` on a Coder v2.30 database: every per-agent read and write against Coder's own migrated schema, with
//! its effect asserted on Coder's rows (columns, enums, timestamps) and the statements it cost.
//!
//! Run with `scripts/with-postgres.sh cargo test -p agentwire-store --test coder_agent`.

#[path = "../../tests/common/coderdb.rs"]
mod coderdb;

use std::time::Duration;

use agentwire_store::*;
use serde_json::Value;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// The ids of the deployment `interop coderdb seed --agents 2` made with Coder's own code: workspace `dev` with a
/// finished start build, agents `main` and `agent-2` on its resource, `main`'s sub-agent.
#[derive(Debug, Clone, Copy)]
struct Seed {
    organization: Uuid,
    owner: Uuid,
    template: Uuid,
    workspace: Uuid,
    build: Uuid,
    agent: Uuid,
    token: Uuid,
    other_agent: Uuid,
    other_token: Uuid,
    sub_agent: Uuid,
}

struct Env {
    store: Store,
    /// Straight to the database, for asserting rows as coderd would read them.
    db: PgPool,
    url: String,
    seed: Seed,
    /// What the seed printed.
    printed: Value,
}

impl Env {
    async fn scope(&self) -> AgentScope {
        self.store.into_agent_scope(resolve(&self.store, self.seed.token).await)
    }

    async fn other_scope(&self) -> AgentScope {
        self.store.into_agent_scope(resolve(&self.store, self.seed.other_token).await)
    }

    /// The agent's rows as coderd reads them, with its own queries and types (`interop coderdb read`, which fails
    /// on a row coderd could not decode or would not have written).
    async fn referee(&self, agent: Uuid) -> Value {
        coderdb::read_agent(&self.url, &agent.to_string()).await
    }

    async fn exec(&self, sql: &str) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&self.db).await.unwrap();
    }

    /// One `text` value.
    async fn text(&self, sql: &str) -> Option<String> {
        sqlx::query_scalar::<_, Option<String>>(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&self.db).await.unwrap()
    }

    async fn boolean(&self, sql: &str) -> bool {
        sqlx::query_scalar::<_, bool>(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&self.db).await.unwrap()
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&self.db).await.unwrap()
    }
}

/// The agent holding `token`, through the store's own lookup: the only door to a scope.
async fn resolve(store: &Store, token: Uuid) -> ResolvedAgent {
    store.resolve_agent_by_token(&token.to_string()).await.unwrap().unwrap_or_else(|| panic!("{token} resolves"))
}

fn uuid_at(v: &Value, path: &[&str]) -> Uuid {
    let s = path
        .iter()
        .fold(v, |v, k| k.parse::<usize>().map_or(&v[*k], |i| &v[i]))
        .as_str()
        .unwrap_or_else(|| panic!("seed has no {path:?}: {v}"));
    Uuid::parse_str(s).unwrap()
}

/// A fresh database migrated and seeded by Coder's own code, with a store opened on it.
async fn env() -> Env {
    let coder = coderdb::fresh_coder_db_with(&["--agents", "2"]).await;
    let v = &coder.seed;
    let seed = Seed {
        organization: uuid_at(v, &["organization", "id"]),
        owner: uuid_at(v, &["owner", "id"]),
        template: uuid_at(v, &["template", "id"]),
        workspace: uuid_at(v, &["workspace", "id"]),
        build: uuid_at(v, &["workspace", "build_id"]),
        agent: uuid_at(v, &["agents", "0", "id"]),
        token: uuid_at(v, &["agents", "0", "token"]),
        other_agent: uuid_at(v, &["agents", "1", "id"]),
        other_token: uuid_at(v, &["agents", "1", "token"]),
        sub_agent: uuid_at(v, &["sub_agent", "id"]),
    };
    let db = PgPool::connect(&coder.url).await.unwrap();
    let hour = Duration::from_secs(3600);
    let opts = StoreOptions {
        stats_flush_interval: hour,
        metadata_flush_interval: hour,
        heartbeat_flush_interval: hour,
        monitor_flush_interval: hour,
        ..StoreOptions::default()
    };
    let store = Store::open_coder(&coder.url, opts).await.unwrap();
    Env { store, db, url: coder.url, seed, printed: coder.seed }
}

/// Go's RFC 3339 time (`2024-01-02T03:04:05.123456Z`, the fraction optional) in unix µs; `None` for JSON null.
fn go_micros(v: &Value) -> Option<i64> {
    let s = v.as_str()?;
    let num = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap_or_else(|_| panic!("time {s:?}"));
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    let secs = num(11..13) * 3600 + num(14..16) * 60 + num(17..19);
    let frac = s[19..].trim_start_matches('.').trim_end_matches('Z');
    let micros = if frac.is_empty() { 0 } else { format!("{frac:0<6}")[..6].parse::<i64>().unwrap() };
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some((days * 86_400 + secs) * 1_000_000 + micros)
}

fn diff(store: &Store, before: &QuerySnapshot) -> QuerySnapshot {
    store.queries().snapshot().since(before)
}

/// Coder's `dbtime.Now()`-style timestamps read back in µs.
fn within_a_minute(at: i64) -> bool {
    (now_micros() - at).abs() < 60_000_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_state_and_connection_times_follow_coderds_monitor() {
    let env = env().await;
    let scope = env.scope().await;
    let agent = env.seed.agent;

    let before = env.store.queries().snapshot();
    let state = scope.state().await.unwrap().expect("live agent");
    assert_eq!(diff(&env.store, &before).total(), 1);
    assert_eq!(state.lifecycle_state, "created");
    assert_eq!((state.logs_length, state.logs_overflowed), (0, false));
    assert_eq!((state.subsystems.as_str(), state.api_version.as_str()), ("[]", ""));
    assert_eq!((state.first_connected_at, state.last_connected_at, state.disconnected_at), (None, None, None));
    assert_eq!(state.last_connected_replica_id, None);

    let replica = Uuid::new_v4();
    let before = env.store.queries().snapshot();
    let times = scope.mark_connected(replica, "2.7").await.unwrap();
    let d = diff(&env.store, &before);
    assert_eq!((d.total(), d.get("UpdateWorkspaceAgentConnectionByID"), d.begins), (1, 1, 0), "{d:?}");
    let first = times.first_connected_at.expect("set on the first connection");
    assert!(within_a_minute(first));
    assert_eq!(times.disconnected_at, None);
    let state = scope.state().await.unwrap().unwrap();
    assert_eq!((state.first_connected_at, state.last_connected_at), (Some(first), Some(first)));
    assert_eq!(state.last_connected_replica_id, Some(replica));
    // coderd writes the API version with UpdateStartup only.
    assert_eq!(state.api_version, "");
    let status = |env: &Env| {
        let url = env.url.clone();
        async move {
            let args = ["read", "--postgres-url", &url, "--agent-id", &agent.to_string(), "--inactive-timeout", "30s"];
            coderdb::coderdb(&args).await.unwrap()["status"].clone()
        }
    };
    let read = status(&env).await;
    assert_eq!(read["status"], "connected", "{read}");
    assert!(
        env.boolean(&format!("SELECT updated_at = first_connected_at FROM workspace_agents WHERE id = '{agent}'"))
            .await
    );

    tokio::time::sleep(Duration::from_millis(5)).await;
    let other_replica = Uuid::new_v4();
    scope.mark_disconnected(other_replica).await.unwrap();
    let state = scope.state().await.unwrap().unwrap();
    let gone = state.disconnected_at.expect("disconnected");
    assert!(gone > first);
    assert_eq!((state.first_connected_at, state.last_connected_at), (Some(first), Some(first)));
    assert_eq!(state.last_connected_replica_id, Some(other_replica));
    let read = status(&env).await;
    assert_eq!(read["status"], "disconnected", "{read}");
    let row = &env.referee(agent).await["agent"];
    assert_eq!(go_micros(&row["first_connected_at"]), Some(first));
    assert_eq!(go_micros(&row["disconnected_at"]), Some(gone));
    assert_eq!(row["last_connected_replica_id"], other_replica.to_string());

    // A reconnection keeps the first connection time and carries the disconnection over, as coderd's monitor does.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let times = scope.mark_connected(replica, "2.7").await.unwrap();
    assert_eq!((times.first_connected_at, times.disconnected_at), (Some(first), Some(gone)));
    let state = scope.state().await.unwrap().unwrap();
    assert!(state.last_connected_at.unwrap() > gone);
    assert_eq!(status(&env).await["status"], "connected");

    // The other agent's row is untouched.
    let other = env.other_scope().await.state().await.unwrap().unwrap();
    assert_eq!((other.first_connected_at, other.last_connected_replica_id), (None, None));

    // A deleted agent has no state and cannot connect.
    env.exec(&format!("UPDATE workspace_agents SET deleted = TRUE WHERE id = '{agent}'")).await;
    assert_eq!(scope.state().await.unwrap(), None);
    assert!(scope.mark_connected(replica, "2.7").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_lists_read_coders_rows_in_the_contracts_order() {
    let env = env().await;
    let Seed { agent, other_agent, .. } = env.seed;
    let seeded = &env.printed["agents"][0];
    // Beside what the provisioner made: rows with the columns it left at their defaults set.
    let (app_a, app_z, app_x) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let (early_source, dc_early) = (Uuid::new_v4(), Uuid::new_v4());
    env.exec(&format!(
        "INSERT INTO workspace_apps (id, created_at, agent_id, slug, display_name, icon, command, url, \
           healthcheck_url, healthcheck_interval, healthcheck_threshold, health, subdomain, sharing_level, external, \
           display_order, hidden, open_in, display_group, tooltip) VALUES \
         ('{app_z}', now(), '{agent}', 'zz-docs', 'Docs', '/icon/docs.svg', NULL, 'https://docs.example.com', \
           '', 0, 0, 'disabled', true, 'authenticated', true, 7, true, 'tab', 'help', 'the manual'), \
         ('{app_a}', now(), '{agent}', 'a-term', 'Terminal', '', 'bash -l', NULL, '', 0, 0, 'disabled', false, \
           'owner', false, 1, false, 'slim-window', NULL, ''), \
         ('{app_x}', now(), '{other_agent}', 'a-theirs', 'X', '', NULL, NULL, '', 0, 0, 'disabled', false, 'owner', \
           false, 0, false, 'slim-window', NULL, ''); \
         INSERT INTO workspace_agent_log_sources (workspace_agent_id, id, created_at, display_name, icon) VALUES \
         ('{agent}', '{early_source}', now() - interval '1 day', 'Dotfiles', '/emojis/dotfiles.png'); \
         INSERT INTO workspace_agent_metadata (workspace_agent_id, display_name, key, script, timeout, interval, \
           display_order) VALUES ('{agent}', 'Disk', 'disk', 'df -h', 3, 60, 1), ('{other_agent}', 'X', 'x', 'x', 1, 1, 0); \
         UPDATE workspace_agent_metadata SET value = '12%', error = 'slow', \
           collected_at = '2024-01-02 03:04:05.123456+00' WHERE workspace_agent_id = '{agent}' AND key = 'cpu'; \
         INSERT INTO workspace_agent_devcontainers (id, workspace_agent_id, created_at, workspace_folder, config_path, \
           name) VALUES ('{dc_early}', '{agent}', now() - interval '1 day', '/src/early', '', 'early');"
    ))
    .await;
    let scope = env.scope().await;

    let before = env.store.queries().snapshot();
    let apps = scope.list_apps().await.unwrap();
    assert_eq!(diff(&env.store, &before).get("GetWorkspaceAppsByAgentID"), 1);
    assert_eq!(apps.iter().map(|a| a.slug.as_str()).collect::<Vec<_>>(), ["a-term", "code-server", "web", "zz-docs"]);
    let code = &apps[1];
    let seeded_code = &seeded["apps"][0];
    assert_eq!(code.id.to_string(), seeded_code["id"].as_str().unwrap());
    assert_eq!(code.healthcheck_url, seeded_code["healthcheck_url"].as_str().unwrap());
    assert_eq!((code.healthcheck_interval, code.healthcheck_threshold, code.health.as_str()), (5, 6, "initializing"));
    assert_eq!((apps[2].health.as_str(), apps[2].healthcheck_url.as_str()), ("disabled", ""));
    assert_eq!(
        apps[3],
        App {
            id: app_z,
            slug: "zz-docs".into(),
            display_name: "Docs".into(),
            icon: "/icon/docs.svg".into(),
            command: None,
            url: Some("https://docs.example.com".into()),
            healthcheck_url: "".into(),
            healthcheck_interval: 0,
            healthcheck_threshold: 0,
            health: "disabled".into(),
            subdomain: true,
            sharing_level: "authenticated".into(),
            external: true,
            display_order: 7,
            hidden: true,
            open_in: "tab".into(),
            display_group: Some("help".into()),
            tooltip: "the manual".into(),
        }
    );
    assert_eq!((apps[0].id, apps[0].command.as_deref(), apps[0].url.as_deref()), (app_a, Some("bash -l"), None));
    assert_eq!((apps[0].open_in.as_str(), apps[0].display_group.as_deref()), ("slim-window", None));

    let scripts = scope.list_scripts().await.unwrap();
    let seeded_ids: Vec<Uuid> = seeded["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Uuid::parse_str(s["id"].as_str().unwrap()).unwrap())
        .collect();
    // In the order coderd's provisioner inserted them, as coderd's unordered query hands them out.
    assert_eq!(scripts.iter().map(|s| s.id).collect::<Vec<_>>(), seeded_ids, "in the provisioner's order");
    let startup = scripts.iter().find(|s| s.display_name == "Startup").expect("Startup");
    let seeded_startup = &seeded["scripts"][0];
    assert_eq!(startup.log_source_id.to_string(), seeded_startup["log_source_id"].as_str().unwrap());
    assert_eq!((startup.run_on_start, startup.run_on_stop, startup.start_blocks_login), (true, false, true));
    assert_eq!(startup.timeout_seconds, 300);

    let metadata = scope.list_metadata().await.unwrap();
    assert_eq!(metadata.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(), ["cpu", "disk", "mem"]);
    let cpu = &metadata[0];
    assert_eq!((cpu.display_name.as_str(), cpu.value.as_str(), cpu.error.as_str()), ("CPU Usage", "12%", "slow"));
    // Seconds, as coderd's provisioner stores a template's.
    assert_eq!((cpu.interval, cpu.timeout, cpu.display_order), (10, 1, 1));
    assert_eq!(cpu.collected_at, 1_704_164_645_123_456);
    // Never collected: Coder's default, Go's zero time, is the domain's 0.
    assert_eq!((metadata[2].collected_at, metadata[2].interval, metadata[2].value.as_str()), (0, 30, ""));

    let devcontainers = scope.list_devcontainers().await.unwrap();
    assert_eq!(devcontainers.len(), 2);
    assert_eq!(devcontainers[0].id, dc_early);
    let app = &seeded["devcontainers"][0];
    assert_eq!(
        devcontainers[1],
        Devcontainer {
            id: Uuid::parse_str(app["id"].as_str().unwrap()).unwrap(),
            workspace_folder: app["workspace_folder"].as_str().unwrap().into(),
            config_path: app["config_path"].as_str().unwrap().into(),
            name: "app".into(),
            subagent_id: None,
        }
    );

    let sources = scope.list_log_sources().await.unwrap();
    assert_eq!(sources.len(), 4);
    assert_eq!(
        sources[0],
        LogSource { id: early_source, display_name: "Dotfiles".into(), icon: "/emojis/dotfiles.png".into() }
    );
    // The provisioner's three share a creation time: then by id.
    let mut seeded_sources: Vec<Uuid> = seeded["log_sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Uuid::parse_str(s["id"].as_str().unwrap()).unwrap())
        .collect();
    seeded_sources.sort();
    assert_eq!(sources[1..].iter().map(|s| s.id).collect::<Vec<_>>(), seeded_sources);

    let d = diff(&env.store, &before);
    assert_eq!((d.total(), d.begins), (5, 0), "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_applies_coderds_started_and_ready_rules_in_one_statement() {
    let env = env().await;
    let agent = env.seed.agent;
    let scope = env.scope().await;
    let updated_at = env.text(&format!("SELECT updated_at::text FROM workspace_agents WHERE id = '{agent}'")).await;

    let t1 = 1_700_000_000_123_456;
    let before = env.store.queries().snapshot();
    let times = scope.update_lifecycle(LifecycleState::Starting, t1).await.unwrap();
    let d = diff(&env.store, &before);
    assert_eq!((d.total(), d.get("UpdateWorkspaceAgentLifecycleStateByID"), d.begins), (1, 1, 0), "{d:?}");
    assert_eq!((times.started_at, times.ready_at), (Some(t1), None));

    let t2 = t1 + 5_000_000;
    let times = scope.update_lifecycle(LifecycleState::Ready, t2).await.unwrap();
    assert_eq!((times.started_at, times.ready_at), (Some(t1), Some(t2)));
    let state = scope.state().await.unwrap().unwrap();
    let row = &env.referee(agent).await["agent"];
    assert_eq!(
        (&row["lifecycle_state"], go_micros(&row["started_at"]), go_micros(&row["ready_at"])),
        (&Value::from("ready"), Some(t1), Some(t2))
    );
    assert_eq!((state.lifecycle_state.as_str(), state.started_at, state.ready_at), ("ready", Some(t1), Some(t2)));
    assert_eq!(
        env.text(&format!("SELECT lifecycle_state::text FROM workspace_agents WHERE id = '{agent}'")).await.as_deref(),
        Some("ready")
    );

    // Shutting down keeps both.
    let t3 = t2 + 1_000_000;
    let times = scope.update_lifecycle(LifecycleState::ShuttingDown, t3).await.unwrap();
    assert_eq!((times.started_at, times.ready_at), (Some(t1), Some(t2)));

    // A restart clears ready_at and moves started_at.
    let t4 = t3 + 1_000_000;
    let times = scope.update_lifecycle(LifecycleState::Starting, t4).await.unwrap();
    assert_eq!((times.started_at, times.ready_at), (Some(t4), None));

    // A start error without a start sets both.
    env.exec(&format!("UPDATE workspace_agents SET started_at = NULL WHERE id = '{agent}'")).await;
    let t5 = t4 + 1_000_000;
    let times = scope.update_lifecycle(LifecycleState::StartError, t5).await.unwrap();
    assert_eq!((times.started_at, times.ready_at), (Some(t5), Some(t5)));

    // coderd's statement leaves updated_at alone.
    assert_eq!(
        env.text(&format!("SELECT updated_at::text FROM workspace_agents WHERE id = '{agent}'")).await,
        updated_at
    );
    // The other agent is untouched.
    assert_eq!(env.other_scope().await.state().await.unwrap().unwrap().lifecycle_state, "created");

    env.exec(&format!("UPDATE workspace_agents SET deleted = TRUE WHERE id = '{agent}'")).await;
    assert!(scope.update_lifecycle(LifecycleState::Ready, t5).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_writes_coders_subsystem_array() {
    let env = env().await;
    let agent = env.seed.agent;
    let scope = env.scope().await;
    let before = env.store.queries().snapshot();
    scope
        .update_startup(
            "v2.30.0",
            "/home/coder/src",
            &[Subsystem::Exectrace, Subsystem::Envbox, Subsystem::Envbox],
            "2.7",
        )
        .await
        .unwrap();
    let d = diff(&env.store, &before);
    assert_eq!((d.total(), d.get("UpdateWorkspaceAgentStartupByID")), (1, 1), "{d:?}");
    let row = sqlx::query(
        "SELECT version, expanded_directory::text AS dir, subsystems::text AS subsystems, api_version \
         FROM workspace_agents WHERE id = $1::uuid",
    )
    .bind(agent.to_string())
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("version"), "v2.30.0");
    assert_eq!(row.get::<String, _>("dir"), "/home/coder/src");
    assert_eq!(row.get::<String, _>("subsystems"), "{envbox,exectrace}");
    assert_eq!(row.get::<String, _>("api_version"), "2.7");
    let state = scope.state().await.unwrap().unwrap();
    assert_eq!(state.subsystems, r#"["envbox","exectrace"]"#);
    let row = &env.referee(agent).await["agent"];
    assert_eq!(row["subsystems"], serde_json::json!(["envbox", "exectrace"]));
    assert_eq!(
        (&row["version"], &row["expanded_directory"], &row["api_version"]),
        (&Value::from("v2.30.0"), &Value::from("/home/coder/src"), &Value::from("2.7"))
    );

    scope.update_startup("v2.30.1", "", &[], "2.8").await.unwrap();
    assert_eq!(scope.state().await.unwrap().unwrap().subsystems, "[]");
    assert_eq!(env.other_scope().await.state().await.unwrap().unwrap().version, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_healths_change_in_one_statement_and_only_this_agents_apps() {
    let env = env().await;
    let id = |agent: usize, app: usize| {
        uuid_at(&env.printed, &["agents", &agent.to_string(), "apps", &app.to_string(), "id"])
    };
    // code-server has a health check, web none; agent-2 has its own code-server.
    let (code, web, theirs) = (id(0, 0), id(0, 1), id(1, 0));
    let health = |app: Uuid| format!("SELECT health::text FROM workspace_apps WHERE id = '{app}'");
    let scope = env.scope().await;

    // Another agent's app and an app without a health check are refused, and nothing is written.
    let out =
        scope.batch_update_app_healths(&[(code, AppHealth::Healthy), (theirs, AppHealth::Healthy)]).await.unwrap();
    assert_eq!((out.unknown.as_slice(), out.changed.len()), (&[theirs][..], 0));
    let out = scope.batch_update_app_healths(&[(web, AppHealth::Healthy)]).await.unwrap();
    assert_eq!(out.no_healthcheck, [web]);
    assert_eq!(env.text(&health(code)).await.unwrap(), "initializing");

    let before = env.store.queries().snapshot();
    let out = scope.batch_update_app_healths(&[(code, AppHealth::Unhealthy)]).await.unwrap();
    let d = diff(&env.store, &before);
    assert_eq!(out.changed, [code]);
    assert_eq!(
        (d.total(), d.get("GetWorkspaceAppsByAgentID"), d.get("UpdateWorkspaceAppHealthByID")),
        (2, 1, 1),
        "{d:?}"
    );
    assert_eq!(env.text(&health(code)).await.unwrap(), "unhealthy");
    assert_eq!(env.text(&health(theirs)).await.unwrap(), "initializing");
    let read = env.referee(env.seed.agent).await;
    let healths: Vec<(&str, &str)> = read["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["slug"].as_str().unwrap(), a["health"].as_str().unwrap()))
        .collect();
    assert_eq!(healths, [("code-server", "unhealthy"), ("web", "disabled")]);
    // The same health again writes nothing.
    let before = env.store.queries().snapshot();
    assert!(scope.batch_update_app_healths(&[(code, AppHealth::Unhealthy)]).await.unwrap().changed.is_empty());
    assert_eq!(diff(&env.store, &before).total(), 1);

    // Another scope cannot reach this agent's app.
    let other = env.other_scope().await;
    assert_eq!(other.batch_update_app_healths(&[(code, AppHealth::Healthy)]).await.unwrap().unknown, [code]);
    assert_eq!(env.text(&health(code)).await.unwrap(), "unhealthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_status_reads_the_previous_state_and_writes_coders_row() {
    let env = env().await;
    let Seed { agent, workspace, .. } = env.seed;
    let app = Uuid::new_v4();
    env.exec(&format!(
        "INSERT INTO workspace_apps (id, created_at, agent_id, slug, display_name, icon) VALUES \
         ('{app}', now(), '{agent}', 'claude', 'Claude', '');"
    ))
    .await;
    let scope = env.scope().await;

    let before = env.store.queries().snapshot();
    let first = scope.insert_app_status("claude", "working", "Thinking", Some("")).await.unwrap().expect("app");
    let d = diff(&env.store, &before);
    assert_eq!((d.total(), d.get("InsertWorkspaceAppStatus"), d.begins), (1, 1, 0), "{d:?}");
    assert_eq!((first.app_id, first.previous_state.as_deref()), (app, None));
    let row = sqlx::query(
        "SELECT workspace_id::text AS w, agent_id::text AS a, app_id::text AS app, state::text AS state, message, \
         uri, created_at > now() - interval '1 minute' AS recent FROM workspace_app_statuses WHERE id = $1::uuid",
    )
    .bind(first.status_id.to_string())
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("w"), workspace.to_string());
    assert_eq!(row.get::<String, _>("a"), agent.to_string());
    assert_eq!(row.get::<String, _>("app"), app.to_string());
    assert_eq!((row.get::<String, _>("state"), row.get::<String, _>("message")), ("working".into(), "Thinking".into()));
    assert_eq!(row.get::<Option<String>, _>("uri"), None, "coderd stores an empty URI as NULL");
    assert!(row.get::<bool, _>("recent"));

    tokio::time::sleep(Duration::from_millis(2)).await;
    let second = scope.insert_app_status("claude", "complete", "Done", Some("https://pr/1")).await.unwrap().unwrap();
    assert_eq!(second.previous_state.as_deref(), Some("working"));
    assert_eq!(
        env.text(&format!("SELECT uri FROM workspace_app_statuses WHERE id = '{}'", second.status_id)).await.as_deref(),
        Some("https://pr/1")
    );

    // No such app for this agent (the other agent has none either): nothing written.
    assert_eq!(scope.insert_app_status("nope", "working", "", None).await.unwrap(), None);
    assert_eq!(env.other_scope().await.insert_app_status("claude", "working", "", None).await.unwrap(), None);
    assert_eq!(env.count("SELECT count(*) FROM workspace_app_statuses").await, 2);
    // coderd's GetWorkspaceAppStatusesByAppIDs: newest first.
    let read = env.referee(agent).await;
    let statuses: Vec<(&Value, &Value, &Value, &Value)> = read["app_statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (&s["id"], &s["state"], &s["uri"], &s["workspace_id"]))
        .collect();
    assert_eq!(
        statuses,
        [
            (
                &Value::from(second.status_id.to_string()),
                &Value::from("complete"),
                &Value::from("https://pr/1"),
                &Value::from(workspace.to_string())
            ),
            (
                &Value::from(first.status_id.to_string()),
                &Value::from("working"),
                &Value::Null,
                &Value::from(workspace.to_string())
            ),
        ]
    );
    // A state outside Coder's enum is refused by its cast.
    assert!(scope.insert_app_status("claude", "sleeping", "", None).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_count_against_coders_length_and_overflow_once() {
    let env = env().await;
    let agent = env.seed.agent;
    let scope = env.scope().await;
    let source = Uuid::new_v4();
    env.exec(&format!(
        "INSERT INTO workspace_agent_log_sources (workspace_agent_id, id, created_at, display_name, icon) \
         VALUES ('{agent}', '{source}', now(), 'Startup', '')"
    ))
    .await;
    let line = |level, output: &str| LogLine { level, output: output.to_owned() };

    let before = env.store.queries().snapshot();
    let out =
        scope.insert_logs(source, &[line(LogLevel::Info, "hello"), line(LogLevel::Error, "bad\0")]).await.unwrap();
    let d = diff(&env.store, &before);
    assert_eq!((d.begins, d.commits, d.total(), d.get("InsertWorkspaceAgentLogs")), (1, 1, 1, 1), "{d:?}");
    let InsertLogsOutcome::Inserted { first_id, count: 2, first_logs: true } = out else { panic!("{out:?}") };
    let logs = scope.logs_after(first_id - 1).await.unwrap();
    assert_eq!(logs.len(), 2);
    assert_eq!((logs[0].id, logs[0].output.as_str(), logs[0].level.as_str()), (first_id, "hello", "info"));
    assert_eq!(
        (logs[1].output.as_str(), logs[1].level.as_str(), logs[1].log_source_id),
        ("bad\u{274c}", "error", source)
    );
    assert!(within_a_minute(logs[0].created_at));
    assert_eq!(scope.logs_after(first_id).await.unwrap().len(), 1);
    // "hello" and "bad❌": 5 + 6 bytes.
    assert_eq!(scope.state().await.unwrap().unwrap().logs_length, 11);

    // Longer lines are stored cut to Coder's varchar(1024) and counted whole.
    let long = "é".repeat(1500);
    let out = scope.insert_logs(source, &[line(LogLevel::Warn, &long)]).await.unwrap();
    let InsertLogsOutcome::Inserted { first_id, first_logs: false, .. } = out else { panic!("{out:?}") };
    let stored = scope.logs_after(first_id - 1).await.unwrap();
    assert_eq!(stored[0].output.chars().count(), 1024);
    assert_eq!(scope.state().await.unwrap().unwrap().logs_length, 11 + 3000);

    // The nil source is Coder's "External", made on first use.
    let before = env.store.queries().snapshot();
    let out = scope.insert_logs(Uuid::nil(), &[line(LogLevel::Debug, "ext")]).await.unwrap();
    let d = diff(&env.store, &before);
    assert_eq!((d.get("InsertWorkspaceAgentLogSources"), d.get("InsertWorkspaceAgentLogs"), d.commits), (1, 1, 1));
    let InsertLogsOutcome::Inserted { first_id, .. } = out else { panic!("{out:?}") };
    assert_eq!(scope.logs_after(first_id - 1).await.unwrap()[0].log_source_id, EXTERNAL_LOG_SOURCE_ID);
    scope.insert_logs(Uuid::nil(), &[line(LogLevel::Trace, "again")]).await.unwrap();
    let sources = scope.list_log_sources().await.unwrap();
    let external: Vec<_> = sources.iter().filter(|s| s.id == EXTERNAL_LOG_SOURCE_ID).collect();
    assert_eq!(external.len(), 1);
    assert_eq!((external[0].display_name.as_str(), external[0].icon.as_str()), ("External", "/emojis/1f310.png"));

    // A batch past 1 MiB is refused whole and flips the flag once; logs_length stays within Coder's CHECK.
    let length = scope.state().await.unwrap().unwrap().logs_length;
    let big: Vec<LogLine> = (0..1100).map(|_| line(LogLevel::Info, &"x".repeat(1000))).collect();
    let before = env.store.queries().snapshot();
    let out = scope.insert_logs(source, &big).await.unwrap();
    let d = diff(&env.store, &before);
    assert_eq!(out, InsertLogsOutcome::LimitExceeded { newly: true });
    assert_eq!((d.get("UpdateWorkspaceAgentLogOverflowByID"), d.commits, d.rollbacks), (1, 1, 0), "{d:?}");
    let state = scope.state().await.unwrap().unwrap();
    assert_eq!((state.logs_length, state.logs_overflowed), (length, true));
    assert_eq!(
        scope.insert_logs(source, &[line(LogLevel::Info, "late")]).await.unwrap(),
        InsertLogsOutcome::LimitExceeded { newly: false }
    );
    assert_eq!(env.count(&format!("SELECT count(*) FROM workspace_agent_logs WHERE agent_id = '{agent}'")).await, 5);
    let read = env.referee(agent).await;
    let levels: Vec<&str> = read["logs"].as_array().unwrap().iter().map(|l| l["level"].as_str().unwrap()).collect();
    assert_eq!(levels, ["info", "error", "warn", "debug", "trace"]);
    assert_eq!(
        (&read["agent"]["logs_length"], &read["agent"]["logs_overflowed"]),
        (&Value::from(length), &Value::Bool(true))
    );
    // What the agent sent counts whole; the stored lines are cut (1500 two-byte characters to 1024).
    assert_eq!(read["logs_output_bytes"], 11 + 2048 + 3 + 5);
    let external =
        read["log_sources"].as_array().unwrap().iter().find(|s| s["id"] == EXTERNAL_LOG_SOURCE_ID.to_string());
    assert_eq!(
        external.map(|s| (&s["display_name"], &s["icon"])),
        Some((&Value::from("External"), &Value::from("/emojis/1f310.png")))
    );

    // The other agent's logs are its own.
    let other = env.other_scope().await;
    assert_eq!(other.logs_after(0).await.unwrap(), []);
    assert_eq!(other.state().await.unwrap().unwrap().logs_length, 0);

    // An agent already marked overflowed gets no External source either: coderd answers before making it.
    env.exec(&format!("UPDATE workspace_agents SET logs_overflowed = TRUE WHERE id = '{}'", env.seed.other_agent))
        .await;
    let out = other.insert_logs(Uuid::nil(), &[line(LogLevel::Info, "x")]).await.unwrap();
    assert_eq!(out, InsertLogsOutcome::LimitExceeded { newly: false });
    assert!(!other.list_log_sources().await.unwrap().iter().any(|s| s.id == EXTERNAL_LOG_SOURCE_ID));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_sources_insert_once_per_agent() {
    let env = env().await;
    let scope = env.scope().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let before = env.store.queries().snapshot();
    scope
        .upsert_log_sources(&[
            LogSource { id: a, display_name: "A".into(), icon: "/a.png".into() },
            LogSource { id: b, display_name: "B".repeat(200), icon: "".into() },
        ])
        .await
        .unwrap();
    let d = diff(&env.store, &before);
    assert_eq!((d.total(), d.get("InsertWorkspaceAgentLogSources")), (1, 1), "{d:?}");
    scope.upsert_log_sources(&[LogSource { id: a, display_name: "renamed".into(), icon: "".into() }]).await.unwrap();
    let sources = scope.list_log_sources().await.unwrap();
    assert_eq!(sources.len(), 3 + 2, "the provisioner's three and these two");
    let first = sources.iter().find(|s| s.id == a).unwrap();
    assert_eq!((first.display_name.as_str(), first.icon.as_str()), ("A", "/a.png"));
    // Coder's varchar(127) cut.
    assert_eq!(sources.iter().find(|s| s.id == b).unwrap().display_name.len(), 127);
    // The same id for another agent is a row of its own.
    let other = env.other_scope().await;
    other.upsert_log_sources(&[LogSource { id: a, display_name: "theirs".into(), icon: "".into() }]).await.unwrap();
    assert_eq!(other.list_log_sources().await.unwrap().iter().find(|s| s.id == a).unwrap().display_name, "theirs");
    assert_eq!(scope.list_log_sources().await.unwrap().iter().find(|s| s.id == a).unwrap().display_name, "A");
    let read = env.referee(env.seed.agent).await;
    let names: Vec<&str> =
        read["log_sources"].as_array().unwrap().iter().map(|s| s["display_name"].as_str().unwrap()).collect();
    assert!(names.contains(&"A") && names.contains(&"B".repeat(127).as_str()), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_timings_only_for_this_agents_scripts() {
    let env = env().await;
    let Seed { agent, other_agent, .. } = env.seed;
    let (script, theirs, source) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    env.exec(&format!(
        "INSERT INTO workspace_agent_scripts (workspace_agent_id, log_source_id, log_path, created_at, script, cron, \
           start_blocks_login, run_on_start, run_on_stop, timeout_seconds, display_name, id) VALUES \
         ('{agent}', '{source}', '', now(), 's', '', false, true, false, 0, 'S', '{script}'), \
         ('{other_agent}', '{source}', '', now(), 's', '', false, true, false, 0, 'S', '{theirs}');"
    ))
    .await;
    let scope = env.scope().await;
    let timing = ScriptTiming {
        script_id: script,
        started_at: 1_700_000_000_000_001,
        ended_at: 1_700_000_003_000_002,
        exit_code: 3,
        stage: "start".into(),
        status: "exit_failure".into(),
    };
    let before = env.store.queries().snapshot();
    assert!(scope.insert_script_timing(&timing).await.unwrap());
    let d = diff(&env.store, &before);
    assert_eq!((d.total(), d.get("InsertWorkspaceAgentScriptTimings")), (1, 1), "{d:?}");
    assert_eq!(scope.script_timings().await.unwrap(), std::slice::from_ref(&timing));
    assert_eq!(
        env.text(
            "SELECT stage::text || '/' || status::text || '/' || exit_code::text FROM workspace_agent_script_timings"
        )
        .await
        .as_deref(),
        Some("start/exit_failure/3")
    );
    // Coder's unique (script_id, started_at).
    assert!(scope.insert_script_timing(&timing).await.unwrap_err().is_unique_violation());
    // Another agent's script: nothing written.
    assert!(!scope.insert_script_timing(&ScriptTiming { script_id: theirs, ..timing.clone() }).await.unwrap());
    assert_eq!(env.count("SELECT count(*) FROM workspace_agent_script_timings").await, 1);
    assert_eq!(env.other_scope().await.script_timings().await.unwrap(), []);
    let read = env.referee(agent).await;
    let t = &read["script_timings"][0];
    assert_eq!(
        (&t["script_id"], &t["stage"], &t["status"], &t["exit_code"]),
        (&Value::from(script.to_string()), &Value::from("start"), &Value::from("exit_failure"), &Value::from(3)),
        "{read}"
    );
    assert_eq!(
        (go_micros(&t["started_at"]), go_micros(&t["ended_at"])),
        (Some(timing.started_at), Some(timing.ended_at))
    );
    // Stages and statuses outside Coder's enums are refused by the cast.
    let bad = ScriptTiming { stage: "later".into(), started_at: timing.started_at + 1, ..timing };
    assert!(scope.insert_script_timing(&bad).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_logs_upsert_as_enterprise_coderd() {
    let env = env().await;
    let Seed { organization, owner, workspace, .. } = env.seed;
    let scope = env.scope().await;
    let conn = Uuid::new_v4();
    let t0 = 1_700_000_000_000_000;
    let connect = ConnectionEvent {
        connection_id: conn,
        time: t0,
        connect: true,
        kind: "ssh".into(),
        code: None,
        ip: Some("localhost".into()),
        disconnect_reason: None,
    };
    let before = env.store.queries().snapshot();
    scope.insert_connection_log(&connect).await.unwrap();
    let d = diff(&env.store, &before);
    assert_eq!((d.total(), d.get("UpsertConnectionLog")), (1, 1), "{d:?}");
    let row = sqlx::query(
        "SELECT organization_id::text AS o, workspace_owner_id::text AS u, workspace_id::text AS w, workspace_name, \
         agent_name, ip::text AS ip, user_agent, user_id::text AS user_id, slug_or_port FROM connection_logs",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("o"), organization.to_string());
    assert_eq!(row.get::<String, _>("u"), owner.to_string());
    assert_eq!(row.get::<String, _>("w"), workspace.to_string());
    assert_eq!(
        (row.get::<String, _>("workspace_name"), row.get::<String, _>("agent_name")),
        ("dev".into(), "main".into())
    );
    assert_eq!(row.get::<String, _>("ip"), "127.0.0.1/32");
    assert_eq!(row.get::<Option<String>, _>("user_agent"), None);
    assert_eq!(row.get::<Option<String>, _>("user_id"), None);
    assert_eq!(row.get::<Option<String>, _>("slug_or_port"), None);

    let disconnect = ConnectionEvent {
        time: t0 + 60_000_000,
        connect: false,
        code: Some(255),
        disconnect_reason: Some("exit".into()),
        ip: None,
        ..connect.clone()
    };
    scope.insert_connection_log(&disconnect).await.unwrap();
    // A repeated disconnect changes nothing: each field is set once.
    scope
        .insert_connection_log(&ConnectionEvent {
            code: Some(1),
            disconnect_reason: Some("again".into()),
            ..disconnect.clone()
        })
        .await
        .unwrap();
    // A disconnect seen first is stored closed at its own time.
    let lone = Uuid::new_v4();
    scope
        .insert_connection_log(&ConnectionEvent {
            connection_id: lone,
            time: t0 + 120_000_000,
            kind: "vscode".into(),
            ip: Some("::1".into()),
            ..disconnect.clone()
        })
        .await
        .unwrap();
    let logs = scope.connection_logs().await.unwrap();
    assert_eq!(
        logs,
        [
            ConnectionLogEntry {
                connection_id: Some(conn),
                connect_time: t0,
                kind: "ssh".into(),
                code: Some(255),
                ip: Some("127.0.0.1".into()),
                disconnect_time: Some(t0 + 60_000_000),
                disconnect_reason: Some("exit".into()),
            },
            ConnectionLogEntry {
                connection_id: Some(lone),
                connect_time: t0 + 120_000_000,
                kind: "vscode".into(),
                code: Some(255),
                ip: Some("::1".into()),
                disconnect_time: Some(t0 + 120_000_000),
                disconnect_reason: Some("exit".into()),
            },
        ]
    );
    // The other agent of the workspace has none.
    // coderd's GetConnectionLogsOffset: newest first.
    let read = env.referee(env.seed.agent).await;
    let rows: Vec<_> = read["connection_logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["connection_id"].as_str().unwrap(),
                l["type"].as_str().unwrap(),
                l["ip"].as_str().unwrap(),
                l["code"].as_i64(),
                go_micros(&l["connect_time"]),
                go_micros(&l["disconnect_time"]),
            )
        })
        .collect();
    let (conn, lone) = (conn.to_string(), lone.to_string());
    assert_eq!(
        rows,
        [
            (lone.as_str(), "vscode", "::1/128", Some(255), Some(t0 + 120_000_000), Some(t0 + 120_000_000)),
            (conn.as_str(), "ssh", "127.0.0.1/32", Some(255), Some(t0), Some(t0 + 60_000_000)),
        ]
    );
    assert_eq!(env.other_scope().await.connection_logs().await.unwrap(), []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_monitors_keep_coders_zero_time_and_state_enum() {
    let env = env().await;
    let agent = env.seed.agent;
    let scope = env.scope().await;
    env.exec(&format!(
        "INSERT INTO workspace_agent_volume_resource_monitors (agent_id, enabled, threshold, path, created_at) \
         VALUES ('{agent}', false, 70, '/data', now())"
    ))
    .await;

    // As the provisioner made them: 80 % memory, 90 % on /home/coder, OK, never debounced.
    let m = scope.memory_monitor().await.unwrap().expect("configured");
    assert_eq!((m.enabled, m.threshold, m.state.as_str(), m.debounced_until), (true, 80, "OK", 0));
    assert!(within_a_minute(m.updated_at));
    let volumes = scope.volume_monitors().await.unwrap();
    assert_eq!(
        volumes.iter().map(|v| (v.path.as_str(), v.enabled, v.threshold, v.debounced_until)).collect::<Vec<_>>(),
        [("/data", false, 70, 0), ("/home/coder", true, 90, 0)]
    );

    // The monitor batcher's flush: both agents' states, the latest per monitor, in one transaction of one statement
    // per kind.
    let now = 1_700_000_000_000_000;
    let theirs = env.other_scope().await;
    let before = env.store.queries().snapshot();
    assert!(scope.enqueue_memory_monitor(MonitorState::Ok, now - 10_000_000, 0));
    assert!(scope.enqueue_memory_monitor(MonitorState::Nok, now, now + 1_800_000_000));
    assert!(scope.enqueue_volume_monitor("/home/coder", MonitorState::Nok, now, 0));
    assert!(scope.enqueue_volume_monitor("/nope", MonitorState::Nok, now, 0));
    assert!(theirs.enqueue_volume_monitor("/home/coder", MonitorState::Nok, now + 1, now + 2));
    assert_eq!(diff(&env.store, &before).total(), 0, "nothing written before the flush");
    env.store.flush().await;
    let d = diff(&env.store, &before);
    assert_eq!(
        (d.get("UpdateMemoryResourceMonitor"), d.get("UpdateVolumeResourceMonitor"), d.total(), d.begins, d.commits),
        (1, 1, 2, 1, 1),
        "{d:?}"
    );
    let m = scope.memory_monitor().await.unwrap().unwrap();
    assert_eq!((m.state.as_str(), m.updated_at, m.debounced_until), ("NOK", now, now + 1_800_000_000));
    let home = scope.volume_monitors().await.unwrap().into_iter().find(|v| v.path == "/home/coder").unwrap();
    assert_eq!((home.state.as_str(), home.updated_at, home.debounced_until), ("NOK", now, 0));
    // 0 is stored as Go's zero time, the column's default, not as 1970.
    assert!(
        env.boolean(&format!(
            "SELECT debounced_until = '0001-01-01 00:00:00+00' FROM workspace_agent_volume_resource_monitors \
             WHERE agent_id = '{agent}' AND path = '/home/coder'"
        ))
        .await
    );
    // coderd reads the rows back with its own queries and types: state enum, times, zero time.
    let read = env.referee(agent).await;
    let memory = &read["memory_monitor"];
    assert_eq!((&memory["state"], go_micros(&memory["updated_at"])), (&Value::from("NOK"), Some(now)));
    assert_eq!(go_micros(&memory["debounced_until"]), Some(now + 1_800_000_000));
    let volumes = read["volume_monitors"].as_array().unwrap();
    let home = volumes.iter().find(|v| v["path"] == "/home/coder").unwrap();
    assert_eq!((&home["state"], &home["debounced_until"]), (&Value::from("NOK"), &Value::from("0001-01-01T00:00:00Z")));
    assert_eq!(go_micros(&home["updated_at"]), Some(now));
    assert_eq!(volumes.len(), 2, "a state for a path without a monitor creates none: {volumes:?}");
    let data = volumes.iter().find(|v| v["path"] == "/data").unwrap();
    assert_eq!(data["state"], "OK", "a monitor the flush did not name is untouched");
    // The other agent: its volume as it was flushed, its memory monitor untouched.
    let other = env.referee(env.seed.other_agent).await;
    let their_home = &other["volume_monitors"].as_array().unwrap()[0];
    assert_eq!((&their_home["state"], go_micros(&their_home["updated_at"])), (&Value::from("NOK"), Some(now + 1)));
    assert_eq!(go_micros(&their_home["debounced_until"]), Some(now + 2));
    assert_eq!(theirs.memory_monitor().await.unwrap().unwrap().state, "OK");

    // Without a memory monitor there is nothing to read, and a state flushed for it writes nothing.
    env.exec(&format!("DELETE FROM workspace_agent_memory_resource_monitors WHERE agent_id = '{agent}'")).await;
    assert_eq!(scope.memory_monitor().await.unwrap(), None);
    assert!(scope.enqueue_memory_monitor(MonitorState::Ok, now, 0));
    env.store.flush().await;
    assert_eq!(env.store.batcher_stats().monitors.flush_errors, 0);
    assert_eq!(scope.memory_monitor().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_agents_are_coders_children_of_this_agent() {
    let env = env().await;
    let Seed { agent, sub_agent, .. } = env.seed;
    let scope = env.scope().await;
    // The sub-agent coderd's own CreateSubAgent made; dbfake's deleted one is not listed.
    let existing = scope.list_sub_agents().await.unwrap();
    assert_eq!(
        existing.iter().map(|s| (s.id, s.name.as_str())).collect::<Vec<_>>(),
        [(sub_agent, "main-devcontainer")]
    );
    assert_eq!(existing[0].auth_token, uuid_at(&env.printed, &["sub_agent", "token"]));

    let new = NewSubAgent {
        name: "second-devcontainer".into(),
        directory: "/workspaces/app".into(),
        architecture: "arm64".into(),
        operating_system: "linux".into(),
        display_apps: vec!["vscode".into(), "web_terminal".into()],
    };
    let before = env.store.queries().snapshot();
    let sub = scope.create_sub_agent(&new).await.unwrap();
    let d = diff(&env.store, &before);
    assert_eq!((d.total(), d.get("InsertWorkspaceAgent")), (1, 1), "{d:?}");
    // What coderd's CreateSubAgent copies from the parent, and what it sets itself.
    let row = sqlx::query(
        "SELECT c.parent_id::text AS parent, c.auth_token::text AS token, c.directory::text AS directory, \
         c.architecture::text AS arch, c.display_apps::text AS apps, c.motd_file, c.display_order, \
         c.environment_variables IS NULL AND c.instance_metadata IS NULL AND c.resource_metadata IS NULL AS nulls, \
         c.lifecycle_state::text AS lifecycle, c.created_at = c.updated_at AS same, \
         (c.resource_id, c.auth_instance_id, c.connection_timeout_seconds, c.troubleshooting_url, c.api_key_scope) \
           IS NOT DISTINCT FROM (p.resource_id, p.auth_instance_id, p.connection_timeout_seconds, \
           p.troubleshooting_url, p.api_key_scope) AS inherited \
         FROM workspace_agents c JOIN workspace_agents p ON p.id = c.parent_id WHERE c.id = $1::uuid",
    )
    .bind(sub.id.to_string())
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("parent"), agent.to_string());
    assert_eq!(row.get::<String, _>("token"), sub.auth_token.to_string());
    assert_eq!(
        (row.get::<String, _>("directory"), row.get::<String, _>("arch")),
        ("/workspaces/app".into(), "arm64".into())
    );
    assert_eq!(row.get::<String, _>("apps"), "{vscode,web_terminal}");
    assert_eq!((row.get::<String, _>("motd_file"), row.get::<i32, _>("display_order")), (String::new(), 0));
    assert!(row.get::<bool, _>("nulls") && row.get::<bool, _>("same") && row.get::<bool, _>("inherited"));
    assert_eq!(row.get::<String, _>("lifecycle"), "created");
    // Its token resolves as the child it is.
    let child = resolve(&env.store, sub.auth_token).await;
    assert_eq!((child.id, child.parent_id), (sub.id, Some(agent)));

    // Coder's own trigger refuses a second live agent of that name in the build.
    let dup = scope.create_sub_agent(&new).await.unwrap_err();
    assert!(dup.is_unique_violation(), "{dup:?}");

    assert_eq!(scope.list_sub_agents().await.unwrap().iter().map(|s| s.id).collect::<Vec<_>>(), [sub_agent, sub.id]);
    let other = env.other_scope().await;
    assert_eq!(other.list_sub_agents().await.unwrap(), []);
    let read = env.referee(agent).await;
    let child = read["sub_agents"].as_array().unwrap().iter().find(|a| a["id"] == sub.id.to_string()).expect("listed");
    assert_eq!(
        (&child["name"], &child["display_apps"], &child["parent_id"]),
        (
            &Value::from("second-devcontainer"),
            &serde_json::json!(["vscode", "web_terminal"]),
            &Value::from(agent.to_string())
        )
    );

    let apps_and_dir =
        format!("SELECT display_apps::text || ' ' || directory FROM workspace_agents WHERE id = '{}'", sub.id);
    let updated = scope.update_sub_agent(sub.id, &["ssh_helper".into()], "").await.unwrap().expect("child");
    assert_eq!(updated, sub);
    assert_eq!(env.text(&apps_and_dir).await.as_deref(), Some("{ssh_helper} /workspaces/app"));
    scope.update_sub_agent(sub.id, &[], "/elsewhere").await.unwrap().unwrap();
    assert_eq!(env.text(&apps_and_dir).await.as_deref(), Some("{} /elsewhere"));
    assert_eq!(other.update_sub_agent(sub.id, &[], "/x").await.unwrap(), None);
    // A display app outside Coder's enum is refused.
    assert!(scope.update_sub_agent(sub.id, &["emacs".into()], "").await.is_err());

    // Only the parent deletes it, softly, once.
    assert!(!other.delete_sub_agent(sub.id).await.unwrap());
    let before = env.store.queries().snapshot();
    assert!(scope.delete_sub_agent(sub.id).await.unwrap());
    let d = diff(&env.store, &before);
    assert_eq!((d.total(), d.get("DeleteWorkspaceSubAgentByID"), d.begins), (1, 1, 0), "{d:?}");
    assert!(!scope.delete_sub_agent(sub.id).await.unwrap());
    assert!(env.boolean(&format!("SELECT deleted FROM workspace_agents WHERE id = '{}'", sub.id)).await);
    assert_eq!(scope.list_sub_agents().await.unwrap().iter().map(|s| s.id).collect::<Vec<_>>(), [sub_agent]);
    assert_eq!(scope.update_sub_agent(sub.id, &[], "").await.unwrap(), None);
    // Its name is free again.
    scope.create_sub_agent(&new).await.unwrap();
    // An agent without a parent is never deleted through a scope.
    assert!(!scope.delete_sub_agent(env.seed.other_agent).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boundary_logs_store_nothing_and_context_state_is_not_in_v2_30() {
    let env = env().await;
    let scope = env.scope().await;
    let before = env.store.queries().snapshot();
    let log = BoundaryLog {
        id: Uuid::new_v4(),
        sequence_number: 1,
        created_at: now_micros(),
        method: "GET".into(),
        detail: "https://example.com".into(),
        matched_rule: None,
    };
    assert!(scope.insert_boundary_logs(Uuid::new_v4(), "claude", &[log]).await.unwrap());
    let err = scope
        .push_context_state(&ContextState {
            version: 1,
            initial: true,
            aggregate_hash: String::new(),
            snapshot_error: String::new(),
            resources: vec![],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotInCoderSchema(_)), "{err:?}");
    let d = diff(&env.store, &before);
    assert_eq!((d.total(), d.begins), (0, 0), "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_ssh_key_is_the_owners_and_the_first_stored_wins() {
    let env = env().await;
    let owner = env.seed.owner;
    let scope = env.scope().await;

    // coderd made the owner's key with the user.
    let before = env.store.queries().snapshot();
    let made = scope.owner_git_ssh_key().await.unwrap().expect("coderd's key");
    assert_eq!((diff(&env.store, &before).total(), made.user_id), (1, owner));
    assert_eq!(made.public_key, env.printed["owner"]["git_ssh_public_key"].as_str().unwrap());
    assert!(made.private_key.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"), "{}", made.private_key);
    // A concurrent first request's insert keeps it.
    assert_eq!(scope.insert_owner_git_ssh_key("private-x", "public-x").await.unwrap(), made);
    assert_eq!(env.other_scope().await.owner_git_ssh_key().await.unwrap(), Some(made));

    // A user without one (made some other way) gets the one given.
    env.exec(&format!("DELETE FROM gitsshkeys WHERE user_id = '{owner}'")).await;
    assert_eq!(scope.owner_git_ssh_key().await.unwrap(), None);
    let before = env.store.queries().snapshot();
    let stored = scope.insert_owner_git_ssh_key("private-1", "public-1").await.unwrap();
    let d = diff(&env.store, &before);
    assert_eq!((d.total(), d.get("InsertGitSSHKey"), d.get("GetGitSSHKey")), (2, 1, 1), "{d:?}");
    assert_eq!(stored.user_id, owner);
    assert_eq!((stored.private_key.as_str(), stored.public_key.as_str()), ("private-1", "public-1"));
    assert_eq!(stored.created_at, stored.updated_at);
    assert!(within_a_minute(stored.created_at));
    assert_eq!(scope.insert_owner_git_ssh_key("private-2", "public-2").await.unwrap(), stored);
    assert_eq!(env.count(&format!("SELECT count(*) FROM gitsshkeys WHERE user_id = '{owner}'")).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_bump_is_coders_query() {
    let env = env().await;
    let Seed { build, template, .. } = env.seed;
    let scope = env.scope().await;
    let deadline =
        format!("SELECT (EXTRACT(EPOCH FROM deadline) * 1000000)::bigint FROM workspace_builds WHERE id = '{build}'");
    let read = || {
        let (db, q) = (env.db.clone(), deadline.clone());
        async move { sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(q)).fetch_one(&db).await.unwrap() }
    };
    let hour = 3_600_000_000i64;

    // As seeded: due in 30 minutes of a 1 h bump, so moved to now + 1 h (under the 8 h max deadline).
    let before = env.store.queries().snapshot();
    scope.bump_workspace_activity().await.unwrap();
    let d = diff(&env.store, &before);
    assert_eq!((d.total(), d.get("ActivityBumpWorkspace"), d.begins), (1, 1, 0), "{d:?}");
    let bumped = read().await;
    assert!((bumped - (now_micros() + hour)).abs() < 60_000_000, "{bumped}");
    let referee = env.referee(env.seed.agent).await;
    assert_eq!(go_micros(&referee["latest_build"]["deadline"]), Some(bumped));

    // Not yet 5 % into the bump: left alone.
    scope.bump_workspace_activity().await.unwrap();
    assert_eq!(read().await, bumped);

    // Never past the max deadline.
    env.exec(&format!(
        "UPDATE workspace_builds SET deadline = now() + interval '10 minutes', \
         max_deadline = now() + interval '20 minutes' WHERE id = '{build}'"
    ))
    .await;
    scope.bump_workspace_activity().await.unwrap();
    assert!(env.boolean(&format!("SELECT deadline = max_deadline FROM workspace_builds WHERE id = '{build}'")).await);

    // Manual shutdown (no deadline) is never bumped.
    env.exec(&format!(
        "UPDATE workspace_builds SET deadline = '0001-01-01 00:00:00+00', max_deadline = '0001-01-01 00:00:00+00' \
         WHERE id = '{build}'"
    ))
    .await;
    scope.bump_workspace_activity().await.unwrap();
    assert!(
        env.boolean(&format!("SELECT deadline = '0001-01-01 00:00:00+00' FROM workspace_builds WHERE id = '{build}'"))
            .await
    );

    // A template without an activity bump, or a stop build, is not bumped.
    env.exec(&format!(
        "UPDATE workspace_builds SET deadline = now() + interval '10 minutes' WHERE id = '{build}'; \
         UPDATE templates SET activity_bump = 0 WHERE id = '{template}'"
    ))
    .await;
    let due = read().await;
    scope.bump_workspace_activity().await.unwrap();
    assert_eq!(read().await, due);
    env.exec(&format!(
        "UPDATE templates SET activity_bump = 3600000000000 WHERE id = '{template}'; \
         UPDATE workspace_builds SET transition = 'stop' WHERE id = '{build}'"
    ))
    .await;
    scope.bump_workspace_activity().await.unwrap();
    assert_eq!(read().await, due);

    // Another workspace's build is never reached: this one's start build is bumped, the superseded workspace's not.
    let theirs = uuid_at(&env.printed, &["superseded", "build_id"]);
    let q = format!("SELECT deadline::text FROM workspace_builds WHERE id = '{theirs}'");
    let untouched = env.text(&q).await;
    env.exec(&format!("UPDATE workspace_builds SET transition = 'start' WHERE id = '{build}'")).await;
    scope.bump_workspace_activity().await.unwrap();
    assert!(read().await > due);
    assert_eq!(env.text(&q).await, untouched);
}
