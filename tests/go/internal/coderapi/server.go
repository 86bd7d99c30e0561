package coderapi

import (
	"context"

	agentproto "github.com/coder/coder/v2/agent/proto"
	tailnetproto "github.com/coder/coder/v2/tailnet/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"storj.io/drpc"
)

// AgentServer answers GetManifest and UpdateLifecycle; every other Agent RPC
// falls through to the generated stub, which fails with code 12
// (drpcerr.Unimplemented) just as an unimplemented coderd method would.
type AgentServer struct {
	agentproto.DRPCAgentUnimplementedServer
}

// Manifest is what the Go server's GetManifest returns. It includes one app
// and one script so `interop agent` has real IDs to report against.
func Manifest() *agentproto.Manifest {
	return &agentproto.Manifest{
		AgentId:       AgentID,
		AgentName:     "go-server",
		OwnerUsername: "interop",
		WorkspaceId:   WorkspaceID,
		WorkspaceName: "interop",
		Directory:     "/home/coder",
		EnvironmentVariables: map[string]string{
			"INTEROP": "1",
		},
		Apps: []*agentproto.WorkspaceApp{{
			Id:          AppID,
			Slug:        "web",
			DisplayName: "Web",
			Url:         "http://127.0.0.1:8080",
			Health:      agentproto.WorkspaceApp_HEALTHY,
		}},
		Scripts: []*agentproto.WorkspaceAgentScript{{
			Id:          ScriptID,
			LogSourceId: LogSourceID,
			DisplayName: "startup",
			Script:      "echo hello",
			RunOnStart:  true,
			Timeout:     durationpb.New(0),
		}},
	}
}

func (*AgentServer) GetManifest(context.Context, *agentproto.GetManifestRequest) (*agentproto.Manifest, error) {
	return Manifest(), nil
}

// UpdateLifecycle echoes the reported lifecycle back, as coderd does.
func (*AgentServer) UpdateLifecycle(_ context.Context, req *agentproto.UpdateLifecycleRequest) (*agentproto.Lifecycle, error) {
	if lc := req.GetLifecycle(); lc != nil {
		return lc, nil
	}
	// A nil reply would make drpcmux send no Message at all, and the client
	// would see EOF instead of a (empty) Lifecycle.
	return &agentproto.Lifecycle{}, nil
}

// Register puts the Agent service, and an all-unimplemented Tailnet service,
// on mux: coderd serves both on the same endpoint.
func Register(mux drpc.Mux) error {
	if err := agentproto.DRPCRegisterAgent(mux, &AgentServer{}); err != nil {
		return err
	}
	return tailnetproto.DRPCRegisterTailnet(mux, &tailnetproto.DRPCTailnetUnimplementedServer{})
}
