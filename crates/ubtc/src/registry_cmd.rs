//! The reserve registry key ceremony: `ubtc keys registry-propose`, `registry-sign`,
//! `registry-publish` and `registry-export` (docs/guardians.md, "Reserve registry").
//!
//! Proposing reads the store's reserve address registry (what `reserve-create` and
//! `reserve-retire` manage); signing happens where the guardian's keystore is and
//! needs nothing else; publishing hands the signed version to the store, which refuses
//! it unless it verifies against the previous version.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use ubtc_bitcoin::registry::{self as reg, ProposedReserve};
use ubtc_core::registry::{parse_registry_file, RegistryVersion};
use ubtc_core::Timestamp;
use ubtc_guardian::keystore;
use ubtc_store::Store;

use crate::config::Config;

#[derive(Args)]
pub struct ProposeArgs {
    /// Guardian keys (compressed hex) of the new version, one per `--guardian`;
    /// default: the current version's.
    #[arg(long = "guardian")]
    guardians: Vec<String>,
    /// Signatures of those guardians the version after this one needs; default: the
    /// current version's.
    #[arg(long)]
    guardian_threshold: Option<u32>,
    /// Where to write the unsigned proposal (refuses to overwrite).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct SignArgs {
    /// The proposal; the signature is added to it in place.
    file: PathBuf,
    /// The guardian's encrypted keystore.
    #[arg(long)]
    keystore: PathBuf,
    /// File holding the passphrase; else the UBTC_GUARDIAN_PASSPHRASE variable.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct PublishArgs {
    /// The signed version.
    file: PathBuf,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Write to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The unsigned next version built from the store's reserve addresses; `None` when
/// it would be the latest published version again.
pub async fn proposal(
    store: &dyn Store,
    network: ubtc_core::bundle::BitcoinNetwork,
    guardians: Vec<String>,
    guardian_threshold: Option<u32>,
) -> anyhow::Result<Option<RegistryVersion>> {
    let versions = store.list_registry_versions().await?;
    let last = versions.last();
    let guardians = match (guardians.is_empty(), last) {
        (false, _) => guardians,
        (true, Some(l)) => l.guardians.clone(),
        (true, None) => bail!(
            "the first registry version needs its guardians: --guardian KEY (one per guardian)"
        ),
    };
    let threshold = match (guardian_threshold, last) {
        (Some(t), _) => t,
        (None, Some(l)) => l.guardian_threshold,
        (None, None) => bail!("the first registry version needs --guardian-threshold"),
    };
    let mut reserves = Vec::new();
    for a in store.list_all_reserve_addresses().await? {
        let active = a.retired_at.is_none();
        // A retired address recorded without a usable descriptor (older installs)
        // cannot be described in the registry; it signs nothing any more, so it is
        // left out and said. An active one must be describable.
        if !active && ubtc_bitcoin::descriptor::Descriptor::parse(&a.descriptor).is_err() {
            eprintln!(
                "note: retired reserve address {} has no valid descriptor; left out of the registry",
                a.address
            );
            continue;
        }
        reserves.push(ProposedReserve {
            active,
            address: a.address,
            descriptor: a.descriptor,
        });
    }
    let next = reg::propose(last, network, guardians, threshold, &reserves)
        .map_err(|e| anyhow::anyhow!("{}: {e}", e.code()))?;
    // Same content as the latest version: only the number and the link differ.
    if let Some(l) = last {
        let same = RegistryVersion {
            version: l.version,
            previous: l.previous.clone(),
            ..next.clone()
        };
        if same.fingerprint() == l.fingerprint() {
            return Ok(None);
        }
    }
    Ok(Some(next))
}

pub async fn propose(config: &Config, args: ProposeArgs) -> anyhow::Result<()> {
    let store = crate::app::open_store(config).await?;
    let next = proposal(
        store.as_ref(),
        config.bitcoin.network,
        args.guardians,
        args.guardian_threshold,
    )
    .await?
    .context("nothing changed since the latest published registry version")?;
    write_new(&args.out, &next.to_json_pretty())?;
    println!("proposed registry version {}", next.version);
    println!("fingerprint: {}", next.fingerprint());
    println!("written to:  {}", args.out.display());
    Ok(())
}

fn read_one(path: &Path) -> anyhow::Result<RegistryVersion> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut versions = parse_registry_file(&bytes)
        .with_context(|| format!("{} is not a registry version", path.display()))?;
    match versions.len() {
        1 => Ok(versions.remove(0)),
        n => bail!(
            "{} holds {n} versions; sign or publish one at a time",
            path.display()
        ),
    }
}

/// Offline: prints what is signed, then adds this guardian's signature to the file.
pub fn sign(args: SignArgs) -> anyhow::Result<()> {
    let mut version = read_one(&args.file)?;
    reg::check_content(&version).map_err(|e| anyhow::anyhow!("{}: {e}", e.code()))?;
    let pass = keystore::passphrase_from(
        args.passphrase_file.as_deref(),
        Some(crate::guardian_cmd::PASSPHRASE_ENV),
    )
    .context("no passphrase: use --passphrase-file or UBTC_GUARDIAN_PASSPHRASE")?;
    let key = keystore::load(&args.keystore, &pass)?;
    // The guardian signs what it reads here: the canonical text is the whole content.
    print!("{}", version.canonical_text());
    let signature = key.sign_registry(&version);
    reg::add_signature(&mut version, signature);
    std::fs::write(&args.file, version.to_json_pretty())
        .with_context(|| format!("cannot write {}", args.file.display()))?;
    println!("signed by:   {}", key.public_hex());
    println!("fingerprint: {}", version.fingerprint());
    println!("signatures:  {}", version.signatures.len());
    Ok(())
}

pub async fn publish(config: &Config, args: PublishArgs) -> anyhow::Result<()> {
    let version = read_one(&args.file)?;
    let store = crate::app::open_store(config).await?;
    store
        .publish_registry_version(&version, Timestamp::now())
        .await
        .context("the store refused the registry version")?;
    println!("published registry version {}", version.version);
    println!("fingerprint: {}", version.fingerprint());
    Ok(())
}

/// The whole chain, as `GET /v1/reserves/registry` serves it: a file to pin with
/// `ubtc verify --registry`.
pub async fn export(config: &Config, args: ExportArgs) -> anyhow::Result<()> {
    let store = crate::app::open_store(config).await?;
    let versions = store.list_registry_versions().await?;
    let json = chain_json(&versions);
    match args.out {
        Some(path) => std::fs::write(&path, json)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => println!("{json}"),
    }
    Ok(())
}

pub fn chain_json(versions: &[RegistryVersion]) -> String {
    let current = versions.last().map(RegistryVersion::fingerprint);
    serde_json::to_string_pretty(&serde_json::json!({
        "current_fingerprint": current,
        "versions": versions,
    }))
    .unwrap_or_default()
}

fn write_new(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist)", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

/// The demo's ceremony, done in one process because the demo holds all three guardian
/// keystores: when the store's reserve addresses differ from the latest published
/// version (or none is published), proposes the next version with `guardians` and
/// signs it with every key, then publishes it.
pub async fn demo_ceremony(
    store: &dyn Store,
    network: ubtc_core::bundle::BitcoinNetwork,
    keys: &[ubtc_guardian::GuardianKey],
    threshold: u32,
) -> anyhow::Result<RegistryVersion> {
    let guardians = keys.iter().map(|k| k.public_hex()).collect();
    let Some(next) = proposal(store, network, guardians, Some(threshold)).await? else {
        let versions = store.list_registry_versions().await?;
        return versions.last().cloned().context("no registry version");
    };
    let mut signed = next.clone();
    for key in keys {
        reg::add_signature(&mut signed, key.sign_registry(&next));
    }
    store
        .publish_registry_version(&signed, Timestamp::now())
        .await
        .context("the store refused the demo's registry version")?;
    Ok(signed)
}
