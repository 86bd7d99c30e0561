package checks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"storj.io/drpc"

	"agentwire.test/interop/internal/rawrpc"
)

// checkServerStream asks for 5 items and requires exactly those, then EOF
// (the server's CloseSend).
func checkServerStream(ctx context.Context, env *Env) (string, error) {
	const n = 5
	s, err := env.Conn.NewStream(ctx, rawrpc.ServerStream, rawrpc.Encoding)
	if err != nil {
		return "", err
	}
	defer func() { _ = s.Close() }()
	if err := s.MsgSend(rawrpc.New(strconv.Itoa(n)), rawrpc.Encoding); err != nil {
		return "", fmt.Errorf("send: %w", err)
	}
	if err := s.CloseSend(); err != nil {
		return "", fmt.Errorf("close send: %w", err)
	}
	got, err := recvUntilEOF(s)
	if err != nil {
		return "", fmt.Errorf("after %q: %w", got, err)
	}
	var want []string
	for i := 0; i < n; i++ {
		want = append(want, "item-"+strconv.Itoa(i))
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		return "", fmt.Errorf("got %q, want %q", got, want)
	}
	return fmt.Sprintf("received %q then EOF", got), nil
}

// checkClientStream sends 3 messages, closes its send side, and expects one
// joined reply followed by EOF.
func checkClientStream(ctx context.Context, env *Env) (string, error) {
	s, err := env.Conn.NewStream(ctx, rawrpc.ClientStream, rawrpc.Encoding)
	if err != nil {
		return "", err
	}
	defer func() { _ = s.Close() }()
	for _, m := range []string{"a", "b", "c"} {
		if err := s.MsgSend(rawrpc.New(m), rawrpc.Encoding); err != nil {
			return "", fmt.Errorf("send %q: %w", m, err)
		}
	}
	if err := s.CloseSend(); err != nil {
		return "", fmt.Errorf("close send: %w", err)
	}
	got, err := recvUntilEOF(s)
	if err != nil {
		return "", fmt.Errorf("after %q: %w", got, err)
	}
	if len(got) != 1 || got[0] != "a,b,c" {
		return "", fmt.Errorf("got %q, want [\"a,b,c\"]", got)
	}
	return `sent a,b,c; received "a,b,c" then EOF`, nil
}

// checkBidi interleaves: each send waits for its echo before the next, which
// proves messages are delivered (flushed) one by one, not only at the end.
func checkBidi(ctx context.Context, env *Env) (string, error) {
	s, err := env.Conn.NewStream(ctx, rawrpc.Bidi, rawrpc.Encoding)
	if err != nil {
		return "", err
	}
	defer func() { _ = s.Close() }()
	for i := 0; i < 3; i++ {
		m := "m" + strconv.Itoa(i)
		if err := s.MsgSend(rawrpc.New(m), rawrpc.Encoding); err != nil {
			return "", fmt.Errorf("round %d send: %w", i, err)
		}
		var got rawrpc.Msg
		if err := s.MsgRecv(&got, rawrpc.Encoding); err != nil {
			return "", fmt.Errorf("round %d recv: %w", i, err)
		}
		if want := "echo:" + m; string(got) != want {
			return "", fmt.Errorf("round %d: got %q, want %q", i, got, want)
		}
	}
	if err := s.CloseSend(); err != nil {
		return "", fmt.Errorf("close send: %w", err)
	}
	extra, err := recvUntilEOF(s)
	if err != nil {
		return "", fmt.Errorf("after close send: %w", err)
	}
	if len(extra) > 0 {
		return "", fmt.Errorf("unexpected messages after close send: %q", extra)
	}
	return "3 interleaved round trips, then EOF", nil
}

// recvUntilEOF reads messages until the peer's CloseSend (io.EOF).
func recvUntilEOF(s drpc.Stream) ([]string, error) {
	var got []string
	for {
		var m rawrpc.Msg
		err := s.MsgRecv(&m, rawrpc.Encoding)
		if errors.Is(err, io.EOF) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		got = append(got, string(m))
	}
}
