package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"agentwire.test/interop/internal/checks"
	"agentwire.test/interop/internal/link"
)

// call connects like a Coder agent and runs the interop checks against the
// server, printing one JSON line per check and a summary line.
func call(args []string) int {
	fs := flag.NewFlagSet("call", flag.ContinueOnError)
	var cfg link.DialConfig
	fs.StringVar(&cfg.Transport, "transport", "tcp", "tcp or ws")
	fs.StringVar(&cfg.Addr, "addr", "", "server HOST:PORT (tcp)")
	fs.StringVar(&cfg.URL, "url", "", "server ws:// URL (ws)")
	fs.StringVar(&cfg.Token, "token", "", "agent token, sent as the Coder-Session-Token header (ws)")
	fs.BoolVar(&cfg.TokenInCookie, "token-cookie", false, "send the token as the coder_session_token cookie instead, as Coder's agent does")
	fs.DurationVar(&cfg.StreamOpenTimeout, "stream-open-timeout", 0, "yamux StreamOpenTimeout (default: yamux's 75s)")
	slowMS := fs.Int("slow-ms", 0, "run the slow check with this delay in ms (0: slow check not run by default)")
	only := fs.String("only", "", "comma-separated checks to run instead of the default set")
	timeout := fs.Duration("timeout", 20*time.Second, "per-check timeout")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	switch {
	case cfg.Transport == "tcp" && cfg.Addr == "":
		fmt.Fprintln(os.Stderr, "call: --transport tcp needs --addr")
		return exitUsage
	case cfg.Transport == "ws" && cfg.URL == "":
		fmt.Fprintln(os.Stderr, "call: --transport ws needs --url")
		return exitUsage
	case cfg.Transport != "tcp" && cfg.Transport != "ws":
		fmt.Fprintf(os.Stderr, "call: unknown --transport %q\n", cfg.Transport)
		return exitUsage
	}

	env := &checks.Env{SlowMS: *slowMS}
	selected, err := checks.Select(checks.All(env), *only)
	if err != nil {
		fmt.Fprintf(os.Stderr, "call: %v\n", err)
		return exitUsage
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	session, err := link.Dial(ctx, cfg)
	cancel()
	if err != nil {
		// Reported like a check so the caller parses one format only.
		checks.Outcome{Check: "connect", Pass: false, Detail: err.Error()}.Print(os.Stdout)
		fmt.Println("interop: 0 passed, 1 failed")
		return exitFail
	}
	defer func() { _ = session.Close() }()
	env.Session = session
	env.Conn = &link.MuxConn{Session: session}

	if !checks.Run(env, selected, *timeout, os.Stdout) {
		return exitFail
	}
	return exitOK
}
