package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/coder/coder/v2/tailnet"
	tailnetproto "github.com/coder/coder/v2/tailnet/proto"

	"agentwire.test/interop/internal/link"
)

// coordinate opens Tailnet.Coordinate with Coder's generated DRPC client, as
// an agent (on the agent endpoint, agent token) or as a client (on
// /api/v2/workspaceagents/ID/coordinate, user token). It sends its node (and,
// as a client, a tunnel to the agent), prints every response as JSON lines,
// and follows commands on stdin. See README.md.
func coordinate(args []string) int {
	fs := flag.NewFlagSet("coordinate", flag.ContinueOnError)
	rawURL := fs.String("url", "", "full ws(s):// URL of the agent RPC endpoint (--as agent) or of the coordinate endpoint (--as client)")
	token := fs.String("token", "", "agent token (--as agent) or user API token (--as client), sent as Coder-Session-Token")
	as := fs.String("as", "client", "agent or client")
	agentID := fs.String("agent-id", "", "the agent's id: its own for --as agent (for its address), the tunnel's destination for --as client")
	nodeID := fs.Int64("node-id", 1, "Node.id of the first node sent; later nodes come from the node command")
	timeout := fs.Duration("timeout", 20*time.Second, "connect timeout")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	agent, err := parseUUID(*agentID)
	if err != nil || *rawURL == "" || (*as != "agent" && *as != "client") {
		fmt.Fprintf(os.Stderr, "coordinate: --url, --as agent|client and a valid --agent-id are required (%v)\n", err)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	session, err := link.Dial(ctx, link.DialConfig{Transport: "ws", URL: *rawURL, Token: *token})
	cancel()
	if err != nil {
		emit(map[string]any{"end": "connect", "error": err.Error()})
		return exitFail
	}
	defer func() { _ = session.Close() }()
	client := tailnetproto.NewDRPCTailnetClient(&link.MuxConn{Session: session})
	stream, err := client.Coordinate(context.Background())
	if err != nil {
		emit(map[string]any{"end": "open", "error": err.Error()})
		return exitFail
	}
	node := func(n int64) *tailnetproto.CoordinateRequest { return nodeUpdate(*as, uuid.UUID(agent), n) }
	tunnel := &tailnetproto.CoordinateRequest_Tunnel{Id: agent[:]}
	first := node(*nodeID)
	if *as == "client" {
		first.AddTunnel = tunnel
	}
	if err := stream.Send(first); err != nil {
		emit(map[string]any{"end": "send", "error": err.Error()})
		return exitFail
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			resp, err := stream.Recv()
			if err != nil {
				emit(map[string]any{"end": "recv", "error": err.Error()})
				return
			}
			emitResponse(resp)
		}
	}()
	emit(map[string]any{"ready": true})

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fields := strings.Fields(in.Text())
		if len(fields) == 0 {
			continue
		}
		var req *tailnetproto.CoordinateRequest
		switch fields[0] {
		case "node":
			n, err := strconv.ParseInt(fields[len(fields)-1], 10, 64)
			if err != nil || len(fields) != 2 {
				fmt.Fprintln(os.Stderr, "coordinate: usage: node N")
				continue
			}
			req = node(n)
		case "add-tunnel":
			req = &tailnetproto.CoordinateRequest{AddTunnel: tunnel}
		case "remove-tunnel":
			req = &tailnetproto.CoordinateRequest{RemoveTunnel: tunnel}
		case "ready":
			id, err := parseUUID(fields[len(fields)-1])
			if err != nil || len(fields) != 2 {
				fmt.Fprintln(os.Stderr, "coordinate: usage: ready PEER-ID")
				continue
			}
			req = &tailnetproto.CoordinateRequest{ReadyForHandshake: []*tailnetproto.CoordinateRequest_ReadyForHandshake{{Id: id[:]}}}
		case "disconnect":
			// Coder's graceful close: Disconnect, then the server ends the stream.
			_ = stream.Send(&tailnetproto.CoordinateRequest{Disconnect: &tailnetproto.CoordinateRequest_Disconnect{}})
			_ = stream.CloseSend()
			wg.Wait()
			return exitOK
		case "quit":
			// Vanish without a Disconnect: the server must call us lost.
			_ = session.Close()
			wg.Wait()
			return exitOK
		default:
			fmt.Fprintf(os.Stderr, "coordinate: unknown command %q\n", fields[0])
			continue
		}
		if err := stream.Send(req); err != nil {
			emit(map[string]any{"end": "send", "error": err.Error()})
			return exitFail
		}
		emit(map[string]any{"sent": fields[0]})
	}
	_ = session.Close()
	wg.Wait()
	return exitOK
}

// nodeUpdate is the node a test peer sends as node n: as Coder's agent claims its addresses (its id under both service
// prefixes, from Coder's own tailnet package), or as Coder's client takes one under the Tailscale prefix (numbered by
// n, so the output is reproducible). The coordinate and pgcoord verbs both send it.
func nodeUpdate(as string, agent uuid.UUID, n int64) *tailnetproto.CoordinateRequest {
	var prefixes []netip.Prefix
	if as == "agent" {
		// What Coder's agent claims (agent/agent.go, wireguardAddresses): its id under both service
		// prefixes, computed by Coder's own tailnet package.
		prefixes = []netip.Prefix{
			tailnet.TailscaleServicePrefix.PrefixFromUUID(agent),
			tailnet.CoderServicePrefix.PrefixFromUUID(agent),
		}
	} else {
		// Coder's client takes a random address under the Tailscale prefix (codersdk/workspacesdk,
		// DialAgent); a node-numbered one keeps the output reproducible.
		var id uuid.UUID
		id[15] = byte(n)
		prefixes = []netip.Prefix{tailnet.TailscaleServicePrefix.PrefixFromUUID(id)}
	}
	addresses := make([]string, len(prefixes))
	for i, p := range prefixes {
		addresses[i] = p.String()
	}
	return &tailnetproto.CoordinateRequest{UpdateSelf: &tailnetproto.CoordinateRequest_UpdateSelf{Node: &tailnetproto.Node{
		Id:            n,
		Key:           make([]byte, 32),
		Disco:         fmt.Sprintf("discokey:%s-%d", as, n),
		PreferredDerp: 999,
		Addresses:     addresses,
		AllowedIps:    addresses,
		Endpoints:     []string{fmt.Sprintf("192.0.2.1:%d", 41641+n)},
	}}}
}

var emitMu sync.Mutex

// emit prints one JSON line on stdout.
func emit(v map[string]any) {
	line, _ := json.Marshal(v)
	emitMu.Lock()
	defer emitMu.Unlock()
	fmt.Println(string(line))
}

func parseUUID(s string) ([16]byte, error) {
	var out [16]byte
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		return out, fmt.Errorf("invalid UUID %q", s)
	}
	copy(out[:], b)
	return out, nil
}

func formatUUID(b []byte) string {
	if len(b) != 16 {
		return hex.EncodeToString(b)
	}
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
