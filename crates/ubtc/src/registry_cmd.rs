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
    /// The previous version (its file, or the exported chain): the changes since it
    /// are shown, and the proposal must link to it.
    #[arg(long)]
    previous: Option<PathBuf>,
    /// Sign without asking (required when standard input is not a terminal).
    #[arg(long)]
    yes: bool,
    /// Sign a version that breaks the guardian's rules (reserve keys that are not
    /// guardian keys of the version, a reserve or guardian set signed by one key).
    #[arg(long)]
    allow_unusual: bool,
    /// The record of versions this keystore signed; default: beside the keystore,
    /// `KEYSTORE.registry-signed.jsonl`.
    #[arg(long)]
    record: Option<PathBuf>,
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

/// One version this keystore signed.
#[derive(serde::Serialize, serde::Deserialize)]
struct SignedRecord {
    version: u64,
    fingerprint: String,
}

/// What a guardian should not sign without `--allow-unusual`.
fn unusual(version: &RegistryVersion) -> Vec<String> {
    let mut out = Vec::new();
    if version.guardian_threshold < 2 && version.guardians.len() > 1 {
        out.push(format!(
            "the next version needs only {} of {} guardian signatures",
            version.guardian_threshold,
            version.guardians.len()
        ));
    }
    for r in &version.reserves {
        if r.status != ubtc_core::registry::ReserveStatus::Active {
            continue;
        }
        if r.threshold < 2 {
            out.push(format!(
                "reserve {} is spendable with one signature",
                r.address
            ));
        }
        for k in &r.keys {
            if !version.guardians.contains(k) {
                out.push(format!(
                    "reserve {} holds key {k}, which is not a guardian key of this version",
                    r.address
                ));
            }
        }
    }
    out
}

/// Prints what changed from `prev` to `next`.
fn print_changes(prev: &RegistryVersion, next: &RegistryVersion) {
    println!("changes since version {}:", prev.version);
    let mut any = false;
    for r in &next.reserves {
        match prev.reserve(&r.address) {
            None => println!("  + reserve {} ({})", r.address, r.status.as_str()),
            Some(p) if p.status != r.status => println!(
                "  ~ reserve {}: {} -> {}",
                r.address,
                p.status.as_str(),
                r.status.as_str()
            ),
            Some(_) => continue,
        }
        any = true;
    }
    for p in &prev.reserves {
        if next.reserve(&p.address).is_none() {
            println!("  - reserve {} (dropped)", p.address);
            any = true;
        }
    }
    for g in next
        .guardians
        .iter()
        .filter(|g| !prev.guardians.contains(g))
    {
        println!("  + guardian {g}");
        any = true;
    }
    for g in prev
        .guardians
        .iter()
        .filter(|g| !next.guardians.contains(g))
    {
        println!("  - guardian {g}");
        any = true;
    }
    if prev.guardian_threshold != next.guardian_threshold {
        println!(
            "  ~ guardian threshold {} -> {}",
            prev.guardian_threshold, next.guardian_threshold
        );
        any = true;
    }
    if !any {
        println!("  (none)");
    }
}

/// Offline: shows what is signed and what changed, checks it against the guardian's
/// rules and its record of signed versions, asks, then adds this guardian's signature
/// to the file. Never signs two different versions with the same number: that would
/// be a fork that both verify.
pub fn sign(args: SignArgs) -> anyhow::Result<()> {
    let mut version = read_one(&args.file)?;
    reg::check_content(&version).map_err(|e| anyhow::anyhow!("{}: {e}", e.code()))?;
    let fingerprint = version.fingerprint();
    // The guardian signs what it reads here: the canonical text is the whole content.
    print!("{}", version.canonical_text());
    match &args.previous {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let chain = parse_registry_file(&bytes)
                .with_context(|| format!("{} is not a registry file", path.display()))?;
            let prev = chain
                .iter()
                .find(|v| v.version + 1 == version.version)
                .with_context(|| {
                    format!(
                        "registry_previous_mismatch: {} has no version {}",
                        path.display(),
                        version.version.saturating_sub(1)
                    )
                })?;
            if version.previous.as_deref() != Some(prev.fingerprint().as_str()) {
                bail!(
                    "registry_previous_mismatch: the proposal does not link to version {} ({})",
                    prev.version,
                    prev.fingerprint()
                );
            }
            print_changes(prev, &version);
        }
        None if version.version > 1 => println!(
            "note: no --previous given; the changes since version {} are not shown",
            version.version - 1
        ),
        None => {}
    }
    let problems = unusual(&version);
    for p in &problems {
        eprintln!("warning: {p}");
    }
    if !problems.is_empty() && !args.allow_unusual {
        bail!(
            "registry_policy_refused: {} (sign anyway with --allow-unusual)",
            problems.join("; ")
        );
    }

    let record_path = args.record.clone().unwrap_or_else(|| {
        let mut name = args.keystore.as_os_str().to_owned();
        name.push(".registry-signed.jsonl");
        PathBuf::from(name)
    });
    let signed_before = read_record(&record_path)?;
    if let Some(other) = signed_before
        .iter()
        .find(|r| r.version == version.version && r.fingerprint != fingerprint)
    {
        bail!(
            "registry_version_already_signed: this keystore already signed version {} with fingerprint {}; \
             signing {fingerprint} too would make a fork ({})",
            other.version,
            other.fingerprint,
            record_path.display()
        );
    }

    if !args.yes {
        use std::io::{BufRead, IsTerminal, Write};
        if !std::io::stdin().is_terminal() {
            bail!("registry_confirmation_required: read the version above, then sign with --yes");
        }
        print!("sign version {} ({fingerprint})? [y/N] ", version.version);
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("registry_confirmation_required: not signed");
        }
    }

    let pass = keystore::passphrase_from(
        args.passphrase_file.as_deref(),
        Some(crate::guardian_cmd::PASSPHRASE_ENV),
    )
    .context("no passphrase: use --passphrase-file or UBTC_GUARDIAN_PASSPHRASE")?;
    let key = keystore::load(&args.keystore, &pass)?;
    // Recorded (and synced) before the signature leaves: a crash in between can only
    // make the guardian refuse a fork it never signed, never forget one it did.
    if !signed_before.iter().any(|r| r.fingerprint == fingerprint) {
        append_record(
            &record_path,
            &SignedRecord {
                version: version.version,
                fingerprint: fingerprint.clone(),
            },
        )?;
    }
    let signature = key.sign_registry(&version);
    reg::add_signature(&mut version, signature);
    std::fs::write(&args.file, version.to_json_pretty())
        .with_context(|| format!("cannot write {}", args.file.display()))?;
    println!("signed by:   {}", key.public_hex());
    println!("fingerprint: {}", version.fingerprint());
    println!("signatures:  {}", version.signatures.len());
    Ok(())
}

fn read_record(path: &Path) -> anyhow::Result<Vec<SignedRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} is damaged at line {}", path.display(), i + 1))
        })
        .collect()
}

fn append_record(path: &Path, record: &SignedRecord) -> anyhow::Result<()> {
    use std::io::Write;
    let mut line = serde_json::to_string(record)?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    f.write_all(line.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
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
