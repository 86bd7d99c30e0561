package coderapi

import (
	"context"
	"strings"
	"time"

	agentproto "github.com/coder/coder/v2/agent/proto"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// AgentService is the dRPC path prefix of Coder's Agent service, taken from
// the generated description ("/coder.agent.v2.Agent/").
var AgentService = func() string {
	rpc, _, _, _, _ := agentproto.DRPCAgentDescription{}.Method(0)
	return rpc[:strings.LastIndex(rpc, "/")+1]
}()

// Call is one Agent RPC as a real agent would issue it.
type Call struct {
	Method string // e.g. "GetManifest"; the wire path is AgentService+Method
	Do     func(ctx context.Context, c agentproto.DRPCAgentClient, s *State) (proto.Message, error)
}

// State carries IDs learned from earlier answers (the manifest, a created
// sub-agent) into later requests, falling back to fixed IDs when the server
// did not provide them.
type State struct {
	Manifest   *agentproto.Manifest
	SubAgentID []byte
}

func (s *State) appID() []byte {
	if apps := s.Manifest.GetApps(); len(apps) > 0 && len(apps[0].GetId()) > 0 {
		return apps[0].GetId()
	}
	return nil
}

func (s *State) script() (id, logSource []byte) {
	id, logSource = ScriptID, LogSourceID
	if scripts := s.Manifest.GetScripts(); len(scripts) > 0 {
		if b := scripts[0].GetId(); len(b) > 0 {
			id = b
		}
		if b := scripts[0].GetLogSourceId(); len(b) > 0 {
			logSource = b
		}
	}
	return id, logSource
}

// Calls lists every Agent RPC of the pinned Coder version in the order an
// agent typically makes them during start-up.
func Calls() []Call {
	return []Call{
		{"GetManifest", func(ctx context.Context, c agentproto.DRPCAgentClient, s *State) (proto.Message, error) {
			m, err := c.GetManifest(ctx, &agentproto.GetManifestRequest{})
			if err == nil {
				s.Manifest = m
			}
			return m, err
		}},
		{"GetServiceBanner", func(ctx context.Context, c agentproto.DRPCAgentClient, _ *State) (proto.Message, error) {
			return c.GetServiceBanner(ctx, &agentproto.GetServiceBannerRequest{})
		}},
		{"UpdateStats", func(ctx context.Context, c agentproto.DRPCAgentClient, _ *State) (proto.Message, error) {
			return c.UpdateStats(ctx, &agentproto.UpdateStatsRequest{Stats: &agentproto.Stats{
				ConnectionsByProto:        map[string]int64{"ssh": 1},
				ConnectionCount:           1,
				ConnectionMedianLatencyMs: 12.5,
				RxPackets:                 10,
				RxBytes:                   1024,
				TxPackets:                 8,
				TxBytes:                   2048,
				SessionCountSsh:           1,
				Metrics: []*agentproto.Stats_Metric{{
					Name:   "agent_startup_seconds",
					Type:   agentproto.Stats_Metric_GAUGE,
					Value:  1.5,
					Labels: []*agentproto.Stats_Metric_Label{{Name: "source", Value: "interop"}},
				}},
			}})
		}},
		lifecycle(agentproto.Lifecycle_STARTING),
		lifecycle(agentproto.Lifecycle_READY),
		{"BatchUpdateAppHealths", func(ctx context.Context, c agentproto.DRPCAgentClient, s *State) (proto.Message, error) {
			req := &agentproto.BatchUpdateAppHealthRequest{}
			if id := s.appID(); id != nil {
				req.Updates = []*agentproto.BatchUpdateAppHealthRequest_HealthUpdate{{Id: id, Health: agentproto.AppHealth_HEALTHY}}
			}
			return c.BatchUpdateAppHealths(ctx, req)
		}},
		{"UpdateStartup", func(ctx context.Context, c agentproto.DRPCAgentClient, _ *State) (proto.Message, error) {
			return c.UpdateStartup(ctx, &agentproto.UpdateStartupRequest{Startup: &agentproto.Startup{
				Version:           "v2.30.0",
				ExpandedDirectory: "/home/coder",
			}})
		}},
		{"BatchUpdateMetadata", func(ctx context.Context, c agentproto.DRPCAgentClient, _ *State) (proto.Message, error) {
			now := timestamppb.Now()
			return c.BatchUpdateMetadata(ctx, &agentproto.BatchUpdateMetadataRequest{Metadata: []*agentproto.Metadata{
				{Key: "cpu", Result: &agentproto.WorkspaceAgentMetadata_Result{CollectedAt: now, Value: "12%"}},
				{Key: "mem", Result: &agentproto.WorkspaceAgentMetadata_Result{CollectedAt: now, Value: "1.2 GiB"}},
			}})
		}},
		{"BatchCreateLogs", func(ctx context.Context, c agentproto.DRPCAgentClient, s *State) (proto.Message, error) {
			_, logSource := s.script()
			now := time.Now()
			return c.BatchCreateLogs(ctx, &agentproto.BatchCreateLogsRequest{
				LogSourceId: logSource,
				Logs: []*agentproto.Log{
					{CreatedAt: timestamppb.New(now), Output: "starting", Level: agentproto.Log_INFO},
					{CreatedAt: timestamppb.New(now.Add(time.Millisecond)), Output: "started", Level: agentproto.Log_INFO},
				},
			})
		}},
		{"GetAnnouncementBanners", func(ctx context.Context, c agentproto.DRPCAgentClient, _ *State) (proto.Message, error) {
			return c.GetAnnouncementBanners(ctx, &agentproto.GetAnnouncementBannersRequest{})
		}},
		{"ScriptCompleted", func(ctx context.Context, c agentproto.DRPCAgentClient, s *State) (proto.Message, error) {
			id, _ := s.script()
			end := time.Now()
			return c.ScriptCompleted(ctx, &agentproto.WorkspaceAgentScriptCompletedRequest{Timing: &agentproto.Timing{
				ScriptId: id,
				Start:    timestamppb.New(end.Add(-2 * time.Second)),
				End:      timestamppb.New(end),
				ExitCode: 0,
				Stage:    agentproto.Timing_START,
				Status:   agentproto.Timing_OK,
			}})
		}},
		{"GetResourcesMonitoringConfiguration", func(ctx context.Context, c agentproto.DRPCAgentClient, _ *State) (proto.Message, error) {
			return c.GetResourcesMonitoringConfiguration(ctx, &agentproto.GetResourcesMonitoringConfigurationRequest{})
		}},
		{"PushResourcesMonitoringUsage", func(ctx context.Context, c agentproto.DRPCAgentClient, _ *State) (proto.Message, error) {
			return c.PushResourcesMonitoringUsage(ctx, &agentproto.PushResourcesMonitoringUsageRequest{
				Datapoints: []*agentproto.PushResourcesMonitoringUsageRequest_Datapoint{{
					CollectedAt: timestamppb.Now(),
					Memory:      &agentproto.PushResourcesMonitoringUsageRequest_Datapoint_MemoryUsage{Used: 1 << 30, Total: 4 << 30},
					Volumes: []*agentproto.PushResourcesMonitoringUsageRequest_Datapoint_VolumeUsage{
						{Volume: "/home/coder", Used: 10 << 30, Total: 50 << 30},
					},
				}},
			})
		}},
		{"ReportConnection", func(ctx context.Context, c agentproto.DRPCAgentClient, _ *State) (proto.Message, error) {
			return c.ReportConnection(ctx, &agentproto.ReportConnectionRequest{Connection: &agentproto.Connection{
				Id:        ConnectionID,
				Action:    agentproto.Connection_CONNECT,
				Type:      agentproto.Connection_SSH,
				Timestamp: timestamppb.Now(),
				Ip:        "127.0.0.1",
			}})
		}},
		{"CreateSubAgent", func(ctx context.Context, c agentproto.DRPCAgentClient, s *State) (proto.Message, error) {
			resp, err := c.CreateSubAgent(ctx, &agentproto.CreateSubAgentRequest{
				Name:            "devcontainer",
				Directory:       "/workspaces/project",
				Architecture:    "amd64",
				OperatingSystem: "linux",
				Apps:            []*agentproto.CreateSubAgentRequest_App{{Slug: "sub-web", Url: proto.String("http://127.0.0.1:3000")}},
			})
			if id := resp.GetAgent().GetId(); len(id) > 0 {
				s.SubAgentID = id
			}
			return resp, err
		}},
		{"ListSubAgents", func(ctx context.Context, c agentproto.DRPCAgentClient, _ *State) (proto.Message, error) {
			return c.ListSubAgents(ctx, &agentproto.ListSubAgentsRequest{})
		}},
		{"DeleteSubAgent", func(ctx context.Context, c agentproto.DRPCAgentClient, s *State) (proto.Message, error) {
			id := s.SubAgentID
			if id == nil {
				id = SubAgentIDFix
			}
			return c.DeleteSubAgent(ctx, &agentproto.DeleteSubAgentRequest{Id: id})
		}},
		{"ReportBoundaryLogs", func(ctx context.Context, c agentproto.DRPCAgentClient, _ *State) (proto.Message, error) {
			return c.ReportBoundaryLogs(ctx, &agentproto.ReportBoundaryLogsRequest{Logs: []*agentproto.BoundaryLog{{
				Allowed: true,
				Time:    timestamppb.Now(),
				Resource: &agentproto.BoundaryLog_HttpRequest_{HttpRequest: &agentproto.BoundaryLog_HttpRequest{
					Method:      "GET",
					Url:         "https://example.com/",
					MatchedRule: "allow example.com",
				}},
			}}})
		}},
	}
}

func lifecycle(state agentproto.Lifecycle_State) Call {
	return Call{"UpdateLifecycle", func(ctx context.Context, c agentproto.DRPCAgentClient, _ *State) (proto.Message, error) {
		return c.UpdateLifecycle(ctx, &agentproto.UpdateLifecycleRequest{Lifecycle: &agentproto.Lifecycle{
			State:     state,
			ChangedAt: timestamppb.Now(),
		}})
	}}
}
