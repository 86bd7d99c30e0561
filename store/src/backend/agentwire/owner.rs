//! [`crate::backend::AgentSql`]'s statements about the agent's owner and workspace rather than its own rows: the
//! owner's git SSH key (Coder's `gitsshkeys`) and the workspace's activity bump. Each is bound to the scope's resolved
//! owner or workspace, so an agent reaches only its own owner's key and its own workspace.

use super::batch::{bump_deadlines, ACTIVITY_BUMP};
use crate::backend::{begin, commit, q, qa, with_pool, AgentwireDb};
use crate::counting::Stmt;
use crate::model::{id, now_micros, GitSshKey};
use crate::{AgentScope, StoreError};

const GET_GIT_SSH_KEY: Stmt = Stmt::new(
    "GetGitSSHKey",
    "SELECT user_id, created_at, updated_at, private_key, public_key FROM gitsshkeys WHERE user_id = $1",
);
const INSERT_GIT_SSH_KEY: Stmt = Stmt::new(
    "InsertGitSSHKey",
    // A key already there (a concurrent first request) wins; the caller reads back whichever is stored.
    "INSERT INTO gitsshkeys (user_id, created_at, updated_at, private_key, public_key) \
     VALUES ($1, $2, $2, $3, $4) ON CONFLICT (user_id) DO NOTHING",
);

pub(super) async fn git_ssh_key(db: &AgentwireDb, a: &AgentScope) -> Result<Option<GitSshKey>, StoreError> {
    let owner = id(a.owner_id());
    let row = with_pool!(db, read, |eng, pool| {
        qa!(db.counters, eng, GET_GIT_SSH_KEY, GitSshKey).bind(&owner).fetch_optional(pool).await?
    });
    Ok(row)
}

pub(super) async fn insert_git_ssh_key(
    db: &AgentwireDb,
    a: &AgentScope,
    private_key: &str,
    public_key: &str,
) -> Result<GitSshKey, StoreError> {
    let owner = id(a.owner_id());
    let row = with_pool!(db, write, |eng, pool| {
        let mut tx = begin(&db.counters, eng, pool).await?;
        q!(db.counters, eng, INSERT_GIT_SSH_KEY)
            .bind(&owner)
            .bind(now_micros())
            .bind(private_key)
            .bind(public_key)
            .execute(&mut *tx)
            .await?;
        let row = qa!(db.counters, eng, GET_GIT_SSH_KEY, GitSshKey).bind(&owner).fetch_optional(&mut *tx).await?;
        commit(&db.counters, tx).await?;
        row
    });
    // The row was inserted or already there in this transaction; only a user deleted under it could take it away.
    row.ok_or_else(|| StoreError::Invalid(format!("user {} has no git SSH key after inserting one", a.owner_id())))
}

pub(super) async fn bump_workspace_activity(db: &AgentwireDb, a: &AgentScope) -> Result<(), StoreError> {
    let workspace = [a.workspace_id()];
    with_pool!(db, write, |eng, pool| {
        db.counters.hit(ACTIVITY_BUMP);
        bump_deadlines(now_micros(), &workspace).build().execute(pool).await?;
    });
    Ok(())
}
