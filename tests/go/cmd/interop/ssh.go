package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"cdr.dev/slog/v3"
	"cdr.dev/slog/v3/sloggers/sloghuman"
	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/codersdk/workspacesdk"
)

// sshCmd reaches a workspace agent the way `coder ssh` and `coder
// port-forward` do: Coder's own client (codersdk/workspacesdk v2.30.0,
// DialAgent) asks the server for the connection info, coordinates over the
// client coordinate endpoint and reaches the agent over tailnet. Then it runs
// `echo <nonce>` over the agent's SSH server and, with --port, forwards a local
// listener to that port in the workspace as `coder port-forward` does and
// makes an HTTP GET through it. One JSON line per step, then a summary line.
//
//	interop ssh --url http://HOST:PORT --token USER_TOKEN --agent-id ID [--port N] [--disable-direct] [--command CMD]
func sshCmd(args []string) int {
	fs := flag.NewFlagSet("ssh", flag.ContinueOnError)
	rawURL := fs.String("url", "", "server http:// URL (the deployment's access URL)")
	token := fs.String("token", "", "user API token (agentwire user token --username U)")
	agentArg := fs.String("agent-id", "", "the workspace agent's id")
	port := fs.Int("port", 0, "a port in the workspace to forward to and GET / through (0: none)")
	disableDirect := fs.Bool("disable-direct", false, "block direct connections: every packet goes through the DERP relay (DialAgentOptions.BlockEndpoints)")
	command := fs.String("command", "", "a command to run over SSH instead of the echo round trip; its output is printed")
	verbose := fs.Bool("verbose", false, "Coder's client logs to stderr")
	timeout := fs.Duration("timeout", 60*time.Second, "how long reaching the agent and each step may take")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	agentID, err := uuid.Parse(*agentArg)
	if err != nil || *rawURL == "" || *token == "" {
		fmt.Fprintf(os.Stderr, "ssh: --url, --token and a valid --agent-id are required (%v)\n", err)
		return exitUsage
	}
	if *port < 0 || *port > 65535 {
		fmt.Fprintf(os.Stderr, "ssh: --port %d is not a port\n", *port)
		return exitUsage
	}
	serverURL, err := url.Parse(*rawURL)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ssh: --url: %v\n", err)
		return exitUsage
	}
	logger := slog.Make()
	if *verbose {
		logger = slog.Make(sloghuman.Sink(os.Stderr)).Leveled(slog.LevelDebug)
	}
	client := codersdk.New(serverURL, codersdk.WithSessionToken(*token), codersdk.WithLogger(logger))

	failed := 0
	step := func(name string, run func(ctx context.Context) (map[string]any, error)) bool {
		ok := runStep(context.Background(), *timeout, name, run)
		if !ok {
			failed++
		}
		return ok
	}

	var conn workspacesdk.AgentConn
	defer func() {
		if conn != nil {
			_ = conn.Close()
		}
	}()
	if !step("dial", func(ctx context.Context) (map[string]any, error) {
		info, err := workspacesdk.New(client).AgentConnectionInfo(ctx, agentID)
		if err != nil {
			return nil, fmt.Errorf("connection info: %w", err)
		}
		regions := []int{}
		if info.DERPMap != nil {
			for id := range info.DERPMap.Regions {
				regions = append(regions, id)
			}
		}
		conn, err = workspacesdk.New(client).DialAgent(ctx, agentID, &workspacesdk.DialAgentOptions{
			Logger:         logger.Named("client"),
			BlockEndpoints: *disableDirect,
		})
		if err != nil {
			return map[string]any{"derp_regions": regions}, err
		}
		return map[string]any{
			"derp_regions":    regions,
			"block_endpoints": conn.TailnetConn().GetBlockEndpoints(),
			"hostname_suffix": info.HostnameSuffix,
		}, nil
	}) {
		return sshSummary(failed)
	}

	step("ping", func(ctx context.Context) (map[string]any, error) {
		latency, p2p, pong, err := conn.Ping(ctx)
		if err != nil {
			return nil, err
		}
		out := map[string]any{"p2p": p2p, "latency_ms": latency.Milliseconds()}
		if pong != nil {
			out["derp_region_id"] = pong.DERPRegionID
			out["endpoint"] = pong.Endpoint
		}
		if *disableDirect && p2p {
			return out, errors.New("the ping went direct although direct connections are blocked")
		}
		return out, nil
	})

	step("ssh", func(ctx context.Context) (map[string]any, error) {
		return sshRun(ctx, conn, *command)
	})

	if *port != 0 {
		step("port-forward", func(ctx context.Context) (map[string]any, error) {
			return portForwardGet(ctx, conn, *port)
		})
	}
	return sshSummary(failed)
}

// sshRun runs command over the agent's SSH server (workspacesdk's SSHClient, on Coder's AgentSSHPort), or, when
// command is empty, `echo NONCE`, which must print the nonce back: the round trip of the ssh and pgcoord verbs.
func sshRun(ctx context.Context, conn workspacesdk.AgentConn, command string) (map[string]any, error) {
	sshClient, err := conn.SSHClient(ctx)
	if err != nil {
		return nil, err
	}
	defer sshClient.Close()
	session, err := sshClient.NewSession()
	if err != nil {
		return nil, fmt.Errorf("new session: %w", err)
	}
	defer session.Close()
	cmd, want := command, ""
	if cmd == "" {
		nonce := uuid.NewString()
		cmd, want = "echo "+nonce, nonce
	}
	var stdout, stderr bytes.Buffer
	session.Stdout, session.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	go func() { done <- session.Run(cmd) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("%q: %w", cmd, ctx.Err())
	}
	out := map[string]any{"command": cmd, "stdout": stdout.String()}
	if stderr.Len() > 0 {
		out["stderr"] = stderr.String()
	}
	if err != nil {
		return out, fmt.Errorf("%q: %w", cmd, err)
	}
	if want != "" && strings.TrimSpace(stdout.String()) != want {
		return out, fmt.Errorf("stdout %q, want %q", stdout.String(), want+"\n")
	}
	return out, nil
}

// portForwardGet does what `coder port-forward --tcp L:R` does for one
// connection (cli/portforward.go: a local listener, each accepted connection
// copied both ways to conn.DialContext("tcp", "127.0.0.1:R")) and makes an
// HTTP GET of / through it.
func portForwardGet(ctx context.Context, conn workspacesdk.AgentConn, port int) (map[string]any, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	defer func() {
		_ = listener.Close()
		wg.Wait()
	}()
	dialAddress := fmt.Sprintf("127.0.0.1:%d", port)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			local, err := listener.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer local.Close()
				remote, err := conn.DialContext(ctx, "tcp", dialAddress)
				if err != nil {
					return
				}
				defer remote.Close()
				copyBoth(local, remote)
			}()
		}
	}()
	httpClient := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+listener.Addr().String()+"/", nil)
	if err != nil {
		return nil, err
	}
	res, err := httpClient.Do(req)
	if err != nil {
		return map[string]any{"dial": dialAddress}, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	out := map[string]any{"dial": dialAddress, "status": res.StatusCode, "bytes": len(body)}
	if err != nil {
		return out, fmt.Errorf("read body: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return out, fmt.Errorf("GET / answered %s", res.Status)
	}
	return out, nil
}

// copyBoth copies a to b and b to a until either side ends, then closes both.
func copyBoth(a, b net.Conn) {
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(a, b); done <- struct{}{} }()
	go func() { _, _ = io.Copy(b, a); done <- struct{}{} }()
	<-done
	_ = a.Close()
	_ = b.Close()
	<-done
}

// sshSummary prints the last line, {"passed": bool, "failed": N}, and gives the exit code.
func sshSummary(failed int) int {
	emit(map[string]any{"passed": failed == 0, "failed": failed})
	if failed > 0 {
		return exitFail
	}
	return exitOK
}

// runStep runs one step of a data-plane check under its own timeout and prints its line: the step's name, whether
// it succeeded, how long it took, what it reported and its error. It says whether the step succeeded.
func runStep(parent context.Context, timeout time.Duration, name string, run func(ctx context.Context) (map[string]any, error)) bool {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	started := time.Now()
	out, err := run(ctx)
	line := map[string]any{"step": name, "ok": err == nil, "ms": time.Since(started).Milliseconds()}
	for k, v := range out {
		line[k] = v
	}
	if err != nil {
		line["error"] = err.Error()
	}
	emit(line)
	return err == nil
}
