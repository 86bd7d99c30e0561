package reference

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	agentproto "github.com/coder/coder/v2/agent/proto"
	"github.com/coder/coder/v2/provisioner"
	"golang.org/x/mod/semver"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"agentwire.test/interop/internal/coderconst"
)

// Settings coderd applies on this endpoint (its defaults), from Coder's
// packages, or from internal/coderconst where Coder keeps them unexported
// (each copy there names its place in Coder's source and is checked
// against it).
// agentNameRegex is provisioner.AgentNameRegex, which CreateSubAgent checks.
var agentNameRegex = provisioner.AgentNameRegex

// statsReportInterval is UpdateStatsResponse.report_interval: coderd's
// AgentStatsRefreshInterval, whose default is the deployment option's.
func statsReportInterval() (time.Duration, error) {
	vals, err := coderconst.DeploymentDefaults()
	if err != nil {
		return 0, err
	}
	return vals.AgentStatRefreshInterval.Value(), nil
}

const (
	// logsLimit is the per-agent budget of log output bytes (the check
	// constraint on workspace_agents.logs_length); past it BatchCreateLogs
	// answers log_limit_exceeded.
	logsLimit = coderconst.LogsLimit
	// Metadata limits of coderd's BatchUpdateMetadata (maxErrorLen is
	// maxValueLen).
	maxMetadataKeysLen  = coderconst.MaxMetadataKeysLen
	maxMetadataValueLen = coderconst.MaxMetadataValueLen
	// Resources monitoring settings coderd hands out.
	monitoringDatapoints = coderconst.ResourcesMonitoringNumDatapoints
	monitoringInterval   = int32(coderconst.ResourcesMonitoringInterval / time.Second)
)

// agentAPI answers every Agent RPC of Coder v2.30.0 for one connection. The
// state coderd keeps in rows lives here for the connection's life.
type agentAPI struct {
	id Identity
	// The agent's app IDs, which coderd reads per BatchUpdateAppHealths.
	appIDs map[string]bool

	mu         sync.Mutex
	lifecycle  agentproto.Lifecycle_State
	startup    *agentproto.Startup
	appHealth  map[string]agentproto.AppHealth
	metadata   map[string]*agentproto.WorkspaceAgentMetadata_Result
	logsLength int
	overflowed bool
	subAgents  []*agentproto.SubAgent
	// What coderd's Prometheus aggregator keeps of the last stats report.
	metrics map[string]float64
	// The memory and volume monitors' state, OK or NOK.
	monitorNOK bool
	// Boundary log entries seen, allowed and denied.
	boundaryAllowed, boundaryDenied int
}

func newAgentAPI(id Identity) *agentAPI {
	return &agentAPI{
		id:        id,
		appIDs:    appIDs(id.AgentID),
		lifecycle: agentproto.Lifecycle_CREATED,
		appHealth: map[string]agentproto.AppHealth{},
		metadata:  map[string]*agentproto.WorkspaceAgentMetadata_Result{},
		metrics:   map[string]float64{},
	}
}

var _ agentproto.DRPCAgentServer = (*agentAPI)(nil)

func (a *agentAPI) GetManifest(context.Context, *agentproto.GetManifestRequest) (*agentproto.Manifest, error) {
	return buildManifest(a.id)
}

func (a *agentAPI) GetServiceBanner(context.Context, *agentproto.GetServiceBannerRequest) (*agentproto.ServiceBanner, error) {
	// coderd's AGPL appearance fetcher: no banner configured.
	return &agentproto.ServiceBanner{}, nil
}

func (a *agentAPI) UpdateStats(_ context.Context, req *agentproto.UpdateStatsRequest) (*agentproto.UpdateStatsResponse, error) {
	interval, err := statsReportInterval()
	if err != nil {
		return nil, err
	}
	res := &agentproto.UpdateStatsResponse{ReportInterval: durationpb.New(interval)}
	if req.Stats == nil {
		// An empty report only asks for the interval.
		return res, nil
	}
	// coderd hands the report to its stats batcher and the metrics to its
	// Prometheus aggregator; keeping the metrics is what is left of that
	// without a database.
	a.mu.Lock()
	for _, m := range req.Stats.Metrics {
		a.metrics[m.GetName()] = m.GetValue()
	}
	a.mu.Unlock()
	return res, nil
}

func (a *agentAPI) UpdateLifecycle(_ context.Context, req *agentproto.UpdateLifecycleRequest) (*agentproto.Lifecycle, error) {
	lc := req.GetLifecycle()
	switch lc.GetState() {
	case agentproto.Lifecycle_CREATED, agentproto.Lifecycle_STARTING, agentproto.Lifecycle_START_TIMEOUT,
		agentproto.Lifecycle_START_ERROR, agentproto.Lifecycle_READY, agentproto.Lifecycle_SHUTTING_DOWN,
		agentproto.Lifecycle_SHUTDOWN_TIMEOUT, agentproto.Lifecycle_SHUTDOWN_ERROR, agentproto.Lifecycle_OFF:
	default:
		return nil, fmt.Errorf("unknown lifecycle state %q", lc.GetState())
	}
	if lc.ChangedAt == nil || lc.ChangedAt.AsTime().IsZero() {
		// coderd fills in its own time and echoes it back.
		lc.ChangedAt = timestamppb.Now()
	}
	a.mu.Lock()
	a.lifecycle = lc.State
	a.mu.Unlock()
	return lc, nil
}

func (a *agentAPI) BatchUpdateAppHealths(_ context.Context, req *agentproto.BatchUpdateAppHealthRequest) (*agentproto.BatchUpdateAppHealthResponse, error) {
	if len(req.Updates) == 0 {
		return &agentproto.BatchUpdateAppHealthResponse{}, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, u := range req.Updates {
		id, err := uuidString(u.Id)
		if err != nil {
			return nil, fmt.Errorf("parse workspace app ID: %w", err)
		}
		if !a.appIDs[id] {
			return nil, fmt.Errorf("workspace app name %s not found", id)
		}
		switch u.Health {
		case agentproto.AppHealth_DISABLED, agentproto.AppHealth_INITIALIZING, agentproto.AppHealth_HEALTHY,
			agentproto.AppHealth_UNHEALTHY:
		default:
			return nil, fmt.Errorf("unknown health status: %v", u.Health)
		}
		a.appHealth[id] = u.Health
	}
	return &agentproto.BatchUpdateAppHealthResponse{}, nil
}

func (a *agentAPI) UpdateStartup(_ context.Context, req *agentproto.UpdateStartupRequest) (*agentproto.Startup, error) {
	s := req.GetStartup()
	// coderd's check (coderd/agentapi/lifecycle.go).
	if !semver.IsValid(s.GetVersion()) {
		return nil, fmt.Errorf("invalid agent semver version %q", s.GetVersion())
	}
	for _, sub := range s.GetSubsystems() {
		switch sub {
		case agentproto.Startup_ENVBOX, agentproto.Startup_ENVBUILDER, agentproto.Startup_EXECTRACE:
		default:
			return nil, fmt.Errorf("invalid agent subsystem %q", sub)
		}
	}
	a.mu.Lock()
	a.startup = s
	a.mu.Unlock()
	return s, nil
}

func (a *agentAPI) BatchUpdateMetadata(_ context.Context, req *agentproto.BatchUpdateMetadataRequest) (*agentproto.BatchUpdateMetadataResponse, error) {
	keysLen := 0
	results := make(map[string]*agentproto.WorkspaceAgentMetadata_Result, len(req.Metadata))
	for _, md := range req.Metadata {
		keysLen += len(md.Key)
		if keysLen > maxMetadataKeysLen {
			return nil, fmt.Errorf("metadata keys of %d bytes exceeded %d bytes", keysLen, maxMetadataKeysLen)
		}
		r := md.GetResult()
		value, errText := r.GetValue(), r.GetError()
		if len(value) > maxMetadataValueLen {
			errText = fmt.Sprintf("value of %d bytes exceeded %d bytes", len(value), maxMetadataValueLen)
			value = value[:maxMetadataValueLen]
		}
		if len(errText) > maxMetadataValueLen {
			errText = errText[:maxMetadataValueLen]
		}
		results[md.Key] = &agentproto.WorkspaceAgentMetadata_Result{
			CollectedAt: r.GetCollectedAt(),
			Value:       value,
			Error:       errText,
		}
	}
	a.mu.Lock()
	for k, r := range results {
		a.metadata[k] = r
	}
	a.mu.Unlock()
	return &agentproto.BatchUpdateMetadataResponse{}, nil
}

func (a *agentAPI) BatchCreateLogs(_ context.Context, req *agentproto.BatchCreateLogsRequest) (*agentproto.BatchCreateLogsResponse, error) {
	a.mu.Lock()
	overflowed := a.overflowed
	a.mu.Unlock()
	if overflowed {
		return &agentproto.BatchCreateLogsResponse{LogLimitExceeded: true}, nil
	}
	if len(req.Logs) == 0 {
		return &agentproto.BatchCreateLogsResponse{}, nil
	}
	if _, err := uuidString(req.LogSourceId); err != nil {
		return nil, fmt.Errorf("parse log source ID %q: %w", req.LogSourceId, err)
	}
	// coderd counts the output bytes against the agent's budget as it
	// inserts the lines.
	length := 0
	for _, l := range req.Logs {
		length += len(l.Output)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.logsLength+length > logsLimit {
		a.overflowed = true
		return &agentproto.BatchCreateLogsResponse{LogLimitExceeded: true}, nil
	}
	a.logsLength += length
	return &agentproto.BatchCreateLogsResponse{}, nil
}

func (a *agentAPI) GetAnnouncementBanners(context.Context, *agentproto.GetAnnouncementBannersRequest) (*agentproto.GetAnnouncementBannersResponse, error) {
	// AGPL coderd: none configured is an empty list.
	return &agentproto.GetAnnouncementBannersResponse{AnnouncementBanners: []*agentproto.BannerConfig{}}, nil
}

func (a *agentAPI) ScriptCompleted(_ context.Context, req *agentproto.WorkspaceAgentScriptCompletedRequest) (*agentproto.WorkspaceAgentScriptCompletedResponse, error) {
	t := req.GetTiming()
	if _, err := uuidString(t.GetScriptId()); err != nil {
		return nil, fmt.Errorf("script id from bytes: %w", err)
	}
	switch t.GetStage() {
	case agentproto.Timing_START, agentproto.Timing_STOP, agentproto.Timing_CRON:
	default:
		return nil, fmt.Errorf("unknown timing stage %q", t.GetStage())
	}
	switch t.GetStatus() {
	case agentproto.Timing_OK, agentproto.Timing_EXIT_FAILURE, agentproto.Timing_TIMED_OUT,
		agentproto.Timing_PIPES_LEFT_OPEN:
	default:
		return nil, fmt.Errorf("unknown timing status %q", t.GetStatus())
	}
	return &agentproto.WorkspaceAgentScriptCompletedResponse{}, nil
}

func (a *agentAPI) GetResourcesMonitoringConfiguration(context.Context, *agentproto.GetResourcesMonitoringConfigurationRequest) (*agentproto.GetResourcesMonitoringConfigurationResponse, error) {
	// The template's monitors: memory and the home volume.
	return &agentproto.GetResourcesMonitoringConfigurationResponse{
		Config: &agentproto.GetResourcesMonitoringConfigurationResponse_Config{
			NumDatapoints:             monitoringDatapoints,
			CollectionIntervalSeconds: monitoringInterval,
		},
		Memory:  &agentproto.GetResourcesMonitoringConfigurationResponse_Memory{Enabled: true},
		Volumes: []*agentproto.GetResourcesMonitoringConfigurationResponse_Volume{{Enabled: true, Path: "/home/coder"}},
	}, nil
}

func (a *agentAPI) PushResourcesMonitoringUsage(_ context.Context, req *agentproto.PushResourcesMonitoringUsageRequest) (*agentproto.PushResourcesMonitoringUsageResponse, error) {
	// coderd classifies each datapoint against the monitors' threshold (80%)
	// to decide their OK/NOK state.
	noks := 0
	for _, p := range req.Datapoints {
		if m := p.Memory; m != nil && m.Total > 0 && m.Used*100 >= m.Total*80 {
			noks++
		}
		for _, v := range p.Volumes {
			if v.Total > 0 && v.Used*100 >= v.Total*80 {
				noks++
			}
		}
	}
	if len(req.Datapoints) > 0 {
		a.mu.Lock()
		a.monitorNOK = noks > 0
		a.mu.Unlock()
	}
	return &agentproto.PushResourcesMonitoringUsageResponse{}, nil
}

func (a *agentAPI) ReportConnection(_ context.Context, req *agentproto.ReportConnectionRequest) (*emptypb.Empty, error) {
	c := req.GetConnection()
	if _, err := uuidString(c.GetId()); err != nil {
		return nil, fmt.Errorf("connection id from bytes: %w", err)
	}
	switch c.GetAction() {
	case agentproto.Connection_CONNECT, agentproto.Connection_DISCONNECT:
	default:
		return nil, fmt.Errorf("unknown agent connection action %q", c.GetAction())
	}
	switch c.GetType() {
	case agentproto.Connection_SSH, agentproto.Connection_VSCODE, agentproto.Connection_JETBRAINS,
		agentproto.Connection_RECONNECTING_PTY:
	default:
		return nil, fmt.Errorf("unknown agent connection type %q", c.GetType())
	}
	return &emptypb.Empty{}, nil
}

func (a *agentAPI) CreateSubAgent(_ context.Context, req *agentproto.CreateSubAgentRequest) (*agentproto.CreateSubAgentResponse, error) {
	if req.Name == "" {
		return nil, errors.New("field: name detail: agent name cannot be empty")
	}
	if !agentNameRegex.MatchString(req.Name) {
		return nil, fmt.Errorf("field: name detail: agent name %q does not match regex %q", req.Name, agentNameRegex)
	}
	for i, d := range req.DisplayApps {
		if _, ok := agentproto.CreateSubAgentRequest_DisplayApp_name[int32(d)]; !ok {
			return nil, fmt.Errorf("field: display_apps[%d] detail: %q is not a valid display app", i, d)
		}
	}
	sub := &agentproto.SubAgent{Name: req.Name, Id: randomUUID(), AuthToken: randomUUID()}
	a.mu.Lock()
	a.subAgents = append(a.subAgents, sub)
	a.mu.Unlock()
	// coderd inserts the apps too; each one that fails validation is
	// reported, not fatal.
	var appErrors []*agentproto.CreateSubAgentResponse_AppCreationError
	for i, app := range req.Apps {
		if !agentNameRegex.MatchString(app.Slug) {
			field := "slug"
			appErrors = append(appErrors, &agentproto.CreateSubAgentResponse_AppCreationError{
				Index: int32(i), //nolint:gosec // bounded by the 4 MiB message
				Field: &field,
				Error: fmt.Sprintf("app slug %q does not match regex %q", app.Slug, agentNameRegex),
			})
		}
	}
	return &agentproto.CreateSubAgentResponse{Agent: sub, AppCreationErrors: appErrors}, nil
}

func (a *agentAPI) DeleteSubAgent(_ context.Context, req *agentproto.DeleteSubAgentRequest) (*agentproto.DeleteSubAgentResponse, error) {
	id, err := uuidString(req.Id)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	kept := a.subAgents[:0]
	for _, s := range a.subAgents {
		if sid, _ := uuidString(s.Id); sid != id {
			kept = append(kept, s)
		}
	}
	// Deleting an unknown id succeeds, as coderd's :exec delete does.
	a.subAgents = kept
	return &agentproto.DeleteSubAgentResponse{}, nil
}

func (a *agentAPI) ListSubAgents(context.Context, *agentproto.ListSubAgentsRequest) (*agentproto.ListSubAgentsResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	agents := make([]*agentproto.SubAgent, 0, len(a.subAgents))
	for _, s := range a.subAgents {
		agents = append(agents, &agentproto.SubAgent{Name: s.Name, Id: s.Id, AuthToken: s.AuthToken})
	}
	return &agentproto.ListSubAgentsResponse{Agents: agents}, nil
}

func (a *agentAPI) ReportBoundaryLogs(_ context.Context, req *agentproto.ReportBoundaryLogsRequest) (*agentproto.ReportBoundaryLogsResponse, error) {
	// coderd logs each entry and counts it for its usage tracker.
	allowed := 0
	for _, l := range req.Logs {
		if l.Allowed {
			allowed++
		}
	}
	a.mu.Lock()
	a.boundaryAllowed += allowed
	a.boundaryDenied += len(req.Logs) - allowed
	a.mu.Unlock()
	return &agentproto.ReportBoundaryLogsResponse{}, nil
}

// uuidString checks that b is a 16-byte UUID, as uuid.FromBytes does, and
// formats it.
func uuidString(b []byte) (string, error) {
	if len(b) != 16 {
		return "", fmt.Errorf("invalid UUID (got %d bytes)", len(b))
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

func randomUUID() []byte {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return uuidV4(b)
}
