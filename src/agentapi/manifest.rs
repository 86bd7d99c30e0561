//! GetManifest (Coder's `manifest.go`): everything the agent needs to start, read once per connection.
//!
//! The agent's own fields (name, directory, environment, motd, parent) and its workspace's come from the session,
//! resolved from the token at connect; Coder re-reads the agent row here, we do not. What belongs to the agent but
//! lives in other tables (apps, scripts, metadata descriptions, devcontainers) is listed through the session's
//! scope, and the DERP map comes from the site configuration: five reads, run concurrently.

use std::collections::HashMap;

use agentwire_store::{App, Devcontainer, Metadata, Script};

use super::{pb, AgentApi, AgentApiConfig, RpcError};
use crate::session::Session;
use crate::tailnet::derp_json::{empty_derp_map, parse_derp_map};

use pb::workspace_app::{Health, SharingLevel};

pub(super) async fn get_manifest(
    api: &AgentApi,
    session: &Session,
    _request: pb::GetManifestRequest,
) -> Result<pb::Manifest, RpcError> {
    let scope = &session.scope;
    let watched = api.derp_map.as_ref().and_then(|map| map.borrow().clone());
    let stored_derp_map = async {
        match watched {
            Some(_) => Ok(None),
            // Before the poller's first read (or without one): the store, as coderd reads it.
            None => api.store.derp_map().await,
        }
    };
    let (apps, scripts, metadata, devcontainers, stored_derp_map) = tokio::try_join!(
        scope.list_apps(),
        scope.list_scripts(),
        scope.list_metadata(),
        scope.list_devcontainers(),
        stored_derp_map,
    )
    .map_err(RpcError::store("fetching workspace agent data"))?;

    let agent = &session.agent();
    let environment_variables = match agent.environment_variables.as_deref() {
        // As Go's json.Unmarshal into a map[string]string: `null` is no variables, and a `null` value is an empty
        // string (a JSON null has no effect on a Go string).
        Some(json) => serde_json::from_str::<Option<HashMap<String, Option<String>>>>(json)
            .map_err(|e| RpcError::invalid(format!("unmarshal environment variables: {e}")))?
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| (name, value.unwrap_or_default()))
            .collect(),
        None => HashMap::new(),
    };
    let names = Names { agent: &agent.name, workspace: &agent.workspace_name, owner: &agent.owner_username };
    let apps = apps
        .iter()
        .enumerate()
        .map(|(i, app)| {
            app_to_proto(app, &names, &api.config).map_err(|e| {
                RpcError::invalid(format!("converting workspace apps: parse app {i} ({:?}): {e}", app.slug))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let derp_map = match (watched, stored_derp_map) {
        (Some(map), _) => (*map).clone(),
        (None, Some(json)) => parse_derp_map(&json).map_err(|e| RpcError::invalid(format!("decode DERP map: {e}")))?,
        // Nothing stored: the default map (the embedded relay's region) even before the poller's first read, so an
        // agent that connects in the server's first instant is reachable; without one, an empty map rather than none,
        // as agents expect the field.
        (None, None) => api.derp_default.as_deref().cloned().unwrap_or_else(empty_derp_map),
    };

    Ok(pb::Manifest {
        agent_id: uuid_bytes(agent.id),
        agent_name: agent.name.clone(),
        owner_username: agent.owner_username.clone(),
        workspace_id: uuid_bytes(agent.workspace_id),
        workspace_name: agent.workspace_name.clone(),
        git_auth_configs: api.config.git_auth_configs,
        environment_variables,
        directory: agent.directory.clone(),
        vs_code_port_proxy_uri: vscode_port_proxy_uri(&api.config, &names),
        motd_path: agent.motd_file.clone(),
        disable_direct_connections: api.config.disable_direct_connections,
        derp_force_websockets: api.config.derp_force_websockets,
        parent_id: agent.parent_id.map(uuid_bytes),
        derp_map: Some(derp_map),
        scripts: scripts.iter().map(script_to_proto).collect(),
        apps,
        metadata: metadata.iter().map(metadata_to_proto).collect(),
        devcontainers: devcontainers.iter().map(devcontainer_to_proto).collect(),
        // Coder MAIN sends the owner's user secrets here; this server keeps none.
        secrets: Vec::new(),
    })
}

/// The names that make up subdomain app hosts.
struct Names<'a> {
    agent: &'a str,
    workspace: &'a str,
    owner: &'a str,
}

fn uuid_bytes(id: uuid::Uuid) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(id.as_bytes())
}

fn seconds(s: i64) -> prost_types::Duration {
    prost_types::Duration { seconds: s, nanos: 0 }
}

/// Coder reads metadata intervals and timeouts as Go `time.Duration`: nanoseconds. Split as `durationpb.New` splits
/// them, truncating, so a negative duration has negative seconds and nanos.
fn nanoseconds(ns: i64) -> prost_types::Duration {
    // The remainder is within ±1e9, so it fits an i32.
    let nanos = i32::try_from(ns % 1_000_000_000).unwrap_or(0);
    prost_types::Duration { seconds: ns / 1_000_000_000, nanos }
}

fn app_to_proto(app: &App, names: &Names<'_>, config: &AgentApiConfig) -> Result<pb::WorkspaceApp, String> {
    // Coder maps by upper-casing the DB enum and looking up the proto name; an unknown value fails the manifest.
    let sharing_level = SharingLevel::from_str_name(&app.sharing_level.to_uppercase())
        .filter(|l| *l != SharingLevel::Unspecified)
        .ok_or_else(|| format!("unknown app sharing level: {:?}", app.sharing_level))?;
    let health = Health::from_str_name(&app.health.to_uppercase())
        .filter(|h| *h != Health::Unspecified)
        .ok_or_else(|| format!("unknown app health: {:?}", app.health))?;
    Ok(pb::WorkspaceApp {
        id: uuid_bytes(app.id),
        url: app.url.clone().unwrap_or_default(),
        external: app.external,
        slug: app.slug.clone(),
        display_name: app.display_name.clone(),
        command: app.command.clone().unwrap_or_default(),
        icon: app.icon.clone(),
        subdomain: app.subdomain,
        subdomain_name: subdomain_name(app, names, &config.app_hostname),
        sharing_level: sharing_level as i32,
        healthcheck: Some(pb::workspace_app::Healthcheck {
            url: app.healthcheck_url.clone(),
            interval: Some(seconds(app.healthcheck_interval)),
            threshold: i32::try_from(app.healthcheck_threshold).unwrap_or(i32::MAX),
        }),
        health: health as i32,
        hidden: app.hidden,
    })
}

/// `<slug>--<workspace>--<owner>`, or `<port>--<agent>--<workspace>--<owner>` for a port slug; empty unless the app
/// is a subdomain app, an app hostname is configured, and every name is known (Coder's `db2sdk.AppSubdomain`).
fn subdomain_name(app: &App, names: &Names<'_>, app_hostname: &str) -> String {
    if !app.subdomain
        || app_hostname.is_empty()
        || names.agent.is_empty()
        || names.workspace.is_empty()
        || names.owner.is_empty()
    {
        return String::new();
    }
    let slug = if app.slug.is_empty() { &app.display_name } else { &app.slug };
    if is_port_slug(slug) {
        format!("{slug}--{}--{}--{}", names.agent, names.workspace, names.owner)
    } else {
        format!("{slug}--{}--{}", names.workspace, names.owner)
    }
}

/// codersdk's `EnhancedExternalAuthProvider.Git`: the external auth provider types the agent treats as Git
/// providers, after coderd's `applyDefaultsToConfig` read the legacy `bitbucket` as `bitbucket-cloud`. Exact
/// strings, as coderd compares them.
pub fn is_git_provider(provider_type: &str) -> bool {
    matches!(
        provider_type,
        "github"
            | "gitlab"
            | "bitbucket"
            | "bitbucket-cloud"
            | "bitbucket-server"
            | "azure-devops"
            | "azure-devops-entra"
            | "gitea"
    )
}

/// The manifest's `git_auth_configs` for a deployment whose external auth providers have these types (coderd's
/// `CODER_EXTERNAL_AUTH_<n>_TYPE`, one entry per provider): how many are Git providers.
pub fn git_auth_configs<S: AsRef<str>>(provider_types: &[S]) -> u32 {
    let count = provider_types.iter().filter(|t| is_git_provider(t.as_ref())).count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// The check coderd runs on `--wildcard-access-url` before it starts (`appurl.CompileHostnamePattern`): empty, or a
/// host pattern such as `*.apps.example.com` or `*--apps.example.com:8443`, one `*` leading it, no scheme. agentwire
/// builds the same app names from it as coderd, so a pattern coderd refuses is refused here too.
pub fn check_wildcard_access_url(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Ok(());
    }
    let lower = pattern.to_lowercase();
    let refuse = |why: &str| Err(format!("hostname pattern {why}: {lower:?}"));
    if lower.contains("http:") || lower.contains("https:") {
        return refuse("must not contain a scheme");
    }
    if lower.starts_with('.') || lower.ends_with('.') {
        return refuse("must not start or end with a period");
    }
    if !lower.contains('.') {
        return refuse("must contain at least two labels/segments");
    }
    if lower.matches('*').count() != 1 {
        return refuse("must contain exactly one asterisk");
    }
    if !lower.starts_with('*') {
        return refuse("must only contain an asterisk at the beginning");
    }
    // The port is for the URLs built from it; the labels are checked without it.
    let host = crate::derp::region::split_host_port(&lower).map_or(lower.as_str(), |(host, _)| host);
    for (i, label) in host.split('.').enumerate() {
        // The asterisk stands for a label's start: `*--apps` is checked as `a--apps`.
        let label = if i == 0 { format!("a{}", label.strip_prefix('*').unwrap_or(label)) } else { label.to_owned() };
        if !is_hostname_label(&label) {
            return refuse(&format!("contains invalid label {label:?}"));
        }
    }
    Ok(())
}

/// appurl's `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`.
fn is_hostname_label(label: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = label.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => alnum(first) && alnum(last) && bytes.iter().all(|&b| alnum(b) || b == b'-'),
        _ => false,
    }
}

/// Coder's `appurl.PortRegex`, `^\d{4}s?$`: four digits, `s` for HTTPS. Not any port number: coderd names a slug
/// such as `80` without the agent and `8443s` with it, and agents must get the names coderd routes.
fn is_port_slug(slug: &str) -> bool {
    let digits = slug.strip_suffix('s').unwrap_or(slug);
    digits.len() == 4 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `<access scheme>://<app host>` with the `*` replaced by `{{port}}--<agent>--<workspace>--<owner>`; the app host
/// gets the access URL's port when it has none. Empty without an app hostname (port proxying needs subdomains).
fn vscode_port_proxy_uri(config: &AgentApiConfig, names: &Names<'_>) -> String {
    if config.app_hostname.is_empty() {
        return String::new();
    }
    let (scheme, access_port) = scheme_and_port(&config.access_url);
    // Go's url.Parse lower-cases the scheme.
    let scheme = scheme.to_ascii_lowercase();
    let mut host = config.app_hostname.clone();
    if let Some(port) = access_port {
        if host_port(&host).is_none() {
            host = format!("{host}:{port}");
        }
    }
    let app = format!("{{{{port}}}}--{}--{}--{}", names.agent, names.workspace, names.owner);
    format!("{scheme}://{}", host.replace('*', &app))
}

/// The scheme and explicit port of a URL such as `https://coder.example.com:8443/path`.
fn scheme_and_port(url: &str) -> (&str, Option<&str>) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (scheme, host_port(host))
}

/// The explicit port of `host[:port]` (IPv6 literals in brackets allowed).
fn host_port(host: &str) -> Option<&str> {
    let (before, port) = host.rsplit_once(':')?;
    let bracketed_ok = !before.contains(':') || before.ends_with(']');
    (bracketed_ok && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())).then_some(port)
}

fn script_to_proto(s: &Script) -> pb::WorkspaceAgentScript {
    pb::WorkspaceAgentScript {
        log_source_id: uuid_bytes(s.log_source_id),
        log_path: s.log_path.clone(),
        script: s.script.clone(),
        cron: s.cron.clone(),
        run_on_start: s.run_on_start,
        run_on_stop: s.run_on_stop,
        start_blocks_login: s.start_blocks_login,
        timeout: Some(seconds(s.timeout_seconds)),
        // Coder's GetManifest leaves the display name out (its `dbAgentScriptToProto` never sets it); agents
        // compare manifests, so we do the same.
        display_name: String::new(),
        id: uuid_bytes(s.id),
    }
}

fn metadata_to_proto(m: &Metadata) -> pb::workspace_agent_metadata::Description {
    pb::workspace_agent_metadata::Description {
        display_name: m.display_name.clone(),
        key: m.key.clone(),
        script: m.script.clone(),
        interval: Some(nanoseconds(m.interval)),
        timeout: Some(nanoseconds(m.timeout)),
    }
}

fn devcontainer_to_proto(d: &Devcontainer) -> pb::WorkspaceAgentDevcontainer {
    pb::WorkspaceAgentDevcontainer {
        id: uuid_bytes(d.id),
        workspace_folder: d.workspace_folder.clone(),
        config_path: d.config_path.clone(),
        name: d.name.clone(),
        subagent_id: d.subagent_id.map(uuid_bytes),
    }
}

#[cfg(test)]
mod tests {
    use agentwire_store::{NewAgent, NewApp, NewMetadata, NewScript};
    use uuid::Uuid;

    use super::super::test_support::{another_agent, fixture, session_for, Fixture};
    use super::super::AgentApi;
    use super::*;

    const DERP_JSON: &str = r#"{
        "HomeParams": {"RegionScore": {"999": 0.5}},
        "Regions": {"999": {"EmbeddedRelay": true, "RegionID": 999, "RegionCode": "coder", "RegionName": "Coder",
            "Nodes": [{"Name": "999a", "RegionID": 999, "HostName": "coder.example.com", "IPv4": "10.0.0.1",
                       "STUNPort": -1, "DERPPort": 443, "ForceHTTP": true, "CanPort80": true}]}},
        "OmitDefaultRegions": true
    }"#;

    /// An agent with everything the manifest shows: env, motd, apps, scripts, metadata, a devcontainer.
    async fn rich_agent() -> (Fixture, Uuid, Uuid, Uuid, Uuid) {
        let f = fixture().await;
        let admin = f.store.admin();
        let (build, _) = admin.create_demo_agent("carol", "dev", "seed").await.expect("build");
        let agent = admin
            .create_agent(
                build.resource_id,
                &NewAgent {
                    name: "main".into(),
                    directory: "/workspaces/app".into(),
                    environment_variables: Some(r#"{"FOO":"bar","EMPTY":""}"#.into()),
                    motd_file: "/etc/motd".into(),
                    architecture: "arm64".into(),
                    operating_system: "linux".into(),
                    ..Default::default()
                },
            )
            .await
            .expect("agent");
        let web = admin
            .add_app(
                agent.id,
                &NewApp {
                    slug: "web".into(),
                    display_name: "Web".into(),
                    url: Some("http://localhost:3000".into()),
                    healthcheck_url: "http://localhost:3000/healthz".into(),
                    healthcheck_interval: 5,
                    healthcheck_threshold: 6,
                    subdomain: true,
                    sharing_level: Some("authenticated".into()),
                    ..Default::default()
                },
            )
            .await
            .expect("web");
        let port = admin
            .add_app(agent.id, &NewApp { slug: "8080".into(), subdomain: true, ..Default::default() })
            .await
            .expect("port app");
        let script = admin
            .add_script(
                agent.id,
                &NewScript {
                    display_name: "setup".into(),
                    script: "echo hi".into(),
                    cron: "0 * * * *".into(),
                    run_on_start: true,
                    start_blocks_login: true,
                    timeout_seconds: 90,
                    log_path: "/tmp/setup.log".into(),
                    ..Default::default()
                },
            )
            .await
            .expect("script");
        admin
            .add_metadata_description(
                agent.id,
                &NewMetadata {
                    key: "load".into(),
                    display_name: "Load".into(),
                    script: "uptime".into(),
                    interval: 10_000_000_000,
                    timeout: 1_500_000_000,
                    display_order: 1,
                },
            )
            .await
            .expect("metadata");
        let dc = admin.add_devcontainer(agent.id, "dc", "/workspaces/app", ".devcontainer.json").await.expect("dc");
        admin.set_derp_map(DERP_JSON).await.expect("derp");
        let session = session_for(&f.store, &agent).await;
        let f = Fixture { session, agent, ..f };
        (f, web, port, script, dc)
    }

    #[tokio::test]
    async fn manifest_carries_what_the_admin_created() {
        let (f, web, port, script, dc) = rich_agent().await;
        let before = f.store.queries().snapshot();
        let m = get_manifest(&f.api, &f.session, pb::GetManifestRequest {}).await.expect("manifest");
        let diff = f.store.queries().snapshot().since(&before);
        // Apps, scripts, metadata, devcontainers, DERP map; never the agent row, never the token lookup.
        assert_eq!(diff.total(), 5, "{diff:?}");
        assert_eq!(diff.get("GetAuthenticatedWorkspaceAgentAndBuildByAuthToken"), 0);
        assert_eq!(diff.get("GetWorkspaceAgentStateBySelf"), 0);
        assert_eq!(diff.notifications, 0);

        assert_eq!(m.agent_id.as_ref(), f.agent.id.as_bytes());
        assert_eq!(m.agent_id.len(), 16);
        assert_eq!(m.workspace_id.as_ref(), f.session.agent().workspace_id.as_bytes());
        assert_eq!(
            (m.agent_name.as_str(), m.workspace_name.as_str(), m.owner_username.as_str()),
            ("main", "dev", "carol")
        );
        assert_eq!(m.directory, "/workspaces/app");
        assert_eq!(m.motd_path, "/etc/motd");
        assert_eq!(m.environment_variables.get("FOO").map(String::as_str), Some("bar"));
        assert_eq!(m.environment_variables.len(), 2);
        assert_eq!(m.parent_id, None);
        assert_eq!(m.vs_code_port_proxy_uri, "", "no app hostname configured");

        // Ordered by slug: "8080" < "web".
        assert_eq!(m.apps.iter().map(|a| a.slug.as_str()).collect::<Vec<_>>(), vec!["8080", "web"]);
        let w = &m.apps[1];
        assert_eq!(w.id.as_ref(), web.as_bytes());
        assert_eq!(m.apps[0].id.as_ref(), port.as_bytes());
        assert_eq!((w.url.as_str(), w.display_name.as_str(), w.subdomain), ("http://localhost:3000", "Web", true));
        assert_eq!(w.sharing_level, SharingLevel::Authenticated as i32);
        assert_eq!(w.health, Health::Initializing as i32);
        let hc = w.healthcheck.as_ref().expect("healthcheck");
        assert_eq!(
            (hc.url.as_str(), hc.interval, hc.threshold),
            ("http://localhost:3000/healthz", Some(seconds(5)), 6)
        );
        assert_eq!(w.subdomain_name, "", "no app hostname configured");

        assert_eq!(m.scripts.len(), 1);
        let s = &m.scripts[0];
        assert_eq!(s.id.as_ref(), script.as_bytes());
        assert_eq!(s.log_source_id.len(), 16);
        assert_eq!(
            (s.script.as_str(), s.cron.as_str(), s.log_path.as_str()),
            ("echo hi", "0 * * * *", "/tmp/setup.log")
        );
        assert_eq!((s.run_on_start, s.run_on_stop, s.start_blocks_login), (true, false, true));
        assert_eq!(s.timeout, Some(seconds(90)));
        assert_eq!(s.display_name, "", "Coder does not send it");

        assert_eq!(m.metadata.len(), 1);
        let md = &m.metadata[0];
        assert_eq!((md.key.as_str(), md.display_name.as_str(), md.script.as_str()), ("load", "Load", "uptime"));
        assert_eq!(md.interval, Some(seconds(10)));
        assert_eq!(md.timeout, Some(prost_types::Duration { seconds: 1, nanos: 500_000_000 }));

        assert_eq!(m.devcontainers.len(), 1);
        let d = &m.devcontainers[0];
        assert_eq!(d.id.as_ref(), dc.as_bytes());
        assert_eq!(
            (d.name.as_str(), d.workspace_folder.as_str(), d.config_path.as_str()),
            ("dc", "/workspaces/app", ".devcontainer.json")
        );
        assert_eq!(d.subagent_id, None);

        let derp = m.derp_map.expect("derp map");
        let region = &derp.regions[&999];
        assert_eq!((region.region_code.as_str(), region.embedded_relay), ("coder", true));
        let node = &region.nodes[0];
        assert_eq!((node.host_name.as_str(), node.stun_port, node.derp_port), ("coder.example.com", -1, 443));
        assert!(node.force_http && node.can_port_80);
        assert_eq!(derp.home_params.expect("home").region_score.get(&999), Some(&0.5));
    }

    #[tokio::test]
    async fn subdomain_names_and_port_proxy_follow_the_app_hostname() {
        let (f, ..) = rich_agent().await;
        let config = AgentApiConfig {
            access_url: "https://coder.example.com:8443".into(),
            app_hostname: "*.apps.example.com".into(),
            git_auth_configs: 2,
            disable_direct_connections: true,
            ..AgentApiConfig::default()
        };
        let api = AgentApi::new(f.store.clone(), config);
        let m = get_manifest(&api, &f.session, pb::GetManifestRequest {}).await.expect("manifest");
        assert_eq!(m.vs_code_port_proxy_uri, "https://{{port}}--main--dev--carol.apps.example.com:8443");
        assert_eq!(m.apps[0].subdomain_name, "8080--main--dev--carol");
        assert_eq!(m.apps[1].subdomain_name, "web--dev--carol");
        assert_eq!((m.git_auth_configs, m.disable_direct_connections, m.derp_force_websockets), (2, true, false));
    }

    #[tokio::test]
    async fn no_derp_map_is_an_empty_map_and_lists_are_per_agent() {
        let f = fixture().await;
        let (other, _) = another_agent(&f.store, "bob").await;
        f.store.admin().add_app(other.id, &NewApp { slug: "theirs".into(), ..Default::default() }).await.expect("app");
        let m = get_manifest(&f.api, &f.session, pb::GetManifestRequest {}).await.expect("manifest");
        assert!(m.apps.is_empty() && m.scripts.is_empty() && m.metadata.is_empty() && m.devcontainers.is_empty());
        assert!(m.environment_variables.is_empty());
        assert_eq!(m.derp_map, Some(empty_derp_map()));
        assert_eq!(m.directory, "/home/coder");
    }

    /// With the tailnet's poller attached, the manifest's DERP map is the watched one: after the poller's first read,
    /// a GetManifest reads the agent's four lists and nothing of the site configuration.
    #[tokio::test]
    async fn the_watched_derp_map_is_served_without_a_query() {
        let f = fixture().await;
        f.store.admin().set_derp_map(DERP_JSON).await.expect("derp");
        let stop = tokio_util::sync::CancellationToken::new();
        let maps =
            crate::tailnet::derp_map::DerpMaps::new(f.store.clone(), std::time::Duration::from_secs(60), stop.clone());
        let api = AgentApi::new(f.store.clone(), AgentApiConfig::default()).with_derp_maps(&maps);
        let mut watched = maps.subscribe();
        watched.wait_for(Option::is_some).await.expect("the poller's first read");
        let before = f.store.queries().snapshot();
        let m = get_manifest(&api, &f.session, pb::GetManifestRequest {}).await.expect("manifest");
        let after = f.store.queries().snapshot();
        assert_eq!(after.since(&before).total(), 4, "the manifest read more than the agent's four lists");
        assert_eq!(m.derp_map.expect("derp map").regions[&999].region_code, "coder");
        stop.cancel();
    }

    /// Before the poller's first read, with nothing stored, the manifest carries the default map (the embedded
    /// relay), not an empty one: an agent that connects in the server's first instant must still be reachable.
    #[tokio::test(flavor = "current_thread")]
    async fn the_default_derp_map_is_served_before_the_first_read() {
        let f = fixture().await;
        let stop = tokio_util::sync::CancellationToken::new();
        let mut default = empty_derp_map();
        let region = crate::proto::tailnet::v2::derp_map::Region {
            region_id: 999,
            region_code: "coder".into(),
            ..Default::default()
        };
        default.regions.insert(999, region);
        let maps = crate::tailnet::derp_map::DerpMaps::with_default(
            f.store.clone(),
            std::time::Duration::from_secs(60),
            Some(std::sync::Arc::new(default)),
            stop.clone(),
        );
        // On this one thread the poller cannot run before get_manifest takes its view of the watched map.
        let api = AgentApi::new(f.store.clone(), AgentApiConfig::default()).with_derp_maps(&maps);
        let m = get_manifest(&api, &f.session, pb::GetManifestRequest {}).await.expect("manifest");
        assert_eq!(m.derp_map.expect("derp map").regions[&999].region_code, "coder");
        stop.cancel();
    }

    #[test]
    fn unknown_enums_and_bad_json_are_errors() {
        let app = App {
            id: Uuid::nil(),
            slug: "x".into(),
            display_name: String::new(),
            icon: String::new(),
            command: None,
            url: None,
            healthcheck_url: String::new(),
            healthcheck_interval: 0,
            healthcheck_threshold: 0,
            health: "disabled".into(),
            subdomain: false,
            sharing_level: "everyone".into(),
            external: false,
            display_order: 0,
            hidden: false,
            open_in: "slim-window".into(),
            display_group: None,
            tooltip: String::new(),
        };
        let names = Names { agent: "a", workspace: "w", owner: "o" };
        let err = app_to_proto(&app, &names, &AgentApiConfig::default()).expect_err("sharing level");
        assert_eq!(err, r#"unknown app sharing level: "everyone""#);
        assert!(parse_derp_map("{").is_err());
        assert_eq!(parse_derp_map(r#"{"Regions":{"1":null}}"#).expect("null region").regions.len(), 0);
        assert_eq!(scheme_and_port("http://[::1]:3000/x"), ("http", Some("3000")));
        assert_eq!(scheme_and_port("https://coder.example.com"), ("https", None));
    }

    /// The names and durations as Coder's helpers make them (`appurl.PortRegex`, `db2sdk.AppSubdomain`,
    /// `durationpb.New`, Go's URL scheme), where a plausible reading of them would differ.
    #[test]
    fn names_and_durations_follow_coders_helpers() {
        let names = Names { agent: "main", workspace: "dev", owner: "carol" };
        let app = |slug: &str| App {
            id: Uuid::nil(),
            slug: slug.into(),
            display_name: "Display".into(),
            icon: String::new(),
            command: None,
            url: None,
            healthcheck_url: String::new(),
            healthcheck_interval: 0,
            healthcheck_threshold: 0,
            health: "disabled".into(),
            subdomain: true,
            sharing_level: "owner".into(),
            external: false,
            display_order: 0,
            hidden: false,
            open_in: "slim-window".into(),
            display_group: None,
            tooltip: String::new(),
        };
        let host = "*.apps.example.com";
        for (slug, want) in [
            ("8080", "8080--main--dev--carol"),
            ("8443s", "8443s--main--dev--carol"),
            ("80", "80--dev--carol"),
            ("12345", "12345--dev--carol"),
            ("+808", "+808--dev--carol"),
            ("", "Display--dev--carol"),
        ] {
            assert_eq!(subdomain_name(&app(slug), &names, host), want, "slug {slug:?}");
        }
        assert_eq!(subdomain_name(&app("8080"), &names, ""), "");

        assert_eq!(nanoseconds(-1_500_000_000), prost_types::Duration { seconds: -1, nanos: -500_000_000 });
        assert_eq!(nanoseconds(1_500_000_000), prost_types::Duration { seconds: 1, nanos: 500_000_000 });
        assert_eq!(nanoseconds(-10), prost_types::Duration { seconds: 0, nanos: -10 });

        let config = AgentApiConfig {
            access_url: "HTTPS://coder.example.com:8443".into(),
            app_hostname: host.into(),
            ..AgentApiConfig::default()
        };
        assert_eq!(vscode_port_proxy_uri(&config, &names), "https://{{port}}--main--dev--carol.apps.example.com:8443");
    }

    /// A `null` value in the agent's environment is an empty string, as Go's json.Unmarshal makes it.
    #[tokio::test]
    async fn a_null_environment_value_is_empty() {
        let f = fixture().await;
        let admin = f.store.admin();
        let (build, _) = admin.create_demo_agent("dave", "dev", "seed").await.expect("build");
        let agent = admin
            .create_agent(
                build.resource_id,
                &NewAgent {
                    name: "main".into(),
                    environment_variables: Some(r#"{"A":null,"B":"x"}"#.into()),
                    ..Default::default()
                },
            )
            .await
            .expect("agent");
        let session = session_for(&f.store, &agent).await;
        let m = get_manifest(&f.api, &session, pb::GetManifestRequest {}).await.expect("manifest");
        assert_eq!(m.environment_variables, HashMap::from([("A".into(), String::new()), ("B".into(), "x".into())]));
    }

    /// appurl's own test cases (appurl_test.go, TestCompileHostnamePattern), accepted and refused alike.
    #[test]
    fn wildcard_access_urls_are_checked_as_coderd_checks_them() {
        for ok in ["", "*.hi.com:8080", "*.hi", "*.hi.com", "*a.hi.com", "*-test.hi.com", "*--apps.DEV.coder.com"] {
            assert_eq!(check_wildcard_access_url(ok), Ok(()), "{ok:?}");
        }
        for (bad, why) in [
            ("http://*.hi.com", "must not contain a scheme"),
            ("https://*.hi.com", "must not contain a scheme"),
            (".hi.com", "must not start or end with a period"),
            ("hi.com.", "must not start or end with a period"),
            ("hi", "must contain at least two labels"),
            ("hi.com", "must contain exactly one asterisk"),
            ("**.hi.com", "must contain exactly one asterisk"),
            ("hi.*.com", "must only contain an asterisk at the beginning"),
            ("*.h_i.com", "contains invalid label"),
            ("*.hi-.com", "contains invalid label"),
            ("*.-hi.com", "contains invalid label"),
        ] {
            let err = check_wildcard_access_url(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn git_providers_are_codersdks() {
        let types = ["github", "slack", "gitlab", "jfrog", "bitbucket", "gitea", "GitHub", "", "azure-devops-entra"];
        assert_eq!(git_auth_configs(&types), 5);
        assert_eq!(git_auth_configs::<&str>(&[]), 0);
    }
}
