//! The store's one error type.

/// Everything a store call can fail with.
///
/// Database errors keep the sqlx error so callers can ask [`StoreError::is_unique_violation`]
/// or [`StoreError::is_retryable`] without matching on driver internals.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no engine this crate speaks (`sqlite:` or `postgres:`/`postgresql:`).
    #[error("unsupported database url scheme in {0:?}: expected sqlite: or postgres:")]
    UnsupportedUrl(String),
    /// A driver or SQL error.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the embedded migrations failed.
    #[error("migrate: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A value read back from the database is not what the schema promises (e.g. a non-UUID id).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// Table the row came from.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The caller passed something the store refuses before touching the database.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The options contradict each other or the schema (e.g. a log limit above the CHECK).
    #[error("invalid store options: {0}")]
    Options(String),
    /// A pubsub operation failed (publish, subscribe, or the listener is gone).
    #[error("pubsub: {0}")]
    Pubsub(String),
    /// The database is not a Coder database of a schema version this build knows.
    #[error(
        "not a supported Coder database: schema_migrations {} (this build supports {:?}, coder v2.30.0)",
        match found { Some(v) if *dirty => format!("version {v}, left dirty by a failed migration"), Some(v) => format!("version {v}"), None => "missing".to_owned() },
        crate::backend::SUPPORTED_CODER_SCHEMA_VERSIONS
    )]
    CoderSchema {
        /// The version found, `None` when there is no `schema_migrations` table or row.
        found: Option<i64>,
        /// golang-migrate's flag for a migration that stopped half-way.
        dirty: bool,
    },
    /// On a Coder database this write is coderd's: agentwire does not make it.
    #[error("on a Coder database, {0} are managed by coderd")]
    ManagedByCoderd(&'static str),
    /// Coder v2.30's schema has no place for this, and its coderd does not do it either.
    #[error("not supported on a Coder v2.30 database: {0}")]
    NotInCoderSchema(&'static str),
    /// The store or one of its batchers has been shut down.
    #[error("store is shut down")]
    Closed,
}

impl StoreError {
    /// True when the database rejected the statement for a unique or primary-key violation.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(e)) => e.is_unique_violation(),
            _ => false,
        }
    }

    /// True when the database rejected the statement for a foreign-key violation.
    pub fn is_foreign_key_violation(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(e)) => e.is_foreign_key_violation(),
            _ => false,
        }
    }

    /// True when the database rejected the statement for a CHECK constraint.
    pub fn is_check_violation(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(e)) => e.is_check_violation(),
            _ => false,
        }
    }

    /// True for failures worth retrying later: pool timeouts, I/O, and lock contention
    /// (`SQLITE_BUSY`/`SQLITE_LOCKED`, Postgres serialization failures and deadlocks).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => true,
            StoreError::Database(sqlx::Error::Database(e)) => matches!(
                e.code().as_deref(),
                // SQLite primary result codes 5 (BUSY) and 6 (LOCKED), with extended variants.
                Some("5" | "6" | "261" | "517" | "262")
                // Postgres serialization_failure, deadlock_detected.
                | Some("40001" | "40P01")
            ),
            _ => false,
        }
    }

    pub(crate) fn corrupt(table: &'static str, detail: impl Into<String>) -> Self {
        StoreError::Corrupt { table, detail: detail.into() }
    }
}
