//! A private PostgreSQL cluster a test can stop and start: the shared one from `scripts/with-postgres.sh` serves
//! other tests at the same time, so an outage has to happen on a cluster of its own.
//!
//! Built like the script does it: Debian's `initdb` and `pg_ctl` from `/usr/lib/postgresql/*/bin`, run as the
//! `postgres` user when the test runs as root (initdb refuses root), listening on a free port on 127.0.0.1 and a
//! unix socket in its own directory. A missing PostgreSQL is a failure, never a skip.

use std::path::{Path, PathBuf};
use std::process::Command;

/// How long `pg_ctl` waits for the server to start or stop before it gives up.
const PG_CTL_WAIT_SECS: &str = "60";
/// Ports tried before giving up (another process may take the one we picked before the server binds it).
const PORT_ATTEMPTS: usize = 5;

pub struct PgCluster {
    ctl: PgCtl,
    running: bool,
}

impl PgCluster {
    /// initdb and start a cluster. Panics with the server's log when PostgreSQL is missing or does not start.
    pub async fn start() -> PgCluster {
        tokio::task::spawn_blocking(PgCluster::start_blocking).await.expect("the cluster setup task")
    }

    fn start_blocking() -> PgCluster {
        let bindir = bindir().unwrap_or_else(|| {
            panic!(
                "\n\n*** This test runs its own PostgreSQL cluster and needs initdb and pg_ctl under \
                 /usr/lib/postgresql/*/bin (Debian's postgresql package; scripts/with-postgres.sh installs it). ***\n\n"
            )
        });
        let dir = std::env::temp_dir().join(format!("agentwire-pg-cluster-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the cluster directory");
        if is_root() {
            run(Command::new("chown").arg("postgres").arg(&dir), "chown the cluster directory to postgres");
        }
        let data = dir.join("data");
        let initdb = bindir.join("initdb");
        run(
            &mut as_pg(&[
                initdb.to_str().unwrap(),
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-locale",
            ]),
            "initdb",
        );
        let mut cluster = PgCluster { ctl: PgCtl { bindir, dir, port: 0 }, running: false };
        for attempt in 1..=PORT_ATTEMPTS {
            cluster.ctl.port = free_port();
            if cluster.ctl.start() {
                cluster.running = true;
                return cluster;
            }
            eprintln!("pg_cluster: start on port {} failed (attempt {attempt})", cluster.ctl.port);
        }
        panic!("PostgreSQL did not start:\n{}", cluster.ctl.log());
    }

    /// A URL for the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.ctl.port)
    }

    /// Stops the server (`fast`: sessions are terminated, as in a database failover or a crash of the host).
    pub async fn stop(&mut self) {
        let mut cmd = self.ctl.command(&["-m", "fast", "-w", "-t", PG_CTL_WAIT_SECS, "stop"]);
        let out = tokio::task::spawn_blocking(move || cmd.output()).await.expect("the pg_ctl stop task");
        let out = out.expect("run pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.ctl.log()
        );
        self.running = false;
    }

    /// Starts the stopped server again, on the same port.
    pub async fn restart(&mut self) {
        let ctl = self.ctl.clone();
        let started = tokio::task::spawn_blocking(move || ctl.start()).await.expect("the pg_ctl start task");
        assert!(started, "PostgreSQL did not start again on port {}:\n{}", self.ctl.port, self.ctl.log());
        self.running = true;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self.ctl.command(&["-m", "immediate", "-w", "stop"]).output();
        }
        let _ = std::fs::remove_dir_all(&self.ctl.dir);
    }
}

/// What a `pg_ctl` call needs, movable to a blocking task.
#[derive(Clone)]
struct PgCtl {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl PgCtl {
    fn command(&self, args: &[&str]) -> Command {
        let pg_ctl = self.bindir.join("pg_ctl");
        let data = self.dir.join("data");
        let mut argv = vec![pg_ctl.to_str().unwrap(), "-D", data.to_str().unwrap()];
        argv.extend_from_slice(args);
        as_pg(&argv)
    }

    fn start(&self) -> bool {
        let log = self.dir.join("postgres.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=100 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let mut cmd =
            self.command(&["-l", log.to_str().unwrap(), "-w", "-t", PG_CTL_WAIT_SECS, "-o", &options, "start"]);
        cmd.output().map(|out| out.status.success()).unwrap_or(false)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }
}

fn bindir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
        .collect();
    // The newest major version, as the script picks it.
    dirs.sort_by_key(|d| major(d));
    dirs.pop()
}

fn major(bin: &Path) -> u32 {
    bin.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// `argv` as the `postgres` user when we are root, as ourselves otherwise.
fn as_pg(argv: &[&str]) -> Command {
    if is_root() {
        let quoted: Vec<String> = argv.iter().map(|a| format!("'{}'", a.replace('\'', r"'\''"))).collect();
        let mut cmd = Command::new("su");
        cmd.args(["postgres", "-s", "/bin/sh", "-c", &quoted.join(" ")]);
        cmd
    } else {
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]);
        cmd
    }
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port nothing listens on now (the kernel's pick for an ephemeral bind, released at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}
