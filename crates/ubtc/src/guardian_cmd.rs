//! `ubtc guardian`, the guardian key ceremony (`ubtc keys guardian-init`,
//! `reserve-create`, `reserve-retire`) and the demo's three guardian processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;
use ubtc_chains::dev::DevBitcoin;
use ubtc_core::Timestamp;
use ubtc_guardian::keystore::{self, Passphrase};
use ubtc_guardian::{Coordinator, CoordinatorSettings, GuardianConfig, GuardianEndpoint};
use ubtc_store::{NewReserveAddress, Store};

use crate::config::{ChainSource, Config};

/// Environment variable holding a guardian keystore passphrase.
pub const PASSPHRASE_ENV: &str = "UBTC_GUARDIAN_PASSPHRASE";

#[derive(Args)]
pub struct GuardianArgs {
    /// The guardian's own configuration file (see docs/guardians.md).
    #[arg(long)]
    config: PathBuf,
}

#[derive(Args)]
pub struct GuardianInitArgs {
    /// Where to write the encrypted keystore (refuses to overwrite).
    #[arg(long)]
    keystore: PathBuf,
    /// File holding the passphrase; else the UBTC_GUARDIAN_PASSPHRASE variable.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct ReserveCreateArgs {
    /// Signatures needed (M).
    #[arg(long)]
    threshold: usize,
    /// Guardian public keys (compressed hex), one per `--guardian`.
    #[arg(long = "guardian", required = true)]
    guardians: Vec<String>,
    #[arg(long)]
    label: Option<String>,
}

#[derive(Args)]
pub struct ReserveRetireArgs {
    address: String,
}

/// `ubtc guardian --config FILE`: runs one guardian daemon until Ctrl-C / SIGTERM.
pub async fn run_guardian(args: GuardianArgs) -> anyhow::Result<()> {
    let config = GuardianConfig::load(&args.config)?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let cancel = CancellationToken::new();
    tokio::spawn(crate::app::shutdown_signal(cancel.clone()));
    ubtc_guardian::run_guardian(&config, cancel).await?;
    Ok(())
}

pub fn guardian_init(args: GuardianInitArgs) -> anyhow::Result<()> {
    let pass = keystore::passphrase_from(args.passphrase_file.as_deref(), Some(PASSPHRASE_ENV))
        .context("no passphrase: use --passphrase-file or UBTC_GUARDIAN_PASSPHRASE")?;
    let key = keystore::create(&args.keystore, &pass)?;
    println!("keystore:    {}", args.keystore.display());
    println!("public key:  {}", key.public_hex());
    println!("fingerprint: {}", keystore::fingerprint(&key.public()));
    Ok(())
}

fn parse_keys(keys: &[String]) -> anyhow::Result<Vec<bitcoin::CompressedPublicKey>> {
    keys.iter()
        .map(|k| {
            k.parse::<bitcoin::CompressedPublicKey>()
                .with_context(|| format!("{k:?} is not a compressed public key"))
        })
        .collect()
}

/// Registers `wsh(sortedmulti(M, keys))` as an active reserve address.
pub async fn register_reserve(
    store: &dyn Store,
    network: bitcoin::Network,
    threshold: usize,
    keys: Vec<bitcoin::CompressedPublicKey>,
    label: Option<String>,
) -> anyhow::Result<(String, String)> {
    use ubtc_bitcoin::multisig::{SortedMulti, Wrapping};
    let policy = SortedMulti::new(threshold, keys)?;
    let address = policy.address(network, Wrapping::Wsh).to_string();
    let descriptor = policy.descriptor(Wrapping::Wsh);
    store
        .add_reserve_address(
            &NewReserveAddress {
                address: address.clone(),
                descriptor: descriptor.clone(),
                kind: "p2wsh-sortedmulti".into(),
                label,
            },
            Timestamp::now(),
        )
        .await
        .context("cannot register the reserve address")?;
    Ok((address, descriptor))
}

pub async fn reserve_create(config: &Config, args: ReserveCreateArgs) -> anyhow::Result<()> {
    let keys = parse_keys(&args.guardians)?;
    let store = crate::app::open_store(config).await?;
    let (address, descriptor) = register_reserve(
        store.as_ref(),
        crate::app::network(config.bitcoin.network),
        args.threshold,
        keys,
        args.label,
    )
    .await?;
    println!("address:    {address}");
    println!("descriptor: {descriptor}");
    Ok(())
}

pub async fn reserve_retire(config: &Config, args: ReserveRetireArgs) -> anyhow::Result<()> {
    let store = crate::app::open_store(config).await?;
    if store
        .retire_reserve_address(&args.address, Timestamp::now())
        .await?
    {
        println!("retired {}", args.address);
        Ok(())
    } else {
        bail!("{} is not an active reserve address", args.address)
    }
}

/// A guardian process started by this one; killed when dropped.
pub struct GuardianChild {
    /// Held, not read: dropping it kills the process (`kill_on_drop`).
    #[allow(dead_code)]
    pub child: tokio::process::Child,
    pub url: String,
    pub public_key: bitcoin::secp256k1::PublicKey,
}

/// Starts `ubtc guardian --config FILE` and waits for it to print its address and key.
pub async fn spawn_guardian(config_path: &Path) -> anyhow::Result<GuardianChild> {
    let exe = std::env::current_exe().context("cannot find the ubtc executable")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("guardian")
        .arg("--config")
        .arg(config_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start a guardian process")?;
    let stdout = child.stdout.take().context("no guardian stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut key = None;
    let read = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(k) = line.strip_prefix("guardian key ") {
                key = Some(k.parse::<bitcoin::secp256k1::PublicKey>()?);
            }
            if let Some(addr) = line.strip_prefix("guardian listening on ") {
                return Ok::<_, anyhow::Error>(addr.to_owned());
            }
        }
        bail!("the guardian exited before it listened")
    };
    let addr = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .context("the guardian did not start within 30 s")??;
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(GuardianChild {
        child,
        url: format!("http://{addr}"),
        public_key: key.context("the guardian did not print its key")?,
    })
}

/// The demo's guardians: three processes, threshold 2, and their coordinator.
pub struct DemoGuardians {
    pub coordinator: Arc<Coordinator>,
    pub children: Vec<GuardianChild>,
    /// The latest published reserve registry version, and the file holding the chain.
    pub registry: ubtc_core::registry::RegistryVersion,
    pub registry_file: PathBuf,
}

impl DemoGuardians {
    /// `/v1/guardians` plus the dev-chain view the guardians read payments from.
    pub fn router(
        &self,
        chains: &HashMap<ubtc_core::ChainId, (ubtc_chains::dev::DevChain, u128)>,
    ) -> axum::Router {
        let dev = chains
            .iter()
            .map(|(id, (chain, _))| (id.clone(), chain.clone()))
            .collect();
        ubtc_guardian::coordinator::guardians_router(self.coordinator.clone())
            .merge(ubtc_guardian::dev_chain_router(dev))
    }
}

/// Creates (first run) or reuses three guardian keystores under `data_dir/guardians`,
/// starts the guardian processes reading the dev chains at `api_base`, registers the
/// 2-of-3 reserve address and funds it on the dev Bitcoin backend.
pub async fn start_demo_guardians(
    config: &Config,
    store: &dyn Store,
    api_base: &str,
    bitcoin: &DevBitcoin,
) -> anyhow::Result<DemoGuardians> {
    let root = config.data_dir.join("guardians");
    std::fs::create_dir_all(&root)?;
    let coordinator_key_path = root.join("coordinator.json");
    // Demo only: the passphrases sit beside the keystores so the demo restarts
    // unattended. A real guardian keeps its passphrase off the host's disk or in a
    // file only its user can read.
    let coordinator_pass = demo_passphrase(&root.join("coordinator.passphrase"))?;
    let coordinator_key = if coordinator_key_path.exists() {
        keystore::load(&coordinator_key_path, &coordinator_pass)?
    } else {
        keystore::create(&coordinator_key_path, &coordinator_pass)?
    };
    // Every keystore first: each guardian's configuration names the 2-of-3 reserve of
    // all three keys, and the demo holds all three keys, so it can run the registry
    // ceremony itself.
    let mut guardian_keys = Vec::new();
    for i in 1..=3 {
        let dir = root.join(format!("g{i}"));
        std::fs::create_dir_all(&dir)?;
        let pass = demo_passphrase(&dir.join("passphrase"))?;
        let ks = dir.join("keystore.json");
        guardian_keys.push(if ks.exists() {
            keystore::load(&ks, &pass)?
        } else {
            keystore::create(&ks, &pass)?
        });
    }
    let reserve_keys: Vec<_> = guardian_keys
        .iter()
        .map(|k| bitcoin::CompressedPublicKey(k.public()))
        .collect();
    let reserve = ubtc_bitcoin::multisig::SortedMulti::new(2, reserve_keys.clone())?
        .descriptor(ubtc_bitcoin::multisig::Wrapping::Wsh);
    let mut children = Vec::new();
    let mut endpoints = Vec::new();
    for i in 1..=3 {
        let dir = root.join(format!("g{i}"));
        let pass_path = dir.join("passphrase");
        let ks = dir.join("keystore.json");
        let chains: String = config
            .chains
            .iter()
            .map(|c| demo_chain_view(c, api_base))
            .collect();
        // The demo's dev Bitcoin backend stays at its start height, so each guardian's
        // own dev view sits at the same tip (real guardians name their own node).
        let toml = format!(
            "listen = \"127.0.0.1:0\"\nkeystore = {:?}\npassphrase_file = {:?}\napprovals = {:?}\ncoordinators = [\"{}\"]\n\
             [bitcoin]\nbackend = \"dev\"\ndev_height = {}\n\
             [policy]\nreserves = [\"{reserve}\"]\nforms = [\"simple\"]\n{chains}",
            ks.display().to_string(),
            pass_path.display().to_string(),
            dir.join("approvals.jsonl").display().to_string(),
            coordinator_key.public_hex(),
            config.bitcoin.dev_start_height,
        );
        let config_path = dir.join("guardian.toml");
        std::fs::write(&config_path, toml)?;
        let child = spawn_guardian(&config_path)
            .await
            .with_context(|| format!("guardian g{i}"))?;
        endpoints.push(GuardianEndpoint {
            name: format!("g{i}"),
            url: child.url.clone(),
            key: child.public_key,
        });
        children.push(child);
    }
    let coordinator = Coordinator::new(
        coordinator_key,
        endpoints,
        2,
        CoordinatorSettings {
            network: crate::app::network(config.bitcoin.network),
            timeout: Duration::from_secs(5),
            request_ttl: Duration::from_secs(60),
        },
    )?;
    for (child, key) in children.iter().zip(&reserve_keys) {
        if bitcoin::CompressedPublicKey(child.public_key) != *key {
            bail!(
                "guardian {} runs another key than its keystore file names",
                child.url
            );
        }
    }
    let (address, _) = register_reserve(
        store,
        crate::app::network(config.bitcoin.network),
        2,
        reserve_keys,
        Some("demo guardians 2-of-3".into()),
    )
    .await?;
    let registry =
        crate::registry_cmd::demo_ceremony(store, config.bitcoin.network, &guardian_keys, 2)
            .await?;
    // A file to pin with `ubtc verify --registry`: the demo is its own publisher.
    let registry_file = config.data_dir.join("registry.json");
    std::fs::write(
        &registry_file,
        crate::registry_cmd::chain_json(&store.list_registry_versions().await?),
    )
    .with_context(|| format!("cannot write {}", registry_file.display()))?;
    let spk = address
        .parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()?
        .assume_checked()
        .script_pubkey();
    bitcoin.fund(&address, &hex::encode(spk.as_bytes()), 200_000_000);
    Ok(DemoGuardians {
        coordinator: Arc::new(coordinator),
        children,
        registry,
        registry_file,
    })
}

/// The `[[chains]]` entry of a demo guardian for one chain of the demo's configuration.
/// Dev chains live in the demo process and are read over its `dev_http` endpoint; an
/// EVM chain (e.g. an anvil node named in `ubtc.toml`) is read from its node with the
/// guardian's `evm` view, with the monitor's own settings (a real guardian names its
/// own node instead).
fn demo_chain_view(c: &crate::config::ChainConfig, api_base: &str) -> String {
    let quoted = |v: &Option<String>, key: &str| {
        v.as_deref()
            .map(|a| format!("{key} = {a:?}\n"))
            .unwrap_or_default()
    };
    match &c.source {
        ChainSource::Evm(e) => format!(
            "[[chains]]\nname = \"{}\"\nkind = \"evm\"\nurl = {:?}\nchain_id = {}\n\
             confirmations = {}\n{}{}max_signatures_per_minute = 600\n",
            c.name,
            e.rpc_url.expose(),
            e.chain_id,
            c.confirmations,
            quoted(&e.payment_contract, "payment_contract"),
            quoted(&e.payment_address, "payment_address"),
        ),
        // The demo's guardians read Solana chains over the demo's dev endpoint as
        // well: the demo runs no Solana node of its own.
        ChainSource::Solana(_) | ChainSource::Dev(_) => format!(
            "[[chains]]\nname = \"{}\"\nkind = \"dev_http\"\nurl = \"{api_base}\"\nmax_signatures_per_minute = 600\n",
            c.name
        ),
    }
}

fn demo_passphrase(path: &Path) -> anyhow::Result<Passphrase> {
    if !path.exists() {
        use rand::RngCore;
        let mut bytes = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut bytes);
        crate::app::write_private(path, &hex::encode(bytes))?;
    }
    Ok(keystore::passphrase_from(Some(path), None)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A 1-of-1 reserve over a fresh key: the `[policy]` every guardian configuration
    /// needs.
    fn one_key_reserve() -> String {
        let key = bitcoin::CompressedPublicKey(ubtc_guardian::GuardianKey::generate().public());
        ubtc_bitcoin::multisig::SortedMulti::new(1, vec![key])
            .unwrap()
            .descriptor(ubtc_bitcoin::multisig::Wrapping::Wsh)
    }

    /// The demo's guardians get an `evm` view for an EVM chain of `ubtc.toml` (and the
    /// dev endpoint for a dev chain), which their own configuration loader accepts.
    #[test]
    fn demo_guardians_watch_evm_chains_with_evm_views() {
        let evm: crate::config::ChainConfig = toml::from_str(
            "name = \"anvil\"\nkind = \"evm\"\nrpc_url = \"http://127.0.0.1:8545\"\n\
             chain_id = 31337\npayment_contract = \"0x5fbdb2315678afecb367f032d93f642f64180aa3\"\n\
             min_payment = \"1000\"\nconfirmations = 2\n",
        )
        .unwrap();
        let dev: crate::config::ChainConfig = toml::from_str(
            "name = \"dev\"\nkind = \"dev\"\npayment_address = \"0xdef\"\n\
             min_payment = \"1000\"\nconfirmations = 3\n",
        )
        .unwrap();
        let text = format!(
            "listen = \"127.0.0.1:0\"\nkeystore = \"k.json\"\napprovals = \"a.jsonl\"\n\
             coordinators = [\"{}\"]\n[bitcoin]\nbackend = \"dev\"\ndev_height = 850000\n\
             [policy]\nreserves = [\"{}\"]\n{}{}",
            ubtc_guardian::GuardianKey::generate().public_hex(),
            one_key_reserve(),
            demo_chain_view(&evm, "http://127.0.0.1:8080"),
            demo_chain_view(&dev, "http://127.0.0.1:8080"),
        );
        let g = GuardianConfig::parse(&text).unwrap();
        let e = g.chains[0].evm_config().unwrap();
        assert_eq!(
            (e.chain_id, e.confirmations, e.rpc_url.as_str()),
            (31337, 2, "http://127.0.0.1:8545")
        );
        assert_eq!(
            e.payment_contract.as_deref(),
            Some("0x5fbdb2315678afecb367f032d93f642f64180aa3")
        );
        assert_eq!(
            g.chains[1].kind,
            ubtc_guardian::config::ChainViewKind::DevHttp
        );
        assert_eq!(g.chains[1].url, "http://127.0.0.1:8080");
    }
}
