package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"tailscale.com/derp"
	"tailscale.com/derp/derphttp"
	"tailscale.com/types/key"

	"agentwire.test/interop/internal/checks"
)

// derpReferee runs tailscale's own DERP client (Coder's fork, derphttp) against
// a relay at --url: two clients log in, exchange packets both ways (the largest
// allowed included), ping, and one sees the other leave. It does so over
// `Upgrade: DERP`, over the WebSocket fallback, and with one client of each,
// printing one JSON line per check and a summary line, as `call` does.
func derpReferee(args []string) int {
	fs := flag.NewFlagSet("derp", flag.ContinueOnError)
	rawURL := fs.String("url", "", "the relay's URL, e.g. http://127.0.0.1:3000/derp")
	timeout := fs.Duration("timeout", 20*time.Second, "time for each check")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *rawURL == "" {
		fmt.Fprintln(os.Stderr, "derp: --url is required")
		return exitUsage
	}
	passed, failed := 0, 0
	report := func(name string, err error) {
		o := checks.Outcome{Check: name, Pass: err == nil}
		if err != nil {
			o.Detail = err.Error()
			failed++
		} else {
			passed++
		}
		o.Print(os.Stdout)
	}
	for _, mode := range []struct {
		name       string
		websockets [2]bool
	}{
		{"upgrade", [2]bool{false, false}},
		{"websocket", [2]bool{true, true}},
		{"mixed", [2]bool{false, true}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		err := derpExchange(ctx, *rawURL, mode.websockets, func(check string, err error) {
			report(mode.name+"/"+check, err)
		})
		cancel()
		if err != nil {
			report(mode.name+"/connect", err)
		}
	}
	fmt.Printf("interop: %d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return exitFail
	}
	return exitOK
}

// derpPeer is one derphttp client and the messages its reader received.
type derpPeer struct {
	client *derphttp.Client
	key    key.NodePublic
	msgs   chan derp.ReceivedMessage
}

func newDerpPeer(ctx context.Context, rawURL string, websocket bool) (*derpPeer, error) {
	priv := key.NewNode()
	logf := func(format string, args ...any) {
		if os.Getenv("INTEROP_DERP_VERBOSE") != "" {
			fmt.Fprintf(os.Stderr, "derp: "+format+"\n", args...)
		}
	}
	c, err := derphttp.NewClient(priv, rawURL, logf)
	if err != nil {
		return nil, err
	}
	c.ForceWebsockets = websocket
	if err := c.Connect(ctx); err != nil {
		return nil, fmt.Errorf("connect (websocket=%v): %w", websocket, err)
	}
	p := &derpPeer{client: c, key: priv.Public(), msgs: make(chan derp.ReceivedMessage, 16)}
	go func() {
		for {
			// Recv answers pongs to Ping itself; everything else is handed over.
			m, err := c.Recv()
			if err != nil {
				close(p.msgs)
				return
			}
			p.msgs <- m
		}
	}()
	// The relay sends its info once the client is registered; until then packets
	// sent to this key would be dropped as unknown, as tailscale's server does.
	if _, err := p.next(ctx, func(m derp.ReceivedMessage) bool { _, ok := m.(derp.ServerInfoMessage); return ok }); err != nil {
		c.Close()
		return nil, fmt.Errorf("server info: %w", err)
	}
	return p, nil
}

// next returns the next message that want accepts, skipping keep-alives and
// server info.
func (p *derpPeer) next(ctx context.Context, want func(derp.ReceivedMessage) bool) (derp.ReceivedMessage, error) {
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case m, ok := <-p.msgs:
			if !ok {
				return nil, fmt.Errorf("connection ended")
			}
			if want(m) {
				return m, nil
			}
		}
	}
}

func (p *derpPeer) packetFrom(ctx context.Context, src key.NodePublic, data []byte) error {
	m, err := p.next(ctx, func(m derp.ReceivedMessage) bool { _, ok := m.(derp.ReceivedPacket); return ok })
	if err != nil {
		return err
	}
	pkt := m.(derp.ReceivedPacket)
	if pkt.Source != src {
		return fmt.Errorf("source %s, want %s", pkt.Source.ShortString(), src.ShortString())
	}
	if !bytes.Equal(pkt.Data, data) {
		return fmt.Errorf("%d bytes, want %d", len(pkt.Data), len(data))
	}
	return nil
}

func derpExchange(ctx context.Context, rawURL string, websockets [2]bool, report func(string, error)) error {
	a, err := newDerpPeer(ctx, rawURL, websockets[0])
	if err != nil {
		return err
	}
	defer a.client.Close()
	b, err := newDerpPeer(ctx, rawURL, websockets[1])
	if err != nil {
		return err
	}
	defer b.client.Close()
	if a.client.ServerPublicKey().IsZero() || a.client.ServerPublicKey() != b.client.ServerPublicKey() {
		report("server-key", fmt.Errorf("server keys %s and %s", a.client.ServerPublicKey(), b.client.ServerPublicKey()))
	} else {
		report("server-key", nil)
	}

	hello := []byte("hello from a " + strings.Repeat("x", 100))
	if err := a.client.Send(b.key, hello); err != nil {
		report("a-to-b", err)
	} else {
		report("a-to-b", b.packetFrom(ctx, a.key, hello))
	}
	reply := []byte("hello from b")
	if err := b.client.Send(a.key, reply); err != nil {
		report("b-to-a", err)
	} else {
		report("b-to-a", a.packetFrom(ctx, b.key, reply))
	}
	big := bytes.Repeat([]byte{0xa5}, derp.MaxPacketSize)
	if err := a.client.Send(b.key, big); err != nil {
		report("max-packet", err)
	} else {
		report("max-packet", b.packetFrom(ctx, a.key, big))
	}
	report("ping", a.client.Ping(ctx))

	// a leaves: b, which a sent to, is told.
	aKey := a.key
	_ = a.client.Close()
	m, err := b.next(ctx, func(m derp.ReceivedMessage) bool { _, ok := m.(derp.PeerGoneMessage); return ok })
	if err == nil {
		gone := m.(derp.PeerGoneMessage)
		if gone.Peer != aKey || gone.Reason != derp.PeerGoneReasonDisconnected {
			err = fmt.Errorf("peer gone %s reason %d, want %s reason 0", gone.Peer.ShortString(), gone.Reason, aKey.ShortString())
		}
	}
	report("peer-gone", err)
	return nil
}
