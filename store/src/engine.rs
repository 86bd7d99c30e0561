//! The two database engines a store can talk to: what a URL picks, what a statement's spelling, a transaction's
//! `BEGIN` and the per-engine pools are chosen by.

/// Which engine a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Embedded SQLite (the default deployment).
    Sqlite,
    /// PostgreSQL (multi-replica deployments).
    Postgres,
}
