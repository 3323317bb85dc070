//! Guardians: independent daemons that each hold one key of the M-of-N reserve
//! addresses, and the coordinator that asks them to co-sign.
//!
//! A guardian ([`server::Guardian`]) re-reads every payment it is asked about from its
//! own chain view, rebuilds the statement, applies its policy, records its approval
//! durably ([`record`]) and only then returns its partial signature; it refuses
//! anything else with a reason code. The [`coordinator::Coordinator`] implements the
//! pipeline's `ReserveSigner`: it asks all guardians at once over HTTP
//! ([`protocol`]), checks every answer against the guardian's registered key, and
//! completes the BIP-322 multisig signature at M. Guardians also make reserve
//! attestations ([`attest`]): each compares the proposed UTXO set and supply with its
//! own nodes before it signs its proof-of-funds partials and its approval; the
//! coordinator's side is [`coordinator_attest::AttestationSigner`].
//!
//! This crate must never hold more than one guardian key in a guardian process, never
//! sign a statement it did not rebuild itself, and never count a partial signature it
//! did not verify. The keys live encrypted at rest ([`keystore`]).

pub mod attest;
pub mod attest_maker;
#[cfg(feature = "bench")]
pub mod bench;
#[cfg(feature = "bench")]
pub mod bench_attest;
pub mod config;
pub mod coordinator;
pub mod coordinator_attest;
pub mod devchain;
pub mod keystore;
pub mod metrics;
pub mod protocol;
pub mod record;
pub mod reserve_ops;
pub mod server;
pub mod solana_view;
mod utxo_check;

pub use config::GuardianConfig;
pub use coordinator::{Coordinator, CoordinatorSettings, GuardianEndpoint};
pub use devchain::{dev_chain_router, DevChainHttpAdapter};
pub use keystore::{GuardianKey, KeystoreError, Passphrase};
pub use server::Guardian;

/// Why a guardian daemon could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum GuardianError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Keystore(#[from] keystore::KeystoreError),
    #[error(transparent)]
    Record(#[from] record::RecordError),
    #[error("chain view: {0}")]
    Chain(#[from] ubtc_chains::ChainError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// Runs a guardian daemon until `cancel` fires. Prints `guardian listening on ADDR`
/// and `guardian key PUBKEY` on stdout once it accepts requests (tests and the demo
/// read the address from there when the configured port is 0).
pub async fn run_guardian(
    config: &GuardianConfig,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<(), GuardianError> {
    let guardian = std::sync::Arc::new(Guardian::from_config(config)?);
    check_evm_views(config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| GuardianError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(GuardianError::Serve)?;
    println!("guardian key {}", guardian.public_key());
    println!("guardian listening on {addr}");
    tracing::info!(%addr, key = %guardian.public_key(), "guardian running");
    let mut router = match reserve_guardian(config)? {
        Some(reserve) => {
            tracing::info!(
                "serving reserve operations at {}",
                reserve_ops::RESERVE_OPS_PATH
            );
            server::router_with_reserve_ops(guardian, std::sync::Arc::new(reserve))
        }
        None => server::router(guardian),
    };
    if config.attest.is_some() {
        let pass = keystore::passphrase_from(
            config.passphrase_file.as_deref(),
            Some(&config.passphrase_env),
        )?;
        let key = keystore::load(&config.keystore, &pass)?;
        if let Some(attest) = attest::AttestGuardian::from_config(config, key)? {
            tracing::info!("serving reserve attestations at {}", attest::ATTEST_PATH);
            router = router.merge(attest::router(std::sync::Arc::new(attest)));
        }
    }
    server::serve(listener, router, cancel)
        .await
        .map_err(GuardianError::Serve)
}

/// Checks every `evm` chain view against its node before the guardian serves: a node
/// that reports another chain id, or has no code at a configured contract, would make
/// this guardian judge payments on the wrong chain, so the start stops. A node that
/// cannot be reached now only warns: requests are refused as `chain_unavailable`
/// until it answers, exactly as when it goes away later.
async fn check_evm_views(config: &GuardianConfig) -> Result<(), GuardianError> {
    for c in config
        .chains
        .iter()
        .filter(|c| c.kind == config::ChainViewKind::Evm)
    {
        let adapter = ubtc_chains::evm::EvmAdapter::new(c.evm_config()?)?;
        match adapter.check().await {
            Ok(()) => {}
            Err(e @ ubtc_chains::ChainError::Misconfigured(_)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(chain = %c.name, error = %e, "cannot check this chain's node now")
            }
        }
    }
    Ok(())
}

/// The reserve-ops service when `guardian.toml` has `[reserve_ops]`. The keystore is
/// read a second time (the signing guardian keeps its copy private).
fn reserve_guardian(
    config: &GuardianConfig,
) -> Result<Option<reserve_ops::ReserveGuardian>, GuardianError> {
    if config.reserve_ops.is_none() {
        return Ok(None);
    }
    let pass = keystore::passphrase_from(
        config.passphrase_file.as_deref(),
        Some(&config.passphrase_env),
    )?;
    let key = keystore::load(&config.keystore, &pass)?;
    Ok(reserve_ops::ReserveGuardian::from_config(config, key)?)
}
