package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"

	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/codersdk/agentsdk"

	"agentwire.test/interop/internal/checks"
)

// agentHTTP calls the agent's HTTP endpoints through Coder's own client,
// codersdk/agentsdk v2.30.0, as the agent and the coder CLI inside a workspace
// call them, and prints one JSON line per check and a summary line, as `call`
// does.
//
//	interop agent-http --url http://HOST:PORT --token T --app SLUG [--reinit-wait 3s]
func agentHTTP(args []string) int {
	fs := flag.NewFlagSet("agent-http", flag.ContinueOnError)
	rawURL := fs.String("url", "", "server http:// URL")
	token := fs.String("token", "", "agent token")
	app := fs.String("app", "", "slug of one of the agent's apps")
	reinitWait := fs.Duration("reinit-wait", 3*time.Second, "how long the reinit stream must stay open and quiet")
	timeout := fs.Duration("timeout", 20*time.Second, "per-check timeout")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *rawURL == "" || *token == "" || *app == "" {
		fmt.Fprintln(os.Stderr, "agent-http: --url, --token and --app are required")
		return exitUsage
	}
	serverURL, err := url.Parse(*rawURL)
	if err != nil {
		fmt.Fprintf(os.Stderr, "agent-http: --url: %v\n", err)
		return exitUsage
	}
	client := agentsdk.New(serverURL, agentsdk.WithFixedToken(*token))
	stranger := agentsdk.New(serverURL, agentsdk.WithFixedToken(uuid.NewString()))
	source := uuid.New()

	steps := []struct {
		name string
		run  func(ctx context.Context) (string, error)
	}{
		{"gitsshkey", func(ctx context.Context) (string, error) {
			key, err := client.GitSSHKey(ctx)
			if err != nil {
				return "", err
			}
			// What `coder gitssh` relies on: an OpenSSH private key Go's ssh
			// package reads, whose public half is the public key served.
			signer, err := ssh.ParsePrivateKey([]byte(key.PrivateKey))
			if err != nil {
				return "", fmt.Errorf("parse private key: %w", err)
			}
			if got := string(ssh.MarshalAuthorizedKey(signer.PublicKey())); got != key.PublicKey {
				return "", fmt.Errorf("public key %q is not the private key's %q", key.PublicKey, got)
			}
			if signer.PublicKey().Type() != ssh.KeyAlgoED25519 {
				return "", fmt.Errorf("key type %s, want %s", signer.PublicKey().Type(), ssh.KeyAlgoED25519)
			}
			again, err := client.GitSSHKey(ctx)
			if err != nil {
				return "", err
			}
			if again != key {
				return "", errors.New("a second request answered another key")
			}
			return signer.PublicKey().Type(), nil
		}},
		{"gitsshkey-unauthorized", func(ctx context.Context) (string, error) {
			_, err := stranger.GitSSHKey(ctx)
			return expectStatus(err, http.StatusUnauthorized, "Workspace agent not authorized.")
		}},
		{"log-source", func(ctx context.Context) (string, error) {
			got, err := client.PostLogSource(ctx, agentsdk.PostLogSourceRequest{ID: source, DisplayName: "interop", Icon: "/icon/go.svg"})
			if err != nil {
				return "", err
			}
			if got.ID != source || got.DisplayName != "interop" || got.Icon != "/icon/go.svg" || got.CreatedAt.IsZero() || got.WorkspaceAgentID == uuid.Nil {
				return "", fmt.Errorf("unexpected log source %+v", got)
			}
			return got.ID.String(), nil
		}},
		{"logs", func(ctx context.Context) (string, error) {
			err := client.PatchLogs(ctx, agentsdk.PatchLogs{LogSourceID: source, Logs: []agentsdk.Log{
				{CreatedAt: time.Now(), Output: "interop line 1", Level: codersdk.LogLevelInfo},
				{CreatedAt: time.Now(), Output: "interop line 2", Level: codersdk.LogLevelWarn},
			}})
			return "2 lines", err
		}},
		{"logs-bad-level", func(ctx context.Context) (string, error) {
			err := client.PatchLogs(ctx, agentsdk.PatchLogs{LogSourceID: source, Logs: []agentsdk.Log{{Output: "x", Level: "loud"}}})
			return expectStatus(err, http.StatusBadRequest, "Invalid log level provided.")
		}},
		{"app-status", func(ctx context.Context) (string, error) {
			err := client.PatchAppStatus(ctx, agentsdk.PatchAppStatus{AppSlug: *app, State: codersdk.WorkspaceAppStatusStateWorking, Message: "interop", URI: "https://example.com/1"})
			return *app, err
		}},
		{"app-status-unknown-app", func(ctx context.Context) (string, error) {
			err := client.PatchAppStatus(ctx, agentsdk.PatchAppStatus{AppSlug: "no-such-app", State: codersdk.WorkspaceAppStatusStateIdle})
			return expectStatus(err, http.StatusBadRequest, "Failed to get workspace app.")
		}},
		{"external-auth", func(ctx context.Context) (string, error) {
			_, err := client.ExternalAuth(ctx, agentsdk.ExternalAuthRequest{Match: "https://github.com/coder/coder"})
			return expectStatus(err, http.StatusNotFound, `No matching external auth provider found in Coder for the url "https://github.com/coder/coder".`)
		}},
		{"aws-instance-identity", func(ctx context.Context) (string, error) {
			res, err := client.SDK.Request(ctx, http.MethodPost, "/api/v2/workspaceagents/aws-instance-identity", agentsdk.AWSInstanceIdentityToken{Signature: "s", Document: "d"})
			if err != nil {
				return "", err
			}
			defer res.Body.Close()
			return expectStatus(codersdk.ReadBodyAsError(res), http.StatusUnauthorized, "Invalid AWS identity.")
		}},
		{"reinit", func(ctx context.Context) (string, error) {
			// The agent's own call: for an agent that is not a prebuild it
			// must neither fail nor deliver an event, only wait.
			wait, cancel := context.WithTimeout(ctx, *reinitWait)
			defer cancel()
			event, err := client.WaitForReinit(wait)
			switch {
			case event != nil:
				return "", fmt.Errorf("unexpected reinit event %+v", *event)
			case errors.Is(err, context.DeadlineExceeded):
				return fmt.Sprintf("quiet for %s", *reinitWait), nil
			default:
				return "", fmt.Errorf("the stream failed instead of waiting: %v", err)
			}
		}},
	}

	passed, failed := 0, 0
	for _, step := range steps {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		detail, err := step.run(ctx)
		cancel()
		outcome := checks.Outcome{Check: step.name, Pass: err == nil, Detail: detail}
		if err != nil {
			outcome.Detail = err.Error()
			failed++
		} else {
			passed++
		}
		outcome.Print(os.Stdout)
	}
	fmt.Printf("interop: %d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return exitFail
	}
	return exitOK
}

// expectStatus passes when err is a codersdk error with this status and a
// message starting with message.
func expectStatus(err error, status int, message string) (string, error) {
	var sdkErr *codersdk.Error
	if !errors.As(err, &sdkErr) {
		return "", fmt.Errorf("want a %d error, got %v", status, err)
	}
	if sdkErr.StatusCode() != status || !strings.HasPrefix(sdkErr.Message, message) {
		return "", fmt.Errorf("want %d %q, got %d %q (%s)", status, message, sdkErr.StatusCode(), sdkErr.Message, sdkErr.Detail)
	}
	return fmt.Sprintf("%d %s", status, sdkErr.Message), nil
}
