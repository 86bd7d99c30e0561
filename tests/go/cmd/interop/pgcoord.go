package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"cdr.dev/slog/v3"
	"cdr.dev/slog/v3/sloggers/sloghuman"
	"github.com/coder/coder/v2/coderd/database"
	"github.com/coder/coder/v2/coderd/database/pubsub"
	entailnet "github.com/coder/coder/v2/enterprise/tailnet"
	"github.com/coder/coder/v2/tailnet"
	tailnetproto "github.com/coder/coder/v2/tailnet/proto"
)

// pgcoordCmd runs Coder's own HA coordinator (enterprise/tailnet's PGCoordinator, NewPGCoord) on a Coder database,
// with coderd's pubsub and sqlc store, as one coderd replica of an HA deployment would, and connects one peer to it
// through the coordinator's own Coordinate API: a client tunnelling to --agent-id, or that agent. It prints every
// response as coordinate's JSON lines and follows coordinate's commands on stdin. With --url the client is a real
// tailnet client that reaches the agent (pgcoord_reach.go). See README.md.
func pgcoordCmd(args []string) int {
	fs := flag.NewFlagSet("pgcoord", flag.ContinueOnError)
	pgURL := fs.String("postgres-url", "", "PostgreSQL URL of a Coder database (interop coderdb migrate)")
	as := fs.String("as", "client", "client (tunnels to --agent-id) or agent (is --agent-id)")
	agentID := fs.String("agent-id", "", "the agent's id")
	peerID := fs.String("peer-id", "", "the client's peer id (default: a fresh one, as coderd gives each client connection)")
	nodeID := fs.Int64("node-id", 1, "Node.id of the first node sent; later nodes come from the node command")
	verbose := fs.Bool("verbose", false, "log PGCoordinator's info lines to stderr, not only its warnings")
	var reach reachOptions
	fs.StringVar(&reach.url, "url", "", "--as client only: be a real tailnet client, with the DERP map of this server's connection info for the agent (http://HOST:PORT), and reach the agent over SSH")
	fs.StringVar(&reach.token, "token", "", "with --url: a user API token for the connection info")
	fs.BoolVar(&reach.disableDirect, "disable-direct", false, "with --url: block direct connections, every packet through DERP")
	fs.DurationVar(&reach.timeout, "timeout", 60*time.Second, "with --url: how long each step may take")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	agent, err := uuid.Parse(*agentID)
	if err != nil || *pgURL == "" || (*as != "agent" && *as != "client") {
		fmt.Fprintf(os.Stderr, "pgcoord: --postgres-url, --as agent|client and a valid --agent-id are required (%v)\n", err)
		return exitUsage
	}
	if reach.url != "" && (*as != "client" || reach.token == "") {
		fmt.Fprintln(os.Stderr, "pgcoord: --url is for --as client, and needs --token")
		return exitUsage
	}
	self := agent
	var auth tailnet.CoordinateeAuth = tailnet.AgentCoordinateeAuth{ID: agent}
	if *as == "client" {
		self = uuid.New()
		if *peerID != "" {
			if self, err = uuid.Parse(*peerID); err != nil {
				fmt.Fprintf(os.Stderr, "pgcoord: --peer-id: %v\n", err)
				return exitUsage
			}
		}
		auth = tailnet.ClientCoordinateeAuth{AgentID: agent}
	}

	sqlDB, err := openCoderDB(*pgURL)
	if err != nil {
		emit(map[string]any{"end": "connect", "error": err.Error()})
		return exitFail
	}
	defer sqlDB.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logger := slog.Make(sloghuman.Sink(os.Stderr)).Leveled(slog.LevelWarn)
	if *verbose {
		logger = logger.Leveled(slog.LevelInfo)
	}
	ps, err := pubsub.New(ctx, logger, sqlDB, pqURL(*pgURL))
	if err != nil {
		emit(map[string]any{"end": "pubsub", "error": err.Error()})
		return exitFail
	}
	defer ps.Close()
	coord, err := entailnet.NewPGCoord(ctx, logger, ps, database.New(sqlDB))
	if err != nil {
		emit(map[string]any{"end": "coordinator", "error": err.Error()})
		return exitFail
	}
	defer coord.Close()
	if reach.url != "" {
		return pgcoordReach(ctx, logger, coord, self, agent, auth, reach)
	}

	node := func(n int64) *tailnetproto.CoordinateRequest { return nodeUpdate(*as, agent, n) }
	tunnel := &tailnetproto.CoordinateRequest_Tunnel{Id: agent[:]}

	// A peer's connection is its context: ending it without a Disconnect is how a peer is lost to PGCoordinator.
	var (
		peerCtx    context.Context
		peerCancel context.CancelFunc = func() {}
		reqs       chan<- *tailnetproto.CoordinateRequest
		wg         sync.WaitGroup
	)
	defer func() { peerCancel() }()
	send := func(req *tailnetproto.CoordinateRequest) bool {
		select {
		case reqs <- req:
			return true
		case <-peerCtx.Done():
			return false
		case <-time.After(10 * time.Second):
			emit(map[string]any{"end": "send", "error": "the coordinator took no request for 10s"})
			return false
		}
	}
	connect := func(n int64) bool {
		peerCtx, peerCancel = context.WithCancel(ctx)
		var resps <-chan *tailnetproto.CoordinateResponse
		reqs, resps = coord.Coordinate(peerCtx, self, *as, auth)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for resp := range resps {
				emitResponse(resp)
			}
			emit(map[string]any{"end": "closed"})
		}()
		first := node(n)
		if *as == "client" {
			first.AddTunnel = tunnel
		}
		return send(first)
	}
	if !connect(*nodeID) {
		return exitFail
	}
	emit(pgcoordReady(self))

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
				fmt.Fprintln(os.Stderr, "pgcoord: usage: node N")
				continue
			}
			req = node(n)
		case "add-tunnel":
			req = &tailnetproto.CoordinateRequest{AddTunnel: tunnel}
		case "remove-tunnel":
			req = &tailnetproto.CoordinateRequest{RemoveTunnel: tunnel}
		case "ready":
			id, err := uuid.Parse(fields[len(fields)-1])
			if err != nil || len(fields) != 2 {
				fmt.Fprintln(os.Stderr, "pgcoord: usage: ready PEER-ID")
				continue
			}
			req = &tailnetproto.CoordinateRequest{ReadyForHandshake: []*tailnetproto.CoordinateRequest_ReadyForHandshake{{Id: id[:]}}}
		case "disconnect":
			// Graceful: PGCoordinator deletes the peer's row and its tunnels, then closes the responses. The
			// coordinator keeps running (until stdin ends), so that its writes are not cut short by its Close, which
			// marks every peer it still has lost.
			_ = send(&tailnetproto.CoordinateRequest{Disconnect: &tailnetproto.CoordinateRequest_Disconnect{}})
			wg.Wait()
			continue
		case "quit":
			// The connection ends without a Disconnect: PGCoordinator marks the peer lost and keeps its tunnels.
			peerCancel()
			wg.Wait()
			continue
		case "reconnect":
			// The same peer id coordinates again (an agent reconnecting, a client resuming), with a new node and,
			// as a client, its tunnel.
			n, err := strconv.ParseInt(fields[len(fields)-1], 10, 64)
			if err != nil || len(fields) != 2 {
				fmt.Fprintln(os.Stderr, "pgcoord: usage: reconnect N")
				continue
			}
			peerCancel()
			wg.Wait()
			if !connect(n) {
				return exitFail
			}
			emit(map[string]any{"sent": fields[0]})
			continue
		default:
			fmt.Fprintf(os.Stderr, "pgcoord: unknown command %q\n", fields[0])
			continue
		}
		if !send(req) {
			return exitFail
		}
		emit(map[string]any{"sent": fields[0]})
	}
	peerCancel()
	wg.Wait()
	return exitOK
}

// pgcoordReady is the first line: the peer's id, and the protocol's timing and words from Coder's package, for the
// tests to reason with: never copied.
func pgcoordReady(self uuid.UUID) map[string]any {
	return map[string]any{
		"ready":               true,
		"peer_id":             self.String(),
		"heartbeat_period_ms": entailnet.HeartbeatPeriod.Milliseconds(),
		"missed_heartbeats":   entailnet.MissedHeartbeats,
		"heartbeat_channel":   entailnet.EventHeartbeats,
		"close_err_unhealthy": entailnet.CloseErrUnhealthy,
	}
}

// emitResponse prints a coordinator's response as coordinate's lines: its error, then one line per peer update.
func emitResponse(resp *tailnetproto.CoordinateResponse) {
	if resp.Error != "" {
		emit(map[string]any{"error": resp.Error})
	}
	for _, u := range resp.PeerUpdates {
		line := map[string]any{"id": formatUUID(u.Id), "kind": u.Kind.String(), "reason": u.Reason}
		if u.Node != nil {
			line["node"] = u.Node.Id
		}
		emit(line)
	}
}
