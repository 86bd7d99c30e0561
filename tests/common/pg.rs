//! PostgreSQL for the tests that need several replicas on one database.

use uuid::Uuid;

/// A fresh database on the test cluster (`AGENTWIRE_TEST_PG_URL` or `DATABASE_URL`, which
/// `scripts/with-postgres.sh` exports), as the store suite makes one per test. Unset is a failure, never a skip.
pub async fn fresh_pg_url() -> String {
    use sqlx::Connection;
    let base = std::env::var("AGENTWIRE_TEST_PG_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .ok()
        .filter(|u| u.starts_with("postgres"))
        .unwrap_or_else(|| {
            panic!(
                "\n\n*** PostgreSQL tests need DATABASE_URL or AGENTWIRE_TEST_PG_URL. ***\n\
                 *** Run them through scripts/with-postgres.sh (scripts/test.sh does). ***\n\n"
            )
        });
    let name = format!("aw_{}", Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&base).await.expect("connect to the test cluster");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
    conn.close().await.ok();
    let (head, tail) = base.split_at(base.find("://").unwrap() + 3);
    let (authority, rest) = match tail.find('/') {
        Some(i) => tail.split_at(i),
        None => (tail, ""),
    };
    let query = rest.find('?').map(|i| &rest[i..]).unwrap_or("");
    format!("{head}{authority}/{name}{query}")
}
