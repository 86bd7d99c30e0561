package link

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"
)

// DialConfig says how a client reaches the server.
type DialConfig struct {
	Transport string // "tcp" or "ws"
	Addr      string // host:port, for tcp
	URL       string // ws:// or http(s):// URL, for ws
	Token     string // agent token; empty sends none
	// TokenInCookie sends the token as the coder_session_token cookie (what
	// Coder's own agent does on this endpoint) instead of the header.
	TokenInCookie bool
	// StreamOpenTimeout overrides yamux's 75 s default when non-zero. yamux
	// closes the whole session if a stream it opened is not ACKed in time.
	StreamOpenTimeout time.Duration
}

// Dial connects and starts a yamux client session, like the agent does.
func Dial(ctx context.Context, cfg DialConfig) (*yamux.Session, error) {
	var conn net.Conn
	switch cfg.Transport {
	case "tcp":
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", cfg.Addr)
		if err != nil {
			return nil, err
		}
		conn = c
	case "ws":
		c, err := dialWebSocket(ctx, cfg)
		if err != nil {
			return nil, err
		}
		conn = c
	default:
		return nil, fmt.Errorf("unknown transport %q (want tcp or ws)", cfg.Transport)
	}

	ycfg := yamux.DefaultConfig()
	ycfg.LogOutput = os.Stderr // stdout is reserved for the JSON report
	if cfg.StreamOpenTimeout > 0 {
		ycfg.StreamOpenTimeout = cfg.StreamOpenTimeout
	}
	session, err := yamux.Client(conn, ycfg)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return session, nil
}

func dialWebSocket(ctx context.Context, cfg DialConfig) (net.Conn, error) {
	header := http.Header{}
	if cfg.Token != "" {
		if cfg.TokenInCookie {
			header.Set("Cookie", (&http.Cookie{Name: SessionTokenCookie, Value: cfg.Token}).String())
		} else {
			header.Set(SessionTokenHeader, cfg.Token)
		}
	}
	c, resp, err := websocket.Dial(ctx, cfg.URL, &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("websocket dial %s: HTTP %d: %w", cfg.URL, resp.StatusCode, err)
		}
		return nil, fmt.Errorf("websocket dial %s: %w", cfg.URL, err)
	}
	// The session must outlive the dial context, so NetConn gets its own.
	// NetConn also lifts the read limit, as in the agent.
	return websocket.NetConn(context.Background(), c, websocket.MessageBinary), nil
}
