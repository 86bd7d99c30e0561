// Package coderapi uses Coder's own generated Agent/Tailnet protobuf types
// and DRPC stubs: a minimal coderd-like Agent server for `interop serve`, and
// the full list of Agent RPCs for `interop agent`.
package coderapi

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// uuidBytes turns a canonical UUID string into the 16 raw bytes Coder puts
// in its `bytes id` proto fields. Only fixed, valid literals are passed.
func uuidBytes(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		panic(fmt.Sprintf("bad UUID literal %q", s))
	}
	return b
}

// Fixed IDs used by the Go server's manifest and as fallbacks by the agent.
var (
	AgentID       = uuidBytes("4a1c1b0e-6a0e-4c61-9d4b-0c5f0d2a7e01")
	WorkspaceID   = uuidBytes("4a1c1b0e-6a0e-4c61-9d4b-0c5f0d2a7e02")
	AppID         = uuidBytes("4a1c1b0e-6a0e-4c61-9d4b-0c5f0d2a7e03")
	ScriptID      = uuidBytes("4a1c1b0e-6a0e-4c61-9d4b-0c5f0d2a7e04")
	LogSourceID   = uuidBytes("4a1c1b0e-6a0e-4c61-9d4b-0c5f0d2a7e05")
	ConnectionID  = uuidBytes("4a1c1b0e-6a0e-4c61-9d4b-0c5f0d2a7e06")
	SubAgentIDFix = uuidBytes("4a1c1b0e-6a0e-4c61-9d4b-0c5f0d2a7e07")
)
