//! The metrics snapshotter's reads on a Coder v2.30 database seeded by Coder's own code: each against values worked
//! out by hand from the seed and from rows added as coderd writes them (builds and their provisioner jobs,
//! `workspace_agent_stats` from the stats batcher, `template_usage_stats` from dbrollup), and, where coderd has a
//! query with the same meaning, against that query's own text run on the same rows.
//!
//! Run with `scripts/with-postgres.sh cargo test -p agentwire-store --test coder_aggregates`.

#[path = "../../tests/common/coderdb.rs"]
mod coderdb;

use agentwire_store::aggregates::*;
use agentwire_store::*;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// A UTC day far enough back that nothing else on the database falls on it: 2025-01-15.
const DAY: i64 = 20_103;
const DAY_MICROS: i64 = 86_400_000_000;
const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;

fn at(day: i64, hours: i64, minutes: i64) -> i64 {
    day * DAY_MICROS + hours * HOUR + minutes * MINUTE
}

/// The deployment `interop coderdb seed` made with Coder's own code (organization, owner, template `docker` with
/// workspaces `dev` and `superseded` and a deleted one, their builds completed by dbfake), plus a connection for
/// adding the rows each test needs as coderd writes them.
struct Deployment {
    url: String,
    conn: PgConnection,
    org: Uuid,
    owner: Uuid,
    /// The seed's template and its active version.
    template: Uuid,
    version: Uuid,
}

async fn deployment() -> Deployment {
    let db = coderdb::fresh_coder_db().await;
    let id = |v: &serde_json::Value| Uuid::parse_str(v.as_str().unwrap_or_default()).unwrap();
    let seed = &db.seed;
    let conn = PgConnection::connect(&db.url).await.unwrap();
    Deployment {
        org: id(&seed["organization"]["id"]),
        owner: id(&seed["owner"]["id"]),
        template: id(&seed["template"]["id"]),
        version: id(&seed["template"]["active_version_id"]),
        url: db.url,
        conn,
    }
}

/// `to_timestamp` of unix µs, as the store binds times.
const TS: &str = "to_timestamp($0::float8 / 1e6)";

fn ts(n: usize) -> String {
    TS.replace("$0", &format!("${n}"))
}

/// A provisioner job's times and outcome.
#[derive(Clone, Copy, Default)]
struct Job {
    created_at: i64,
    updated_at: i64,
    started_at: Option<i64>,
    completed_at: Option<i64>,
    canceled_at: Option<i64>,
    error: Option<&'static str>,
}

impl Job {
    /// A job that ran from `start` for `secs` and completed.
    fn done(start: i64, secs: i64) -> Job {
        let end = start + secs * 1_000_000;
        Job {
            created_at: start - 1_000_000,
            updated_at: end,
            started_at: Some(start),
            completed_at: Some(end),
            ..Job::default()
        }
    }
}

impl Deployment {
    async fn user(&mut self, username: &str) -> Uuid {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO users (id, email, username, name, hashed_password, created_at, updated_at, rbac_roles, \
               login_type, status) \
             VALUES ($1::uuid, $2, $3, '', '\\x'::bytea, now(), now(), '{}', 'password', 'active')",
        )
        .bind(id.to_string())
        .bind(format!("{username}@example.com"))
        .bind(username)
        .execute(&mut self.conn)
        .await
        .unwrap();
        id
    }

    async fn job(&mut self, kind: &str, j: Job) -> Uuid {
        let id = Uuid::new_v4();
        let sql = format!(
            "INSERT INTO provisioner_jobs (id, created_at, updated_at, started_at, completed_at, canceled_at, error, \
               organization_id, initiator_id, provisioner, storage_method, type, input, file_id) \
             VALUES ($1::uuid, {}, {}, {}, {}, {}, $7, $8::uuid, $9::uuid, 'terraform', 'file', \
               $10::provisioner_job_type, '{{}}', $11::uuid)",
            ts(2),
            ts(3),
            ts(4),
            ts(5),
            ts(6)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .bind(j.created_at)
            .bind(j.updated_at)
            .bind(j.started_at)
            .bind(j.completed_at)
            .bind(j.canceled_at)
            .bind(j.error)
            .bind(self.org.to_string())
            .bind(self.owner.to_string())
            .bind(kind)
            .bind(Uuid::new_v4().to_string())
            .execute(&mut self.conn)
            .await
            .unwrap();
        id
    }

    /// A template with one version (imported by a completed job), active; created at `created_at`.
    async fn template(&mut self, name: &str, display_name: &str, created_at: i64, deleted: bool) -> (Uuid, Uuid) {
        let (template, version) = (Uuid::new_v4(), Uuid::new_v4());
        let import = self.job("template_version_import", Job::done(created_at - 60_000_000, 10)).await;
        let sql = format!(
            "INSERT INTO templates (id, created_at, updated_at, organization_id, deleted, name, display_name, \
               provisioner, active_version_id, created_by) \
             VALUES ($1::uuid, {}, {}, $4::uuid, $5, $6, $7, 'terraform', $8::uuid, $9::uuid)",
            ts(2),
            ts(3)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(template.to_string())
            .bind(created_at)
            .bind(created_at + 5_000_000)
            .bind(self.org.to_string())
            .bind(deleted)
            .bind(name)
            .bind(display_name)
            .bind(version.to_string())
            .bind(self.owner.to_string())
            .execute(&mut self.conn)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO template_versions (id, template_id, organization_id, created_at, updated_at, name, readme, \
               job_id, created_by) \
             VALUES ($1::uuid, $2::uuid, $3::uuid, now(), now(), 'v1', '', $4::uuid, $5::uuid)",
        )
        .bind(version.to_string())
        .bind(template.to_string())
        .bind(self.org.to_string())
        .bind(import.to_string())
        .bind(self.owner.to_string())
        .execute(&mut self.conn)
        .await
        .unwrap();
        (template, version)
    }

    async fn workspace(&mut self, template: Uuid, name: &str, deleted: bool) -> Uuid {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO workspaces (id, created_at, updated_at, owner_id, organization_id, template_id, deleted, \
               name, automatic_updates) \
             VALUES ($1::uuid, now(), now(), $2::uuid, $3::uuid, $4::uuid, $5, $6, 'never')",
        )
        .bind(id.to_string())
        .bind(self.owner.to_string())
        .bind(self.org.to_string())
        .bind(template.to_string())
        .bind(deleted)
        .bind(name)
        .execute(&mut self.conn)
        .await
        .unwrap();
        id
    }

    /// Build `number` of `workspace` with its job; the build is created with the job.
    async fn build(&mut self, workspace: Uuid, version: Uuid, number: i32, transition: &str, j: Job) -> Uuid {
        let job = self.job("workspace_build", j).await;
        let id = Uuid::new_v4();
        let sql = format!(
            "INSERT INTO workspace_builds (id, created_at, updated_at, workspace_id, template_version_id, \
               build_number, transition, initiator_id, job_id, reason) \
             VALUES ($1::uuid, {}, {}, $3::uuid, $4::uuid, $5, $6::workspace_transition, $7::uuid, $8::uuid, \
               'initiator')",
            ts(2),
            ts(2)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .bind(j.created_at)
            .bind(workspace.to_string())
            .bind(version.to_string())
            .bind(number)
            .bind(transition)
            .bind(self.owner.to_string())
            .bind(job.to_string())
            .execute(&mut self.conn)
            .await
            .unwrap();
        id
    }

    /// One `workspace_agent_stats` row as coderd's stats batcher writes it.
    async fn agent_stats(&mut self, s: Stats) {
        let sql = format!(
            "INSERT INTO workspace_agent_stats (id, created_at, user_id, agent_id, workspace_id, template_id, \
               connections_by_proto, connection_count, rx_packets, rx_bytes, tx_packets, tx_bytes, \
               connection_median_latency_ms, session_count_vscode, session_count_jetbrains, \
               session_count_reconnecting_pty, session_count_ssh, usage) \
             VALUES (gen_random_uuid(), {}, $2::uuid, $3::uuid, $4::uuid, $5::uuid, '{{\"tcp\": 1}}', $6, 10, $7, \
               10, $8, $9, $10, $11, $12, $13, false)",
            ts(1)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(s.at)
            .bind(self.owner.to_string())
            .bind(s.agent.to_string())
            .bind(Uuid::new_v4().to_string())
            .bind(Uuid::new_v4().to_string())
            .bind(s.connections)
            .bind(s.rx)
            .bind(s.tx)
            .bind(s.latency)
            .bind(s.sessions[0])
            .bind(s.sessions[1])
            .bind(s.sessions[2])
            .bind(s.sessions[3])
            .execute(&mut self.conn)
            .await
            .unwrap();
    }

    /// One `template_usage_stats` bucket as dbrollup writes it: half-hour aligned, minutes within the bucket.
    async fn usage_bucket(&mut self, template: Uuid, user: Uuid, start: i64, usage_mins: i16) {
        assert_eq!(start % (30 * MINUTE), 0, "dbrollup's buckets start on the half hour");
        let sql = format!(
            "INSERT INTO template_usage_stats (start_time, end_time, template_id, user_id, median_latency_ms, \
               usage_mins, ssh_mins, sftp_mins, reconnecting_pty_mins, vscode_mins, jetbrains_mins, app_usage_mins) \
             VALUES ({}, {} + interval '30 minutes', $2::uuid, $3::uuid, 12.5, $4, $4, 0, 0, 0, 0, NULL)",
            ts(1),
            ts(1)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(start)
            .bind(template.to_string())
            .bind(user.to_string())
            .bind(usage_mins)
            .execute(&mut self.conn)
            .await
            .unwrap();
    }

    async fn open(&self) -> Store {
        Store::open_coder(&self.url, StoreOptions::default()).await.unwrap()
    }
}

#[derive(Clone, Copy, Default)]
struct Stats {
    agent: Uuid,
    at: i64,
    connections: i64,
    rx: i64,
    tx: i64,
    latency: f64,
    /// vscode, jetbrains, reconnecting_pty, ssh (the column order).
    sessions: [i64; 4],
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_listed_and_read_without_deleted_ones() {
    let mut d = deployment().await;
    let (alpha, alpha_v) = d.template("alpha", "Alpha", at(DAY, 9, 0), false).await;
    let (empty, _) = d.template("empty", "", at(DAY, 10, 0), false).await;
    let (gone, _) = d.template("gone", "Gone", at(DAY, 11, 0), true).await;
    let store = d.open().await;

    let before = store.queries().snapshot();
    let ids = store.active_template_ids().await.unwrap();
    let q = store.queries().snapshot().since(&before);
    assert_eq!((q.total(), q.get("GetTemplatesWithFilter")), (1, 1), "{q:?}");
    assert_eq!(ids, sorted(vec![d.template, alpha, empty]), "id order, the deleted template left out");

    let before = store.queries().snapshot();
    let t = store.template_by_id(alpha).await.unwrap().expect("alpha");
    let q = store.queries().snapshot().since(&before);
    assert_eq!((q.total(), q.get("GetTemplateByID")), (1, 1), "{q:?}");
    assert_eq!(
        t,
        TemplateRow {
            id: alpha,
            organization_id: d.org,
            name: "alpha".into(),
            display_name: "Alpha".into(),
            active_version_id: Some(alpha_v),
            created_at: at(DAY, 9, 0),
            updated_at: at(DAY, 9, 0) + 5_000_000,
        }
    );
    // The seed's template, as coderd's dbgen and schedule store wrote it moments ago.
    let seeded = store.template_by_id(d.template).await.unwrap().expect("the seed's template");
    assert_eq!(
        (seeded.organization_id, seeded.name.as_str(), seeded.display_name.as_str(), seeded.active_version_id),
        (d.org, "docker", "Docker", Some(d.version))
    );
    let now = now_micros();
    assert!(now - 600_000_000 < seeded.created_at && seeded.created_at <= seeded.updated_at, "{seeded:?}");
    assert!(seeded.updated_at <= now, "{seeded:?}");

    assert_eq!(store.template_by_id(empty).await.unwrap().map(|t| t.display_name), Some(String::new()));
    assert_eq!(store.template_by_id(gone).await.unwrap(), None, "coderd's template middleware 404s a deleted one");
    assert_eq!(store.template_by_id(Uuid::new_v4()).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_durations_are_the_recent_successful_builds_per_template() {
    let mut d = deployment().await;
    let (alpha, alpha_v) = d.template("alpha", "Alpha", at(DAY, 0, 0), false).await;
    let (other, other_v) = d.template("other", "", at(DAY, 0, 0), false).await;
    let (gone, gone_v) = d.template("gone", "", at(DAY, 0, 0), true).await;
    let ws = d.workspace(alpha, "builds", false).await;
    let ws2 = d.workspace(other, "dev2", false).await;
    let ws3 = d.workspace(gone, "dev3", false).await;
    let window = at(DAY, 1, 0);

    // alpha, oldest first: every build's job starts an hour apart, so created_at orders them.
    let mut n = 0;
    let mut next = |secs: i64| {
        n += 1;
        (n, Job::done(at(DAY, 1 + n as i64, 0), secs))
    };
    let (b, _) = next(7);
    let before_window = Job::done(window - 1, 7);
    d.build(ws, alpha_v, b, "start", before_window).await; // started before the window: out
    let (b, j) = next(10);
    d.build(ws, alpha_v, b, "start", j).await; // in: start 10 s
    let (b, j) = next(20);
    d.build(ws, alpha_v, b, "stop", j).await; // in: stop 20 s
    let (b, j) = next(30);
    d.build(ws, alpha_v, b, "start", Job { canceled_at: j.completed_at, ..j }).await; // cancelled: out
    let (b, j) = next(40);
    d.build(ws, alpha_v, b, "start", Job { error: Some("terraform apply failed"), ..j }).await; // failed: out
    let (b, j) = next(50);
    d.build(ws, alpha_v, b, "delete", Job { error: Some(""), ..j }).await; // empty error is success: in
    let (b, j) = next(60);
    d.build(ws, alpha_v, b, "start", Job { completed_at: None, ..j }).await; // still running: out
    let (b, j) = next(70);
    d.build(ws, alpha_v, b, "start", Job { started_at: None, completed_at: None, ..j }).await; // pending: out
    let (b, j) = next(3);
    d.build(ws, alpha_v, b, "start", Job { ..j }).await; // in: start 3 s, the most recent

    d.build(ws2, other_v, 1, "start", Job::done(at(DAY, 2, 0), 5)).await;
    d.build(ws2, other_v, 2, "stop", Job::done(at(DAY, 3, 0), 6)).await;
    d.build(ws3, gone_v, 1, "start", Job::done(at(DAY, 2, 0), 9)).await; // deleted template: out
    let store = d.open().await;

    let read = |per: i64| {
        let store = store.clone();
        async move {
            let mut v: Vec<(Uuid, String, i64)> = store
                .recent_build_durations(window, per)
                .await
                .unwrap()
                .into_iter()
                .map(|b| (b.template_id, b.transition, b.micros))
                .collect();
            v.sort();
            v
        }
    };
    let before = store.queries().snapshot();
    let all = read(100).await;
    let q = store.queries().snapshot().since(&before);
    assert_eq!((q.total(), q.get("GetTemplateAverageBuildTime")), (1, 1), "{q:?}");
    let s = |t: Uuid, tr: &str, secs: i64| (t, tr.to_string(), secs * 1_000_000);
    // Nothing of the seed's template: see below.
    assert_eq!(
        all,
        sorted(vec![
            s(alpha, "start", 10),
            s(alpha, "stop", 20),
            s(alpha, "delete", 50),
            s(alpha, "start", 3),
            s(other, "start", 5),
            s(other, "stop", 6),
        ])
    );
    // The limit counts every build of the template that qualifies, newest first, as coderd's LIMIT 100.
    assert_eq!(
        read(2).await,
        sorted(vec![s(alpha, "delete", 50), s(alpha, "start", 3), s(other, "start", 5), s(other, "stop", 6)])
    );
    // With no window this is coderd's query exactly: the build before the window comes back.
    let mut unbounded = store.recent_build_durations(i64::MIN, 100).await.unwrap();
    unbounded.retain(|b| b.template_id == alpha);
    assert_eq!(unbounded.len(), 5);
    assert!(unbounded.iter().any(|b| b.micros == 7_000_000));

    // coderd's own GetTemplateAverageBuildTime on the same rows (no window, so the 7 s build is in): its
    // percentiles, in seconds, are the ones the snapshotter computes from the durations above.
    let coderd: (f64, f64, f64, f64, f64, f64) = sqlx::query_as(CODERD_GET_TEMPLATE_AVERAGE_BUILD_TIME)
        .bind(alpha.to_string())
        .fetch_one(&mut d.conn)
        .await
        .unwrap();
    // start: 3, 7, 10 → p50 7, p95 10; stop: 20; delete: 50.
    assert_eq!(coderd, (7.0, 20.0, 50.0, 10.0, 20.0, 50.0));
    // The seed's builds were completed by dbfake without ever starting: neither read has a time for them.
    let seeded: (f64, f64, f64, f64, f64, f64) = sqlx::query_as(CODERD_GET_TEMPLATE_AVERAGE_BUILD_TIME)
        .bind(d.template.to_string())
        .fetch_one(&mut d.conn)
        .await
        .unwrap();
    assert_eq!(seeded, (-1.0, -1.0, -1.0, -1.0, -1.0, -1.0));
}

/// coderd v2.30.0's GetTemplateAverageBuildTime, verbatim but for `$1::uuid` (coderd binds a uuid).
const CODERD_GET_TEMPLATE_AVERAGE_BUILD_TIME: &str = "WITH build_times AS (
SELECT
	EXTRACT(EPOCH FROM (pj.completed_at - pj.started_at))::FLOAT AS exec_time_sec,
	workspace_builds.transition
FROM
	workspace_builds
JOIN template_versions ON
	workspace_builds.template_version_id = template_versions.id
JOIN provisioner_jobs pj ON
	workspace_builds.job_id = pj.id
WHERE
	template_versions.template_id = $1::uuid AND
		(pj.completed_at IS NOT NULL) AND (pj.started_at IS NOT NULL) AND
		(pj.canceled_at IS NULL) AND
		((pj.error IS NULL) OR (pj.error = ''))
ORDER BY
	workspace_builds.created_at DESC
LIMIT 100
)
SELECT
	coalesce((PERCENTILE_DISC(0.5) WITHIN GROUP(ORDER BY exec_time_sec) FILTER (WHERE transition = 'start')), -1)::FLOAT AS start_50,
	coalesce((PERCENTILE_DISC(0.5) WITHIN GROUP(ORDER BY exec_time_sec) FILTER (WHERE transition = 'stop')), -1)::FLOAT AS stop_50,
	coalesce((PERCENTILE_DISC(0.5) WITHIN GROUP(ORDER BY exec_time_sec) FILTER (WHERE transition = 'delete')), -1)::FLOAT AS delete_50,
	coalesce((PERCENTILE_DISC(0.95) WITHIN GROUP(ORDER BY exec_time_sec) FILTER (WHERE transition = 'start')), -1)::FLOAT AS start_95,
	coalesce((PERCENTILE_DISC(0.95) WITHIN GROUP(ORDER BY exec_time_sec) FILTER (WHERE transition = 'stop')), -1)::FLOAT AS stop_95,
	coalesce((PERCENTILE_DISC(0.95) WITHIN GROUP(ORDER BY exec_time_sec) FILTER (WHERE transition = 'delete')), -1)::FLOAT AS delete_95
FROM build_times";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_stats_window_sums_bytes_and_each_agents_latest_sessions() {
    let mut d = deployment().await;
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let since = at(DAY, 12, 0);
    let row = |agent: Uuid, at: i64, rx: i64, tx: i64, latency: f64, sessions: [i64; 4]| Stats {
        agent,
        at,
        connections: 1,
        rx,
        tx,
        latency,
        sessions,
    };
    d.agent_stats(row(a, since, 1_000, 1_000, 99.0, [9, 9, 9, 9])).await; // at `since`: out (created_at > since)
    d.agent_stats(row(a, since + 1, 100, 10, 5.0, [1, 0, 0, 1])).await;
    d.agent_stats(row(a, since + 60 * 1_000_000, 200, 20, 3.0, [2, 1, 0, 0])).await; // a's latest
    d.agent_stats(row(b, since + 30 * 1_000_000, 300, 30, -1.0, [0, 0, 4, 3])).await; // legacy latency: not listed
    d.agent_stats(row(c, since + 10 * 1_000_000, 400, 40, 0.0, [5, 5, 5, 5])).await;
    d.agent_stats(row(c, since + 20 * 1_000_000, 500, 50, 7.5, [0, 0, 1, 0])).await; // c's latest
    let store = d.open().await;

    let before = store.queries().snapshot();
    let w = store.agent_stats_window(since).await.unwrap();
    let q = store.queries().snapshot().since(&before);
    assert_eq!(
        (q.total(), q.get("GetDeploymentWorkspaceAgentStats"), q.get("GetDeploymentWorkspaceAgentLatencies")),
        (2, 1, 1),
        "{q:?}"
    );
    // Sessions: a's latest [2,1,0,0] + b's [0,0,4,3] + c's latest [0,0,1,0], as (vscode, jetbrains, rpty, ssh).
    assert_eq!(
        w,
        AgentStatsWindow {
            rx_bytes: 100 + 200 + 300 + 400 + 500,
            tx_bytes: 10 + 20 + 30 + 40 + 50,
            session_count_vscode: 2,
            session_count_ssh: 3,
            session_count_jetbrains: 1,
            session_count_reconnecting_pty: 5,
            latencies_ms: vec![3.0, 5.0, 7.5],
        }
    );

    // coderd's GetDeploymentWorkspaceAgentStats on the same rows agrees on every value it returns.
    let coderd: (i64, i64, f64, f64, i64, i64, i64, i64) = sqlx::query_as(CODERD_GET_DEPLOYMENT_WORKSPACE_AGENT_STATS)
        .bind(since as f64 / 1e6)
        .fetch_one(&mut d.conn)
        .await
        .unwrap();
    assert_eq!(coderd, (1500, 150, 5.0, 7.25, 2, 3, 1, 5));

    assert_eq!(store.agent_stats_window(at(DAY + 1, 0, 0)).await.unwrap(), AgentStatsWindow::default());
}

/// coderd v2.30.0's GetDeploymentWorkspaceAgentStats, verbatim but for the bound time (seconds, here).
const CODERD_GET_DEPLOYMENT_WORKSPACE_AGENT_STATS: &str = "WITH stats AS (
    SELECT
        agent_id,
        created_at,
        rx_bytes,
        tx_bytes,
        connection_median_latency_ms,
        session_count_vscode,
        session_count_ssh,
        session_count_jetbrains,
        session_count_reconnecting_pty,
        ROW_NUMBER() OVER (PARTITION BY agent_id ORDER BY created_at DESC) AS rn
    FROM workspace_agent_stats
    WHERE created_at > to_timestamp($1::float8)
)
SELECT
    coalesce(SUM(rx_bytes), 0)::bigint AS workspace_rx_bytes,
    coalesce(SUM(tx_bytes), 0)::bigint AS workspace_tx_bytes,
    coalesce((PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY connection_median_latency_ms) FILTER (WHERE connection_median_latency_ms > 0)), -1)::FLOAT AS workspace_connection_latency_50,
    coalesce((PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY connection_median_latency_ms) FILTER (WHERE connection_median_latency_ms > 0)), -1)::FLOAT AS workspace_connection_latency_95,
    coalesce(SUM(session_count_vscode) FILTER (WHERE rn = 1), 0)::bigint AS session_count_vscode,
    coalesce(SUM(session_count_ssh) FILTER (WHERE rn = 1), 0)::bigint AS session_count_ssh,
    coalesce(SUM(session_count_jetbrains) FILTER (WHERE rn = 1), 0)::bigint AS session_count_jetbrains,
    coalesce(SUM(session_count_reconnecting_pty) FILTER (WHERE rn = 1), 0)::bigint AS session_count_reconnecting_pty
FROM stats";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_states_by_the_latest_builds_job() {
    let mut d = deployment().await;
    let (t, v) = (d.template, d.version);
    let store = d.open().await;
    let now = now_micros();
    let heartbeat_after = now - 30 * 1_000_000;
    // The seed's `dev` and `superseded` (its deleted workspace is not counted): dbfake completes their start builds'
    // jobs without starting them, so coderd's predicates count each as both pending and running.
    let seeded = store.workspace_state_counts(heartbeat_after).await.unwrap();
    assert_eq!(seeded, WorkspaceStateCounts { pending: 2, building: 0, running: 2, failed: 0, stopped: 0 });

    let done = |secs_ago: i64| Job::done(now - secs_ago * 1_000_000 - 10_000_000, 10);
    let running_job = |updated_secs_ago: i64| Job {
        created_at: now - 600_000_000,
        started_at: Some(now - 500_000_000),
        updated_at: now - updated_secs_ago * 1_000_000,
        ..Job::default()
    };
    // running: the latest start build succeeded (an older failed build does not matter).
    let w = d.workspace(t, "running", false).await;
    d.build(w, v, 1, "start", Job { error: Some("boom"), ..done(900) }).await;
    d.build(w, v, 2, "start", done(600)).await;
    // stopped
    let w = d.workspace(t, "stopped", false).await;
    d.build(w, v, 1, "start", done(900)).await;
    d.build(w, v, 2, "stop", done(600)).await;
    // failed: completed with an error; cancelled with an error
    let w = d.workspace(t, "failed", false).await;
    d.build(w, v, 1, "start", Job { error: Some("boom"), ..done(600) }).await;
    let w = d.workspace(t, "cancelled-failed", false).await;
    let j = running_job(5);
    d.build(w, v, 1, "start", Job { canceled_at: Some(now - 1_000_000), error: Some("canceled"), ..j }).await;
    // pending: not started
    let w = d.workspace(t, "pending", false).await;
    d.build(w, v, 1, "stop", done(900)).await;
    d.build(w, v, 2, "start", Job { created_at: now - 5_000_000, updated_at: now - 5_000_000, ..Job::default() }).await;
    // building: started, heartbeat 5 s ago
    let w = d.workspace(t, "building", false).await;
    d.build(w, v, 1, "start", running_job(5)).await;
    // started but silent for a minute: neither building nor anything else
    let w = d.workspace(t, "stale", false).await;
    d.build(w, v, 1, "start", running_job(60)).await;
    // cancelled without an error (still cancelling): nothing
    let w = d.workspace(t, "cancelling", false).await;
    d.build(w, v, 1, "start", Job { canceled_at: Some(now - 1_000_000), ..running_job(1) }).await;
    // a successful delete build: nothing
    let w = d.workspace(t, "deleting", false).await;
    d.build(w, v, 1, "delete", done(60)).await;
    // deleted workspace with a running build: not counted
    let w = d.workspace(t, "removed", true).await;
    d.build(w, v, 1, "start", done(600)).await;
    // a workspace without any build (never left by coderd, counted as coderd's LEFT JOIN counts it): pending
    d.workspace(t, "buildless", false).await;

    let before = store.queries().snapshot();
    let c = store.workspace_state_counts(heartbeat_after).await.unwrap();
    let q = store.queries().snapshot().since(&before);
    assert_eq!((q.total(), q.get("GetDeploymentWorkspaceStats")), (1, 1), "{q:?}");
    assert_eq!(c, WorkspaceStateCounts { pending: 2 + 2, building: 1, running: 2 + 1, failed: 2, stopped: 1 });
    // A window reaching back past the stale heartbeat counts that job as building too.
    let wide = store.workspace_state_counts(now - 120 * 1_000_000).await.unwrap();
    assert_eq!(wide, WorkspaceStateCounts { building: 2, ..c });

    // coderd's own GetDeploymentWorkspaceStats agrees on every state but building, where its predicate
    // (`updated_at - INTERVAL '30 seconds' < NOW()`) also counts the job silent for a minute.
    let coderd: (i64, i64, i64, i64, i64) =
        sqlx::query_as(CODERD_GET_DEPLOYMENT_WORKSPACE_STATS).fetch_one(&mut d.conn).await.unwrap();
    assert_eq!(coderd, (c.pending, c.building + 1, c.running, c.failed, c.stopped));
}

/// coderd v2.30.0's GetDeploymentWorkspaceStats, verbatim.
const CODERD_GET_DEPLOYMENT_WORKSPACE_STATS: &str = "WITH workspaces_with_jobs AS (
	SELECT
	latest_build.* FROM workspaces
	LEFT JOIN LATERAL (
		SELECT
			workspace_builds.transition,
			provisioner_jobs.id AS provisioner_job_id,
			provisioner_jobs.started_at,
			provisioner_jobs.updated_at,
			provisioner_jobs.canceled_at,
			provisioner_jobs.completed_at,
			provisioner_jobs.error
		FROM
			workspace_builds
		LEFT JOIN
			provisioner_jobs
		ON
			provisioner_jobs.id = workspace_builds.job_id
		WHERE
			workspace_builds.workspace_id = workspaces.id
		ORDER BY
			build_number DESC
		LIMIT
			1
	) latest_build ON TRUE WHERE deleted = false
), pending_workspaces AS (
	SELECT COUNT(*) AS count FROM workspaces_with_jobs WHERE
		started_at IS NULL
), building_workspaces AS (
	SELECT COUNT(*) AS count FROM workspaces_with_jobs WHERE
		started_at IS NOT NULL AND
		canceled_at IS NULL AND
		completed_at IS NULL AND
		updated_at - INTERVAL '30 seconds' < NOW()
), running_workspaces AS (
	SELECT COUNT(*) AS count FROM workspaces_with_jobs WHERE
		completed_at IS NOT NULL AND
		canceled_at IS NULL AND
		error IS NULL AND
		transition = 'start'::workspace_transition
), failed_workspaces AS (
	SELECT COUNT(*) AS count FROM workspaces_with_jobs WHERE
		(canceled_at IS NOT NULL AND
			error IS NOT NULL) OR
		(completed_at IS NOT NULL AND
			error IS NOT NULL)
), stopped_workspaces AS (
	SELECT COUNT(*) AS count FROM workspaces_with_jobs WHERE
		completed_at IS NOT NULL AND
		canceled_at IS NULL AND
		error IS NULL AND
		transition = 'stop'::workspace_transition
)
SELECT
	pending_workspaces.count AS pending_workspaces,
	building_workspaces.count AS building_workspaces,
	running_workspaces.count AS running_workspaces,
	failed_workspaces.count AS failed_workspaces,
	stopped_workspaces.count AS stopped_workspaces
FROM pending_workspaces, building_workspaces, running_workspaces, failed_workspaces, stopped_workspaces";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_comes_from_coderds_usage_rollup() {
    let mut d = deployment().await;
    let (t1, _) = d.template("alpha", "", at(DAY, 0, 0), false).await;
    let (t2, _) = d.template("k8s", "", at(DAY, 0, 0), false).await;
    let (u1, u2) = (d.owner, d.user("bob").await);
    d.usage_bucket(t1, u1, at(DAY, 0, 0), 30).await;
    d.usage_bucket(t1, u1, at(DAY, 9, 30), 12).await;
    d.usage_bucket(t1, u1, at(DAY, 23, 30), 4).await;
    d.usage_bucket(t2, u1, at(DAY, 12, 0), 7).await;
    d.usage_bucket(t1, u2, at(DAY, 5, 30), 1).await;
    d.usage_bucket(t1, u2, at(DAY + 1, 1, 0), 30).await;
    // Raw stats that dbrollup has not folded yet: coderd's DAUs do not count them, nor do these reads.
    d.agent_stats(Stats {
        agent: Uuid::new_v4(),
        at: at(DAY + 2, 10, 0),
        connections: 1,
        sessions: [1, 0, 0, 0],
        ..Stats::default()
    })
    .await;
    let store = d.open().await;

    let before = store.queries().snapshot();
    let rows = store.user_activity_days().await.unwrap();
    let q = store.queries().snapshot().since(&before);
    assert_eq!((q.total(), q.get("GetUserActivityDays")), (1, 1), "{q:?}");
    let key = |a: &ActivityDay| (a.template_id, a.user_id, a.day);
    let mut rows = rows;
    rows.sort_by_key(key);
    let mut want = vec![
        ActivityDay { template_id: t1, user_id: u1, day: DAY, first_at: at(DAY, 0, 0), last_at: at(DAY, 23, 30) },
        ActivityDay { template_id: t2, user_id: u1, day: DAY, first_at: at(DAY, 12, 0), last_at: at(DAY, 12, 0) },
        ActivityDay { template_id: t1, user_id: u2, day: DAY, first_at: at(DAY, 5, 30), last_at: at(DAY, 5, 30) },
        ActivityDay {
            template_id: t1,
            user_id: u2,
            day: DAY + 1,
            first_at: at(DAY + 1, 1, 0),
            last_at: at(DAY + 1, 1, 0),
        },
    ];
    want.sort_by_key(key);
    assert_eq!(rows, want);

    let before = store.queries().snapshot();
    let mut days = store.user_activity_by_day().await.unwrap();
    let q = store.queries().snapshot().since(&before);
    assert_eq!((q.total(), q.get("GetDeploymentUserActivityDays")), (1, 1), "{q:?}");
    days.sort_by_key(|d| (d.user_id, d.day));
    let mut want = vec![
        UserActivityDay { user_id: u1, day: DAY, first_at: at(DAY, 0, 0), last_at: at(DAY, 23, 30) },
        UserActivityDay { user_id: u2, day: DAY, first_at: at(DAY, 5, 30), last_at: at(DAY, 5, 30) },
        UserActivityDay { user_id: u2, day: DAY + 1, first_at: at(DAY + 1, 1, 0), last_at: at(DAY + 1, 1, 0) },
    ];
    want.sort_by_key(|d| (d.user_id, d.day));
    assert_eq!(days, want);

    let before = store.queries().snapshot();
    let mut per_day = store.template_users_by_day().await.unwrap();
    let q = store.queries().snapshot().since(&before);
    assert_eq!((q.total(), q.get("GetTemplateDAUsByUTCDay")), (1, 1), "{q:?}");
    per_day.sort_by_key(|d| (d.template_id, d.day));
    let mut want = vec![
        TemplateDayUsers { template_id: t1, day: DAY, users: 2 },
        TemplateDayUsers { template_id: t1, day: DAY + 1, users: 1 },
        TemplateDayUsers { template_id: t2, day: DAY, users: 1 },
    ];
    want.sort_by_key(|d| (d.template_id, d.day));
    assert_eq!(per_day, want);

    let before = store.queries().snapshot();
    let unique = store.template_unique_users().await.unwrap();
    let q = store.queries().snapshot().since(&before);
    assert_eq!((q.total(), q.get("GetTemplateUniqueUsers")), (1, 1), "{q:?}");
    assert_eq!(sorted(unique), sorted(vec![(t1, 2), (t2, 1)]));

    // coderd's own GetTemplateInsightsByInterval (the DAUs endpoint's query: one-day intervals) over these days
    // counts the users the rows above give, per template and deployment-wide.
    let coderd = |templates: Vec<Uuid>| {
        let templates: Vec<String> = templates.iter().map(Uuid::to_string).collect();
        sqlx::query_as::<_, (i64,)>(CODERD_GET_TEMPLATE_INSIGHTS_BY_INTERVAL)
            .bind(at(DAY, 0, 0) as f64 / 1e6)
            .bind(at(DAY + 3, 0, 0) as f64 / 1e6)
            .bind(1_i32)
            .bind(templates)
    };
    let all: Vec<i64> = coderd(vec![]).fetch_all(&mut d.conn).await.unwrap().into_iter().map(|r| r.0).collect();
    assert_eq!(all, [2, 1, 0], "deployment DAUs: u1 and u2 on DAY, u2 on DAY+1, the raw stats not rolled up");
    let one: Vec<i64> = coderd(vec![t2]).fetch_all(&mut d.conn).await.unwrap().into_iter().map(|r| r.0).collect();
    assert_eq!(one, [1, 0, 0]);
}

/// coderd v2.30.0's GetTemplateInsightsByInterval, verbatim but for the bound times (seconds) and the column list
/// (active_users only), ordered by interval.
const CODERD_GET_TEMPLATE_INSIGHTS_BY_INTERVAL: &str = "WITH
	ts AS (
		SELECT
			d::timestamptz AS from_,
			LEAST(
				(d::timestamptz + ($3::int || ' day')::interval)::timestamptz,
				to_timestamp($2::float8)
			)::timestamptz AS to_
		FROM
			generate_series(
				to_timestamp($1::float8),
				-- Subtract 1 μs to avoid creating an extra series.
				to_timestamp($2::float8) - '1 microsecond'::interval,
				($3::int || ' day')::interval
			) AS d
	)
SELECT
	COUNT(DISTINCT tus.user_id) AS active_users
FROM
	ts
LEFT JOIN
	template_usage_stats AS tus
ON
	tus.start_time >= ts.from_
	AND tus.start_time < ts.to_ -- End time exclusion criteria optimization for index.
	AND tus.end_time <= ts.to_
	AND CASE WHEN COALESCE(array_length($4::uuid[], 1), 0) > 0 THEN tus.template_id = ANY($4::uuid[]) ELSE TRUE END
GROUP BY
	ts.from_, ts.to_
ORDER BY ts.from_";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_data_is_refused_and_writes_nothing() {
    let mut d = deployment().await;
    let store = d.open().await;
    let user = DemoUser { id: Uuid::new_v4(), username: "demo".into(), created_at: at(DAY, 0, 0) };
    let history = DemoHistory {
        users: vec![user],
        templates: vec![],
        workspaces: vec![],
        builds: vec![],
        stats: vec![DemoStat {
            id: Uuid::new_v4(),
            created_at: at(DAY, 1, 0),
            user_id: d.owner,
            agent_id: Uuid::new_v4(),
            workspace_id: Uuid::new_v4(),
            template_id: Uuid::new_v4(),
            connection_count: 1,
            rx_bytes: 1,
            tx_bytes: 1,
            connection_median_latency_ms: 1.0,
            session_count_vscode: 1,
            session_count_jetbrains: 0,
            session_count_reconnecting_pty: 0,
            session_count_ssh: 0,
        }],
    };
    let before = store.queries().snapshot();
    let err = store.insert_demo_history("coder", &history).await.unwrap_err();
    assert!(matches!(err, StoreError::ManagedByCoderd(_)), "{err:?}");
    let q = store.queries().snapshot().since(&before);
    assert_eq!((q.total(), q.begins), (0, 0), "{q:?}");
    let counts: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM users WHERE username = 'demo'), (SELECT COUNT(*) FROM workspace_agent_stats), \
           (SELECT COUNT(*) FROM template_usage_stats)",
    )
    .fetch_one(&mut d.conn)
    .await
    .unwrap();
    assert_eq!(counts, (0, 0, 0));
}
