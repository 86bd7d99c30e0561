package reference

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	agentproto "github.com/coder/coder/v2/agent/proto"
	tailnetproto "github.com/coder/coder/v2/tailnet/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"agentwire.test/interop/internal/coderconst"
)

// The deployment settings the manifest reflects.
const (
	accessURL   = "http://127.0.0.1:3000"
	appHostname = "*.apps.127.0.0.1.nip.io"
)

// The rows coderd reads for a manifest, as a template with one agent would
// leave them: kept as database-shaped values and converted on every call, as
// coderd converts the rows it has just read.
type appRow struct {
	slug, displayName, url, icon, sharingLevel, health, healthcheckURL string
	subdomain                                                          bool
	healthcheckInterval, healthcheckThreshold                          int32
}

type scriptRow struct {
	displayName, script, cron, logPath string
	runOnStart, runOnStop, blocksLogin bool
	timeoutSeconds                     int64
}

type metadataRow struct {
	displayName, key, script string
	interval, timeout        time.Duration
}

var (
	appRows = []appRow{
		{slug: "code-server", displayName: "code-server", url: "http://localhost:13337/?folder=/home/coder",
			icon: "/icon/code.svg", sharingLevel: "owner", health: "healthy", subdomain: true,
			healthcheckURL: "http://localhost:13337/healthz", healthcheckInterval: 5, healthcheckThreshold: 6},
		{slug: "web", displayName: "Web", url: "http://localhost:8080", icon: "/icon/globe.svg",
			sharingLevel: "authenticated", health: "disabled"},
	}
	scriptRows = []scriptRow{
		{displayName: "Startup Script", script: "#!/bin/sh\nset -e\ncode-server --auth none --port 13337 &\n",
			logPath: "coder-startup-script.log", runOnStart: true, blocksLogin: true, timeoutSeconds: 300},
		{displayName: "Shutdown Script", script: "#!/bin/sh\npkill code-server || true\n",
			logPath: "coder-shutdown-script.log", runOnStop: true},
	}
	metadataRows = []metadataRow{
		{displayName: "CPU Usage", key: "0_cpu_usage", script: "coder stat cpu", interval: 10 * time.Second, timeout: time.Second},
		{displayName: "RAM Usage", key: "1_ram_usage", script: "coder stat mem", interval: 10 * time.Second, timeout: time.Second},
		{displayName: "Home Disk", key: "3_home_disk", script: "coder stat disk --path $HOME", interval: time.Minute, timeout: time.Second},
	}
	// environmentJSON is the agent row's environment_variables column, which
	// coderd unmarshals per manifest.
	environmentJSON = []byte(`{"GIT_AUTHOR_NAME":"bench","GIT_AUTHOR_EMAIL":"bench@example.com",` +
		`"GIT_COMMITTER_NAME":"bench","GIT_COMMITTER_EMAIL":"bench@example.com"}`)
)

// rowID derives the stable ID of the n-th row of a kind for an agent.
func rowID(agentID []byte, kind string, n int) []byte {
	sum := sha256.Sum256(fmt.Appendf(append([]byte(kind), agentID...), "/%d", n))
	return uuidV4(sum[:16])
}

// appIDs are the IDs of the agent's apps, which BatchUpdateAppHealths accepts.
func appIDs(agentID []byte) map[string]bool {
	ids := make(map[string]bool, len(appRows))
	for i := range appRows {
		id, _ := uuidString(rowID(agentID, "app", i)) // 16 bytes by construction
		ids[id] = true
	}
	return ids
}

// buildManifest converts the rows into the manifest, as coderd's
// ManifestAPI.GetManifest does after its five reads.
func buildManifest(id Identity) (*agentproto.Manifest, error) {
	var env map[string]string
	if err := json.Unmarshal(environmentJSON, &env); err != nil {
		return nil, fmt.Errorf("unmarshal env vars: %w", err)
	}
	apps := make([]*agentproto.WorkspaceApp, 0, len(appRows))
	for i, r := range appRows {
		app, err := appToProto(id, i, r)
		if err != nil {
			return nil, fmt.Errorf("converting workspace apps: parse app %d (%q): %w", i, r.slug, err)
		}
		apps = append(apps, app)
	}
	scripts := make([]*agentproto.WorkspaceAgentScript, len(scriptRows))
	for i, r := range scriptRows {
		scripts[i] = &agentproto.WorkspaceAgentScript{
			Id:               rowID(id.AgentID, "script", i),
			LogSourceId:      rowID(id.AgentID, "log-source", i),
			LogPath:          r.logPath,
			Script:           r.script,
			Cron:             r.cron,
			RunOnStart:       r.runOnStart,
			RunOnStop:        r.runOnStop,
			StartBlocksLogin: r.blocksLogin,
			Timeout:          durationpb.New(time.Duration(r.timeoutSeconds) * time.Second),
			DisplayName:      r.displayName,
		}
	}
	metadata := make([]*agentproto.WorkspaceAgentMetadata_Description, len(metadataRows))
	for i, r := range metadataRows {
		metadata[i] = &agentproto.WorkspaceAgentMetadata_Description{
			DisplayName: r.displayName,
			Key:         r.key,
			Script:      r.script,
			Interval:    durationpb.New(r.interval),
			Timeout:     durationpb.New(r.timeout),
		}
	}
	derp, err := derpMapToProto()
	if err != nil {
		return nil, err
	}
	return &agentproto.Manifest{
		AgentId:              id.AgentID,
		AgentName:            id.AgentName,
		OwnerUsername:        id.OwnerUsername,
		WorkspaceId:          id.WorkspaceID,
		WorkspaceName:        id.WorkspaceName,
		EnvironmentVariables: env,
		Directory:            "/home/coder",
		VsCodePortProxyUri:   "http://" + strings.ReplaceAll(appHostname, "*", subdomain("{{port}}", id)),
		MotdPath:             "/etc/motd",
		DerpMap:              derp,
		Scripts:              scripts,
		Apps:                 apps,
		Metadata:             metadata,
		Devcontainers:        []*agentproto.WorkspaceAgentDevcontainer{},
	}, nil
}

func appToProto(id Identity, i int, r appRow) (*agentproto.WorkspaceApp, error) {
	sharing, ok := agentproto.WorkspaceApp_SharingLevel_value[strings.ToUpper(r.sharingLevel)]
	if !ok {
		return nil, fmt.Errorf("unknown app sharing level: %q", r.sharingLevel)
	}
	health, ok := agentproto.WorkspaceApp_Health_value[strings.ToUpper(r.health)]
	if !ok {
		return nil, fmt.Errorf("unknown app health: %q", r.health)
	}
	var subdomainName string
	if r.subdomain {
		subdomainName = subdomain(r.slug, id)
	}
	return &agentproto.WorkspaceApp{
		Id:            rowID(id.AgentID, "app", i),
		Url:           r.url,
		Slug:          r.slug,
		DisplayName:   r.displayName,
		Icon:          r.icon,
		Subdomain:     r.subdomain,
		SubdomainName: subdomainName,
		SharingLevel:  agentproto.WorkspaceApp_SharingLevel(sharing),
		Healthcheck: &agentproto.WorkspaceApp_Healthcheck{
			Url:       r.healthcheckURL,
			Interval:  durationpb.New(time.Duration(r.healthcheckInterval) * time.Second),
			Threshold: r.healthcheckThreshold,
		},
		Health: agentproto.WorkspaceApp_Health(health),
	}, nil
}

// subdomain is appurl.ApplicationURL's host label.
func subdomain(slugOrPort string, id Identity) string {
	return fmt.Sprintf("%s--%s--%s--%s", slugOrPort, id.AgentName, id.WorkspaceName, id.OwnerUsername)
}

// derpNode and derpRegion are the parts of tailcfg's DERP map that coderd
// converts to protobuf for every manifest and DERP map update.
type derpNode struct {
	name, hostName string
	stunPort       int
	derpPort       int
	stunOnly       bool
}

type derpRegion struct {
	id             int
	code, name     string
	embeddedRelay  bool
	nodes          []derpNode
	homeParamScore float64
}

// derpMap is coderd's default region: the embedded relay on the access URL,
// with the region's ID, code and name and the STUN servers taken from
// codersdk's deployment defaults (999, "coder", "Coder Embedded Relay", five
// Google STUN servers). Coder v2.30 gives each STUN server a region of its
// own (tailnet.NewDERPMap, tailnet.STUNRegions); this map keeps them as nodes
// of the one region, the shape tests/go_reference.rs and the benchmarks'
// figures were taken with.
var derpMap = sync.OnceValues(func() ([]derpRegion, error) {
	vals, err := coderconst.DeploymentDefaults()
	if err != nil {
		return nil, err
	}
	id := int(vals.DERP.Server.RegionID.Value())
	var nodes []derpNode
	for i, addr := range vals.DERP.Server.STUNAddresses.Value() {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("default STUN address %q: %w", addr, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("default STUN address %q: %w", addr, err)
		}
		nodes = append(nodes, derpNode{name: fmt.Sprintf("%dstun%d", id, i), hostName: host, stunPort: p, stunOnly: true})
	}
	u, err := url.Parse(accessURL)
	if err != nil {
		return nil, err
	}
	derpPort, err := strconv.Atoi(u.Port())
	if err != nil {
		return nil, fmt.Errorf("access URL port: %w", err)
	}
	// The relay's node as cli/server.go names it.
	nodes = append(nodes, derpNode{name: fmt.Sprintf("%db", id), hostName: u.Hostname(), stunPort: -1, derpPort: derpPort})
	return []derpRegion{{
		id: id, code: vals.DERP.Server.RegionCode.Value(), name: vals.DERP.Server.RegionName.Value(),
		embeddedRelay: true, nodes: nodes,
	}}, nil
})

// derpMapToProto is tailnet.DERPMapToProto over derpMap: a fresh message per
// call, as coderd builds one.
func derpMapToProto() (*tailnetproto.DERPMap, error) {
	derpRegions, err := derpMap()
	if err != nil {
		return nil, err
	}
	regions := make(map[int64]*tailnetproto.DERPMap_Region, len(derpRegions))
	scores := make(map[int64]float64)
	for _, r := range derpRegions {
		nodes := make([]*tailnetproto.DERPMap_Region_Node, len(r.nodes))
		for i, n := range r.nodes {
			nodes[i] = &tailnetproto.DERPMap_Region_Node{
				Name:      n.name,
				RegionId:  int64(r.id),
				HostName:  n.hostName,
				StunPort:  int32(n.stunPort), //nolint:gosec // fixed ports
				StunOnly:  n.stunOnly,
				DerpPort:  int32(n.derpPort), //nolint:gosec // fixed ports
				ForceHttp: !n.stunOnly && strings.HasPrefix(accessURL, "http://"),
			}
		}
		regions[int64(r.id)] = &tailnetproto.DERPMap_Region{
			RegionId:      int64(r.id),
			EmbeddedRelay: r.embeddedRelay,
			RegionCode:    r.code,
			RegionName:    r.name,
			Nodes:         nodes,
		}
		if r.homeParamScore != 0 {
			scores[int64(r.id)] = r.homeParamScore
		}
	}
	return &tailnetproto.DERPMap{
		HomeParams: &tailnetproto.DERPMap_HomeParams{RegionScore: scores},
		Regions:    regions,
	}, nil
}
