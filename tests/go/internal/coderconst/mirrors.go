package coderconst

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// Copies of values Coder v2.30.0 keeps unexported (local constants, literals in code, the schema). Each comment
// names the place in github.com/coder/coder/v2@v2.30.0 it mirrors; the mirrors table below finds that place in the
// module's source text by pattern, and `interop constants` fails when a copy no longer matches it.
const (
	// RPCPath mirrors the literal in codersdk/agentsdk/agentsdk.go:276 (Client.connectRPCVersion): the agent
	// endpoint the agent dials. coderd routes it in coderd/coderd.go:1444.
	RPCPath = "/api/v2/workspaceagents/me/rpc"
	// MaxMetadataKeysLen mirrors maxAllKeysLen, coderd/agentapi/metadata.go:42, a constant local to
	// MetadataAPI.BatchUpdateMetadata: the key bytes one request may carry in all.
	MaxMetadataKeysLen = 6144
	// MaxMetadataValueLen mirrors maxValueLen, coderd/agentapi/metadata.go:44; maxErrorLen (line 45) is
	// maxValueLen too.
	MaxMetadataValueLen = 2048
	// LogsLimit mirrors the max_logs_length CHECK on workspace_agents.logs_length, coderd/database/dump.sql:1868:
	// the log output bytes one agent may store.
	LogsLimit = 1048576
	// ResourcesMonitoringNumDatapoints mirrors the literal in coderd/agentapi/api.go:147 (New's
	// ResourcesMonitoringAPI config).
	ResourcesMonitoringNumDatapoints = 20
	// ResourcesMonitoringInterval mirrors the literal in coderd/agentapi/api.go:148.
	ResourcesMonitoringInterval = 10 * time.Second
	// DERPMapUpdateFrequency mirrors coderd's default for Options.DERPMapUpdateFrequency, coderd/coderd.go:409.
	DERPMapUpdateFrequency = 5 * time.Second
)

// kind says how a mirror's matched text becomes a JSON value.
type kind int

const (
	kindInt      kind = iota // a decimal integer
	kindFloat                // a decimal number
	kindString               // the text itself
	kindDuration             // a Go duration expression ("5 * time.Second", "time.Minute"), as seconds
)

// mirror is one unexported value: where it is in Coder's source, a pattern whose one group is the value as
// written there, and the driver's own copy when it keeps one.
type mirror struct {
	name    string
	file    string // relative to the module root
	line    int    // its line in v2.30.0 (informational: the pattern finds it)
	pattern string
	kind    kind
	copy    any // nil: only agentwire keeps a copy
}

// mirrors are the unexported values the driver or agentwire copy. The names say where they live in Coder.
var mirrors = []mirror{
	{name: "tailnet.legacyWorkspaceAgentIP", file: "tailnet/tunnel.go", line: 14,
		pattern: `var legacyWorkspaceAgentIP = netip\.MustParseAddr\("([^"]+)"\)`, kind: kindString},
	{name: "agentsdk.Client.connectRPCVersion path", file: "codersdk/agentsdk/agentsdk.go", line: 276,
		pattern: `(?s)func \(c \*Client\) connectRPCVersion\(.*?c\.SDK\.URL\.Parse\("([^"]+)"\)`, kind: kindString,
		copy: RPCPath},
	{name: "coderd.workspaceAgentRPC default version", file: "coderd/workspaceagentsrpc.go", line: 50,
		pattern: `\n\t\tversion = "([0-9.]+)"\n`, kind: kindString},
	{name: "coderd.Options.AgentConnectionUpdateFrequency default", file: "coderd/coderd.go", line: 377,
		pattern: `options\.AgentConnectionUpdateFrequency = ([^\n]+)`, kind: kindDuration},
	{name: "coderd.Options.DERPMapUpdateFrequency default", file: "coderd/coderd.go", line: 409,
		pattern: `options\.DERPMapUpdateFrequency = ([^\n]+)`, kind: kindDuration, copy: DERPMapUpdateFrequency},

	// The Agent API's limits.
	{name: "agentapi.maxAllKeysLen", file: "coderd/agentapi/metadata.go", line: 42,
		pattern: `\bmaxAllKeysLen = (\d+)`, kind: kindInt, copy: MaxMetadataKeysLen},
	{name: "agentapi.maxValueLen", file: "coderd/agentapi/metadata.go", line: 44,
		pattern: `\bmaxValueLen = (\d+)`, kind: kindInt, copy: MaxMetadataValueLen},
	{name: "agentapi.maxErrorLen", file: "coderd/agentapi/metadata.go", line: 45,
		pattern: `\bmaxErrorLen = (maxValueLen)\n`, kind: kindString, copy: "maxValueLen"},
	{name: "database.workspace_agents.max_logs_length", file: "coderd/database/dump.sql", line: 1868,
		pattern: `CONSTRAINT max_logs_length CHECK \(\(logs_length <= (\d+)\)\)`, kind: kindInt, copy: LogsLimit},
	{name: "database.workspace_agent_metadata.key length", file: "coderd/database/dump.sql", line: 2507,
		pattern: `(?s)CREATE UNLOGGED TABLE workspace_agent_metadata \(\n.*?\n    key character varying\((\d+)\)`,
		kind:    kindInt},
	{name: "queries.InsertWorkspaceAgentLogs output length", file: "coderd/database/queries/workspaceagents.sql",
		line: 204, pattern: `unnest\(@output :: VARCHAR\((\d+)\) \[ \]\)`, kind: kindInt},
	{name: "coderd.patchWorkspaceAgentAppStatus message length", file: "coderd/workspaceagents.go", line: 319,
		pattern: `if len\(req\.Message\) > (\d+) \{`, kind: kindInt},
	{name: "agentapi.ResourcesMonitoringAPI.Debounce", file: "coderd/agentapi/api.go", line: 144,
		pattern: `\n\t\tDebounce:\s+([^\n,]+),`, kind: kindDuration},
	{name: "agentapi.ResourcesMonitoringAPI.Config.NumDatapoints", file: "coderd/agentapi/api.go", line: 147,
		pattern: `\n\t\t\tNumDatapoints:\s+(\d+),`, kind: kindInt, copy: ResourcesMonitoringNumDatapoints},
	{name: "agentapi.ResourcesMonitoringAPI.Config.CollectionInterval", file: "coderd/agentapi/api.go", line: 148,
		pattern: `\n\t\t\tCollectionInterval:\s+([^\n,]+),`, kind: kindDuration, copy: ResourcesMonitoringInterval},
	{name: "agentapi.ResourcesMonitoringAPI.Config.Alert.MinimumNOKsPercent", file: "coderd/agentapi/api.go",
		line: 151, pattern: `\n\t\t\t\tMinimumNOKsPercent:\s+(\d+),`, kind: kindInt},
	{name: "agentapi.ResourcesMonitoringAPI.Config.Alert.ConsecutiveNOKsPercent", file: "coderd/agentapi/api.go",
		line: 152, pattern: `\n\t\t\t\tConsecutiveNOKsPercent:\s+(\d+),`, kind: kindInt},

	// The batchers behind the Agent API.
	{name: "workspacestats.defaultBufferSize", file: "coderd/workspacestats/batcher.go", line: 23,
		pattern: `\n\tdefaultBufferSize\s+= (\d+)\n`, kind: kindInt},
	{name: "workspacestats.defaultFlushInterval", file: "coderd/workspacestats/batcher.go", line: 24,
		pattern: `\n\tdefaultFlushInterval = ([^\n]+)\n`, kind: kindDuration},
	{name: "workspacestats.Batcher forced flush fill", file: "coderd/workspacestats/batcher.go", line: 175,
		pattern: `if filled >= ([0-9.]+) && !b\.flushForced\.Load\(\)`, kind: kindFloat},
	{name: "metadatabatcher.defaultMetadataBatchSize", file: "coderd/agentapi/metadatabatcher/metadata_batcher.go",
		line: 24, pattern: `\n\tdefaultMetadataBatchSize = (\d+)\n`, kind: kindInt},
	{name: "metadatabatcher.defaultChannelBufferMultiplier",
		file: "coderd/agentapi/metadatabatcher/metadata_batcher.go", line: 29,
		pattern: `\n\tdefaultChannelBufferMultiplier = (\d+)\n`, kind: kindInt},
	{name: "metadatabatcher.defaultMetadataFlushInterval",
		file: "coderd/agentapi/metadatabatcher/metadata_batcher.go", line: 35,
		pattern: `\n\tdefaultMetadataFlushInterval = ([^\n]+)\n`, kind: kindDuration},

	// The user side agentwire serves (tokens, site configuration, error texts). httpmw exports
	// SignedOutErrorMessage, but importing coderd/httpmw would pull in coderd's database, RBAC and telemetry
	// for one string, so it is read from the source like the unexported values.
	{name: "httpmw.SignedOutErrorMessage", file: "coderd/httpmw/apikey.go", line: 80,
		pattern: `\n\tSignedOutErrorMessage = "([^"]+)"`, kind: kindString},
	{name: "coderd.deploymentStats processing message", file: "coderd/deployment.go", line: 56,
		pattern: `(?s)func \(api \*API\) deploymentStats\(.*?Message:\s+"([^"]+)"`, kind: kindString},
	{name: "apikey.Generate key ID length", file: "coderd/apikey/apikey.go", line: 49,
		pattern: `keyID, err := cryptorand\.String\((\d+)\)`, kind: kindInt},
	{name: "apikey.Generate secret length", file: "coderd/apikey/apikey.go", line: 55,
		pattern: `keySecret, hashedSecret, err := GenerateSecret\((\d+)\)`, kind: kindInt},
	{name: "queries.GetAnnouncementBanners key", file: "coderd/database/queries/siteconfig.sql", line: 44,
		pattern: `-- name: GetAnnouncementBanners :one\nSELECT value FROM site_configs WHERE key = '([a-z_]+)';`,
		kind:    kindString},
}

// CoderModule is the module the mirrors are read from.
const CoderModule = "github.com/coder/coder/v2"

// SourceDir finds the source of the coder/coder/v2 version this binary was built with: override when not empty,
// else that version's directory in the module cache (GOMODCACHE, `go env GOMODCACHE`, or ~/go/pkg/mod).
func SourceDir(override string) (dir, version string, err error) {
	info, ok := debug.ReadBuildInfo()
	if ok {
		for _, d := range info.Deps {
			if d.Path == CoderModule {
				version = d.Version
				if d.Replace != nil {
					version = d.Replace.Version
				}
			}
		}
	}
	if override != "" {
		return override, version, nil
	}
	if version == "" {
		return "", "", fmt.Errorf("%s is not among this binary's modules; pass --coder-src", CoderModule)
	}
	var caches []string
	if c := os.Getenv("GOMODCACHE"); c != "" {
		caches = append(caches, c)
	}
	for _, goBin := range []string{"go", "/usr/local/go/bin/go"} {
		if out, err := exec.Command(goBin, "env", "GOMODCACHE").Output(); err == nil { //nolint:gosec // fixed commands
			caches = append(caches, strings.TrimSpace(string(out)))
			break
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		caches = append(caches, filepath.Join(home, "go", "pkg", "mod"))
	}
	// The module path has no upper-case letters, so the cache's escaping leaves it as it is.
	for _, c := range caches {
		d := filepath.Join(c, filepath.FromSlash(CoderModule)+"@"+version)
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			return d, version, nil
		}
	}
	return "", version, fmt.Errorf("the source of %s@%s is not in the module cache (looked in %v); pass --coder-src",
		CoderModule, version, caches)
}

// readMirrors finds every mirror in the source under dir. Each pattern must match exactly once; a copy that
// differs from what the source says is a problem.
func readMirrors(dir string, r *Report) {
	files := map[string]string{}
	for _, m := range mirrors {
		text, ok := files[m.file]
		if !ok {
			b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(m.file)))
			if err != nil {
				r.problem("%s: %v", m.name, err)
				continue
			}
			text = string(b)
			files[m.file] = text
		}
		re := regexp.MustCompile(m.pattern)
		found := re.FindAllStringSubmatchIndex(text, -1)
		if len(found) != 1 {
			r.problem("%s: %d matches for %q in %s (want 1): Coder's source moved; update the mirror",
				m.name, len(found), m.pattern, m.file)
			continue
		}
		raw := text[found[0][2]:found[0][3]]
		line := 1 + strings.Count(text[:found[0][2]], "\n")
		value, unit, err := parse(m.kind, raw)
		if err != nil {
			r.problem("%s: %s:%d: %v", m.name, m.file, line, err)
			continue
		}
		r.Constants[m.name] = Entry{Value: value, Unit: unit, From: fmt.Sprintf("%s:%d (source text)", m.file, line)}
		if m.copy != nil {
			want, _, err := parse(m.kind, copyText(m.copy))
			if err != nil || fmt.Sprint(want) != fmt.Sprint(value) {
				r.problem("%s: the driver's copy is %v, Coder's source (%s:%d) says %v", m.name, m.copy, m.file, line,
					value)
			}
		}
	}
}

// copyText writes a copy the way parse reads the source.
func copyText(v any) string {
	if d, ok := v.(time.Duration); ok {
		return fmt.Sprintf("%d * time.Nanosecond", d.Nanoseconds())
	}
	return fmt.Sprint(v)
}

var durationExpr = regexp.MustCompile(`^(?:(\d+) \* )?time\.(Nanosecond|Microsecond|Millisecond|Second|Minute|Hour)$`)

var durationUnits = map[string]time.Duration{
	"Nanosecond": time.Nanosecond, "Microsecond": time.Microsecond, "Millisecond": time.Millisecond,
	"Second": time.Second, "Minute": time.Minute, "Hour": time.Hour,
}

// parse turns the text of a value as Go or SQL writes it into its JSON value (durations in seconds).
func parse(k kind, raw string) (value any, unit string, err error) {
	switch k {
	case kindInt:
		n, err := strconv.ParseInt(raw, 10, 64)
		return n, "", err
	case kindFloat:
		f, err := strconv.ParseFloat(raw, 64)
		return f, "", err
	case kindDuration:
		m := durationExpr.FindStringSubmatch(strings.TrimSpace(raw))
		if m == nil {
			return nil, "", fmt.Errorf("%q is not a duration this reader knows", raw)
		}
		n := int64(1)
		if m[1] != "" {
			if n, err = strconv.ParseInt(m[1], 10, 64); err != nil {
				return nil, "", err
			}
		}
		return (time.Duration(n) * durationUnits[m[2]]).Seconds(), "seconds", nil
	default:
		return raw, "", nil
	}
}
