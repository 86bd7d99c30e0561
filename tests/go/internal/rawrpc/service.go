package rawrpc

import (
	"context"

	"storj.io/drpc"
)

// ServicePath is the dRPC service prefix of every method of this service.
const ServicePath = "/agentwire.interop.v1.Interop/"

// Method paths, as they appear in the Invoke packet.
const (
	Unary        = ServicePath + "Unary"
	Empty        = ServicePath + "Empty"
	ServerStream = ServicePath + "ServerStream"
	ClientStream = ServicePath + "ClientStream"
	Bidi         = ServicePath + "Bidi"
	Slow         = ServicePath + "Slow"
	Fail         = ServicePath + "Fail"
	Big          = ServicePath + "Big"
)

// method describes one RPC the way protoc-gen-go-drpc would: drpcmux inspects
// the shape of fn (via reflection) to decide between unary, server-streaming
// and stream-input dispatch, so fn must be a method expression on *Server.
type method struct {
	path     string
	receiver drpc.Receiver
	fn       interface{}
}

// description is a hand-written drpc.Description, equivalent to what the
// drpc code generator emits for a .proto service, but with Encoding.
type description struct{}

// Description is registered with drpcmux together with a *Server.
var Description drpc.Description = description{}

var methods = []method{
	{Unary, unaryReceiver((*Server).Unary), (*Server).Unary},
	{Empty, unaryReceiver((*Server).Empty), (*Server).Empty},
	{Slow, unaryReceiver((*Server).Slow), (*Server).Slow},
	{Fail, unaryReceiver((*Server).Fail), (*Server).Fail},
	{Big, unaryReceiver((*Server).Big), (*Server).Big},
	{ServerStream, serverStreamReceiver((*Server).ServerStream), (*Server).ServerStream},
	{ClientStream, streamReceiver((*Server).ClientStream), (*Server).ClientStream},
	{Bidi, streamReceiver((*Server).Bidi), (*Server).Bidi},
}

func (description) NumMethods() int { return len(methods) }

func (description) Method(n int) (string, drpc.Encoding, drpc.Receiver, interface{}, bool) {
	if n < 0 || n >= len(methods) {
		return "", nil, nil, nil, false
	}
	m := methods[n]
	return m.path, Encoding, m.receiver, m.fn, true
}

// The receivers adapt drpcmux's untyped call (srv, ctx, in1, in2) to the typed
// methods; in1 is the decoded request or the stream, in2 the stream when the
// method has both.

func unaryReceiver(fn func(*Server, context.Context, *Msg) (*Msg, error)) drpc.Receiver {
	return func(srv interface{}, ctx context.Context, in1, _ interface{}) (drpc.Message, error) {
		return fn(srv.(*Server), ctx, in1.(*Msg))
	}
}

func serverStreamReceiver(fn func(*Server, *Msg, drpc.Stream) error) drpc.Receiver {
	return func(srv interface{}, _ context.Context, in1, in2 interface{}) (drpc.Message, error) {
		return nil, fn(srv.(*Server), in1.(*Msg), in2.(drpc.Stream))
	}
}

func streamReceiver(fn func(*Server, drpc.Stream) error) drpc.Receiver {
	return func(srv interface{}, _ context.Context, in1, _ interface{}) (drpc.Message, error) {
		return nil, fn(srv.(*Server), in1.(drpc.Stream))
	}
}
