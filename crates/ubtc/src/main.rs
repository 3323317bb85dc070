//! `ubtc`: the one binary of Universal Bitcoin.
//!
//! Parses the command line and the configuration, starts the services a subcommand
//! needs, waits for all of them and exits non-zero when one failed. Logic lives in the
//! library crates; this file only wires.

mod admin_cmd;
mod app;
mod bench;
mod config;
mod demo;
mod guardian_cmd;
mod registry_cmd;
mod reserve_ops_cmd;
mod reserves;
mod startup;
mod verify_attestation;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "ubtc",
    version,
    about = "Universal Bitcoin: proof of reserves for wrapped BTC"
)]
struct Cli {
    /// Configuration file (TOML). `UBTC_` variables override it.
    #[arg(long, global = true, env = "UBTC_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything on embedded defaults (SQLite, dev chain, three guardian processes 2-of-3).
    Demo(demo::DemoArgs),
    /// The public API, health and readiness.
    Serve,
    /// Chain monitors and queue workers.
    Worker,
    /// Applies database migrations and exits.
    Migrate,
    /// Verifies a proof bundle or a reserve attestation offline (FILE, or - for stdin).
    /// Exit 0 valid (read the report: without a pin it says UNPINNED; --require-pin
    /// makes that exit 1), 1 invalid, 2 unreadable input.
    Verify {
        file: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Pin the reserve registry to this file (one version, or the chain that
        /// `GET /v1/reserves/registry` serves; its first version is trusted as given).
        #[arg(long, conflicts_with = "registry_fingerprint")]
        registry: Option<PathBuf>,
        /// Pin the reserve registry to the version with this fingerprint (64 hex), which
        /// the bundle must carry.
        #[arg(long)]
        registry_fingerprint: Option<String>,
        /// Exit 1 unless the verdict is VALID against a pin: UNPINNED (nothing outside
        /// the document vouches for its reserves) counts as a failure.
        #[arg(long)]
        require_pin: bool,
    },
    /// Verifies one BIP-322 or BIP-137 signature. Exit 0 valid, 1 invalid, 2 unreadable.
    VerifyMessage {
        address: String,
        message: String,
        signature: String,
        /// Require the address to be on this network (bitcoin, testnet, signet, regtest).
        #[arg(long)]
        network: Option<ubtc_core::bundle::BitcoinNetwork>,
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
    /// One guardian daemon, on its own configuration (see docs/guardians.md).
    Guardian(guardian_cmd::GuardianArgs),
    /// Accounts and the audit log (docs/admin.md).
    Admin {
        #[command(subcommand)]
        what: admin_cmd::AdminCommand,
    },
    /// Key management.
    Keys {
        #[command(subcommand)]
        what: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Creates the local reserve key file (signer.key_file) if it does not exist and
    /// prints its address.
    LocalInit(LocalInitArgs),
    /// Creates an encrypted guardian keystore and prints its public key and fingerprint.
    GuardianInit(guardian_cmd::GuardianInitArgs),
    /// Registers wsh(sortedmulti(M, guardian keys…)) as an active reserve address.
    ReserveCreate(guardian_cmd::ReserveCreateArgs),
    /// Retires a reserve address (recorded; it is no longer signed for).
    ReserveRetire(guardian_cmd::ReserveRetireArgs),
    /// Writes the unsigned next reserve registry version built from the reserve
    /// addresses (active and retired) and the guardian keys.
    RegistryPropose(registry_cmd::ProposeArgs),
    /// Adds a guardian's signature to a registry version (offline, with its keystore).
    RegistrySign(registry_cmd::SignArgs),
    /// Stores a signed registry version; refused unless the previous version's
    /// guardians signed it M-of-N.
    RegistryPublish(registry_cmd::PublishArgs),
    /// Prints every published registry version (a file for `ubtc verify --registry`).
    RegistryExport(registry_cmd::ExportArgs),
}

#[derive(Args)]
struct LocalInitArgs {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // Offline commands: no runtime, no configuration, no logs on stdout.
        Command::Verify {
            file,
            json,
            registry,
            registry_fingerprint,
            require_pin,
        } => {
            return verify_bundle(
                &file,
                json,
                registry.as_deref(),
                registry_fingerprint,
                require_pin,
            )
        }
        Command::VerifyMessage {
            address,
            message,
            signature,
            network,
            json,
        } => return verify_message(&address, &message, &signature, network, json),
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.config, cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    Ok(Config::load(path, &env)?)
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn run(config_path: Option<PathBuf>, command: Command) -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider: install ring once, here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match command {
        Command::Demo(args) => demo::run(config_path.as_deref(), args).await,
        Command::Bench { what } => bench::run(config_path.as_deref(), what).await,
        Command::Guardian(args) => guardian_cmd::run_guardian(args).await,
        Command::Keys {
            what: KeysCommand::GuardianInit(args),
        } => guardian_cmd::guardian_init(args),
        Command::Keys {
            what: KeysCommand::RegistrySign(args),
        } => registry_cmd::sign(args),
        command => {
            let config = load_config(config_path.as_deref())?;
            init_logging(&config);
            match command {
                Command::Serve => serve(config).await,
                Command::Admin { what } => admin_cmd::run(&config, what).await,
                Command::Worker => worker(config).await,
                Command::Migrate => {
                    app::open_store(&config).await?;
                    println!("migrations applied");
                    Ok(())
                }
                Command::Keys {
                    what: KeysCommand::LocalInit(_),
                } => {
                    let key = app::load_reserve_key(&config.key_file(), true)?;
                    let signer = ubtc_pipeline::LocalKeySigner::new(
                        key,
                        app::network(config.bitcoin.network),
                    );
                    println!("reserve key file: {}", config.key_file().display());
                    println!("address:          {}", signer.address());
                    println!("descriptor:       {}", signer.descriptor());
                    Ok(())
                }
                Command::Keys {
                    what: KeysCommand::ReserveCreate(args),
                } => guardian_cmd::reserve_create(&config, args).await,
                Command::Keys {
                    what: KeysCommand::ReserveRetire(args),
                } => guardian_cmd::reserve_retire(&config, args).await,
                Command::Keys {
                    what: KeysCommand::RegistryPropose(args),
                } => registry_cmd::propose(&config, args).await,
                Command::Keys {
                    what: KeysCommand::RegistryPublish(args),
                } => registry_cmd::publish(&config, args).await,
                Command::Keys {
                    what: KeysCommand::RegistryExport(args),
                } => registry_cmd::export(&config, args).await,
                Command::Demo(_)
                | Command::Guardian(_)
                | Command::Keys {
                    what: KeysCommand::GuardianInit(_) | KeysCommand::RegistrySign(_),
                }
                | Command::Bench { .. }
                | Command::Verify { .. }
                | Command::VerifyMessage { .. } => {
                    unreachable!("handled above")
                }
            }
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Before anything records a figure: gauges set once at construction (the Redis
    // limiter's `ubtc_ratelimit_redis_up`) would otherwise go to no recorder.
    ubtc_api::metrics::install_recorder()?;
    // Listen first: a load balancer must see `/healthz` at once and `/readyz` 503
    // while the database is away (startup.rs).
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let starting = startup::StartingRouter::new(startup::trusted_proxies(&config)?);
    let router = starting.router();
    let c = cancel.clone();
    let serve_limits = config.server.serve_limits();
    tasks.spawn(async move {
        ubtc_api::serve_with(listener, router, serve_limits, c)
            .await
            .context("api server failed")
    });
    let c = cancel.clone();
    tasks.spawn(async move {
        let Some(store) = startup::open_store_retrying(&config, &c).await else {
            return Ok(());
        };
        starting.install(api_router(&config, store)?);
        Ok(())
    });
    tokio::spawn(app::shutdown_signal(cancel.clone()));
    app::join_all(tasks, cancel).await
}

/// The full public API of `serve`, once its database is open.
fn api_router(
    config: &Config,
    store: std::sync::Arc<dyn ubtc_store::Store>,
) -> anyhow::Result<axum::Router> {
    let mut state = app::api_state(store.clone(), config)?
        .with_reserve_max_age_ms(reserves::max_age_ms(config));
    // The admin reserve routes need a Bitcoin view of their own; the in-process dev
    // backend lives in the worker, so `serve` offers them only with a real node.
    if config.reserve_ops.enabled {
        match reserves::bitcoin_backend(config)? {
            Some(bitcoin) => {
                if let Some(ops) = reserve_ops_cmd::build(config, store, bitcoin)? {
                    state = state.with_reserve_ops(ops);
                }
            }
            None => tracing::warn!(
                "reserve_ops.enabled with bitcoin.backend = dev: the admin reserve routes answer reserve_ops_disabled in serve"
            ),
        }
    }
    Ok(ubtc_api::public_router(state))
}

async fn worker(config: Config) -> anyhow::Result<()> {
    let store = app::open_store(&config).await?;
    let app::WorkerSigner {
        signer,
        bitcoin,
        guardians,
    } = app::worker_signer(&config, store.as_ref()).await?;
    // `bitcoin.backend`: a real node for statements, proofs of funds and snapshots; the
    // in-process dev backend otherwise.
    let bitcoin: std::sync::Arc<dyn ubtc_chains::BitcoinBackend> =
        match reserves::bitcoin_backend(&config)? {
            Some(backend) => backend,
            None => bitcoin,
        };
    let chains = app::build_chains(&config)?;
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let metrics = ubtc_api::metrics::install_recorder()?;
    if let Some(addr) = config.server.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (server.metrics_listen)"))?;
        let c = cancel.clone();
        let dev_chains: std::collections::HashMap<_, _> = chains
            .dev
            .iter()
            .map(|(id, (chain, _))| (id.clone(), chain.clone()))
            .collect();
        tasks.spawn(async move {
            let mut router = ubtc_api::metrics::metrics_only_router(metrics);
            if let Some(coordinator) = guardians {
                router = router.merge(ubtc_guardian::coordinator::guardians_router(coordinator));
                // Dev chains live in this process: serve their read-only view, as the
                // demo does, so guardians configured with `dev_http` can re-read them.
                if !dev_chains.is_empty() {
                    router = router.merge(ubtc_guardian::dev_chain_router(dev_chains));
                }
            }
            ubtc_api::serve(listener, router, c)
                .await
                .context("metrics server failed")
        });
    }
    app::spawn_pipeline(
        &mut tasks,
        &cancel,
        &config,
        store.clone(),
        signer,
        bitcoin.clone(),
        &chains,
    );
    if let Some(ops) = reserve_ops_cmd::build(&config, store.clone(), bitcoin.clone())? {
        reserve_ops_cmd::spawn(&mut tasks, &cancel, &config, store.clone(), ops);
    }
    reserves::spawn_snapshotter(&mut tasks, &cancel, &config, store, bitcoin, &chains);
    tracing::info!(
        workers = config.pipeline.workers,
        chains = config.chains.len(),
        "worker running"
    );
    tokio::spawn(app::shutdown_signal(cancel.clone()));
    app::join_all(tasks, cancel).await
}

/// Writes to stdout, ignoring a closed pipe: `ubtc verify FILE | head -1` must end
/// with the verdict's exit code, not a panic.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Reads a bundle or an attestation from a file or stdin. Exit 0 valid, 1 invalid, 2 unreadable.
fn verify_bundle(
    file: &str,
    json: bool,
    registry: Option<&std::path::Path>,
    registry_fingerprint: Option<String>,
    require_pin: bool,
) -> ExitCode {
    let pin = match (registry, registry_fingerprint) {
        (Some(path), _) => {
            let bytes = match std::fs::File::open(path).and_then(|f| {
                let mut bytes = Vec::new();
                f.take(ubtc_core::bundle::BUNDLE_MAX_BYTES as u64 + 1)
                    .read_to_end(&mut bytes)
                    .map(|_| bytes)
            }) {
                Ok(b) => b,
                Err(e) => return unreadable(json, &format!("cannot read {}: {e}", path.display())),
            };
            match ubtc_core::registry::parse_registry_file(&bytes) {
                Ok(v) if !v.is_empty() => Some(ubtc_bitcoin::bundle::RegistryPin::Versions(v)),
                Ok(_) => {
                    return unreadable(
                        json,
                        &format!("{} holds no registry version", path.display()),
                    )
                }
                Err(e) => {
                    return unreadable(
                        json,
                        &format!("{} is not a readable registry: {e}", path.display()),
                    )
                }
            }
        }
        (None, Some(fp)) => {
            let fp = fp.trim().to_ascii_lowercase();
            if !ubtc_core::registry::is_fingerprint(&fp) {
                return unreadable(json, "--registry-fingerprint must be 64 hex characters");
            }
            Some(ubtc_bitcoin::bundle::RegistryPin::Fingerprint(fp))
        }
        (None, None) => None,
    };
    let mut bytes = Vec::new();
    let read = if file == "-" {
        std::io::stdin()
            .lock()
            .take(verify_attestation::MAX_INPUT_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map(|_| ())
    } else {
        std::fs::File::open(file).and_then(|f| {
            f.take(verify_attestation::MAX_INPUT_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
                .map(|_| ())
        })
    };
    if let Err(e) = read {
        return unreadable(json, &format!("cannot read {file}: {e}"));
    }
    if let Some(code) = verify_attestation::dispatch(&bytes, file, json, pin.as_ref(), require_pin)
    {
        return code;
    }
    let bundle = match ubtc_core::ProofBundle::from_json(&bytes) {
        Ok(b) => b,
        Err(e) => return unreadable(json, &format!("{file} is not a readable proof bundle: {e}")),
    };
    let report = ubtc_bitcoin::bundle::verify_bundle_pinned(&bundle, pin.as_ref());
    if json {
        emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ));
    } else {
        emit(&report.to_string());
    }
    if report.is_valid() && (report.pinned || !require_pin) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn verify_message(
    address: &str,
    message: &str,
    signature: &str,
    network: Option<ubtc_core::bundle::BitcoinNetwork>,
    json: bool,
) -> ExitCode {
    let network = network.map(app::network);
    match ubtc_bitcoin::bundle::verify_message_report(
        address,
        network,
        message.as_bytes(),
        signature,
    ) {
        Ok(report) => {
            if json {
                emit(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                ));
            } else {
                emit(&report.to_string());
            }
            if report.is_valid() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => unreadable(json, &e.to_string()),
    }
}

fn unreadable(json: bool, message: &str) -> ExitCode {
    if json {
        emit(&format!(
            "{}\n",
            serde_json::json!({ "valid": false, "unreadable": true, "error": message })
        ));
    } else {
        eprintln!("unreadable input: {message}");
    }
    ExitCode::from(2)
}
