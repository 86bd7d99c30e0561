package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"storj.io/drpc/drpcmux"

	"agentwire.test/interop/internal/coderapi"
	"agentwire.test/interop/internal/link"
	"agentwire.test/interop/internal/rawrpc"
)

// serve runs a coderd-like server until killed or until stdin is closed.
func serve(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	transport := fs.String("transport", "tcp", "tcp (yamux directly on TCP) or ws (yamux over a binary WebSocket, like coderd)")
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *transport != "tcp" && *transport != "ws" {
		fmt.Fprintf(os.Stderr, "serve: unknown --transport %q\n", *transport)
		return exitUsage
	}

	logger := log.New(os.Stderr, "interop serve: ", log.LstdFlags|log.Lmicroseconds)
	mux := drpcmux.New()
	if err := mux.Register(&rawrpc.Server{}, rawrpc.Description); err != nil {
		logger.Printf("register interop service: %v", err)
		return exitFail
	}
	if err := coderapi.Register(mux); err != nil {
		logger.Printf("register coder services: %v", err)
		return exitFail
	}
	srv := &link.Server{Handler: mux, Log: logger}

	return listenAndServe(srv, *transport, *listen, logger, "serve")
}

// listenAndServe serves srv on listen over transport (tcp or ws), prints the
// announce line once the listener is bound, and runs until stdin closes (see
// watchStdin) or serving fails; what names the command in the failure log.
func listenAndServe(srv *link.Server, transport, listen string, logger *log.Logger, what string) int {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		logger.Printf("listen: %v", err)
		return exitFail
	}
	defer func() { _ = l.Close() }()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watchStdin(cancel)

	errc := make(chan error, 1)
	switch transport {
	case "tcp":
		go func() { errc <- srv.ServeTCP(ctx, l) }()
	case "ws":
		hs := &http.Server{Handler: srv.WebSocketHandler(ctx), ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- hs.Serve(l) }()
	}
	// The listener is bound, so connections made from now on will be served.
	fmt.Println(link.Announce(transport, l.Addr()))

	select {
	case <-ctx.Done():
		return exitOK
	case err := <-errc:
		logger.Printf("%s: %v", what, err)
		return exitFail
	}
}

// watchStdin cancels when stdin reaches EOF, so a test harness that holds the
// write end of a pipe can stop the server just by dropping it. Only pipes and
// sockets are watched: stdin of a shell's background job is /dev/null, whose
// immediate EOF would stop the server before it served anything.
func watchStdin(cancel context.CancelFunc) {
	fi, err := os.Stdin.Stat()
	if err != nil || fi.Mode()&(os.ModeNamedPipe|os.ModeSocket) == 0 {
		return
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
}
