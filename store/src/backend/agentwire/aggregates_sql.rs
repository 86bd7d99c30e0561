//! The statements behind the deployment-wide aggregates ([`crate::aggregates`]), each under Coder's query name. The
//! rollup table `template_user_activity_days` is agentwire's own (migration 0004): Coder scans the stats rows.

use crate::counting::Stmt;

pub(super) const ACTIVE_TEMPLATES: Stmt =
    Stmt::new("GetTemplatesWithFilter", "SELECT id FROM templates WHERE deleted = FALSE ORDER BY id");

// Coder's GetTemplateDAUs/GetDeploymentDAUs: rows with a connection, by day and user; here per UTC day with the
// day's first and last instant (see `crate::aggregates`), for all templates at once, from the rollup the stats flush
// keeps (migration 0004) rather than a GROUP BY over every stats row.
pub(super) const USER_ACTIVITY_DAYS: Stmt = Stmt::new(
    "GetUserActivityDays",
    "SELECT template_id, user_id, utc_day AS day, first_at, last_at FROM template_user_activity_days",
);

// The rollup folded per user and UTC day across templates: what the deployment DAUs of every offset derive from
// (a user's first and last instant of a UTC day decide its local days). Index order, no sort (migration 0005).
pub(super) const USER_DAYS: Stmt = Stmt::new(
    "GetDeploymentUserActivityDays",
    "SELECT user_id, utc_day AS day, MIN(first_at) AS first_at, MAX(last_at) AS last_at \
     FROM template_user_activity_days GROUP BY user_id, utc_day",
);

// Coder's GetTemplateDAUs at offset 0 for every template at once: a rollup row is one user on one UTC day.
pub(super) const TEMPLATE_DAY_USERS: Stmt = Stmt::new(
    "GetTemplateDAUsByUTCDay",
    "SELECT template_id, utc_day, COUNT(*) FROM template_user_activity_days GROUP BY template_id, utc_day",
);

// Coder's GetTemplateUniqueUsers (the template's active_user_count) for every template at once.
pub(super) const TEMPLATE_UNIQUE_USERS: Stmt = Stmt::new(
    "GetTemplateUniqueUsers",
    "SELECT template_id, COUNT(DISTINCT user_id) FROM template_user_activity_days GROUP BY template_id",
);

// Coder's GetTemplateAverageBuildTime for every non-deleted template in one statement: the `$2` most recent
// builds per template (all transitions together, as Coder's LIMIT 100) whose job started after `$1`, completed,
// was not cancelled and has no error. The caller takes the percentiles per transition.
pub(super) const BUILD_DURATIONS: Stmt = Stmt::new(
    "GetTemplateAverageBuildTime",
    "SELECT template_id, transition, duration FROM ( \
       SELECT tv.template_id, b.transition, j.completed_at - j.started_at AS duration, \
         ROW_NUMBER() OVER (PARTITION BY tv.template_id ORDER BY b.created_at DESC, b.id DESC) AS rn \
       FROM workspace_builds b \
       JOIN template_versions tv ON tv.id = b.template_version_id \
       JOIN templates t ON t.id = tv.template_id \
       JOIN provisioner_jobs j ON j.id = b.job_id \
       WHERE t.deleted = FALSE AND j.started_at IS NOT NULL AND j.completed_at IS NOT NULL \
         AND j.started_at > $1 AND j.canceled_at IS NULL AND COALESCE(j.error, '') = '' \
     ) AS recent WHERE rn <= $2",
);

// Coder's GetDeploymentWorkspaceAgentStats without the percentiles: byte sums over every row of the window,
// session counts over each agent's latest row only (ties broken by id, so both engines pick the same row).
pub(super) const AGENT_STATS_SUMS: Stmt = Stmt::new(
    "GetDeploymentWorkspaceAgentStats",
    "SELECT CAST(COALESCE(SUM(rx_bytes), 0) AS BIGINT), CAST(COALESCE(SUM(tx_bytes), 0) AS BIGINT), \
       CAST(COALESCE(SUM(CASE WHEN rn = 1 THEN session_count_vscode ELSE 0 END), 0) AS BIGINT), \
       CAST(COALESCE(SUM(CASE WHEN rn = 1 THEN session_count_ssh ELSE 0 END), 0) AS BIGINT), \
       CAST(COALESCE(SUM(CASE WHEN rn = 1 THEN session_count_jetbrains ELSE 0 END), 0) AS BIGINT), \
       CAST(COALESCE(SUM(CASE WHEN rn = 1 THEN session_count_reconnecting_pty ELSE 0 END), 0) AS BIGINT) \
     FROM ( \
       SELECT rx_bytes, tx_bytes, session_count_vscode, session_count_ssh, session_count_jetbrains, \
         session_count_reconnecting_pty, \
         ROW_NUMBER() OVER (PARTITION BY agent_id ORDER BY created_at DESC, id DESC) AS rn \
       FROM workspace_agent_stats WHERE created_at > $1 \
     ) AS windowed",
);

// The latencies GetDeploymentWorkspaceAgentStats takes PERCENTILE_CONT of (only those > 0), sorted.
pub(super) const AGENT_LATENCIES: Stmt = Stmt::new(
    "GetDeploymentWorkspaceAgentLatencies",
    "SELECT connection_median_latency_ms FROM workspace_agent_stats \
     WHERE created_at > $1 AND connection_median_latency_ms > 0 ORDER BY connection_median_latency_ms",
);

// Coder's GetDeploymentWorkspaceStats: each non-deleted workspace's latest build and its job. `$1` is
// now − 30 s: a running job whose heartbeat (updated_at) is older counts as neither building nor anything else.
pub(super) const WORKSPACE_STATS: Stmt = Stmt::new(
    "GetDeploymentWorkspaceStats",
    "SELECT \
       COUNT(CASE WHEN j.started_at IS NULL THEN 1 END), \
       COUNT(CASE WHEN j.started_at IS NOT NULL AND j.canceled_at IS NULL AND j.completed_at IS NULL \
         AND j.updated_at > $1 THEN 1 END), \
       COUNT(CASE WHEN j.completed_at IS NOT NULL AND j.canceled_at IS NULL AND j.error IS NULL \
         AND b.transition = 'start' THEN 1 END), \
       COUNT(CASE WHEN (j.canceled_at IS NOT NULL AND j.error IS NOT NULL) \
         OR (j.completed_at IS NOT NULL AND j.error IS NOT NULL) THEN 1 END), \
       COUNT(CASE WHEN j.completed_at IS NOT NULL AND j.canceled_at IS NULL AND j.error IS NULL \
         AND b.transition = 'stop' THEN 1 END) \
     FROM workspaces w \
     JOIN workspace_builds b ON b.workspace_id = w.id AND b.build_number = \
       (SELECT MAX(x.build_number) FROM workspace_builds x WHERE x.workspace_id = w.id) \
     JOIN provisioner_jobs j ON j.id = b.job_id \
     WHERE w.deleted = FALSE",
);

pub(super) const TEMPLATE_BY_ID: Stmt = Stmt::new(
    "GetTemplateByID",
    "SELECT id, organization_id, name, display_name, active_version_id, created_at, updated_at \
     FROM templates WHERE id = $1 AND deleted = FALSE",
);
