package checks

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"agentwire.test/interop/internal/rawrpc"
)

// checkSlow keeps a stream silent for SlowMS. Run with a StreamOpenTimeout
// shorter than that, it shows whether the server ACKs streams as soon as it
// accepts them: hashicorp yamux tears down the whole session when an opened
// stream is not ACKed in time, so the follow-up call would then fail.
func checkSlow(ctx context.Context, env *Env) (string, error) {
	ms := strconv.Itoa(env.SlowMS)
	start := time.Now()
	if err := expectReply(ctx, env, rawrpc.Slow, ms, "slept:"+ms); err != nil {
		if env.Session.IsClosed() {
			// drpc reports the torn-down stream only as "context canceled".
			return "", fmt.Errorf("yamux session closed during the slow call (stream not ACKed within the stream open timeout?): %w", err)
		}
		return "", err
	}
	elapsed := time.Since(start)
	if env.Session.IsClosed() {
		return "", fmt.Errorf("yamux session closed after the slow call")
	}
	if err := expectReply(ctx, env, rawrpc.Unary, "after-slow", "echo:after-slow"); err != nil {
		return "", fmt.Errorf("session unusable after slow call: %w", err)
	}
	return fmt.Sprintf("Slow(%s) took %s; session still usable", ms, elapsed.Round(time.Millisecond)), nil
}
