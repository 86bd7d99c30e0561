package reference

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	tailnetproto "github.com/coder/coder/v2/tailnet/proto"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	// DERPMapUpdateFrequency is how often coderd re-reads the DERP map for
	// an open StreamDERPMaps (its default); a map is sent only when changed.
	DERPMapUpdateFrequency = 5 * time.Second
	// ResumeTokenExpiry is tailnet.DefaultResumeTokenExpiry; clients are told
	// to refresh at half of it.
	ResumeTokenExpiry = 24 * time.Hour
)

// resumeKey signs resume tokens; one per process, like coderd's signing key.
var resumeKey = func() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // crypto/rand.Read never fails on supported platforms
	return k
}()

// tailnetAPI is the Tailnet service of one agent connection. WorkspaceUpdates
// is for user clients, not agents; it stays Unimplemented.
type tailnetAPI struct {
	tailnetproto.DRPCTailnetUnimplementedServer
	id Identity
	// telemetryEvents counts PostTelemetry events; coderd batches them for
	// its telemetry reporter.
	telemetryEvents atomic.Uint64
}

func newTailnetAPI(id Identity) *tailnetAPI {
	return &tailnetAPI{id: id}
}

var _ tailnetproto.DRPCTailnetServer = (*tailnetAPI)(nil)

func (t *tailnetAPI) PostTelemetry(_ context.Context, req *tailnetproto.TelemetryRequest) (*tailnetproto.TelemetryResponse, error) {
	t.telemetryEvents.Add(uint64(len(req.Events)))
	return &tailnetproto.TelemetryResponse{}, nil
}

// StreamDERPMaps sends the map, then re-checks it every
// DERPMapUpdateFrequency as coderd does, until the client goes. The map never
// changes here, so nothing more is sent.
func (t *tailnetAPI) StreamDERPMaps(_ *tailnetproto.StreamDERPMapsRequest, stream tailnetproto.DRPCTailnet_StreamDERPMapsStream) error {
	defer func() { _ = stream.Close() }()
	ticker := time.NewTicker(DERPMapUpdateFrequency)
	defer ticker.Stop()
	var last *tailnetproto.DERPMap
	for {
		current := derpMapToProto()
		if last == nil || !proto.Equal(last, current) {
			if err := stream.Send(current); err != nil {
				return fmt.Errorf("send derp map: %w", err)
			}
			last = current
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-ticker.C:
		}
	}
}

// RefreshResumeToken signs the agent's id and an expiry, standing in for
// coderd's JWT.
func (t *tailnetAPI) RefreshResumeToken(context.Context, *tailnetproto.RefreshResumeTokenRequest) (*tailnetproto.RefreshResumeTokenResponse, error) {
	expires := time.Now().Add(ResumeTokenExpiry)
	payload := binary.BigEndian.AppendUint64(append([]byte{}, t.id.AgentID...), uint64(expires.Unix())) //nolint:gosec // after 1970
	mac := hmac.New(sha256.New, resumeKey)
	mac.Write(payload)
	token := base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	return &tailnetproto.RefreshResumeTokenResponse{
		Token:     token,
		RefreshIn: durationpb.New(ResumeTokenExpiry / 2),
		ExpiresAt: timestamppb.New(expires),
	}, nil
}

// errGraceful ends a Coordinate call that the agent closed with Disconnect.
var errGraceful = errors.New("graceful disconnect")

// Coordinate holds the agent's coordination stream. No client ever tunnels to
// a reference agent, so there are no peer updates to send; each request is
// checked as coderd's coordinator checks an agent's (its node's addresses, no
// tunnels of its own, handshakes only with tunnelled peers). A rejected
// request is answered with the reason and ends the call, Disconnect ends it
// cleanly, and otherwise it lasts as long as the agent keeps it open.
func (t *tailnetAPI) Coordinate(stream tailnetproto.DRPCTailnet_CoordinateStream) error {
	defer func() { _ = stream.Close() }()
	for {
		req, err := stream.Recv()
		if err != nil {
			// The agent went away, or closed its side: the peer is lost.
			return nil
		}
		notes, err := t.handle(req)
		for _, n := range notes {
			if sendErr := stream.Send(&tailnetproto.CoordinateResponse{Error: n}); sendErr != nil {
				return nil
			}
		}
		switch {
		case errors.Is(err, errGraceful):
			return nil
		case err != nil:
			// coderd sends the reason, then closes the stream.
			_ = stream.Send(&tailnetproto.CoordinateResponse{Error: err.Error()})
			return nil
		}
	}
}

// handle applies one request: notes are non-fatal errors to send back, err
// ends the call.
func (t *tailnetAPI) handle(req *tailnetproto.CoordinateRequest) (notes []string, err error) {
	if req.AddTunnel != nil {
		return nil, errors.New("authorization: agents cannot open tunnels")
	}
	if upd := req.UpdateSelf; upd != nil {
		for _, a := range upd.GetNode().GetAddresses() {
			if err := t.checkAddress(a); err != nil {
				return nil, fmt.Errorf("authorization: %w", err)
			}
		}
	}
	if rt := req.RemoveTunnel; rt != nil {
		if _, err := uuidString(rt.Id); err != nil {
			return nil, fmt.Errorf("unable to convert bytes to UUID: %w", err)
		}
	}
	if req.Disconnect != nil {
		return nil, errGraceful
	}
	for _, rfh := range req.ReadyForHandshake {
		id, err := uuidString(rfh.Id)
		if err != nil {
			return notes, fmt.Errorf("handle ack: unable to convert bytes to UUID: %w", err)
		}
		// No tunnels exist here. Not fatal in coderd either: the client may
		// just have left.
		notes = append(notes, fmt.Sprintf("ready for handshake error: you do not share a tunnel with %q", id))
	}
	return notes, nil
}

// Agent node addresses coderd accepts: the agent's id under either service
// prefix, or the legacy fixed agent address.
var (
	tailscalePrefix = [6]byte{0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0}
	coderPrefix     = [6]byte{0xfd, 0x60, 0x62, 0x7a, 0xa4, 0x2b}
	legacyAgentIP   = netip.MustParseAddr("fd7a:115c:a1e0:49d6:b259:b7ac:b1b2:48f4")
)

func (t *tailnetAPI) checkAddress(s string) error {
	pre, err := netip.ParsePrefix(s)
	if err != nil {
		return fmt.Errorf("parse node address: %w", err)
	}
	if pre.Bits() != 128 {
		return fmt.Errorf("invalid address bits, expected 128, got %d", pre.Bits())
	}
	addr := pre.Addr()
	if addr == legacyAgentIP {
		return nil
	}
	for _, p := range [][6]byte{tailscalePrefix, coderPrefix} {
		var want [16]byte
		copy(want[:], t.id.AgentID)
		copy(want[:6], p[:])
		if addr == netip.AddrFrom16(want) {
			return nil
		}
	}
	return fmt.Errorf("invalid node address, got %s", addr)
}
