package checks

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"agentwire.test/interop/internal/rawrpc"
)

// concurrentCalls unary calls run at once, each on its own yamux stream, as
// an agent's independent loops (stats, metadata, logs …) do.
const concurrentCalls = 64

func checkConcurrent(ctx context.Context, env *Env) (string, error) {
	errs := make([]error, concurrentCalls)
	var wg sync.WaitGroup
	for i := 0; i < concurrentCalls; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			req := "c-" + strconv.Itoa(i)
			errs[i] = expectReply(ctx, env, rawrpc.Unary, req, "echo:"+req)
		}(i)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d concurrent unary calls, all replies correct", concurrentCalls), nil
}
