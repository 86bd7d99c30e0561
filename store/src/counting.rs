//! Per-statement counters: every statement the store runs goes through a named [`Stmt`], and
//! running it bumps that name's counter. The server exports the counters as
//! `agentwire_db_queries_total{query="<name>"}`; tests read them to assert query budgets
//! ("resolving a token is 1 query", "a flush is 1 transaction") instead of timing anything.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::engine::Engine;

/// One named SQL statement. Statements are the same text on both engines (`$1` placeholders
/// work on SQLite too); the struct keeps a per-engine slot so a statement that ever needs a
/// dialect-specific spelling changes here and nowhere else.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stmt {
    pub name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

impl Stmt {
    /// A statement spelled the same way on both engines.
    pub const fn new(name: &'static str, sql: &'static str) -> Self {
        Stmt { name, sqlite: sql, postgres: sql }
    }

    pub fn sql(&self, engine: Engine) -> &'static str {
        match engine {
            Engine::Sqlite => self.sqlite,
            Engine::Postgres => self.postgres,
        }
    }
}

/// Counters shared by every clone of a [`crate::Store`].
#[derive(Debug, Default)]
pub struct QueryCounters {
    // A mutex around a small map is fine here: it is taken once per statement, next to a
    // database round trip that costs orders of magnitude more.
    by_name: Mutex<BTreeMap<&'static str, u64>>,
    begins: AtomicU64,
    commits: AtomicU64,
    rollbacks: AtomicU64,
    notifications: AtomicU64,
}

/// A point-in-time copy of [`QueryCounters`], cheap to diff in tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuerySnapshot {
    /// Statements run, by statement name.
    pub by_name: BTreeMap<&'static str, u64>,
    /// Transactions begun.
    pub begins: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Transactions rolled back (explicitly or by drop after an error).
    pub rollbacks: u64,
    /// Pubsub messages published (any channel, any engine).
    pub notifications: u64,
}

impl QuerySnapshot {
    /// Total statements across all names.
    pub fn total(&self) -> u64 {
        self.by_name.values().sum()
    }

    /// Count for one statement name (0 if it never ran).
    pub fn get(&self, name: &str) -> u64 {
        self.by_name.get(name).copied().unwrap_or(0)
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &QuerySnapshot) -> QuerySnapshot {
        let by_name = self
            .by_name
            .iter()
            .filter_map(|(k, v)| {
                let d = v - earlier.get(k);
                (d > 0).then_some((*k, d))
            })
            .collect();
        QuerySnapshot {
            by_name,
            begins: self.begins - earlier.begins,
            commits: self.commits - earlier.commits,
            rollbacks: self.rollbacks - earlier.rollbacks,
            notifications: self.notifications - earlier.notifications,
        }
    }
}

impl QueryCounters {
    pub(crate) fn hit(&self, name: &'static str) {
        // A poisoned lock only means another thread panicked mid-increment; the map is still
        // usable, and losing a count is better than propagating the panic.
        let mut map = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(name).or_insert(0) += 1;
    }

    pub(crate) fn begin(&self) {
        self.begins.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn commit(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rollback(&self) {
        self.rollbacks.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn notified(&self, n: u64) {
        self.notifications.fetch_add(n, Ordering::Relaxed);
    }

    /// Count for one statement name.
    pub fn get(&self, name: &str) -> u64 {
        let map = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        map.get(name).copied().unwrap_or(0)
    }

    /// Copy all counters.
    pub fn snapshot(&self) -> QuerySnapshot {
        let map = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        QuerySnapshot {
            by_name: map.clone(),
            begins: self.begins.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            rollbacks: self.rollbacks.load(Ordering::Relaxed),
            notifications: self.notifications.load(Ordering::Relaxed),
        }
    }
}
