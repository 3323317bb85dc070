//! Helpers the `ubtc` process tests share: a fresh PostgreSQL database per test, the
//! `ubtc` binary run with a clean environment, waiting for what a process prints or
//! serves, and stopping it.

// Every test file is its own crate and compiles this whole module, but uses only part
// of it (admin_cli.rs runs commands to completion, dashboard_e2e.rs needs no
// database, ...); without this each test binary would warn about the parts it leaves
// unused.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ubtc_store::PgStore;

/// The server the test databases are created on (its own database is only used to
/// create and drop them).
pub fn admin_url() -> String {
    std::env::var("UBTC_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

/// A fresh database on the test server, dropped when this is dropped (also when the
/// test panicked).
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// Creates `<prefix>_<random>`; an unreachable server fails the test.
    pub async fn create(prefix: &str) -> Self {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let admin = PgStore::connect(&admin_url(), 1).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is required at {} (set UBTC_TEST_DATABASE_URL): {e}",
                admin_url()
            )
        });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(admin.pool())
            .await
            .unwrap();
        let url = match admin_url().rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("database URL without a database name"),
        };
        Self { name, url }
    }

    /// The database's URL through another address (e.g. a proxy in front of the
    /// server).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        self.url.replace("127.0.0.1:5432", &addr.to_string())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which we may not block on: use a thread
        // with its own.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    if let Ok(admin) = PgStore::connect(&admin_url(), 1).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(admin.pool())
                                .await;
                    }
                })
        })
        .join();
    }
}

/// The `ubtc` binary with a clean environment: only PATH, the data directory, the
/// database, log level `warn` and `extra_env`; no stdin.
pub fn ubtc_command(
    dir: &Path,
    db_url: &str,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ubtc"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("UBTC_DATA_DIR", dir)
        .env("UBTC_DATABASE_URL", db_url)
        .env("UBTC_LOG_LEVEL", "warn")
        .stdin(Stdio::null());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd
}

/// Starts `ubtc` (see `ubtc_command`) in the background; its stdout is discarded, its
/// stderr shows in the test's output.
pub fn spawn_ubtc(dir: &Path, db_url: &str, args: &[&str], extra_env: &[(&str, &str)]) -> Child {
    ubtc_command(dir, db_url, args, extra_env)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("ubtc binary runs")
}

/// Runs `ubtc` (see `ubtc_command`) to its end and returns what it printed.
pub fn run_ubtc(dir: &Path, db_url: &str, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    ubtc_command(dir, db_url, args, extra_env)
        .output()
        .expect("ubtc binary runs")
}

/// Asks the process to shut down cleanly (SIGTERM); does not wait.
pub fn sigterm(child: &Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
}

/// A process stopped when this is dropped, passed or not: SIGTERM, then SIGKILL if it
/// has not exited within 10 s (a clean shutdown also stops the processes it started).
pub struct StopOnDrop(pub Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        sigterm(&self.0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to `within` for the first line of the child's (piped) stdout that starts
/// with `prefix` (after leading blanks) and returns the rest of it, trimmed. The rest
/// of stdout is drained in the background so the child never blocks on a full pipe.
pub fn stdout_line_after(child: &mut Child, prefix: &str, within: Duration) -> String {
    let stdout = child.stdout.take().expect("stdout is piped");
    let wanted = prefix.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Some(rest) = line.trim().strip_prefix(wanted.as_str()) {
                    let _ = tx.send(rest.trim().to_owned());
                    sent = true;
                }
            }
        }
    });
    rx.recv_timeout(within)
        .unwrap_or_else(|_| panic!("no line starting with {prefix:?} within {within:?}"))
}

/// The pid in a lease holder name (`host:pid:random`).
pub fn pid_of(holder: &str) -> u32 {
    let mut parts = holder.rsplit(':');
    parts.next();
    parts
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("lease holder {holder:?} does not name a pid"))
}

/// The status code of `GET path`, or None when the server does not answer in time.
pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Polls `GET path` every 200 ms until it answers `want`; fails after `within`.
pub async fn wait_for_status(addr: SocketAddr, path: &str, want: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = http_status(addr, path).await;
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} answered {got:?}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
