package rawrpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"storj.io/drpc"
	"storj.io/drpc/drpcerr"
)

// FailCode and FailText are what the Fail method returns.
const (
	FailCode = 42
	FailText = "interop failure"
)

// BigByte is the content of byte i of a Big reply. 251 is prime, so the
// pattern does not line up with any power-of-two frame or window boundary and
// a misplaced or duplicated chunk shows up as a mismatch.
func BigByte(i int) byte { return byte(i % 251) }

// Server implements the interop service. It is stateless.
type Server struct{}

// Unary replies "echo:" + request.
func (*Server) Unary(_ context.Context, in *Msg) (*Msg, error) {
	return New("echo:" + string(*in)), nil
}

// Empty replies with a zero-length message (which must still be sent as a
// Message packet, otherwise the client's Invoke fails with EOF).
func (*Server) Empty(context.Context, *Msg) (*Msg, error) {
	return &Msg{}, nil
}

// Slow sleeps for the requested number of milliseconds before replying; it
// keeps a yamux stream silent for that long.
func (*Server) Slow(ctx context.Context, in *Msg) (*Msg, error) {
	ms, err := strconv.Atoi(string(*in))
	if err != nil || ms < 0 {
		return nil, fmt.Errorf("Slow: bad milliseconds %q", string(*in))
	}
	select {
	case <-time.After(time.Duration(ms) * time.Millisecond):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return New("slept:" + strconv.Itoa(ms)), nil
}

// Fail always fails with a coded error, to check error packet encoding.
func (*Server) Fail(context.Context, *Msg) (*Msg, error) {
	return nil, drpcerr.WithCode(errors.New(FailText), FailCode)
}

// Big replies with the requested number of bytes of a known pattern; sizes
// above 64 KiB force the sender to split the Message into several frames.
func (*Server) Big(_ context.Context, in *Msg) (*Msg, error) {
	n, err := strconv.Atoi(string(*in))
	if err != nil || n < 0 {
		return nil, fmt.Errorf("Big: bad size %q", string(*in))
	}
	out := make(Msg, n)
	for i := range out {
		out[i] = BigByte(i)
	}
	return &out, nil
}

// ServerStream sends "item-0" … "item-(N-1)"; drpcmux then sends CloseSend.
func (*Server) ServerStream(in *Msg, stream drpc.Stream) error {
	n, err := strconv.Atoi(string(*in))
	if err != nil || n < 0 {
		return fmt.Errorf("ServerStream: bad count %q", string(*in))
	}
	for i := 0; i < n; i++ {
		if err := stream.MsgSend(New("item-"+strconv.Itoa(i)), Encoding); err != nil {
			return err
		}
	}
	return nil
}

// ClientStream collects messages until the client's CloseSend (io.EOF) and
// replies once with them joined by ",".
func (*Server) ClientStream(stream drpc.Stream) error {
	var got []string
	for {
		var m Msg
		err := stream.MsgRecv(&m, Encoding)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		got = append(got, string(m))
	}
	return stream.MsgSend(New(strings.Join(got, ",")), Encoding)
}

// Bidi echoes each message as it arrives and ends when the client stops sending.
func (*Server) Bidi(stream drpc.Stream) error {
	for {
		var m Msg
		err := stream.MsgRecv(&m, Encoding)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.MsgSend(New("echo:"+string(m)), Encoding); err != nil {
			return err
		}
	}
}
