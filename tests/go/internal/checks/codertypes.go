package checks

import (
	"context"
	"fmt"

	agentproto "github.com/coder/coder/v2/agent/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"agentwire.test/interop/internal/coderapi"
)

// checkCoderTypes calls Coder's generated Agent client and reports the
// typed answers; it requires only that both calls succeed, and leaves
// judging their content to the caller.
func checkCoderTypes(ctx context.Context, env *Env) (string, error) {
	client := agentproto.NewDRPCAgentClient(env.Conn)
	manifest, err := client.GetManifest(ctx, &agentproto.GetManifestRequest{})
	if err != nil {
		return "", fmt.Errorf("GetManifest: %w", err)
	}
	lifecycle, err := client.UpdateLifecycle(ctx, &agentproto.UpdateLifecycleRequest{
		Lifecycle: &agentproto.Lifecycle{State: agentproto.Lifecycle_READY, ChangedAt: timestamppb.Now()},
	})
	if err != nil {
		return "", fmt.Errorf("UpdateLifecycle: %w", err)
	}
	m, err := coderapi.ProtoJSON(manifest)
	if err != nil {
		return "", err
	}
	l, err := coderapi.ProtoJSON(lifecycle)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("GetManifest=%s UpdateLifecycle=%s", compact(m), compact(l)), nil
}
