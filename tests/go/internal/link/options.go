// Package link builds the transport stack Coder uses between agent and coderd:
// TCP or WebSocket (binary messages) → hashicorp yamux → one dRPC connection
// per yamux stream.
package link

import (
	"storj.io/drpc/drpcconn"
	"storj.io/drpc/drpcmanager"
	"storj.io/drpc/drpcserver"

	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/codersdk/drpcsdk"

	"agentwire.test/interop/internal/coderconst"
)

// MaxMessageSize is codersdk/drpcsdk.MaxMessageSize: the largest dRPC packet
// either side accepts.
const MaxMessageSize = drpcsdk.MaxMessageSize

// RPCPath is the coderd endpoint the agent dials. Coder has it only as a
// literal; coderconst keeps the copy and checks it against Coder's source.
const RPCPath = coderconst.RPCPath

// SessionTokenHeader and SessionTokenCookie are the two ways coderd accepts
// the agent token on the RPC endpoint: codersdk's own names (the cookie's is
// a variable there).
const SessionTokenHeader = codersdk.SessionTokenHeader

var SessionTokenCookie = codersdk.SessionTokenCookie

// managerOptions are drpcsdk.DefaultDRPCOptions: defaults except for the
// reader limit, which Coder raises to MaxMessageSize.
func managerOptions() drpcmanager.Options {
	return drpcsdk.DefaultDRPCOptions(nil)
}

// ServerOptions are the drpcserver options coderd uses.
func ServerOptions() drpcserver.Options {
	return drpcserver.Options{Manager: managerOptions()}
}

// connOptions are the drpcconn options the agent uses for every call.
func connOptions() drpcconn.Options {
	return drpcconn.Options{Manager: managerOptions()}
}
