//! What a scope reaches beyond its agent's own rows, on both engines: the owner's git SSH key (one per user, the
//! first stored wins) and the workspace's activity bump.

mod common;

use agentwire_store::*;
use common::{fixture, fixture_due_in_ten_minutes, open, quiet_options, second_agent, Kind, ACTIVITY_BUMP};

dual!(git_ssh_key_is_the_owners_and_the_first_stored_wins, workspace_activity_bump_moves_the_latest_deadline);

mod cases {
    use super::*;

    pub async fn git_ssh_key_is_the_owners_and_the_first_stored_wins(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let store = &env.store;
        let alice = fixture(store, "alice").await;
        let scope = store.agent(&alice.agent);

        let before = store.queries().snapshot();
        assert_eq!(scope.owner_git_ssh_key().await.unwrap(), None);
        let d = store.queries().snapshot().since(&before);
        assert_eq!((d.total(), d.get("GetGitSSHKey")), (1, 1), "{d:?}");

        let before = store.queries().snapshot();
        let stored = scope.insert_owner_git_ssh_key("private-1", "public-1").await.unwrap();
        let d = store.queries().snapshot().since(&before);
        assert_eq!((d.begins, d.commits, d.get("InsertGitSSHKey"), d.get("GetGitSSHKey")), (1, 1, 1, 1), "{d:?}");
        assert_eq!(stored.user_id, alice.owner_id);
        assert_eq!((stored.private_key.as_str(), stored.public_key.as_str()), ("private-1", "public-1"));
        assert_eq!(stored.created_at, stored.updated_at);
        assert!(stored.created_at > 0);

        // A second insert (a concurrent first request) keeps the key already there and returns it.
        let again = scope.insert_owner_git_ssh_key("private-2", "public-2").await.unwrap();
        assert_eq!(again, stored);
        assert_eq!(scope.owner_git_ssh_key().await.unwrap(), Some(stored.clone()));

        // Another agent of the same owner sees the same key; another owner's agent has its own.
        let sibling = second_agent(store, &alice, "second").await;
        assert_eq!(store.agent(&sibling).owner_git_ssh_key().await.unwrap(), Some(stored.clone()));
        let bob = fixture(store, "bob").await;
        let bobs = store.agent(&bob.agent);
        assert_eq!(bobs.owner_git_ssh_key().await.unwrap(), None);
        let bob_key = bobs.insert_owner_git_ssh_key("private-b", "public-b").await.unwrap();
        assert_eq!(bob_key.user_id, bob.owner_id);
        assert_eq!(scope.owner_git_ssh_key().await.unwrap(), Some(stored));
    }

    pub async fn workspace_activity_bump_moves_the_latest_deadline(kind: Kind) {
        let env = open(kind, quiet_options()).await;
        let store = &env.store;
        let admin = store.admin();
        let (f, now) = fixture_due_in_ten_minutes(store, "bumpy").await;
        let scope = store.agent(&f.agent);

        let before = store.queries().snapshot();
        scope.bump_workspace_activity().await.unwrap();
        let d = store.queries().snapshot().since(&before);
        assert_eq!((d.total(), d.get("ActivityBumpWorkspace")), (1, 1), "{d:?}");
        let (bumped, _) = admin.build_activity(f.build.build_id).await.unwrap().unwrap();
        assert!(bumped >= now + ACTIVITY_BUMP && bumped <= now_micros() + ACTIVITY_BUMP, "{bumped}");

        // Another workspace's build is untouched.
        let other = fixture(store, "other").await;
        admin.set_build_deadline(other.build.build_id, now + 60_000_000, 0).await.unwrap();
        scope.bump_workspace_activity().await.unwrap();
        assert_eq!(admin.build_activity(other.build.build_id).await.unwrap().unwrap().0, now + 60_000_000);
    }
}
