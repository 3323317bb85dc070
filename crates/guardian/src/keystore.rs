//! A guardian's key, encrypted at rest.
//!
//! The file is JSON: the Argon2id parameters and salt, the AES-256-GCM nonce and the
//! ciphertext of the 32-byte secret key, and the public key in clear (so an operator
//! can read which key a file holds without the passphrase). The public key is also
//! the GCM associated data, so a file whose public key was edited does not decrypt.
//! A wrong passphrase and a damaged file are told apart only as far as GCM can: both
//! fail authentication, and the error says so.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::{Algorithm, Argon2, Params, Version};
use bitcoin::secp256k1::{PublicKey, SecretKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Format tag of a keystore file.
pub const KEYSTORE_FORMAT: &str = "ubtc-guardian-keystore";
pub const KEYSTORE_VERSION: u32 = 1;

/// Argon2id memory cost used for new keystores (OWASP's 19 MiB, 2 passes baseline).
pub const ARGON2_M_COST_KIB: u32 = 19 * 1024;
pub const ARGON2_T_COST: u32 = 2;
pub const ARGON2_P_COST: u32 = 1;
/// Upper bound accepted when reading a file, so a crafted file cannot make us
/// allocate gigabytes.
const ARGON2_M_COST_MAX_KIB: u32 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("cannot read keystore {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write keystore {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("keystore {0} already exists; refusing to overwrite a key")]
    Exists(String),
    #[error("keystore is damaged or not a guardian keystore: {0}")]
    Damaged(String),
    #[error("wrong passphrase, or the keystore was altered (decryption failed authentication)")]
    Decrypt,
    #[error("passphrase is empty")]
    EmptyPassphrase,
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

/// A passphrase, wrapped so it never reaches a log.
pub struct Passphrase(String);

impl Passphrase {
    pub fn new(s: impl Into<String>) -> Result<Self, KeystoreError> {
        let s: String = s.into();
        // A trailing newline from `echo secret > file` is not part of the passphrase.
        let s = s.trim_end_matches(['\n', '\r']).to_owned();
        if s.is_empty() {
            return Err(KeystoreError::EmptyPassphrase);
        }
        Ok(Self(s))
    }

    fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase([redacted])")
    }
}

/// A guardian's secret key. `Debug` never prints it.
#[derive(Clone)]
pub struct GuardianKey {
    secret: SecretKey,
    public: PublicKey,
}

impl std::fmt::Debug for GuardianKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardianKey")
            .field("secret", &"[redacted]")
            .field("public", &self.public.to_string())
            .finish()
    }
}

impl GuardianKey {
    pub fn generate() -> Self {
        Self::from_secret(SecretKey::new(&mut rand::thread_rng()))
    }

    pub fn from_secret(secret: SecretKey) -> Self {
        let public = PublicKey::from_secret_key(&crate::protocol::SECP, &secret);
        Self { secret, public }
    }

    pub fn public(&self) -> PublicKey {
        self.public
    }

    pub fn public_hex(&self) -> String {
        self.public.to_string()
    }

    /// Only the signing code inside this crate sees the secret.
    pub(crate) fn secret(&self) -> &SecretKey {
        &self.secret
    }

    /// This guardian's signature over a reserve registry version (the registry key
    /// ceremony). Domain-separated from everything else this key signs: see
    /// `ubtc_bitcoin::registry`.
    pub fn sign_registry(
        &self,
        version: &ubtc_core::registry::RegistryVersion,
    ) -> ubtc_core::registry::RegistrySignature {
        ubtc_bitcoin::registry::sign(version, &self.secret)
    }
}

/// First 8 bytes of SHA-256 of the compressed public key, hex: a short name for a key
/// that operators compare by eye during the ceremony.
pub fn fingerprint(public: &PublicKey) -> String {
    hex::encode(&Sha256::digest(public.serialize())[..8])
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeystoreFile {
    format: String,
    version: u32,
    public_key: String,
    kdf: KdfParams,
    cipher: CipherParams,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfParams {
    algorithm: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt_hex: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CipherParams {
    algorithm: String,
    nonce_hex: String,
    ciphertext_hex: String,
}

fn derive(
    passphrase: &Passphrase,
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<[u8; 32], KeystoreError> {
    let params = Params::new(m, t, p, Some(32)).map_err(|e| KeystoreError::Kdf(e.to_string()))?;
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.expose(), salt, &mut out)
        .map_err(|e| KeystoreError::Kdf(e.to_string()))?;
    Ok(out)
}

/// Encrypts `key` under `passphrase` into the keystore JSON.
pub fn encrypt(key: &GuardianKey, passphrase: &Passphrase) -> Result<String, KeystoreError> {
    encrypt_with(
        key,
        passphrase,
        ARGON2_M_COST_KIB,
        ARGON2_T_COST,
        ARGON2_P_COST,
    )
}

fn encrypt_with(
    key: &GuardianKey,
    passphrase: &Passphrase,
    m: u32,
    t: u32,
    p: u32,
) -> Result<String, KeystoreError> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut salt);
    rand::thread_rng().fill_bytes(&mut nonce);
    let kek = derive(passphrase, &salt, m, t, p)?;
    let cipher = Aes256Gcm::new_from_slice(&kek).map_err(|e| KeystoreError::Kdf(e.to_string()))?;
    let public_key = key.public_hex();
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &key.secret.secret_bytes(),
                aad: public_key.as_bytes(),
            },
        )
        .map_err(|_| KeystoreError::Kdf("encryption failed".into()))?;
    let file = KeystoreFile {
        format: KEYSTORE_FORMAT.into(),
        version: KEYSTORE_VERSION,
        public_key,
        kdf: KdfParams {
            algorithm: "argon2id".into(),
            m_cost_kib: m,
            t_cost: t,
            p_cost: p,
            salt_hex: hex::encode(salt),
        },
        cipher: CipherParams {
            algorithm: "aes-256-gcm".into(),
            nonce_hex: hex::encode(nonce),
            ciphertext_hex: hex::encode(ciphertext),
        },
    };
    serde_json::to_string_pretty(&file).map_err(|e| KeystoreError::Damaged(e.to_string()))
}

/// Decrypts keystore JSON.
pub fn decrypt(json: &str, passphrase: &Passphrase) -> Result<GuardianKey, KeystoreError> {
    let damaged = |why: &str| KeystoreError::Damaged(why.to_owned());
    let file: KeystoreFile =
        serde_json::from_str(json).map_err(|e| KeystoreError::Damaged(e.to_string()))?;
    if file.format != KEYSTORE_FORMAT || file.version != KEYSTORE_VERSION {
        return Err(damaged("unknown format or version"));
    }
    if file.kdf.algorithm != "argon2id" || file.cipher.algorithm != "aes-256-gcm" {
        return Err(damaged("unsupported algorithm"));
    }
    if file.kdf.m_cost_kib > ARGON2_M_COST_MAX_KIB {
        return Err(damaged("Argon2 memory cost out of range"));
    }
    let salt = hex::decode(&file.kdf.salt_hex).map_err(|_| damaged("salt is not hex"))?;
    let nonce = hex::decode(&file.cipher.nonce_hex).map_err(|_| damaged("nonce is not hex"))?;
    if nonce.len() != 12 {
        return Err(damaged("nonce is not 12 bytes"));
    }
    let ciphertext =
        hex::decode(&file.cipher.ciphertext_hex).map_err(|_| damaged("ciphertext is not hex"))?;
    let kek = derive(
        passphrase,
        &salt,
        file.kdf.m_cost_kib,
        file.kdf.t_cost,
        file.kdf.p_cost,
    )?;
    let cipher = Aes256Gcm::new_from_slice(&kek).map_err(|e| KeystoreError::Kdf(e.to_string()))?;
    let plain = cipher
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &ciphertext,
                aad: file.public_key.as_bytes(),
            },
        )
        .map_err(|_| KeystoreError::Decrypt)?;
    let secret = SecretKey::from_slice(&plain).map_err(|_| damaged("not a secp256k1 key"))?;
    let key = GuardianKey::from_secret(secret);
    if key.public_hex() != file.public_key {
        return Err(damaged("public key does not match the encrypted key"));
    }
    Ok(key)
}

/// Creates a new key and writes its keystore (mode 0600, fsync'd). Refuses to
/// overwrite an existing file: losing a guardian key is not undoable.
pub fn create(path: &Path, passphrase: &Passphrase) -> Result<GuardianKey, KeystoreError> {
    let key = GuardianKey::generate();
    let json = encrypt(&key, passphrase)?;
    write_new(path, &json)?;
    Ok(key)
}

/// Reads and decrypts a keystore file.
pub fn load(path: &Path, passphrase: &Passphrase) -> Result<GuardianKey, KeystoreError> {
    let json = std::fs::read_to_string(path).map_err(|source| KeystoreError::Read {
        path: path.display().to_string(),
        source,
    })?;
    decrypt(&json, passphrase)
}

/// The public key a keystore file says it holds, read without the passphrase (for
/// naming the reserve a set of guardians signs for before any of them starts). Not
/// authenticated: [`load`] fails on a file whose public key was edited.
pub fn read_public(path: &Path) -> Result<PublicKey, KeystoreError> {
    let json = std::fs::read_to_string(path).map_err(|source| KeystoreError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let file: KeystoreFile =
        serde_json::from_str(&json).map_err(|e| KeystoreError::Damaged(e.to_string()))?;
    file.public_key
        .parse()
        .map_err(|_| KeystoreError::Damaged("public key is not a compressed key".into()))
}

fn write_new(path: &Path, contents: &str) -> Result<(), KeystoreError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| KeystoreError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeystoreError::Exists(path.display().to_string())
        } else {
            err(e)
        }
    })?;
    f.write_all(contents.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    Ok(())
}

/// Reads a passphrase from a file, or else from the environment variable `env_name`.
/// Never from the command line: arguments are visible to every user of the host.
pub fn passphrase_from(
    file: Option<&Path>,
    env_name: Option<&str>,
) -> Result<Passphrase, KeystoreError> {
    if let Some(path) = file {
        let s = std::fs::read_to_string(path).map_err(|source| KeystoreError::Read {
            path: path.display().to_string(),
            source,
        })?;
        return Passphrase::new(s);
    }
    if let Some(name) = env_name {
        if let Ok(s) = std::env::var(name) {
            return Passphrase::new(s);
        }
    }
    Err(KeystoreError::EmptyPassphrase)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(key: &GuardianKey, pass: &str) -> String {
        // Small Argon2 cost: these tests check the format, not the KDF's strength.
        encrypt_with(key, &Passphrase::new(pass).unwrap(), 64, 1, 1).unwrap()
    }

    #[test]
    fn round_trip_and_wrong_passphrase() {
        let key = GuardianKey::generate();
        let json = quick(&key, "correct horse");
        let back = decrypt(&json, &Passphrase::new("correct horse").unwrap()).unwrap();
        assert_eq!(back.public(), key.public());
        assert!(matches!(
            decrypt(&json, &Passphrase::new("wrong").unwrap()),
            Err(KeystoreError::Decrypt)
        ));
    }

    #[test]
    fn no_plaintext_key_in_file() {
        let key = GuardianKey::generate();
        let json = quick(&key, "pw");
        let secret_hex = hex::encode(key.secret().secret_bytes());
        assert!(!json.contains(&secret_hex));
        assert!(!json.to_lowercase().contains(&secret_hex));
    }

    #[test]
    fn damaged_files_are_clear_errors() {
        let key = GuardianKey::generate();
        let json = quick(&key, "pw");
        let pass = Passphrase::new("pw").unwrap();
        assert!(matches!(
            decrypt("{not json", &pass),
            Err(KeystoreError::Damaged(_))
        ));
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let ct = v["cipher"]["ciphertext_hex"].as_str().unwrap().to_owned();
        let flipped = format!("{}{}", if &ct[..1] == "0" { "1" } else { "0" }, &ct[1..]);
        v["cipher"]["ciphertext_hex"] = flipped.into();
        assert!(matches!(
            decrypt(&v.to_string(), &pass),
            Err(KeystoreError::Decrypt)
        ));
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["public_key"] = GuardianKey::generate().public_hex().into();
        assert!(matches!(
            decrypt(&v.to_string(), &pass),
            Err(KeystoreError::Decrypt)
        ));
    }

    #[test]
    fn debug_is_redacted() {
        let key = GuardianKey::generate();
        let s = format!("{key:?} {:?}", Passphrase::new("hunter2").unwrap());
        assert!(s.contains("[redacted]"));
        assert!(!s.contains("hunter2"));
        assert!(!s.contains(&hex::encode(key.secret().secret_bytes())));
    }
}
