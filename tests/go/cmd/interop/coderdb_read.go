package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/google/uuid"
	"golang.org/x/mod/semver"

	"github.com/coder/coder/v2/coderd/database"
	"github.com/coder/coder/v2/coderd/database/db2sdk"

	"agentwire.test/interop/internal/coderconst"
)

// coderdbRead reads back, with coderd's own queries and types, everything an agent endpoint writes for one agent,
// and fails on anything coderd could not decode or would not have written. It is the referee of agentwire's
// writes on Coder's schema.
func coderdbRead(args []string) int {
	fs := flag.NewFlagSet("coderdb read", flag.ContinueOnError)
	pgURL := fs.String("postgres-url", "", "PostgreSQL URL of a Coder database")
	agentArg := fs.String("agent-id", "", "the agent's id")
	inactive := fs.Duration("inactive-timeout", 0,
		"when set, also the agent's connection status as coderd derives it with this AgentInactiveDisconnectTimeout")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	agentID, err := uuid.Parse(*agentArg)
	if *pgURL == "" || err != nil {
		fmt.Fprintf(os.Stderr, "coderdb read: --postgres-url and a valid --agent-id are required (%v)\n", err)
		return exitUsage
	}
	sqlDB, err := openCoderDB(*pgURL)
	if err != nil {
		return coderdbFail("read", err)
	}
	defer sqlDB.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := readAgent(ctx, sqlDB, agentID, *inactive)
	if err != nil {
		return coderdbFail("read", err)
	}
	return coderdbPrint("read", out)
}

// reader collects one JSON document, stopping at the first error.
type reader struct {
	out map[string]any
	err error
}

func (r *reader) put(key string, v any, err error) {
	if r.err != nil {
		return
	}
	if err != nil {
		r.err = fmt.Errorf("%s: %w", key, err)
		return
	}
	r.out[key] = v
}

// check records a violation of what coderd writes, found in rows already read.
func (r *reader) check(key string, err error) {
	if r.err == nil && err != nil {
		r.err = fmt.Errorf("%s: %w", key, err)
	}
}

func (r *reader) row(key string, v any, err error) {
	if r.err != nil || err != nil {
		r.put(key, nil, err)
		return
	}
	j, err := jsonAt(v, key)
	if err != nil {
		r.err = err // its path names the key
		return
	}
	r.put(key, j, nil)
}

func readAgent(ctx context.Context, sqlDB *sql.DB, agentID uuid.UUID, inactive time.Duration) (map[string]any, error) {
	db := database.New(sqlDB)
	r := &reader{out: map[string]any{}}

	agent, err := db.GetWorkspaceAgentByID(ctx, agentID)
	r.row("agent", agent, err)
	if r.err != nil {
		return nil, r.err
	}
	r.check("agent", checkAgent(agent))
	// coderd's manifest and API decode the environment with this.
	env, err := db2sdk.WorkspaceAgentEnvironment(agent)
	r.put("environment_variables", env, err)
	if inactive > 0 {
		r.row("status", agent.Status(inactive), nil)
	}

	logs, err := db.GetWorkspaceAgentLogsAfter(ctx, database.GetWorkspaceAgentLogsAfterParams{AgentID: agentID})
	r.rows("logs", logs, err)
	var logBytes int
	for _, l := range logs {
		logBytes += len(l.Output)
	}
	r.put("logs_output_bytes", logBytes, nil)
	sources, err := db.GetWorkspaceAgentLogSourcesByAgentIDs(ctx, []uuid.UUID{agentID})
	r.rows("log_sources", sources, err)
	scripts, err := db.GetWorkspaceAgentScriptsByAgentIDs(ctx, []uuid.UUID{agentID})
	r.rows("scripts", scripts, err)
	metadata, err := db.GetWorkspaceAgentMetadata(ctx, database.GetWorkspaceAgentMetadataParams{WorkspaceAgentID: agentID})
	r.rows("metadata", metadata, err)
	r.check("metadata", checkMetadata(metadata))
	apps, err := db.GetWorkspaceAppsByAgentID(ctx, agentID)
	r.rows("apps", apps, err)
	appIDs := make([]uuid.UUID, 0, len(apps))
	for _, a := range apps {
		appIDs = append(appIDs, a.ID)
	}
	statuses, err := db.GetWorkspaceAppStatusesByAppIDs(ctx, appIDs)
	r.rows("app_statuses", statuses, err)
	devcontainers, err := db.GetWorkspaceAgentDevcontainersByAgentID(ctx, agentID)
	r.rows("devcontainers", devcontainers, err)
	memory, err := db.FetchMemoryResourceMonitorsByAgentID(ctx, agentID)
	if errors.Is(err, sql.ErrNoRows) {
		r.put("memory_monitor", nil, nil)
	} else {
		r.row("memory_monitor", memory, err)
	}
	volumes, err := db.FetchVolumesResourceMonitorsByAgentID(ctx, agentID)
	r.rows("volume_monitors", volumes, err)
	subAgents, err := db.GetWorkspaceAgentsByParentID(ctx, agentID)
	r.rows("sub_agents", subAgents, err)
	if r.err != nil {
		return nil, r.err
	}

	// The agent's build through its resource, as coderd's queries join them, then its workspace and the
	// workspace's latest build (where activity bumps the deadline).
	resource, err := db.GetWorkspaceResourceByID(ctx, agent.ResourceID)
	r.row("resource", resource, err)
	if r.err != nil {
		return nil, r.err
	}
	build, err := db.GetWorkspaceBuildByJobID(ctx, resource.JobID)
	r.row("build", build, err)
	if r.err != nil {
		return nil, r.err
	}
	timings, err := db.GetWorkspaceAgentScriptTimingsByBuildID(ctx, build.ID)
	var mine []database.GetWorkspaceAgentScriptTimingsByBuildIDRow
	for _, t := range timings {
		if t.WorkspaceAgentID == agentID {
			mine = append(mine, t)
		}
	}
	r.rows("script_timings", mine, err)
	workspace, err := db.GetWorkspaceByID(ctx, build.WorkspaceID)
	r.row("workspace", workspace, err)
	latest, err := db.GetLatestWorkspaceBuildByWorkspaceID(ctx, build.WorkspaceID)
	r.row("latest_build", latest, err)
	if r.err != nil {
		return nil, r.err
	}

	stats, err := selectModel[database.WorkspaceAgentStat](ctx, sqlDB, "workspace_agent_stats",
		"agent_id = $1 ORDER BY created_at, id", agentID)
	r.rows("stats", stats, err)
	r.check("stats", checkStats(stats))
	// coderd's own aggregate over every row since the epoch, this agent's line of it.
	aggregate, err := db.GetWorkspaceAgentStats(ctx, time.Unix(0, 0))
	var line any
	for _, a := range aggregate {
		if a.AgentID == agentID {
			line = a
		}
	}
	r.row("stats_aggregate", line, err)

	logRows, err := db.GetConnectionLogsOffset(ctx, database.GetConnectionLogsOffsetParams{
		WorkspaceID: build.WorkspaceID, LimitOpt: 1000,
	})
	var connections []database.ConnectionLog
	for _, l := range logRows {
		if l.ConnectionLog.AgentName == agent.Name {
			connections = append(connections, l.ConnectionLog)
		}
	}
	r.rows("connection_logs", connections, err)
	if r.err != nil {
		return nil, r.err
	}
	return r.out, nil
}

func (r *reader) rows(key string, v any, err error) {
	if r.err != nil || err != nil {
		r.put(key, nil, err)
		return
	}
	j, err := jsonAt(v, key)
	if err != nil {
		r.err = err // its path names the key
		return
	}
	if j == nil {
		j = []any{}
	}
	r.put(key, j, nil)
}

// checkAgent holds the agent row to what coderd's agent API validates before it writes (agentapi/lifecycle.go,
// UpdateStartup: a semver version; each subsystem once).
func checkAgent(a database.WorkspaceAgent) error {
	if a.Version != "" && !semver.IsValid(a.Version) {
		return fmt.Errorf("version %q is not a semver version, which coderd's UpdateStartup refuses", a.Version)
	}
	seen := map[database.WorkspaceAgentSubsystem]bool{}
	for _, s := range a.Subsystems {
		if seen[s] {
			return fmt.Errorf("subsystem %q twice, which coderd's UpdateStartup refuses", s)
		}
		seen[s] = true
	}
	if a.LogsLength < 0 || a.LogsLength > coderconst.LogsLimit {
		return fmt.Errorf("logs_length %d outside coderd's CHECK (0..%d)", a.LogsLength, coderconst.LogsLimit)
	}
	return nil
}

// checkMetadata holds values and errors to coderd's truncation (agentapi/metadata.go, BatchUpdateMetadata).
func checkMetadata(rows []database.WorkspaceAgentMetadatum) error {
	for _, m := range rows {
		if len(m.Value) > coderconst.MaxMetadataValueLen || len(m.Error) > coderconst.MaxMetadataValueLen {
			return fmt.Errorf("metadata %q: value of %d or error of %d bytes, over coderd's %d", m.Key, len(m.Value),
				len(m.Error), coderconst.MaxMetadataValueLen)
		}
	}
	return nil
}

// checkStats decodes connections_by_proto into what coderd writes there: workspacestats/batcher.go marshals one
// agent report's map[string]int64 per row.
func checkStats(rows []database.WorkspaceAgentStat) error {
	for _, s := range rows {
		var byProto map[string]int64
		if err := json.Unmarshal(s.ConnectionsByProto, &byProto); err != nil {
			return fmt.Errorf("stat %s: connections_by_proto %q is not coderd's map[string]int64: %w", s.ID,
				s.ConnectionsByProto, err)
		}
	}
	return nil
}
