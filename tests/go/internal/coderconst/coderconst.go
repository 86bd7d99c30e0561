// Package coderconst is where the interop driver takes Coder's protocol constants from, so that the driver, the
// reference server and the referee (`interop constants`, checked by tests/coder_constants.rs) cannot agree with
// agentwire on a value Coder does not have:
//
//   - what Coder v2.30.0 exports is read from its own packages (tailnet, tailnet/proto, codersdk,
//     codersdk/agentsdk, codersdk/drpcsdk, coderd/wspubsub, coderd/agentapi/metadatabatcher, coderd/httpapi,
//     provisioner), functions included: the report applies them to fixed inputs;
//   - what it keeps unexported is a copy here (mirrors.go) that names the file and line it mirrors, and the
//     report reads the value from that place in the module's source text and fails when a copy disagrees.
package coderconst

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"

	"github.com/google/uuid"

	"github.com/coder/coder/v2/coderd/agentapi/metadatabatcher"
	"github.com/coder/coder/v2/coderd/httpapi"
	"github.com/coder/coder/v2/coderd/wspubsub"
	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/codersdk/agentsdk"
	"github.com/coder/coder/v2/codersdk/drpcsdk"
	"github.com/coder/coder/v2/provisioner"
	"github.com/coder/coder/v2/tailnet"
	tailnetproto "github.com/coder/coder/v2/tailnet/proto"
)

// Entry is one constant: its value (durations in seconds), and where it was read.
type Entry struct {
	Value any    `json:"value"`
	Unit  string `json:"unit,omitempty"`
	From  string `json:"from"`
}

// Case is one application of a function of Coder's.
type Case struct {
	In  any `json:"in"`
	Out any `json:"out"`
}

// Function is a function of Coder's applied to fixed inputs, for values that are formats rather than constants
// (channel names, payloads, addresses, authorization).
type Function struct {
	From  string `json:"from"`
	Cases []Case `json:"cases"`
}

// Report is what `interop constants` prints.
type Report struct {
	Coder     string              `json:"coder"`
	Source    string              `json:"source"`
	Constants map[string]Entry    `json:"constants"`
	Functions map[string]Function `json:"functions"`
	// Problems are mirrors not found in the source or disagreeing with it, and Coder's functions disagreeing
	// with the mirrors. A report with problems is a failed referee.
	Problems []string `json:"problems"`
}

func (r *Report) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

const (
	pkgTailnet         = "github.com/coder/coder/v2/tailnet"
	pkgTailnetProto    = "github.com/coder/coder/v2/tailnet/proto"
	pkgCodersdk        = "github.com/coder/coder/v2/codersdk"
	pkgAgentsdk        = "github.com/coder/coder/v2/codersdk/agentsdk"
	pkgDrpcsdk         = "github.com/coder/coder/v2/codersdk/drpcsdk"
	pkgWspubsub        = "github.com/coder/coder/v2/coderd/wspubsub"
	pkgMetadataBatcher = "github.com/coder/coder/v2/coderd/agentapi/metadatabatcher"
	pkgHttpapi         = "github.com/coder/coder/v2/coderd/httpapi"
	pkgProvisioner     = "github.com/coder/coder/v2/provisioner"
)

// DeploymentDefaults are coderd's deployment values with every option at its default, as `coder server`
// starts with no flags: codersdk's option table, not a copy of it.
var DeploymentDefaults = sync.OnceValues(func() (*codersdk.DeploymentValues, error) {
	vals := new(codersdk.DeploymentValues)
	opts := vals.Options()
	if err := opts.SetDefaults(); err != nil {
		return nil, fmt.Errorf("codersdk deployment defaults: %w", err)
	}
	return vals, nil
})

// Sample IDs the functions are applied to.
var (
	sampleAgent     = uuid.MustParse("11111111-2222-3333-4444-555555555555")
	sampleOther     = uuid.MustParse("66666666-7777-8888-9999-aaaaaaaaaaaa")
	sampleWorkspace = uuid.MustParse("bbbbbbbb-cccc-4ddd-8eee-ffffffffffff")
	sampleOwner     = uuid.MustParse("01234567-89ab-4cde-8f01-23456789abcd")
)

// Build reads every constant: Coder's packages first, then the mirrors from the source under sourceDir.
func Build(sourceDir, version string) *Report {
	r := &Report{
		Coder:     CoderModule + "@" + version,
		Source:    sourceDir,
		Constants: map[string]Entry{},
		Functions: map[string]Function{},
		Problems:  []string{},
	}
	exported(r)
	readMirrors(sourceDir, r)
	functions(r)
	return r
}

func exported(r *Report) {
	add := func(name string, value any, from string) { r.Constants[name] = Entry{Value: value, From: from} }
	seconds := func(name string, value interface{ Seconds() float64 }, from string) {
		r.Constants[name] = Entry{Value: value.Seconds(), Unit: "seconds", From: from}
	}

	// The tailnet: addresses, the coordinator's texts and queue.
	add("tailnet.TailscaleServicePrefix", tailnet.TailscaleServicePrefix.AsNetip().String(), pkgTailnet)
	add("tailnet.CoderServicePrefix", tailnet.CoderServicePrefix.AsNetip().String(), pkgTailnet)
	add("tailnet.CloseErrOverwritten", tailnet.CloseErrOverwritten, pkgTailnet)
	add("tailnet.ReadyForHandshakeError", tailnet.ReadyForHandshakeError, pkgTailnet)
	add("tailnet.ResponseBufferSize", tailnet.ResponseBufferSize, pkgTailnet)
	seconds("tailnet.DefaultResumeTokenExpiry", tailnet.DefaultResumeTokenExpiry, pkgTailnet)

	// The API version agents and clients dial with.
	add("proto.CurrentVersion", tailnetproto.CurrentVersion.String(), pkgTailnetProto)
	add("proto.CurrentMajor", tailnetproto.CurrentMajor, pkgTailnetProto)
	add("proto.CurrentMinor", tailnetproto.CurrentMinor, pkgTailnetProto)

	// The endpoint's transport and authentication.
	add("codersdk.SessionTokenHeader", codersdk.SessionTokenHeader, pkgCodersdk)
	add("codersdk.SessionTokenCookie", codersdk.SessionTokenCookie, pkgCodersdk)
	add("drpcsdk.MaxMessageSize", drpcsdk.MaxMessageSize, pkgDrpcsdk)
	seconds("httpapi.HeartbeatInterval", httpapi.HeartbeatInterval, pkgHttpapi)
	add("httpapi.ResourceNotFoundResponse.Message", httpapi.ResourceNotFoundResponse.Message, pkgHttpapi)

	// The Agent API.
	add("agentsdk.ExternalLogSourceID", agentsdk.ExternalLogSourceID.String(), pkgAgentsdk)
	add("provisioner.AgentNameRegex", provisioner.AgentNameRegex.String(), pkgProvisioner)

	// Pubsub: the channels and the kinds of workspace events.
	add("metadatabatcher.MetadataBatchPubsubChannel", metadatabatcher.MetadataBatchPubsubChannel, pkgMetadataBatcher)
	add("metadatabatcher.UUIDBase64Size", metadatabatcher.UUIDBase64Size, pkgMetadataBatcher)
	for _, k := range []wspubsub.WorkspaceEventKind{
		wspubsub.WorkspaceEventKindStateChange,
		wspubsub.WorkspaceEventKindStatsUpdate,
		wspubsub.WorkspaceEventKindMetadataUpdate,
		wspubsub.WorkspaceEventKindAppHealthUpdate,
		wspubsub.WorkspaceEventKindAgentLifecycleUpdate,
		wspubsub.WorkspaceEventKindAgentConnectionUpdate,
		wspubsub.WorkspaceEventKindAgentFirstLogs,
		wspubsub.WorkspaceEventKindAgentLogsOverflow,
		wspubsub.WorkspaceEventKindAgentTimeout,
		wspubsub.WorkspaceEventKindAgentAppStatusUpdate,
	} {
		// Keyed by value: the Go identifiers are not what agentwire's names follow.
		add("wspubsub.WorkspaceEventKind "+string(k), string(k), pkgWspubsub)
	}

	// Deployment defaults coderd runs with.
	vals, err := DeploymentDefaults()
	if err != nil {
		r.problem("%v", err)
		return
	}
	const options = pkgCodersdk + " (DeploymentValues defaults)"
	seconds("codersdk.DeploymentValues.AgentStatRefreshInterval", vals.AgentStatRefreshInterval.Value(), options)
	add("codersdk.DeploymentValues.DERP.Server.RegionID", vals.DERP.Server.RegionID.Value(), options)
	add("codersdk.DeploymentValues.DERP.Server.RegionCode", vals.DERP.Server.RegionCode.Value(), options)
	add("codersdk.DeploymentValues.DERP.Server.RegionName", vals.DERP.Server.RegionName.Value(), options)
	add("codersdk.DeploymentValues.DERP.Server.STUNAddresses", vals.DERP.Server.STUNAddresses.Value(), options)
}

func functions(r *Report) {
	// Agent addresses: the prefix, then the id's last ten bytes.
	var addrs []Case
	for _, p := range []struct {
		name   string
		prefix tailnet.ServicePrefix
	}{{"TailscaleServicePrefix", tailnet.TailscaleServicePrefix}, {"CoderServicePrefix", tailnet.CoderServicePrefix}} {
		addrs = append(addrs, Case{
			In:  map[string]string{"prefix": p.name, "id": sampleAgent.String()},
			Out: p.prefix.AddrFromUUID(sampleAgent).String(),
		})
	}
	r.Functions["tailnet.ServicePrefix.AddrFromUUID"] = Function{From: pkgTailnet, Cases: addrs}

	r.Functions["tailnet.AgentCoordinateeAuth.Authorize"] = Function{From: pkgTailnet, Cases: agentAuthCases(r)}

	r.Functions["wspubsub.WorkspaceEventChannel"] = Function{From: pkgWspubsub, Cases: []Case{
		{In: sampleOwner.String(), Out: wspubsub.WorkspaceEventChannel(sampleOwner)},
	}}
	r.Functions["agentsdk.LogsNotifyChannel"] = Function{From: pkgAgentsdk, Cases: []Case{
		{In: sampleAgent.String(), Out: agentsdk.LogsNotifyChannel(sampleAgent)},
	}}

	agentID := sampleAgent
	var events []Case
	for _, e := range []wspubsub.WorkspaceEvent{
		{Kind: wspubsub.WorkspaceEventKindAgentLifecycleUpdate, WorkspaceID: sampleWorkspace, AgentID: &agentID},
		{Kind: wspubsub.WorkspaceEventKindStatsUpdate, WorkspaceID: sampleWorkspace},
	} {
		events = append(events, Case{In: e, Out: mustJSON(r, e)})
	}
	r.Functions["json(wspubsub.WorkspaceEvent)"] = Function{From: pkgWspubsub, Cases: events}

	msg := agentsdk.LogsNotifyMessage{CreatedAfter: 42}
	r.Functions["json(agentsdk.LogsNotifyMessage)"] = Function{From: pkgAgentsdk, Cases: []Case{
		{In: msg.CreatedAfter, Out: mustJSON(r, msg)},
	}}

	// Enough agents for more than one NOTIFY payload.
	ids := make([]uuid.UUID, 400)
	in := make([]string, len(ids))
	for i := range ids {
		ids[i] = uuid.UUID{0: 0xa0, 1: byte(i * 7), 8: 0x80, 14: byte(i >> 8), 15: byte(i)}
		in[i] = ids[i].String()
	}
	chunks, err := metadatabatcher.EncodeAgentIDChunks(ids)
	if err != nil {
		r.problem("metadatabatcher.EncodeAgentIDChunks: %v", err)
	}
	out := make([]string, len(chunks))
	for i, c := range chunks {
		out[i] = string(c)
	}
	r.Functions["metadatabatcher.EncodeAgentIDChunks"] = Function{From: pkgMetadataBatcher, Cases: []Case{
		{In: in, Out: out},
	}}
}

// agentAuthCases runs coderd's check of an agent's coordinate requests (tailnet.AgentCoordinateeAuth, which
// tailnet/tunnel.go implements with the unexported legacy address) over the addresses an agent may and may not
// claim. Out is the error text, or nil when coderd accepts the request. coderd's coordinator sends the text as
// "authorization: <text>" (tailnet.AuthorizationError).
func agentAuthCases(r *Report) []Case {
	auth := tailnet.AgentCoordinateeAuth{ID: sampleAgent}
	own := tailnet.TailscaleServicePrefix.AddrFromUUID(sampleAgent)
	var legacy string
	if e, ok := r.Constants["tailnet.legacyWorkspaceAgentIP"]; ok {
		legacy, _ = e.Value.(string)
	}
	type request struct {
		Addresses []string `json:"addresses,omitempty"`
		AddTunnel string   `json:"add_tunnel,omitempty"`
	}
	requests := []request{
		{Addresses: []string{tailnet.TailscaleServicePrefix.PrefixFromUUID(sampleAgent).String()}},
		{Addresses: []string{tailnet.CoderServicePrefix.PrefixFromUUID(sampleAgent).String()}},
		// What Coder's agent sends (agent/agent.go, wireguardAddresses).
		{Addresses: []string{
			tailnet.TailscaleServicePrefix.PrefixFromUUID(sampleAgent).String(),
			tailnet.CoderServicePrefix.PrefixFromUUID(sampleAgent).String(),
		}},
		{Addresses: []string{tailnet.TailscaleServicePrefix.PrefixFromUUID(sampleOther).String()}},
		{Addresses: []string{tailnet.CoderServicePrefix.PrefixFromUUID(sampleOther).String()}},
		{Addresses: []string{netip.PrefixFrom(own, 64).String()}},
		{AddTunnel: sampleOther.String()},
	}
	if legacy != "" {
		requests = append(requests, request{Addresses: []string{legacy + "/128"}})
		// The legacy address is fixed: any agent may claim it.
		if err := (tailnet.AgentCoordinateeAuth{ID: sampleOther}).Authorize(context.Background(), updateSelf(legacy+"/128")); err != nil {
			r.problem("tailnet.legacyWorkspaceAgentIP %s, read from the source, is refused by coderd's own check: %v", legacy, err)
		}
	}
	cases := make([]Case, 0, len(requests))
	for _, q := range requests {
		req := updateSelf(q.Addresses...)
		if q.AddTunnel != "" {
			id := uuid.MustParse(q.AddTunnel)
			req = &tailnetproto.CoordinateRequest{AddTunnel: &tailnetproto.CoordinateRequest_Tunnel{Id: id[:]}}
		}
		var out any
		if err := auth.Authorize(context.Background(), req); err != nil {
			out = err.Error()
		}
		cases = append(cases, Case{In: map[string]any{"agent_id": sampleAgent.String(), "request": q}, Out: out})
	}
	return cases
}

func updateSelf(addresses ...string) *tailnetproto.CoordinateRequest {
	return &tailnetproto.CoordinateRequest{UpdateSelf: &tailnetproto.CoordinateRequest_UpdateSelf{
		Node: &tailnetproto.Node{Addresses: addresses, AllowedIps: addresses},
	}}
}

func mustJSON(r *Report, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		r.problem("marshal %T: %v", v, err)
	}
	return string(b)
}
