//! The metrics snapshotter against generated history, on SQLite and on PostgreSQL: every snapshot equals a
//! straightforward recomputation from the generated rows. Then the HTTP endpoints over a running server.
//!
//! PostgreSQL comes from `AGENTWIRE_TEST_PG_URL` or `DATABASE_URL` (`scripts/with-postgres.sh cargo test --test
//! metrics_cache`); without one the PostgreSQL test fails, it is never skipped. Each test gets a fresh database.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use agentwire::metrics_cache::demo::{generate, DemoSpec};
use agentwire::metrics_cache::{
    BuildTimeStats, DauEntry, MetricsCache, MetricsCacheConfig, TransitionStats, DEFAULT_BUILD_TIME_SAMPLE,
    SNAPSHOT_DEPLOYMENT_STATS, SNAPSHOT_TEMPLATES,
};
use agentwire_store::aggregates::DemoHistory;
use agentwire_store::{now_micros, Store, StoreOptions};
use agentwire_transport::testing::wait::eventually;
use common::pg::fresh_pg_url;

use uuid::Uuid;

const DAY: i64 = 86_400_000_000;
const HOUR: i64 = 3_600_000_000;

fn pct_disc(sorted: &[i64], f: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let k = ((f * sorted.len() as f64).ceil() as usize).max(1);
    Some(sorted[k - 1])
}

fn pct_cont(sorted: &[f64], f: f64) -> f64 {
    if sorted.is_empty() {
        return -1.0;
    }
    let pos = f * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - pos.floor())
}

/// Days with users from (day, user) pairs, empty days filled between the first and the last.
fn series(pairs: impl Iterator<Item = (i64, Uuid)>) -> Vec<DauEntry> {
    let set: BTreeSet<(i64, Uuid)> = pairs.collect();
    let mut counts: BTreeMap<i64, i64> = BTreeMap::new();
    for (d, _) in set {
        *counts.entry(d).or_default() += 1;
    }
    let (Some(first), Some(last)) = (counts.keys().next().copied(), counts.keys().last().copied()) else {
        return Vec::new();
    };
    (first..=last).map(|day| DauEntry { day, amount: counts.get(&day).copied().unwrap_or(0) }).collect()
}

fn ms(v: Option<i64>) -> Option<i64> {
    v.filter(|m| *m > 0).map(|m| m / 1000)
}

async fn check_against_recomputation(store: Store) {
    let spec = DemoSpec { workspaces: 400, days: 6, stats_per_workspace_day: 6, seed: 42, now: now_micros() };
    let h: DemoHistory = generate(&spec).unwrap();
    store.insert_demo_history("default", &h).await.unwrap();
    let config = MetricsCacheConfig::default();
    let cache = MetricsCache::new(config.clone());
    cache.refresh_templates(&store).await.unwrap();
    cache.refresh_deployment_stats(&store).await.unwrap();
    let snap = cache.templates_snapshot().unwrap();
    let stats = cache.deployment_stats().unwrap();

    let live_templates: Vec<Uuid> = h.templates.iter().filter(|t| !t.deleted).map(|t| t.id).collect();
    let connected: Vec<_> = h.stats.iter().filter(|s| s.connection_count > 0).collect();
    // Deployment DAUs, every offset.
    assert_eq!(snap.deployment_daus.len(), 25);
    for (&offset, got) in &snap.deployment_daus {
        let want =
            series(connected.iter().map(|s| ((s.created_at + i64::from(offset) * HOUR).div_euclid(DAY), s.user_id)));
        assert_eq!(got.tz_hour_offset, offset);
        assert_eq!(got.entries, want, "deployment DAUs at offset {offset}");
    }
    // Template DAUs (offset 0) and unique users, live templates only.
    let per_template = &snap.template_daus[&0];
    assert_eq!(per_template.len(), live_templates.len());
    for t in &live_templates {
        let rows: Vec<_> = connected.iter().filter(|s| s.template_id == *t).collect();
        assert_eq!(per_template[t].entries, series(rows.iter().map(|s| (s.created_at.div_euclid(DAY), s.user_id))));
        let users: BTreeSet<Uuid> = rows.iter().map(|s| s.user_id).collect();
        assert_eq!(snap.unique_users[t], users.len() as i64, "unique users of {t}");
        assert!(!users.is_empty(), "the generated data gives every template users");
    }
    // Template DAUs at another offset need every activity row (the default reads what the database folded): the
    // same snapshot either way, plus the extra offset.
    let rows_config = MetricsCacheConfig { template_tz_offsets: vec![0, 3], ..MetricsCacheConfig::default() };
    let from_rows = MetricsCache::new(rows_config);
    from_rows.refresh_templates(&store).await.unwrap();
    let rows_snap = from_rows.templates_snapshot().unwrap();
    assert_eq!(rows_snap.deployment_daus, snap.deployment_daus, "deployment DAUs from rows and from the fold");
    assert_eq!(rows_snap.template_daus[&0], snap.template_daus[&0], "template DAUs from rows and from the fold");
    assert_eq!(rows_snap.unique_users, snap.unique_users);
    for t in &live_templates {
        let rows = connected.iter().filter(|s| s.template_id == *t);
        let want = series(rows.map(|s| ((s.created_at + 3 * HOUR).div_euclid(DAY), s.user_id)));
        assert_eq!(rows_snap.template_daus[&3][t].entries, want, "template DAUs of {t} at offset 3");
    }
    // Build times.
    let version_template: HashMap<Uuid, (Uuid, bool)> =
        h.templates.iter().map(|t| (t.version_id, (t.id, t.deleted))).collect();
    let since = now_micros() - 30 * DAY;
    for t in &live_templates {
        let mut builds: Vec<_> = h
            .builds
            .iter()
            .filter(|b| version_template[&b.version_id] == (*t, false))
            .filter(|b| b.started_at.is_some_and(|s| s > since) && b.completed_at.is_some() && b.canceled_at.is_none())
            .filter(|b| b.error.as_deref().unwrap_or("").is_empty())
            .collect();
        builds.sort_by_key(|b| std::cmp::Reverse((b.created_at, b.id)));
        builds.truncate(DEFAULT_BUILD_TIME_SAMPLE as usize);
        let stat = |tr: &str| {
            let mut d: Vec<i64> = builds
                .iter()
                .filter(|b| b.transition == tr)
                .map(|b| b.completed_at.unwrap() - b.started_at.unwrap())
                .collect();
            d.sort();
            TransitionStats { p50: ms(pct_disc(&d, 0.5)), p95: ms(pct_disc(&d, 0.95)) }
        };
        let want = BuildTimeStats { start: stat("start"), stop: stat("stop"), delete: stat("delete") };
        assert_eq!(snap.build_times[t], want, "build times of {t}");
        assert!(want.start.p50.is_some());
    }
    // Deployment stats: the window the snapshot says it aggregated.
    let recent: Vec<_> = h.stats.iter().filter(|s| s.created_at > stats.aggregated_from).collect();
    assert!(!recent.is_empty(), "the generated history reaches into the window");
    assert_eq!(stats.rx_bytes, recent.iter().map(|s| s.rx_bytes).sum::<i64>());
    assert_eq!(stats.tx_bytes, recent.iter().map(|s| s.tx_bytes).sum::<i64>());
    let mut latest: HashMap<Uuid, &agentwire_store::aggregates::DemoStat> = HashMap::new();
    for s in &recent {
        let e = latest.entry(s.agent_id).or_insert(s);
        if (s.created_at, s.id) > (e.created_at, e.id) {
            *e = s;
        }
    }
    assert_eq!(stats.session_count_vscode, latest.values().map(|s| s.session_count_vscode).sum::<i64>());
    assert_eq!(stats.session_count_ssh, latest.values().map(|s| s.session_count_ssh).sum::<i64>());
    assert_eq!(stats.session_count_jetbrains, latest.values().map(|s| s.session_count_jetbrains).sum::<i64>());
    assert_eq!(
        stats.session_count_reconnecting_pty,
        latest.values().map(|s| s.session_count_reconnecting_pty).sum::<i64>()
    );
    let mut lat: Vec<f64> = recent.iter().map(|s| s.connection_median_latency_ms).filter(|l| *l > 0.0).collect();
    lat.sort_by(f64::total_cmp);
    assert!((stats.latency_p50_ms - pct_cont(&lat, 0.5)).abs() < 1e-9);
    assert!((stats.latency_p95_ms - pct_cont(&lat, 0.95)).abs() < 1e-9);
    // Workspaces by their latest build.
    let now = stats.collected_at;
    let (mut pending, mut building, mut running, mut failed, mut stopped) = (0, 0, 0, 0, 0);
    for w in h.workspaces.iter().filter(|w| !w.deleted) {
        let b = h.builds.iter().filter(|b| b.workspace_id == w.id).max_by_key(|b| b.build_number).unwrap();
        let err = b.error.is_some();
        if b.started_at.is_none() {
            pending += 1;
        }
        if b.started_at.is_some()
            && b.canceled_at.is_none()
            && b.completed_at.is_none()
            && b.job_updated_at > now - 30_000_000
        {
            building += 1;
        }
        if b.completed_at.is_some() && b.canceled_at.is_none() && !err {
            match b.transition {
                "start" => running += 1,
                "stop" => stopped += 1,
                _ => {}
            }
        }
        if err && (b.canceled_at.is_some() || b.completed_at.is_some()) {
            failed += 1;
        }
    }
    let w = stats.workspaces;
    assert_eq!((w.pending, w.building, w.running, w.failed, w.stopped), (pending, building, running, failed, stopped));
    assert!(pending > 0 && building > 0 && running > 0 && failed > 0 && stopped > 0, "{w:?}");
}

#[tokio::test]
async fn snapshots_equal_a_recomputation_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("aw-mc-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("store.db").display());
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    check_against_recomputation(store.clone()).await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn snapshots_equal_a_recomputation_on_postgres() {
    let store = Store::open(&fresh_pg_url().await, StoreOptions::default()).await.unwrap();
    check_against_recomputation(store.clone()).await;
    store.close().await;
}

/// Waits until both snapshots are filled; fails the test if they are not within the kit's bound.
async fn until_both_snapshots(state: &agentwire::server::AppState) {
    let cache = state.metrics_cache();
    eventually("both metrics snapshots to be filled", || {
        cache.deployment_stats().is_some() && cache.templates_snapshot().is_some()
    })
    .await;
}

/// GET `path` and parse the JSON body: (status, body).
async fn get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("Coder-Session-Token: {t}\r\n")).unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn http_endpoints_answer_as_coderd() {
    let store = Store::open("sqlite::memory:", StoreOptions::default()).await.unwrap();
    let spec = DemoSpec { workspaces: 50, days: 3, stats_per_workspace_day: 4, seed: 7, now: now_micros() };
    let h = generate(&spec).unwrap();
    store.insert_demo_history("default", &h).await.unwrap();
    let admin = store.admin();
    let user = admin.create_user("watcher", "watcher@example.com").await.unwrap();
    let token = admin.create_api_key(user, std::time::Duration::from_secs(3600)).await.unwrap();
    let state = agentwire::server::AppState::new(store.clone(), agentwire::server::ServeConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(agentwire::http::serve(listener, state.clone(), state.shutdown_token().clone()));

    for path in ["/api/v2/insights/daus", "/api/v2/deployment/stats"] {
        let (status, body) = get(addr, path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(get(addr, path, Some("bogus")).await.0, 401);
    }
    // The first refresh runs at start; wait for both snapshots.
    until_both_snapshots(&state).await;
    let (status, body) = get(addr, "/api/v2/insights/daus?tz_offset=-3", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tz_hour_offset"], -3);
    let entries = body["entries"].as_array().unwrap();
    assert!(!entries.is_empty());
    assert_eq!(entries[0]["date"].as_str().unwrap().len(), 10, "YYYY-MM-DD: {body}");
    assert_eq!(get(addr, "/api/v2/insights/daus?tz_offset=x", Some(&token)).await.0, 400);

    let (status, body) = get(addr, "/api/v2/deployment/stats", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["workspaces"]["connection_latency_ms"]["P50"].is_number());
    assert!(body["session_count"]["vscode"].is_number());
    assert!(body["next_update_at"].as_str().unwrap().ends_with('Z'));

    let t = h.templates.iter().find(|t| !t.deleted).unwrap();
    let (status, body) = get(addr, &format!("/api/v2/templates/{}", t.id), Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["active_user_count"].as_i64().unwrap() > 0, "{body}");
    assert!(body["build_time_stats"]["start"]["P50"].is_number(), "{body}");
    let (status, body) = get(addr, &format!("/api/v2/templates/{}/daus", t.id), Some(&token)).await;
    assert_eq!((status, body["tz_hour_offset"].as_i64()), (200, Some(0)));
    assert_eq!(get(addr, &format!("/api/v2/templates/{}", Uuid::new_v4()), Some(&token)).await.0, 404);
    assert_eq!(get(addr, "/api/v2/templates/nope", Some(&token)).await.0, 400);

    let text = state.metrics().render(state.store());
    assert!(text.contains("agentwire_metrics_cache_snapshot_age_seconds{snapshot=\"templates\"}"), "{text}");
    assert!(text.contains("agentwire_metrics_cache_refresh_failures_total{snapshot=\"deployment_stats\"} 0"));
    state.shutdown().await;
}

/// Before the first successful refresh every endpoint answers as coderd does while its cache is empty (no made-up
/// zeros), failures are counted and retried with back-off, and the answers fill in once a refresh succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_answer_not_ready_until_a_refresh_succeeds() {
    use sqlx::Connection;
    let dir = std::env::temp_dir().join(format!("aw-mc-notready-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("db.sqlite").display());
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    let spec = DemoSpec { workspaces: 20, days: 2, stats_per_workspace_day: 2, seed: 3, now: now_micros() };
    let h = generate(&spec).unwrap();
    store.insert_demo_history("default", &h).await.unwrap();
    let admin = store.admin();
    let user = admin.create_user("early", "early@example.com").await.unwrap();
    let token = admin.create_api_key(user, std::time::Duration::from_secs(3600)).await.unwrap();

    // Hide the tables both refreshes read: every refresh fails until they come back.
    let mut side = sqlx::SqliteConnection::connect(&url).await.unwrap();
    for (from, to) in [("template_user_activity_days", "hidden_activity"), ("workspace_agent_stats", "hidden_stats")] {
        sqlx::query(sqlx::AssertSqlSafe(format!("ALTER TABLE {from} RENAME TO {to}")))
            .execute(&mut side)
            .await
            .unwrap();
    }
    let state = agentwire::server::AppState::new(store.clone(), agentwire::server::ServeConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(agentwire::http::serve(listener, state.clone(), state.shutdown_token().clone()));
    let failures = |s: &agentwire::server::AppState| {
        let count = |name| s.metrics_cache().refresh_stats(name).map(|r| r.failures()).unwrap_or(0);
        (count(SNAPSHOT_TEMPLATES), count(SNAPSHOT_DEPLOYMENT_STATS))
    };
    eventually("two failed refreshes of each snapshot", || failures(&state).0 >= 2 && failures(&state).1 >= 2).await;
    let (template_failures, deployment_failures) = failures(&state);
    assert!(template_failures >= 2 && deployment_failures >= 2, "failed refreshes are retried and counted");
    assert!(state.metrics_cache().templates_snapshot().is_none() && state.metrics_cache().deployment_stats().is_none());

    let (status, body) = get(addr, "/api/v2/insights/daus?tz_offset=2", Some(&token)).await;
    assert_eq!((status, body.clone()), (200, serde_json::json!({"entries": [], "tz_hour_offset": 0})), "{body}");
    let (status, body) = get(addr, "/api/v2/deployment/stats", Some(&token)).await;
    assert_eq!((status, body["message"].as_str()), (400, Some("Deployment stats are still processing!")), "{body}");
    let t = h.templates.iter().find(|t| !t.deleted).unwrap();
    let (status, body) = get(addr, &format!("/api/v2/templates/{}", t.id), Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active_user_count"], -1, "unknown, not zero: {body}");
    assert!(body["build_time_stats"]["start"]["P50"].is_null(), "{body}");
    let (status, body) = get(addr, &format!("/api/v2/templates/{}/daus", t.id), Some(&token)).await;
    assert_eq!((status, body["entries"].as_array().map(Vec::len)), (200, Some(0)), "{body}");
    let text = state.metrics().render(state.store());
    let exported: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("agentwire_metrics_cache_refresh_failures_total{snapshot=\"templates\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no template failure counter in {text}"));
    assert!(exported >= template_failures, "Prometheus shows the failures: {exported} < {template_failures}");

    // The tables return: the next retry fills both snapshots, and the answers are real.
    for (from, to) in [("hidden_activity", "template_user_activity_days"), ("hidden_stats", "workspace_agent_stats")] {
        sqlx::query(sqlx::AssertSqlSafe(format!("ALTER TABLE {from} RENAME TO {to}")))
            .execute(&mut side)
            .await
            .unwrap();
    }
    side.close().await.unwrap();
    until_both_snapshots(&state).await;
    let (status, body) = get(addr, "/api/v2/deployment/stats", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(addr, &format!("/api/v2/templates/{}", t.id), Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["active_user_count"].as_i64().unwrap() > 0, "{body}");
    let (_, body) = get(addr, "/api/v2/insights/daus?tz_offset=2", Some(&token)).await;
    assert_eq!(body["tz_hour_offset"], 2, "{body}");
    assert!(!body["entries"].as_array().unwrap().is_empty(), "{body}");
    state.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
