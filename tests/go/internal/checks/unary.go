package checks

import (
	"context"
	"errors"
	"fmt"

	"storj.io/drpc/drpcerr"

	"agentwire.test/interop/internal/rawrpc"
)

func checkUnary(ctx context.Context, env *Env) (string, error) {
	if err := expectReply(ctx, env, rawrpc.Unary, "hello", "echo:hello"); err != nil {
		return "", err
	}
	return `Unary("hello") = "echo:hello"`, nil
}

// checkEmpty sends and expects zero-length messages: the reply must still
// arrive as a Message packet, or drpc's Invoke fails with EOF.
func checkEmpty(ctx context.Context, env *Env) (string, error) {
	if err := expectReply(ctx, env, rawrpc.Empty, "", ""); err != nil {
		return "", err
	}
	return "Empty(\"\") = \"\"", nil
}

func checkFail(ctx context.Context, env *Env) (string, error) {
	return expectError(ctx, env, rawrpc.Fail, rawrpc.FailCode, rawrpc.FailText)
}

// checkUnknown expects exactly what drpcmux sends for an unregistered method.
func checkUnknown(ctx context.Context, env *Env) (string, error) {
	rpc := rawrpc.ServicePath + "NoSuchMethod"
	return expectError(ctx, env, rpc, 0, fmt.Sprintf("protocol error: unknown rpc: %q", rpc))
}

// expectError calls rpc and requires an error with exactly this code and text.
func expectError(ctx context.Context, env *Env, rpc string, code uint64, text string) (string, error) {
	got, err := invoke(ctx, env, rpc, "x")
	if err == nil {
		return "", fmt.Errorf("%s succeeded with %q, want an error", rpc, got)
	}
	if ctx.Err() != nil {
		return "", err
	}
	var problems []error
	if c := drpcerr.Code(err); c != code {
		problems = append(problems, fmt.Errorf("code %d, want %d", c, code))
	}
	if err.Error() != text {
		problems = append(problems, fmt.Errorf("text %q, want %q", err.Error(), text))
	}
	if len(problems) > 0 {
		return "", fmt.Errorf("%s: %w", rpc, errors.Join(problems...))
	}
	return fmt.Sprintf("code=%d text=%q", code, text), nil
}
