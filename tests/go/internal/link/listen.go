package link

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"
	"storj.io/drpc"
	"storj.io/drpc/drpcserver"
)

// Server accepts agent connections and serves dRPC on each yamux stream the
// peer opens, the way coderd's workspaceAgentRPC handler does.
type Server struct {
	Handler drpc.Handler
	// SessionHandler, when set, replaces Handler: it builds the handler of one
	// session from the token the peer presented (empty over TCP, which
	// carries none), as coderd builds one agentapi.API per connection for
	// the agent its token names.
	SessionHandler func(token string) (drpc.Handler, error)
	// QuietConnections drops the log line per accepted WebSocket, which a
	// benchmark opening thousands of them does not want on stderr.
	QuietConnections bool
	Log              *log.Logger
}

// ServeTCP runs one yamux server session per accepted TCP connection.
func (s *Server) ServeTCP(ctx context.Context, l net.Listener) error {
	for {
		conn, err := l.Accept()
		if err != nil {
			return err
		}
		go s.serveSession(ctx, conn, "")
	}
}

// WebSocketHandler upgrades requests on RPCPath and runs a yamux server
// session over the binary message stream. Any token is accepted.
func (s *Server) WebSocketHandler(ctx context.Context) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(RPCPath, func(w http.ResponseWriter, r *http.Request) {
		if !s.QuietConnections {
			s.Log.Printf("ws %s version=%q token=%s", r.RemoteAddr, r.URL.Query().Get("version"), tokenSource(r))
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			s.Log.Printf("websocket accept: %v", err)
			return
		}
		// NetConn's context bounds the connection's life; the request's
		// context would do, but ctx also ends it when the server stops.
		s.serveSession(ctx, websocket.NetConn(ctx, c, websocket.MessageBinary), token(r))
	})
	return mux
}

// tokenSource says where the request carried a session token, for the log.
func tokenSource(r *http.Request) string {
	if r.Header.Get(SessionTokenHeader) != "" {
		return "header"
	}
	if c, err := r.Cookie(SessionTokenCookie); err == nil && c.Value != "" {
		return "cookie"
	}
	return "none"
}

// token is the session token the request carried, from the header or else
// the cookie (coderd's order), or "".
func token(r *http.Request) string {
	if t := r.Header.Get(SessionTokenHeader); t != "" {
		return t
	}
	if c, err := r.Cookie(SessionTokenCookie); err == nil {
		return c.Value
	}
	return ""
}

// serveSession blocks until the yamux session ends. The session itself is
// the net.Listener drpcserver accepts from: each yamux stream gets its own
// dRPC manager, exactly as in coderd.
func (s *Server) serveSession(ctx context.Context, conn net.Conn, token string) {
	defer func() { _ = conn.Close() }()
	ycfg := yamux.DefaultConfig()
	ycfg.LogOutput = s.Log.Writer() // yamux errors (keepalive, protocol) explain failed tests
	session, err := yamux.Server(conn, ycfg)
	if err != nil {
		s.Log.Printf("yamux server: %v", err)
		return
	}
	defer func() { _ = session.Close() }()

	opts := ServerOptions()
	opts.Log = func(err error) {
		if !errors.Is(err, io.EOF) {
			s.Log.Printf("drpc: %v", err)
		}
	}
	handler := s.Handler
	if s.SessionHandler != nil {
		if handler, err = s.SessionHandler(token); err != nil {
			s.Log.Printf("session handler: %v", err)
			return
		}
	}
	err = drpcserver.NewWithOptions(handler, opts).Serve(ctx, session)
	if err != nil && !errors.Is(err, yamux.ErrSessionShutdown) && !errors.Is(err, io.EOF) {
		s.Log.Printf("session from %s ended: %v", conn.RemoteAddr(), err)
	}
}

// Announce formats the single readiness line printed by `interop serve`.
func Announce(transport string, addr net.Addr) string {
	if transport == "ws" {
		return fmt.Sprintf("LISTENING ws ws://%s%s", addr, RPCPath)
	}
	return fmt.Sprintf("LISTENING tcp %s", addr)
}
