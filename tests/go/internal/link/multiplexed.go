package link

import (
	"context"

	"github.com/hashicorp/yamux"
	"storj.io/drpc"
	"storj.io/drpc/drpcconn"
)

// MuxConn is a drpc.Conn that behaves like Coder's drpcsdk.MultiplexedConn:
// every call, unary or streaming, opens a fresh yamux stream and runs its own
// dRPC connection (so the dRPC stream ID on the wire is always 1), which is
// what lets one agent session issue calls concurrently.
type MuxConn struct {
	Session *yamux.Session
}

var _ drpc.Conn = (*MuxConn)(nil)

// Close tears down the whole yamux session.
func (c *MuxConn) Close() error { return c.Session.Close() }

// Closed is closed when the yamux session ends.
func (c *MuxConn) Closed() <-chan struct{} { return c.Session.CloseChan() }

// Invoke runs one unary call on its own yamux stream and closes that stream
// (Close packet, then yamux FIN) once the reply is in.
func (c *MuxConn) Invoke(ctx context.Context, rpc string, enc drpc.Encoding, in, out drpc.Message) error {
	stream, err := c.Session.Open()
	if err != nil {
		return err
	}
	conn := drpcconn.NewWithOptions(stream, connOptions())
	defer func() { _ = conn.Close() }()
	return conn.Invoke(ctx, rpc, enc, in, out)
}

// NewStream starts a streaming call on its own yamux stream; the stream is
// closed only once the dRPC stream's context is done, as in Coder.
func (c *MuxConn) NewStream(ctx context.Context, rpc string, enc drpc.Encoding) (drpc.Stream, error) {
	stream, err := c.Session.Open()
	if err != nil {
		return nil, err
	}
	conn := drpcconn.NewWithOptions(stream, connOptions())
	s, err := conn.NewStream(ctx, rpc, enc)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	go func() {
		<-s.Context().Done()
		_ = conn.Close()
	}()
	return s, nil
}
