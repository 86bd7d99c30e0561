// Command interop drives Coder's real Go transport libraries (coder/websocket,
// hashicorp/yamux, storj.io/drpc, Coder's generated Agent API) so the Rust
// integration tests can check agentwire against them from both sides.
//
//	interop serve --transport tcp|ws --listen ADDR
//	interop reference --transport ws|tcp --listen ADDR
//	interop call  --transport tcp --addr HOST:PORT | --transport ws --url URL [flags]
//	interop agent --url URL --token T [--version V] [--rpc NAME]
//	interop coordinate --url URL --token T --as agent|client --agent-id ID [--node-id N]
//	interop derp --url http://HOST:PORT/derp
//	interop constants [--coder-src DIR]
//	interop agent-http --url http://HOST:PORT --token T --app SLUG [--reinit-wait D]
//	interop ssh --url http://HOST:PORT --token USER_TOKEN --agent-id ID [--port N] [--disable-direct]
//	interop coderdb migrate|seed|read|listen|channels --postgres-url URL ...
//	interop coderd-setup --url http://FRONT --postgres-url URL [--workspaces N] [--out FILE]
//	interop coderd-check --url http://FRONT --token T --agent-id ID [--checks …]
//	interop coderd-stop --url http://FRONT --token T --workspace-id ID
//	interop pgcoord --postgres-url URL --as agent|client --agent-id ID [--node-id N] [--url http://HOST:PORT --token T]
//
// See README.md for the full contract.
package main

import (
	"fmt"
	"os"
)

// Exit codes shared by all subcommands.
const (
	exitOK    = 0
	exitFail  = 1 // a check failed, or the connection did not work
	exitUsage = 2
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(exitUsage)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "serve":
		os.Exit(serve(args))
	case "reference":
		os.Exit(referenceServer(args))
	case "call":
		os.Exit(call(args))
	case "agent":
		os.Exit(agent(args))
	case "coordinate":
		os.Exit(coordinate(args))
	case "derp":
		os.Exit(derpReferee(args))
	case "constants":
		os.Exit(constants(args))
	case "agent-http":
		os.Exit(agentHTTP(args))
	case "ssh":
		os.Exit(sshCmd(args))
	case "coderdb":
		os.Exit(coderdb(args))
	case "coderd-setup":
		os.Exit(coderdSetup(args))
	case "coderd-check":
		os.Exit(coderdCheck(args))
	case "coderd-stop":
		os.Exit(coderdStop(args))
	case "pgcoord":
		os.Exit(pgcoordCmd(args))
	case "-h", "--help", "help":
		usage()
		os.Exit(exitOK)
	default:
		fmt.Fprintf(os.Stderr, "interop: unknown subcommand %q\n", os.Args[1])
		usage()
		os.Exit(exitUsage)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  interop serve --transport tcp|ws [--listen 127.0.0.1:0]
  interop reference --transport ws|tcp [--listen 127.0.0.1:0] [--verbose]
  interop call  --transport tcp --addr HOST:PORT [flags]
  interop call  --transport ws --url URL [--token T] [flags]
  interop agent --url URL --token T [--version V] [--rpc NAME]
  interop coordinate --url URL --token T --as agent|client --agent-id ID [--node-id N]
  interop derp --url http://HOST:PORT/derp
  interop constants [--coder-src DIR]
  interop agent-http --url http://HOST:PORT --token T --app SLUG [--reinit-wait D]
  interop ssh --url http://HOST:PORT --token USER_TOKEN --agent-id ID [--port N] [--disable-direct] [--command CMD]
  interop coderdb migrate|seed|read|listen|channels --postgres-url URL ...
  interop coderd-setup --url http://FRONT --postgres-url URL [--workspaces N] [--out FILE] [--app-port N]
  interop coderd-check --url http://FRONT --token T --agent-id ID [--workspace-id ID] [--postgres-url URL] [--checks LIST] [--deadline D]
  interop coderd-stop --url http://FRONT --token T --workspace-id ID [--timeout D]
  interop pgcoord --postgres-url URL --as agent|client --agent-id ID [--node-id N] [--peer-id ID] [--verbose]
  interop pgcoord --postgres-url URL --as client --agent-id ID --url http://HOST:PORT --token USER_TOKEN [--disable-direct] [--timeout D]
run "interop <subcommand> -h" for the flags of one subcommand
`)
}
