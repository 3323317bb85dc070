//! TOTP (RFC 6238) through the `totp-rs` crate: HMAC-SHA1, 6 digits, 30-second steps,
//! the step before and after accepted for clock drift. Verification returns the matched
//! step; the caller records it in the store, which refuses a step not later than the
//! last one used, so a code can never be used twice (not even within its own 90-second
//! window).

use totp_rs::{Algorithm, Secret, TOTP};

pub const STEP_SECS: i64 = 30;
pub const DIGITS: u32 = 6;
/// Steps accepted on each side of the current one.
pub const DRIFT_STEPS: i64 = 1;
/// 160-bit secrets, as RFC 4226 recommends.
pub const SECRET_BYTES: usize = 20;

/// A new random secret, base32 (RFC 4648, no padding: what authenticator apps expect).
pub fn generate_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    Secret::Raw(bytes.to_vec()).to_encoded().to_string()
}

/// The `otpauth://` URI an authenticator app imports (usually as a QR code). Written
/// here rather than with the crate's `otpauth` feature, which would pull in `url`.
pub fn otpauth_uri(issuer: &str, username: &str, secret_b32: &str) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    format!(
        "otpauth://totp/{}:{}?secret={secret_b32}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        enc(issuer),
        enc(username),
        enc(issuer)
    )
}

/// The generator for a base32 secret: no skew of its own (the drift window is walked
/// by [`verify`], which needs to know the step that matched).
fn generator(secret_b32: &str) -> Option<TOTP> {
    let secret = Secret::Encoded(secret_b32.trim().to_ascii_uppercase())
        .to_bytes()
        .ok()?;
    // `new` refuses secrets under 128 bits; ours have 160.
    TOTP::new(
        Algorithm::SHA1,
        DIGITS as usize,
        0,
        STEP_SECS as u64,
        secret,
    )
    .ok()
}

pub fn step_of(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(STEP_SECS)
}

fn step_start(step: i64) -> Option<u64> {
    u64::try_from(step.checked_mul(STEP_SECS)?).ok()
}

/// The step whose code `code` is, within ±[`DRIFT_STEPS`] of `unix_secs`, if any.
pub fn verify(secret_b32: &str, code: &str, unix_secs: i64) -> Option<i64> {
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let totp = generator(secret_b32)?;
    let now = step_of(unix_secs);
    // Every candidate is checked (the crate compares in constant time, and there is no
    // early exit) so timing does not tell which step matched.
    let mut found = None;
    for step in now - DRIFT_STEPS..=now + DRIFT_STEPS {
        let Some(t) = step_start(step) else {
            continue;
        };
        if totp.check(code, t) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// The current code (for `ubtc admin`, tests and the browser test).
pub fn current_code(secret_b32: &str, unix_secs: i64) -> Option<String> {
    Some(generator(secret_b32)?.generate(step_start(step_of(unix_secs))?))
}

/// Prefix of a TOTP secret sealed by [`TotpCipher`] in `admin_users.totp_secret`.
pub const SEALED_PREFIX: &str = "enc:v1:";

/// Encrypts TOTP secrets at rest: AES-256-GCM, a random 96-bit nonce per secret, the
/// username as associated data (a sealed secret copied to another account's row does
/// not open). Whoever reads the database alone cannot compute codes. Values without
/// [`SEALED_PREFIX`] (accounts created before, or by `ubtc admin create-user` without
/// `admin.jwt_secret`) are read as plain base32.
#[derive(Clone)]
pub struct TotpCipher {
    key: [u8; 32],
}

impl std::fmt::Debug for TotpCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpCipher([redacted])")
    }
}

impl TotpCipher {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn aead(&self) -> aes_gcm::Aes256Gcm {
        use aes_gcm::KeyInit;
        aes_gcm::Aes256Gcm::new(&self.key.into())
    }

    /// `enc:v1:` + base64(nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, username: &str, secret: &str) -> Result<String, String> {
        use aes_gcm::aead::{Aead, Payload};
        use base64::Engine;
        use rand::RngCore;
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .aead()
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: secret.as_bytes(),
                    aad: username.as_bytes(),
                },
            )
            .map_err(|_| "cannot encrypt the TOTP secret".to_owned())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(format!(
            "{SEALED_PREFIX}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(out)
        ))
    }

    /// The base32 secret of a stored value (sealed or, for older rows, plain).
    pub fn open(&self, username: &str, stored: &str) -> Result<String, String> {
        use aes_gcm::aead::{Aead, Payload};
        use base64::Engine;
        let Some(b64) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_owned());
        };
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(b64)
            .map_err(|_| "sealed TOTP secret is not base64".to_owned())?;
        if raw.len() < 12 + 16 {
            return Err("sealed TOTP secret too short".into());
        }
        let (nonce, ct) = raw.split_at(12);
        let nonce: [u8; 12] = nonce
            .try_into()
            .map_err(|_| "sealed TOTP secret too short".to_owned())?;
        let pt = self
            .aead()
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: ct,
                    aad: username.as_bytes(),
                },
            )
            .map_err(|_| {
                "the TOTP secret does not open with this key (admin.totp_key or admin.jwt_secret changed?)"
                    .to_owned()
            })?;
        String::from_utf8(pt).map_err(|_| "sealed TOTP secret is not text".to_owned())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows (8 digits there; the last 6 are ours).
    #[test]
    fn rfc6238_vectors() {
        let secret = Secret::Raw(b"12345678901234567890".to_vec())
            .to_encoded()
            .to_string();
        for (t, code8) in [
            (59i64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(
                current_code(&secret, t).unwrap(),
                format!("{:06}", code8 % 1_000_000),
                "t={t}"
            );
        }
    }

    #[test]
    fn secrets_and_window() {
        let s = generate_secret();
        assert_eq!(s.len(), 32, "160 bits in base32: {s}");
        assert_eq!(
            Secret::Encoded(s.clone()).to_bytes().unwrap().len(),
            SECRET_BYTES
        );
        let t = 1_700_000_000;
        let code = current_code(&s, t).unwrap();
        assert_eq!(verify(&s, &code, t), Some(step_of(t)));
        assert_eq!(verify(&s, &code, t + 30), Some(step_of(t)));
        assert_eq!(verify(&s, &code, t - 30), Some(step_of(t)));
        assert_eq!(verify(&s, &code, t + 90), None);
        assert_eq!(verify(&s, "12345", t), None);
        assert_eq!(verify(&s, "12345a", t), None);
        assert_eq!(verify("not base32!", &code, t), None);
        assert!(otpauth_uri("Universal Bitcoin", "alice", &s)
            .starts_with("otpauth://totp/Universal%20Bitcoin:alice?secret="));
    }

    #[test]
    fn sealed_secrets_open_only_with_key_and_username() {
        let c = TotpCipher::new([7u8; 32]);
        let secret = generate_secret();
        let sealed = c.seal("alice", &secret).unwrap();
        assert!(sealed.starts_with(SEALED_PREFIX));
        assert!(!sealed.contains(&secret));
        assert_ne!(sealed, c.seal("alice", &secret).unwrap(), "fresh nonce");
        assert_eq!(c.open("alice", &sealed).unwrap(), secret);
        assert!(c.open("bob", &sealed).is_err());
        assert!(TotpCipher::new([8u8; 32]).open("alice", &sealed).is_err());
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(c
            .open("alice", &String::from_utf8(tampered).unwrap())
            .is_err());
        // Rows from before: plain base32 reads as is.
        assert_eq!(c.open("alice", &secret).unwrap(), secret);
    }
}
