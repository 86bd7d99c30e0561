package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/coder/coder/v2/coderd/database"
	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/codersdk/agentsdk"

	"agentwire.test/interop/internal/checks"
)

// coderdCheckNames are the checks of coderd-check in the order they run.
var coderdCheckNames = []string{"status", "logs", "metadata", "app", "usage", "db", "stopped"}

// coderdChecker holds what every check of coderd-check needs: coderd's API as
// the first user sees it, and optionally coderd's database.
type coderdChecker struct {
	client      *codersdk.Client
	serverURL   *url.URL
	agentID     uuid.UUID
	workspaceID uuid.UUID
	agentToken  string
	store       database.Store
	since       time.Time
	stable      time.Duration
	expectStats bool
}

// coderdCheck asserts, through coderd's own API (and, for `db`, Coder's own
// queries on coderd's database), what a workspace agent must have made
// coderd see, whoever serves the agent's endpoint. One JSON line per check
// (`call`'s format), then the summary line. Each check polls until it passes
// or --deadline passes.
//
//	interop coderd-check --url URL --token T --agent-id ID [--workspace-id ID] [--postgres-url URL]
//	    [--checks status,logs,…] [--deadline D] [--since TIME] [--stable D] [--agent-token T] [--expect-stats]
func coderdCheck(args []string) int {
	fs := flag.NewFlagSet("coderd-check", flag.ContinueOnError)
	rawURL := fs.String("url", "", "coderd's access URL (the front)")
	token := fs.String("token", "", "a user session token (coderd-setup's session_token)")
	agentArg := fs.String("agent-id", "", "the workspace agent's id")
	workspaceArg := fs.String("workspace-id", "", "the agent's workspace (usage, stopped; db checks it is the agent's)")
	pgURL := fs.String("postgres-url", "", "coderd's database (db)")
	agentToken := fs.String("agent-token", "", "the agent's token (stopped: a reconnect with it must be refused)")
	only := fs.String("checks", "status,logs,metadata,app", "comma-separated checks: "+strings.Join(coderdCheckNames, ","))
	deadline := fs.Duration("deadline", 2*time.Minute, "how long each check may poll before it fails")
	sinceArg := fs.String("since", "", "usage: RFC 3339 time, after the start build, before the usage; last_used_at (and the deadline) must move past it")
	stable := fs.Duration("stable", 0, "status: once connected and ready, the agent must stay so for this long")
	expectStats := fs.Bool("expect-stats", false, "db: the agent must have a stats row Coder's stats queries count (one with a connection latency)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	agentID, err := uuid.Parse(*agentArg)
	if err != nil || *rawURL == "" || *token == "" {
		fmt.Fprintf(os.Stderr, "coderd-check: --url, --token and a valid --agent-id are required (%v)\n", err)
		return exitUsage
	}
	serverURL, err := url.Parse(*rawURL)
	if err != nil {
		fmt.Fprintf(os.Stderr, "coderd-check: --url: %v\n", err)
		return exitUsage
	}
	c := &coderdChecker{
		client:      codersdk.New(serverURL, codersdk.WithSessionToken(*token)),
		serverURL:   serverURL,
		agentID:     agentID,
		agentToken:  *agentToken,
		stable:      *stable,
		expectStats: *expectStats,
	}
	if *workspaceArg != "" {
		if c.workspaceID, err = uuid.Parse(*workspaceArg); err != nil {
			fmt.Fprintf(os.Stderr, "coderd-check: --workspace-id: %v\n", err)
			return exitUsage
		}
	}
	if *sinceArg != "" {
		if c.since, err = time.Parse(time.RFC3339Nano, *sinceArg); err != nil {
			fmt.Fprintf(os.Stderr, "coderd-check: --since: %v\n", err)
			return exitUsage
		}
	}
	selected := map[string]bool{}
	for _, name := range strings.Split(*only, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(coderdCheckNames, name) {
			fmt.Fprintf(os.Stderr, "coderd-check: unknown check %q (known: %s)\n", name, strings.Join(coderdCheckNames, ","))
			return exitUsage
		}
		selected[name] = true
	}
	if (selected["usage"] || selected["stopped"]) && c.workspaceID == uuid.Nil {
		fmt.Fprintln(os.Stderr, "coderd-check: usage and stopped need --workspace-id")
		return exitUsage
	}
	if selected["usage"] && c.since.IsZero() {
		fmt.Fprintln(os.Stderr, "coderd-check: usage needs --since")
		return exitUsage
	}
	if selected["db"] {
		if *pgURL == "" {
			fmt.Fprintln(os.Stderr, "coderd-check: db needs --postgres-url")
			return exitUsage
		}
		db, err := sql.Open("postgres", *pgURL)
		if err != nil {
			fmt.Fprintf(os.Stderr, "coderd-check: open the database: %v\n", err)
			return exitFail
		}
		defer db.Close()
		c.store = database.New(db)
	}

	run := map[string]func(context.Context) (string, error){
		"status":   c.status,
		"logs":     c.logs,
		"metadata": c.metadata,
		"app":      c.app,
		"usage":    c.usage,
		"db":       c.db,
		"stopped":  c.stopped,
	}
	passed, failed := 0, 0
	for _, name := range coderdCheckNames {
		if !selected[name] {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), *deadline+c.stable)
		started := time.Now()
		detail, err := run[name](ctx)
		cancel()
		outcome := checks.Outcome{Check: name, Pass: err == nil, Detail: detail}
		if err != nil {
			outcome.Detail = fmt.Sprintf("after %s: %v", time.Since(started).Round(time.Millisecond), err)
			failed++
		} else {
			passed++
		}
		outcome.Print(os.Stdout)
	}
	fmt.Printf("interop: %d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return exitFail
	}
	return exitOK
}

// poll runs try until it reports done, an error that is not worth retrying, or
// ctx ends; the last reason it gave is the error then.
func poll(ctx context.Context, try func(context.Context) (done bool, why error)) error {
	for {
		done, why := try(ctx)
		if done {
			return why
		}
		select {
		case <-ctx.Done():
			if why == nil {
				why = ctx.Err()
			}
			return why
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func compact(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// status: coderd computes the agent's status from the connection times in its
// row (connected while last_connected_at is within twice its 15 s update
// period), so whoever serves the agent must keep them fresh; the lifecycle,
// its times and the agent's version come from the agent's own reports.
func (c *coderdChecker) status(ctx context.Context) (string, error) {
	var agent codersdk.WorkspaceAgent
	good := func(ctx context.Context) (bool, error) {
		var err error
		agent, err = c.client.WorkspaceAgent(ctx, c.agentID)
		switch {
		case err != nil:
			return false, err
		case agent.Status != codersdk.WorkspaceAgentConnected:
			return false, fmt.Errorf("status %q, want %q", agent.Status, codersdk.WorkspaceAgentConnected)
		case agent.LifecycleState != codersdk.WorkspaceAgentLifecycleReady:
			return false, fmt.Errorf("lifecycle %q, want %q", agent.LifecycleState, codersdk.WorkspaceAgentLifecycleReady)
		case agent.StartedAt == nil || agent.ReadyAt == nil:
			return false, fmt.Errorf("ready without started_at (%v) or ready_at (%v)", agent.StartedAt, agent.ReadyAt)
		case agent.ReadyAt.Before(*agent.StartedAt):
			return false, fmt.Errorf("ready_at %s before started_at %s", agent.ReadyAt, agent.StartedAt)
		case agent.Version == "":
			return false, errors.New("no version: the agent's startup report is missing")
		}
		return true, nil
	}
	if err := poll(ctx, good); err != nil {
		return "", err
	}
	if c.stable > 0 {
		until := time.Now().Add(c.stable)
		for time.Now().Before(until) {
			if ok, err := good(ctx); !ok {
				return "", fmt.Errorf("was connected and ready, then within %s: %w", c.stable, err)
			}
			time.Sleep(time.Second)
		}
	}
	return compact(map[string]any{
		"status": agent.Status, "lifecycle": agent.LifecycleState, "version": agent.Version,
		"api_version": agent.APIVersion, "expanded_directory": agent.ExpandedDirectory,
		"started_at": agent.StartedAt, "ready_at": agent.ReadyAt, "last_connected_at": agent.LastConnectedAt,
		"stable_for": c.stable.String(),
	}), nil
}

// logs: the startup script's lines, in order, under the startup script's log
// source, as coderd's logs endpoint serves them.
func (c *coderdChecker) logs(ctx context.Context) (string, error) {
	var detail string
	err := poll(ctx, func(ctx context.Context) (bool, error) {
		agent, err := c.client.WorkspaceAgent(ctx, c.agentID)
		if err != nil {
			return false, err
		}
		source := uuid.Nil
		for _, s := range agent.LogSources {
			if s.DisplayName == besideStartupName {
				source = s.ID
			}
		}
		if source == uuid.Nil {
			return false, fmt.Errorf("no log source %q among %s", besideStartupName, compact(agent.LogSources))
		}
		ch, closer, err := c.client.WorkspaceAgentLogsAfter(ctx, c.agentID, 0, false)
		if err != nil {
			return false, err
		}
		defer closer.Close()
		var lines []string
		for batch := range ch {
			for _, l := range batch {
				if l.SourceID == source {
					lines = append(lines, l.Output)
				}
			}
		}
		next := 0
		for _, line := range lines {
			if next < len(besideStartupLines) && line == besideStartupLines[next] {
				next++
			}
		}
		if next < len(besideStartupLines) {
			return false, fmt.Errorf("missing %q (in order) among the startup script's %d lines: %q", besideStartupLines[next], len(lines), lines)
		}
		detail = compact(map[string]any{"source": source, "lines": lines, "logs_length": agent.LogsLength})
		return true, nil
	})
	return detail, err
}

// metadata: coderd's watch-metadata stream (server-sent events, refreshed on
// the metadata batch channel of coderd's pubsub) carries both keys' values,
// and the one collected every second more than once.
func (c *coderdChecker) metadata(ctx context.Context) (string, error) {
	collected := map[time.Time]bool{}
	var last []codersdk.WorkspaceAgentMetadata
	var why error = errors.New("no update yet")
	for ctx.Err() == nil {
		updates, errs := c.client.WatchWorkspaceAgentMetadata(ctx, c.agentID)
	stream:
		for {
			select {
			case <-ctx.Done():
				break stream
			case err := <-errs:
				why = fmt.Errorf("the stream ended: %w", err)
				break stream
			case md := <-updates:
				last = md
				why = nil
				byKey := map[string]codersdk.WorkspaceAgentMetadata{}
				for _, m := range md {
					byKey[m.Description.Key] = m
				}
				for _, key := range []string{besideFastMetadata, besideSlowMetadata} {
					m, ok := byKey[key]
					switch {
					case !ok:
						why = fmt.Errorf("no key %q", key)
					case m.Result.CollectedAt.IsZero():
						why = fmt.Errorf("%q not collected yet", key)
					case m.Result.Error != "":
						why = fmt.Errorf("%q: error %q", key, m.Result.Error)
					case strings.TrimSpace(m.Result.Value) == "":
						why = fmt.Errorf("%q: empty value", key)
					}
				}
				if why != nil {
					continue
				}
				fast := byKey[besideFastMetadata]
				if v := strings.TrimSpace(fast.Result.Value); v != besideFastValue {
					return "", fmt.Errorf("%q = %q, its script echoes %q", besideFastMetadata, v, besideFastValue)
				}
				collected[fast.Result.CollectedAt] = true
				if len(collected) < 2 {
					why = fmt.Errorf("%q seen collected once; the stream must carry the next collection", besideFastMetadata)
					continue
				}
				return compact(map[string]any{"metadata": md, "fast_collections_seen": len(collected)}), nil
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return "", fmt.Errorf("%v (last update: %s)", why, compact(last))
}

// app: the app's health, as the agent's health checks reported it.
func (c *coderdChecker) app(ctx context.Context) (string, error) {
	var app codersdk.WorkspaceApp
	err := poll(ctx, func(ctx context.Context) (bool, error) {
		agent, err := c.client.WorkspaceAgent(ctx, c.agentID)
		if err != nil {
			return false, err
		}
		i := slices.IndexFunc(agent.Apps, func(a codersdk.WorkspaceApp) bool { return a.Slug == besideAppSlug })
		if i < 0 {
			return false, fmt.Errorf("no app %q", besideAppSlug)
		}
		app = agent.Apps[i]
		if app.Health != codersdk.WorkspaceAppHealthHealthy {
			return false, fmt.Errorf("app %q is %q, want %q", besideAppSlug, app.Health, codersdk.WorkspaceAppHealthHealthy)
		}
		return true, nil
	})
	return compact(map[string]any{"slug": app.Slug, "health": app.Health, "healthcheck": app.Healthcheck}), err
}

// usage: a session reported in the agent's stats marks the workspace used
// (last_used_at) and bumps its build's deadline to now + the template's
// activity bump, so both move past --since, which the caller takes after the
// build and before the stats.
func (c *coderdChecker) usage(ctx context.Context) (string, error) {
	var detail map[string]any
	err := poll(ctx, func(ctx context.Context) (bool, error) {
		ws, err := c.client.Workspace(ctx, c.workspaceID)
		if err != nil {
			return false, err
		}
		tpl, err := c.client.Template(ctx, ws.TemplateID)
		if err != nil {
			return false, err
		}
		deadline := ws.LatestBuild.Deadline
		detail = map[string]any{
			"since": c.since, "last_used_at": ws.LastUsedAt, "deadline": deadline, "activity_bump_ms": tpl.ActivityBumpMillis,
		}
		if !ws.LastUsedAt.After(c.since) {
			return false, fmt.Errorf("last_used_at %s is not after %s", ws.LastUsedAt, c.since)
		}
		if deadline.Valid && tpl.ActivityBumpMillis > 0 {
			bumped := c.since.Add(time.Duration(tpl.ActivityBumpMillis) * time.Millisecond)
			if deadline.Time.Before(bumped) {
				return false, fmt.Errorf("deadline %s was not bumped past since + activity bump (%s)", deadline.Time, bumped)
			}
		}
		return true, nil
	})
	return compact(detail), err
}

// stopped: after a stop build the agent's connection is over (coderd shows it
// disconnected since after the stop), and its token no longer opens the agent endpoint: the
// endpoint accepts only agents of a workspace's latest build (or of the start
// build a running stop build follows).
func (c *coderdChecker) stopped(ctx context.Context) (string, error) {
	detail := map[string]any{}
	err := poll(ctx, func(ctx context.Context) (bool, error) {
		ws, err := c.client.Workspace(ctx, c.workspaceID)
		if err != nil {
			return false, err
		}
		b := ws.LatestBuild
		detail["latest_build"] = map[string]any{"transition": b.Transition, "job": b.Job.Status, "number": b.BuildNumber}
		if b.Transition != codersdk.WorkspaceTransitionStop || b.Job.Status != codersdk.ProvisionerJobSucceeded {
			return false, fmt.Errorf("latest build is %s/%s, want %s/%s", b.Transition, b.Job.Status, codersdk.WorkspaceTransitionStop, codersdk.ProvisionerJobSucceeded)
		}
		agent, err := c.client.WorkspaceAgent(ctx, c.agentID)
		if err != nil {
			return false, err
		}
		detail["status"], detail["disconnected_at"], detail["stop_build_created_at"] = agent.Status, agent.DisconnectedAt, b.CreatedAt
		if agent.Status != codersdk.WorkspaceAgentDisconnected {
			return false, fmt.Errorf("agent status %q, want %q", agent.Status, codersdk.WorkspaceAgentDisconnected)
		}
		// An earlier disconnect (another session of the agent's token ending, or a connection time left to go
		// stale, which coderd reports as a disconnect at the last connection) is not the session the stop ended.
		if agent.DisconnectedAt == nil || !agent.DisconnectedAt.After(b.CreatedAt) {
			return false, fmt.Errorf("disconnected at %v, not after the stop build was created (%s)", agent.DisconnectedAt, b.CreatedAt)
		}
		return true, nil
	})
	if err != nil || c.agentToken == "" {
		return compact(detail), err
	}
	// The agent's own client, as its reconnect loop dials.
	client := agentsdk.New(c.serverURL, agentsdk.WithFixedToken(c.agentToken))
	conn, err := client.ConnectRPC(ctx)
	if err == nil {
		_ = conn.Close()
		return compact(detail), errors.New("the stopped agent's token still opens the agent endpoint")
	}
	var sdkErr *codersdk.Error
	if !errors.As(err, &sdkErr) || sdkErr.StatusCode() != http.StatusUnauthorized {
		return compact(detail), fmt.Errorf("a reconnect with the stopped agent's token failed, but not with 401: %w", err)
	}
	detail["reconnect"] = map[string]any{"status": sdkErr.StatusCode(), "message": sdkErr.Message}
	return compact(detail), nil
}

// db: the agent's rows, read back with Coder's own sqlc queries. A row that
// does not decode into Coder's types (an enum value it does not know, a NULL
// where it has none, a wrong type) fails here, as it would fail coderd.
func (c *coderdChecker) db(ctx context.Context) (string, error) {
	s := c.store
	detail := map[string]any{}
	agent, err := s.GetWorkspaceAgentByID(ctx, c.agentID)
	if err != nil {
		return "", fmt.Errorf("GetWorkspaceAgentByID: %w", err)
	}
	if !agent.LifecycleState.Valid() {
		return "", fmt.Errorf("lifecycle_state %q is not one of Coder's", agent.LifecycleState)
	}
	for _, sub := range agent.Subsystems {
		if !sub.Valid() {
			return "", fmt.Errorf("subsystem %q is not one of Coder's", sub)
		}
	}
	if !agent.FirstConnectedAt.Valid || !agent.LastConnectedAt.Valid {
		return "", errors.New("first_connected_at or last_connected_at is NULL: no connection of the agent was recorded")
	}
	if agent.Version == "" {
		return "", errors.New("version is empty: the agent's startup report was not stored")
	}
	detail["agent"] = map[string]any{"lifecycle": agent.LifecycleState, "version": agent.Version, "api_version": agent.APIVersion, "logs_length": agent.LogsLength}

	lifecycle, err := s.GetWorkspaceAgentLifecycleStateByID(ctx, c.agentID)
	if err != nil {
		return "", fmt.Errorf("GetWorkspaceAgentLifecycleStateByID: %w", err)
	}
	if lifecycle.LifecycleState != agent.LifecycleState {
		return "", fmt.Errorf("the lifecycle read twice differs: %q then %q", agent.LifecycleState, lifecycle.LifecycleState)
	}

	ws, err := s.GetWorkspaceByAgentID(ctx, c.agentID)
	if err != nil {
		return "", fmt.Errorf("GetWorkspaceByAgentID: %w", err)
	}
	if c.workspaceID != uuid.Nil && ws.ID != c.workspaceID {
		return "", fmt.Errorf("the agent's workspace is %s, not %s", ws.ID, c.workspaceID)
	}
	resource, err := s.GetWorkspaceResourceByID(ctx, agent.ResourceID)
	if err != nil {
		return "", fmt.Errorf("GetWorkspaceResourceByID: %w", err)
	}
	build, err := s.GetWorkspaceBuildByJobID(ctx, resource.JobID)
	if err != nil {
		return "", fmt.Errorf("GetWorkspaceBuildByJobID: %w", err)
	}
	latest, err := s.GetLatestWorkspaceBuildByWorkspaceID(ctx, ws.ID)
	if err != nil {
		return "", fmt.Errorf("GetLatestWorkspaceBuildByWorkspaceID: %w", err)
	}
	detail["workspace"] = map[string]any{"id": ws.ID, "last_used_at": ws.LastUsedAt, "agent_build": build.BuildNumber, "latest_build": latest.BuildNumber, "deadline": latest.Deadline}

	sources, err := s.GetWorkspaceAgentLogSourcesByAgentIDs(ctx, []uuid.UUID{c.agentID})
	if err != nil {
		return "", fmt.Errorf("GetWorkspaceAgentLogSourcesByAgentIDs: %w", err)
	}
	sourceIDs := map[uuid.UUID]string{}
	for _, src := range sources {
		sourceIDs[src.ID] = src.DisplayName
	}
	logs, err := s.GetWorkspaceAgentLogsAfter(ctx, database.GetWorkspaceAgentLogsAfterParams{AgentID: c.agentID})
	if err != nil {
		return "", fmt.Errorf("GetWorkspaceAgentLogsAfter: %w", err)
	}
	if len(logs) == 0 {
		return "", errors.New("no logs")
	}
	logBytes := 0
	for _, l := range logs {
		if _, ok := sourceIDs[l.LogSourceID]; !ok {
			return "", fmt.Errorf("log %d is under %s, not one of the agent's log sources", l.ID, l.LogSourceID)
		}
		if !l.Level.Valid() {
			return "", fmt.Errorf("log %d: level %q is not one of Coder's", l.ID, l.Level)
		}
		logBytes += len(l.Output)
	}
	// coderd adds each batch's output bytes to logs_length in the insert's own statement; its log limit counts on it.
	if int(agent.LogsLength) != logBytes {
		return "", fmt.Errorf("logs_length is %d, the stored logs hold %d bytes", agent.LogsLength, logBytes)
	}
	detail["logs"] = map[string]any{"rows": len(logs), "bytes": logBytes, "sources": len(sources)}

	metadata, err := s.GetWorkspaceAgentMetadata(ctx, database.GetWorkspaceAgentMetadataParams{WorkspaceAgentID: c.agentID})
	if err != nil {
		return "", fmt.Errorf("GetWorkspaceAgentMetadata: %w", err)
	}
	collected := 0
	for _, m := range metadata {
		if !m.CollectedAt.IsZero() && m.CollectedAt.Year() > 1 {
			collected++
		}
	}
	if len(metadata) != 2 || collected != 2 {
		return "", fmt.Errorf("%d metadata rows, %d of them collected; the template describes 2", len(metadata), collected)
	}
	detail["metadata"] = len(metadata)

	apps, err := s.GetWorkspaceAppsByAgentID(ctx, c.agentID)
	if err != nil {
		return "", fmt.Errorf("GetWorkspaceAppsByAgentID: %w", err)
	}
	appIDs := make([]uuid.UUID, 0, len(apps))
	for _, a := range apps {
		if !a.Health.Valid() {
			return "", fmt.Errorf("app %q: health %q is not one of Coder's", a.Slug, a.Health)
		}
		appIDs = append(appIDs, a.ID)
	}
	statuses, err := s.GetWorkspaceAppStatusesByAppIDs(ctx, appIDs)
	if err != nil {
		return "", fmt.Errorf("GetWorkspaceAppStatusesByAppIDs: %w", err)
	}
	detail["apps"] = map[string]any{"apps": len(apps), "statuses": len(statuses)}

	scripts, err := s.GetWorkspaceAgentScriptsByAgentIDs(ctx, []uuid.UUID{c.agentID})
	if err != nil {
		return "", fmt.Errorf("GetWorkspaceAgentScriptsByAgentIDs: %w", err)
	}
	timings, err := s.GetWorkspaceAgentScriptTimingsByBuildID(ctx, build.ID)
	if err != nil {
		return "", fmt.Errorf("GetWorkspaceAgentScriptTimingsByBuildID: %w", err)
	}
	startupTimed := false
	for _, t := range timings {
		if !t.Stage.Valid() || !t.Status.Valid() {
			return "", fmt.Errorf("script timing of %q: stage %q or status %q is not one of Coder's", t.DisplayName, t.Stage, t.Status)
		}
		if t.EndedAt.Before(t.StartedAt) {
			return "", fmt.Errorf("script timing of %q ends (%s) before it starts (%s)", t.DisplayName, t.EndedAt, t.StartedAt)
		}
		if t.WorkspaceAgentID == c.agentID && t.DisplayName == besideStartupName &&
			t.Stage == database.WorkspaceAgentScriptTimingStageStart && t.Status == database.WorkspaceAgentScriptTimingStatusOk {
			startupTimed = true
		}
	}
	if !startupTimed {
		return "", fmt.Errorf("no successful start-stage timing of %q among %s", besideStartupName, compact(timings))
	}
	detail["scripts"] = map[string]any{"scripts": len(scripts), "timings": len(timings)}

	since := agent.CreatedAt.Add(-time.Minute)
	stats, err := s.GetWorkspaceAgentStats(ctx, since)
	if err != nil {
		return "", fmt.Errorf("GetWorkspaceAgentStats: %w", err)
	}
	labelled, err := s.GetWorkspaceAgentStatsAndLabels(ctx, since)
	if err != nil {
		return "", fmt.Errorf("GetWorkspaceAgentStatsAndLabels: %w", err)
	}
	i := slices.IndexFunc(stats, func(r database.GetWorkspaceAgentStatsRow) bool { return r.AgentID == c.agentID })
	if i >= 0 {
		r := stats[i]
		if r.WorkspaceID != ws.ID || r.TemplateID != ws.TemplateID || r.UserID != ws.OwnerID {
			return "", fmt.Errorf("the agent's stats name workspace %s, template %s, user %s; the agent's are %s, %s, %s",
				r.WorkspaceID, r.TemplateID, r.UserID, ws.ID, ws.TemplateID, ws.OwnerID)
		}
		detail["stats"] = map[string]any{"rx_bytes": r.WorkspaceRxBytes, "tx_bytes": r.WorkspaceTxBytes, "latency_50": r.WorkspaceConnectionLatency50, "ssh_sessions": r.SessionCountSSH}
	} else if c.expectStats {
		return "", fmt.Errorf("no stats of the agent among %d agents' since %s", len(stats), since)
	}
	detail["stats_labelled_rows"] = len(labelled)

	volumes, err := s.FetchVolumesResourceMonitorsByAgentID(ctx, c.agentID)
	if err != nil {
		return "", fmt.Errorf("FetchVolumesResourceMonitorsByAgentID: %w", err)
	}
	if _, err := s.FetchMemoryResourceMonitorsByAgentID(ctx, c.agentID); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("FetchMemoryResourceMonitorsByAgentID: %w", err)
	}
	devcontainers, err := s.GetWorkspaceAgentDevcontainersByAgentID(ctx, c.agentID)
	if err != nil {
		return "", fmt.Errorf("GetWorkspaceAgentDevcontainersByAgentID: %w", err)
	}
	detail["other"] = map[string]any{"volume_monitors": len(volumes), "devcontainers": len(devcontainers)}
	return compact(detail), nil
}

// coderdStop stops a workspace through coderd, as a user does, and waits for
// the stop build's job: the agent's token stops being valid then.
//
//	interop coderd-stop --url URL --token T --workspace-id ID [--timeout D]
func coderdStop(args []string) int {
	fs := flag.NewFlagSet("coderd-stop", flag.ContinueOnError)
	rawURL := fs.String("url", "", "coderd's access URL (the front)")
	token := fs.String("token", "", "a user session token")
	workspaceArg := fs.String("workspace-id", "", "the workspace to stop")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long the stop build may take")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	workspaceID, err := uuid.Parse(*workspaceArg)
	if err != nil || *rawURL == "" || *token == "" {
		fmt.Fprintf(os.Stderr, "coderd-stop: --url, --token and a valid --workspace-id are required (%v)\n", err)
		return exitUsage
	}
	serverURL, err := url.Parse(*rawURL)
	if err != nil {
		fmt.Fprintf(os.Stderr, "coderd-stop: --url: %v\n", err)
		return exitUsage
	}
	client := codersdk.New(serverURL, codersdk.WithSessionToken(*token))
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	build, err := client.CreateWorkspaceBuild(ctx, workspaceID, codersdk.CreateWorkspaceBuildRequest{
		Transition: codersdk.WorkspaceTransitionStop,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "coderd-stop: create the stop build: %v\n", err)
		return exitFail
	}
	if err := waitForJob(ctx, "stop build", func(ctx context.Context) (codersdk.ProvisionerJob, error) {
		b, err := client.WorkspaceBuild(ctx, build.ID)
		return b.Job, err
	}); err != nil {
		fmt.Fprintf(os.Stderr, "coderd-stop: %v\n", err)
		return exitFail
	}
	fmt.Println(compact(map[string]any{"build_id": build.ID, "build_number": build.BuildNumber, "transition": build.Transition, "job": codersdk.ProvisionerJobSucceeded}))
	return exitOK
}
