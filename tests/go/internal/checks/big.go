package checks

import (
	"context"
	"fmt"
	"strconv"

	"agentwire.test/interop/internal/rawrpc"
)

// bigSizes: 70000 needs two 64 KiB frames; 4 MiB − 1 KiB is close to the
// 4 MiB packet limit both sides enforce, and far beyond one yamux window.
var bigSizes = []int{70000, 4<<20 - 1<<10}

func checkBig(ctx context.Context, env *Env) (string, error) {
	for _, n := range bigSizes {
		var out rawrpc.Msg
		if err := env.Conn.Invoke(ctx, rawrpc.Big, rawrpc.Encoding, rawrpc.New(strconv.Itoa(n)), &out); err != nil {
			return "", fmt.Errorf("Big(%d): %w", n, err)
		}
		if len(out) != n {
			return "", fmt.Errorf("Big(%d): got %d bytes", n, len(out))
		}
		for i, b := range out {
			if b != rawrpc.BigByte(i) {
				return "", fmt.Errorf("Big(%d): byte %d = %d, want %d", n, i, b, rawrpc.BigByte(i))
			}
		}
	}
	return fmt.Sprintf("sizes %v byte-exact", bigSizes), nil
}
