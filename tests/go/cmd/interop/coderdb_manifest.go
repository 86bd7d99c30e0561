package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/xerrors"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"tailscale.com/tailcfg"

	"cdr.dev/slog/v3"
	agentproto "github.com/coder/coder/v2/agent/proto"
	"github.com/coder/coder/v2/coderd/agentapi"
	"github.com/coder/coder/v2/coderd/database"
	"github.com/coder/coder/v2/coderd/externalauth"
	"github.com/coder/quartz"
	"github.com/google/uuid"
)

// coderdbManifest is coderd's GetManifest for one agent of a Coder database: the agent API coderd's RPC handler
// (workspaceAgentRPC) builds, on the rows coderd's agent middleware resolves from the agent's token, with the
// deployment settings given as flags. It prints the manifest as protojson (proto field names) and as the
// deterministic marshalling of the message, for a peer to decode into its own types.
func coderdbManifest(args []string) int {
	fs := flag.NewFlagSet("coderdb manifest", flag.ContinueOnError)
	pgURL := fs.String("postgres-url", "", "PostgreSQL URL of a Coder database")
	agentID := fs.String("agent-id", "", "the agent whose manifest to build")
	accessURL := fs.String("access-url", "", "the deployment's access URL (coderd's --access-url)")
	appHostname := fs.String("app-hostname", "", "the wildcard app host (coderd's --wildcard-access-url), if any")
	derpMapFile := fs.String("derp-map-json", "", "a file with the DERP map (tailcfg JSON); none: no map, as DerpMapFn returning nil")
	blockDirect := fs.Bool("disable-direct-connections", false, "coderd's --block-direct-connections")
	forceWebSockets := fs.Bool("derp-force-websockets", false, "coderd's --derp-force-websockets")
	authTypes := fs.String("external-auth-types", "", "comma-separated types of the deployment's external auth providers (github, slack, …)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *pgURL == "" || *agentID == "" || *accessURL == "" {
		fmt.Fprintln(os.Stderr, "coderdb manifest: --postgres-url, --agent-id and --access-url are required")
		return exitUsage
	}
	id, err := uuid.Parse(*agentID)
	if err != nil {
		return coderdbFail("manifest", xerrors.Errorf("--agent-id: %w", err))
	}
	// coder server parses its access URL with url.Parse too (serpent.URL).
	access, err := url.Parse(*accessURL)
	if err != nil {
		return coderdbFail("manifest", xerrors.Errorf("--access-url: %w", err))
	}
	var derpMap *tailcfg.DERPMap
	if *derpMapFile != "" {
		raw, err := os.ReadFile(*derpMapFile)
		if err != nil {
			return coderdbFail("manifest", err)
		}
		derpMap = &tailcfg.DERPMap{}
		if err := json.Unmarshal(raw, derpMap); err != nil {
			return coderdbFail("manifest", xerrors.Errorf("--derp-map-json: %w", err))
		}
	}
	var authConfigs []*externalauth.Config
	for i, typ := range strings.Split(*authTypes, ",") {
		if typ = strings.TrimSpace(typ); typ != "" {
			authConfigs = append(authConfigs, &externalauth.Config{ID: fmt.Sprintf("%s-%d", typ, i), Type: typ})
		}
	}

	sqlDB, err := openCoderDB(*pgURL)
	if err != nil {
		return coderdbFail("manifest", err)
	}
	defer sqlDB.Close()
	db := database.New(sqlDB)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// coderd's agent middleware resolves the agent and its build from the token; the RPC handler then reads the
	// build's workspace. The token is the agent's own, so a stale or deleted agent fails here as it would there.
	agent, err := db.GetWorkspaceAgentByID(ctx, id)
	if err != nil {
		return coderdbFail("manifest", xerrors.Errorf("get workspace agent: %w", err))
	}
	authed, err := db.GetAuthenticatedWorkspaceAgentAndBuildByAuthToken(ctx, agent.AuthToken)
	if err != nil {
		return coderdbFail("manifest", xerrors.Errorf("the agent's token does not authenticate: %w", err))
	}
	build := authed.WorkspaceBuild
	workspace, err := db.GetWorkspaceByID(ctx, build.WorkspaceID)
	if err != nil {
		return coderdbFail("manifest", xerrors.Errorf("get workspace: %w", err))
	}

	// The options of workspaceAgentRPC that the manifest reads; the rest are left zero, as GetManifest never
	// touches them.
	api := agentapi.New(agentapi.Options{
		AgentID:           authed.WorkspaceAgent.ID,
		OwnerID:           workspace.OwnerID,
		WorkspaceID:       workspace.ID,
		OrganizationID:    workspace.OrganizationID,
		TemplateVersionID: build.TemplateVersionID,

		AuthenticatedCtx: ctx,
		Log:              slog.Make(),
		Clock:            quartz.NewReal(),
		Database:         db,
		DerpMapFn:        func() *tailcfg.DERPMap { return derpMap },

		AccessURL:                access,
		AppHostname:              *appHostname,
		DisableDirectConnections: *blockDirect,
		DerpForceWebSockets:      *forceWebSockets,
		ExternalAuthConfigs:      authConfigs,
	}, workspace)
	manifest, err := api.GetManifest(ctx, &agentproto.GetManifestRequest{})
	if err != nil {
		return coderdbFail("manifest", xerrors.Errorf("GetManifest: %w", err))
	}
	wire, err := proto.MarshalOptions{Deterministic: true}.Marshal(manifest)
	if err != nil {
		return coderdbFail("manifest", err)
	}
	readable, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(manifest)
	if err != nil {
		return coderdbFail("manifest", err)
	}
	return coderdbPrint("manifest", map[string]any{
		"manifest":        json.RawMessage(readable),
		"manifest_base64": base64.StdEncoding.EncodeToString(wire),
		"workspace_id":    workspace.ID,
		"build_id":        build.ID,
	})
}
