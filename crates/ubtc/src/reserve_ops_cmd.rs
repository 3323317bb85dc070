//! Wiring of reserve management (`[reserve_ops]`, docs/reserve-ops.md): the
//! pipeline's `ReserveOps` over the configured guardians (approvals and release
//! signatures), the minter on every EVM chain with a token contract and every Solana
//! chain with a token mint (when `reserve_ops.solana_minter_keystore` is set), and the
//! Bitcoin backend. `ubtc worker` runs its tick; `ubtc serve` uses it for the admin routes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use ubtc_bitcoin::multisig::SortedMulti;
use ubtc_chains::evm::minter::EvmMinter;
use ubtc_chains::evm::rpc::RetryPolicy;
use ubtc_chains::solana::minter::{MinterKey, SolanaMinter};
use ubtc_chains::solana::{Commitment, SolanaConfig};
use ubtc_chains::BitcoinBackend;
use ubtc_guardian::keystore::{self, Passphrase};
use ubtc_guardian::reserve_ops::{load_minter_key, ReserveEndpoint, ReserveOpsClient};
use ubtc_pipeline::reserve_ops::{ReserveOps, ReserveOpsSettings, TokenMinter};
use ubtc_pipeline::solana_minter::SolanaTokenMinter;
use ubtc_store::Store;

use crate::config::{ChainSource, Config, SolanaChainConfig};

/// `None` when `reserve_ops.enabled` is off.
pub fn build(
    config: &Config,
    store: Arc<dyn Store>,
    bitcoin: Arc<dyn BitcoinBackend>,
) -> anyhow::Result<Option<Arc<ReserveOps>>> {
    let o = &config.reserve_ops;
    if !o.enabled {
        return Ok(None);
    }
    let s = &config.signer;
    let keys = config.guardian_keys()?;
    let reserve = SortedMulti::new(s.threshold as usize, keys.clone())
        .context("signer.threshold and signer.guardians")?;

    let file = (!s.coordinator_passphrase_file.as_os_str().is_empty())
        .then_some(s.coordinator_passphrase_file.as_path());
    let env =
        (!s.coordinator_passphrase_env.is_empty()).then_some(s.coordinator_passphrase_env.as_str());
    let pass = keystore::passphrase_from(file, env).context("coordinator keystore passphrase")?;
    let coordinator = keystore::load(&s.coordinator_keystore, &pass)
        .with_context(|| format!("coordinator keystore {}", s.coordinator_keystore.display()))?;
    let endpoints = s
        .guardians
        .iter()
        .zip(&keys)
        .map(|(g, k)| ReserveEndpoint {
            url: g.url.trim_end_matches('/').to_owned(),
            key: k.0,
        })
        .collect();
    let approvers = ReserveOpsClient::new(
        endpoints,
        coordinator,
        s.threshold as usize,
        Duration::from_millis(s.timeout_ms),
    )
    .context("guardian HTTP client")?;

    let minter_pass = std::env::var(&o.minter_passphrase_env)
        .ok()
        .map(Passphrase::new)
        .transpose()?
        .with_context(|| {
            format!(
                "no passphrase for the minter keystore: set {}",
                o.minter_passphrase_env
            )
        })?;
    let minter_key = load_minter_key(&o.minter_keystore, &minter_pass)
        .with_context(|| format!("minter keystore {}", o.minter_keystore.display()))?;
    let mut minters: HashMap<String, Arc<dyn TokenMinter>> = HashMap::new();
    for c in &config.chains {
        let minter: Arc<dyn TokenMinter> = match &c.source {
            ChainSource::Evm(e) => {
                let Some(token) = e.token_contract.as_deref() else {
                    continue;
                };
                let minter = EvmMinter::new(
                    e.rpc_url.expose(),
                    e.chain_id,
                    token,
                    minter_key,
                    RetryPolicy::default(),
                )
                .with_context(|| format!("minter on {}", c.name))?;
                tracing::info!(chain = %c.name, minter = %minter.address(), "reserve ops: minter ready");
                Arc::new(minter)
            }
            ChainSource::Solana(s) => {
                let Some(mint) = s.token_contract.as_deref() else {
                    continue;
                };
                if o.solana_minter_keystore.as_os_str().is_empty() {
                    tracing::warn!(chain = %c.name, "reserve ops: no Solana minter (reserve_ops.solana_minter_keystore is not set); mints and burns on this chain are refused as unknown_chain");
                    continue;
                }
                let minter =
                    solana_minter(&c.name, s, mint, &o.solana_minter_keystore, &minter_pass)
                        .with_context(|| format!("minter on {}", c.name))?;
                tracing::info!(chain = %c.name, minter = %minter.address(), "reserve ops: minter ready");
                Arc::new(minter)
            }
            // The dev chain has no token to mint.
            ChainSource::Dev(_) => continue,
        };
        minters.insert(c.name.to_string(), minter);
    }
    let settings = ReserveOpsSettings {
        network: crate::app::network(config.bitcoin.network),
        reserve,
        deposit_confirmations: o.deposit_confirmations,
        token_confirmations: o.token_confirmations,
        mint_daily_limit_sats: o.mint_daily_limit_sats,
        release_daily_limit_sats: o.release_daily_limit_sats,
        fee_rate_sat_vb: o.fee_rate_sat_vb,
        batch: config.pipeline.batch_size.max(1),
    };
    Ok(Some(Arc::new(ReserveOps::new(
        store,
        bitcoin,
        minters,
        Arc::new(approvers),
        settings,
    ))))
}

/// The Solana minter of one `[[chains]]` entry: its seed is held encrypted in the
/// guardian keystore format like the EVM minter key (32 random bytes, created with
/// `ubtc keys guardian-init --keystore FILE`), used as an ed25519 seed.
fn solana_minter(
    name: &ubtc_core::ChainId,
    c: &SolanaChainConfig,
    mint: &str,
    keystore_path: &std::path::Path,
    pass: &Passphrase,
) -> anyhow::Result<SolanaTokenMinter> {
    let mut solana = SolanaConfig::new(name.clone(), c.rpc_url.expose(), &c.payment_address);
    solana.token_mint = Some(mint.to_owned());
    if let Some(commitment) = c.commitment.as_deref() {
        solana.commitment = Commitment::parse(commitment)?;
    }
    let seed = load_minter_key(keystore_path, pass)
        .with_context(|| format!("Solana minter keystore {}", keystore_path.display()))?;
    let key = MinterKey::from_secret(seed.secret_bytes());
    Ok(SolanaTokenMinter::new(
        SolanaMinter::new(&solana, key)?,
        mint,
    ))
}

/// Name of the lease under which one process at a time runs the reserve-ops step:
/// two processes signing EVM transactions with the same minter key would pick the
/// same nonce.
pub const RESERVE_OPS_LEASE: &str = "reserve-ops";

/// Runs the reserve-ops step until `cancel` fires, only while this process holds the
/// lease [`RESERVE_OPS_LEASE`] (acquired or renewed before every step).
pub fn spawn(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    cancel: &CancellationToken,
    config: &Config,
    store: Arc<dyn Store>,
    ops: Arc<ReserveOps>,
) {
    let poll = Duration::from_millis(config.reserve_ops.poll_ms);
    // Longer than a slow step (guardian rounds, RPC timeouts), so the holder keeps it.
    let ttl = (poll * 3).max(Duration::from_secs(120));
    let holder = format!(
        "{}:{}:{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    let cancel = cancel.clone();
    tasks.spawn(async move {
        // Like `ubtc_pipeline::run_loop`: again at once after work, after `poll` when
        // idle, with back-off while failing (logged once per streak).
        let mut backoff = Duration::ZERO;
        let mut leading = false;
        loop {
            let held = store
                .acquire_lease(
                    RESERVE_OPS_LEASE,
                    &holder,
                    ttl.as_millis() as i64,
                    ubtc_core::Timestamp::now(),
                )
                .await;
            let wait = match held {
                Ok(None) => {
                    if leading {
                        tracing::warn!("reserve ops: lease lost; another process runs the step");
                        leading = false;
                    }
                    poll
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reserve ops: cannot take the lease");
                    poll
                }
                Ok(Some(_)) => {
                    if !leading {
                        tracing::info!(holder = %holder, "reserve ops: this process runs the step");
                        leading = true;
                    }
                    match ops.tick().await {
                        Ok(t) => {
                            if backoff > Duration::ZERO {
                                tracing::info!("reserve ops recovered");
                            }
                            backoff = Duration::ZERO;
                            if ubtc_pipeline::StepOutcome::is_idle(&t) {
                                poll
                            } else {
                                Duration::ZERO
                            }
                        }
                        Err(e) => {
                            if backoff == Duration::ZERO {
                                tracing::warn!(error = %e, code = e.code(), "reserve ops step failed; backing off");
                            }
                            backoff = (backoff * 2).clamp(poll, Duration::from_secs(60));
                            backoff
                        }
                    }
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => {
                    if leading {
                        let _ = store.release_lease(RESERVE_OPS_LEASE, &holder).await;
                    }
                    return Ok(());
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
}

/// `ubtc admin deposit|mint|burn|release|ops`: the admin routes' equivalents. Requests
/// go through the same workflow as the API (checks, governor, audit with the actor
/// `cli:<user>`); the worker's tick then moves them on.
#[derive(clap::Subcommand)]
pub enum ReserveCommand {
    /// Records an expected BTC deposit to the reserve address.
    Deposit {
        #[arg(long)]
        txid: String,
        #[arg(long)]
        vout: Option<u32>,
        /// Expected amount in sats.
        #[arg(long)]
        sats: String,
        /// Confirmations needed (never fewer than reserve_ops.deposit_confirmations).
        #[arg(long)]
        confirmations: Option<u32>,
    },
    /// Requests a mint backed by a confirmed deposit.
    Mint {
        #[arg(long)]
        chain: String,
        #[arg(long)]
        to: String,
        /// Token base units (sats).
        #[arg(long)]
        amount: String,
        #[arg(long)]
        deposit: uuid::Uuid,
    },
    /// Requests a burn from the minter's balance, released in BTC to `redeemer`.
    Burn {
        #[arg(long)]
        chain: String,
        #[arg(long)]
        amount: String,
        #[arg(long)]
        redeemer: String,
    },
    /// Builds the release of a confirmed burn (default: the burn's amount, fee
    /// included; with --amount: paid to the redeemer, fee on top).
    Release {
        #[arg(long)]
        burn: uuid::Uuid,
        #[arg(long)]
        amount: Option<String>,
    },
    /// Lists reserve operations as JSON, newest first.
    Ops {
        /// deposits, mints, burns or releases.
        #[arg(long, default_value = "mints")]
        kind: String,
        /// Only operations in this state.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Runs one `ubtc admin` reserve subcommand. A refusal exits non-zero with its code.
pub async fn run_cli(
    config: &Config,
    store: Arc<dyn Store>,
    command: ReserveCommand,
) -> anyhow::Result<()> {
    use ubtc_pipeline::reserve_ops::{Actor, DepositRequest};
    use ubtc_store::reserve_ops::{BurnState, DepositState, MintState, ReleaseState};
    if let ReserveCommand::Ops { kind, state, limit } = command {
        let st = state.as_deref();
        let bad = |s: &str| anyhow::anyhow!("unknown state {s:?} for {kind}");
        return match kind.as_str() {
            "deposits" => print_json(
                &store
                    .list_deposits(
                        st.map(|s| DepositState::parse(s).map_err(|_| bad(s)))
                            .transpose()?,
                        limit,
                    )
                    .await?,
            ),
            "mints" => print_json(
                &store
                    .list_mints(
                        st.map(|s| MintState::parse(s).map_err(|_| bad(s)))
                            .transpose()?,
                        limit,
                    )
                    .await?,
            ),
            "burns" => print_json(
                &store
                    .list_burns(
                        st.map(|s| BurnState::parse(s).map_err(|_| bad(s)))
                            .transpose()?,
                        limit,
                    )
                    .await?,
            ),
            "releases" => print_json(
                &store
                    .list_releases(
                        st.map(|s| ReleaseState::parse(s).map_err(|_| bad(s)))
                            .transpose()?,
                        limit,
                    )
                    .await?,
            ),
            other => anyhow::bail!("unknown kind {other:?} (deposits, mints, burns, releases)"),
        };
    }
    anyhow::ensure!(
        config.reserve_ops.enabled,
        "reserve_ops.enabled is off: reserve operations are not configured"
    );
    let bitcoin = crate::reserves::bitcoin_backend(config)?.context(
        "reserve operations from the command line need bitcoin.backend = esplora or core (the dev backend lives in the worker)",
    )?;
    let ops = build(config, store, bitcoin)?.context("reserve_ops.enabled is off")?;
    let actor = Actor {
        name: format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        ),
        ip: None,
        user_agent: Some(format!("ubtc/{}", env!("CARGO_PKG_VERSION"))),
    };
    let refused = |e: ubtc_pipeline::reserve_ops::OpsError| anyhow::anyhow!("{}: {e}", e.code());
    let s = |v: String| serde_json::Value::String(v);
    match command {
        ReserveCommand::Deposit {
            txid,
            vout,
            sats,
            confirmations,
        } => print_json(
            &ops.record_deposit(
                &actor,
                &DepositRequest {
                    txid,
                    vout,
                    expected_sats: s(sats),
                    reserve_address: None,
                    confirmations,
                },
            )
            .await
            .map_err(refused)?,
        ),
        ReserveCommand::Mint {
            chain,
            to,
            amount,
            deposit,
        } => print_json(
            &ops.request_mint(&actor, &chain, &to, &s(amount), deposit)
                .await
                .map_err(refused)?,
        ),
        ReserveCommand::Burn {
            chain,
            amount,
            redeemer,
        } => print_json(
            &ops.request_burn(&actor, &chain, &s(amount), &redeemer)
                .await
                .map_err(refused)?,
        ),
        ReserveCommand::Release { burn, amount } => print_json(
            &ops.request_release(&actor, burn, amount.map(s).as_ref())
                .await
                .map_err(refused)?,
        ),
        ReserveCommand::Ops { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_solana_chain_gets_a_minter_from_its_encrypted_seed() {
        let dir = tempfile::tempdir().unwrap();
        let mint = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr";
        let path = dir.path().join("ubtc.toml");
        std::fs::write(
            &path,
            format!(
                "[[chains]]\nname = \"solana\"\nkind = \"solana\"\nmin_payment = \"1\"\n\
                 confirmations = 32\nrpc_url = \"http://127.0.0.1:1\"\n\
                 payment_address = \"9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM\"\n\
                 token_contract = \"{mint}\"\ncommitment = \"confirmed\"\n"
            ),
        )
        .unwrap();
        let config = Config::load(Some(&path), &Default::default()).unwrap();
        let secret = bitcoin::secp256k1::SecretKey::new(&mut rand::thread_rng());
        let pass = Passphrase::new("solana minter passphrase").unwrap();
        let keystore_path = dir.path().join("solana-minter.json");
        ubtc_guardian::reserve_ops::store_minter_key(&keystore_path, secret, &pass).unwrap();

        let crate::config::ChainSource::Solana(solana) = &config.chains[0].source else {
            panic!("a solana chain");
        };
        let name = &config.chains[0].name;
        let minter = solana_minter(name, solana, mint, &keystore_path, &pass).unwrap();
        assert_eq!(
            minter.address(),
            MinterKey::from_secret(secret.secret_bytes()).address()
        );
        assert!(!format!("{minter:?}").contains(&format!("{:?}", secret.secret_bytes())));
        // A wrong passphrase or a missing file: refused, no minter.
        let wrong = Passphrase::new("another passphrase").unwrap();
        assert!(solana_minter(name, solana, mint, &keystore_path, &wrong).is_err());
        let missing = dir.path().join("none.json");
        assert!(solana_minter(name, solana, mint, &missing, &pass).is_err());
    }
}
