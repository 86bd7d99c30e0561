//! The store suite: every case runs on SQLite and on PostgreSQL.
//!
//! Query budgets are asserted by counting statements and transactions, never by timing.
//!
//! Over 600 lines: one case list run on both engines, kept in one file so the list and the cases stay together.

mod common;

use std::time::Duration;

use agentwire_store::pubsub::{decode_metadata_batch_payload, METADATA_BATCH_CHANNEL};
use agentwire_store::*;
use common::{fixture, fixture_due_in_ten_minutes, open, quiet_options, second_agent, Kind, ACTIVITY_BUMP};
use uuid::Uuid;

dual!(
    resolve_token_is_one_query,
    resolve_token_rules,
    migrations_are_idempotent,
    metadata_flush_is_one_transaction_and_chunked_notifications,
    stats_flush_of_1024_rows_is_one_transaction,
    stats_forced_flush_at_80_percent,
    full_queue_drops_are_counted,
    shutdown_flushes_batchers,
    manifest_lists,
    lifecycle_rules,
    startup_update,
    logs_insert_limit_and_overflow,
    scope_cannot_touch_other_agents,
    sub_agents,
    connection_bookkeeping_and_heartbeats,
    connection_log_upsert,
    resource_monitors,
    monitor_flush_is_one_statement_per_kind_for_all_agents,
    context_state,
    site_configs,
    app_status,
    pubsub_roundtrip,
    scoped_read_backs_and_pre_provisioned_sub_agent,
    api_keys_resolve_their_user_once,
    agent_metadata_for_user_checks_ownership,
    stats_with_connections_bump_the_workspace_in_the_flush_transaction,
    stats_flush_keeps_the_daily_activity_rollup,
    a_nul_from_one_agent_does_not_fail_the_shared_metadata_flush,
);

mod cases {
    use super::*;

    pub async fn resolve_token_is_one_query(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let f = fixture(&env.store, "alice").await;
        let before = env.store.queries().snapshot();
        let a = env.store.resolve_agent_by_token(&f.created.auth_token.to_string()).await.unwrap().unwrap();
        let d = env.store.queries().snapshot().since(&before);
        assert_eq!(d.total(), 1, "{d:?}");
        assert_eq!(d.get("GetAuthenticatedWorkspaceAgentAndBuildByAuthToken"), 1);
        assert_eq!(d.begins, 0);
        assert_eq!(a.id, f.created.id);
        assert_eq!(a.owner_username, "alice");
        assert_eq!(a.template_name, "tpl");
        assert_eq!(a.build_number, 1);
        assert!(a.is_latest_build);
        assert_eq!(a.environment_variables.as_deref(), Some(r#"{"A":"1"}"#));
        // The token never shows in Debug.
        assert!(!format!("{a:?}").contains(&f.created.auth_token.to_string()));

        // Not a UUID: no query at all.
        let before = env.store.queries().snapshot();
        assert!(env.store.resolve_agent_by_token("nope").await.unwrap().is_none());
        assert_eq!(env.store.queries().snapshot().since(&before).total(), 0);
        // Unknown token: one query, none.
        assert!(env.store.resolve_agent_by_token(&Uuid::new_v4().to_string()).await.unwrap().is_none());
    }

    pub async fn resolve_token_rules(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let admin = env.store.admin();
        let f = fixture(&env.store, "bob").await;
        let token = f.created.auth_token.to_string();

        // A pending stop build after the agent's start build: Coder's shutdown case still
        // resolves, but the build is not the latest.
        let stop = admin.create_build(f.build.workspace_id, "stop", JobState::Pending).await.unwrap();
        let a = env.store.resolve_agent_by_token(&token).await.unwrap().unwrap();
        assert!(!a.is_latest_build);
        assert!(a.in_shutdown_case);
        assert_eq!(a.build_number, 1);

        // Once the stop build completes, the old build's agent is stale: still known (the endpoint answers 403,
        // not 401), but neither latest nor in the shutdown case.
        admin.set_job_state(stop.job_id, JobState::Succeeded).await.unwrap();
        let stale = env.store.resolve_agent_by_token(&token).await.unwrap().unwrap();
        assert!(!stale.is_latest_build && !stale.in_shutdown_case);

        // An agent of the newest build resolves; a deleted workspace does not.
        let start = admin.create_build(f.build.workspace_id, "start", JobState::Succeeded).await.unwrap();
        let fresh = admin
            .create_agent(start.resource_id, &NewAgent { name: "main".into(), ..Default::default() })
            .await
            .unwrap();
        let t = fresh.auth_token.to_string();
        let a = env.store.resolve_agent_by_token(&t).await.unwrap().unwrap();
        assert!(a.is_latest_build && !a.in_shutdown_case);
        assert_eq!(a.build_number, 3);
        admin.delete_workspace(f.build.workspace_id).await.unwrap();
        assert!(env.store.resolve_agent_by_token(&t).await.unwrap().is_none());
    }

    pub async fn migrations_are_idempotent(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let f = fixture(&env.store, "carol").await;
        env.store.close().await;
        // Re-open the same database: migrations are a no-op and data is intact.
        let again = Store::open(&env.url, quiet_options()).await.unwrap();
        assert!(again.resolve_agent_by_token(&f.created.auth_token.to_string()).await.unwrap().is_some());
        again.close().await;
    }

    pub async fn metadata_flush_is_one_transaction_and_chunked_notifications(kind: Kind) {
        const AGENTS: usize = 25;
        const CHUNK: usize = 10;
        const KEYS: usize = 3;
        let env = open(kind, StoreOptions { metadata_notify_max_ids: CHUNK, ..quiet_options() }).await;
        let store = &env.store;
        let f = fixture(store, "dave").await;
        let mut scopes = vec![store.agent(&f.agent)];
        for i in 1..AGENTS {
            scopes.push(store.agent(&second_agent(store, &f, &format!("a{i}")).await));
        }
        for s in &scopes {
            for k in 0..KEYS {
                store
                    .admin()
                    .add_metadata_description(
                        s.agent_id(),
                        &NewMetadata { key: format!("k{k}"), display_name: "K".into(), ..Default::default() },
                    )
                    .await
                    .unwrap();
            }
        }
        let mut sub = store.pubsub().subscribe(METADATA_BATCH_CHANNEL).await.unwrap();

        let before = store.queries().snapshot();
        let mut n = 0;
        for round in 0..2 {
            for s in &scopes {
                let updates: Vec<MetadataUpdate> = (0..KEYS)
                    .map(|k| MetadataUpdate { key: format!("k{k}"), value: format!("v{round}"), error: String::new() })
                    .collect();
                // Unknown keys are ignored by the UPDATE, as in Coder.
                let mut with_unknown = updates.clone();
                with_unknown.push(MetadataUpdate { key: "nope".into(), value: "x".into(), error: String::new() });
                let e = s.enqueue_metadata(&with_unknown);
                assert_eq!(e.dropped, 0);
                n += e.accepted;
            }
        }
        assert_eq!(n, AGENTS * (KEYS + 1) * 2);
        store.flush().await;
        let d = store.queries().snapshot().since(&before);
        assert_eq!(d.begins, 1, "{d:?}");
        assert_eq!(d.commits, 1, "{d:?}");
        let expected_notifications = AGENTS.div_ceil(CHUNK) as u64;
        assert_eq!(d.notifications, expected_notifications, "{d:?}");

        let mut seen = Vec::new();
        for _ in 0..expected_notifications {
            let msg = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await.unwrap().unwrap();
            let ids = decode_metadata_batch_payload(&msg).unwrap();
            assert!(ids.len() <= CHUNK);
            seen.extend(ids);
        }
        seen.sort();
        let mut want: Vec<Uuid> = scopes.iter().map(|s| s.agent_id()).collect();
        want.sort();
        assert_eq!(seen, want);

        // The last value per key won and the server's clock was used.
        let md = scopes[3].list_metadata().await.unwrap();
        assert_eq!(md.len(), KEYS);
        assert!(md.iter().all(|m| m.value == "v1" && m.collected_at > 0));
        assert_eq!(store.batcher_stats().metadata.flushes, 1);
    }

    pub async fn stats_flush_of_1024_rows_is_one_transaction(kind: Kind) {
        let env =
            open(kind, StoreOptions { stats_force_flush_percent: 100, stats_queue_capacity: 2048, ..quiet_options() })
                .await;
        let store = &env.store;
        let f = fixture(store, "erin").await;
        let scope = store.agent(&f.agent);
        let before = store.queries().snapshot();
        for i in 0..1024 {
            assert!(scope.enqueue_stats(StatsReport {
                connection_count: 1,
                rx_bytes: i,
                connections_by_proto: r#"{"ssh":1}"#.into(),
                connection_median_latency_ms: 1.5,
                ..Default::default()
            }));
        }
        // The 1024th row fills the buffer and triggers the flush; wait for it by count.
        wait_for(|| store.batcher_stats().stats.flushes == 1).await;
        let d = store.queries().snapshot().since(&before);
        assert_eq!(d.begins, 1, "{d:?}");
        assert_eq!(d.commits, 1, "{d:?}");
        assert_eq!(store.batcher_stats().stats.items_flushed, 1024);
    }

    pub async fn stats_flush_keeps_the_daily_activity_rollup(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let store = &env.store;
        let f = fixture(store, "daily").await;
        let (scope, other) = (store.agent(&f.agent), second_agent(store, &f, "second").await);
        let other = store.agent(&other);

        // Reports without a connection are no activity.
        assert!(scope.enqueue_stats(StatsReport { connection_count: 0, ..Default::default() }));
        store.flush().await;
        assert_eq!(store.user_activity_days().await.unwrap(), vec![]);

        // Two agents of one user on one template, one flush: one rollup row, one upsert in the flush transaction.
        let t0 = agentwire_store::now_micros();
        let before = store.queries().snapshot();
        assert!(scope.enqueue_stats(StatsReport { connection_count: 2, ..Default::default() }));
        assert!(other.enqueue_stats(StatsReport { connection_count: 1, ..Default::default() }));
        store.flush().await;
        let d = store.queries().snapshot().since(&before);
        assert_eq!(d.commits, 1, "{d:?}");
        assert_eq!(d.get(aggregates::UPSERT_ACTIVITY_DAYS), 1, "{d:?}");
        let t1 = agentwire_store::now_micros();
        let days = store.user_activity_days().await.unwrap();
        assert_eq!(days.len(), 1, "{days:?}");
        let first = days[0];
        assert_eq!((first.template_id, first.user_id), (f.template_id, f.owner_id));
        assert_eq!(first.day, first.first_at.div_euclid(aggregates::MICROS_PER_DAY));
        assert!(t0 <= first.first_at && first.first_at <= first.last_at && first.last_at <= t1, "{first:?}");

        // A later flush on the same day widens the row: the first instant stays, the last moves on.
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(scope.enqueue_stats(StatsReport { connection_count: 1, ..Default::default() }));
        store.flush().await;
        let days = store.user_activity_days().await.unwrap();
        assert_eq!(days.len(), 1, "{days:?}");
        assert_eq!(days[0].first_at, first.first_at);
        assert!(days[0].last_at > first.last_at, "{:?} after {first:?}", days[0]);
    }

    pub async fn stats_with_connections_bump_the_workspace_in_the_flush_transaction(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let store = &env.store;
        let admin = store.admin();
        let (f, now) = fixture_due_in_ten_minutes(store, "bumpy").await;
        let scope = store.agent(&f.agent);

        // No connection: no activity, the deadline stays.
        assert!(scope.enqueue_stats(StatsReport { connection_count: 0, ..Default::default() }));
        store.flush().await;
        let (deadline, last_used) = admin.build_activity(f.build.build_id).await.unwrap().unwrap();
        assert_eq!(deadline, now + 10 * 60_000_000);
        assert_eq!(last_used, 0);

        // A report with a connection: one flush, one transaction, the deadline pushed to now + 1 h.
        let before = store.queries().snapshot();
        assert!(scope.enqueue_stats(StatsReport { connection_count: 2, ..Default::default() }));
        assert!(scope.enqueue_stats(StatsReport { connection_count: 1, ..Default::default() }));
        store.flush().await;
        let d = store.queries().snapshot().since(&before);
        assert_eq!(d.commits, 1, "{d:?}");
        assert_eq!(d.by_name.get("ActivityBumpWorkspace"), Some(&1), "one bump per workspace per flush: {d:?}");
        assert_eq!(d.notifications, 1, "one stats_update event per workspace per flush: {d:?}");
        let (bumped, last_used) = admin.build_activity(f.build.build_id).await.unwrap().unwrap();
        assert!(bumped >= now + ACTIVITY_BUMP && bumped <= agentwire_store::now_micros() + ACTIVITY_BUMP, "{bumped}");
        assert!(last_used >= now);

        // Within 5 % of the interval nothing moves again.
        assert!(scope.enqueue_stats(StatsReport { connection_count: 1, ..Default::default() }));
        store.flush().await;
        assert_eq!(admin.build_activity(f.build.build_id).await.unwrap().unwrap().0, bumped);

        // A hard cap holds: the deadline never passes max_deadline.
        let cap = agentwire_store::now_micros() + 20 * 60_000_000;
        admin.set_build_deadline(f.build.build_id, agentwire_store::now_micros() + 60_000_000, cap).await.unwrap();
        assert!(scope.enqueue_stats(StatsReport { connection_count: 1, ..Default::default() }));
        store.flush().await;
        assert_eq!(admin.build_activity(f.build.build_id).await.unwrap().unwrap().0, cap);
    }

    pub async fn stats_forced_flush_at_80_percent(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let store = &env.store;
        let f = fixture(store, "fred").await;
        let scope = store.agent(&f.agent);
        let at = DEFAULT_STATS_MAX_ROWS * DEFAULT_STATS_FORCE_FLUSH_PERCENT / 100;
        for _ in 0..at - 1 {
            scope.enqueue_stats(StatsReport::default());
        }
        store.flush().await; // drain the queue through the task: below 80 %, an explicit flush
        assert_eq!(store.batcher_stats().stats.flushes, 1);
        for _ in 0..at {
            scope.enqueue_stats(StatsReport::default());
        }
        // With the timer an hour away, only the 80 % trigger can flush.
        wait_for(|| store.batcher_stats().stats.flushes == 2).await;
        assert_eq!(store.batcher_stats().stats.items_flushed as usize, at - 1 + at);
    }

    pub async fn a_nul_from_one_agent_does_not_fail_the_shared_metadata_flush(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let store = &env.store;
        let f = fixture(store, "nul").await;
        let neighbour = second_agent(store, &f, "neighbour").await;
        for agent in [f.agent.id, neighbour.id] {
            let m = NewMetadata { key: "k".into(), display_name: "K".into(), ..Default::default() };
            store.admin().add_metadata_description(agent, &m).await.unwrap();
        }
        let update = |value: &str| MetadataUpdate { key: "k".into(), value: value.into(), error: "e\0rr".into() };
        store.agent(&f.agent).enqueue_metadata(&[update("bad\0value")]);
        store.agent(&neighbour).enqueue_metadata(&[update("fine")]);
        store.flush().await;

        let stats = store.batcher_stats().metadata;
        assert_eq!((stats.flush_errors, stats.items_flushed), (0, 2), "{stats:?}");
        let value = |agent| async move {
            let rows = store.agent(agent).list_metadata().await.unwrap();
            (rows[0].value.clone(), rows[0].error.clone())
        };
        assert_eq!(value(&f.agent).await, ("bad\u{274c}value".to_owned(), "e\u{274c}rr".to_owned()));
        assert_eq!(value(&neighbour).await.0, "fine");
    }

    pub async fn full_queue_drops_are_counted(kind: Kind) {
        let env = open(kind, StoreOptions { metadata_queue_capacity: 4, ..quiet_options() }).await;
        let store = &env.store;
        let f = fixture(store, "gina").await;
        let scope = store.agent(&f.agent);
        let updates: Vec<MetadataUpdate> = (0..100)
            .map(|i| MetadataUpdate { key: format!("k{i}"), value: "v".into(), error: String::new() })
            .collect();
        let e = scope.enqueue_metadata(&updates);
        assert_eq!(e.accepted + e.dropped, 100);
        assert!(e.dropped > 0, "{e:?}");
        assert_eq!(store.batcher_stats().metadata.dropped, e.dropped as u64);
    }

    pub async fn shutdown_flushes_batchers(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let store = &env.store;
        let f = fixture(store, "hank").await;
        let scope = store.agent(&f.agent);
        store
            .admin()
            .add_metadata_description(f.agent.id, &NewMetadata { key: "k".into(), ..Default::default() })
            .await
            .unwrap();
        scope.enqueue_stats(StatsReport::default());
        scope.enqueue_metadata(&[MetadataUpdate { key: "k".into(), value: "after".into(), error: String::new() }]);
        assert!(scope.heartbeat(Uuid::new_v4()));
        store.shutdown().await;
        let s = store.batcher_stats();
        assert_eq!((s.stats.items_flushed, s.metadata.items_flushed, s.heartbeats.items_flushed), (1, 1, 1));
        assert_eq!(scope.list_metadata().await.unwrap()[0].value, "after");
        assert!(scope.state().await.unwrap().unwrap().last_connected_at.is_some());
        // After shutdown, enqueues are dropped and counted.
        assert!(!scope.enqueue_stats(StatsReport::default()));
        assert_eq!(store.batcher_stats().stats.dropped, 1);
    }

    pub async fn manifest_lists(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let store = &env.store;
        let f = fixture(store, "ivy").await;
        let admin = store.admin();
        admin.add_app(f.agent.id, &NewApp { slug: "zed".into(), ..Default::default() }).await.unwrap();
        admin
            .add_app(
                f.agent.id,
                &NewApp { slug: "code".into(), healthcheck_url: "http://x".into(), ..Default::default() },
            )
            .await
            .unwrap();
        admin
            .add_script(
                f.agent.id,
                &NewScript {
                    display_name: "s".into(),
                    script: "echo".into(),
                    run_on_start: true,
                    timeout_seconds: 5,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        admin.add_devcontainer(f.agent.id, "dc", "/ws", "/ws/.devcontainer.json").await.unwrap();
        admin
            .add_metadata_description(
                f.agent.id,
                &NewMetadata { key: "cpu".into(), interval: 1_000_000_000, ..Default::default() },
            )
            .await
            .unwrap();
        let scope = store.agent(&f.agent);
        let apps = scope.list_apps().await.unwrap();
        assert_eq!(apps.iter().map(|a| a.slug.as_str()).collect::<Vec<_>>(), ["code", "zed"]);
        assert_eq!(apps[0].health, "initializing");
        assert_eq!(apps[1].health, "disabled");
        let scripts = scope.list_scripts().await.unwrap();
        assert_eq!(scripts.len(), 1);
        assert!(scripts[0].run_on_start);
        assert_eq!(scope.list_log_sources().await.unwrap().len(), 1);
        assert_eq!(scope.list_devcontainers().await.unwrap()[0].workspace_folder, "/ws");
        assert_eq!(scope.list_metadata().await.unwrap()[0].interval, 1_000_000_000);
    }

    pub async fn lifecycle_rules(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let f = fixture(&env.store, "jack").await;
        let scope = env.store.agent(&f.agent);
        let t = scope.update_lifecycle(LifecycleState::Starting, 100).await.unwrap();
        assert_eq!((t.started_at, t.ready_at), (Some(100), None));
        let t = scope.update_lifecycle(LifecycleState::Ready, 200).await.unwrap();
        assert_eq!((t.started_at, t.ready_at), (Some(100), Some(200)));
        let t = scope.update_lifecycle(LifecycleState::ShuttingDown, 300).await.unwrap();
        assert_eq!((t.started_at, t.ready_at), (Some(100), Some(200)));
        let t = scope.update_lifecycle(LifecycleState::Starting, 400).await.unwrap();
        assert_eq!((t.started_at, t.ready_at), (Some(400), None));
        assert_eq!(scope.state().await.unwrap().unwrap().lifecycle_state, "starting");
        assert!(matches!("bogus".parse::<LifecycleState>(), Err(StoreError::Invalid(_))));
        // One statement per update.
        let before = env.store.queries().snapshot();
        scope.update_lifecycle(LifecycleState::StartError, 500).await.unwrap();
        assert_eq!(env.store.queries().snapshot().since(&before).total(), 1);
    }

    pub async fn startup_update(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let f = fixture(&env.store, "kate").await;
        let scope = env.store.agent(&f.agent);
        scope
            .update_startup(
                "v2.10.0",
                "/home/coder/x",
                &[Subsystem::Exectrace, Subsystem::Envbox, Subsystem::Exectrace],
                "2.10",
            )
            .await
            .unwrap();
        let st = scope.state().await.unwrap().unwrap();
        assert_eq!(st.version, "v2.10.0");
        assert_eq!(st.expanded_directory, "/home/coder/x");
        assert_eq!(st.subsystems, r#"["envbox","exectrace"]"#);
        assert_eq!(st.api_version, "2.10");
        assert!("none".parse::<Subsystem>().is_err());
    }

    pub async fn logs_insert_limit_and_overflow(kind: Kind) {
        let env = open(kind, StoreOptions { max_logs_length: 4000, ..quiet_options() }).await;
        let store = &env.store;
        let f = fixture(store, "liam").await;
        let scope = store.agent(&f.agent);
        let line = |s: &str| LogLine { level: LogLevel::Info, output: s.into() };

        assert_eq!(scope.insert_logs(Uuid::nil(), &[]).await.unwrap(), InsertLogsOutcome::Empty);
        let before = store.queries().snapshot();
        let out = scope.insert_logs(Uuid::nil(), &[line("hello"), line("a\0b")]).await.unwrap();
        let d = store.queries().snapshot().since(&before);
        assert_eq!((d.begins, d.commits), (1, 1));
        let InsertLogsOutcome::Inserted { first_id, count, first_logs } = out else { panic!("{out:?}") };
        assert!(first_id >= 1);
        assert_eq!(count, 2);
        assert!(first_logs);
        // The nil source became Coder's External source.
        assert_eq!(scope.list_log_sources().await.unwrap()[0].display_name, "External");

        // A 1500-char line is stored cut to 1024 chars but counts in full.
        let long = "x".repeat(1500);
        let out = scope.insert_logs(Uuid::nil(), &[line(&long)]).await.unwrap();
        assert!(matches!(out, InsertLogsOutcome::Inserted { first_logs: false, .. }));
        let st = scope.state().await.unwrap().unwrap();
        assert_eq!(st.logs_length, 5 + "a\u{274c}b".len() as i64 + 1500);

        // Over the limit: nothing stored, overflow set once.
        let out = scope.insert_logs(Uuid::nil(), &[line(&"y".repeat(3000))]).await.unwrap();
        assert_eq!(out, InsertLogsOutcome::LimitExceeded { newly: true });
        let out = scope.insert_logs(Uuid::nil(), &[line("z")]).await.unwrap();
        assert_eq!(out, InsertLogsOutcome::LimitExceeded { newly: false });
        let st = scope.state().await.unwrap().unwrap();
        assert!(st.logs_overflowed);
        assert_eq!(st.logs_length, 5 + "a\u{274c}b".len() as i64 + 1500);
        assert!("loud".parse::<LogLevel>().is_err());
    }

    pub async fn scope_cannot_touch_other_agents(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let store = &env.store;
        let admin = store.admin();
        let f = fixture(store, "mia").await;
        let other = second_agent(store, &f, "other").await;
        let mine = store.agent(&f.agent);
        let theirs = store.agent(&other);

        let their_app = admin
            .add_app(other.id, &NewApp { slug: "web".into(), healthcheck_url: "http://h".into(), ..Default::default() })
            .await
            .unwrap();
        let their_script =
            admin.add_script(other.id, &NewScript { script: "x".into(), ..Default::default() }).await.unwrap();

        // App health: the other agent's app is "unknown", nothing written.
        let out = mine.batch_update_app_healths(&[(their_app, AppHealth::Healthy)]).await.unwrap();
        assert_eq!(out.unknown, vec![their_app]);
        assert_eq!(theirs.list_apps().await.unwrap()[0].health, "initializing");
        // App status by slug: not found for me.
        assert!(mine.insert_app_status("web", "working", "m", None).await.unwrap().is_none());
        // Script timing for their script: refused.
        let timing = ScriptTiming {
            script_id: their_script,
            started_at: 1,
            ended_at: 2,
            exit_code: 0,
            stage: "start".into(),
            status: "ok".into(),
        };
        assert!(!mine.insert_script_timing(&timing).await.unwrap());
        assert!(theirs.insert_script_timing(&timing).await.unwrap());
        // Sub-agents: I cannot delete their child, nor see it.
        let child = theirs.create_sub_agent(&NewSubAgent { name: "dev".into(), ..Default::default() }).await.unwrap();
        assert!(!mine.delete_sub_agent(child.id).await.unwrap());
        assert!(mine.list_sub_agents().await.unwrap().is_empty());
        assert_eq!(theirs.list_sub_agents().await.unwrap().len(), 1);
        // Nor delete the other top-level agent via the sub-agent door.
        assert!(!mine.delete_sub_agent(other.id).await.unwrap());
        // Boundary session owned by them: refused.
        let session = Uuid::new_v4();
        let log = BoundaryLog {
            id: Uuid::new_v4(),
            sequence_number: 0,
            created_at: 1,
            method: "GET".into(),
            detail: "http://x".into(),
            matched_rule: None,
        };
        assert!(theirs.insert_boundary_logs(session, "p", std::slice::from_ref(&log)).await.unwrap());
        let log2 = BoundaryLog { id: Uuid::new_v4(), ..log };
        assert!(!mine.insert_boundary_logs(session, "p", &[log2]).await.unwrap());
        // My app health updates work and report changes.
        let my_app = admin
            .add_app(
                f.agent.id,
                &NewApp { slug: "mine".into(), healthcheck_url: "http://h".into(), ..Default::default() },
            )
            .await
            .unwrap();
        let out = mine.batch_update_app_healths(&[(my_app, AppHealth::Healthy)]).await.unwrap();
        assert_eq!(out.changed, vec![my_app]);
        let out = mine.batch_update_app_healths(&[(my_app, AppHealth::Healthy)]).await.unwrap();
        assert!(out.changed.is_empty());
    }

    pub async fn sub_agents(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let store = &env.store;
        let f = fixture(store, "nia").await;
        let scope = store.agent(&f.agent);
        let child = scope
            .create_sub_agent(&NewSubAgent {
                name: "dev".into(),
                directory: "/ws".into(),
                display_apps: vec!["vscode".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(!format!("{child:?}").contains(&child.auth_token.to_string()));
        let resolved = store.resolve_agent_by_token(&child.auth_token.to_string()).await.unwrap().unwrap();
        assert_eq!(resolved.parent_id, Some(f.agent.id));
        assert_eq!(resolved.directory, "/ws");
        assert_eq!(resolved.display_apps, r#"["vscode"]"#);
        assert_eq!(scope.list_sub_agents().await.unwrap(), vec![child.clone()]);
        assert!(scope.delete_sub_agent(child.id).await.unwrap());
        assert!(scope.list_sub_agents().await.unwrap().is_empty());
        assert!(store.resolve_agent_by_token(&child.auth_token.to_string()).await.unwrap().is_none());
    }

    pub async fn connection_bookkeeping_and_heartbeats(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let store = &env.store;
        let f = fixture(store, "olga").await;
        let others: Vec<_> = futures_join(store, &f, 5).await;
        let replica = Uuid::new_v4();
        let scope = store.agent(&f.agent);
        let t = scope.mark_connected(replica, "2.10").await.unwrap();
        assert!(t.first_connected_at.is_some());
        let first = t.first_connected_at;
        let t2 = scope.mark_connected(replica, "").await.unwrap();
        assert_eq!(t2.first_connected_at, first);
        let st = scope.state().await.unwrap().unwrap();
        assert_eq!(st.api_version, "2.10");
        assert_eq!(st.last_connected_replica_id, Some(replica));

        // Heartbeats of 6 agents: one transaction.
        let before = store.queries().snapshot();
        for s in others.iter().chain(std::iter::once(&scope)) {
            assert!(s.heartbeat(replica));
            assert!(s.heartbeat(replica));
        }
        store.flush().await;
        let d = store.queries().snapshot().since(&before);
        assert_eq!((d.begins, d.commits), (1, 1), "{d:?}");
        assert_eq!(store.batcher_stats().heartbeats.items_flushed, 6);
        for s in &others {
            assert!(s.state().await.unwrap().unwrap().last_connected_at.is_some());
        }
        scope.mark_disconnected(replica).await.unwrap();
        let st = scope.state().await.unwrap().unwrap();
        assert!(st.disconnected_at.unwrap() >= st.last_connected_at.unwrap());
    }

    async fn futures_join(store: &Store, f: &common::Fixture, n: usize) -> Vec<AgentScope> {
        let mut v = Vec::new();
        for i in 0..n {
            v.push(store.agent(&second_agent(store, f, &format!("hb{i}")).await));
        }
        v
    }

    pub async fn connection_log_upsert(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let f = fixture(&env.store, "pete").await;
        let scope = env.store.agent(&f.agent);
        let conn = Uuid::new_v4();
        let ev = |connect: bool, time: i64| ConnectionEvent {
            connection_id: conn,
            time,
            connect,
            kind: "ssh".into(),
            code: (!connect).then_some(0),
            ip: Some("localhost".into()),
            disconnect_reason: (!connect).then(|| "bye".into()),
        };
        let before = env.store.queries().snapshot();
        scope.insert_connection_log(&ev(true, 10)).await.unwrap();
        scope.insert_connection_log(&ev(false, 20)).await.unwrap();
        scope.insert_connection_log(&ev(false, 30)).await.unwrap();
        assert_eq!(env.store.queries().snapshot().since(&before).get("UpsertConnectionLog"), 3);
        assert!(scope
            .insert_connection_log(&ConnectionEvent { kind: "carrier-pigeon".into(), ..ev(true, 1) })
            .await
            .is_err());
    }

    pub async fn resource_monitors(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let f = fixture(&env.store, "quin").await;
        let scope = env.store.agent(&f.agent);
        assert!(scope.memory_monitor().await.unwrap().is_none());
        env.store.admin().add_memory_monitor(f.agent.id, true, 80).await.unwrap();
        env.store.admin().add_volume_monitor(f.agent.id, "/home", true, 90).await.unwrap();
        assert!(scope.enqueue_memory_monitor(MonitorState::Nok, 5, 6));
        assert!(scope.enqueue_volume_monitor("/home", MonitorState::Nok, 5, 7));
        assert!(scope.enqueue_volume_monitor("/nope", MonitorState::Nok, 5, 7));
        env.store.flush().await;
        let m = scope.memory_monitor().await.unwrap().unwrap();
        assert_eq!((m.state.as_str(), m.threshold, m.updated_at, m.debounced_until), ("NOK", 80, 5, 6));
        let v = scope.volume_monitors().await.unwrap();
        assert_eq!(v.len(), 1, "a state for a path without a monitor creates none: {v:?}");
        assert_eq!((v[0].state.as_str(), v[0].updated_at, v[0].debounced_until), ("NOK", 5, 7));
    }

    /// The monitor batcher: the latest state per (agent, monitor) wins within a flush, and a flush is one transaction
    /// with one statement per monitor kind for every agent in it, touching only the monitors it names.
    pub async fn monitor_flush_is_one_statement_per_kind_for_all_agents(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let store = &env.store;
        let admin = store.admin();
        let mut scopes = Vec::new();
        for name in ["mona", "moe", "mel"] {
            let f = fixture(store, name).await;
            admin.add_memory_monitor(f.agent.id, true, 80).await.unwrap();
            admin.add_volume_monitor(f.agent.id, "/home", true, 90).await.unwrap();
            admin.add_volume_monitor(f.agent.id, "/data", true, 90).await.unwrap();
            scopes.push(store.agent(&f.agent));
        }
        let untouched = fixture(store, "otto").await;
        admin.add_memory_monitor(untouched.agent.id, true, 80).await.unwrap();
        let before = store.queries().snapshot();
        let batcher_before = store.batcher_stats().monitors;
        for (i, scope) in scopes.iter().enumerate() {
            let t = 100 * (i as i64 + 1);
            // Three pushes' worth each; the middle one arrives last but is older, so it loses.
            for (at, state) in [(t, MonitorState::Nok), (t + 2, MonitorState::Ok), (t + 1, MonitorState::Nok)] {
                assert!(scope.enqueue_memory_monitor(state, at, at + 1000));
                assert!(scope.enqueue_volume_monitor("/home", state, at, 0));
            }
            assert!(scope.enqueue_volume_monitor("/data", MonitorState::Nok, t, t + 5));
        }
        assert_eq!(store.queries().snapshot().since(&before).total(), 0, "nothing is written before the flush");
        store.flush().await;
        let d = store.queries().snapshot().since(&before);
        assert_eq!(
            d.by_name,
            [("UpdateMemoryResourceMonitor", 1), ("UpdateVolumeResourceMonitor", 1)].into(),
            "one statement per kind for three agents: {d:?}"
        );
        assert_eq!((d.begins, d.commits), (1, 1), "{d:?}");
        let s = store.batcher_stats().monitors;
        let (enqueued, superseded, written) =
            (s.enqueued - batcher_before.enqueued, s.superseded - batcher_before.superseded, s.items_flushed);
        assert_eq!((enqueued, superseded, written, s.flushes - batcher_before.flushes), (21, 12, 9, 1), "{s:?}");

        for (i, scope) in scopes.iter().enumerate() {
            let t = 100 * (i as i64 + 1);
            let m = scope.memory_monitor().await.unwrap().unwrap();
            assert_eq!((m.state.as_str(), m.updated_at, m.debounced_until), ("OK", t + 2, t + 1002));
            let v: Vec<(String, String, i64, i64)> = scope
                .volume_monitors()
                .await
                .unwrap()
                .into_iter()
                .map(|v| (v.path, v.state, v.updated_at, v.debounced_until))
                .collect();
            let want = [("/data", "NOK", t, t + 5), ("/home", "OK", t + 2, 0)]
                .map(|(p, s, u, d)| (p.to_owned(), s.to_owned(), u, d));
            assert_eq!(v, want);
        }
        let theirs = store.agent(&untouched.agent).memory_monitor().await.unwrap().unwrap();
        assert_eq!((theirs.state.as_str(), theirs.debounced_until), ("OK", 0));

        // Pending states are written at shutdown.
        assert!(scopes[0].enqueue_memory_monitor(MonitorState::Nok, 900, 901));
        store.shutdown().await;
        let m = scopes[0].memory_monitor().await.unwrap().unwrap();
        assert_eq!((m.state.as_str(), m.updated_at, m.debounced_until), ("NOK", 900, 901));
    }

    pub async fn context_state(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let f = fixture(&env.store, "rosa").await;
        let scope = env.store.agent(&f.agent);
        let res = |s: &str| ContextResource {
            source: s.into(),
            body_kind: "file".into(),
            body: "{}".into(),
            content_hash: "h".into(),
            size_bytes: 2,
            status: "ok".into(),
            error: String::new(),
            source_path: String::new(),
        };
        let st = |version, initial, r: Vec<ContextResource>| ContextState {
            version,
            initial,
            aggregate_hash: "a".into(),
            snapshot_error: String::new(),
            resources: r,
        };
        assert!(scope.push_context_state(&st(2, true, vec![res("a"), res("b")])).await.unwrap());
        assert!(!scope.push_context_state(&st(2, false, vec![res("a")])).await.unwrap());
        assert!(!scope.push_context_state(&st(1, false, vec![])).await.unwrap());
        let before = env.store.queries().snapshot();
        assert!(scope.push_context_state(&st(3, false, vec![res("b")])).await.unwrap());
        let d = env.store.queries().snapshot().since(&before);
        assert_eq!((d.begins, d.commits), (1, 1));
        assert_eq!(d.get("DeleteStaleWorkspaceAgentContextResources"), 1);
    }

    pub async fn scoped_read_backs_and_pre_provisioned_sub_agent(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let store = &env.store;
        let f = fixture(store, "tara").await;
        let other = second_agent(store, &f, "other").await;
        let (mine, theirs) = (store.agent(&f.agent), store.agent(&other));

        // Logs: only mine, after the given id, oldest first, as stored (cut, levels, source).
        let src = Uuid::new_v4();
        let line = |l: &str, s: &str| LogLine { level: l.parse().expect("a log level"), output: s.into() };
        mine.insert_logs(src, &[line("warn", "a"), line("error", &"é".repeat(1100))]).await.unwrap();
        theirs.insert_logs(src, &[line("info", "theirs")]).await.unwrap();
        let logs = mine.logs_after(0).await.unwrap();
        assert_eq!(logs.len(), 2);
        assert_eq!((logs[0].level.as_str(), logs[0].output.as_str(), logs[0].log_source_id), ("warn", "a", src));
        assert_eq!(logs[1].output.chars().count(), 1024);
        assert_eq!(mine.logs_after(logs[0].id).await.unwrap().len(), 1);

        // Script timings: only my scripts'.
        let admin = store.admin();
        let my_script =
            admin.add_script(f.agent.id, &NewScript { script: "x".into(), ..Default::default() }).await.unwrap();
        let their_script =
            admin.add_script(other.id, &NewScript { script: "y".into(), ..Default::default() }).await.unwrap();
        let t = |script_id| ScriptTiming {
            script_id,
            started_at: 1,
            ended_at: 2,
            exit_code: 3,
            stage: "cron".into(),
            status: "timed_out".into(),
        };
        assert!(mine.insert_script_timing(&t(my_script)).await.unwrap());
        assert!(theirs.insert_script_timing(&t(their_script)).await.unwrap());
        assert_eq!(mine.script_timings().await.unwrap(), vec![t(my_script)]);

        // Connection logs: by workspace and agent name.
        let conn = Uuid::new_v4();
        let ev = ConnectionEvent {
            connection_id: conn,
            time: 10,
            connect: false,
            kind: "vscode".into(),
            code: Some(7),
            ip: Some("localhost".into()),
            disconnect_reason: Some("bye".into()),
        };
        mine.insert_connection_log(&ev).await.unwrap();
        theirs.insert_connection_log(&ConnectionEvent { connection_id: Uuid::new_v4(), ..ev.clone() }).await.unwrap();
        let rows = mine.connection_logs().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].connection_id, Some(conn));
        assert_eq!(
            (rows[0].kind.as_str(), rows[0].code, rows[0].ip.as_deref()),
            ("vscode", Some(7), Some("127.0.0.1"))
        );
        assert_eq!((rows[0].disconnect_time, rows[0].disconnect_reason.as_deref()), (Some(10), Some("bye")));

        // Pre-provisioned sub-agent: only my live child is updated; an empty directory keeps it.
        let child = mine
            .create_sub_agent(&NewSubAgent { name: "dev".into(), directory: "/ws".into(), ..Default::default() })
            .await
            .unwrap();
        let their_child =
            theirs.create_sub_agent(&NewSubAgent { name: "dev".into(), ..Default::default() }).await.unwrap();
        let before = store.queries().snapshot();
        let got = mine.update_sub_agent(child.id, &["web_terminal".into()], "").await.unwrap();
        assert_eq!(got, Some(child.clone()));
        assert_eq!(store.queries().snapshot().since(&before).total(), 1);
        let resolved = store.resolve_agent_by_token(&child.auth_token.to_string()).await.unwrap().unwrap();
        assert_eq!((resolved.directory.as_str(), resolved.display_apps.as_str()), ("/ws", r#"["web_terminal"]"#));
        mine.update_sub_agent(child.id, &[], "/new").await.unwrap();
        let resolved = store.resolve_agent_by_token(&child.auth_token.to_string()).await.unwrap().unwrap();
        assert_eq!(resolved.directory, "/new");
        assert!(mine.update_sub_agent(their_child.id, &[], "/x").await.unwrap().is_none());
        assert!(mine.update_sub_agent(other.id, &[], "/x").await.unwrap().is_none());
        let resolved = store.resolve_agent_by_token(&their_child.auth_token.to_string()).await.unwrap().unwrap();
        assert_eq!(resolved.directory, "");
        assert!(mine.delete_sub_agent(child.id).await.unwrap());
        assert!(mine.update_sub_agent(child.id, &[], "/x").await.unwrap().is_none());
    }

    /// The settings servers serve from memory are announced when written, by key; the legacy service banner,
    /// which nothing serves, is not.
    pub async fn site_configs(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let store = &env.store;
        let mut announced = store.pubsub().subscribe(agentwire_store::pubsub::SITE_CONFIG_CHANNEL).await.unwrap();
        assert!(store.derp_map().await.unwrap().is_none());
        store.admin().set_derp_map(r#"{"Regions":{}}"#).await.unwrap();
        store.admin().set_derp_map(r#"{"Regions":{"1":{}}}"#).await.unwrap();
        assert_eq!(store.derp_map().await.unwrap().as_deref(), Some(r#"{"Regions":{"1":{}}}"#));
        store
            .admin()
            .set_announcement_banners(r##"[{"enabled":true,"message":"hi","background_color":"#fff"}]"##)
            .await
            .unwrap();
        assert!(store.announcement_banners().await.unwrap().unwrap().contains("hi"));
        store.admin().set_service_banner(r#"{"enabled":false}"#).await.unwrap();
        assert_eq!(store.service_banner().await.unwrap().as_deref(), Some(r#"{"enabled":false}"#));
        store.admin().set_derp_map(r#"{"Regions":{}}"#).await.unwrap();
        let mut keys = Vec::new();
        for _ in 0..4 {
            keys.push(tokio::time::timeout(Duration::from_secs(10), announced.recv()).await.unwrap().unwrap());
        }
        assert_eq!(
            keys,
            [SITE_CONFIG_DERP_MAP, SITE_CONFIG_DERP_MAP, SITE_CONFIG_ANNOUNCEMENT_BANNERS, SITE_CONFIG_DERP_MAP]
        );
    }

    pub async fn app_status(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let f = fixture(&env.store, "sam").await;
        let app =
            env.store.admin().add_app(f.agent.id, &NewApp { slug: "ai".into(), ..Default::default() }).await.unwrap();
        let scope = env.store.agent(&f.agent);
        let a = scope.insert_app_status("ai", "working", "thinking", None).await.unwrap().unwrap();
        assert_eq!(a.app_id, app);
        assert_eq!(a.previous_state, None);
        let b = scope.insert_app_status("ai", "idle", "done", Some("https://x")).await.unwrap().unwrap();
        assert_eq!(b.previous_state.as_deref(), Some("working"));
        assert!(scope.insert_app_status("ai", "exploded", "", None).await.is_err());
    }

    pub async fn pubsub_roundtrip(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let ps = env.store.pubsub();
        let mut a = ps.subscribe("agent-logs:x").await.unwrap();
        let mut b = ps.subscribe("agent-logs:x").await.unwrap();
        let mut other = ps.subscribe("workspace_owner:y").await.unwrap();
        ps.publish("agent-logs:x", r#"{"created_after":4}"#).await.unwrap();
        for s in [&mut a, &mut b] {
            let m = tokio::time::timeout(Duration::from_secs(10), s.recv()).await.unwrap().unwrap();
            assert_eq!(m, r#"{"created_after":4}"#);
        }
        assert!(other.try_recv().is_none());
        assert_eq!(env.store.queries().snapshot().notifications, 1);
    }

    pub async fn api_keys_resolve_their_user_once(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let admin = env.store.admin();
        let user = admin.create_user("kim", "kim@example.com").await.unwrap();
        let token = admin.create_api_key(user, Duration::from_secs(3600)).await.unwrap();
        // Coder's shape: a 10-character id, a dash, a 22-character secret.
        let (key_id, secret) = token.split_once('-').unwrap();
        assert_eq!((key_id.len(), secret.len()), (10, 22), "{token}");
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        assert_ne!(admin.create_api_key(user, Duration::from_secs(3600)).await.unwrap(), token);

        let before = env.store.queries().snapshot();
        assert_eq!(env.store.user_by_api_key(&token).await.unwrap(), Some(user));
        let d = env.store.queries().snapshot().since(&before);
        assert_eq!(d.total(), 1, "{d:?}");
        assert_eq!(d.get("GetAPIKeyByID"), 1);

        // A wrong secret under a real id: refused (the hash is compared, not the token).
        let wrong = format!("{key_id}-{}", "A".repeat(22));
        assert_eq!(env.store.user_by_api_key(&wrong).await.unwrap(), None);
        // Malformed tokens run no query.
        let before = env.store.queries().snapshot();
        for bad in ["", "nope", &format!("{key_id}{secret}"), &format!("{key_id}-{secret}x"), "abc-def"] {
            assert_eq!(env.store.user_by_api_key(bad).await.unwrap(), None, "{bad:?}");
        }
        assert_eq!(env.store.queries().snapshot().since(&before).total(), 0);
        // An agent token is not an API key.
        let f = fixture(&env.store, "lee").await;
        assert_eq!(env.store.user_by_api_key(&f.created.auth_token.to_string()).await.unwrap(), None);

        // Expired keys are refused.
        let expired = admin.create_api_key(user, Duration::ZERO).await.unwrap();
        assert_eq!(env.store.user_by_api_key(&expired).await.unwrap(), None);
        let short = admin.create_api_key(user, Duration::from_millis(200)).await.unwrap();
        assert_eq!(env.store.user_by_api_key(&short).await.unwrap(), Some(user));
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(env.store.user_by_api_key(&short).await.unwrap(), None);
    }

    pub async fn agent_metadata_for_user_checks_ownership(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let f = fixture(&env.store, "owner").await;
        let admin = env.store.admin();
        let other_user = admin.create_user("stranger", "s@example.com").await.unwrap();

        // An owned agent without metadata: an empty list, not "not found".
        let before = env.store.queries().snapshot();
        assert_eq!(env.store.agent_metadata_for_user(f.owner_id, f.agent.id).await.unwrap(), Some(vec![]));
        let d = env.store.queries().snapshot().since(&before);
        assert_eq!(d.total(), 1, "{d:?}");
        assert_eq!(d.get("GetWorkspaceAgentMetadataForOwner"), 1);

        for (key, order) in [("mem", 1), ("cpu", 1), ("disk", 0)] {
            let m = NewMetadata {
                key: key.into(),
                display_name: key.to_uppercase(),
                script: format!("echo {key}"),
                interval: 10_000_000_000,
                timeout: 1_000_000_000,
                display_order: order,
            };
            admin.add_metadata_description(f.agent.id, &m).await.unwrap();
        }
        let scope = env.store.agent(&f.agent);
        scope.enqueue_metadata(&[MetadataUpdate { key: "cpu".into(), value: "12%".into(), error: String::new() }]);
        env.store.flush().await;

        let before = env.store.queries().snapshot();
        let got = env.store.agent_metadata_for_user(f.owner_id, f.agent.id).await.unwrap().unwrap();
        assert_eq!(env.store.queries().snapshot().since(&before).total(), 1);
        assert_eq!(got, scope.list_metadata().await.unwrap(), "the same rows as the agent's own read");
        assert_eq!(got.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(), ["disk", "cpu", "mem"]);
        let cpu = &got[1];
        assert_eq!((cpu.value.as_str(), cpu.display_name.as_str(), cpu.interval), ("12%", "CPU", 10_000_000_000));
        assert!(cpu.collected_at > 0);

        // Someone else's agent, and an unknown one, are not found.
        assert_eq!(env.store.agent_metadata_for_user(other_user, f.agent.id).await.unwrap(), None);
        assert_eq!(env.store.agent_metadata_for_user(f.owner_id, Uuid::new_v4()).await.unwrap(), None);
        // Another user's workspace in the same deployment does not leak into the owner's view.
        let g = fixture(&env.store, "neighbour").await;
        assert_eq!(env.store.agent_metadata_for_user(f.owner_id, g.agent.id).await.unwrap(), None);
        assert_eq!(env.store.agent_metadata_for_user(g.owner_id, g.agent.id).await.unwrap(), Some(vec![]));
        // A deleted workspace's agent is gone.
        admin.delete_workspace(f.build.workspace_id).await.unwrap();
        assert_eq!(env.store.agent_metadata_for_user(f.owner_id, f.agent.id).await.unwrap(), None);
    }
}

/// Wait until `cond` holds, polling; fails after 30 s. Used for counted events that happen on
/// a batcher task, not to measure time.
async fn wait_for(cond: impl Fn() -> bool) {
    for _ in 0..3000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached");
}

/// Two "replicas" (two stores on the same PostgreSQL database): a notification published
/// through one reaches a listener on the other's LISTEN connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notification_crosses_replicas() {
    let url = common::fresh_pg_url().await;
    let a = Store::open(&url, quiet_options()).await.unwrap();
    let b = Store::open(&url, quiet_options()).await.unwrap();
    let mut sub = b.pubsub().subscribe("workspace_owner:abc").await.unwrap();
    a.pubsub().publish("workspace_owner:abc", r#"{"kind":"agt_lifecycle_update"}"#).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await.unwrap().unwrap();
    assert_eq!(got, r#"{"kind":"agt_lifecycle_update"}"#);
    assert_eq!(a.queries().get("pg_notify"), 1);

    // And the metadata batcher of replica A notifies replica B.
    let f = fixture(&a, "zoe").await;
    a.admin()
        .add_metadata_description(f.agent.id, &NewMetadata { key: "k".into(), ..Default::default() })
        .await
        .unwrap();
    let mut msub = b.pubsub().subscribe(METADATA_BATCH_CHANNEL).await.unwrap();
    a.agent(&f.agent).enqueue_metadata(&[MetadataUpdate { key: "k".into(), value: "v".into(), error: String::new() }]);
    a.flush().await;
    let got = tokio::time::timeout(Duration::from_secs(10), msub.recv()).await.unwrap().unwrap();
    assert_eq!(decode_metadata_batch_payload(&got).unwrap(), vec![f.agent.id]);
    a.close().await;
    b.close().await;
}

/// Its LISTEN connection terminated, the pubsub listens again on another and counts a reconnect only then: a message
/// published once the count has moved is delivered, which is what a subscriber that reads its state again on a
/// reconnect relies on to miss nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_listener_counts_a_reconnect_once_it_listens_again() {
    use sqlx::Connection;
    let url = common::fresh_pg_url().await;
    let store = Store::open(&url, quiet_options()).await.unwrap();
    let ps = store.pubsub();
    let mut sub = ps.subscribe("agent-logs:again").await.unwrap();
    assert_eq!(ps.reconnects(), 0);
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN %'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(terminated, vec![true], "the one LISTEN connection");
    wait_for(|| ps.reconnects() == 1).await;
    ps.publish("agent-logs:again", "after").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await.unwrap().unwrap();
    assert_eq!(got, "after");
    store.close().await;
}

/// `sqlite::memory:` (one never-recycled connection for reads and writes) works end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_memory_store_works() {
    let store = Store::open("sqlite::memory:", quiet_options()).await.unwrap();
    assert_eq!(store.engine(), Engine::Sqlite);
    let f = fixture(&store, "mem").await;
    let scope = store.agent(&f.agent);
    scope.update_lifecycle(LifecycleState::Ready, 1).await.unwrap();
    scope.enqueue_stats(StatsReport::default());
    store.flush().await;
    assert_eq!(store.batcher_stats().stats.items_flushed, 1);
    assert_eq!(scope.state().await.unwrap().unwrap().lifecycle_state, "ready");
    assert!(matches!(Store::open("mysql://x", StoreOptions::default()).await, Err(StoreError::UnsupportedUrl(_))));
    assert!(matches!(
        Store::open("sqlite::memory:", StoreOptions { max_logs_length: 2 << 20, ..StoreOptions::default() }).await,
        Err(StoreError::Options(_))
    ));
}
