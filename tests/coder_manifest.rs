//! GetManifest on a Coder deployment's database (Coder's own schema, migrated and seeded by Coder's own code) is the
//! manifest coderd v2.30 serves: for every seeded agent (a workspace's agents, a sub-agent, the agent of a
//! workspace's second build), agentwire's answer over the wire equals, field by field, the one Coder's own
//! `agentapi` builds on the same rows (`interop coderdb manifest`), under several deployments' settings, the DERP
//! map included: coderd's is built by `coder server`'s own code for the same settings (`--coder-server-derp-map`).

// Not `mod common;`: coderdb.rs includes common/pg.rs itself, and one file loaded as two modules is refused.
#[path = "common/coderdb.rs"]
mod coderdb;
#[allow(dead_code)]
#[path = "common/server.rs"]
mod server;

use agentwire::proto::agent::v2 as pb;
use agentwire::server::ServeConfig;
use agentwire_store::{Store, StoreOptions};
use agentwire_transport::client::Client;
use base64::Engine as _;
use prost::Message as _;
use serde_json::Value;
use server::{start, TestServer};
use uuid::Uuid;

/// An agent's session at the newest Agent API version coderd v2.30 speaks, the one served beside coderd.
async fn connect(server: &TestServer, token: Uuid) -> Client {
    server::connect_at(server, token, agentwire::session::ApiVersion::CODER_V2_30).await
}

/// What a deployment configures that the manifest shows. Each field is one `agentwire serve --coder-db` flag, under
/// coderd's name where coderd has one (`--access-url`, `--wildcard-access-url`, `--block-direct-connections`,
/// `--derp-force-websockets`, `--derp-server-stun-addresses`; `--external-auth-types` for coderd's
/// `CODER_EXTERNAL_AUTH_<n>_TYPE`s), and [`Deployment::serve_config`] sets the fields serve sets from it (serve's own
/// tests check that mapping); the referee is given the same value as coderd's setting.
struct Deployment {
    access_url: &'static str,
    app_hostname: &'static str,
    disable_direct_connections: bool,
    derp_force_websockets: bool,
    /// The types of coderd's external auth providers, comma-separated, one per provider.
    external_auth_types: &'static str,
    /// `None`: the flag not given, which is coderd's default (Google's five servers) on both sides.
    stun_addresses: Option<&'static str>,
    /// The regions coderd's map has for these settings, so that a map both sides left empty cannot pass.
    derp_regions: &'static [i64],
}

const DEPLOYMENTS: [Deployment; 4] = [
    // Subdomain apps on a wildcard host without a port (it takes the access URL's), Git providers among others,
    // DERP-only over WebSockets: no STUN regions, coderd's default addresses notwithstanding.
    Deployment {
        access_url: "https://coder.example.com:8443",
        app_hostname: "*.apps.example.com",
        disable_direct_connections: true,
        derp_force_websockets: true,
        // github and gitlab are Git providers, slack is not (codersdk's EnhancedExternalAuthProvider.Git).
        external_auth_types: "github,slack,gitlab",
        stun_addresses: None,
        derp_regions: &[999],
    },
    // coderd's defaults: no wildcard host, so no subdomain names and no port proxy URI; the STUN regions 1000–1004.
    Deployment {
        access_url: "http://127.0.0.1:3000",
        app_hostname: "",
        disable_direct_connections: false,
        derp_force_websockets: false,
        external_auth_types: "",
        stun_addresses: None,
        derp_regions: &[999, 1000, 1001, 1002, 1003, 1004],
    },
    // A wildcard host with a dash instead of a dot, every provider type there is (the legacy `bitbucket` among them,
    // a capitalised one that is none), an access URL without a port, and STUN off.
    Deployment {
        access_url: "https://coder.example.com",
        app_hostname: "*--apps.example.com",
        disable_direct_connections: false,
        derp_force_websockets: false,
        external_auth_types: "github,gitlab,bitbucket,bitbucket-cloud,bitbucket-server,azure-devops,\
                              azure-devops-entra,gitea,jfrog,slack,GitHub",
        stun_addresses: Some("disable"),
        derp_regions: &[999],
    },
    // The operator's own STUN servers, one an IPv6 literal.
    Deployment {
        access_url: "http://[::1]:3000",
        app_hostname: "*.apps.example.com:9443",
        disable_direct_connections: false,
        derp_force_websockets: true,
        external_auth_types: "gitea",
        stun_addresses: Some("stun.example.com:3478,[2001:db8::1]:3479"),
        derp_regions: &[999, 1000, 1001],
    },
];

impl Deployment {
    fn serve_config(&self) -> ServeConfig {
        let mut config = ServeConfig::default();
        config.agent_api.access_url = self.access_url.to_owned();
        config.agent_api.app_hostname = self.app_hostname.to_owned();
        config.agent_api.disable_direct_connections = self.disable_direct_connections;
        config.agent_api.derp_force_websockets = self.derp_force_websockets;
        let types: Vec<&str> = self.external_auth_types.split(',').collect();
        config.agent_api.git_auth_configs = agentwire::agentapi::git_auth_configs(&types);
        // The default DERP map: the embedded relay's region at the access URL and the STUN regions, as coderd's.
        config.tailnet.derp.access_url = self.access_url.to_owned();
        config.tailnet.derp.block_direct = self.disable_direct_connections;
        config.tailnet.derp.stun_addresses = match self.stun_addresses {
            // What `serve --coder-db` takes when the flag is not given.
            None => agentwire::derp::region::CODERD_STUN_ADDRESSES.map(String::from).to_vec(),
            Some(stun) => stun.split(',').map(str::to_owned).collect(),
        };
        config
    }

    /// coderd's manifest for `agent_id`, from Coder's own `agentapi` on the database, with the DERP map `coder
    /// server` builds for the same settings.
    async fn coderd_manifest(&self, url: &str, agent_id: &str) -> pb::Manifest {
        let mut args = vec![
            "manifest",
            "--postgres-url",
            url,
            "--agent-id",
            agent_id,
            "--access-url",
            self.access_url,
            "--coder-server-derp-map",
            "--external-auth-types",
            self.external_auth_types,
        ];
        let app_hostname = format!("--app-hostname={}", self.app_hostname);
        args.push(&app_hostname);
        if self.disable_direct_connections {
            args.push("--disable-direct-connections");
        }
        if self.derp_force_websockets {
            args.push("--derp-force-websockets");
        }
        let stun = self.stun_addresses.map(|stun| format!("--derp-server-stun-addresses={stun}"));
        args.extend(stun.as_deref());
        let out =
            coderdb::coderdb(&args).await.unwrap_or_else(|e| panic!("coderdb manifest --agent-id {agent_id}: {e}"));
        let wire = base64::engine::general_purpose::STANDARD
            .decode(out["manifest_base64"].as_str().expect("manifest_base64"))
            .expect("base64");
        pb::Manifest::decode(wire.as_slice())
            .unwrap_or_else(|e| panic!("coderd's manifest does not decode: {e}: {out}"))
    }
}

/// Every seeded agent that authenticates, with its token: the workspace's agents, the sub-agent, and the agent of
/// the superseded workspace's latest build.
fn seeded_agents(seed: &Value) -> Vec<(String, String, Uuid)> {
    let token = |v: &Value| Uuid::parse_str(v.as_str().expect("token")).expect("token uuid");
    let mut agents: Vec<(String, String, Uuid)> = seed["agents"]
        .as_array()
        .expect("seed agents")
        .iter()
        .map(|a| {
            (a["name"].as_str().expect("name").to_owned(), a["id"].as_str().expect("id").to_owned(), token(&a["token"]))
        })
        .collect();
    let sub = &seed["sub_agent"];
    agents.push(("sub-agent".into(), sub["id"].as_str().expect("sub-agent id").to_owned(), token(&sub["token"])));
    let superseded = &seed["superseded"];
    agents.push((
        "superseded workspace's agent".into(),
        superseded["agent_id"].as_str().expect("superseded agent id").to_owned(),
        token(&superseded["agent_token"]),
    ));
    agents
}

/// coderd lists an agent's scripts and metadata with queries that have no ORDER BY (`GetWorkspaceAgentScriptsByAgentIDs`,
/// `GetWorkspaceAgentMetadata`), so its order is the heap's: for metadata, which every value update rewrites, it
/// changes as the agent reports; for scripts it is in practice the template's, while the store's contract orders
/// them by id. Both manifests are put in one order before comparing; nothing else is normalised.
fn normalise(m: &mut pb::Manifest) {
    m.scripts.sort_by(|a, b| a.id.cmp(&b.id));
    m.metadata.sort_by(|a, b| a.key.cmp(&b.key));
}

/// Field by field, so a failure names the field; then the whole message, so a field left out here still counts.
fn assert_same(ours: &pb::Manifest, coderd: &pb::Manifest, who: &str) {
    macro_rules! same {
        ($($field:ident),* $(,)?) => {$(
            assert_eq!(ours.$field, coderd.$field, "{}: {who} (ours left, coderd's right)", stringify!($field));
        )*};
    }
    same!(
        agent_id,
        agent_name,
        owner_username,
        workspace_id,
        workspace_name,
        git_auth_configs,
        environment_variables,
        directory,
        vs_code_port_proxy_uri,
        motd_path,
        disable_direct_connections,
        derp_force_websockets,
        parent_id,
        derp_map,
    );
    assert_eq!(ours.apps.len(), coderd.apps.len(), "apps: {who}: {:?} vs {:?}", ours.apps, coderd.apps);
    for (o, c) in ours.apps.iter().zip(&coderd.apps) {
        assert_eq!(o, c, "app {:?}: {who} (ours left, coderd's right)", c.slug);
    }
    same!(scripts, metadata, devcontainers);
    assert_eq!(ours, coderd, "{who} (ours left, coderd's right)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_of_every_seeded_agent_is_coderds() {
    let db = coderdb::fresh_coder_db_with(&["--agents", "2"]).await;
    let agents = seeded_agents(&db.seed);
    for deployment in &DEPLOYMENTS {
        let store = Store::open_coder(&db.url, StoreOptions::default()).await.expect("open_coder");
        let server = start(store, deployment.serve_config()).await;
        for (name, id, token) in &agents {
            let who = format!("agent {name} ({id}) at {}", deployment.access_url);
            let client = pb::AgentClient::new(connect(&server, *token).await);
            let mut ours = client
                .get_manifest(&pb::GetManifestRequest {})
                .await
                .unwrap_or_else(|e| panic!("GetManifest of {who}: {e:?}"));
            let mut coderd = deployment.coderd_manifest(&db.url, id).await;
            assert_eq!(ours.agent_id.as_ref(), Uuid::parse_str(id).expect("id").as_bytes(), "{who}");
            let mut regions: Vec<i64> =
                coderd.derp_map.as_ref().expect("coderd's DERP map").regions.keys().copied().collect();
            regions.sort_unstable();
            assert_eq!(regions, deployment.derp_regions, "coderd's DERP map for {who}");
            normalise(&mut ours);
            normalise(&mut coderd);
            assert_same(&ours, &coderd, &who);
        }
        server.state.shutdown_token().cancel();
    }
}

/// The seed gives the manifest something in every field, so the comparison above compares values, not defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeded_manifests_fill_every_field() {
    let db = coderdb::fresh_coder_db().await;
    let deployment = &DEPLOYMENTS[0];
    let main = deployment.coderd_manifest(&db.url, db.seed["agent"]["id"].as_str().expect("id")).await;
    assert!(!main.environment_variables.is_empty() && !main.motd_path.is_empty() && !main.directory.is_empty());
    assert!(!main.vs_code_port_proxy_uri.is_empty() && main.git_auth_configs == 2);
    assert!(main.disable_direct_connections && main.derp_force_websockets);
    assert!(main.apps.iter().any(|a| !a.subdomain_name.is_empty()), "{:?}", main.apps);
    assert!(main.apps.iter().any(|a| a.healthcheck.as_ref().is_some_and(|h| !h.url.is_empty())));
    assert!(!main.scripts.is_empty() && !main.metadata.is_empty() && !main.devcontainers.is_empty());
    assert!(main.derp_map.as_ref().is_some_and(|m| m.regions.contains_key(&999)));
    let sub = deployment.coderd_manifest(&db.url, db.seed["sub_agent"]["id"].as_str().expect("id")).await;
    assert!(sub.parent_id.is_some() && !sub.apps.is_empty(), "{sub:?}");
}

/// Rows a Coder database can hold that the seed's template does not make: slugs that are ports to coderd and some
/// that only look like ports (`appurl.PortRegex` is four digits and an optional `s`), every sharing level and
/// health, a command app, hidden and external apps, metadata whose durations are not whole seconds or are
/// negative, and an environment with a `null` value. Written with SQL (the seed's template fixtures validate these
/// away or cannot express them); the schema admits each of them, so coderd serves them and so must we.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_beyond_the_seeds_template_give_coderds_manifest() {
    let db = coderdb::fresh_coder_db().await;
    let agent_id = db.seed["agent"]["id"].as_str().expect("id").to_owned();
    let token = Uuid::parse_str(db.seed["agent"]["token"].as_str().expect("token")).expect("token uuid");
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let apps = [
        // slug, subdomain, sharing level, health, command, external, hidden
        ("80", true, "public", "healthy", None, false, false),
        ("8080", true, "owner", "unhealthy", None, false, false),
        ("8443s", true, "authenticated", "initializing", None, false, true),
        ("12345", true, "organization", "disabled", None, false, false),
        ("term", false, "owner", "disabled", Some("htop"), false, false),
        ("docs", false, "owner", "disabled", None, true, false),
    ];
    for (slug, subdomain, sharing, health, command, external, hidden) in apps {
        sqlx::query(
            "INSERT INTO workspace_apps (id, created_at, agent_id, display_name, icon, slug, subdomain, sharing_level, \
               health, command, url, external, hidden, healthcheck_url, healthcheck_interval, healthcheck_threshold) \
             VALUES (gen_random_uuid(), now(), $1::uuid, $2, '/icon/x.svg', $2, $3, $4::app_sharing_level, \
               $5::workspace_app_health, $6, CASE WHEN $6::text IS NULL THEN 'http://localhost:' || length($2) END, \
               $7, $8, CASE WHEN $5 = 'disabled' THEN '' ELSE 'http://localhost/health' END, 7, 2)",
        )
        .bind(&agent_id)
        .bind(slug)
        .bind(subdomain)
        .bind(sharing)
        .bind(health)
        .bind(command)
        .bind(external)
        .bind(hidden)
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("insert app {slug}: {e}"));
    }
    for (key, interval, timeout) in [("frac", 1_500_000_000_i64, 250_000_000_i64), ("neg", -1_500_000_000, -10)] {
        sqlx::query(
            "INSERT INTO workspace_agent_metadata (workspace_agent_id, display_name, key, script, timeout, \"interval\") \
             VALUES ($1::uuid, $2, $2, 'true', $3, $4)",
        )
        .bind(&agent_id)
        .bind(key)
        .bind(timeout)
        .bind(interval)
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("insert metadata {key}: {e}"));
    }
    sqlx::query(
        "UPDATE workspace_agents SET environment_variables = '{\"EMPTY\": null, \"EDITOR\": \"vim\"}'::jsonb \
         WHERE id = $1::uuid",
    )
    .bind(&agent_id)
    .execute(&pool)
    .await
    .expect("update env");
    pool.close().await;

    let deployment = &DEPLOYMENTS[0];
    let store = Store::open_coder(&db.url, StoreOptions::default()).await.expect("open_coder");
    let server = start(store, deployment.serve_config()).await;
    let client = pb::AgentClient::new(connect(&server, token).await);
    let mut ours = client.get_manifest(&pb::GetManifestRequest {}).await.expect("GetManifest");
    let mut coderd = deployment.coderd_manifest(&db.url, &agent_id).await;
    normalise(&mut ours);
    normalise(&mut coderd);
    let names: Vec<_> = coderd.apps.iter().map(|a| (a.slug.as_str(), a.subdomain_name.as_str())).collect();
    assert!(
        names.contains(&("80", "80--dev--owner")) && names.contains(&("8443s", "8443s--main--dev--owner")),
        "{names:?}"
    );
    assert_same(&ours, &coderd, "the main agent with the extra rows");
    server.state.shutdown_token().cancel();
}
