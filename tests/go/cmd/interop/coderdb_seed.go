package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"cdr.dev/slog/v3"
	agentproto "github.com/coder/coder/v2/agent/proto"
	"github.com/coder/coder/v2/coderd/agentapi"
	"github.com/coder/coder/v2/coderd/database"
	"github.com/coder/coder/v2/coderd/database/dbfake"
	"github.com/coder/coder/v2/coderd/database/dbgen"
	"github.com/coder/coder/v2/coderd/database/dbtime"
	"github.com/coder/coder/v2/coderd/gitsshkey"
	"github.com/coder/coder/v2/coderd/rbac"
	"github.com/coder/coder/v2/coderd/schedule"
	sdkproto "github.com/coder/coder/v2/provisionersdk/proto"
	"github.com/coder/quartz"
)

// The template's schedule: an 8 h default TTL with coderd's default 1 h activity bump. The start build's deadline
// is due in 30 min, inside the last 95 % of a bump (ActivityBumpWorkspace's condition), so the first activity
// bump moves it; max_deadline stays far enough away not to clamp that bump.
const (
	seedDefaultTTL   = 8 * time.Hour
	seedActivityBump = time.Hour
	seedDeadlineIn   = 30 * time.Minute
	seedMaxDeadline  = 8 * time.Hour
	// last_used_at starts in the past so that a bump to now is visible.
	seedLastUsedAgo = time.Hour
)

type seedOptions struct {
	agents               int
	withDeletedWorkspace bool
	username             string
}

// coderdbSeed builds a deployment the way coderd's own test fixtures do: dbgen and dbfake for the rows, and for
// the agents' rows coderd's provisioner code itself (provisionerdserver.InsertWorkspaceResource, reached through
// dbfake), so apps, scripts, log sources, metadata, devcontainers and monitors are exactly what a completed
// `terraform apply` leaves behind. The sub-agent is made by coderd's agent API (agentapi.SubAgentAPI). Before
// printing, every token is checked against coderd's own token query.
func coderdbSeed(args []string) int {
	fs := flag.NewFlagSet("coderdb seed", flag.ContinueOnError)
	pgURL := fs.String("postgres-url", "", "PostgreSQL URL of a database migrated by `coderdb migrate`")
	var opts seedOptions
	fs.IntVar(&opts.agents, "agents", 1, "agents in the main workspace's resource (the first is named main)")
	fs.BoolVar(&opts.withDeletedWorkspace, "with-deleted-workspace", false, "also a deleted workspace with an agent")
	fs.StringVar(&opts.username, "username", "owner", "the owner's username")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *pgURL == "" || opts.agents < 1 {
		fmt.Fprintln(os.Stderr, "coderdb seed: --postgres-url and --agents >= 1 are required")
		return exitUsage
	}
	sqlDB, err := openCoderDB(*pgURL)
	if err != nil {
		return coderdbFail("seed", err)
	}
	defer sqlDB.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out map[string]any
	err = runSeedTB(ctx, func(t *seedTB) {
		out = seedDeployment(ctx, t, database.New(sqlDB), opts)
	})
	if err != nil {
		return coderdbFail("seed", err)
	}
	return coderdbPrint("seed", out)
}

func seedDeployment(ctx context.Context, t *seedTB, db database.Store, opts seedOptions) map[string]any {
	now := dbtime.Now()

	// The migrations create the default organization, as on a fresh deployment.
	org, err := db.GetDefaultOrganization(ctx)
	require.NoError(t, err, "default organization")

	// As coderd's first-user setup: the owner role, a git SSH key of the deployment's default algorithm, and
	// membership of the default organization.
	owner := dbgen.User(t, db, database.User{
		Username:  opts.username,
		Email:     opts.username + "@example.com",
		Name:      "Owner",
		RBACRoles: []string{rbac.RoleOwner().String()},
		LoginType: database.LoginTypePassword,
		Status:    database.UserStatusActive,
	})
	private, public, err := gitsshkey.Generate(gitsshkey.AlgorithmEd25519)
	require.NoError(t, err, "generate git SSH key")
	sshKey := dbgen.GitSSHKey(t, db, database.GitSSHKey{UserID: owner.ID, PrivateKey: private, PublicKey: public})
	dbgen.OrganizationMember(t, db, database.OrganizationMember{OrganizationID: org.ID, UserID: owner.ID})
	apiKey, apiToken := dbgen.APIKey(t, db, database.APIKey{UserID: owner.ID, ExpiresAt: now.Add(24 * time.Hour)})

	versionID := uuid.New()
	tpl := dbgen.Template(t, db, database.Template{
		OrganizationID:  org.ID,
		CreatedBy:       owner.ID,
		ActiveVersionID: versionID,
		Name:            "docker",
		DisplayName:     "Docker",
		Description:     "Develop in Docker",
		Icon:            "/icon/docker.png",
	})
	tpl, err = schedule.NewAGPLTemplateScheduleStore().Set(ctx, db, tpl, schedule.TemplateScheduleOptions{
		DefaultTTL:   seedDefaultTTL,
		ActivityBump: seedActivityBump,
	})
	require.NoError(t, err, "template schedule")
	version := dbfake.TemplateVersion(t, db).Seed(database.TemplateVersion{
		ID:             versionID,
		TemplateID:     uuid.NullUUID{UUID: tpl.ID, Valid: true},
		OrganizationID: org.ID,
		CreatedBy:      owner.ID,
		Name:           "v1",
	}).Do().TemplateVersion
	tpl, err = db.GetTemplateByID(ctx, tpl.ID)
	require.NoError(t, err, "template")

	newWorkspace := func(name string, deleted bool) database.WorkspaceTable {
		return database.WorkspaceTable{
			OrganizationID:   org.ID,
			OwnerID:          owner.ID,
			TemplateID:       tpl.ID,
			Name:             name,
			Ttl:              sql.NullInt64{Int64: int64(seedDefaultTTL), Valid: true},
			AutomaticUpdates: database.AutomaticUpdatesNever,
			LastUsedAt:       now.Add(-seedLastUsedAgo),
			Deleted:          deleted,
		}
	}
	startBuild := func(number int32) database.WorkspaceBuild {
		return database.WorkspaceBuild{
			TemplateVersionID: version.ID,
			BuildNumber:       number,
			Transition:        database.WorkspaceTransitionStart,
			InitiatorID:       owner.ID,
			Reason:            database.BuildReasonInitiator,
			Deadline:          now.Add(seedDeadlineIn),
			MaxDeadline:       now.Add(seedMaxDeadline),
		}
	}
	build := func(ws database.WorkspaceTable, number int32, agents ...*sdkproto.Agent) dbfake.WorkspaceResponse {
		return dbfake.WorkspaceBuild(t, db, ws).Seed(startBuild(number)).Resource(&sdkproto.Resource{
			Name: "dev", Type: "docker_container", Agents: agents,
		}).Do()
	}

	// The main workspace.
	var agentProtos []*sdkproto.Agent
	for i := range opts.agents {
		name := "main"
		if i > 0 {
			name = fmt.Sprintf("agent-%d", i+1)
		}
		agentProtos = append(agentProtos, seedAgentProto(name, i))
	}
	primary := build(newWorkspace("dev", false), 1, agentProtos...)
	resources, err := db.GetWorkspaceResourcesByJobID(ctx, primary.Build.JobID)
	require.NoError(t, err, "resources")
	require.Len(t, resources, 1, "resources of the main build")

	var agents []any
	var parent database.WorkspaceAgent
	for i, p := range agentProtos {
		row := agentByName(t, primary.Agents, p.Name)
		agent := describeAgent(ctx, t, db, row, p.GetToken())
		if i == 0 {
			parent = row
		}
		agents = append(agents, agent)
	}

	// A sub-agent of the first agent, made as the agent's CreateSubAgent RPC makes one.
	subAPI := &agentapi.SubAgentAPI{
		OwnerID:        owner.ID,
		OrganizationID: org.ID,
		AgentID:        parent.ID,
		AgentFn: func(ctx context.Context) (database.WorkspaceAgent, error) {
			return db.GetWorkspaceAgentByID(ctx, parent.ID)
		},
		Log:      slog.Make(),
		Clock:    quartz.NewReal(),
		Database: db,
	}
	created, err := subAPI.CreateSubAgent(ctx, &agentproto.CreateSubAgentRequest{
		Name:            "main-devcontainer",
		Directory:       "/workspaces/app",
		Architecture:    "amd64",
		OperatingSystem: "linux",
		DisplayApps: []agentproto.CreateSubAgentRequest_DisplayApp{
			agentproto.CreateSubAgentRequest_VSCODE, agentproto.CreateSubAgentRequest_WEB_TERMINAL,
		},
		Apps: []*agentproto.CreateSubAgentRequest_App{{Slug: "preview", Url: ptr("http://localhost:3000")}},
	})
	require.NoError(t, err, "create sub-agent")
	require.Empty(t, created.GetAppCreationErrors(), "sub-agent apps")
	subID, err := uuid.FromBytes(created.GetAgent().GetId())
	require.NoError(t, err, "sub-agent id")
	subToken, err := uuid.FromBytes(created.GetAgent().GetAuthToken())
	require.NoError(t, err, "sub-agent token")

	// A workspace whose first start build was superseded by a second one: the first build's agent is no longer
	// the latest build's, so its token does not authenticate.
	supersededWS := newWorkspace("superseded", false)
	old := build(supersededWS, 1, seedAgentProto("main", 0))
	supersededWS.ID = old.Workspace.ID
	newer := build(supersededWS, 2, seedAgentProto("main", 0))
	oldAgent := agentByName(t, old.Agents, "main")
	newAgent := agentByName(t, newer.Agents, "main")

	out := map[string]any{
		"organization": map[string]any{"id": org.ID, "name": org.Name},
		"owner": map[string]any{
			"id": owner.ID, "username": owner.Username, "email": owner.Email,
			"api_key_id": apiKey.ID, "api_token": apiToken, "git_ssh_public_key": sshKey.PublicKey,
		},
		"template": map[string]any{
			"id": tpl.ID, "name": tpl.Name, "active_version_id": tpl.ActiveVersionID,
			"default_ttl_ns": tpl.DefaultTTL, "activity_bump_ns": tpl.ActivityBump,
		},
		"template_version": map[string]any{"id": version.ID, "name": version.Name, "job_id": version.JobID},
		"workspace":        describeWorkspace(primary, resources[0]),
		"agents":           agents,
		"agent":            agents[0],
		"sub_agent": map[string]any{
			"id": subID, "name": created.GetAgent().GetName(), "token": subToken, "parent_id": parent.ID,
		},
		"superseded": map[string]any{
			"workspace_id": old.Workspace.ID, "workspace_name": old.Workspace.Name,
			"old_build_id": old.Build.ID, "old_agent_id": oldAgent.ID, "old_agent_token": oldAgent.AuthToken,
			"build_id": newer.Build.ID, "agent_id": newAgent.ID, "agent_token": newAgent.AuthToken,
		},
		"deleted": nil,
	}
	valid := []uuid.UUID{newAgent.AuthToken, subToken}
	for _, a := range primary.Agents {
		valid = append(valid, a.AuthToken)
	}
	stale := []uuid.UUID{oldAgent.AuthToken}

	if opts.withDeletedWorkspace {
		// Deleted as dbfake deletes one: the flag set after a start build, so only the flag keeps its agent out.
		gone := build(newWorkspace("deleted", true), 1, seedAgentProto("main", 0))
		goneAgent := agentByName(t, gone.Agents, "main")
		out["deleted"] = map[string]any{
			"workspace_id": gone.Workspace.ID, "workspace_name": gone.Workspace.Name, "build_id": gone.Build.ID,
			"agent_id": goneAgent.ID, "agent_token": goneAgent.AuthToken,
		}
		stale = append(stale, goneAgent.AuthToken)
	}
	out["stale_tokens"] = stale

	// The fixture's promises, checked with coderd's own token query.
	for _, token := range valid {
		_, err := db.GetAuthenticatedWorkspaceAgentAndBuildByAuthToken(ctx, token)
		require.NoError(t, err, "token %s must authenticate", token)
	}
	for _, token := range stale {
		_, err := db.GetAuthenticatedWorkspaceAgentAndBuildByAuthToken(ctx, token)
		require.ErrorIs(t, err, sql.ErrNoRows, "token %s must not authenticate", token)
	}
	return out
}

// seedAgentProto is a template's agent as the Terraform provider reports it: two apps (one health-checked), a
// start and a stop script, two metadata items, a devcontainer, and memory and volume monitors. App slugs must be
// unique within a resource, so agents after the first suffix theirs with their position.
func seedAgentProto(name string, order int) *sdkproto.Agent {
	suffix := ""
	if order > 0 {
		suffix = fmt.Sprintf("-%d", order+1)
	}
	return &sdkproto.Agent{
		Id:                       uuid.NewString(),
		Name:                     name,
		Auth:                     &sdkproto.Agent_Token{Token: uuid.NewString()},
		Env:                      map[string]string{"EDITOR": "vim", "GIT_AUTHOR_NAME": "Owner"},
		OperatingSystem:          "linux",
		Architecture:             "amd64",
		Directory:                "/home/coder",
		ConnectionTimeoutSeconds: 120,
		TroubleshootingUrl:       "https://coder.com/docs/admin/templates/troubleshooting",
		MotdFile:                 "/etc/motd",
		Order:                    int64(order),
		ApiKeyScope:              string(database.AgentKeyScopeEnumAll),
		DisplayApps: &sdkproto.DisplayApps{
			Vscode: true, WebTerminal: true, SshHelper: true, PortForwardingHelper: true,
		},
		Apps: []*sdkproto.App{
			{
				Slug: "code-server" + suffix, DisplayName: "code-server", Url: "http://localhost:13337/?folder=/home/coder",
				Icon: "/icon/code.svg", Subdomain: true, SharingLevel: sdkproto.AppSharingLevel_OWNER, Order: 1,
				Healthcheck: &sdkproto.Healthcheck{Url: "http://localhost:13337/healthz", Interval: 5, Threshold: 6},
			},
			{
				Slug: "web" + suffix, DisplayName: "Web", Url: "http://localhost:8080", Group: "Web",
				SharingLevel: sdkproto.AppSharingLevel_AUTHENTICATED, Order: 2, OpenIn: sdkproto.AppOpenIn_TAB,
			},
		},
		Scripts: []*sdkproto.Script{
			{
				DisplayName: "Startup", Icon: "/emojis/25b6.png", Script: "echo starting", RunOnStart: true,
				StartBlocksLogin: true, TimeoutSeconds: 300, LogPath: "coder-startup-script.log",
			},
			{DisplayName: "Shutdown", Icon: "/emojis/23f9.png", Script: "echo stopping", RunOnStop: true, TimeoutSeconds: 60},
		},
		Metadata: []*sdkproto.Agent_Metadata{
			{Key: "cpu", DisplayName: "CPU Usage", Script: "coder stat cpu", Interval: 10, Timeout: 1, Order: 1},
			{Key: "mem", DisplayName: "Memory Usage", Script: "coder stat mem", Interval: 30, Timeout: 5, Order: 2},
		},
		Devcontainers: []*sdkproto.Devcontainer{{
			Name: "app", WorkspaceFolder: "/home/coder/app", ConfigPath: "/home/coder/app/.devcontainer/devcontainer.json",
		}},
		ResourcesMonitoring: &sdkproto.ResourcesMonitoring{
			Memory:  &sdkproto.MemoryResourceMonitor{Enabled: true, Threshold: 80},
			Volumes: []*sdkproto.VolumeResourceMonitor{{Path: "/home/coder", Enabled: true, Threshold: 90}},
		},
	}
}

func agentByName(t *seedTB, agents []database.WorkspaceAgent, name string) database.WorkspaceAgent {
	for _, a := range agents {
		if a.Name == name {
			return a
		}
	}
	t.Fatalf("no agent named %q among %d", name, len(agents))
	return database.WorkspaceAgent{}
}

func describeWorkspace(w dbfake.WorkspaceResponse, resource database.WorkspaceResource) map[string]any {
	return map[string]any{
		"id": w.Workspace.ID, "name": w.Workspace.Name, "owner_id": w.Workspace.OwnerID,
		"template_id": w.Workspace.TemplateID, "last_used_at": w.Workspace.LastUsedAt,
		"build_id": w.Build.ID, "build_number": w.Build.BuildNumber, "job_id": w.Build.JobID,
		"deadline": w.Build.Deadline, "max_deadline": w.Build.MaxDeadline, "resource_id": resource.ID,
	}
}

// describeAgent lists what the provisioner made for one agent, read back with coderd's queries.
func describeAgent(ctx context.Context, t *seedTB, db database.Store, a database.WorkspaceAgent, token string) map[string]any {
	require.Equal(t, token, a.AuthToken.String(), "agent %s token", a.Name)
	apps, err := db.GetWorkspaceAppsByAgentID(ctx, a.ID)
	require.NoError(t, err, "apps")
	scripts, err := db.GetWorkspaceAgentScriptsByAgentIDs(ctx, []uuid.UUID{a.ID})
	require.NoError(t, err, "scripts")
	sources, err := db.GetWorkspaceAgentLogSourcesByAgentIDs(ctx, []uuid.UUID{a.ID})
	require.NoError(t, err, "log sources")
	metadata, err := db.GetWorkspaceAgentMetadata(ctx, database.GetWorkspaceAgentMetadataParams{WorkspaceAgentID: a.ID})
	require.NoError(t, err, "metadata")
	devcontainers, err := db.GetWorkspaceAgentDevcontainersByAgentID(ctx, a.ID)
	require.NoError(t, err, "devcontainers")
	volumes, err := db.FetchVolumesResourceMonitorsByAgentID(ctx, a.ID)
	require.NoError(t, err, "volume monitors")
	memory, err := db.FetchMemoryResourceMonitorsByAgentID(ctx, a.ID)
	require.NoError(t, err, "memory monitor")

	appList := []any{}
	for _, app := range apps {
		appList = append(appList, map[string]any{
			"id": app.ID, "slug": app.Slug, "health": app.Health, "healthcheck_url": app.HealthcheckUrl,
			"healthcheck_interval": app.HealthcheckInterval, "healthcheck_threshold": app.HealthcheckThreshold,
		})
	}
	scriptList := []any{}
	for _, s := range scripts {
		scriptList = append(scriptList, map[string]any{
			"id": s.ID, "log_source_id": s.LogSourceID, "display_name": s.DisplayName,
			"run_on_start": s.RunOnStart, "run_on_stop": s.RunOnStop, "start_blocks_login": s.StartBlocksLogin,
			"timeout_seconds": s.TimeoutSeconds,
		})
	}
	sourceList := []any{}
	for _, s := range sources {
		sourceList = append(sourceList, map[string]any{"id": s.ID, "display_name": s.DisplayName})
	}
	metadataList := []any{}
	for _, m := range metadata {
		metadataList = append(metadataList, map[string]any{
			"key": m.Key, "display_name": m.DisplayName, "interval": m.Interval, "timeout": m.Timeout,
			"display_order": m.DisplayOrder,
		})
	}
	devcontainerList := []any{}
	for _, d := range devcontainers {
		devcontainerList = append(devcontainerList, map[string]any{
			"id": d.ID, "name": d.Name, "workspace_folder": d.WorkspaceFolder, "config_path": d.ConfigPath,
		})
	}
	volumeList := []any{}
	for _, v := range volumes {
		volumeList = append(volumeList, map[string]any{"path": v.Path, "enabled": v.Enabled, "threshold": v.Threshold})
	}
	return map[string]any{
		"id": a.ID, "name": a.Name, "token": a.AuthToken, "resource_id": a.ResourceID,
		"apps": appList, "scripts": scriptList, "log_sources": sourceList, "metadata": metadataList,
		"devcontainers":   devcontainerList,
		"memory_monitor":  map[string]any{"enabled": memory.Enabled, "threshold": memory.Threshold},
		"volume_monitors": volumeList,
	}
}

func ptr[T any](v T) *T { return &v }
