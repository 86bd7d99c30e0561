module agentwire.test/interop

go 1.25.6

require (
	github.com/coder/coder/v2 v2.30.0
	github.com/coder/websocket v1.8.14
	github.com/hashicorp/yamux v0.1.2
	google.golang.org/protobuf v1.36.11
	storj.io/drpc v0.0.34
)

require (
	github.com/zeebo/errs v1.4.0 // indirect
	golang.org/x/xerrors v0.0.0-20240903120638-7835f813f4da // indirect
)
