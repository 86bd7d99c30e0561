//! Shared test helpers: open a fresh store on either engine, and build fixtures.
#![allow(dead_code)]

use agentwire_store::{Admin, BuildIds, CreatedAgent, ResolvedAgent, Store, StoreOptions};
use sqlx::Connection;
use uuid::Uuid;

/// Declares each named case of the including file's `cases` module (an `async fn(Kind)`) as two tests,
/// `sqlite::NAME` and `postgres::NAME`, so every case runs on both engines.
#[macro_export]
macro_rules! dual {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::cases::$name(super::Kind::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::cases::$name(super::Kind::Postgres).await
                }
            )*
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A store plus whatever keeps its database alive (temp dir).
pub struct Env {
    pub store: Store,
    pub url: String,
    pub _dir: Option<tempfile::TempDir>,
}

/// The PostgreSQL URL for tests. Unset is a failure, never a skip: the PostgreSQL half must
/// run (use scripts/with-postgres.sh).
pub fn pg_base_url() -> String {
    std::env::var("AGENTWIRE_TEST_PG_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .ok()
        .filter(|u| u.starts_with("postgres"))
        .unwrap_or_else(|| {
            panic!(
                "\n\n*** PostgreSQL tests need DATABASE_URL or AGENTWIRE_TEST_PG_URL. ***\n\
                 *** Run: scripts/with-postgres.sh cargo test -p agentwire-store     ***\n\n"
            )
        })
}

/// A fresh database on the test cluster, so tests run in parallel without sharing rows.
pub async fn fresh_pg_url() -> String {
    let base = pg_base_url();
    let name = format!("aw_{}", Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&base).await.expect("connect to test cluster");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    conn.close().await.ok();
    let (head, tail) = base.split_at(base.find("://").unwrap() + 3);
    let (authority, rest) = match tail.find('/') {
        Some(i) => tail.split_at(i),
        None => (tail, ""),
    };
    let query = rest.find('?').map(|i| &rest[i..]).unwrap_or("");
    format!("{head}{authority}/{name}{query}")
}

pub async fn open(kind: Kind, opts: StoreOptions) -> Env {
    match kind {
        Kind::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("store.db").display());
            let store = Store::open(&url, opts).await.unwrap();
            Env { store, url, _dir: Some(dir) }
        }
        Kind::Postgres => {
            let url = fresh_pg_url().await;
            let store = Store::open(&url, opts).await.unwrap();
            Env { store, url, _dir: None }
        }
    }
}

/// Options whose timers never fire during a test: flushes happen only on size or on demand,
/// so tests count instead of sleeping.
pub fn quiet_options() -> StoreOptions {
    let hour = std::time::Duration::from_secs(3600);
    StoreOptions {
        stats_flush_interval: hour,
        metadata_flush_interval: hour,
        heartbeat_flush_interval: hour,
        monitor_flush_interval: hour,
        ..StoreOptions::default()
    }
}

pub struct Fixture {
    pub build: BuildIds,
    pub created: CreatedAgent,
    pub agent: ResolvedAgent,
    pub template_id: Uuid,
    pub owner_id: Uuid,
}

pub async fn fixture(store: &Store, username: &str) -> Fixture {
    let admin: Admin = store.admin();
    let owner_id = admin.create_user(username, "u@example.com").await.unwrap();
    let t = admin.create_template("default", "tpl").await.unwrap();
    let build = admin.create_workspace_with_build(owner_id, t.template_id, &format!("{username}-ws")).await.unwrap();
    let created = admin
        .create_agent(
            build.resource_id,
            &agentwire_store::NewAgent {
                name: "main".into(),
                directory: "/home/coder".into(),
                environment_variables: Some(r#"{"A":"1"}"#.into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let agent =
        store.resolve_agent_by_token(&created.auth_token.to_string()).await.unwrap().expect("fixture agent resolves");
    Fixture { build, created, agent, template_id: t.template_id, owner_id }
}

/// The template's default activity bump, in µs: how far past now a bump moves a build's deadline.
pub const ACTIVITY_BUMP: i64 = 3_600_000_000;

/// A [`fixture`] whose build's deadline is ten minutes past `now` (returned with it), without a max deadline: a
/// workspace the activity bump moves.
pub async fn fixture_due_in_ten_minutes(store: &Store, username: &str) -> (Fixture, i64) {
    let f = fixture(store, username).await;
    let now = agentwire_store::now_micros();
    store.admin().set_build_deadline(f.build.build_id, now + 10 * 60_000_000, 0).await.unwrap();
    (f, now)
}

/// Another agent on the same resource as `f`.
pub async fn second_agent(store: &Store, f: &Fixture, name: &str) -> ResolvedAgent {
    let created = store
        .admin()
        .create_agent(f.build.resource_id, &agentwire_store::NewAgent { name: name.into(), ..Default::default() })
        .await
        .unwrap();
    store.resolve_agent_by_token(&created.auth_token.to_string()).await.unwrap().unwrap()
}
