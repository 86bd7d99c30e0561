package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/codersdk/workspacesdk"
	"github.com/coder/coder/v2/tailnet"
	tailnetproto "github.com/coder/coder/v2/tailnet/proto"
)

// reachOptions are pgcoord's --url mode: the client is a real tailnet client.
type reachOptions struct {
	url           string
	token         string
	disableDirect bool
	timeout       time.Duration
}

// relayPings is how many pings must all go through DERP when direct connections are blocked: more than one, so that
// a direct path tailscale finds after the first is caught.
const relayPings = 3

// pgcoordReach is the client coderd would run for a user in front of PGCoordinator, built as coderd builds its own
// (coderd/tailnet.go, NewServerTailnet): a tailnet.Conn driven by a tailnet.Controller whose coordination is
// in-memory on the coordinator, here with the client endpoint's auth (ClientCoordinateeAuth for the agent, as
// workspaceAgentClientCoordinate gives the clients it serves) and DialAgent's tunnel controller and address. The
// DERP map is the one the server at o.url gives the agent's clients (its connection info), so that the relay is
// the agent's. It prints the ready line, every peer update PGCoordinator sends the Conn, and a line per step of the
// round trip: the agent reachable, a ping (direct unless blocked), `echo NONCE` over the agent's SSH server.
func pgcoordReach(
	ctx context.Context,
	logger slog.Logger,
	coord tailnet.Coordinator,
	self, agent uuid.UUID,
	auth tailnet.CoordinateeAuth,
	o reachOptions,
) int {
	serverURL, err := url.Parse(o.url)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgcoord: --url: %v\n", err)
		return exitUsage
	}
	sdk := workspacesdk.New(codersdk.New(serverURL, codersdk.WithSessionToken(o.token), codersdk.WithLogger(logger)))
	infoCtx, cancelInfo := context.WithTimeout(ctx, o.timeout)
	info, err := sdk.AgentConnectionInfo(infoCtx, agent)
	cancelInfo()
	if err == nil && info.DERPMap == nil {
		err = errors.New("the connection info has no DERP map")
	}
	if err != nil {
		emit(map[string]any{"end": "connection-info", "error": err.Error()})
		return exitFail
	}
	sdk.RewriteDERPMap(info.DERPMap)
	regions := []int{}
	for id := range info.DERPMap.Regions {
		regions = append(regions, id)
	}
	sort.Ints(regions)

	conn, err := tailnet.NewConn(&tailnet.Options{
		Addresses:           []netip.Prefix{netip.PrefixFrom(tailnet.TailscaleServicePrefix.RandomAddr(), 128)},
		DERPMap:             info.DERPMap,
		DERPForceWebSockets: info.DERPForceWebSockets,
		Logger:              logger.Named("tailnet"),
		BlockEndpoints:      o.disableDirect || info.DisableDirectConnections,
	})
	if err != nil {
		emit(map[string]any{"end": "tailnet", "error": err.Error()})
		return exitFail
	}
	defer conn.Close()

	// Before the coordination starts, so that no peer update comes ahead of it.
	ready := pgcoordReady(self)
	ready["derp_regions"] = regions
	ready["block_endpoints"] = conn.GetBlockEndpoints()
	emit(ready)

	ctrlCtx, stopCtrl := context.WithCancel(ctx)
	defer stopCtrl()
	controller := tailnet.NewController(logger.Named("controller"), &pgcoordDialer{
		logger: logger, coord: coord, self: self, auth: auth,
	})
	coordCtrl := tailnet.NewTunnelSrcCoordController(logger.Named("coordination"), conn)
	coordCtrl.AddDestination(agent)
	controller.CoordCtrl = coordCtrl
	controller.Run(ctrlCtx)

	agentConn := workspacesdk.NewAgentConn(conn, workspacesdk.AgentConnOptions{
		AgentID: agent,
		// The Conn is closed here, once, after the controller's graceful disconnect.
		CloseFunc: func() error { return workspacesdk.ErrSkipClose },
	})
	step := func(name string, run func(ctx context.Context) (map[string]any, error)) bool {
		return runStep(ctx, o.timeout, name, run)
	}
	roundTrip := func() {
		_ = step("reachable", func(ctx context.Context) (map[string]any, error) {
			if !agentConn.AwaitReachable(ctx) {
				return nil, fmt.Errorf("the agent did not answer over tailnet: %w", ctx.Err())
			}
			return nil, nil
		}) && step("ping", func(ctx context.Context) (map[string]any, error) {
			return pingRun(ctx, agentConn, conn.GetBlockEndpoints())
		}) && step("ssh", func(ctx context.Context) (map[string]any, error) {
			return sshRun(ctx, agentConn, "")
		})
	}
	roundTrip()

	// Peer updates go on being printed (a LOST, once the agent's coordinator is dead, and its NODE when it is back)
	// until stdin ends; `reach` runs the round trip again on the same Conn, as a user's next command would.
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fields := strings.Fields(in.Text())
		switch {
		case len(fields) == 0:
		case fields[0] == "reach" && len(fields) == 1:
			roundTrip()
		default:
			fmt.Fprintf(os.Stderr, "pgcoord: --url takes only `reach` (%q); end stdin to close\n", fields[0])
		}
	}
	// The controller disconnects gracefully from PGCoordinator when its context ends.
	stopCtrl()
	<-controller.Closed()
	return exitOK
}

// pingRun sends disco pings to the agent until one takes a direct path or, with direct connections blocked,
// relayPings of them, each of which must have gone through DERP.
func pingRun(ctx context.Context, conn workspacesdk.AgentConn, blocked bool) (map[string]any, error) {
	for pings := 1; ; pings++ {
		latency, p2p, pong, err := conn.Ping(ctx)
		if err != nil {
			return map[string]any{"pings": pings}, err
		}
		out := map[string]any{"pings": pings, "p2p": p2p, "latency_ms": latency.Milliseconds()}
		if pong != nil {
			out["derp_region_id"] = pong.DERPRegionID
			out["endpoint"] = pong.Endpoint
		}
		switch {
		case blocked && p2p:
			return out, errors.New("a ping went direct although direct connections are blocked")
		case blocked && pings == relayPings, !blocked && p2p:
			return out, nil
		}
		select {
		case <-ctx.Done():
			return out, fmt.Errorf("no direct path after %d pings: %w", pings, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// pgcoordDialer is the Controller's way to the control plane: an in-memory coordination on PGCoordinator, as
// coderd's InmemTailnetDialer gives its own tailnet, with a client's auth. No DERP map stream: the map is the one
// from the connection info, given to the Conn at its start.
type pgcoordDialer struct {
	logger slog.Logger
	coord  tailnet.Coordinator
	self   uuid.UUID
	auth   tailnet.CoordinateeAuth
}

func (d *pgcoordDialer) Dial(context.Context, tailnet.ResumeTokenController) (tailnet.ControlProtocolClients, error) {
	client := printingCoordClient{tailnet.NewInMemoryCoordinatorClient(d.logger, d.self, d.auth, d.coord)}
	return tailnet.ControlProtocolClients{Closer: client, Coordinator: client}, nil
}

// printingCoordClient prints what the coordinator tells the Conn, as pgcoord's lines, on its way to the Conn.
type printingCoordClient struct {
	tailnet.CoordinatorClient
}

func (c printingCoordClient) Recv() (*tailnetproto.CoordinateResponse, error) {
	resp, err := c.CoordinatorClient.Recv()
	if err != nil {
		emit(map[string]any{"end": "closed"})
		return nil, err
	}
	emitResponse(resp)
	return resp, nil
}
