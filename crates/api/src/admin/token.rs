//! Access tokens and enrolment tokens: JWT (RFC 7519) signed with HMAC-SHA256 under
//! `admin.jwt_secret`, through the `jsonwebtoken` crate.
//!
//! The accepted forms are narrow: only `alg: HS256` (anything else, `none` included, is
//! refused before the MAC is looked at), `iss`, `aud`, `sub`, `exp` and `iat` are all
//! required, the issuer and the audience must match, and the claims must have exactly
//! the expected fields. An access token and an enrolment token have different
//! audiences, so neither is accepted in place of the other. `exp` and `iat` are
//! checked here against the caller's clock (the crate's own `exp` check reads the
//! system clock, which tests cannot move).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::Role;

/// Clock skew tolerated on `iat` (a token "issued" slightly in the future).
pub const CLOCK_SKEW_SECS: i64 = 30;

/// Suffix of the audience of enrolment tokens (`<audience>#totp-enrol`).
const ENROL_AUDIENCE_SUFFIX: &str = "#totp-enrol";

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

/// The claims of an enrolment token: handed out by a password login of an account
/// that has no second factor yet, and exchanged (with a code of the secret, and a new
/// password) for the account's first session. The secret travels sealed
/// ([`super::totp::TotpCipher`], bound to the username): the token's body is readable
/// by whoever holds it, the secret only by the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolClaims {
    pub iss: String,
    pub aud: String,
    /// The user's id.
    pub sub: uuid::Uuid,
    pub name: String,
    /// The TOTP secret offered, sealed.
    pub totp_sealed: String,
    pub iat: i64,
    pub exp: i64,
}

/// Claims whose lifetime [`TokenKeys`] checks.
trait Lifetime {
    fn iat(&self) -> i64;
    fn exp(&self) -> i64;
}

impl Lifetime for Claims {
    fn iat(&self) -> i64 {
        self.iat
    }
    fn exp(&self) -> i64 {
        self.exp
    }
}

impl Lifetime for EnrolClaims {
    fn iat(&self) -> i64 {
        self.iat
    }
    fn exp(&self) -> i64 {
        self.exp
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm refused (only HS256)")]
    Algorithm,
    #[error("bad token signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token issued in the future")]
    NotYetValid,
    #[error("token issuer or audience mismatch")]
    WrongAudience,
    #[error("cannot encode the token: {0}")]
    Encode(String),
}

/// Signs and checks tokens. `Debug` never shows the key.
#[derive(Clone)]
pub struct TokenKeys {
    secret: Vec<u8>,
    encoding: EncodingKey,
    decoding: DecodingKey,
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
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// The audience of enrolment tokens.
    pub fn enrol_audience(&self) -> String {
        format!("{}{ENROL_AUDIENCE_SUFFIX}", self.audience)
    }

    /// A keyed hash (HMAC-SHA256 under the token secret) of `data` for `purpose`,
    /// for values that must be recognisable again but not readable or guessable
    /// offline from the database (the usernames of failed logins for accounts that do
    /// not exist). The leading NUL keeps these inputs apart from JWT signing inputs,
    /// which are base64url text.
    pub fn keyed_hash(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        // HMAC accepts keys of any length; the error case cannot happen.
        let mut mac = HmacSha256::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!());
        mac.update(b"\0ubtc-keyed-hash\0");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// An access token for `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        self.encode(claims)
    }

    /// An enrolment token for `claims` (whose `aud` should be [`Self::enrol_audience`]).
    pub fn sign_enrolment(&self, claims: &EnrolClaims) -> Result<String, TokenError> {
        self.encode(claims)
    }

    fn encode<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| TokenError::Encode(e.to_string()))
    }

    /// Checks an access token at `now_secs` (Unix seconds) and returns its claims.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Claims, TokenError> {
        self.decode(token, &self.audience, now_secs)
    }

    /// Checks an enrolment token at `now_secs` and returns its claims.
    pub fn verify_enrolment(&self, token: &str, now_secs: i64) -> Result<EnrolClaims, TokenError> {
        self.decode(token, &self.enrol_audience(), now_secs)
    }

    fn decode<T: DeserializeOwned + Lifetime>(
        &self,
        token: &str,
        audience: &str,
        now_secs: i64,
    ) -> Result<T, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[audience]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<T>(token, &self.decoding, &validation).map_err(|e| {
            match e.kind() {
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::Algorithm
                }
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => TokenError::WrongAudience,
                _ => TokenError::Malformed,
            }
        })?;
        let claims = data.claims;
        if claims.exp() <= now_secs {
            return Err(TokenError::Expired);
        }
        if claims.iat() > now_secs + CLOCK_SKEW_SECS {
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
        let t = k.sign(&claims(1000, 1900)).unwrap();
        assert_eq!(k.verify(&t, 1000).unwrap(), claims(1000, 1900));
        assert_eq!(k.verify(&t, 1900), Err(TokenError::Expired));
        assert_eq!(k.verify(&t, 900), Err(TokenError::NotYetValid));
        let other = TokenKeys::new(&[8u8; 32], "ubtc", "ubtc-admin").unwrap();
        assert_eq!(other.verify(&t, 1000), Err(TokenError::Signature));
        let aud = TokenKeys::new(&[7u8; 32], "ubtc", "elsewhere").unwrap();
        assert_eq!(aud.verify(&t, 1000), Err(TokenError::WrongAudience));
        let body = serde_json::to_string(&claims(1000, 1900)).unwrap();
        let none = forge(r#"{"alg":"none"}"#, &body, None);
        // `none` is no algorithm the crate knows: the header does not even parse.
        assert!(matches!(
            k.verify(&none, 1000),
            Err(TokenError::Malformed | TokenError::Algorithm)
        ));
        let none_signed = forge(r#"{"alg":"none"}"#, &body, Some(&[7u8; 32]));
        assert!(k.verify(&none_signed, 1000).is_err());
        // A MAC under the right key with another algorithm: refused for the algorithm.
        let hs512 = forge(r#"{"alg":"HS512"}"#, &body, Some(&[7u8; 32]));
        assert_eq!(k.verify(&hs512, 1000), Err(TokenError::Algorithm));
        // Well signed, but a claim missing or one too many.
        let mut short: serde_json::Value = serde_json::from_str(&body).unwrap();
        short.as_object_mut().unwrap().remove("iat");
        let t2 = forge(r#"{"alg":"HS256"}"#, &short.to_string(), Some(&[7u8; 32]));
        assert_eq!(k.verify(&t2, 1000), Err(TokenError::Malformed));
        let mut long: serde_json::Value = serde_json::from_str(&body).unwrap();
        long["admin"] = serde_json::json!(true);
        let t3 = forge(r#"{"alg":"HS256"}"#, &long.to_string(), Some(&[7u8; 32]));
        assert_eq!(k.verify(&t3, 1000), Err(TokenError::Malformed));
        // The forge helper agrees with the crate on a well-formed token.
        let same = forge(r#"{"alg":"HS256","typ":"JWT"}"#, &body, Some(&[7u8; 32]));
        assert_eq!(k.verify(&same, 1000).unwrap(), claims(1000, 1900));
        // Claims changed after signing: the MAC no longer matches.
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        let mut c = claims(1000, 1900);
        c.role = Role::Operator;
        parts[1] = B64.encode(serde_json::to_vec(&c).unwrap());
        assert_eq!(k.verify(&parts.join("."), 1000), Err(TokenError::Signature));
        assert!(TokenKeys::new(&[1u8; 31], "a", "b").is_err());
        assert!(!format!("{k:?}").contains("7, 7"));
    }

    #[test]
    fn enrolment_and_access_tokens_are_not_interchangeable() {
        let k = keys();
        let enrol = EnrolClaims {
            iss: "ubtc".into(),
            aud: k.enrol_audience(),
            sub: uuid::Uuid::nil(),
            name: "alice".into(),
            totp_sealed: "enc:v1:xyz".into(),
            iat: 1000,
            exp: 1600,
        };
        let e = k.sign_enrolment(&enrol).unwrap();
        assert_eq!(k.verify_enrolment(&e, 1000).unwrap(), enrol);
        // Refused whichever check the crate runs first (the claims' shape or the
        // audience).
        assert!(matches!(
            k.verify(&e, 1000),
            Err(TokenError::WrongAudience | TokenError::Malformed)
        ));
        assert_eq!(k.verify_enrolment(&e, 1600), Err(TokenError::Expired));
        let a = k.sign(&claims(1000, 1900)).unwrap();
        assert!(matches!(
            k.verify_enrolment(&a, 1000),
            Err(TokenError::WrongAudience | TokenError::Malformed)
        ));
        // Same shape, wrong audience: an enrolment token minted for the access audience.
        let mut wrong = enrol.clone();
        wrong.aud = "ubtc-admin".into();
        let w = k.sign_enrolment(&wrong).unwrap();
        assert_eq!(k.verify_enrolment(&w, 1000), Err(TokenError::WrongAudience));
    }
}
