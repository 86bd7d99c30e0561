//! Parsing, every rule (each error naming its field and line), and Coder's defaults.

use super::*;

/// The one problem of `text`: (field, line, message).
fn problem(text: &str) -> (String, usize, String) {
    let problems = problems(text);
    assert_eq!(problems.len(), 1, "one problem expected: {problems:#?}");
    let p = &problems[0];
    (p.field.clone(), p.line, p.message.clone())
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text, "test.toml") {
        Ok(parsed) => panic!("accepted: {:#?}", parsed.spec),
        Err(e) => e.problems().to_vec(),
    }
}

/// Asserts the one problem is at `field` on `line` and its message contains `needle`.
#[track_caller]
fn rejects(text: &str, field: &str, line: usize, needle: &str) {
    let (got_field, got_line, message) = problem(text);
    assert_eq!((got_field.as_str(), got_line), (field, line), "{message}");
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

const SCRIPT: &str = "[[scripts]]\ndisplay_name = \"s\"\nscript = \"true\"\n";
const APP: &str = "[[apps]]\nslug = \"web\"\nurl = \"http://127.0.0.1:1\"\n";

#[test]
fn the_example_passes_and_has_every_part() {
    let parsed = parse(EXAMPLE, "examples/agent.toml").expect("the example is valid");
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let s = &parsed.spec;
    assert!(s.scripts.iter().any(|s| s.run_on_start && s.start_blocks_login));
    assert!(s.scripts.iter().any(|s| s.run_on_stop));
    assert!(s.scripts.iter().any(|s| !s.cron.is_empty()));
    assert_eq!(s.metadata.len(), 2);
    assert!(s.apps.iter().any(|a| a.healthcheck.is_some() && a.url.is_some()));
    assert!(s.apps.iter().any(|a| a.command.is_some()));
    assert!(!s.env.is_empty() && s.display_apps.is_some() && !s.dir.is_empty() && !s.motd_file.is_empty());
    let rm = s.resources_monitoring.as_ref().expect("monitors");
    assert!(rm.memory.is_some() && !rm.volume.is_empty());
    assert!(!s.troubleshooting_url.is_empty());
}

#[test]
fn an_empty_file_is_an_agent_with_coders_defaults() {
    let d = definition(&parse("", "empty").unwrap().spec);
    assert_eq!(d.connection_timeout_seconds, 120);
    assert_eq!(d.display_apps, ["vscode", "ssh_helper", "port_forwarding_helper", "web_terminal"]);
    assert_eq!(d.environment_variables, None);
    assert!(["amd64", "armv7", "arm64"].contains(&d.architecture.as_str()));
    assert!(["linux", "darwin", "windows"].contains(&d.operating_system.as_str()));
    assert!(d.apps.is_empty() && d.scripts.is_empty() && d.metadata.is_empty() && d.memory_monitor.is_none());
}

#[test]
fn defaults_and_conversions_follow_coderd() {
    let text = r#"
env = { B = "2", A = "1" }
[display_apps]
vscode_insiders = true
web_terminal = false
[[apps]]
slug = "web"
url = "http://127.0.0.1:1"
group = ""
[apps.healthcheck]
url = "http://127.0.0.1:1/h"
interval = 3
threshold = 4
[[apps]]
slug = "cmd"
command = "top"
display_name = "Top"
share = "public"
open_in = "tab"
group = "g"
[[metadata]]
key = "k"
script = "echo"
interval = 10
"#;
    let d = definition(&parse(text, "t").unwrap().spec);
    assert_eq!(d.environment_variables.as_deref(), Some(r#"{"A":"1","B":"2"}"#));
    assert_eq!(d.display_apps, ["vscode", "vscode_insiders", "ssh_helper", "port_forwarding_helper"]);
    let (web, cmd) = (&d.apps[0], &d.apps[1]);
    assert_eq!(
        (web.display_name.as_str(), web.sharing_level.as_str(), web.open_in.as_str()),
        ("web", "owner", "slim-window")
    );
    assert_eq!(
        (web.healthcheck_url.as_str(), web.healthcheck_interval, web.healthcheck_threshold),
        ("http://127.0.0.1:1/h", 3, 4)
    );
    assert_eq!((web.command.as_deref(), web.display_group.as_deref()), (None, None));
    assert_eq!((cmd.display_name.as_str(), cmd.sharing_level.as_str(), cmd.open_in.as_str()), ("Top", "public", "tab"));
    assert_eq!(
        (cmd.url.as_deref(), cmd.command.as_deref(), cmd.display_group.as_deref()),
        (None, Some("top"), Some("g"))
    );
    assert_eq!((cmd.healthcheck_url.as_str(), cmd.healthcheck_interval), ("", 0));
    assert_eq!((d.metadata[0].interval, d.metadata[0].timeout), (10, 0), "seconds, as coderd stores them");
}

#[test]
fn toml_errors_name_the_line() {
    let (field, line, message) = problem("dir = \"/a\"\nmotd_file = \n");
    assert_eq!((field.as_str(), line), ("", 2), "{message}");
    let (_, line, _) = problem("[[apps]]\nslug = \"a\"\nslug = \"b\"\n");
    assert_eq!(line, 3, "a duplicate key");
}

#[test]
fn unknown_fields_are_refused_where_they_are() {
    rejects("dir = \"/a\"\nstartup_script = \"x\"\n", "startup_script", 2, "unknown field `startup_script`");
    rejects(
        &format!("{APP}[apps.healthcheck]\nurl = \"u\"\ninterval = 1\nthreshhold = 2\n"),
        "apps[0].healthcheck.threshhold",
        7,
        "unknown field `threshhold`",
    );
    rejects(
        &format!(
            "{SCRIPT}run_on_start = true\n[[scripts]]\ndisplay_name = \"t\"\nrun_on_stop = true\nscirpt = \"x\"\n"
        ),
        "scripts[1].scirpt",
        8,
        "unknown field",
    );
    rejects("[display_apps]\nvscod = true\n", "display_apps.vscod", 2, "unknown field");
}

#[test]
fn wrong_types_are_refused_where_they_are() {
    rejects("connection_timeout = \"120\"\n", "connection_timeout", 1, "invalid type");
    rejects(&format!("{SCRIPT}run_on_start = \"yes\"\n"), "scripts[0].run_on_start", 4, "invalid type");
    rejects("[env]\nA = 1\n", "env.A", 2, "invalid type");
}

#[test]
fn agent_rules() {
    rejects("os = \"plan9\"\n", "os", 1, r#""plan9" is not one of "linux", "darwin", "windows""#);
    rejects("\narch = \"x86_64\"\n", "arch", 2, r#"is not one of "amd64", "armv7", "arm64""#);
    rejects("connection_timeout = -1\n", "connection_timeout", 1, "-1 is not between 0 and");
    rejects(&format!("dir = \"{}\"\n", "d".repeat(4097)), "dir", 1, "at most 4096");
    rejects("[env]\nMY-VAR = \"2\"\n", "env.MY-VAR", 2, "valid environment variable name");
    rejects("[env]\nOK = \"1\"\n\"MY VAR\" = \"2\"\n", "env.\"MY VAR\"", 3, "valid environment variable name");
}

#[test]
fn metadata_rules() {
    let item = |body: &str| format!("[[metadata]]\n{body}");
    rejects(&item("script = \"x\"\ninterval = 1\n"), "metadata[0].key", 1, "is required");
    rejects(&item("key = \"k\"\ninterval = 1\n"), "metadata[0].script", 1, "is required");
    rejects(&item("key = \"k\"\nscript = \"x\"\n"), "metadata[0].interval", 1, "is required");
    rejects(&item("key = \"k\"\nscript = \"x\"\ninterval = -5\n"), "metadata[0].interval", 4, "negative");
    rejects(&item("key = \"k\"\nscript = \"x\"\ninterval = 5\ntimeout = -1\n"), "metadata[0].timeout", 5, "negative");
    rejects(
        &item(&format!("key = \"{}\"\nscript = \"x\"\ninterval = 5\n", "k".repeat(128))),
        "metadata[0].key",
        2,
        "at most 127",
    );
    let two = format!(
        "{}{}",
        item("key = \"k\"\nscript = \"x\"\ninterval = 5\n"),
        item("key = \"k\"\nscript = \"y\"\ninterval = 5\n")
    );
    rejects(&two, "metadata[1].key", 6, "duplicate agent metadata key \"k\"");
}

#[test]
fn script_rules() {
    let script = |body: &str| format!("[[scripts]]\n{body}");
    rejects(&script("script = \"x\"\nrun_on_start = true\n"), "scripts[0].display_name", 1, "is required");
    rejects(&script("display_name = \"s\"\nrun_on_start = true\n"), "scripts[0].script", 1, "is required");
    rejects(
        &script("display_name = \"s\"\nscript = \"x\"\n"),
        "scripts[0]",
        1,
        "at least one of \"run_on_start\", \"run_on_stop\", or \"cron\"",
    );
    rejects(
        &script("display_name = \"s\"\nscript = \"x\"\nrun_on_stop = true\nstart_blocks_login = true\n"),
        "scripts[0].start_blocks_login",
        5,
        "can only be set if \"run_on_start\"",
    );
    rejects(
        &script("display_name = \"s\"\nscript = \"x\"\ncron = \"@hourly\"\n"),
        "scripts[0].cron",
        4,
        "parser does not accept descriptors",
    );
    rejects(
        &script("display_name = \"s\"\nscript = \"x\"\ncron = \"0 61 * * * *\"\n"),
        "scripts[0].cron",
        4,
        "end of range (61) above maximum (59)",
    );
    rejects(
        &script("display_name = \"s\"\nscript = \"x\"\nrun_on_start = true\ntimeout = 0\n"),
        "scripts[0].timeout",
        5,
        "0 is not between 1 and",
    );
    let two = format!(
        "{}{}",
        script("display_name = \"s\"\nscript = \"x\"\nrun_on_start = true\n"),
        script("display_name = \"s\"\nscript = \"y\"\nrun_on_stop = true\n")
    );
    rejects(&two, "scripts[1].display_name", 6, "duplicate script display name \"s\"");
}

#[test]
fn a_unix_schedule_is_a_warning_with_its_line() {
    let parsed = parse("[[scripts]]\ndisplay_name = \"s\"\nscript = \"x\"\ncron = \"*/5 * * * *\"\n", "t").unwrap();
    assert_eq!(parsed.warnings.len(), 1);
    assert_eq!((parsed.warnings[0].field.as_str(), parsed.warnings[0].line), ("scripts[0].cron", 4));
}

#[test]
fn app_rules() {
    let app = |body: &str| format!("[[apps]]\n{body}");
    rejects(&app("url = \"u\"\n"), "apps[0].slug", 1, "is required");
    for bad in ["Web", "web_app", "-web", "web-", "we--b", "w b"] {
        rejects(&app(&format!("slug = \"{bad}\"\n")), "apps[0].slug", 2, "does not match ^[a-z0-9](-?[a-z0-9])*$");
    }
    rejects(&format!("{APP}{APP}"), "apps[1].slug", 5, "duplicate app slug \"web\"");
    rejects(&format!("{APP}command = \"top\"\n"), "apps[0].command", 4, "conflicts with \"url\"");
    rejects(
        &format!("{APP}display_name = \"{}\"\n", "é".repeat(33)),
        "apps[0].display_name",
        4,
        "66 bytes long, at most 64",
    );
    rejects(&format!("{APP}group = \"{}\"\n", "g".repeat(65)), "apps[0].group", 4, "at most 64");
    rejects(&format!("{APP}tooltip = \"{}\"\n", "t".repeat(2049)), "apps[0].tooltip", 4, "at most 2048");
    rejects(&format!("{APP}icon = \"{}\"\n", "i".repeat(257)), "apps[0].icon", 4, "at most 256");
    rejects(
        &format!("{APP}share = \"organization\"\n"),
        "apps[0].share",
        4,
        r#"is not one of "owner", "authenticated", "public""#,
    );
    rejects(&format!("{APP}open_in = \"window\"\n"), "apps[0].open_in", 4, r#"is not one of "tab", "slim-window""#);
    for (field, value) in [("subdomain", "true"), ("share", "\"owner\"")] {
        rejects(
            &format!("{APP}external = true\n{field} = {value}\n"),
            &format!("apps[0].{field}"),
            5,
            "conflicts with \"external\"",
        );
    }
    rejects(
        &app("slug = \"t\"\ncommand = \"top\"\n[apps.healthcheck]\nurl = \"u\"\ninterval = 1\nthreshold = 1\n"),
        "apps[0].healthcheck",
        4,
        "conflicts with \"command\"",
    );
}

#[test]
fn healthcheck_rules() {
    let check = |body: &str| format!("{APP}[apps.healthcheck]\n{body}");
    rejects(&check("interval = 1\nthreshold = 1\n"), "apps[0].healthcheck.url", 4, "is required");
    rejects(&check("url = \"u\"\nthreshold = 1\n"), "apps[0].healthcheck.interval", 4, "is required");
    rejects(&check("url = \"u\"\ninterval = 1\n"), "apps[0].healthcheck.threshold", 4, "is required");
    rejects(
        &check("url = \"u\"\ninterval = 0\nthreshold = 1\n"),
        "apps[0].healthcheck.interval",
        6,
        "0 is not between 1 and",
    );
    rejects(
        &check("url = \"u\"\ninterval = 1\nthreshold = 0\n"),
        "apps[0].healthcheck.threshold",
        7,
        "0 is not between 1 and",
    );
}

#[test]
fn monitor_rules() {
    rejects(
        "[resources_monitoring.memory]\nenabled = true\nthreshold = 101\n",
        "resources_monitoring.memory.threshold",
        3,
        "101 is not between 0 and 100",
    );
    rejects("[resources_monitoring.memory]\nthreshold = 10\n", "resources_monitoring.memory.enabled", 1, "is required");
    let volume = |body: &str| format!("[[resources_monitoring.volume]]\n{body}");
    rejects(
        &volume("path = \"data\"\nenabled = true\nthreshold = 1\n"),
        "resources_monitoring.volume[0].path",
        2,
        "absolute path",
    );
    rejects(&volume("enabled = true\nthreshold = 1\n"), "resources_monitoring.volume[0].path", 1, "must not be empty");
    rejects(
        &volume("path = \"/\"\nenabled = true\nthreshold = -1\n"),
        "resources_monitoring.volume[0].threshold",
        4,
        "not between 0 and 100",
    );
    let two = format!(
        "{}{}",
        volume("path = \"/\"\nenabled = true\nthreshold = 1\n"),
        volume("path = \"/\"\nenabled = false\nthreshold = 2\n")
    );
    rejects(&two, "resources_monitoring.volume[1].path", 6, "duplicate volume path \"/\"");
}

#[test]
fn every_problem_is_reported_in_line_order() {
    let text = "os = \"plan9\"\n[[apps]]\nslug = \"Bad\"\n[[scripts]]\nscript = \"x\"\n";
    let got: Vec<(String, usize)> = problems(text).into_iter().map(|p| (p.field, p.line)).collect();
    assert_eq!(
        got,
        [("os", 1), ("apps[0].slug", 3), ("scripts[0].display_name", 4), ("scripts[0]", 4)]
            .map(|(f, l)| (f.to_owned(), l))
    );
    let shown = parse(text, "agent.toml").unwrap_err().to_string();
    assert!(shown.starts_with("invalid agent definition agent.toml:\n  agent.toml:1:1: os: \"plan9\""), "{shown}");
    assert!(shown.contains("\n  agent.toml:3:1: apps[0].slug: \"Bad\" does not match"), "{shown}");
}

#[test]
fn a_missing_file_says_which() {
    let err = load(Path::new("/nonexistent/agent.toml")).unwrap_err();
    assert!(err.to_string().starts_with("reading /nonexistent/agent.toml: "), "{err}");
}
