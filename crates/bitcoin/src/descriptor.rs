//! The output descriptors reserve addresses are published with (BIP-380 family), for
//! exactly the shapes we use: `pkh(K)`, `wpkh(K)`, `sh(wpkh(K))`, `tr(K)` (key path
//! only), `wsh(multi|sortedmulti(M,K…))` and `sh(wsh(multi|sortedmulti(M,K…)))`.
//!
//! Keys are hex public keys, optionally preceded by a key origin `[fingerprint/path]`,
//! which is kept for display and otherwise ignored. Extended keys (xpubs) are not
//! accepted: a reserve descriptor names one fixed address.

use bitcoin::secp256k1::XOnlyPublicKey;
use bitcoin::{Address, CompressedPublicKey, Network, PublicKey, ScriptBuf};

use crate::multisig::{MultiPolicy, Wrapping};
use crate::SECP;

const INPUT_CHARSET: &str =
    "0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~ijklmnopqrstuvwxyzABCDEFGH`#\"\\ ";
const CHECKSUM_CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
/// Longest descriptor accepted (a 15-of-15 with origins is under 2 KB).
pub const MAX_DESCRIPTOR_CHARS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    #[error("descriptor is {0} characters; at most {MAX_DESCRIPTOR_CHARS}")]
    TooLong(usize),
    #[error("descriptor contains a character outside the descriptor alphabet")]
    BadCharacter,
    #[error("descriptor checksum is missing")]
    MissingChecksum,
    #[error("descriptor checksum {found:?} is wrong (expected {expected:?})")]
    BadChecksum { found: String, expected: String },
    #[error("unsupported descriptor: {0}")]
    Unsupported(String),
    #[error("bad key {key:?}: {reason}")]
    BadKey { key: String, reason: String },
    #[error("bad multisig: {0}")]
    BadMulti(String),
}

fn polymod(symbols: impl IntoIterator<Item = u64>) -> u64 {
    const GENERATOR: [u64; 5] = [
        0xf5dee51989,
        0xa9fdca3312,
        0x1bab10e32d,
        0x3706b1677a,
        0x644d626ffd,
    ];
    let mut chk: u64 = 1;
    for value in symbols {
        let top = chk >> 35;
        chk = ((chk & 0x7_ffff_ffff) << 5) ^ value;
        for (i, g) in GENERATOR.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    }
    chk
}

/// The BIP-380 checksum (8 characters) of a descriptor without `#…`.
pub fn checksum(desc: &str) -> Result<String, DescriptorError> {
    let mut symbols = Vec::with_capacity(desc.len() * 2 + 8);
    let mut groups = Vec::with_capacity(3);
    for c in desc.chars() {
        let v = INPUT_CHARSET.find(c).ok_or(DescriptorError::BadCharacter)? as u64;
        symbols.push(v & 31);
        groups.push(v >> 5);
        if groups.len() == 3 {
            symbols.push(groups[0] * 9 + groups[1] * 3 + groups[2]);
            groups.clear();
        }
    }
    match groups.as_slice() {
        [a] => symbols.push(*a),
        [a, b] => symbols.push(a * 3 + b),
        _ => {}
    }
    symbols.extend([0u64; 8]);
    let chk = polymod(symbols) ^ 1;
    Ok((0..8)
        .map(|i| CHECKSUM_CHARSET[((chk >> (5 * (7 - i))) & 31) as usize] as char)
        .collect())
}

/// `desc#checksum`.
pub fn with_checksum(desc: &str) -> Result<String, DescriptorError> {
    Ok(format!("{desc}#{}", checksum(desc)?))
}

/// Splits off and checks the checksum. A descriptor without one is refused: reserve
/// descriptors are published with their checksum so that a typo cannot name other keys.
pub fn verify_checksum(s: &str) -> Result<&str, DescriptorError> {
    if s.len() > MAX_DESCRIPTOR_CHARS {
        return Err(DescriptorError::TooLong(s.len()));
    }
    let (desc, found) = s.rsplit_once('#').ok_or(DescriptorError::MissingChecksum)?;
    let expected = checksum(desc)?;
    if found != expected {
        return Err(DescriptorError::BadChecksum {
            found: found.to_string(),
            expected,
        });
    }
    Ok(desc)
}

/// A parsed reserve descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Descriptor {
    Pkh(PublicKey),
    Wpkh(CompressedPublicKey),
    ShWpkh(CompressedPublicKey),
    /// Taproot key path only (BIP-86 tweak, no script tree).
    Tr(XOnlyPublicKey),
    /// `wsh(...)` or `sh(wsh(...))` of `multi` / `sortedmulti`.
    Multi(MultiPolicy, Wrapping),
}

impl Descriptor {
    /// Parses `s`, which must carry a valid checksum.
    pub fn parse(s: &str) -> Result<Self, DescriptorError> {
        let desc = verify_checksum(s)?;
        Self::parse_without_checksum(desc)
    }

    /// Parses a descriptor with no `#checksum` part.
    pub fn parse_without_checksum(desc: &str) -> Result<Self, DescriptorError> {
        if let Some(inner) = strip(desc, "pkh(") {
            return Ok(Descriptor::Pkh(parse_key(inner)?));
        }
        if let Some(inner) = strip(desc, "wpkh(") {
            return Ok(Descriptor::Wpkh(parse_compressed(inner)?));
        }
        if let Some(inner) = strip(desc, "sh(wpkh(").and_then(|s| s.strip_suffix(')')) {
            return Ok(Descriptor::ShWpkh(parse_compressed(inner)?));
        }
        if let Some(inner) = strip(desc, "tr(") {
            if inner.contains(',') {
                return Err(DescriptorError::Unsupported(
                    "tr() with a script tree (only key-path tr(KEY) is supported)".into(),
                ));
            }
            let key = strip_origin(inner);
            let xonly = match key.len() {
                64 => hex::decode(key)
                    .ok()
                    .and_then(|b| XOnlyPublicKey::from_slice(&b).ok()),
                66 => parse_compressed(key)
                    .ok()
                    .map(|k| k.0.x_only_public_key().0),
                _ => None,
            }
            .ok_or_else(|| DescriptorError::BadKey {
                key: key.to_string(),
                reason: "not a 32-byte x-only or 33-byte compressed key".into(),
            })?;
            return Ok(Descriptor::Tr(xonly));
        }
        if let Some(inner) = strip(desc, "sh(wsh(").and_then(|s| s.strip_suffix(')')) {
            return Ok(Descriptor::Multi(parse_multi(inner)?, Wrapping::ShWsh));
        }
        if let Some(inner) = strip(desc, "wsh(") {
            return Ok(Descriptor::Multi(parse_multi(inner)?, Wrapping::Wsh));
        }
        Err(DescriptorError::Unsupported(
            desc.chars().take(40).collect::<String>(),
        ))
    }

    pub fn script_pubkey(&self) -> ScriptBuf {
        match self {
            Descriptor::Pkh(pk) => ScriptBuf::new_p2pkh(&pk.pubkey_hash()),
            Descriptor::Wpkh(pk) => ScriptBuf::new_p2wpkh(&pk.wpubkey_hash()),
            Descriptor::ShWpkh(pk) => {
                ScriptBuf::new_p2sh(&ScriptBuf::new_p2wpkh(&pk.wpubkey_hash()).script_hash())
            }
            Descriptor::Tr(x) => {
                ScriptBuf::new_witness_program(&bitcoin::WitnessProgram::p2tr(&SECP, *x, None))
            }
            Descriptor::Multi(policy, wrapping) => policy.script_pubkey(*wrapping),
        }
    }

    /// Signatures needed and the keys, as hex in descriptor (script) order. Taproot
    /// keys are x-only (64 hex characters).
    pub fn threshold_and_keys(&self) -> (usize, Vec<String>) {
        match self {
            Descriptor::Pkh(pk) => (1, vec![pk.to_string()]),
            Descriptor::Wpkh(pk) | Descriptor::ShWpkh(pk) => (1, vec![pk.to_string()]),
            Descriptor::Tr(x) => (1, vec![x.to_string()]),
            Descriptor::Multi(policy, _) => (
                policy.threshold(),
                policy.keys().iter().map(ToString::to_string).collect(),
            ),
        }
    }

    /// The address on `network`. Every supported descriptor has one.
    pub fn address(&self, network: Network) -> Address {
        // The script is one of the standard templates, so `from_script` cannot fail;
        // fall back to building by hand only to avoid a panic path.
        Address::from_script(&self.script_pubkey(), network).unwrap_or_else(|_| match self {
            Descriptor::Pkh(pk) => Address::p2pkh(pk, network),
            Descriptor::Wpkh(pk) => Address::p2wpkh(pk, network),
            Descriptor::ShWpkh(pk) => Address::p2shwpkh(pk, network),
            Descriptor::Tr(x) => Address::p2tr(&SECP, *x, None, network),
            Descriptor::Multi(policy, _) => Address::p2wsh(&policy.witness_script(), network),
        })
    }
}

fn strip<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    s.strip_prefix(prefix)?.strip_suffix(')')
}

fn strip_origin(key: &str) -> &str {
    match key.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(key, |(_, k)| k),
        None => key,
    }
}

fn parse_key(key: &str) -> Result<PublicKey, DescriptorError> {
    let key = strip_origin(key);
    let bad = |reason: &str| DescriptorError::BadKey {
        key: key.chars().take(140).collect(),
        reason: reason.to_string(),
    };
    if !(key.len() == 66 || key.len() == 130) {
        return Err(bad(
            "expected a hex public key (extended keys are not supported)",
        ));
    }
    let bytes = hex::decode(key).map_err(|_| bad("not hex"))?;
    PublicKey::from_slice(&bytes).map_err(|_| bad("not a valid public key"))
}

fn parse_compressed(key: &str) -> Result<CompressedPublicKey, DescriptorError> {
    let pk = parse_key(key)?;
    CompressedPublicKey::try_from(pk).map_err(|_| DescriptorError::BadKey {
        key: strip_origin(key).to_string(),
        reason: "segwit keys must be compressed".into(),
    })
}

fn parse_multi(inner: &str) -> Result<MultiPolicy, DescriptorError> {
    let (sorted, args) = if let Some(a) = strip(inner, "sortedmulti(") {
        (true, a)
    } else if let Some(a) = strip(inner, "multi(") {
        (false, a)
    } else {
        return Err(DescriptorError::Unsupported(format!(
            "wsh({}…) (only multi and sortedmulti)",
            inner.chars().take(20).collect::<String>()
        )));
    };
    let mut parts = args.split(',');
    let threshold: usize = parts
        .next()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| DescriptorError::BadMulti("threshold is not a number".into()))?;
    let keys = parts.map(parse_compressed).collect::<Result<Vec<_>, _>>()?;
    MultiPolicy::new(threshold, keys, sorted).map_err(|e| DescriptorError::BadMulti(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bip380_checksums() {
        // From BIP-380 and Bitcoin Core's descriptor tests.
        assert_eq!(checksum("raw(deadbeef)").unwrap(), "89f8spxm");
        assert!(verify_checksum("raw(deadbeef)#89f8spxm").is_ok());
        assert!(matches!(
            verify_checksum("raw(deadbeef)#89f8spxn"),
            Err(DescriptorError::BadChecksum { .. })
        ));
        assert_eq!(
            checksum("sh(multi(2,[00000000/111'/222]xprvA1RpRA33e1JQ7ifknakTFpgNXPmW2YvmhqLQYMmrj4xJXXWYpDPS3xz7iAxn8L39njGVyuoseXzU6rcxFLJ8HFsTjSyQbLYnMpCqE2VbFWc,xprv9uPDJpEQgRQfDcW7BkF7eTya6RPxXeJCqCJGHuCJ4GiRVLzkTXBAJMu2qaMWPrS7AANYqdq6vcBcBUdJCVVFceUvJFjaPdGZ2y9WACViL4L/0))").unwrap(),
            "ggrsrxfy"
        );
    }

    #[test]
    fn single_key_descriptors() {
        let k = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";
        for (d, prefix) in [
            (format!("wpkh({k})"), "bc1q"),
            (format!("sh(wpkh({k}))"), "3"),
            (format!("pkh([d34db33f/44'/0'/0']{k})"), "1"),
            (format!("tr({})", &k[2..]), "bc1p"),
        ] {
            let parsed = Descriptor::parse(&with_checksum(&d).unwrap()).unwrap();
            assert!(
                parsed
                    .address(Network::Bitcoin)
                    .to_string()
                    .starts_with(prefix),
                "{d}"
            );
        }
        assert!(matches!(
            Descriptor::parse(&with_checksum("wpkh(xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265TMg7usUDFdp6W1EGMcet8)").unwrap()),
            Err(DescriptorError::BadKey { .. })
        ));
        assert!(Descriptor::parse(&format!("wpkh({k})")).is_err());
    }
}
