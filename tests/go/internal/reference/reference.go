// Package reference is a coderd-shaped server for benchmarks: Coder's own
// generated Agent and Tailnet services, answered the way coderd answers them
// but with no database behind them. It is what `interop reference` serves and
// what the bench scripts compare agentwire against, so it does the work coderd
// does per call apart from the queries: it builds the manifest per call,
// validates and converts requests, keeps the small per-connection state coderd
// keeps in memory, and holds the two streams (StreamDERPMaps, Coordinate) open
// for as long as the agent does.
package reference

import (
	"crypto/sha256"
	"fmt"
	"sync/atomic"

	agentproto "github.com/coder/coder/v2/agent/proto"
	tailnetproto "github.com/coder/coder/v2/tailnet/proto"
	"storj.io/drpc"
	"storj.io/drpc/drpcmux"
)

// Identity is the agent a connection speaks for. coderd resolves it from the
// token through the database; here it is derived from the token, so distinct
// tokens are distinct agents with stable IDs.
type Identity struct {
	AgentID       []byte
	WorkspaceID   []byte
	OwnerID       []byte
	AgentName     string
	WorkspaceName string
	OwnerUsername string
}

// tcpSessions numbers the TCP sessions, which carry no token, so each is a
// distinct agent all the same.
var tcpSessions atomic.Uint64

// IdentityFor derives the agent of a token: IDs from SHA-256 of the token, so
// a given token always names the same agent.
func IdentityFor(token string) Identity {
	if token == "" {
		token = fmt.Sprintf("tcp-session-%d", tcpSessions.Add(1))
	}
	sum := sha256.Sum256([]byte(token))
	owner := sha256.Sum256([]byte("owner:" + token))
	short := fmt.Sprintf("%x", sum[:4])
	return Identity{
		AgentID:       uuidV4(sum[:16]),
		WorkspaceID:   uuidV4(sum[16:32]),
		OwnerID:       uuidV4(owner[:16]),
		AgentName:     "main",
		WorkspaceName: "ws-" + short,
		OwnerUsername: "bench",
	}
}

// uuidV4 stamps the version and variant bits on 16 random-looking bytes.
func uuidV4(b []byte) []byte {
	u := make([]byte, 16)
	copy(u, b)
	u[6] = (u[6] & 0x0f) | 0x40
	u[8] = (u[8] & 0x3f) | 0x80
	return u
}

// Handler builds the handler of one session, as coderd builds one
// agentapi.API (and its drpcmux) per agent connection.
func Handler(token string) (drpc.Handler, error) {
	id := IdentityFor(token)
	mux := drpcmux.New()
	if err := agentproto.DRPCRegisterAgent(mux, newAgentAPI(id)); err != nil {
		return nil, err
	}
	if err := tailnetproto.DRPCRegisterTailnet(mux, newTailnetAPI(id)); err != nil {
		return nil, err
	}
	return mux, nil
}
