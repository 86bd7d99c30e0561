package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
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
	"github.com/coder/coder/v2/coderd/promoauth"
	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/tailnet"
	"github.com/coder/quartz"
	"github.com/coder/serpent"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// coderdbManifest is coderd's GetManifest for one agent of a Coder database: the agent API coderd's RPC handler
// (workspaceAgentRPC) builds, on the rows coderd's agent middleware resolves from the agent's token, with the
// deployment settings given as flags, parsed as `coder server` parses them (its own options, defaults and
// validation). It prints the manifest as protojson (proto field names) and as the deterministic marshalling of the
// message, for a peer to decode into its own types.
func coderdbManifest(args []string) int {
	fs := flag.NewFlagSet("coderdb manifest", flag.ContinueOnError)
	pgURL := fs.String("postgres-url", "", "PostgreSQL URL of a Coder database")
	agentID := fs.String("agent-id", "", "the agent whose manifest to build")
	accessURL := fs.String("access-url", "", "the deployment's access URL (coderd's --access-url)")
	appHostname := fs.String("app-hostname", "", "the wildcard app host (coderd's --wildcard-access-url), if any")
	derpMapFile := fs.String("derp-map-json", "", "a file with the DERP map (tailcfg JSON); none: no map, as DerpMapFn returning nil")
	serverDERPMap := fs.Bool("coder-server-derp-map", false, "the DERP map coder server builds for these settings and no DERP config (cli/server.go, tailnet.NewDERPMap)")
	var stunAddresses *string
	fs.Func("derp-server-stun-addresses", "coderd's --derp-server-stun-addresses; unset: coderd's default", func(v string) error {
		stunAddresses = &v
		return nil
	})
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
	if *serverDERPMap && *derpMapFile != "" {
		fmt.Fprintln(os.Stderr, "coderdb manifest: --coder-server-derp-map and --derp-map-json exclude each other")
		return exitUsage
	}
	id, err := uuid.Parse(*agentID)
	if err != nil {
		return coderdbFail("manifest", xerrors.Errorf("--agent-id: %w", err))
	}
	serverArgs := []string{
		"--access-url=" + *accessURL,
		"--wildcard-access-url=" + *appHostname,
		"--block-direct-connections=" + strconv.FormatBool(*blockDirect),
		"--derp-force-websockets=" + strconv.FormatBool(*forceWebSockets),
	}
	if stunAddresses != nil {
		serverArgs = append(serverArgs, "--derp-server-stun-addresses="+*stunAddresses)
	}
	vals, err := coderServerValues(serverArgs)
	if err != nil {
		return coderdbFail("manifest", err)
	}
	var derpMap *tailcfg.DERPMap
	if *serverDERPMap {
		derpMap, err = coderServerDERPMap(context.Background(), vals)
		if err != nil {
			return coderdbFail("manifest", err)
		}
	}
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
	// Through coderd's own conversion (cli/server.go), which reads a legacy type as the one it stands for.
	var authEntries []codersdk.ExternalAuthConfig
	for i, typ := range strings.Split(*authTypes, ",") {
		if typ = strings.TrimSpace(typ); typ != "" {
			authEntries = append(authEntries, codersdk.ExternalAuthConfig{ID: fmt.Sprintf("provider%d", i), Type: typ, ClientID: "client"})
		}
	}
	authConfigs, err := externalauth.ConvertConfig(promoauth.NewFactory(prometheus.NewRegistry()), authEntries, vals.AccessURL.Value())
	if err != nil {
		return coderdbFail("manifest", xerrors.Errorf("--external-auth-types: %w", err))
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

		// As workspaceAgentRPC sets them from the deployment values.
		AccessURL:                vals.AccessURL.Value(),
		AppHostname:              vals.WildcardAccessURL.String(),
		DisableDirectConnections: vals.DERP.Config.BlockDirect.Value(),
		DerpForceWebSockets:      vals.DERP.Config.ForceWebSockets.Value(),
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

// coderServerValues parses args as `coder server` parses its flags: coderd's own options, their validation, and
// their defaults for everything not given (serpent's SetDefaults after the flags, so a list flag given replaces its
// default instead of adding to it).
func coderServerValues(args []string) (*codersdk.DeploymentValues, error) {
	vals := &codersdk.DeploymentValues{}
	opts := vals.Options()
	flags := opts.FlagSet()
	if err := flags.Parse(args); err != nil {
		return nil, xerrors.Errorf("coder server flags %q: %w", args, err)
	}
	for i := range opts {
		if opts[i].Flag != "" && flags.Changed(opts[i].Flag) {
			opts[i].ValueSource = serpent.ValueSourceFlag
		}
	}
	if err := opts.SetDefaults(); err != nil {
		return nil, xerrors.Errorf("coder server defaults: %w", err)
	}
	return vals, nil
}

// coderServerDERPMap is the DERP map `coder server` builds (cli/server.go, v2.30.0 lines 521-599): the embedded
// relay's region on the access URL's host and port, then tailnet.NewDERPMap with the STUN addresses, the DERP config
// URL and path, and --block-direct-connections.
func coderServerDERPMap(ctx context.Context, vals *codersdk.DeploymentValues) (*tailcfg.DERPMap, error) {
	_, accessURLPortRaw, _ := net.SplitHostPort(vals.AccessURL.Host)
	if accessURLPortRaw == "" {
		accessURLPortRaw = "80"
		if vals.AccessURL.Scheme == "https" {
			accessURLPortRaw = "443"
		}
	}
	accessURLPort, err := strconv.Atoi(accessURLPortRaw)
	if err != nil {
		return nil, xerrors.Errorf("parse access URL port: %w", err)
	}
	defaultRegion := &tailcfg.DERPRegion{
		EmbeddedRelay: true,
		RegionID:      int(vals.DERP.Server.RegionID.Value()),
		RegionCode:    vals.DERP.Server.RegionCode.String(),
		RegionName:    vals.DERP.Server.RegionName.String(),
		Nodes: []*tailcfg.DERPNode{{
			Name:      fmt.Sprintf("%db", vals.DERP.Server.RegionID),
			RegionID:  int(vals.DERP.Server.RegionID.Value()),
			HostName:  vals.AccessURL.Value().Hostname(),
			DERPPort:  accessURLPort,
			STUNPort:  -1,
			ForceHTTP: vals.AccessURL.Scheme == "http",
		}},
	}
	if !vals.DERP.Server.Enable {
		defaultRegion = nil
	}
	derpMap, err := tailnet.NewDERPMap(
		ctx, defaultRegion, vals.DERP.Server.STUNAddresses,
		vals.DERP.Config.URL.String(), vals.DERP.Config.Path.String(),
		vals.DERP.Config.BlockDirect.Value(),
	)
	if err != nil {
		return nil, xerrors.Errorf("create derp map: %w", err)
	}
	return derpMap, nil
}
