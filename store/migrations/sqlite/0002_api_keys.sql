-- User API keys, Coder's `<id>-<secret>` tokens: the id is looked up, the secret is kept only as its SHA-256
-- (lowercase hex) and compared against it. Expired keys stay until removed; lookups refuse them.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    hashed_secret TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX idx_api_keys_user_id ON api_keys (user_id);
