// Package rawrpc is the transport-level interop service: a dRPC service whose
// messages are opaque byte strings, so tests can exercise framing, stream
// life cycles and errors without depending on any protobuf schema.
package rawrpc

import (
	"fmt"

	"storj.io/drpc"
)

// Msg is one dRPC message body, passed through untouched. It is a named slice
// type because drpcmux allocates request values with reflect.New(T.Elem()),
// which needs a pointer-to-concrete type (*Msg), not a bare []byte.
type Msg []byte

// Encoding is a drpc.Encoding that marshals *Msg as its raw bytes.
var Encoding drpc.Encoding = encoding{}

type encoding struct{}

func (encoding) Marshal(msg drpc.Message) ([]byte, error) {
	m, ok := msg.(*Msg)
	if !ok {
		return nil, fmt.Errorf("rawrpc: cannot marshal %T", msg)
	}
	return *m, nil
}

func (encoding) Unmarshal(buf []byte, msg drpc.Message) error {
	m, ok := msg.(*Msg)
	if !ok {
		return fmt.Errorf("rawrpc: cannot unmarshal into %T", msg)
	}
	// drpc reuses buf for the next packet once Unmarshal returns, so copy.
	*m = append(Msg{}, buf...)
	return nil
}

// New returns a *Msg holding s, for use as a request or reply.
func New(s string) *Msg {
	m := Msg(s)
	return &m
}
