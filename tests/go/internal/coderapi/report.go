package coderapi

import (
	"encoding/json"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"storj.io/drpc/drpcerr"
)

// Result is one line of `interop agent` output. Response is protojson (so
// byte fields are base64 and enums are names), Code is drpcerr.Code of Error.
type Result struct {
	RPC      string          `json:"rpc"`
	OK       bool            `json:"ok"`
	Response json.RawMessage `json:"response"`
	Error    *string         `json:"error"`
	Code     uint64          `json:"code"`
}

// NewResult records the outcome of one call; it never judges the answer.
func NewResult(method string, resp proto.Message, err error) Result {
	r := Result{RPC: AgentService + method, Response: json.RawMessage("null")}
	if err != nil {
		text := err.Error()
		r.Error = &text
		r.Code = drpcerr.Code(err)
		return r
	}
	r.OK = true
	if b, mErr := ProtoJSON(resp); mErr == nil {
		r.Response = b
	}
	return r
}

// ProtoJSON renders a message as protojson; encoding/json later compacts it
// (protojson deliberately varies its whitespace) so each result is one line.
func ProtoJSON(m proto.Message) (json.RawMessage, error) {
	return protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
}
