-- The metrics snapshotter's daily-active-users scan groups connected stats rows by (template, user, day): this
-- index hands them over in that order with every column it reads, so the scan needs no sort and no table access.
CREATE INDEX idx_workspace_agent_stats_template_user_created ON workspace_agent_stats (template_id, user_id, created_at)
    WHERE connection_count > 0;
-- Build times walk each template version's builds newest first.
CREATE INDEX idx_workspace_builds_template_version_created ON workspace_builds (template_version_id, created_at);
