package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"agentwire.test/interop/internal/coderconst"
)

// constants prints, as one JSON document, the Coder constants agentwire depends on: read from Coder's packages,
// or for the unexported ones from Coder's source text (see internal/coderconst). It exits 1 when a mirrored
// value is missing from the source or a copy disagrees with it; the report then lists the problems.
func constants(args []string) int {
	fs := flag.NewFlagSet("constants", flag.ContinueOnError)
	src := fs.String("coder-src", "", "root of the coder/coder/v2 source (default: the built version in the module cache)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	dir, version, err := coderconst.SourceDir(*src)
	if err != nil {
		fmt.Fprintf(os.Stderr, "constants: %v\n", err)
		return exitFail
	}
	report := coderconst.Build(dir, version)
	out, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		fmt.Fprintf(os.Stderr, "constants: %v\n", err)
		return exitFail
	}
	fmt.Println(string(out))
	for _, p := range report.Problems {
		fmt.Fprintf(os.Stderr, "constants: %s\n", p)
	}
	if len(report.Problems) > 0 {
		return exitFail
	}
	return exitOK
}
