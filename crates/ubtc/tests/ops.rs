//! Running it as an operator would, with real processes on loopback: a `serve`
//! started while its database is away, Debian's nginx in front of two `serve`
//! processes (one killed mid-load, one not ready), and Debian's Prometheus scraping
//! `serve`, `worker` and three guardians with the rules of deploy/prometheus.
//!
//! nginx and Prometheus come from Debian's packages (`./test.sh` and `.ci/run`
//! install them); a test that cannot find or install one says so and skips.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ubtc_store::Store as _;

mod common;
use common::{http_status, spawn_ubtc, wait_for_status, StopOnDrop, TestDb};

/// A loopback address nothing listens on (yet). Another process could take the port
/// before the test binds it again; on a test machine that is rare enough.
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Forwards every connection accepted on `listener` to the shared PostgreSQL server:
/// the database "arriving" at an address where nothing answered before.
fn forward_to_postgres(listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

/// The path of a Debian tool, installing `package` with apt-get when it is missing.
/// When it cannot be had the test fails, unless `UBTC_SKIP_OPS_TESTS=1` asks for a
/// skip (`None`, said on stderr): a test that passes without running proves nothing.
fn debian_tool(path: &str, package: &str) -> Option<PathBuf> {
    let path = PathBuf::from(path);
    if path.exists() {
        return Some(path);
    }
    eprintln!(
        "{} is missing: apt-get install -y {package}",
        path.display()
    );
    let installed = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if installed && path.exists() {
        return Some(path);
    }
    let why = format!(
        "{} cannot be installed here (Debian package {package}); run ./test.sh as root",
        path.display()
    );
    assert!(
        std::env::var("UBTC_SKIP_OPS_TESTS").as_deref() == Ok("1"),
        "{why}, or set UBTC_SKIP_OPS_TESTS=1 to skip"
    );
    eprintln!("SKIPPED: {why}");
    None
}

fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// A `serve` started while its database is unreachable listens at once: `/healthz`
/// 200, `/readyz` and the database routes 503 `database_unavailable`; once the
/// database answers it connects, migrates and serves, with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_listens_at_once_and_becomes_ready_when_the_database_arrives() {
    let db = TestDb::create("ubtc_ops").await;
    let dir = tempfile::tempdir().unwrap();
    let db_addr = free_addr();
    let api = free_addr();
    let started = Instant::now();
    let mut serve = StopOnDrop(spawn_ubtc(
        dir.path(),
        &db.url_via(db_addr),
        &["serve"],
        &[("UBTC_SERVER_LISTEN", &api.to_string())],
    ));
    wait_for_status(api, "/healthz", 200, Duration::from_secs(10)).await;
    let listening_after = started.elapsed();
    println!("listening {listening_after:?} after start, without a database");
    assert!(
        listening_after < Duration::from_secs(5),
        "took {listening_after:?} to answer /healthz"
    );
    let client = http_client();
    for path in ["/readyz", "/v1/chains", "/v1/reserves"] {
        let r = client
            .get(format!("http://{api}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 503, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], "database_unavailable",
            "{path}: {body}"
        );
    }
    // It keeps waiting, alive, for as long as the database stays away.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(http_status(api, "/readyz").await, Some(503));
    assert_eq!(http_status(api, "/healthz").await, Some(200));
    assert!(serve.0.try_wait().unwrap().is_none(), "serve exited");

    let arrived = Instant::now();
    let forward = forward_to_postgres(tokio::net::TcpListener::bind(db_addr).await.unwrap());
    wait_for_status(api, "/readyz", 200, Duration::from_secs(20)).await;
    println!("ready {:?} after the database arrived", arrived.elapsed());
    let chains = client
        .get(format!("http://{api}/v1/chains"))
        .send()
        .await
        .unwrap();
    assert_eq!(chains.status().as_u16(), 200);
    // The schema was migrated in the background.
    let store = ubtc_store::PgStore::connect(&db.url, 1).await.unwrap();
    assert!(store.latest_reserve_snapshot().await.unwrap().is_none());

    common::sigterm(&serve.0);
    let status = serve.0.wait().unwrap();
    assert!(status.success(), "clean shutdown, got {status}");
    forward.abort();

    // Stopped while still waiting for its database: a clean exit too.
    let api = free_addr();
    let mut waiting = StopOnDrop(spawn_ubtc(
        dir.path(),
        &db.url_via(free_addr()),
        &["serve"],
        &[("UBTC_SERVER_LISTEN", &api.to_string())],
    ));
    wait_for_status(api, "/healthz", 200, Duration::from_secs(10)).await;
    common::sigterm(&waiting.0);
    let status = waiting.0.wait().unwrap();
    assert!(
        status.success(),
        "clean shutdown while starting, got {status}"
    );
}

/// nginx with its own prefix and configuration: deploy/nginx/ubtc.conf with the
/// upstream addresses and the listen port replaced, plus an access log that names
/// the upstream(s) each request went to.
struct Nginx {
    _child: StopOnDrop,
    addr: SocketAddr,
    access_log: PathBuf,
}

impl Nginx {
    fn start(bin: &Path, dir: &Path, upstreams: &[SocketAddr]) -> Self {
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx/ubtc.conf"),
        )
        .unwrap();
        let addr = free_addr();
        let mut site = shipped.replace("listen 80;", &format!("listen {addr};"));
        for (i, upstream) in upstreams.iter().enumerate() {
            let name = format!("serve{}:8080", i + 1);
            assert!(site.contains(&name), "{name} in deploy/nginx/ubtc.conf");
            site = site.replace(&name, &upstream.to_string());
        }
        std::fs::write(dir.join("ubtc.conf"), site).unwrap();
        let access_log = dir.join("access.log");
        let main = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\n\
             pid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
               log_format up '$status $request_uri upstream=[$upstream_addr] statuses=[$upstream_status]';\n\
               access_log {log} up;\n\
               client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;\n\
               fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;\n\
               include {dir}/ubtc.conf;\n\
             }}\n",
            dir = dir.display(),
            log = access_log.display(),
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, main).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Self {
            _child: StopOnDrop(child),
            addr,
            access_log,
        }
    }

    /// Access log lines written so far.
    fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Environment of the `serve` processes behind nginx: limits high enough for the
/// load (every request comes from nginx's address) and nginx as the trusted proxy.
const BEHIND_PROXY: [(&str, &str); 3] = [
    ("UBTC_LIMITS_API_IP_PER_MINUTE", "1000000"),
    ("UBTC_LIMITS_API_IP_BURST", "100000"),
    ("UBTC_ADMIN_TRUSTED_PROXIES", "127.0.0.1"),
];

fn spawn_serve(dir: &Path, db_url: &str, listen: SocketAddr) -> StopOnDrop {
    let listen = listen.to_string();
    let mut env = BEHIND_PROXY.to_vec();
    env.push(("UBTC_SERVER_LISTEN", &listen));
    StopOnDrop(spawn_ubtc(dir, db_url, &["serve"], &env))
}

/// nginx in front of two `serve` processes on one database: one is SIGKILLed in the
/// middle of a bounded load and every request still gets its answer; a `serve` whose
/// database is away (`/readyz` 503) is taken out of the rotation, and comes back
/// once it is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_keeps_answering_when_a_serve_dies_or_is_not_ready() {
    let Some(nginx_bin) = debian_tool("/usr/sbin/nginx", "nginx-light") else {
        return;
    };
    let db = TestDb::create("ubtc_ops").await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (free_addr(), free_addr());
    let mut serve_a = spawn_serve(dir.path(), &db.url, a);
    let _serve_b = spawn_serve(dir.path(), &db.url, b);
    for addr in [a, b] {
        wait_for_status(addr, "/readyz", 200, Duration::from_secs(30)).await;
    }
    let nginx_dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(&nginx_bin, nginx_dir.path(), &[a, b]);
    wait_for_status(nginx.addr, "/healthz", 200, Duration::from_secs(10)).await;

    // A bounded load: 4 clients, 150 requests each, on routes that read the database.
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 150;
    let client = http_client();
    let answered = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut load = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let (client, answered, ok) = (client.clone(), answered.clone(), ok.clone());
        let base = format!("http://{}", nginx.addr);
        load.spawn(async move {
            let mut failures = Vec::new();
            for i in 0..PER_CLIENT {
                let path = if (c + i) % 2 == 0 {
                    "/readyz"
                } else {
                    "/v1/validations?limit=5"
                };
                match client.get(format!("{base}{path}")).send().await {
                    Ok(r) => {
                        answered.fetch_add(1, Ordering::SeqCst);
                        if r.status().is_success() {
                            ok.fetch_add(1, Ordering::SeqCst);
                        } else {
                            failures.push(format!("{path}: {}", r.status()));
                        }
                    }
                    Err(e) => failures.push(format!("{path}: {e}")),
                }
            }
            failures
        });
    }
    // Kill serve A once a third of the load is through.
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.load(Ordering::SeqCst) < CLIENTS * PER_CLIENT / 3 {
        assert!(Instant::now() < deadline, "the load made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed_at = answered.load(Ordering::SeqCst);
    serve_a.0.kill().unwrap(); // SIGKILL
    serve_a.0.wait().unwrap();
    let mut failures = Vec::new();
    while let Some(f) = load.join_next().await {
        failures.extend(f.unwrap());
    }
    let total = CLIENTS * PER_CLIENT;
    println!(
        "{} of {total} requests answered, {} with 2xx; serve A killed after {killed_at}",
        answered.load(Ordering::SeqCst),
        ok.load(Ordering::SeqCst)
    );
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert_eq!(answered.load(Ordering::SeqCst), total);
    assert_eq!(ok.load(Ordering::SeqCst), total);
    // Both served before the kill (round robin), and only B after it.
    let lines = nginx.log_lines();
    let retried = lines
        .iter()
        .filter(|l| l.contains("upstream=[") && l.contains(", "))
        .count();
    println!("{retried} requests were passed on to the other serve by nginx");
    assert!(retried >= 1, "the kill caught no request: {lines:#?}");
    let (a_s, b_s) = (a.to_string(), b.to_string());
    assert!(lines
        .iter()
        .any(|l| l.contains(&format!("upstream=[{a_s}]"))));
    assert!(lines
        .iter()
        .any(|l| l.contains(&format!("upstream=[{b_s}]"))));

    // Serve A again on its address, but without its database: it listens and answers
    // 503 until the database arrives.
    let a_db = free_addr();
    let _serve_a = spawn_serve(dir.path(), &db.url_via(a_db), a);
    wait_for_status(a, "/healthz", 200, Duration::from_secs(10)).await;
    assert_eq!(http_status(a, "/readyz").await, Some(503));
    // Past the fail_timeout of the kill, so nginx tries A again.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let before = nginx.log_lines().len();
    for i in 0..60 {
        let path = if i % 2 == 0 { "/readyz" } else { "/v1/chains" };
        let r = client
            .get(format!("http://{}{path}", nginx.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path} through nginx");
    }
    let phase: Vec<String> = nginx.log_lines()[before..].to_vec();
    let tried_a = phase.iter().filter(|l| l.contains(&a_s)).count();
    println!(
        "not ready: A tried by {tried_a} of {} requests",
        phase.len()
    );
    // One failed try takes A out for fail_timeout (10 s): the rest go to B alone.
    assert!(
        (1..=2).contains(&tried_a),
        "A was tried {tried_a} times: {phase:#?}"
    );
    assert!(phase
        .iter()
        .filter(|l| l.contains(&a_s))
        .all(|l| l.contains("503, 200")));

    // The database arrives: A is ready and, after fail_timeout, back in the rotation.
    let forward = forward_to_postgres(tokio::net::TcpListener::bind(a_db).await.unwrap());
    wait_for_status(a, "/readyz", 200, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    let before = nginx.log_lines().len();
    for _ in 0..20 {
        let r = client
            .get(format!("http://{}/readyz", nginx.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let phase: Vec<String> = nginx.log_lines()[before..].to_vec();
    let served_by_a = phase
        .iter()
        .filter(|l| l.contains(&format!("upstream=[{a_s}] statuses=[200]")))
        .count();
    assert!(served_by_a >= 5, "A back in rotation: {phase:#?}");
    forward.abort();
}

/// Behind nginx, every request reaches `serve` from nginx's address; with nginx in
/// `admin.trusted_proxies` the per-IP rate limit still counts each client apart (the
/// clients here connect from 127.0.0.2 and 127.0.0.3, nginx from 127.0.0.1), and a
/// client that writes another address into X-Forwarded-For gets no fresh bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_passes_the_client_address_to_the_rate_limit() {
    let Some(nginx_bin) = debian_tool("/usr/sbin/nginx", "nginx-light") else {
        return;
    };
    let db = TestDb::create("ubtc_ops").await;
    let dir = tempfile::tempdir().unwrap();
    let api = free_addr();
    let listen = api.to_string();
    let _serve = StopOnDrop(spawn_ubtc(
        dir.path(),
        &db.url,
        &["serve"],
        &[
            ("UBTC_SERVER_LISTEN", &listen),
            ("UBTC_LIMITS_API_IP_PER_MINUTE", "1"),
            ("UBTC_LIMITS_API_IP_BURST", "3"),
            ("UBTC_ADMIN_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    ));
    wait_for_status(api, "/readyz", 200, Duration::from_secs(30)).await;
    let nginx_dir = tempfile::tempdir().unwrap();
    // One serve, named for both upstream entries of the shipped configuration.
    let nginx = Nginx::start(&nginx_bin, nginx_dir.path(), &[api, api]);
    wait_for_status(nginx.addr, "/healthz", 200, Duration::from_secs(10)).await;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    let (two, three) = (from("127.0.0.2"), from("127.0.0.3"));
    let url = format!("http://{}/v1/chains", nginx.addr);
    let status = |c: &reqwest::Client, forged: Option<&str>| {
        let mut r = c.get(&url);
        if let Some(f) = forged {
            r = r.header("x-forwarded-for", f);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    // 127.0.0.2 spends its burst of 3.
    for _ in 0..3 {
        assert_eq!(status(&two, None).await, 200);
    }
    assert_eq!(status(&two, None).await, 429, "127.0.0.2 is limited");
    // 127.0.0.3 has a bucket of its own (not nginx's, which 127.0.0.2 would have
    // emptied).
    for _ in 0..3 {
        assert_eq!(
            status(&three, None).await,
            200,
            "127.0.0.3 has its own bucket"
        );
    }
    // Spent; a forged X-Forwarded-For does not give it another one.
    assert_eq!(status(&three, Some("198.51.100.7")).await, 429);
    assert_eq!(status(&three, Some("127.0.0.9, 10.0.0.1")).await, 429);
    // Straight to serve, not through the trusted proxy: the header is not believed
    // either (the peer 127.0.0.2 is the client, and it is spent).
    let direct = two
        .get(format!("http://{api}/v1/chains"))
        .header("x-forwarded-for", "198.51.100.8")
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status().as_u16(), 429);
}

// ---------------------------------------------------------------------------------
// Prometheus

const PASSPHRASE: &str = "ops test guardian passphrase";

/// Starts `ubtc guardian --config` and returns it with its address.
fn start_guardian(config: &Path) -> (StopOnDrop, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ubtc"))
        .arg("guardian")
        .arg("--config")
        .arg(config)
        .env("UBTC_GUARDIAN_PASSPHRASE", PASSPHRASE)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("guardian exited before listening")
            .unwrap();
        if let Some(a) = line.strip_prefix("guardian listening on ") {
            break a.parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (StopOnDrop(child), addr)
}

struct Prometheus {
    _child: StopOnDrop,
    addr: SocketAddr,
    client: reqwest::Client,
}

impl Prometheus {
    /// `GET /api/v1/query`: the result vector.
    async fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let r: serde_json::Value = self
            .client
            .get(format!(
                "http://{}/api/v1/query?query={}",
                self.addr,
                percent_encode(promql)
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["status"], "success", "{promql}: {r}");
        r["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The alerts now firing, as (name, labels).
    async fn firing(&self) -> Vec<(String, serde_json::Value)> {
        let r: serde_json::Value = self
            .client
            .get(format!("http://{}/api/v1/alerts", self.addr))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                    a["labels"].clone(),
                )
            })
            .collect()
    }

    /// Waits until `check` holds for the firing alerts; returns how long it took.
    async fn wait_for_alerts(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(&[(String, serde_json::Value)]) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let firing = self.firing().await;
            if check(&firing) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "{what}: not firing within {within:?}; firing: {firing:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The shipped rules with every `for:` cut to 2 s, so the test sees them fire in
/// seconds; the expressions are the shipped ones.
fn rules_with_short_for() -> String {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/alerts.yml"),
    )
    .unwrap();
    let rewritten: Vec<String> = shipped
        .lines()
        .map(|l| match l.split_once("for: ") {
            Some((indent, _)) if indent.trim().is_empty() => format!("{indent}for: 2s"),
            _ => l.to_owned(),
        })
        .collect();
    assert!(rewritten.iter().filter(|l| l.ends_with("for: 2s")).count() >= 5);
    rewritten.join("\n")
}

/// Debian's Prometheus scrapes a `serve`, a `worker` and three guardians with the
/// shipped alert rules: the expected series exist; stopping two guardians fires
/// `UbtcGuardianDown` for each and `UbtcGuardiansBelowThreshold`; stopping the
/// worker lets the reserve figures go stale and leaves the chain without a monitor
/// leader, and those alerts fire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_process_and_the_alerts_fire() {
    let Some(prometheus_bin) = debian_tool("/usr/bin/prometheus", "prometheus") else {
        return;
    };
    use ubtc_guardian::keystore;
    let db = TestDb::create("ubtc_ops").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();

    // The coordinator's keystore, and three guardians reading the dev chain that the
    // worker serves on its metrics address.
    let coordinator = keystore::GuardianKey::generate();
    let coordinator_ks = dir.path().join("coordinator.json");
    std::fs::write(
        &coordinator_ks,
        keystore::encrypt(
            &coordinator,
            &keystore::Passphrase::new(PASSPHRASE).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let pass_file = dir.path().join("coordinator.passphrase");
    std::fs::write(&pass_file, PASSPHRASE).unwrap();
    let worker_metrics = free_addr();
    let mut guardians = Vec::new();
    let mut signer_guardians = String::new();
    // Each guardian's `[policy]` names the 2-of-3 reserve of all three keys, so the
    // keys come first.
    let keys: Vec<ubtc_guardian::GuardianKey> = (0..3)
        .map(|_| ubtc_guardian::GuardianKey::generate())
        .collect();
    let reserve = ubtc_bitcoin::multisig::SortedMulti::new(
        2,
        keys.iter()
            .map(|k| bitcoin::CompressedPublicKey(k.public()))
            .collect(),
    )
    .unwrap()
    .descriptor(ubtc_bitcoin::multisig::Wrapping::Wsh);
    for (i, key) in (1..=3).zip(&keys) {
        let gdir = dir.path().join(format!("g{i}"));
        std::fs::create_dir_all(&gdir).unwrap();
        let ks = gdir.join("keystore.json");
        std::fs::write(
            &ks,
            keystore::encrypt(key, &keystore::Passphrase::new(PASSPHRASE).unwrap()).unwrap(),
        )
        .unwrap();
        let config = gdir.join("guardian.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nkeystore = {:?}\napprovals = {:?}\ncoordinators = [\"{}\"]\n\
                 [bitcoin]\nbackend = \"dev\"\ndev_height = 850000\n\
                 [policy]\nreserves = [\"{reserve}\"]\n\
                 [[chains]]\nname = \"dev\"\nkind = \"dev_http\"\nurl = \"http://{worker_metrics}\"\n",
                ks.display().to_string(),
                gdir.join("approvals.jsonl").display().to_string(),
                coordinator.public_hex(),
            ),
        )
        .unwrap();
        let (child, addr) = start_guardian(&config);
        signer_guardians.push_str(&format!(
            "[[signer.guardians]]\nname = \"g{i}\"\nurl = \"http://{addr}\"\npublic_key = \"{}\"\n",
            key.public_hex()
        ));
        guardians.push((child, addr));
    }
    let config = dir.path().join("ubtc.toml");
    std::fs::write(
        &config,
        format!(
            "[pipeline]\npoll_ms = 100\nworkers = 1\nmonitor_lease_secs = 2\n\
             [reserves]\ninterval_secs = 1\npoll_ms = 200\nmax_age_secs = 3\n\
             [signer]\nkind = \"guardians\"\nthreshold = 2\ncoordinator_keystore = {:?}\n\
             coordinator_passphrase_file = {:?}\ntimeout_ms = 3000\n{signer_guardians}",
            coordinator_ks.display().to_string(),
            pass_file.display().to_string(),
        ),
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let redis_prefix = format!("ubtc_ops_{}:", uuid::Uuid::new_v4().simple());
    let api = free_addr();
    let (api_s, metrics_s) = (api.to_string(), worker_metrics.to_string());
    let common_env = [
        ("UBTC_LIMITS_REDIS_URL", "redis://127.0.0.1:6379/0"),
        ("UBTC_LIMITS_REDIS_PREFIX", redis_prefix.as_str()),
    ];
    let mut worker_env = common_env.to_vec();
    worker_env.push(("UBTC_SERVER_METRICS_LISTEN", &metrics_s));
    let mut worker = StopOnDrop(spawn_ubtc(
        &data,
        &db.url,
        &["--config", &config_arg, "worker"],
        &worker_env,
    ));
    let mut serve_env = common_env.to_vec();
    serve_env.push(("UBTC_SERVER_LISTEN", &api_s));
    let _serve = StopOnDrop(spawn_ubtc(
        &data,
        &db.url,
        &["--config", &config_arg, "serve"],
        &serve_env,
    ));
    wait_for_status(api, "/readyz", 200, Duration::from_secs(30)).await;
    wait_for_status(worker_metrics, "/metrics", 200, Duration::from_secs(30)).await;

    // Prometheus with its own data directory and port, scraping every second.
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    std::fs::write(prom_dir.join("alerts.yml"), rules_with_short_for()).unwrap();
    let guardian_targets: Vec<String> = guardians.iter().map(|(_, a)| format!("\"{a}\"")).collect();
    std::fs::write(
        prom_dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [alerts.yml]\n\
             scrape_configs:\n\
             - job_name: ubtc-serve\n  static_configs: [{{targets: [\"{api}\"]}}]\n\
             - job_name: ubtc-worker\n  static_configs: [{{targets: [\"{worker_metrics}\"]}}]\n\
             - job_name: ubtc-guardian\n  static_configs: [{{targets: [{}]}}]\n",
            guardian_targets.join(", ")
        ),
    )
    .unwrap();
    let check = Command::new("/usr/bin/promtool")
        .arg("check")
        .arg("config")
        .arg(prom_dir.join("prometheus.yml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let prom_addr = free_addr();
    let child = Command::new(prometheus_bin)
        .arg(format!(
            "--config.file={}",
            prom_dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={prom_addr}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let prom = Prometheus {
        _child: StopOnDrop(child),
        addr: prom_addr,
        client: http_client(),
    };
    wait_for_status(prom_addr, "/-/ready", 200, Duration::from_secs(30)).await;

    // Every target up, and the series the rules use present.
    let started = Instant::now();
    loop {
        let up = prom.query("up == 1").await;
        if up.len() == 5 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "targets up: {up:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (series, instances) in [
        ("ubtc_reserve_ratio", 1),
        ("ubtc_reserve_snapshot_age_seconds", 1),
        ("ubtc_reserve_snapshot_max_age_seconds", 1),
        ("ubtc_queue_oldest_age_seconds", 1),
        ("ubtc_monitor_leader{chain=\"dev\"} == 1", 1),
        ("ubtc_dead_letters{kind=\"webhook_delivery\"}", 1),
        ("ubtc_dead_letters{kind=\"reserve_release\"}", 1),
        ("ubtc_ratelimit_redis_up", 2),
        ("ubtc_lease_held{job=\"ubtc-worker\"}", 1),
        ("ubtc_guardian_answers_total{outcome=\"refused\"}", 3),
        ("ubtc_guardian_approval_fsync_seconds_count", 3),
    ] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = prom.query(series).await;
            if found.len() >= instances {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{series}: {} series, wanted {instances}: {found:?}",
                found.len()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // Every panel of the Grafana dashboard has data on this deployment.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/ubtc.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    for panel in panels {
        let expr = panel["targets"][0]["expr"].as_str().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while prom.query(expr).await.is_empty() {
            assert!(
                Instant::now() < deadline,
                "dashboard panel {:?} has no data: {expr}",
                panel["title"]
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // The dev reserves cover the dev supply. But the dev Bitcoin backend makes no
    // blocks: once its tip is older than reserves.max_age_secs (3 s here) each
    // snapshot says unhealthy, as it would with a Bitcoin node that stopped following
    // the chain, and only that alert fires.
    let ratio = prom.query("ubtc_reserve_ratio").await;
    let ratio: f64 = ratio[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(ratio > 1.0, "ratio {ratio}");
    prom.wait_for_alerts(
        "unhealthy snapshot on a Bitcoin tip that does not move",
        Duration::from_secs(60),
        |firing| firing.iter().any(|(n, _)| n == "UbtcReserveUnhealthy"),
    )
    .await;
    let firing = prom.firing().await;
    assert!(
        firing.iter().all(|(n, _)| n == "UbtcReserveUnhealthy"),
        "alerts while everything runs: {firing:?}"
    );

    // Two guardians stop: each is down, and fewer than the threshold answer.
    let stopped: Vec<String> = guardians[1..].iter().map(|(_, a)| a.to_string()).collect();
    for (child, _) in guardians.iter_mut().skip(1) {
        child.0.kill().unwrap();
        child.0.wait().unwrap();
    }
    let took = prom
        .wait_for_alerts("two guardians down", Duration::from_secs(60), |firing| {
            let down: Vec<&str> = firing
                .iter()
                .filter(|(n, _)| n == "UbtcGuardianDown")
                .filter_map(|(_, l)| l["instance"].as_str())
                .collect();
            stopped.iter().all(|s| down.contains(&s.as_str()))
                && down.len() == 2
                && firing
                    .iter()
                    .any(|(n, _)| n == "UbtcGuardiansBelowThreshold")
        })
        .await;
    println!("guardian alerts firing {took:?} after two guardians stopped");

    // The worker stops: no more reserve snapshots, no monitor leader.
    worker.0.kill().unwrap();
    worker.0.wait().unwrap();
    let took = prom
        .wait_for_alerts("stale reserves", Duration::from_secs(60), |firing| {
            let has = |name: &str| firing.iter().any(|(n, _)| n == name);
            has("UbtcReserveFiguresStale")
                && firing
                    .iter()
                    .any(|(n, l)| n == "UbtcMonitorWithoutLeader" && l["chain"] == "dev")
                && firing
                    .iter()
                    .any(|(n, l)| n == "UbtcProcessDown" && l["job"] == "ubtc-worker")
        })
        .await;
    println!("stale-reserve and no-leader alerts firing {took:?} after the worker stopped");
    let firing = prom.firing().await;
    assert!(
        !firing.iter().any(|(n, _)| n == "UbtcReserveRatioBelowOne"),
        "the ratio did not change: {firing:?}"
    );
}
