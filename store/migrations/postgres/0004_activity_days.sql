-- Daily active users come from a rollup kept in step with workspace_agent_stats: one row per (template, user, UTC
-- day) with a connection, holding that day's first and last connected report. The stats flush upserts it in its own
-- transaction, so the metrics snapshotter reads ~users×templates×days rows instead of grouping every stats row
-- (on 1M stats rows: 90k rows, and no GROUP BY through a temporary B-tree).
CREATE TABLE template_user_activity_days (
    template_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    utc_day BIGINT NOT NULL,
    first_at BIGINT NOT NULL,
    last_at BIGINT NOT NULL,
    PRIMARY KEY (template_id, user_id, utc_day)
);

INSERT INTO template_user_activity_days (template_id, user_id, utc_day, first_at, last_at)
SELECT template_id, user_id, created_at / 86400000000, MIN(created_at), MAX(created_at)
FROM workspace_agent_stats WHERE connection_count > 0
GROUP BY template_id, user_id, created_at / 86400000000;

-- Served only the grouping scan the rollup replaces; every stats insert paid for it.
DROP INDEX idx_workspace_agent_stats_template_user_created;
