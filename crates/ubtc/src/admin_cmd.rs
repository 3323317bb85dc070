//! `ubtc admin …`: account bootstrap and audit-log checks from the command line, and
//! the `[admin]` settings turned into the API's `AdminAuth`.
//!
//! Passwords never come from argv (visible in `ps` and shell history): from a file,
//! from a named environment variable, or read from stdin.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use ubtc_api::admin::auth::{random_secret, secret_hash, API_KEY_PREFIX};
use ubtc_api::admin::{token::TokenKeys, totp, AdminAuth, IpAllowlist, Role};
use ubtc_core::Timestamp;
use ubtc_store::{DisableOutcome, LockoutPolicy, NewApiKey, NewAuditEntry, Store};

use crate::config::Config;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Creates an account with an initial password. It has no second factor yet: the
    /// user enrols at the first login (a TOTP secret shown to them alone, a code to
    /// confirm it, and a password of their own).
    CreateUser(CreateUserArgs),
    /// Disables an account and ends its sessions (never the last enabled admin).
    DisableUser {
        #[arg(long)]
        username: String,
    },
    /// Lists the accounts.
    ListUsers,
    /// Creates an admin or auditor API key for a program and prints it (once; only its
    /// hash is stored). Operator keys are not made here: an operator logged in with
    /// TOTP creates them (`POST /v1/admin/api-keys`), and they expire.
    CreateApiKey {
        #[arg(long)]
        name: String,
        /// Role(s) of the key; repeat for several.
        #[arg(long = "role", required = true)]
        roles: Vec<Role>,
        /// The key is refused this many days after its creation (1 to 3660);
        /// without it the key does not expire.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// Revokes an API key by id.
    RevokeApiKey {
        #[arg(long)]
        id: uuid::Uuid,
    },
    /// Re-checks the hash chain of the audit log. Exit 0 when intact; 1 naming the
    /// first broken record.
    AuditVerify,
    /// Reserve operations: deposit, mint, burn, release, ops (docs/reserve-ops.md).
    #[command(flatten)]
    Reserve(crate::reserve_ops_cmd::ReserveCommand),
}

#[derive(Args)]
pub struct CreateUserArgs {
    #[arg(long)]
    pub username: String,
    /// admin, operator or auditor.
    #[arg(long)]
    pub role: Role,
    /// Read the password from this file (first line).
    #[arg(long, conflicts_with = "password_env")]
    pub password_file: Option<PathBuf>,
    /// Read the password from this environment variable (not a `UBTC_` one: those are
    /// settings). Without either option, the password is read from stdin.
    #[arg(long)]
    pub password_env: Option<String>,
}

/// `[admin]` as the API's settings; `None` when `admin.jwt_secret` is empty.
pub fn admin_auth(config: &Config) -> Result<Option<AdminAuth>, String> {
    let a = &config.admin;
    let allowed_ips = IpAllowlist::parse(
        &a.allowed_ips
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>(),
    )?;
    if a.jwt_secret.expose().is_empty() {
        return Ok(None);
    }
    let tokens = TokenKeys::new(
        a.jwt_secret.expose().as_bytes(),
        &a.jwt_issuer,
        &a.jwt_audience,
    )?;
    let secs = |name: &str, v: u64| -> Result<i64, String> {
        // Up to a year: longer would be a mistake, and keeps millisecond sums in range.
        if v == 0 || v > 366 * 24 * 3600 {
            return Err(format!("admin.{name} must be between 1 and 31622400"));
        }
        Ok(v as i64)
    };
    let lockout_ms = secs("lockout_secs", a.lockout_secs)? * 1000;
    if a.max_login_failures == 0 {
        return Err("admin.max_login_failures must be at least 1".into());
    }
    if a.max_login_failures_per_user < a.max_login_failures {
        return Err(
            "admin.max_login_failures_per_user must be at least admin.max_login_failures".into(),
        );
    }
    let trusted_proxies = IpAllowlist::parse_setting(
        "admin.trusted_proxies",
        &a.trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>(),
    )?;
    let cookie_secure = match a.cookie_secure.trim() {
        "true" => true,
        "false" => false,
        // Plain http on one machine (`ubtc demo`, a laptop): browsers may refuse to
        // send a Secure cookie there. Anything reachable from elsewhere gets it.
        "auto" | "" => !config.server.listen.ip().is_loopback(),
        other => {
            return Err(format!(
                "admin.cookie_secure: {other:?} (one of true, false, auto)"
            ))
        }
    };
    let mut auth = AdminAuth::new(tokens);
    auth.access_ttl_secs = secs("access_ttl_secs", a.access_ttl_secs)?;
    auth.refresh_ttl_secs = secs("refresh_ttl_secs", a.refresh_ttl_secs)?;
    auth.session_max_secs = secs("session_max_secs", a.session_max_secs)?;
    auth.allowed_ips = allowed_ips;
    auth.user_ip_lockout = LockoutPolicy {
        max_failures: a.max_login_failures,
        window_ms: lockout_ms,
        lockout_ms,
    };
    auth.user_lockout = LockoutPolicy {
        max_failures: a.max_login_failures_per_user,
        window_ms: lockout_ms,
        lockout_ms,
    };
    auth.trusted_proxies = trusted_proxies;
    let totp_key = a.totp_key.expose();
    if !totp_key.is_empty() {
        // The same derivation as the default, under this key instead of jwt_secret.
        let keys = TokenKeys::new(totp_key.as_bytes(), "", "")
            .map_err(|_| "admin.totp_key must have at least 32 bytes".to_owned())?;
        auth.totp_cipher = totp::TotpCipher::new(keys.keyed_hash("totp-secret-key", b""));
    }
    auth.cookie_secure = cookie_secure;
    auth.ip_lockout = LockoutPolicy {
        max_failures: a.max_login_failures.saturating_mul(4),
        window_ms: lockout_ms,
        lockout_ms,
    };
    Ok(Some(auth))
}

fn read_password(args: &CreateUserArgs) -> anyhow::Result<String> {
    let raw = if let Some(path) = &args.password_file {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read password file {}", path.display()))?
    } else if let Some(name) = &args.password_env {
        std::env::var(name).with_context(|| format!("environment variable {name} is not set"))?
    } else {
        eprint!("password for {} (one line on stdin): ", args.username);
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        line
    };
    Ok(raw.lines().next().unwrap_or("").to_owned())
}

/// Appends the audit record of a command-line action (actor `cli`).
async fn audit(
    store: &dyn Store,
    action: &str,
    target: String,
    old_value: Option<String>,
    new_value: Option<String>,
) -> anyhow::Result<()> {
    store
        .append_audit(
            &NewAuditEntry {
                actor: "cli".to_owned(),
                action: action.to_owned(),
                target: Some(target),
                old_value,
                new_value,
                ip: None,
                user_agent: Some(format!("ubtc/{} admin", env!("CARGO_PKG_VERSION"))),
            },
            Timestamp::now(),
        )
        .await
        .context("cannot write the audit record")?;
    Ok(())
}

pub async fn run(config: &Config, command: AdminCommand) -> anyhow::Result<()> {
    let store = crate::app::open_store(config).await?;
    match command {
        AdminCommand::Reserve(cmd) => crate::reserve_ops_cmd::run_cli(config, store, cmd).await,
        AdminCommand::CreateUser(args) => {
            let pw = read_password(&args)?;
            let (name, role) = (args.username.clone(), args.role);
            let new =
                tokio::task::spawn_blocking(move || ubtc_api::admin::new_account(&name, role, &pw))
                    .await?
                    .map_err(anyhow::Error::msg)?;
            let user = store
                .create_admin_user(&new, Timestamp::now())
                .await?
                .with_context(|| format!("a user named {:?} exists", args.username))?;
            audit(
                store.as_ref(),
                "user.create",
                format!("user:{}", user.username),
                None,
                Some(
                    serde_json::json!({ "username": user.username, "role": user.role }).to_string(),
                ),
            )
            .await?;
            println!("user:      {} ({})", user.username, user.role);
            println!("enrolment: at the first login (/admin, or POST /v1/admin/login) the user");
            println!("           gets a TOTP secret, confirms a code and sets a password of");
            println!("           their own; until then the account opens no session");
            Ok(())
        }
        AdminCommand::DisableUser { username } => {
            match store
                .disable_admin_user(&username, Timestamp::now())
                .await?
            {
                DisableOutcome::Disabled => {}
                DisableOutcome::NotFound => anyhow::bail!("no enabled user named {username:?}"),
                DisableOutcome::LastAdmin => anyhow::bail!(
                    "{username:?} is the last enabled admin; create another admin first"
                ),
            }
            audit(
                store.as_ref(),
                "user.disable",
                format!("user:{username}"),
                Some(r#"{"disabled":false}"#.to_owned()),
                Some(r#"{"disabled":true}"#.to_owned()),
            )
            .await?;
            println!("user {username} disabled; its sessions are revoked");
            Ok(())
        }
        AdminCommand::ListUsers => {
            for u in store.list_admin_users().await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    u.username,
                    u.role,
                    if u.totp_secret.is_some() {
                        "totp"
                    } else {
                        "not-enrolled"
                    },
                    if u.disabled_at.is_some() {
                        "disabled"
                    } else {
                        "enabled"
                    }
                );
            }
            Ok(())
        }
        AdminCommand::CreateApiKey {
            name,
            mut roles,
            expires_in_days,
        } => {
            let name = name.trim().to_owned();
            if name.is_empty() || name.len() > 100 {
                anyhow::bail!("--name must have 1 to 100 characters");
            }
            if roles.contains(&Role::Operator) {
                anyhow::bail!(
                    "operator keys are created by an operator logged in with TOTP \
                     (POST /v1/admin/api-keys or the Keys tab of /admin), and they expire"
                );
            }
            let expires_at = match expires_in_days {
                None => None,
                Some(d) if (1..=3660).contains(&d) => Some(Timestamp(
                    Timestamp::now().as_millis() + i64::from(d) * 86_400_000,
                )),
                Some(_) => anyhow::bail!("--expires-in-days must be 1 to 3660"),
            };
            roles.sort();
            roles.dedup();
            let key = random_secret(API_KEY_PREFIX);
            let roles: Vec<String> = roles.iter().map(|r| r.as_str().to_owned()).collect();
            let stored = store
                .create_api_key(
                    &NewApiKey {
                        name,
                        key_hash: secret_hash(&key),
                        roles,
                        created_by: "cli".to_owned(),
                        // A key of the system: no account owns it, so disabling an
                        // account does not revoke it.
                        owner_id: None,
                        expires_at,
                    },
                    Timestamp::now(),
                )
                .await?;
            audit(
                store.as_ref(),
                "api_key.create",
                format!("api_key:{}", stored.id),
                None,
                Some(
                    serde_json::json!({
                        "name": stored.name,
                        "roles": stored.roles,
                        "expires_at": stored.expires_at,
                    })
                    .to_string(),
                ),
            )
            .await?;
            println!("id:    {}", stored.id);
            println!("roles: {}", stored.roles.join(","));
            if let Some(e) = stored.expires_at {
                println!("expires_at: {} (ms since the epoch)", e.as_millis());
            }
            println!("key:   {key}");
            println!("(shown once: send it as x-api-key or authorization: Bearer)");
            Ok(())
        }
        AdminCommand::RevokeApiKey { id } => {
            if !store.revoke_api_key(id, Timestamp::now()).await? {
                anyhow::bail!("no active API key with id {id}");
            }
            audit(
                store.as_ref(),
                "api_key.revoke",
                format!("api_key:{id}"),
                Some(r#"{"revoked":false}"#.to_owned()),
                Some(r#"{"revoked":true}"#.to_owned()),
            )
            .await?;
            println!("API key {id} revoked");
            Ok(())
        }
        AdminCommand::AuditVerify => {
            let check = store.verify_audit_chain().await?;
            match check.first_broken {
                None => {
                    println!("audit log intact: {} records", check.entries);
                    Ok(())
                }
                Some(id) => anyhow::bail!(
                    "audit log broken: record {id} does not match its hash or its predecessor ({} records before it are intact)",
                    check.entries.saturating_sub(1)
                ),
            }
        }
    }
}
