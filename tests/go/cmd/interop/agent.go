package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	agentproto "github.com/coder/coder/v2/agent/proto"

	"agentwire.test/interop/internal/coderapi"
	"agentwire.test/interop/internal/link"
)

// agent dials like a Coder workspace agent and calls every Agent RPC once,
// printing what came back without judging it.
func agent(args []string) int {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	rawURL := fs.String("url", "", "coderd URL: ws(s)://HOST/api/v2/workspaceagents/me/rpc[?version=…] or just ws(s)://HOST")
	token := fs.String("token", "", "agent token, sent as the Coder-Session-Token header")
	cookie := fs.Bool("token-cookie", false, "send the token as the coder_session_token cookie instead, as Coder's agent does")
	version := fs.String("version", agentproto.CurrentVersion.String(), "agent API version for the version query parameter (overrides one in --url only when given)")
	only := fs.String("rpc", "", "call only this Agent RPC (e.g. GetManifest)")
	timeout := fs.Duration("timeout", 20*time.Second, "per-RPC timeout")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	versionSet := false
	fs.Visit(func(f *flag.Flag) { versionSet = versionSet || f.Name == "version" })

	dialURL, err := agentURL(*rawURL, *version, versionSet)
	if err != nil {
		fmt.Fprintf(os.Stderr, "agent: %v\n", err)
		return exitUsage
	}
	calls := coderapi.Calls()
	if *only != "" {
		calls = filterCalls(calls, *only)
		if len(calls) == 0 {
			fmt.Fprintf(os.Stderr, "agent: unknown --rpc %q\n", *only)
			return exitUsage
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	session, err := link.Dial(ctx, link.DialConfig{Transport: "ws", URL: dialURL, Token: *token, TokenInCookie: *cookie})
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "agent: connect: %v\n", err)
		fmt.Println("agent: connection failed")
		return exitFail
	}
	defer func() { _ = session.Close() }()
	client := agentproto.NewDRPCAgentClient(&link.MuxConn{Session: session})

	var state coderapi.State
	ok := 0
	for _, c := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		resp, err := c.Do(ctx, client, &state)
		cancel()
		res := coderapi.NewResult(c.Method, resp, err)
		if res.OK {
			ok++
		}
		line, _ := json.Marshal(res)
		fmt.Println(string(line))
	}

	// Error answers are the server's business; a dead session is ours.
	if session.IsClosed() {
		fmt.Printf("agent: %d calls, %d ok, %d errors, session closed\n", len(calls), ok, len(calls)-ok)
		return exitFail
	}
	fmt.Printf("agent: %d calls, %d ok, %d errors, session open\n", len(calls), ok, len(calls)-ok)
	return exitOK
}

// agentURL completes a coderd URL the way the agent builds it: the RPC path
// when only a host was given, and the version query parameter.
func agentURL(raw, version string, override bool) (string, error) {
	if raw == "" {
		return "", fmt.Errorf("--url is required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("bad --url: %w", err)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = link.RPCPath
	}
	q := u.Query()
	if override || q.Get("version") == "" {
		q.Set("version", version)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// filterCalls keeps the calls of one RPC, named with or without the service
// prefix (UpdateLifecycle is made twice, STARTING then READY).
func filterCalls(calls []coderapi.Call, name string) []coderapi.Call {
	name = strings.TrimPrefix(name, coderapi.AgentService)
	var out []coderapi.Call
	for _, c := range calls {
		if c.Method == name {
			out = append(out, c)
		}
	}
	return out
}
