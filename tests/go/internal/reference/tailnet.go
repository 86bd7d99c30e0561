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
	"sync/atomic"
	"time"

	"github.com/coder/coder/v2/tailnet"
	tailnetproto "github.com/coder/coder/v2/tailnet/proto"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"agentwire.test/interop/internal/coderconst"
)

const (
	// DERPMapUpdateFrequency is how often coderd re-reads the DERP map for
	// an open StreamDERPMaps (its default); a map is sent only when changed.
	DERPMapUpdateFrequency = coderconst.DERPMapUpdateFrequency
	// ResumeTokenExpiry is tailnet.DefaultResumeTokenExpiry; clients are told
	// to refresh at half of it.
	ResumeTokenExpiry = tailnet.DefaultResumeTokenExpiry
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
	// auth is coderd's own check of an agent's coordinate requests.
	auth tailnet.AgentCoordinateeAuth
	// telemetryEvents counts PostTelemetry events; coderd batches them for
	// its telemetry reporter.
	telemetryEvents atomic.Uint64
}

func newTailnetAPI(id Identity) *tailnetAPI {
	// AgentID is 16 bytes by construction (IdentityFor).
	return &tailnetAPI{id: id, auth: tailnet.AgentCoordinateeAuth{ID: uuid.UUID(id.AgentID)}}
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
		current, err := derpMapToProto()
		if err != nil {
			return err
		}
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
// checked as coderd's coordinator checks an agent's, with coderd's own
// tailnet.AgentCoordinateeAuth (its node's addresses, no tunnels of its own),
// and handshakes are answered as with no tunnelled peers. A rejected request
// is answered with the reason and ends the call, Disconnect ends it cleanly,
// and otherwise it lasts as long as the agent keeps it open.
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

// handle applies one request in coderd's order (tailnet/coordinator.go,
// core.handleRequest): notes are non-fatal errors to send back, err ends the
// call.
func (t *tailnetAPI) handle(req *tailnetproto.CoordinateRequest) (notes []string, err error) {
	if upd := req.UpdateSelf; upd != nil && upd.Node == nil {
		// AgentCoordinateeAuth reads upd.Node.Addresses without a nil check;
		// refuse here rather than let it panic.
		return nil, errors.New("update_self without a node")
	}
	if err := t.auth.Authorize(context.Background(), req); err != nil {
		return nil, tailnet.AuthorizationError{Wrapped: err}
	}
	if rt := req.RemoveTunnel; rt != nil {
		if _, err := uuid.FromBytes(rt.Id); err != nil {
			return nil, fmt.Errorf("unable to convert bytes to UUID: %w", err)
		}
	}
	if req.Disconnect != nil {
		return nil, errGraceful
	}
	for _, rfh := range req.ReadyForHandshake {
		id, err := uuid.FromBytes(rfh.Id)
		if err != nil {
			return notes, fmt.Errorf("handle ack: unable to convert bytes to UUID: %w", err)
		}
		// No tunnels exist here. Not fatal in coderd either: the client may
		// just have left.
		notes = append(notes, fmt.Sprintf("%s: you do not share a tunnel with %q", tailnet.ReadyForHandshakeError, id.String()))
	}
	return notes, nil
}
