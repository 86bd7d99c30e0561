package main

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/coder/coder/v2/coderd/database"
	"github.com/coder/coder/v2/coderd/database/dbfake"
	"github.com/coder/coder/v2/coderd/database/dbgen"
	"github.com/coder/coder/v2/coderd/database/dbtime"
	"github.com/coder/coder/v2/coderd/gitsshkey"
	"github.com/coder/coder/v2/coderd/rbac"
	"github.com/coder/coder/v2/coderd/schedule"
	sdkproto "github.com/coder/coder/v2/provisionersdk/proto"
)

const (
	// A load run can last longer than seed's 30 minutes; a deadline passing mid-run would have coderd's autostop
	// replace the builds and every token would stop authenticating. The activity bump updates the build row on
	// every bump whatever the deadline (GREATEST), so the statements coderd runs are the same.
	bulkDeadlineIn  = 4 * time.Hour
	bulkMaxDeadline = 8 * time.Hour
	bulkMaxWorkers  = 64
	bulkMaxCount    = 100_000
)

// The real agent's idle mix (BENCHMARKS.md, "The real agent at Coder's defaults") was measured with
// examples/agent.toml, whose two metadata items run every 5 and 10 s; the bulk agents describe the same intervals,
// so an agent that follows its manifest sends that metadata mix.
var bulkMetadata = []*sdkproto.Agent_Metadata{
	{Key: "load", DisplayName: "Load average", Script: "cut -d' ' -f1 /proc/loadavg", Interval: 5, Timeout: 3, Order: 1},
	{
		Key: "home_disk", DisplayName: "Home disk used", Script: "df -P ~ | awk 'NR==2 {print $5}'",
		Interval: 10, Timeout: 5, Order: 2,
	},
}

type bulkOptions struct {
	workspaces  int
	users       int
	concurrency int
	tokensFile  string
	prefix      string
}

// coderdbBulk fills a Coder database with many workspaces for load runs against coderd and agentwire beside it.
// The rows are seed's: Coder's fixtures (dbgen, dbfake) and, for each agent's apps, scripts, metadata and monitors,
// coderd's own provisioner code (provisionerdserver.InsertWorkspaceResource through dbfake), one running start build
// with one agent per workspace. Workspaces belong to several users, as on a real deployment. dbfake builds one
// workspace per transaction, so the builds run on several connections at once; each agent's token is then checked
// with coderd's own token query and written to --tokens-file, one per line, in workspace order.
func coderdbBulk(args []string) int {
	fs := flag.NewFlagSet("coderdb bulk", flag.ContinueOnError)
	pgURL := fs.String("postgres-url", "", "PostgreSQL URL of a database coderd (or `coderdb migrate`) migrated")
	var opts bulkOptions
	fs.IntVar(&opts.workspaces, "workspaces", 0, "workspaces to create, each with one running agent")
	fs.IntVar(&opts.users, "users", 0, "users owning them, round robin (default: one per 10 workspaces)")
	fs.IntVar(&opts.concurrency, "concurrency", 8, "builds in flight at once, each on its own connection")
	fs.StringVar(&opts.tokensFile, "tokens-file", "", "write the agents' tokens here, one per line")
	fs.StringVar(&opts.prefix, "prefix", "bench", "user and template names start with it")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if opts.users == 0 {
		opts.users = max(1, (opts.workspaces+9)/10)
	}
	switch {
	case *pgURL == "" || opts.tokensFile == "":
		fmt.Fprintln(os.Stderr, "coderdb bulk: --postgres-url and --tokens-file are required")
		return exitUsage
	case opts.workspaces < 1 || opts.workspaces > bulkMaxCount:
		fmt.Fprintf(os.Stderr, "coderdb bulk: --workspaces must be 1..%d\n", bulkMaxCount)
		return exitUsage
	case opts.users < 1 || opts.users > opts.workspaces:
		fmt.Fprintln(os.Stderr, "coderdb bulk: --users must be 1..--workspaces")
		return exitUsage
	case opts.concurrency < 1 || opts.concurrency > bulkMaxWorkers:
		fmt.Fprintf(os.Stderr, "coderdb bulk: --concurrency must be 1..%d\n", bulkMaxWorkers)
		return exitUsage
	}
	sqlDB, err := openCoderDB(*pgURL)
	if err != nil {
		return coderdbFail("bulk", err)
	}
	defer sqlDB.Close()
	sqlDB.SetMaxOpenConns(opts.concurrency + 1)
	sqlDB.SetMaxIdleConns(opts.concurrency + 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := bulkDeployment(ctx, database.New(sqlDB), opts)
	if err != nil {
		return coderdbFail("bulk", err)
	}
	return coderdbPrint("bulk", out)
}

func bulkDeployment(ctx context.Context, db database.Store, opts bulkOptions) (map[string]any, error) {
	started := time.Now()
	now := dbtime.Now()
	var (
		org     database.Organization
		owners  = make([]database.User, opts.users)
		tpl     database.Template
		version database.TemplateVersion
		apiKey  string
	)
	// The template first, then the users, as a deployment gets them.
	err := runSeedTB(ctx, func(t *seedTB) {
		var err error
		org, err = db.GetDefaultOrganization(ctx)
		require.NoError(t, err, "default organization")
		owners[0] = bulkUser(t, db, org, opts.prefix, 0)
		_, apiKey = dbgen.APIKey(t, db, database.APIKey{UserID: owners[0].ID, ExpiresAt: now.Add(24 * time.Hour)})
		versionID := uuid.New()
		tpl = dbgen.Template(t, db, database.Template{
			OrganizationID:  org.ID,
			CreatedBy:       owners[0].ID,
			ActiveVersionID: versionID,
			Name:            opts.prefix + "-docker",
			DisplayName:     "Docker (load)",
			Icon:            "/icon/docker.png",
		})
		tpl, err = schedule.NewAGPLTemplateScheduleStore().Set(ctx, db, tpl, schedule.TemplateScheduleOptions{
			DefaultTTL:   seedDefaultTTL,
			ActivityBump: seedActivityBump,
		})
		require.NoError(t, err, "template schedule")
		version = dbfake.TemplateVersion(t, db).Seed(database.TemplateVersion{
			ID:             versionID,
			TemplateID:     uuid.NullUUID{UUID: tpl.ID, Valid: true},
			OrganizationID: org.ID,
			CreatedBy:      owners[0].ID,
			Name:           "v1",
		}).Do().TemplateVersion
		bulkMarkStarted(ctx, t, db, version.JobID)
	})
	if err != nil {
		return nil, err
	}
	if err := bulkParallel(ctx, opts.users-1, opts.concurrency, func(t *seedTB, i int) {
		owners[i+1] = bulkUser(t, db, org, opts.prefix, i+1)
	}); err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	usersDone := time.Since(started)

	tokens := make([]uuid.UUID, opts.workspaces)
	if err := bulkParallel(ctx, opts.workspaces, opts.concurrency, func(t *seedTB, i int) {
		owner := owners[i%len(owners)]
		agent := seedAgentProto("main", 0)
		agent.Metadata = bulkMetadata
		resp := dbfake.WorkspaceBuild(t, db, database.WorkspaceTable{
			OrganizationID:   org.ID,
			OwnerID:          owner.ID,
			TemplateID:       tpl.ID,
			Name:             fmt.Sprintf("ws-%05d", i),
			Ttl:              sql.NullInt64{Int64: int64(seedDefaultTTL), Valid: true},
			AutomaticUpdates: database.AutomaticUpdatesNever,
			LastUsedAt:       now.Add(-seedLastUsedAgo),
		}).Seed(database.WorkspaceBuild{
			TemplateVersionID: version.ID,
			BuildNumber:       1,
			Transition:        database.WorkspaceTransitionStart,
			InitiatorID:       owner.ID,
			Reason:            database.BuildReasonInitiator,
			Deadline:          now.Add(bulkDeadlineIn),
			MaxDeadline:       now.Add(bulkMaxDeadline),
		}).Resource(&sdkproto.Resource{Name: "dev", Type: "docker_container", Agents: []*sdkproto.Agent{agent}}).Do()
		require.Len(t, resp.Agents, 1, "agents of workspace %d", i)
		bulkMarkStarted(ctx, t, db, resp.Build.JobID)
		tokens[i] = resp.Agents[0].AuthToken
	}); err != nil {
		return nil, fmt.Errorf("workspaces: %w", err)
	}
	buildsDone := time.Since(started)

	// The promise the tokens file makes: every token authenticates as coderd authenticates an agent.
	if err := bulkParallel(ctx, len(tokens), opts.concurrency, func(t *seedTB, i int) {
		_, err := db.GetAuthenticatedWorkspaceAgentAndBuildByAuthToken(ctx, tokens[i])
		require.NoError(t, err, "token of workspace %d must authenticate", i)
	}); err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	if err := writeTokens(opts.tokensFile, tokens); err != nil {
		return nil, err
	}
	return map[string]any{
		"organization_id":      org.ID,
		"owner":                map[string]any{"id": owners[0].ID, "username": owners[0].Username, "api_token": apiKey},
		"users":                len(owners),
		"template":             map[string]any{"id": tpl.ID, "name": tpl.Name, "active_version_id": version.ID},
		"workspaces":           opts.workspaces,
		"agents":               len(tokens),
		"tokens_file":          opts.tokensFile,
		"concurrency":          opts.concurrency,
		"users_seconds":        usersDone.Seconds(),
		"workspaces_seconds":   (buildsDone - usersDone).Seconds(),
		"total_seconds":        time.Since(started).Seconds(),
		"metadata_intervals_s": []int64{bulkMetadata[0].Interval, bulkMetadata[1].Interval},
	}, nil
}

// bulkMarkStarted gives a job dbfake completed the start time a finished job has. dbfake leaves started_at null,
// and coderd's AcquireProvisionerJob takes any job without one: a running coderd would hand thousands of finished
// builds to its provisioners, fail them one by one (they have no files), and spend a load run doing it.
func bulkMarkStarted(ctx context.Context, t *seedTB, db database.Store, jobID uuid.UUID) {
	job, err := db.GetProvisionerJobByID(ctx, jobID)
	require.NoError(t, err, "job %s", jobID)
	require.True(t, job.CompletedAt.Valid, "job %s is complete", jobID)
	params := database.UpdateProvisionerJobWithCompleteWithStartedAtByIDParams{
		ID:          job.ID,
		UpdatedAt:   job.UpdatedAt,
		CompletedAt: job.CompletedAt,
		Error:       job.Error,
		ErrorCode:   job.ErrorCode,
		StartedAt:   sql.NullTime{Time: job.CreatedAt, Valid: true},
	}
	require.NoError(t, db.UpdateProvisionerJobWithCompleteWithStartedAtByID(ctx, params), "job %s started_at", jobID)
}

// bulkUser is a member of the organization with a git SSH key, as coderd's user creation leaves one; the first is
// an owner, as the first user is.
func bulkUser(t *seedTB, db database.Store, org database.Organization, prefix string, i int) database.User {
	roles := []string{}
	if i == 0 {
		roles = []string{rbac.RoleOwner().String()}
	}
	name := fmt.Sprintf("%s-%05d", prefix, i)
	user := dbgen.User(t, db, database.User{
		Username:  name,
		Email:     name + "@example.com",
		Name:      name,
		RBACRoles: roles,
		LoginType: database.LoginTypePassword,
		Status:    database.UserStatusActive,
	})
	private, public, err := gitsshkey.Generate(gitsshkey.AlgorithmEd25519)
	require.NoError(t, err, "generate git SSH key")
	dbgen.GitSSHKey(t, db, database.GitSSHKey{UserID: user.ID, PrivateKey: private, PublicKey: public})
	dbgen.OrganizationMember(t, db, database.OrganizationMember{OrganizationID: org.ID, UserID: user.ID})
	return user
}

// bulkParallel runs fn for 0..n-1 on `workers` goroutines, each with its own seedTB (FailNow unwinds only its own
// goroutine); the first failure stops the others from taking more work.
func bulkParallel(ctx context.Context, n, workers int, fn func(t *seedTB, i int)) error {
	var (
		next   atomic.Int64
		failed atomic.Bool
		mu     sync.Mutex
		errs   []error
		wg     sync.WaitGroup
	)
	for range min(workers, max(n, 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := runSeedTB(ctx, func(t *seedTB) {
				for !failed.Load() && ctx.Err() == nil {
					i := int(next.Add(1) - 1)
					if i >= n {
						return
					}
					fn(t, i)
				}
			})
			if err != nil {
				failed.Store(true)
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return ctx.Err()
}

func writeTokens(path string, tokens []uuid.UUID) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, token := range tokens {
		fmt.Fprintln(w, token)
	}
	if err := w.Flush(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
