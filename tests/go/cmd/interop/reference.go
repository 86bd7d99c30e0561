package main

import (
	"flag"
	"fmt"
	"log"
	"os"

	"agentwire.test/interop/internal/link"
	"agentwire.test/interop/internal/reference"
)

// referenceServer runs the coderd-shaped benchmark server (package reference)
// until killed or until stdin is closed.
func referenceServer(args []string) int {
	fs := flag.NewFlagSet("reference", flag.ContinueOnError)
	transport := fs.String("transport", "ws", "ws (yamux over a binary WebSocket, like coderd) or tcp (yamux directly on TCP)")
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	verbose := fs.Bool("verbose", false, "log every accepted WebSocket to stderr")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *transport != "tcp" && *transport != "ws" {
		fmt.Fprintf(os.Stderr, "reference: unknown --transport %q\n", *transport)
		return exitUsage
	}

	logger := log.New(os.Stderr, "interop reference: ", log.LstdFlags|log.Lmicroseconds)
	// Registration cannot fail for generated descriptions; checking it once
	// here turns a broken build into an exit instead of a log per session.
	if _, err := reference.Handler(""); err != nil {
		logger.Printf("register coder services: %v", err)
		return exitFail
	}
	srv := &link.Server{SessionHandler: reference.Handler, QuietConnections: !*verbose, Log: logger}

	return listenAndServe(srv, *transport, *listen, logger, "reference")
}
