//! The little of the Ethereum ABI this crate needs, by hand: hex quantities, Keccak,
//! selectors, and the encoding of the calls and events of the contracts in
//! `contracts/`. Decoders bound-check every offset: log data comes from anybody.

use tiny_keccak::{Hasher, Keccak};

/// `ValidationRequested(address indexed payer, uint256 amount, string message)`.
pub const VALIDATION_REQUESTED_SIGNATURE: &str = "ValidationRequested(address,uint256,string)";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbiError {
    #[error("not 0x-prefixed hex: {0:?}")]
    NotHex(String),
    #[error("quantity {0} does not fit")]
    Overflow(String),
    #[error("ABI data too short or offset out of range")]
    OutOfRange,
    #[error("not a 20-byte address: {0:?}")]
    BadAddress(String),
}

pub fn keccak256(bytes: &[u8]) -> [u8; 32] {
    let mut k = Keccak::v256();
    k.update(bytes);
    let mut out = [0u8; 32];
    k.finalize(&mut out);
    out
}

/// The 4-byte function selector of a canonical signature such as `totalSupply()`.
pub fn selector(signature: &str) -> [u8; 4] {
    let h = keccak256(signature.as_bytes());
    [h[0], h[1], h[2], h[3]]
}

/// `0x`-prefixed lowercase hex of the event topic for a canonical signature.
pub fn event_topic(signature: &str) -> String {
    format!("0x{}", hex::encode(keccak256(signature.as_bytes())))
}

pub fn decode_hex(s: &str) -> Result<Vec<u8>, AbiError> {
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| AbiError::NotHex(s.to_owned()))?;
    hex::decode(digits).map_err(|_| AbiError::NotHex(s.to_owned()))
}

/// Parses a JSON-RPC quantity (`0x1a`, no leading zeros required).
pub fn quantity_u128(s: &str) -> Result<u128, AbiError> {
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| AbiError::NotHex(s.to_owned()))?;
    if digits.is_empty() {
        return Err(AbiError::NotHex(s.to_owned()));
    }
    u128::from_str_radix(digits, 16).map_err(|e| match e.kind() {
        std::num::IntErrorKind::PosOverflow => AbiError::Overflow(s.to_owned()),
        _ => AbiError::NotHex(s.to_owned()),
    })
}

pub fn quantity_u64(s: &str) -> Result<u64, AbiError> {
    u64::try_from(quantity_u128(s)?).map_err(|_| AbiError::Overflow(s.to_owned()))
}

pub fn to_quantity(n: u64) -> String {
    format!("0x{n:x}")
}

/// Checks a 20-byte address and returns it lowercase (`0x` + 40 hex digits), the one
/// form used for comparisons and payer names.
pub fn normalize_address(s: &str) -> Result<String, AbiError> {
    let bytes = decode_hex(s).map_err(|_| AbiError::BadAddress(s.to_owned()))?;
    if bytes.len() != 20 {
        return Err(AbiError::BadAddress(s.to_owned()));
    }
    Ok(format!("0x{}", hex::encode(bytes)))
}

fn word(data: &[u8], index: usize) -> Result<&[u8], AbiError> {
    let start = index.checked_mul(32).ok_or(AbiError::OutOfRange)?;
    data.get(start..start + 32).ok_or(AbiError::OutOfRange)
}

/// A 32-byte big-endian word as u128; larger values are an error.
pub fn word_u128(w: &[u8]) -> Result<u128, AbiError> {
    if w.len() != 32 || w[..16].iter().any(|b| *b != 0) {
        return Err(AbiError::Overflow(format!("0x{}", hex::encode(w))));
    }
    let mut b = [0u8; 16];
    b.copy_from_slice(&w[16..]);
    Ok(u128::from_be_bytes(b))
}

fn word_usize(w: &[u8]) -> Result<usize, AbiError> {
    usize::try_from(word_u128(w)?).map_err(|_| AbiError::OutOfRange)
}

/// The address in the low 20 bytes of a 32-byte topic or word, lowercase.
pub fn word_address(w: &[u8]) -> Result<String, AbiError> {
    if w.len() != 32 || w[..12].iter().any(|b| *b != 0) {
        return Err(AbiError::BadAddress(format!("0x{}", hex::encode(w))));
    }
    Ok(format!("0x{}", hex::encode(&w[12..])))
}

/// Decodes the non-indexed part of `ValidationRequested`: `(uint256 amount, string
/// message)`. The message comes back as raw bytes: checking them is the caller's job.
pub fn decode_validation_requested(data: &[u8]) -> Result<(u128, Vec<u8>), AbiError> {
    let amount = word_u128(word(data, 0)?)?;
    let offset = word_usize(word(data, 1)?)?;
    let len_word = data.get(offset..offset + 32).ok_or(AbiError::OutOfRange)?;
    let len = word_usize(len_word)?;
    let start = offset + 32;
    let end = start.checked_add(len).ok_or(AbiError::OutOfRange)?;
    let message = data.get(start..end).ok_or(AbiError::OutOfRange)?;
    Ok((amount, message.to_vec()))
}

/// ABI words for a function call or constructor arguments.
#[derive(Default)]
pub struct Encoder {
    head: Vec<[u8; 32]>,
    tail: Vec<u8>,
    dynamic: Vec<(usize, Vec<u8>)>,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn uint(mut self, v: u128) -> Self {
        let mut w = [0u8; 32];
        w[16..].copy_from_slice(&v.to_be_bytes());
        self.head.push(w);
        self
    }

    pub fn address(mut self, addr: &str) -> Result<Self, AbiError> {
        let bytes = decode_hex(&normalize_address(addr)?)?;
        let mut w = [0u8; 32];
        w[12..].copy_from_slice(&bytes);
        self.head.push(w);
        Ok(self)
    }

    /// A `string` or `bytes` argument.
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.dynamic.push((self.head.len(), b.to_vec()));
        self.head.push([0u8; 32]);
        self
    }

    /// The encoded arguments (no selector).
    pub fn finish(mut self) -> Vec<u8> {
        let head_len = self.head.len() * 32;
        for (slot, b) in std::mem::take(&mut self.dynamic) {
            let offset = (head_len + self.tail.len()) as u128;
            self.head[slot][16..].copy_from_slice(&offset.to_be_bytes());
            let mut len = [0u8; 32];
            len[16..].copy_from_slice(&(b.len() as u128).to_be_bytes());
            self.tail.extend_from_slice(&len);
            self.tail.extend_from_slice(&b);
            let pad = (32 - b.len() % 32) % 32;
            self.tail.extend(std::iter::repeat_n(0u8, pad));
        }
        let mut out: Vec<u8> = self.head.iter().flatten().copied().collect();
        out.extend_from_slice(&self.tail);
        out
    }

    /// Selector of `signature` followed by the encoded arguments.
    pub fn call(self, signature: &str) -> Vec<u8> {
        let mut out = selector(signature).to_vec();
        out.extend(self.finish());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_selectors_and_topics() {
        assert_eq!(hex::encode(selector("totalSupply()")), "18160ddd");
        assert_eq!(
            hex::encode(selector("transfer(address,uint256)")),
            "a9059cbb"
        );
        assert_eq!(
            event_topic("Transfer(address,address,uint256)"),
            "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
        );
    }

    #[test]
    fn string_round_trip_and_bounds() {
        for msg in [&b""[..], b"hello", &[0xffu8; 33][..], &[7u8; 64][..]] {
            let data = Encoder::new().uint(12345).bytes(msg).finish();
            assert_eq!(data.len() % 32, 0);
            assert_eq!(
                decode_validation_requested(&data).unwrap(),
                (12345, msg.to_vec())
            );
        }
        let data = Encoder::new().uint(1).bytes(b"hello").finish();
        assert_eq!(
            decode_validation_requested(&data[..70]),
            Err(AbiError::OutOfRange)
        );
        let mut bad = data.clone();
        bad[63] = 0xff; // offset past the end
        assert_eq!(decode_validation_requested(&bad), Err(AbiError::OutOfRange));
        let mut huge = data;
        huge[64..96].copy_from_slice(&[0xff; 32]); // length overflows
        assert!(decode_validation_requested(&huge).is_err());
    }

    #[test]
    fn quantities_and_addresses() {
        assert_eq!(quantity_u64("0x0").unwrap(), 0);
        assert_eq!(quantity_u64("0x1a").unwrap(), 26);
        assert!(quantity_u64("1a").is_err());
        assert!(quantity_u64("0x").is_err());
        assert!(matches!(
            quantity_u64("0x10000000000000000"),
            Err(AbiError::Overflow(_))
        ));
        assert_eq!(
            normalize_address("0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266").unwrap(),
            "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
        );
        assert!(normalize_address("0x1234").is_err());
    }
}
