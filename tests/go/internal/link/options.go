// Package link builds the transport stack Coder uses between agent and coderd:
// TCP or WebSocket (binary messages) → hashicorp yamux → one dRPC connection
// per yamux stream.
package link

import (
	"storj.io/drpc/drpcconn"
	"storj.io/drpc/drpcmanager"
	"storj.io/drpc/drpcserver"
	"storj.io/drpc/drpcwire"
)

// MaxMessageSize matches codersdk/drpcsdk.MaxMessageSize: the largest dRPC
// packet either side accepts.
const MaxMessageSize = 4 << 20

// RPCPath is the coderd endpoint the agent dials.
const RPCPath = "/api/v2/workspaceagents/me/rpc"

// SessionTokenHeader and SessionTokenCookie are the two ways coderd accepts
// the agent token on the RPC endpoint.
const (
	SessionTokenHeader = "Coder-Session-Token"
	SessionTokenCookie = "coder_session_token"
)

// managerOptions mirrors drpcsdk.DefaultDRPCOptions: defaults except for the
// reader limit, which Coder raises explicitly.
func managerOptions() drpcmanager.Options {
	return drpcmanager.Options{
		Reader: drpcwire.ReaderOptions{MaximumBufferSize: MaxMessageSize},
	}
}

// ServerOptions are the drpcserver options coderd uses.
func ServerOptions() drpcserver.Options {
	return drpcserver.Options{Manager: managerOptions()}
}

// connOptions are the drpcconn options the agent uses for every call.
func connOptions() drpcconn.Options {
	return drpcconn.Options{Manager: managerOptions()}
}
