//! Wiring of the reserve snapshotter: the configured Bitcoin backend, the supply
//! sources of the configured chains (EVM adapters with a token contract, dev chains
//! with a configured supply), and a loop over [`ReserveSnapshotter::tick`].

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use ubtc_chains::dev::DevSupply;
use ubtc_chains::{BitcoinBackend, SupplySource};
use ubtc_core::Timestamp;
use ubtc_pipeline::snapshot::{ReserveSnapshotter, SnapshotConfig};
use ubtc_store::Store;

use crate::app::Chains;
use crate::config::{BitcoinBackendKind, ChainSource, Config};

pub fn snapshot_config(config: &Config) -> SnapshotConfig {
    let r = &config.reserves;
    // Both fit: `Config::validate` bounds them.
    SnapshotConfig {
        tolerance_ppm: r.tolerance_ppm,
        max_age_ms: i64::try_from(r.max_age_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        interval_ms: i64::try_from(r.interval_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
    }
}

/// The supply sources of the configured chains: every EVM chain with a token
/// contract, every dev chain with `dev_supply_sats` set.
pub fn supply_sources(config: &Config, chains: &Chains) -> Vec<Arc<dyn SupplySource>> {
    let mut sources: Vec<Arc<dyn SupplySource>> = Vec::new();
    for c in &config.chains {
        match &c.source {
            ChainSource::Evm(e) => {
                if let (Some(evm), Some(_)) = (chains.evm.get(&c.name), &e.token_contract) {
                    sources.push(evm.clone());
                }
            }
            ChainSource::Solana(s) => {
                if let (Some(solana), Some(_)) = (chains.solana.get(&c.name), &s.token_contract) {
                    sources.push(solana.clone());
                }
            }
            ChainSource::Dev(d) => {
                if let (Some((dev, _)), true) = (chains.dev.get(&c.name), d.dev_supply_sats > 0) {
                    sources.push(Arc::new(DevSupply::new(dev.clone(), d.dev_supply_sats)));
                }
            }
        }
    }
    sources
}

/// Starts the snapshot loop: a snapshot at once, then on every new Bitcoin tip and at
/// least every `reserves.interval_secs`. A failing step backs off and retries.
pub fn spawn_snapshotter(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    cancel: &CancellationToken,
    config: &Config,
    store: Arc<dyn Store>,
    bitcoin: Arc<dyn BitcoinBackend>,
    chains: &Chains,
) {
    let supplies = supply_sources(config, chains);
    tracing::info!(
        supply_sources = supplies.len(),
        "reserve snapshots every {} s or new Bitcoin block",
        config.reserves.interval_secs
    );
    let mut snapshotter =
        ReserveSnapshotter::new(bitcoin, supplies, store, snapshot_config(config));
    // Cached reserve answers are dropped after each snapshot, in every `serve` process
    // through Redis (without Redis, only in this process: `ubtc demo`).
    match crate::app::response_cache(config) {
        Ok(cache) => snapshotter = snapshotter.with_cache_invalidator(cache),
        Err(e) => {
            tracing::warn!(error = %e, "no response cache to invalidate; reserve answers refresh with their time to live")
        }
    }
    let snapshotter = Arc::new(snapshotter);
    let poll = Duration::from_millis(config.reserves.poll_ms);
    let cancel = cancel.clone();
    tasks.spawn(async move {
        ubtc_pipeline::run_loop("reserves", cancel, poll, Duration::from_secs(60), || {
            snapshotter.tick(Timestamp::now())
        })
        .await;
        Ok(())
    });
}

/// The Bitcoin backend named by `bitcoin.backend`, or `None` for `dev` (the caller
/// keeps its in-process one).
pub fn bitcoin_backend(config: &Config) -> anyhow::Result<Option<Arc<dyn BitcoinBackend>>> {
    use anyhow::Context;
    use ubtc_chains::evm::rpc::RetryPolicy;
    let b = &config.bitcoin;
    let retry = RetryPolicy {
        timeout: Duration::from_millis(b.timeout_ms),
        ..RetryPolicy::default()
    };
    let backend: Arc<dyn BitcoinBackend> = match b.backend {
        BitcoinBackendKind::Dev => return Ok(None),
        BitcoinBackendKind::Esplora => Arc::new(
            ubtc_chains::esplora::EsploraBackend::new(&b.esplora_url, retry)
                .context("bitcoin.esplora_url")?,
        ),
        BitcoinBackendKind::Core => {
            let auth = (!b.rpc_user.is_empty()).then(|| ubtc_chains::bitcoind::RpcAuth {
                user: b.rpc_user.clone(),
                password: b.rpc_password.expose().to_owned(),
            });
            Arc::new(
                ubtc_chains::bitcoind::BitcoinCoreBackend::new(b.rpc_url.expose(), auth, retry)
                    .context("bitcoin.rpc_url")?,
            )
        }
    };
    tracing::info!(backend = %b.backend, "Bitcoin backend");
    Ok(Some(backend))
}

/// `reserves.max_age_secs` in milliseconds, for the API's stale flag.
pub fn max_age_ms(config: &Config) -> i64 {
    snapshot_config(config).max_age_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_from_configuration() {
        let mut config = Config::default();
        assert!(bitcoin_backend(&config).unwrap().is_none());
        config.bitcoin.backend = BitcoinBackendKind::Esplora;
        config.bitcoin.esplora_url = "http://127.0.0.1:3002".into();
        config.validate().unwrap();
        assert!(bitcoin_backend(&config).unwrap().is_some());
        config.bitcoin.backend = BitcoinBackendKind::Core;
        assert!(config.validate().is_err(), "core needs rpc_url");
        config.bitcoin.rpc_url = crate::config::Secret::new("http://127.0.0.1:8332");
        config.bitcoin.rpc_user = "u".into();
        config.bitcoin.rpc_password = crate::config::Secret::new("p");
        config.validate().unwrap();
        assert!(bitcoin_backend(&config).unwrap().is_some());
    }
}
