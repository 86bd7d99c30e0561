package checks

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Outcome is one JSON line of `interop call` output.
type Outcome struct {
	Check  string `json:"check"`
	Pass   bool   `json:"pass"`
	Detail string `json:"detail"`
}

// Print writes o as a single JSON line.
func (o Outcome) Print(w io.Writer) {
	b, _ := json.Marshal(o)
	fmt.Fprintln(w, string(b))
}

// Run executes the checks one after another, printing one line each and then
// the summary line, and reports whether all passed.
func Run(env *Env, selected []Check, timeout time.Duration, w io.Writer) bool {
	passed, failed := 0, 0
	for _, c := range selected {
		o := runOne(env, c, timeout)
		o.Print(w)
		if o.Pass {
			passed++
		} else {
			failed++
		}
	}
	fmt.Fprintf(w, "interop: %d passed, %d failed\n", passed, failed)
	return failed == 0
}

// runOne bounds a check by timeout. The context normally makes drpc give up
// on its own; the extra timer still reports a check that ignores it, so a
// hung server can never hang the test suite.
func runOne(env *Env, c Check, timeout time.Duration) Outcome {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	type result struct {
		detail string
		err    error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		d, err := c.Run(ctx, env)
		done <- result{d, err}
	}()

	select {
	case r := <-done:
		if r.err != nil && ctx.Err() != nil {
			return Outcome{c.Name, false, fmt.Sprintf("timed out after %s: %v", timeout, r.err)}
		}
		if r.err != nil {
			return Outcome{c.Name, false, r.err.Error()}
		}
		return Outcome{c.Name, true, r.detail}
	case <-time.After(timeout + time.Second):
		return Outcome{c.Name, false, fmt.Sprintf("timed out after %s", time.Since(start).Round(time.Millisecond))}
	}
}
