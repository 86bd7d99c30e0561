package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/google/uuid"
	_ "github.com/lib/pq" // the "postgres" driver coderd itself opens its database with

	"github.com/coder/coder/v2/coderd/database"
	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/provisioner/echo"
	"github.com/coder/coder/v2/provisionersdk/proto"
)

// What the template gives its one agent. coderd-check reads its expectations
// from here, so the two subcommands cannot disagree on what the agent should
// have done.
const (
	besideAgentName    = "main"
	besideStartupName  = "Startup"
	besideShutdownName = "Shutdown"
	besideAppSlug      = "files"
	besideGreeting     = "hello from the template's env"
	besideFastMetadata = "load" // collected every second: the stream must carry updates, not one snapshot
	besideFastValue    = "1"
	besideSlowMetadata = "hostname"
	// A TTL makes coderd give each start build a deadline, which activity bumps to now + the activity bump, but
	// only once the deadline is within 95 % of the bump: a bump longer than the TTL makes the first activity move
	// it, and a TTL of half an hour keeps coderd's autostop away from a test.
	besideTTL          = 30 * time.Minute
	besideActivityBump = 2 * time.Hour
)

// besideStartupLines are printed by the startup script, in this order, each
// on a line of its own; the last one only once the app answers.
var besideStartupLines = []string{
	"hello from the startup script",
	"line 2",
	"greeting: " + besideGreeting,
	"the files app answers; startup done",
}

const besideShutdownLine = "bye from the shutdown script"

// The startup script serves a directory with python3 on $BESIDE_APP_PORT for
// the app's health check. Agents of several workspaces on one machine share
// the port: the first serves it, the others find it answering.
const besideStartupScript = `#!/bin/sh
set -eu
echo "hello from the startup script"
echo "line 2"
echo "greeting: ${BESIDE_GREETING}"
dir="${TMPDIR:-/tmp}/agentwire-beside-${BESIDE_APP_PORT}"
mkdir -p "$dir/www"
echo "agentwire beside coderd" > "$dir/www/index.html"
answers() {
    python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:${BESIDE_APP_PORT}/', timeout=1)" 2>/dev/null
}
if ! answers; then
    # Detached, its output away from the script's pipes, so the script can end while it serves.
    nohup python3 -m http.server "${BESIDE_APP_PORT}" --bind 127.0.0.1 --directory "$dir/www" \
        > "$dir/http.log" 2>&1 < /dev/null &
    echo $! > "$dir/http.pid"
fi
i=0
until answers; do
    i=$((i + 1))
    if [ "$i" -ge 100 ]; then
        echo "the files app did not answer; see $dir/http.log" >&2
        exit 1
    fi
    sleep 0.2
done
echo "the files app answers; startup done"
`

const besideShutdownScript = `#!/bin/sh
dir="${TMPDIR:-/tmp}/agentwire-beside-${BESIDE_APP_PORT}"
if [ -f "$dir/http.pid" ]; then
    kill "$(cat "$dir/http.pid")" 2>/dev/null || true
    rm -f "$dir/http.pid"
fi
echo "bye from the shutdown script"
`

// besideTemplate is the echo provisioner's tarball: on start a volume and a
// container holding the agent, on stop only the volume, as a Terraform
// template whose agent's resource has count = start_count. In v2.30 the echo
// provisioner takes resources and agents from the graph responses.
func besideTemplate(appPort int) ([]byte, error) {
	port := strconv.Itoa(appPort)
	agent := &proto.Agent{
		Name:                     besideAgentName,
		OperatingSystem:          runtime.GOOS,
		Architecture:             runtime.GOARCH,
		ConnectionTimeoutSeconds: 120,
		TroubleshootingUrl:       "https://coder.com/docs/admin/templates/troubleshooting",
		MotdFile:                 "/etc/motd",
		Env: map[string]string{
			"BESIDE_APP_PORT": port,
			"BESIDE_GREETING": besideGreeting,
		},
		DisplayApps: &proto.DisplayApps{
			Vscode:               true,
			WebTerminal:          true,
			SshHelper:            true,
			PortForwardingHelper: true,
		},
		Scripts: []*proto.Script{
			{
				DisplayName:      besideStartupName,
				Icon:             "/emojis/25b6-fe0f.png",
				Script:           besideStartupScript,
				RunOnStart:       true,
				StartBlocksLogin: true,
				TimeoutSeconds:   120,
				LogPath:          "beside-startup.log",
			},
			{
				DisplayName:    besideShutdownName,
				Icon:           "/emojis/25c0.png",
				Script:         besideShutdownScript,
				RunOnStop:      true,
				TimeoutSeconds: 30,
			},
		},
		Metadata: []*proto.Agent_Metadata{
			{Key: besideFastMetadata, DisplayName: "Load", Script: "echo " + besideFastValue, Interval: 1, Timeout: 1, Order: 1},
			{Key: besideSlowMetadata, DisplayName: "Hostname", Script: "cat /proc/sys/kernel/hostname", Interval: 10, Timeout: 5, Order: 2},
		},
		Apps: []*proto.App{{
			Slug:         besideAppSlug,
			DisplayName:  "Files",
			Url:          "http://127.0.0.1:" + port,
			Icon:         "/icon/folder.svg",
			SharingLevel: proto.AppSharingLevel_OWNER,
			OpenIn:       proto.AppOpenIn_TAB,
			Healthcheck: &proto.Healthcheck{
				Url:       "http://127.0.0.1:" + port + "/",
				Interval:  2,
				Threshold: 10,
			},
		}},
	}
	volume := &proto.Resource{Name: "home", Type: "docker_volume"}
	graph := func(resources ...*proto.Resource) []*proto.Response {
		return []*proto.Response{{Type: &proto.Response_Graph{Graph: &proto.GraphComplete{Resources: resources}}}}
	}
	return echo.Tar(&echo.Responses{
		Parse:          echo.ParseComplete,
		ProvisionApply: echo.ApplyComplete,
		ProvisionGraphMap: map[proto.WorkspaceTransition][]*proto.Response{
			proto.WorkspaceTransition_START: graph(volume, &proto.Resource{Name: "dev", Type: "docker_container", Agents: []*proto.Agent{agent}}),
			proto.WorkspaceTransition_STOP:  graph(volume),
		},
	})
}

type setupWorkspace struct {
	ID            uuid.UUID `json:"id"`
	Name          string    `json:"name"`
	Owner         string    `json:"owner"`
	OwnerID       uuid.UUID `json:"owner_id"`
	LatestBuildID uuid.UUID `json:"latest_build_id"`
	AgentID       uuid.UUID `json:"agent_id"`
	AgentName     string    `json:"agent_name"`
	AgentToken    string    `json:"agent_token"`
}

type setupOutput struct {
	CoderdURL         string           `json:"coderd_url"`
	SessionToken      string           `json:"session_token"`
	Username          string           `json:"username"`
	UserID            uuid.UUID        `json:"user_id"`
	OrganizationID    uuid.UUID        `json:"organization_id"`
	TemplateID        uuid.UUID        `json:"template_id"`
	TemplateVersionID uuid.UUID        `json:"template_version_id"`
	AppPort           int              `json:"app_port"`
	Workspaces        []setupWorkspace `json:"workspaces"`
}

// coderdSetup makes a fresh coderd ready for agents: the first user, an echo
// template whose agent uses every part of a template, and N workspaces whose
// start builds succeeded, then writes what a test needs to run their agents
// and to ask coderd about them.
//
//	interop coderd-setup --url http://FRONT --postgres-url URL [--workspaces N] [--out FILE]
func coderdSetup(args []string) int {
	fs := flag.NewFlagSet("coderd-setup", flag.ContinueOnError)
	rawURL := fs.String("url", "", "coderd's access URL (the front)")
	pgURL := fs.String("postgres-url", "", "coderd's database: agent tokens are only there")
	workspaces := fs.Int("workspaces", 1, "how many workspaces to create")
	out := fs.String("out", "", "write the JSON here (default: stdout)")
	appPort := fs.Int("app-port", 0, "the port the startup script serves the app on (0: a free one)")
	email := fs.String("email", "admin@example.com", "the first user's email")
	username := fs.String("username", "admin", "the first user's username")
	password := fs.String("password", "agentwire-Beside-coderd-1", "the first user's password")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long the whole setup may take")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *rawURL == "" || *pgURL == "" || *workspaces < 1 || *appPort < 0 || *appPort > 65535 {
		fmt.Fprintln(os.Stderr, "coderd-setup: --url and --postgres-url are required, --workspaces at least 1, --app-port a port")
		return exitUsage
	}
	serverURL, err := url.Parse(*rawURL)
	if err != nil {
		fmt.Fprintf(os.Stderr, "coderd-setup: --url: %v\n", err)
		return exitUsage
	}
	if *appPort == 0 {
		if *appPort, err = freePort(); err != nil {
			fmt.Fprintf(os.Stderr, "coderd-setup: %v\n", err)
			return exitFail
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	result, err := runCoderdSetup(ctx, serverURL, *pgURL, *workspaces, *appPort, *email, *username, *password)
	if err != nil {
		fmt.Fprintf(os.Stderr, "coderd-setup: %v\n", err)
		return exitFail
	}
	data, _ := json.MarshalIndent(result, "", "  ")
	if *out == "" {
		fmt.Println(string(data))
		return exitOK
	}
	if err := os.WriteFile(*out, append(data, '\n'), 0o600); err != nil {
		fmt.Fprintf(os.Stderr, "coderd-setup: %v\n", err)
		return exitFail
	}
	return exitOK
}

func runCoderdSetup(ctx context.Context, serverURL *url.URL, pgURL string, n, appPort int, email, username, password string) (*setupOutput, error) {
	client := codersdk.New(serverURL)
	if err := waitForCoderd(ctx, client); err != nil {
		return nil, err
	}
	// A coderd that already has its first user (a second run by hand) is logged into instead.
	hasFirst, err := client.HasFirstUser(ctx)
	if err != nil {
		return nil, fmt.Errorf("has first user: %w", err)
	}
	if !hasFirst {
		_, err := client.CreateFirstUser(ctx, codersdk.CreateFirstUserRequest{Email: email, Username: username, Password: password})
		if err != nil {
			return nil, fmt.Errorf("create first user: %w", err)
		}
	}
	login, err := client.LoginWithPassword(ctx, codersdk.LoginWithPasswordRequest{Email: email, Password: password})
	if err != nil {
		return nil, fmt.Errorf("log in: %w", err)
	}
	client.SetSessionToken(login.SessionToken)
	me, err := client.User(ctx, codersdk.Me)
	if err != nil {
		return nil, fmt.Errorf("read the user: %w", err)
	}
	if len(me.OrganizationIDs) == 0 {
		return nil, errors.New("the first user belongs to no organization")
	}
	org := me.OrganizationIDs[0]

	tarball, err := besideTemplate(appPort)
	if err != nil {
		return nil, fmt.Errorf("echo template: %w", err)
	}
	file, err := client.Upload(ctx, codersdk.ContentTypeTar, bytes.NewReader(tarball))
	if err != nil {
		return nil, fmt.Errorf("upload the template: %w", err)
	}
	version, err := client.CreateTemplateVersion(ctx, org, codersdk.CreateTemplateVersionRequest{
		StorageMethod: codersdk.ProvisionerStorageMethodFile,
		FileID:        file.ID,
		Provisioner:   codersdk.ProvisionerTypeEcho,
	})
	if err != nil {
		return nil, fmt.Errorf("create the template version: %w", err)
	}
	if err := waitForJob(ctx, "template version import", func(ctx context.Context) (codersdk.ProvisionerJob, error) {
		v, err := client.TemplateVersion(ctx, version.ID)
		return v.Job, err
	}); err != nil {
		return nil, err
	}
	// Names unique per run, so a second run on the same coderd adds rather than collides.
	suffix := randomHex(3)
	ttl, bump := besideTTL.Milliseconds(), besideActivityBump.Milliseconds()
	template, err := client.CreateTemplate(ctx, org, codersdk.CreateTemplateRequest{
		Name:               "beside-" + suffix,
		VersionID:          version.ID,
		DefaultTTLMillis:   &ttl,
		ActivityBumpMillis: &bump,
	})
	if err != nil {
		return nil, fmt.Errorf("create the template: %w", err)
	}

	db, err := sql.Open("postgres", pgURL)
	if err != nil {
		return nil, fmt.Errorf("open the database: %w", err)
	}
	defer db.Close()
	store := database.New(db)

	result := &setupOutput{
		CoderdURL:         serverURL.String(),
		SessionToken:      login.SessionToken,
		Username:          me.Username,
		UserID:            me.ID,
		OrganizationID:    org,
		TemplateID:        template.ID,
		TemplateVersionID: version.ID,
		AppPort:           appPort,
	}
	for i := 0; i < n; i++ {
		ws, err := client.CreateUserWorkspace(ctx, codersdk.Me, codersdk.CreateWorkspaceRequest{
			TemplateID: template.ID,
			Name:       fmt.Sprintf("beside-%s-%d", suffix, i),
		})
		if err != nil {
			return nil, fmt.Errorf("create workspace %d: %w", i, err)
		}
		buildID := ws.LatestBuild.ID
		if err := waitForJob(ctx, "workspace "+ws.Name+" start build", func(ctx context.Context) (codersdk.ProvisionerJob, error) {
			b, err := client.WorkspaceBuild(ctx, buildID)
			return b.Job, err
		}); err != nil {
			return nil, err
		}
		build, err := client.WorkspaceBuild(ctx, buildID)
		if err != nil {
			return nil, fmt.Errorf("read build %s: %w", buildID, err)
		}
		var agents []codersdk.WorkspaceAgent
		for _, r := range build.Resources {
			agents = append(agents, r.Agents...)
		}
		if len(agents) != 1 {
			return nil, fmt.Errorf("workspace %s: build %s has %d agents, want 1", ws.Name, buildID, len(agents))
		}
		// coderd shows no one an agent's token: it is in workspace_agents.auth_token only.
		row, err := store.GetWorkspaceAgentByID(ctx, agents[0].ID)
		if err != nil {
			return nil, fmt.Errorf("read agent %s from the database: %w", agents[0].ID, err)
		}
		result.Workspaces = append(result.Workspaces, setupWorkspace{
			ID:            ws.ID,
			Name:          ws.Name,
			Owner:         ws.OwnerName,
			OwnerID:       ws.OwnerID,
			LatestBuildID: build.ID,
			AgentID:       row.ID,
			AgentName:     row.Name,
			AgentToken:    row.AuthToken.String(),
		})
	}
	return result, nil
}

// waitForCoderd waits until coderd (through the front) answers its build
// info; it may still be migrating its database.
func waitForCoderd(ctx context.Context, client *codersdk.Client) error {
	var last error
	for {
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := client.BuildInfo(attempt)
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("coderd did not answer /api/v2/buildinfo: %w", last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// waitForJob polls a provisioner job until it ends; only success is success.
func waitForJob(ctx context.Context, what string, get func(context.Context) (codersdk.ProvisionerJob, error)) error {
	var job codersdk.ProvisionerJob
	for {
		var err error
		job, err = get(ctx)
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if err == nil {
			switch job.Status {
			case codersdk.ProvisionerJobSucceeded:
				return nil
			case codersdk.ProvisionerJobFailed, codersdk.ProvisionerJobCanceled:
				return fmt.Errorf("%s: job %s %s: %s", what, job.ID, job.Status, job.Error)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: job %s still %s", what, job.ID, job.Status)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
