//! The rules a definition must follow: Coder's, each with the place it comes from, and a few of agentwire's own,
//! each saying why. Every finding names its field, which `mod.rs` turns into a line.
//!
//! Sources, all in the Go module cache: `provider/` is terraform-provider-coder v2.13.1 (the version coder v2.30.0's
//! go.mod pins), what a template is checked against at `terraform plan`; the other paths are coder v2.30.0, what
//! coderd and the agent then do with the values.

use std::collections::HashSet;

use super::cron;
use super::locate::FieldPath;
use super::model::*;

/// A rule broken, or (a warning) a value that is valid but likely not what was meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub path: FieldPath,
    pub message: String,
    pub warning: bool,
}

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn error(&mut self, path: FieldPath, message: impl Into<String>) {
        self.0.push(Finding { path, message: message.into(), warning: false });
    }

    fn warn(&mut self, path: FieldPath, message: impl Into<String>) {
        self.0.push(Finding { path, message: message.into(), warning: true });
    }

    fn one_of(&mut self, path: FieldPath, value: &str, allowed: &[&str]) {
        if !allowed.contains(&value) {
            self.error(path, format!("{value:?} is not one of {}", quoted(allowed)));
        }
    }

    fn required(&mut self, path: FieldPath, value: &str) {
        if value.is_empty() {
            self.error(path, "is required");
        }
    }

    /// Coder's columns are `varchar(n)`: n characters.
    fn max_chars(&mut self, path: FieldPath, value: &str, max: usize) {
        let n = value.chars().count();
        if n > max {
            self.error(path, format!("is {n} characters long, at most {max} fit"));
        }
    }

    /// The provider counts Go's `len`: bytes.
    fn max_bytes(&mut self, path: FieldPath, value: &str, max: usize) {
        if value.len() > max {
            self.error(path, format!("is {} bytes long, at most {max} are allowed", value.len()));
        }
    }

    fn range(&mut self, path: FieldPath, value: i64, min: i64, max: i64) {
        if value < min || value > max {
            self.error(path, format!("{value} is not between {min} and {max}"));
        }
    }

    fn unique<'a>(&mut self, items: impl Iterator<Item = (FieldPath, &'a str)>, what: &str) {
        let mut seen = HashSet::new();
        for (path, name) in items {
            if !name.is_empty() && !seen.insert(name) {
                self.error(path, format!("duplicate {what} {name:?}"));
            }
        }
    }
}

fn quoted(values: &[&str]) -> String {
    values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", ")
}

/// coder v2.30.0 provisioner/regexes.go:30 (AppSlugRegex), the same as provider/app.go:24:
/// `^[a-z0-9](-?[a-z0-9])*$`, a hostname label without doubled, leading or trailing hyphens.
fn is_app_slug(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter().all(|&c| alnum(c) || c == b'-')
        && !s.contains("--")
}

/// provider/env.go:179-181 (coder_env's name): `^[a-zA-Z_][a-zA-Z0-9_]*$`.
fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The largest value of the `integer` columns Coder keeps these numbers in (coderd/database/dump.sql), and of the
/// int32 the provisioner carries them as.
const INT32_MAX: i64 = i32::MAX as i64;

pub(crate) fn validate(spec: &AgentSpec) -> Vec<Finding> {
    let mut f = Findings::default();
    let root = FieldPath::default();
    agent(&mut f, &root, spec);
    for (i, m) in spec.metadata.iter().enumerate() {
        metadata(&mut f, &root.key("metadata").index(i), m);
    }
    // provider/agent.go:364-382: "duplicate agent metadata key".
    f.unique(
        spec.metadata.iter().enumerate().map(|(i, m)| (root.key("metadata").index(i).key("key"), m.key.as_str())),
        "agent metadata key",
    );
    for (i, s) in spec.scripts.iter().enumerate() {
        script(&mut f, &root.key("scripts").index(i), s);
    }
    // agentwire's rule, not Coder's: a script's display name names its log source, and an update keeps a script (its
    // id, log source and timings) by that name, so two of the same name would be ambiguous.
    f.unique(
        spec.scripts
            .iter()
            .enumerate()
            .map(|(i, s)| (root.key("scripts").index(i).key("display_name"), s.display_name.as_str())),
        "script display name",
    );
    for (i, a) in spec.apps.iter().enumerate() {
        app(&mut f, &root.key("apps").index(i), a);
    }
    // coder v2.30.0 provisioner/terraform/resources.go:525-526 and coderd/provisionerdserver/provisionerdserver.go:2981.
    f.unique(
        spec.apps.iter().enumerate().map(|(i, a)| (root.key("apps").index(i).key("slug"), a.slug.as_str())),
        "app slug",
    );
    if let Some(rm) = &spec.resources_monitoring {
        monitors(&mut f, &root.key("resources_monitoring"), rm);
    }
    f.0
}

fn agent(f: &mut Findings, root: &FieldPath, spec: &AgentSpec) {
    if let Some(os) = &spec.os {
        // provider/agent.go:126-131.
        f.one_of(root.key("os"), os, &["linux", "darwin", "windows"]);
    }
    if let Some(arch) = &spec.arch {
        // provider/agent.go:99-104.
        f.one_of(root.key("arch"), arch, &["amd64", "armv7", "arm64"]);
    }
    if let Some(t) = spec.connection_timeout {
        // provider/agent.go:152-158 (at least 0); int32 in provisioner/terraform/resources.go:53.
        f.range(root.key("connection_timeout"), t, 0, INT32_MAX);
    }
    // coderd/database/dump.sql:1849: directory varchar(4096).
    f.max_chars(root.key("dir"), &spec.dir, 4096);
    for name in spec.env.keys() {
        // coder_env's rule (provider/env.go:179-181) for every variable: `coder_agent.env` takes any key, but the
        // one `env` table here stands for both, and a name outside it cannot be set in a shell anyway.
        if !is_env_name(name) {
            f.error(root.key("env").key(name), "must be a valid environment variable name (^[a-zA-Z_][a-zA-Z0-9_]*$)");
        }
    }
}

fn metadata(f: &mut Findings, at: &FieldPath, m: &MetadataSpec) {
    // provider/agent.go:187-192 and 199-206: key and script are required.
    f.required(at.key("key"), &m.key);
    f.required(at.key("script"), &m.script);
    // coderd/database/dump.sql:2506-2507: display_name and key varchar(127).
    f.max_chars(at.key("key"), &m.key, 127);
    f.max_chars(at.key("display_name"), &m.display_name, 127);
    match m.interval {
        // provider/agent.go:214-219: required.
        None => f.error(at.key("interval"), "is required (seconds between collections; 0 collects once)"),
        // agentwire's rule: the agent waits `interval` seconds after a collection (agent/agent.go:648), so a
        // negative one means nothing; Coder does not check it.
        Some(i) if i < 0 => f.error(at.key("interval"), format!("{i} is negative: give seconds, 0 to collect once")),
        Some(_) => {}
    }
    if let Some(t) = m.timeout {
        // agentwire's rule, as for the interval: 0 means the interval (agent/agent.go:653-667), negative nothing.
        if t < 0 {
            f.error(at.key("timeout"), format!("{t} is negative: give seconds, or 0 for the interval"));
        }
    }
    // int32 in coderd/database/dump.sql:2514 (display_order integer).
    f.range(at.key("order"), m.order, i64::from(i32::MIN), INT32_MAX);
}

fn script(f: &mut Findings, at: &FieldPath, s: &ScriptSpec) {
    // provider/script.go:72-77 and 92-97: display_name and script are required.
    f.required(at.key("display_name"), &s.display_name);
    f.required(at.key("script"), &s.script);
    // coderd/database/dump.sql:2481: the log source it names is varchar(127).
    f.max_chars(at.key("display_name"), &s.display_name, 127);
    // provider/script.go:55-57.
    if !s.run_on_start && !s.run_on_stop && s.cron.is_empty() {
        f.error(at.clone(), "at least one of \"run_on_start\", \"run_on_stop\", or \"cron\" must be set");
    }
    // provider/script.go:58-60.
    if s.start_blocks_login && !s.run_on_start {
        f.error(at.key("start_blocks_login"), "\"start_blocks_login\" can only be set if \"run_on_start\" is \"true\"");
    }
    if !s.cron.is_empty() {
        match cron::check(&s.cron) {
            Ok(None) => {}
            Ok(Some(warning)) => f.warn(at.key("cron"), warning),
            Err(e) => f.error(at.key("cron"), format!("{:?} is not a valid cron expression: {e}", s.cron)),
        }
    }
    if let Some(t) = s.timeout {
        // provider/script.go:132-138: at least 1 when given (left out, 0: no limit); timeout_seconds is an integer
        // column.
        f.range(at.key("timeout"), t, 1, INT32_MAX);
    }
}

fn app(f: &mut Findings, at: &FieldPath, a: &AppSpec) {
    // provisioner/regexes.go:30 via provisionerdserver.go:2977 and provider/app.go:110-121.
    if a.slug.is_empty() {
        f.error(at.key("slug"), "is required");
    } else if !is_app_slug(&a.slug) {
        f.error(
            at.key("slug"),
            format!(
                "{:?} does not match ^[a-z0-9](-?[a-z0-9])*$: lower-case letters and digits, with single hyphens \
                 between them",
                a.slug
            ),
        );
    }
    // provider/app.go:28 and 134: "display name is too long (max 64 characters)", counted in bytes.
    f.max_bytes(at.key("display_name"), &a.display_name, 64);
    // coderd/database/dump.sql:1903: icon varchar(256).
    f.max_chars(at.key("icon"), &a.icon, 256);
    // provider/app.go:236 and 288.
    f.max_bytes(at.key("group"), &a.group, 64);
    f.max_bytes(at.key("tooltip"), &a.tooltip, 2048);
    // provider/app.go:89 and 184: command and url conflict.
    if a.url.is_some() && a.command.is_some() {
        f.error(at.key("command"), "conflicts with \"url\": an app is a URL or a command");
    }
    if a.external {
        // provider/app.go:193: external conflicts with healthcheck, command, subdomain and share.
        let conflicting = [
            ("healthcheck", a.healthcheck.is_some()),
            ("command", a.command.is_some()),
            ("subdomain", a.subdomain),
            ("share", a.share.is_some()),
        ];
        for (field, set) in conflicting {
            if set {
                f.error(at.key(field), "conflicts with \"external\": an external app is opened as is");
            }
        }
    } else if a.healthcheck.is_some() && a.command.is_some() {
        // provider/app.go:201: healthcheck conflicts with command.
        f.error(at.key("healthcheck"), "conflicts with \"command\": only URL apps are health-checked");
    }
    if let Some(share) = &a.share {
        // provider/app.go:163-175. The database also knows "organization" (dump.sql:217), which the provider
        // does not accept.
        f.one_of(at.key("share"), share, &["owner", "authenticated", "public"]);
    }
    if let Some(open_in) = &a.open_in {
        // provider/app.go:263-275.
        f.one_of(at.key("open_in"), open_in, &["tab", "slim-window"]);
    }
    // int32 in coderd/database/dump.sql (display_order integer).
    f.range(at.key("order"), a.order, i64::from(i32::MIN), INT32_MAX);
    if let Some(h) = &a.healthcheck {
        let at = at.key("healthcheck");
        // provider/app.go:204-220: url, interval and threshold are all required; no defaults.
        f.required(at.key("url"), &h.url);
        // agent/apphealth.go:168: the agent runs a check only when interval > 0 and threshold > 0; otherwise the app
        // would stay `initializing` for ever. Both are integer columns (dump.sql:1907-1908).
        for (field, value) in [("interval", h.interval), ("threshold", h.threshold)] {
            match value {
                None => f.error(at.key(field), "is required"),
                Some(v) => f.range(at.key(field), v, 1, INT32_MAX),
            }
        }
    }
}

fn monitors(f: &mut Findings, at: &FieldPath, rm: &ResourcesMonitoring) {
    if let Some(m) = &rm.memory {
        let at = at.key("memory");
        // provider/agent.go:298-310: enabled and threshold required, threshold 0 to 100.
        if m.enabled.is_none() {
            f.error(at.key("enabled"), "is required");
        }
        match m.threshold {
            None => f.error(at.key("threshold"), "is required (percent, 0 to 100)"),
            Some(t) => f.range(at.key("threshold"), t, 0, 100),
        }
    }
    for (i, v) in rm.volume.iter().enumerate() {
        let at = at.key("volume").index(i);
        // provider/agent.go:321-340: a path, non-empty and absolute.
        if v.path.is_empty() {
            f.error(at.key("path"), "volume path must not be empty");
        } else if !v.path.starts_with('/') {
            f.error(at.key("path"), format!("{:?}: volume path must be an absolute path", v.path));
        }
        // provider/agent.go:342-353.
        if v.enabled.is_none() {
            f.error(at.key("enabled"), "is required");
        }
        match v.threshold {
            None => f.error(at.key("threshold"), "is required (percent, 0 to 100)"),
            Some(t) => f.range(at.key("threshold"), t, 0, 100),
        }
    }
    // provider/agent.go:410-425: "duplicate volume path".
    f.unique(
        rm.volume.iter().enumerate().map(|(i, v)| (at.key("volume").index(i).key("path"), v.path.as_str())),
        "volume path",
    );
}

#[cfg(test)]
mod tests {
    use super::{is_app_slug, is_env_name};

    #[test]
    fn app_slugs_as_coders_regex() {
        // The cases of coder v2.30.0 provisioner/regexes_test.go for AppSlugRegex.
        for ok in [
            "a", "1", "a1", "1a", "1a1", "1-1", "a-a", "ab-cd", "ab-cd-ef", "abc-123", "a-123", "abc-1", "ab-c", "a-bc",
        ] {
            assert!(is_app_slug(ok), "{ok}");
        }
        let invalid =
            ["", "-", "-abc", "abc-", "ab--cd", "a--bc", "ab--c", "_", "ab_cd", "_abc", "abc_", " ", "abc ", " abc"];
        for bad in invalid.into_iter().chain(["ab cd", "A", "A1", "1A"]) {
            assert!(!is_app_slug(bad), "{bad}");
        }
    }

    #[test]
    fn env_names_as_coder_env() {
        for ok in ["A", "_", "_A1", "PATH", "a_b"] {
            assert!(is_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "É"] {
            assert!(!is_env_name(bad), "{bad}");
        }
    }
}
