package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
)

// seedTB lets Coder's test fixture builders (coderd/database/dbgen, dbfake) and testify's require, which take a
// testing.TB, run in this binary. It implements what they call: failures are collected and FailNow unwinds with a
// panic that runSeedTB recovers, cleanups run at the end, and logs (dbfake logs every row at debug level) are kept
// and written to stderr only when the seed fails. testing.TB has an unexported method,
// so the interface is embedded (nil); every other exported method is overridden to panic with its name, so a
// builder that starts calling one fails loudly instead of dereferencing nil.
type seedTB struct {
	testing.TB

	mu       sync.Mutex
	failures []string
	logs     strings.Builder
	cleanups []func()
	ctx      context.Context
}

// seedTBFailNow is what FailNow panics with; runSeedTB tells it from a real panic.
type seedTBFailNow struct{}

func newSeedTB(ctx context.Context) *seedTB { return &seedTB{ctx: ctx} }

// runSeedTB runs fn with the adapter and returns the failures recorded (by require, slogtest or fn itself) as one
// error, after the registered cleanups ran.
func runSeedTB(ctx context.Context, fn func(t *seedTB)) (err error) {
	t := newSeedTB(ctx)
	defer func() {
		r := recover()
		t.runCleanups()
		if r != nil {
			if _, ok := r.(seedTBFailNow); !ok {
				panic(r)
			}
		}
		if len(t.failures) > 0 {
			fmt.Fprint(os.Stderr, t.logs.String())
			err = fmt.Errorf("%s", strings.Join(t.failures, "\n"))
		}
	}()
	fn(t)
	return nil
}

func (t *seedTB) runCleanups() {
	t.mu.Lock()
	cleanups := t.cleanups
	t.cleanups = nil
	t.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
}

func (t *seedTB) log(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.logs.WriteString(line)
}

func (t *seedTB) record(msg string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failures = append(t.failures, strings.TrimSpace(msg))
}

func (*seedTB) Helper()                             {}
func (*seedTB) Name() string                        { return "interop-coderdb-seed" }
func (t *seedTB) Context() context.Context          { return t.ctx }
func (t *seedTB) Log(args ...any)                   { t.log(fmt.Sprintln(args...)) }
func (t *seedTB) Logf(format string, args ...any)   { t.log(fmt.Sprintf(format+"\n", args...)) }
func (t *seedTB) Error(args ...any)                 { t.record(fmt.Sprint(args...)) }
func (t *seedTB) Errorf(format string, args ...any) { t.record(fmt.Sprintf(format, args...)) }
func (t *seedTB) Fail()                             { t.record("Fail called") }
func (*seedTB) FailNow()                            { panic(seedTBFailNow{}) }
func (t *seedTB) Fatal(args ...any)                 { t.Error(args...); t.FailNow() }
func (t *seedTB) Fatalf(format string, args ...any) { t.Errorf(format, args...); t.FailNow() }
func (t *seedTB) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.failures) > 0
}

func (t *seedTB) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

func unsupported(method string) {
	panic("coderdb seed: testing.TB." + method + " is not supported outside go test")
}

func (*seedTB) ArtifactDir() string   { unsupported("ArtifactDir"); return "" }
func (*seedTB) Attr(string, string)   { unsupported("Attr") }
func (*seedTB) Setenv(string, string) { unsupported("Setenv") }
func (*seedTB) Chdir(string)          { unsupported("Chdir") }
func (*seedTB) Skip(...any)           { unsupported("Skip") }
func (*seedTB) SkipNow()              { unsupported("SkipNow") }
func (*seedTB) Skipf(string, ...any)  { unsupported("Skipf") }
func (*seedTB) Skipped() bool         { unsupported("Skipped"); return false }
func (*seedTB) TempDir() string       { unsupported("TempDir"); return "" }
func (*seedTB) Output() io.Writer     { unsupported("Output"); return nil }
