//! Who is calling: access tokens of login sessions, stored API keys, and the bootstrap
//! webhooks key (`webhooks.admin_api_key`), plus the admin settings and the IP
//! allowlist.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use rand::RngCore;
use sha2::{Digest, Sha256};
use ubtc_core::Timestamp;
use ubtc_store::LockoutPolicy;

use super::token::{TokenError, TokenKeys};
use super::{ClientInfo, Credential, Principal, Role};
use crate::error::{ApiError, ErrorCode};
use crate::ratelimit::X_API_KEY;
use crate::state::ApiState;

pub const ACCESS_TTL_SECS_DEFAULT: i64 = 15 * 60;
pub const REFRESH_TTL_SECS_DEFAULT: i64 = 12 * 3600;
/// A session ends after this long however often it is refreshed.
pub const SESSION_MAX_SECS_DEFAULT: i64 = 7 * 24 * 3600;
/// Per username AND client address: 5 failures within 15 minutes lock that pair for
/// 15 minutes. Someone guessing from elsewhere does not lock the account's owner out.
pub const USER_IP_LOCKOUT_DEFAULT: LockoutPolicy = LockoutPolicy {
    max_failures: 5,
    window_ms: 15 * 60 * 1000,
    lockout_ms: 15 * 60 * 1000,
};
/// Per username from all addresses together: ten times as many (a guesser spread
/// over many addresses), then the account is locked for everyone.
pub const USER_LOCKOUT_DEFAULT: LockoutPolicy = LockoutPolicy {
    max_failures: 50,
    window_ms: 15 * 60 * 1000,
    lockout_ms: 15 * 60 * 1000,
};
/// Per client address: more failures (an office behind one NAT), same durations.
pub const IP_LOCKOUT_DEFAULT: LockoutPolicy = LockoutPolicy {
    max_failures: 20,
    window_ms: 15 * 60 * 1000,
    lockout_ms: 15 * 60 * 1000,
};
/// Prefix of generated API keys (recognisable in a leaked-secret scan).
pub const API_KEY_PREFIX: &str = "ubtc_ak_";
/// Prefix of refresh tokens.
pub const REFRESH_PREFIX: &str = "ubtc_rt_";

/// Admin settings, built by the binary from `[admin]`.
#[derive(Clone, Debug)]
pub struct AdminAuth {
    pub tokens: TokenKeys,
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
    pub session_max_secs: i64,
    pub allowed_ips: IpAllowlist,
    /// Failures per username and client address (`user:<name>@<address>`).
    pub user_ip_lockout: LockoutPolicy,
    /// Failures per username from every address (`user:<name>`).
    pub user_lockout: LockoutPolicy,
    /// Failures per client address over all usernames (`ip:<address>`).
    pub ip_lockout: LockoutPolicy,
    /// Reverse proxies whose `X-Forwarded-For` is believed (`admin.trusted_proxies`);
    /// empty: the TCP peer is the client.
    pub trusted_proxies: IpAllowlist,
    /// `Secure` flag of the admin page's cookies (`admin.cookie_secure`).
    pub cookie_secure: bool,
    /// Encrypts TOTP secrets at rest; by default under a key derived from the token
    /// secret, or from `admin.totp_key` when set.
    pub totp_cipher: super::totp::TotpCipher,
    /// When failure counters were last pruned (ms; shared by clones).
    pub last_prune_ms: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// Issuer shown by authenticator apps.
    pub totp_issuer: String,
}

impl AdminAuth {
    pub fn new(tokens: TokenKeys) -> Self {
        let totp_cipher = super::totp::TotpCipher::new(tokens.keyed_hash("totp-secret-key", b""));
        Self {
            totp_cipher,
            tokens,
            access_ttl_secs: ACCESS_TTL_SECS_DEFAULT,
            refresh_ttl_secs: REFRESH_TTL_SECS_DEFAULT,
            session_max_secs: SESSION_MAX_SECS_DEFAULT,
            allowed_ips: IpAllowlist::default(),
            user_ip_lockout: USER_IP_LOCKOUT_DEFAULT,
            user_lockout: USER_LOCKOUT_DEFAULT,
            ip_lockout: IP_LOCKOUT_DEFAULT,
            trusted_proxies: IpAllowlist::default(),
            cookie_secure: true,
            last_prune_ms: Default::default(),
            totp_issuer: "Universal Bitcoin".to_owned(),
        }
    }
}

/// Addresses and CIDR blocks allowed to reach admin routes; empty allows all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpAllowlist(Vec<(IpAddr, u8)>);

impl IpAllowlist {
    /// Parses `192.0.2.7`, `10.0.0.0/8`, `::1`, `2001:db8::/32`.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        Self::parse_setting("admin.allowed_ips", entries)
    }

    /// As [`Self::parse`], naming `setting` in errors.
    pub fn parse_setting<S: AsRef<str>>(setting: &str, entries: &[S]) -> Result<Self, String> {
        let mut out = Vec::new();
        for e in entries {
            let e = e.as_ref().trim();
            let (addr, prefix) = match e.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (e, None),
            };
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("{setting}: {e:?} is not an address or CIDR block"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| format!("{setting}: bad prefix length in {e:?}"))?,
            };
            out.push((ip, prefix));
        }
        Ok(Self(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries as CIDR blocks (`10.0.0.0/8`, `192.0.2.7/32`).
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|(ip, p)| format!("{ip}/{p}")).collect()
    }

    pub fn permits(&self, ip: Option<IpAddr>) -> bool {
        self.0.is_empty() || self.contains(ip)
    }

    /// True when `ip` is in one of the entries (false for an empty list).
    pub fn contains(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip.map(|ip| ip.to_canonical()) else {
            return false;
        };
        self.0.iter().any(|(net, prefix)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                u32::from(*n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                u128::from(*n) & mask == u128::from(a) & mask
            }
            _ => false,
        })
    }
}

/// The client address as a lockout counts it: IPv4 as is, IPv6 by its /64 (one
/// customer usually holds a whole /64, so per-/128 counters would be free to evade).
pub fn lockout_addr(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => {
            let net = std::net::Ipv6Addr::from(u128::from(a) & (u128::MAX << 64));
            format!("{net}/64")
        }
    }
}

/// The client of a request: the TCP peer, or, when the peer is one of
/// `trusted_proxies`, the right-most address of `X-Forwarded-For` that is not a
/// trusted proxy (what the nearest proxy saw; entries further left are written by
/// the client and could be anything). An unparsable entry stops the walk at the last
/// trusted hop.
pub fn client_ip(
    peer: Option<IpAddr>,
    forwarded_for: &[&str],
    trusted_proxies: &IpAllowlist,
) -> Option<IpAddr> {
    let peer = peer?;
    if trusted_proxies.is_empty() || !trusted_proxies.contains(Some(peer)) {
        return Some(peer);
    }
    let mut client = peer;
    for entry in forwarded_for
        .iter()
        .rev()
        .flat_map(|h| h.rsplit(','))
        .map(str::trim)
    {
        let Ok(ip) = entry.parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !trusted_proxies.contains(Some(ip)) {
            break;
        }
    }
    Some(client)
}

/// Hex SHA-256: how API keys and refresh tokens are stored (they are random and long,
/// so a fast hash suffices; only the password needs Argon2).
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random secret: `prefix` + 32 random bytes in hex.
pub fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

/// Authenticates the credentials of a request: `authorization: Bearer <access token
/// or API key>` or `x-api-key: <API key>`. Never says which part of a credential was
/// wrong beyond "expired".
pub(crate) async fn authenticate(
    state: &ApiState,
    headers: &HeaderMap,
    client: &ClientInfo,
) -> Result<Principal, ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let api_key = headers
        .get(&X_API_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let principal = |subject: String, roles: Vec<Role>, credential: Credential| Principal {
        subject,
        roles,
        credential,
        ip: client.ip,
        user_agent: client.user_agent.clone(),
    };
    let presented = match (bearer, api_key) {
        (Some(b), _) if b.matches('.').count() == 2 => {
            let admin = state
                .admin
                .as_ref()
                .ok_or_else(|| unauthorized("access tokens are not enabled (admin.jwt_secret)"))?;
            let now = Timestamp::now();
            let claims = admin
                .tokens
                .verify(b, now.as_millis() / 1000)
                .map_err(|e| match e {
                    TokenError::Expired => {
                        ApiError::new(ErrorCode::TokenExpired, "the access token has expired")
                    }
                    _ => unauthorized("invalid access token"),
                })?;
            // Logout, a reused refresh token or a disabled user end the session, and
            // with it the access tokens it issued, before they expire.
            if !state.store.admin_session_active(claims.sid, now).await? {
                return Err(unauthorized("the session of this token has ended"));
            }
            return Ok(principal(
                claims.name,
                vec![claims.role],
                Credential::Session {
                    user_id: claims.sub,
                    session_id: claims.sid,
                },
            ));
        }
        (Some(b), _) => b,
        (None, Some(k)) => k,
        (None, None) => {
            return Err(unauthorized(
                "credentials required: authorization: Bearer <token or API key>, or x-api-key",
            ))
        }
    };
    if let Some(webhook_admin) = state.webhook_admin.as_ref() {
        if webhook_admin.matches_key(presented) {
            return Ok(principal(
                // Narrow on purpose: a static key in a configuration file is easier
                // to leak than an account with TOTP, so it reaches only the webhook
                // routes, never reserve operations or accounts.
                "bootstrap-webhooks".to_owned(),
                vec![Role::Webhooks],
                Credential::BootstrapKey,
            ));
        }
    }
    let key = state
        .store
        .find_api_key(&secret_hash(presented))
        .await?
        .filter(|k| k.usable(Timestamp::now()))
        .ok_or_else(|| unauthorized("invalid, expired or revoked API key"))?;
    let roles: Vec<Role> = key
        .roles
        .iter()
        .filter_map(|r| r.parse::<Role>().ok())
        .collect();
    // Operator keys always expire. One stored without an expiry, or with a longer one
    // (made before the rule, or written to the database by hand), is not honoured.
    let max_ms = super::handlers::OPERATOR_KEY_TTL_MAX_SECS * 1000;
    let lifetime_ok = key
        .expires_at
        .is_some_and(|e| e.as_millis() - key.created_at.as_millis() <= max_ms);
    if roles.contains(&Role::Operator) && !lifetime_ok {
        return Err(unauthorized(
            "this operator API key has no expiry within the maximum lifetime; an operator creates a new one",
        ));
    }
    Ok(principal(
        format!("api-key:{}", key.name),
        roles,
        Credential::ApiKey {
            key_id: key.id,
            owner_id: key.owner_id,
        },
    ))
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientInfo>()
            .cloned()
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn allowlist() {
        let l = IpAllowlist::parse(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]).unwrap();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(l.permits(ip("10.1.2.3")));
        assert!(l.permits(ip("::ffff:10.1.2.3")));
        assert!(l.permits(ip("192.0.2.7")));
        assert!(!l.permits(ip("192.0.2.8")));
        assert!(l.permits(ip("2001:db8::1")));
        assert!(!l.permits(ip("2001:db9::1")));
        assert!(!l.permits(None));
        assert!(IpAllowlist::default().permits(None));
        assert!(IpAllowlist::parse(&["10.0.0.0/33"]).is_err());
        assert!(IpAllowlist::parse(&["nope"]).is_err());
        let all = IpAllowlist::parse(&["0.0.0.0/0"]).unwrap();
        assert!(all.permits(ip("203.0.113.9")));
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let proxies = IpAllowlist::parse(&["10.0.0.0/8"]).unwrap();
        // No trusted proxies: the header is ignored.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &["203.0.113.9"], &IpAllowlist::default()),
            ip("10.0.0.1")
        );
        // A peer that is not a trusted proxy: ignored too.
        assert_eq!(
            client_ip(ip("198.51.100.1"), &["203.0.113.9"], &proxies),
            ip("198.51.100.1")
        );
        // Right-most untrusted entry; a forged left part does not matter.
        assert_eq!(
            client_ip(
                ip("10.0.0.1"),
                &["1.2.3.4, 203.0.113.9", "10.0.0.2"],
                &proxies
            ),
            ip("203.0.113.9")
        );
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &["203.0.113.9, nonsense"], &proxies),
            ip("10.0.0.1")
        );
        assert_eq!(client_ip(ip("10.0.0.1"), &[], &proxies), ip("10.0.0.1"));
    }

    #[test]
    fn ipv6_lockouts_count_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(lockout_addr(a), lockout_addr(b));
        assert_ne!(lockout_addr(a), lockout_addr(c));
        assert_eq!(lockout_addr(a), "2001:db8:1:2::/64");
        assert_eq!(
            lockout_addr("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1"
        );
    }
}
