-- The metrics snapshotter folds the daily-activity rollup in the database rather than shipping every row: per user
-- and UTC day (deployment DAUs, any offset) and per template and UTC day (template DAUs at offset 0). Both indexes
-- hand the rows over in group order with every column read, so neither GROUP BY sorts.
CREATE INDEX idx_template_user_activity_days_user_day ON template_user_activity_days (user_id, utc_day, first_at, last_at);
CREATE INDEX idx_template_user_activity_days_template_day ON template_user_activity_days (template_id, utc_day);
