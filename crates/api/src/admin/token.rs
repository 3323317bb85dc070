//! Access tokens: JWT (RFC 7519) signed with HMAC-SHA256 under `admin.jwt_secret`.
//!
//! Written out here (a few dozen lines over `hmac` and `sha2`, already in the tree)
//! instead of a JWT crate, so the accepted forms are exactly these: the header must
//! name `alg: HS256` (anything else, `none` included, is refused before any MAC is
//! computed), the MAC is compared in constant time, and `iss`, `aud`, `exp` and `iat`
//! are all required and checked.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::Role;

/// Clock skew tolerated on `iat` (a token "issued" slightly in the future).
pub const CLOCK_SKEW_SECS: i64 = 30;

/// The claims of an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user's id.
    pub sub: uuid::Uuid,
    /// The username (the audit log's actor).
    pub name: String,
    pub role: Role,
    /// The login session (refresh-token family): logout revokes it, and with it every
    /// access token it issued.
    pub sid: uuid::Uuid,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm {0:?} refused (only HS256)")]
    Algorithm(String),
    #[error("bad token signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token issued in the future")]
    NotYetValid,
    #[error("token issuer or audience mismatch")]
    WrongAudience,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
}

/// Signs and checks access tokens. `Debug` never shows the key.
#[derive(Clone)]
pub struct TokenKeys {
    secret: Vec<u8>,
    pub issuer: String,
    pub audience: String,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("secret", &"[redacted]")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// Shortest `admin.jwt_secret` accepted (bytes): HS256 keys shorter than the hash
/// output weaken the MAC (RFC 7518 §3.2).
pub const SECRET_MIN_BYTES: usize = 32;

type HmacSha256 = Hmac<Sha256>;

impl TokenKeys {
    pub fn new(secret: &[u8], issuer: &str, audience: &str) -> Result<Self, String> {
        if secret.len() < SECRET_MIN_BYTES {
            return Err(format!(
                "admin.jwt_secret must have at least {SECRET_MIN_BYTES} bytes"
            ));
        }
        Ok(Self {
            secret: secret.to_vec(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; the error case cannot happen.
        HmacSha256::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!())
    }

    /// A keyed hash (HMAC-SHA256 under the token secret) of `data` for `purpose`,
    /// for values that must be recognisable again but not readable or guessable
    /// offline from the database (the usernames of failed logins for accounts that do
    /// not exist). The leading NUL keeps these inputs apart from JWT signing inputs,
    /// which are base64url text.
    pub fn keyed_hash(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(b"\0ubtc-keyed-hash\0");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        // Serialising a struct of strings and integers cannot fail.
        let body = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{body}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    /// Checks a token at `now_secs` (Unix seconds) and returns its claims.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(b), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Header = B64
            .decode(h)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .ok_or(TokenError::Malformed)?;
        if header.alg != "HS256" {
            return Err(TokenError::Algorithm(header.alg));
        }
        let sig = B64.decode(s).map_err(|_| TokenError::Signature)?;
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(b.as_bytes());
        mac.verify_slice(&sig).map_err(|_| TokenError::Signature)?;
        let claims: Claims = B64
            .decode(b)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.iss != self.issuer || claims.aud != self.audience {
            return Err(TokenError::WrongAudience);
        }
        if claims.exp <= now_secs {
            return Err(TokenError::Expired);
        }
        if claims.iat > now_secs + CLOCK_SKEW_SECS {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }
}

/// Encodes a token with any header and claims, unsigned or signed with `key`: for
/// tests that forge tokens (`alg: none`, tampered claims).
pub fn forge(header_json: &str, claims_json: &str, key: Option<&[u8]>) -> String {
    let h = B64.encode(header_json.as_bytes());
    let b = B64.encode(claims_json.as_bytes());
    let sig = match key {
        None => String::new(),
        Some(k) => {
            let mut mac = HmacSha256::new_from_slice(k).unwrap_or_else(|_| unreachable!());
            mac.update(format!("{h}.{b}").as_bytes());
            B64.encode(mac.finalize().into_bytes())
        }
    };
    format!("{h}.{b}.{sig}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(&[7u8; 32], "ubtc", "ubtc-admin").unwrap()
    }

    fn claims(iat: i64, exp: i64) -> Claims {
        Claims {
            iss: "ubtc".into(),
            aud: "ubtc-admin".into(),
            sub: uuid::Uuid::nil(),
            name: "alice".into(),
            role: Role::Admin,
            sid: uuid::Uuid::nil(),
            iat,
            exp,
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let k = keys();
        let t = k.sign(&claims(1000, 1900));
        assert_eq!(k.verify(&t, 1000).unwrap(), claims(1000, 1900));
        assert_eq!(k.verify(&t, 1900), Err(TokenError::Expired));
        assert_eq!(k.verify(&t, 900), Err(TokenError::NotYetValid));
        let other = TokenKeys::new(&[8u8; 32], "ubtc", "ubtc-admin").unwrap();
        assert_eq!(other.verify(&t, 1000), Err(TokenError::Signature));
        let aud = TokenKeys::new(&[7u8; 32], "ubtc", "elsewhere").unwrap();
        assert_eq!(aud.verify(&t, 1000), Err(TokenError::WrongAudience));
        let body = serde_json::to_string(&claims(1000, 1900)).unwrap();
        let none = forge(r#"{"alg":"none"}"#, &body, None);
        assert_eq!(
            k.verify(&none, 1000),
            Err(TokenError::Algorithm("none".into()))
        );
        let hs512 = forge(r#"{"alg":"HS512"}"#, &body, Some(&[7u8; 32]));
        assert!(matches!(
            k.verify(&hs512, 1000),
            Err(TokenError::Algorithm(_))
        ));
        // Claims changed after signing: the MAC no longer matches.
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        let mut c = claims(1000, 1900);
        c.role = Role::Operator;
        parts[1] = B64.encode(serde_json::to_vec(&c).unwrap());
        assert_eq!(k.verify(&parts.join("."), 1000), Err(TokenError::Signature));
        assert!(TokenKeys::new(&[1u8; 31], "a", "b").is_err());
    }
}
