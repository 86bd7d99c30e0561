package checks

import (
	"bytes"
	"encoding/json"
)

// compact removes protojson's deliberately unstable whitespace so details
// are stable, single-line strings.
func compact(b []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return string(b)
	}
	return buf.String()
}
