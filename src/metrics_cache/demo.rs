//! Realistic history for demos, benchmarks and the correctness tests: users, templates (one deleted), workspaces
//! (some deleted), builds whose jobs succeed, fail, get cancelled or are still pending or running, with durations
//! that vary by transition, and agent stats spread over the days. Deterministic for a given seed.

use agentwire_store::aggregates::{DemoBuild, DemoHistory, DemoStat, DemoTemplate, DemoUser, DemoWorkspace};
use agentwire_store::UnixMicros;
use uuid::Uuid;

/// Workspaces per user.
pub const DEFAULT_WORKSPACES_PER_USER: usize = 5;
/// Agent stats rows per workspace per day.
pub const DEFAULT_STATS_PER_WORKSPACE_DAY: usize = 10;
/// Most workspaces one run generates.
pub const MAX_WORKSPACES: usize = 1_000_000;
/// Most days of history.
pub const MAX_DAYS: usize = 3650;
/// Most agent stats rows one run generates (memory: ~200 bytes a row before insertion).
pub const MAX_STATS_ROWS: usize = 20_000_000;
/// Builds per workspace at most.
const MAX_BUILDS_PER_WORKSPACE: u64 = 6;

const MICROS_PER_SEC: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;

/// What to generate.
#[derive(Debug, Clone)]
pub struct DemoSpec {
    pub workspaces: usize,
    pub days: usize,
    pub stats_per_workspace_day: usize,
    pub seed: u64,
    /// The end of the history (unix µs); stats reach up to it, so the last minutes have rows too.
    pub now: UnixMicros,
}

/// A refused [`DemoSpec`].
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{what} must be in 1..={max}, not {got}")]
    OutOfRange { what: &'static str, max: usize, got: usize },
}

/// splitmix64: small, fast, and good enough for synthetic data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo).max(1) as u64) as i64
    }
    fn uuid(&mut self) -> Uuid {
        let bytes = (u128::from(self.next()) << 64 | u128::from(self.next())).to_be_bytes();
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Generates the history `spec` describes.
pub fn generate(spec: &DemoSpec) -> Result<DemoHistory, DemoError> {
    let check = |what, max, got| {
        if got == 0 || got > max {
            Err(DemoError::OutOfRange { what, max, got })
        } else {
            Ok(())
        }
    };
    check("workspaces", MAX_WORKSPACES, spec.workspaces)?;
    check("days", MAX_DAYS, spec.days)?;
    let rows = spec.workspaces.saturating_mul(spec.days).saturating_mul(spec.stats_per_workspace_day);
    if rows > MAX_STATS_ROWS {
        return Err(DemoError::OutOfRange {
            what: "workspaces × days × stats per day",
            max: MAX_STATS_ROWS,
            got: rows,
        });
    }
    let mut rng = Rng(spec.seed);
    let start = spec.now - spec.days as i64 * MICROS_PER_DAY;
    let mut h = DemoHistory::default();

    let n_users = spec.workspaces.div_ceil(DEFAULT_WORKSPACES_PER_USER);
    for i in 0..n_users {
        h.users.push(DemoUser {
            id: rng.uuid(),
            username: format!("demo-user-{i}-{:x}", rng.below(1 << 32)),
            created_at: start,
        });
    }
    let n_templates = (spec.workspaces / 100).clamp(2, 10);
    for i in 0..n_templates {
        h.templates.push(DemoTemplate {
            id: rng.uuid(),
            name: format!("demo-template-{i}-{:x}", rng.below(1 << 32)),
            version_id: rng.uuid(),
            import_job_id: rng.uuid(),
            // One deleted template (when there are a few), so the "non-deleted templates" filters matter.
            deleted: n_templates > 2 && i == n_templates - 1,
            created_at: start,
        });
    }
    let mut agents = Vec::with_capacity(spec.workspaces);
    for i in 0..spec.workspaces {
        let owner = h.users[i / DEFAULT_WORKSPACES_PER_USER].id;
        let template = &h.templates[rng.below(n_templates as u64) as usize];
        let deleted = rng.chance(5);
        let ws = DemoWorkspace {
            id: rng.uuid(),
            owner_id: owner,
            template_id: template.id,
            name: format!("ws-{i}"),
            deleted,
            created_at: start,
        };
        let n_builds = 1 + rng.below(MAX_BUILDS_PER_WORKSPACE);
        let step = (spec.now - start) / (n_builds as i64 + 1);
        for b in 0..n_builds {
            let last = b + 1 == n_builds;
            let transition = match (last && deleted, b % 2) {
                (true, _) => "delete",
                (false, 0) => "start",
                _ => "stop",
            };
            let created_at = start + step * b as i64 + rng.range(0, step.max(2) / 2);
            let secs = match transition {
                "start" => rng.range(20, 600),
                "stop" => rng.range(5, 120),
                _ => rng.range(5, 60),
            };
            let started = created_at + rng.range(0, 10) * MICROS_PER_SEC;
            let done = started + secs * MICROS_PER_SEC + rng.range(0, MICROS_PER_SEC);
            let mut build = DemoBuild {
                id: rng.uuid(),
                workspace_id: ws.id,
                version_id: template.version_id,
                build_number: b as i64 + 1,
                transition,
                initiator_id: owner,
                job_id: rng.uuid(),
                created_at,
                job_updated_at: done,
                started_at: Some(started),
                completed_at: Some(done),
                canceled_at: None,
                error: None,
            };
            match rng.below(100) {
                0..=6 => build.error = Some("terraform apply: exit status 1".into()),
                7..=9 => {
                    build.canceled_at = Some(done);
                    build.completed_at = Some(done);
                    build.error = Some("canceled".into());
                }
                // Coder's schema allows an empty error; its queries treat it differently (see the reference).
                10 => build.error = Some(String::new()),
                11..=12 if last && !deleted => {
                    build.started_at = None;
                    build.completed_at = None;
                    build.job_updated_at = created_at;
                }
                13..=15 if last && !deleted => {
                    build.completed_at = None;
                    // Half with a live heartbeat, half stale (not counted as building).
                    build.job_updated_at = if rng.chance(50) { spec.now } else { spec.now - 600 * MICROS_PER_SEC };
                }
                _ => {}
            }
            h.builds.push(build);
        }
        agents.push((rng.uuid(), ws.id, owner, template.id));
        h.workspaces.push(ws);
    }
    h.stats.reserve(rows);
    for day in 0..spec.days as i64 {
        let day_start = start + day * MICROS_PER_DAY;
        for &(agent, workspace, user, template) in &agents {
            for _ in 0..spec.stats_per_workspace_day {
                let connected = !rng.chance(30);
                let created_at = day_start + rng.range(0, MICROS_PER_DAY);
                h.stats.push(DemoStat {
                    id: rng.uuid(),
                    created_at,
                    user_id: user,
                    agent_id: agent,
                    workspace_id: workspace,
                    template_id: template,
                    connection_count: if connected { rng.range(1, 4) } else { 0 },
                    rx_bytes: rng.range(0, 5_000_000),
                    tx_bytes: rng.range(0, 5_000_000),
                    connection_median_latency_ms: if connected {
                        rng.range(5_000, 200_000) as f64 / 1000.0
                    } else {
                        -1.0
                    },
                    session_count_vscode: if connected { rng.range(0, 3) } else { 0 },
                    session_count_jetbrains: if connected { rng.range(0, 2) } else { 0 },
                    session_count_reconnecting_pty: if connected { rng.range(0, 2) } else { 0 },
                    session_count_ssh: if connected { rng.range(0, 3) } else { 0 },
                });
            }
        }
    }
    Ok(h)
}
