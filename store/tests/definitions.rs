//! Agent definitions on both engines: creating an agent from one is one transaction that leaves nothing behind when it
//! fails, and replacing it is one transaction that rewrites every part, keeping the agent's id, token, logs, and the
//! rows of the parts that stay.

mod common;

use agentwire_store::*;
use common::{open, quiet_options, Kind};
use uuid::Uuid;

dual!(
    create_then_replace_round_trips_every_part,
    a_failed_create_leaves_nothing_behind,
    replace_refuses_unknown_agents_and_ambiguous_names,
);

fn app(slug: &str, healthcheck_url: &str) -> AppDefinition {
    AppDefinition {
        slug: slug.into(),
        display_name: slug.to_uppercase(),
        url: Some(format!("http://127.0.0.1:8000/{slug}")),
        sharing_level: "owner".into(),
        healthcheck_url: healthcheck_url.into(),
        healthcheck_interval: if healthcheck_url.is_empty() { 0 } else { 5 },
        healthcheck_threshold: if healthcheck_url.is_empty() { 0 } else { 3 },
        open_in: "slim-window".into(),
        ..AppDefinition::default()
    }
}

fn script(name: &str, body: &str) -> ScriptDefinition {
    ScriptDefinition {
        display_name: name.into(),
        icon: format!("/icon/{name}.svg"),
        script: body.into(),
        run_on_start: true,
        ..ScriptDefinition::default()
    }
}

fn metadata(key: &str, interval: i64) -> NewMetadata {
    NewMetadata {
        key: key.into(),
        display_name: key.to_uppercase(),
        script: format!("echo {key}"),
        interval,
        timeout: 1,
        display_order: 0,
    }
}

fn first_definition() -> AgentDefinition {
    AgentDefinition {
        architecture: "amd64".into(),
        operating_system: "linux".into(),
        directory: "/work".into(),
        environment_variables: Some(r#"{"A":"1","B":"2"}"#.into()),
        motd_file: "/etc/motd".into(),
        troubleshooting_url: "https://example.com/help".into(),
        connection_timeout_seconds: 120,
        display_apps: vec!["vscode".into(), "ssh_helper".into(), "web_terminal".into()],
        apps: vec![
            AppDefinition {
                icon: "/icon/web.svg".into(),
                subdomain: true,
                sharing_level: "authenticated".into(),
                display_order: 2,
                display_group: Some("tools".into()),
                hidden: true,
                open_in: "tab".into(),
                tooltip: "the web".into(),
                ..app("web", "http://127.0.0.1:8000/health")
            },
            app("moved", "http://127.0.0.1:8000/old"),
            app("gone", ""),
            AppDefinition { url: None, command: Some("htop".into()), ..app("top", "") },
        ],
        scripts: vec![
            ScriptDefinition {
                cron: "0 */5 * * * *".into(),
                log_path: "setup.log".into(),
                start_blocks_login: true,
                timeout_seconds: 60,
                ..script("setup", "echo one")
            },
            script("old", "echo old"),
            ScriptDefinition { run_on_start: false, run_on_stop: true, ..script("stop", "echo bye") },
        ],
        metadata: vec![metadata("load", 5), metadata("gone", 10)],
        memory_monitor: Some(MonitorDefinition { enabled: true, threshold: 80 }),
        volume_monitors: vec![
            VolumeMonitorDefinition { path: "/".into(), enabled: true, threshold: 90 },
            VolumeMonitorDefinition { path: "/data".into(), enabled: false, threshold: 50 },
        ],
    }
}

fn second_definition() -> AgentDefinition {
    let first = first_definition();
    AgentDefinition {
        architecture: "arm64".into(),
        operating_system: "darwin".into(),
        directory: "/other".into(),
        environment_variables: None,
        motd_file: String::new(),
        troubleshooting_url: "https://example.com/new".into(),
        connection_timeout_seconds: 0,
        display_apps: vec!["port_forwarding_helper".into()],
        apps: vec![
            AppDefinition { display_name: "Web 2".into(), ..first.apps[0].clone() },
            app("moved", "http://127.0.0.1:8000/new"),
            AppDefinition { url: None, command: Some("btop".into()), ..app("top", "") },
            app("new", "http://127.0.0.1:8000/fresh"),
        ],
        scripts: vec![
            ScriptDefinition { icon: "/icon/two.svg".into(), timeout_seconds: 30, ..script("setup", "echo two") },
            script("stop", "echo bye"),
            script("fresh", "echo fresh"),
        ],
        metadata: vec![metadata("load", 7), metadata("fresh", 3)],
        memory_monitor: None,
        volume_monitors: vec![VolumeMonitorDefinition { path: "/".into(), enabled: false, threshold: 95 }],
    }
}

fn placement<'a>(owner: &'a str, workspace: &'a str) -> AgentPlacement<'a> {
    AgentPlacement { owner, template: "tpl", workspace, agent: "main" }
}

/// Everything the store holds of an agent's definition, read back through the agent's own scope.
async fn read_back(store: &Store, token: Uuid) -> (AgentScope, AgentDefinition) {
    let resolved = store.resolve_agent_by_token(&token.to_string()).await.unwrap().expect("the token resolves");
    let scope = store.agent(&resolved);
    let a = scope.agent();
    let sources = scope.list_log_sources().await.unwrap();
    let mut scripts: Vec<ScriptDefinition> = scope
        .list_scripts()
        .await
        .unwrap()
        .into_iter()
        .map(|s| ScriptDefinition {
            icon: sources.iter().find(|l| l.id == s.log_source_id).expect("the script's log source").icon.clone(),
            display_name: s.display_name,
            script: s.script,
            cron: s.cron,
            log_path: s.log_path,
            run_on_start: s.run_on_start,
            run_on_stop: s.run_on_stop,
            start_blocks_login: s.start_blocks_login,
            timeout_seconds: s.timeout_seconds,
        })
        .collect();
    scripts.sort_by(|x, y| x.display_name.cmp(&y.display_name));
    let apps = scope
        .list_apps()
        .await
        .unwrap()
        .into_iter()
        .map(|p| AppDefinition {
            slug: p.slug,
            display_name: p.display_name,
            icon: p.icon,
            command: p.command,
            url: p.url,
            external: p.external,
            subdomain: p.subdomain,
            sharing_level: p.sharing_level,
            healthcheck_url: p.healthcheck_url,
            healthcheck_interval: p.healthcheck_interval,
            healthcheck_threshold: p.healthcheck_threshold,
            display_order: p.display_order,
            display_group: p.display_group,
            hidden: p.hidden,
            open_in: p.open_in,
            tooltip: p.tooltip,
        })
        .collect();
    let mut metadata: Vec<NewMetadata> = scope
        .list_metadata()
        .await
        .unwrap()
        .into_iter()
        .map(|m| NewMetadata {
            key: m.key,
            display_name: m.display_name,
            script: m.script,
            interval: m.interval,
            timeout: m.timeout,
            display_order: m.display_order,
        })
        .collect();
    metadata.sort_by(|x, y| x.key.cmp(&y.key));
    let definition = AgentDefinition {
        architecture: a.architecture.clone(),
        operating_system: a.operating_system.clone(),
        directory: a.directory.clone(),
        environment_variables: a.environment_variables.clone(),
        motd_file: a.motd_file.clone(),
        troubleshooting_url: a.troubleshooting_url.clone(),
        connection_timeout_seconds: a.connection_timeout_seconds,
        display_apps: serde_free_string_array(&a.display_apps),
        apps,
        scripts,
        metadata,
        memory_monitor: scope
            .memory_monitor()
            .await
            .unwrap()
            .map(|m| MonitorDefinition { enabled: m.enabled, threshold: m.threshold }),
        volume_monitors: scope
            .volume_monitors()
            .await
            .unwrap()
            .into_iter()
            .map(|v| VolumeMonitorDefinition { path: v.path, enabled: v.enabled, threshold: v.threshold })
            .collect(),
    };
    (scope, definition)
}

/// `["a","b"]` → `[a, b]` for the plain names the display apps column holds.
fn serde_free_string_array(json: &str) -> Vec<String> {
    json.trim_matches(['[', ']']).split(',').filter(|s| !s.is_empty()).map(|s| s.trim_matches('"').to_owned()).collect()
}

/// The definition as read back: parts in the order the reads list them.
fn sorted(mut d: AgentDefinition) -> AgentDefinition {
    d.apps.sort_by(|x, y| x.slug.cmp(&y.slug));
    d.scripts.sort_by(|x, y| x.display_name.cmp(&y.display_name));
    d.metadata.sort_by(|x, y| x.key.cmp(&y.key));
    d.volume_monitors.sort_by(|x, y| x.path.cmp(&y.path));
    d
}

mod cases {
    use super::*;

    pub async fn create_then_replace_round_trips_every_part(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let admin = env.store.admin();
        let before = env.store.queries().snapshot();
        let created = admin.create_defined_agent(placement("dana", "dev"), &first_definition()).await.unwrap();
        let d = env.store.queries().snapshot().since(&before);
        assert_eq!((d.begins, d.commits), (1, 1), "create is one transaction: {d:?}");
        assert_eq!(admin.find_agent("dana", "dev", "main").await.unwrap(), Some(created.agent.id));

        let token = created.agent.auth_token;
        let (scope, stored) = read_back(&env.store, token).await;
        assert_eq!(scope.agent_id(), created.agent.id);
        assert_eq!(scope.agent().owner_username, "dana");
        assert_eq!(scope.agent().workspace_name, "dev");
        assert_eq!(stored, sorted(first_definition()));
        let healths: Vec<(String, String)> =
            scope.list_apps().await.unwrap().into_iter().map(|a| (a.slug, a.health)).collect();
        assert_eq!(
            healths,
            [("gone", "disabled"), ("moved", "initializing"), ("top", "disabled"), ("web", "initializing")]
                .map(|(s, h)| (s.to_owned(), h.to_owned()))
        );

        // What a running agent writes before the update.
        let apps = scope.list_apps().await.unwrap();
        let id_of = |slug: &str| apps.iter().find(|a| a.slug == slug).unwrap().id;
        let (web, moved) = (id_of("web"), id_of("moved"));
        scope.batch_update_app_healths(&[(web, AppHealth::Healthy), (moved, AppHealth::Healthy)]).await.unwrap();
        scope.insert_app_status("web", "working", "busy", None).await.unwrap().expect("web has a status");
        let scripts = scope.list_scripts().await.unwrap();
        let setup = scripts.iter().find(|s| s.display_name == "setup").unwrap().clone();
        let old = scripts.iter().find(|s| s.display_name == "old").unwrap().clone();
        for s in [&setup, &old] {
            scope
                .insert_logs(s.log_source_id, &[LogLine { level: LogLevel::Info, output: s.display_name.clone() }])
                .await
                .unwrap();
            let timing = ScriptTiming {
                script_id: s.id,
                started_at: 1,
                ended_at: 2,
                exit_code: 0,
                stage: "start".into(),
                status: "ok".into(),
            };
            assert!(scope.insert_script_timing(&timing).await.unwrap());
        }
        let update =
            |key: &str| MetadataUpdate { key: key.into(), value: format!("{key}-value"), error: String::new() };
        scope.enqueue_metadata(&[update("load"), update("gone")]);
        assert!(scope.enqueue_volume_monitor("/", MonitorState::Nok, 5, 6));
        env.store.flush().await;

        let before = env.store.queries().snapshot();
        assert!(admin.replace_agent_definition(created.agent.id, &second_definition()).await.unwrap());
        let d = env.store.queries().snapshot().since(&before);
        assert_eq!((d.begins, d.commits), (1, 1), "replace is one transaction: {d:?}");

        // The same token resolves the same agent, now with the second definition.
        let (scope, stored) = read_back(&env.store, token).await;
        assert_eq!(scope.agent_id(), created.agent.id);
        assert_eq!(stored, sorted(second_definition()));

        let apps = scope.list_apps().await.unwrap();
        let by_slug = |slug: &str| apps.iter().find(|a| a.slug == slug).unwrap();
        assert_eq!((by_slug("web").id, by_slug("web").health.as_str()), (web, "healthy"), "same check: health kept");
        assert_eq!((by_slug("moved").id, by_slug("moved").health.as_str()), (moved, "initializing"), "new URL");
        assert_eq!(by_slug("new").health, "initializing");
        assert!(scope.insert_app_status("gone", "working", "x", None).await.unwrap().is_none(), "gone is gone");
        let status = scope.insert_app_status("web", "complete", "done", None).await.unwrap().unwrap();
        assert_eq!((status.app_id, status.previous_state.as_deref()), (web, Some("working")), "statuses kept");

        let scripts = scope.list_scripts().await.unwrap();
        let kept = scripts.iter().find(|s| s.display_name == "setup").unwrap();
        assert_eq!((kept.id, kept.log_source_id), (setup.id, setup.log_source_id), "a kept script keeps its ids");
        assert!(scripts.iter().all(|s| s.display_name != "old"));
        let timings: Vec<Uuid> = scope.script_timings().await.unwrap().into_iter().map(|t| t.script_id).collect();
        assert_eq!(timings, [setup.id], "the kept script's timing stays; the removed script's went with it");
        let logs: Vec<(String, Uuid)> =
            scope.logs_after(0).await.unwrap().into_iter().map(|l| (l.output, l.log_source_id)).collect();
        assert_eq!(logs.len(), 2, "logs stay: {logs:?}");
        let sources: Vec<String> =
            scope.list_log_sources().await.unwrap().into_iter().map(|s| s.display_name).collect();
        for name in ["setup", "old", "stop", "fresh"] {
            assert!(sources.iter().any(|s| s == name), "log source {name} is kept: {sources:?}");
        }

        let values: Vec<(String, String)> =
            scope.list_metadata().await.unwrap().into_iter().map(|m| (m.key, m.value)).collect();
        assert_eq!(values, [("fresh", ""), ("load", "load-value")].map(|(k, v)| (k.to_owned(), v.to_owned())));
        let volume = scope.volume_monitors().await.unwrap();
        assert_eq!((volume.len(), volume[0].state.as_str(), volume[0].threshold), (1, "NOK", 95));
    }

    pub async fn a_failed_create_leaves_nothing_behind(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let admin = env.store.admin();
        // A sharing level the schema's CHECK refuses fails the last statements of the transaction.
        let mut bad = first_definition();
        bad.apps[3].sharing_level = "everyone".into();
        let err = admin.create_defined_agent(placement("erin", "dev"), &bad).await.unwrap_err();
        assert!(err.is_check_violation(), "{err}");
        assert_eq!(admin.user_id("erin").await.unwrap(), None, "no user");
        assert_eq!(admin.find_agent("erin", "dev", "main").await.unwrap(), None, "no agent");
        // The same names are free for a create that succeeds.
        let created = admin.create_defined_agent(placement("erin", "dev"), &first_definition()).await.unwrap();
        assert_eq!(admin.find_agent("erin", "dev", "main").await.unwrap(), Some(created.agent.id));
    }

    pub async fn replace_refuses_unknown_agents_and_ambiguous_names(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let admin = env.store.admin();
        assert!(!admin.replace_agent_definition(Uuid::new_v4(), &first_definition()).await.unwrap());
        let created = admin.create_defined_agent(placement("finn", "dev"), &first_definition()).await.unwrap();
        let mut twice = first_definition();
        twice.scripts.push(script("setup", "echo again"));
        let err = admin.replace_agent_definition(created.agent.id, &twice).await.unwrap_err();
        assert!(matches!(&err, StoreError::Invalid(m) if m.contains("script display name \"setup\"")), "{err}");
        let (_, stored) = read_back(&env.store, created.agent.auth_token).await;
        assert_eq!(stored, sorted(first_definition()), "nothing changed");
        assert_eq!(admin.find_agent("finn", "dev", "other").await.unwrap(), None);
        assert_eq!(admin.find_agent("nobody", "dev", "main").await.unwrap(), None);
    }
}
