-- Coder's `gitsshkeys`: one SSH key pair per user, what `GET /api/v2/workspaceagents/me/gitsshkey` hands the
-- workspace's agent for `coder gitssh`. coderd makes it when it creates the user; agentwire makes it on the first
-- request (users made before this table have none), and a concurrent second request keeps the first key.
CREATE TABLE gitsshkeys (
    user_id TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    private_key TEXT NOT NULL,
    public_key TEXT NOT NULL
);
