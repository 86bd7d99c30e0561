// Package checks holds the client-side interop checks run by `interop call`.
// Each check drives the raw-bytes interop service (or Coder's Agent service)
// through a MultiplexedConn-like connection and verifies the answer exactly.
package checks

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/yamux"
	"storj.io/drpc"

	"agentwire.test/interop/internal/rawrpc"
)

// Env is what every check gets: one yamux session, shared by all checks as a
// Coder agent shares one session for all its calls.
type Env struct {
	Session *yamux.Session
	Conn    drpc.Conn
	SlowMS  int
}

// Check is one named check. Run returns a human-readable detail on success
// and an error describing the first mismatch on failure.
type Check struct {
	Name string
	// Default is true for checks run when --only is not given.
	Default bool
	Run     func(ctx context.Context, env *Env) (string, error)
}

// All returns every check in the order they run.
func All(env *Env) []Check {
	return []Check{
		{"unary", true, checkUnary},
		{"empty", true, checkEmpty},
		{"server_stream", true, checkServerStream},
		{"client_stream", true, checkClientStream},
		{"bidi", true, checkBidi},
		{"fail", true, checkFail},
		{"unknown", true, checkUnknown},
		{"big", true, checkBig},
		{"concurrent", true, checkConcurrent},
		// slow only makes sense with a delay to prove something with.
		{"slow", env.SlowMS > 0, checkSlow},
		// coder_types needs a server that implements Coder's Agent service.
		{"coder_types", false, checkCoderTypes},
	}
}

// Select picks the checks named in only (comma separated), or the default
// ones when only is empty. Unknown names are an error.
func Select(all []Check, only string) ([]Check, error) {
	if only == "" {
		var out []Check
		for _, c := range all {
			if c.Default {
				out = append(out, c)
			}
		}
		return out, nil
	}
	byName := map[string]Check{}
	for _, c := range all {
		byName[c.Name] = c
	}
	var out []Check
	for _, name := range strings.Split(only, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		c, ok := byName[name]
		if !ok {
			names := make([]string, 0, len(byName))
			for n := range byName {
				names = append(names, n)
			}
			sort.Strings(names)
			return nil, fmt.Errorf("unknown check %q (known: %s)", name, strings.Join(names, ","))
		}
		out = append(out, c)
	}
	return out, nil
}

// invoke makes one unary raw-bytes call and returns the reply as a string.
func invoke(ctx context.Context, env *Env, rpc, req string) (string, error) {
	var out rawrpc.Msg
	if err := env.Conn.Invoke(ctx, rpc, rawrpc.Encoding, rawrpc.New(req), &out); err != nil {
		return "", err
	}
	return string(out), nil
}

// expectReply is invoke plus an exact comparison.
func expectReply(ctx context.Context, env *Env, rpc, req, want string) error {
	got, err := invoke(ctx, env, rpc, req)
	if err != nil {
		return fmt.Errorf("%s(%q): %w", rpc, req, err)
	}
	if got != want {
		return fmt.Errorf("%s(%q) = %q, want %q", rpc, req, got, want)
	}
	return nil
}
