//! Wiring of reserve management (`[reserve_ops]`, docs/reserve-ops.md): the
//! pipeline's `ReserveOps` over the configured guardians (approvals and release
//! signatures), the minter on every EVM chain with a token contract, and the Bitcoin
//! backend. `ubtc worker` runs its tick; `ubtc serve` uses it for the admin routes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use ubtc_bitcoin::multisig::SortedMulti;
use ubtc_chains::evm::minter::EvmMinter;
use ubtc_chains::evm::rpc::RetryPolicy;
use ubtc_chains::BitcoinBackend;
use ubtc_core::ChainKind;
use ubtc_guardian::keystore::{self, Passphrase};
use ubtc_guardian::reserve_ops::{load_minter_key, ReserveEndpoint, ReserveOpsClient};
use ubtc_pipeline::reserve_ops::{ReserveOps, ReserveOpsSettings, TokenMinter};
use ubtc_store::Store;

use crate::config::Config;

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
    for c in config.chains.iter().filter(|c| c.kind == ChainKind::Evm) {
        let (Some(token), Some(chain_id)) = (c.token_contract.as_deref(), c.chain_id) else {
            continue;
        };
        let minter = EvmMinter::new(
            c.rpc_url.expose(),
            chain_id,
            token,
            minter_key,
            RetryPolicy::default(),
        )
        .with_context(|| format!("minter on {}", c.name))?;
        tracing::info!(chain = %c.name, minter = %minter.address(), "reserve ops: minter ready");
        minters.insert(c.name.to_string(), Arc::new(minter));
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

/// Runs the reserve-ops step until `cancel` fires.
pub fn spawn(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    cancel: &CancellationToken,
    config: &Config,
    ops: Arc<ReserveOps>,
) {
    let poll = Duration::from_millis(config.reserve_ops.poll_ms);
    let cancel = cancel.clone();
    tasks.spawn(async move {
        // Like `ubtc_pipeline::run_loop`: again at once after work, after `poll` when
        // idle, with back-off while failing (logged once per streak).
        let mut backoff = Duration::ZERO;
        loop {
            let wait = match ops.tick().await {
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
            };
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
}
