//! `ubtc demo`: the whole system in one process on embedded defaults, and
//! `ubtc demo pay`, which submits a payment to a running demo.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use ubtc_core::{ChainId, Timestamp, ValidationStatus};
use ubtc_store::{Store, ValidationFilter};

use crate::app;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DemoArgs {
    /// Port of the API on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Where the demo keeps its database and key.
    #[arg(long, default_value = ".data/demo")]
    data_dir: PathBuf,
    /// Demo payments submitted at start.
    #[arg(long, default_value_t = 5)]
    payments: u32,
    /// Exit once the start-up payments are final instead of serving until Ctrl-C.
    #[arg(long)]
    exit_after_payments: bool,
    /// Sign with one local key instead of three guardian processes (2-of-3).
    #[arg(long)]
    local_key: bool,
    #[command(subcommand)]
    command: Option<DemoCommand>,
}

#[derive(Subcommand)]
enum DemoCommand {
    /// Submits a payment with a message to a running demo's dev chain and waits for
    /// its proof.
    Pay(PayArgs),
}

#[derive(Args)]
struct PayArgs {
    /// The message the reserve keys will sign (inside the statement).
    #[arg(long)]
    message: String,
    #[arg(long, default_value = "dev")]
    chain: String,
    /// Amount in base units (default: the chain's minimum).
    #[arg(long)]
    amount: Option<String>,
    /// The demo's API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Seconds to wait for the proof (0: do not wait).
    #[arg(long, default_value_t = 60)]
    wait: u64,
}

pub async fn run(config_path: Option<&Path>, args: DemoArgs) -> anyhow::Result<()> {
    if let Some(DemoCommand::Pay(pay)) = args.command {
        return pay_command(pay).await;
    }
    let mut config = crate::load_config(config_path)?;
    config.data_dir = args.data_dir.clone();
    config.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], args.port));
    if config.log.level == "info" {
        // The demo prints its own progress; keep library logs to warnings.
        config.log.level = "warn".into();
    }
    crate::init_logging(&config);

    let store = app::open_store(&config).await?;
    let signer = app::local_signer(&config, store.as_ref(), true).await?;
    let bitcoin = app::dev_bitcoin(&config, &signer).await;
    let chains = app::build_chains(&config)?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (try --port)", config.server.listen))?;
    let base = format!("http://{}", listener.local_addr()?);
    let guardians = if !args.local_key {
        Some(
            crate::guardian_cmd::start_demo_guardians(&config, store.as_ref(), &base, &bitcoin)
                .await?,
        )
    } else {
        None
    };
    let pipeline_signer: Arc<dyn ubtc_pipeline::ReserveSigner> = match &guardians {
        Some(g) => g.coordinator.clone(),
        None => signer.clone(),
    };

    let cancel = CancellationToken::new();
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    app::spawn_pipeline(
        &mut tasks,
        &cancel,
        &config,
        store.clone(),
        pipeline_signer,
        bitcoin.clone(),
        &chains,
    );
    crate::reserves::spawn_snapshotter(
        &mut tasks,
        &cancel,
        &config,
        store.clone(),
        bitcoin.clone(),
        &chains,
    );
    let demo = Arc::new(app::DevPayments {
        chains: chains.dev.clone(),
    });
    let state = app::api_state(store.clone(), &config)?
        .with_demo(demo)
        .with_reserve_max_age_ms(crate::reserves::max_age_ms(&config));
    let router = ubtc_api::public_router(state);
    let router = match &guardians {
        Some(g) => router.merge(g.router(&chains.dev)),
        None => router,
    };
    let c = cancel.clone();
    let serve_limits = config.server.serve_limits();
    tasks.spawn(async move {
        ubtc_api::serve_with(listener, router, serve_limits, c)
            .await
            .context("api server failed")
    });
    tokio::spawn(app::shutdown_signal(cancel.clone()));

    println!("Universal Bitcoin demo");
    println!("  data directory  {}", config.data_dir.display());
    println!("  database        {}", config.database_url().expose());
    println!(
        "  reserve address {} ({})",
        signer.address(),
        config.bitcoin.network.as_str()
    );
    if let Some(g) = &guardians {
        let urls: Vec<&str> = g.children.iter().map(|c| c.url.as_str()).collect();
        println!(
            "  guardians       2-of-3 {} at {}",
            g.coordinator.address(),
            urls.join(", ")
        );
        println!(
            "  registry        version {} fingerprint {}",
            g.registry.version,
            g.registry.fingerprint()
        );
        println!(
            "                  pin it: ubtc verify --registry {} BUNDLE",
            g.registry_file.display()
        );
    }
    println!("  API             {base}");
    println!();

    let first_chain = chains.dev.keys().min().cloned();
    if let (Some(chain), true) = (first_chain, args.payments > 0) {
        let (dev, min) = chains
            .dev
            .get(&chain)
            .cloned()
            .context("dev chain vanished")?;
        let messages = demo_messages(args.payments);
        let mut sent = Vec::new();
        for (i, (message, amount)) in messages.iter().enumerate() {
            let payer = ubtc_core::payment::Payer::parse(&format!("0xde{:038x}", i + 1))?;
            let amount = amount.unwrap_or(min);
            let tx = dev.submit_payment(&payer, amount, message.as_bytes());
            println!("  paid {amount} on {chain}: {tx}  message {message:?}");
            sent.push(tx);
        }
        println!();
        let finished = tokio::select! {
            r = watch_progress(store.as_ref(), &chain, &sent, dev.confirmations()) => r,
            _ = cancel.cancelled() => Ok(()),
        };
        if let Err(e) = finished {
            eprintln!("progress display failed: {e:#}");
        }
        let latest = store
            .list_validations(&ValidationFilter {
                status: Some(ValidationStatus::Signed),
                chain: Some(chain.clone()),
                before: None,
                limit: 1,
            })
            .await?;
        println!();
        if let Some(v) = latest.first() {
            println!("Fetch a proof and check it yourself:");
            println!("  curl -s {base}/v1/proofs/{} > proof.json", v.id);
            let registry = config.data_dir.join("registry.json");
            if registry.exists() {
                // Pinned to the registry this demo published: unpinned, a proof
                // only shows that some keys signed.
                println!("  ubtc verify proof.json --registry {}", registry.display());
            } else {
                println!("  ubtc verify proof.json");
            }
        }
        println!("Pay with your own message:");
        println!("  ubtc demo pay --url {base} --message \"hello from me\"");
        println!("List validations:  curl -s {base}/v1/validations");
    }
    if args.exit_after_payments {
        cancel.cancel();
    } else {
        println!("Serving until Ctrl-C.");
    }
    app::join_all(tasks, cancel).await
}

fn demo_messages(n: u32) -> Vec<(String, Option<u128>)> {
    let samples = [
        ("hello from alice", None),
        ("audit 2026-Q4: reserves check", None),
        ("bonjour, réserves ?", None),
        ("this one pays too little", Some(1u128)),
        ("bob was here", None),
    ];
    (0..n as usize)
        .map(|i| {
            let (m, a) = samples[i % samples.len()];
            let m = if i < samples.len() {
                m.to_owned()
            } else {
                format!("{m} #{i}")
            };
            (m, a)
        })
        .collect()
}

/// Prints each payment's status as it changes, until every one is final or signed.
async fn watch_progress(
    store: &dyn Store,
    chain: &ChainId,
    txs: &[ubtc_core::payment::TxHash],
    confirmations: u64,
) -> anyhow::Result<()> {
    let mut last: Vec<Option<ValidationStatus>> = vec![None; txs.len()];
    let deadline = Timestamp::now().plus_millis(120_000);
    loop {
        let mut done = 0;
        for (i, tx) in txs.iter().enumerate() {
            let found = store.find_by_payment(Some(chain), tx.as_str()).await?;
            let Some(v) = found.first() else { continue };
            if last[i] != Some(v.status) {
                let detail = match (&v.reason, v.status) {
                    (
                        Some(r),
                        ValidationStatus::Rejected
                        | ValidationStatus::Failed
                        | ValidationStatus::Dropped,
                    ) => {
                        format!(" ({}: {})", r.code, r.detail)
                    }
                    _ if v.status == ValidationStatus::Detected => {
                        format!(" (waiting for {confirmations} confirmations)")
                    }
                    _ => String::new(),
                };
                println!(
                    "  {}…  {:<9} {}{}",
                    &tx.as_str()[..12.min(tx.as_str().len())],
                    v.status.as_str(),
                    v.id,
                    detail
                );
                last[i] = Some(v.status);
            }
            // A dropped payment could still come back if mined again; the demo stops
            // waiting for it all the same.
            if v.status.is_signed()
                || v.status.is_final()
                || matches!(
                    v.status,
                    ValidationStatus::Failed | ValidationStatus::Dropped
                )
            {
                done += 1;
            }
        }
        if done == txs.len() {
            return Ok(());
        }
        if Timestamp::now() > deadline {
            bail!("demo payments did not finish within two minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn pay_command(args: PayArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let base = args.url.trim_end_matches('/');
    let mut body = serde_json::json!({ "chain": args.chain, "message": args.message });
    if let Some(amount) = &args.amount {
        body["amount"] = serde_json::Value::String(amount.clone());
    }
    let resp = client
        .post(format!("{base}/v1/demo/payments"))
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach the demo at {base} (is `ubtc demo` running?)"))?;
    let status = resp.status();
    let receipt: serde_json::Value = resp
        .json()
        .await
        .context("the demo answered something that is not JSON")?;
    if !status.is_success() {
        bail!("the demo refused the payment ({status}): {receipt}");
    }
    let tx = receipt["tx_hash"].as_str().unwrap_or_default().to_owned();
    println!("paid on {}: {tx}", args.chain);
    if args.wait == 0 {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(args.wait);
    let mut last_status = String::new();
    loop {
        let list: serde_json::Value = client
            .get(format!(
                "{base}/v1/validations?chain={}&tx={tx}",
                args.chain
            ))
            .send()
            .await?
            .json()
            .await?;
        if let Some(v) = list["items"].as_array().and_then(|a| a.first()) {
            let status = v["status"].as_str().unwrap_or("?").to_owned();
            let id = v["id"].as_str().unwrap_or("?").to_owned();
            if status != last_status {
                println!("  {status:<9} {id}");
                last_status = status.clone();
            }
            match status.as_str() {
                "signed" | "delivered" => {
                    println!("proof:  curl -s {base}/v1/proofs/{id} > proof.json && ubtc verify proof.json");
                    return Ok(());
                }
                "rejected" | "dropped" | "failed" => {
                    bail!("validation {id} ended {status}: {}", v["reason"]);
                }
                _ => {}
            }
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "no proof within {} s (last status: {last_status})",
                args.wait
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
