//! Money as integers of each chain's smallest unit. Never floats.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An amount of bitcoin in satoshis.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Sats(pub u64);

pub const SATS_PER_BTC: u64 = 100_000_000;

impl Sats {
    pub fn checked_add(self, other: Sats) -> Option<Sats> {
        self.0.checked_add(other.0).map(Sats)
    }
}

impl fmt::Display for Sats {
    /// Formats as BTC with eight decimals, e.g. `1.50000000 BTC`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:08} BTC",
            self.0 / SATS_PER_BTC,
            self.0 % SATS_PER_BTC
        )
    }
}

/// An amount of a token (or a chain's native coin) in base units, with its decimals.
///
/// `u128` holds any realistic supply, including 18-decimal ERC-20 tokens. On the wire
/// the value is a decimal string so that JavaScript clients do not lose precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenAmount {
    #[serde(with = "u128_string")]
    pub base_units: u128,
    pub decimals: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount is not a non-negative whole number of base units")]
    NotAnInteger,
    #[error("amount does not fit in 128 bits")]
    Overflow,
    #[error("amount must be greater than zero")]
    Zero,
}

impl TokenAmount {
    pub fn new(base_units: u128, decimals: u8) -> Self {
        Self {
            base_units,
            decimals,
        }
    }

    /// Parses a decimal string of base units (`"1000"`), as sent by API clients.
    pub fn parse_base_units(s: &str, decimals: u8) -> Result<Self, AmountError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AmountError::NotAnInteger);
        }
        let base_units = s.parse::<u128>().map_err(|_| AmountError::Overflow)?;
        Ok(Self {
            base_units,
            decimals,
        })
    }

    /// The amount converted to satoshis (8 decimals), rounding down. Used to compare a
    /// wrapped-BTC token's supply with the BTC in reserve.
    pub fn to_sats_floor(&self) -> Option<Sats> {
        let converted = match self.decimals.cmp(&8) {
            std::cmp::Ordering::Equal => self.base_units,
            std::cmp::Ordering::Greater => {
                self.base_units / 10u128.checked_pow(u32::from(self.decimals - 8))?
            }
            std::cmp::Ordering::Less => self
                .base_units
                .checked_mul(10u128.checked_pow(u32::from(8 - self.decimals))?)?,
        };
        u64::try_from(converted).ok().map(Sats)
    }
}

impl fmt::Display for TokenAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.decimals == 0 {
            return write!(f, "{}", self.base_units);
        }
        let scale = 10u128.pow(u32::from(self.decimals.min(38)));
        write!(
            f,
            "{}.{:0width$}",
            self.base_units / scale,
            self.base_units % scale,
            width = usize::from(self.decimals)
        )
    }
}

/// Serde helper: `u128` as a decimal string.
pub mod u128_string {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(D::Error::custom("expected a decimal string of base units"));
        }
        s.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sats_display() {
        assert_eq!(Sats(150_000_000).to_string(), "1.50000000 BTC");
        assert_eq!(Sats(1).to_string(), "0.00000001 BTC");
    }

    #[test]
    fn token_conversion() {
        assert_eq!(
            TokenAmount::new(12_345, 8).to_sats_floor(),
            Some(Sats(12_345))
        );
        assert_eq!(
            TokenAmount::new(1_000_000_000_000_000_000, 18).to_sats_floor(),
            Some(Sats(100_000_000))
        );
        assert_eq!(TokenAmount::new(5, 6).to_sats_floor(), Some(Sats(500)));
        assert_eq!(TokenAmount::new(u128::MAX, 0).to_sats_floor(), None);
        assert_eq!(TokenAmount::new(1_500_000, 6).to_string(), "1.500000");
    }

    #[test]
    fn parse_base_units() {
        assert_eq!(
            TokenAmount::parse_base_units("42", 8).unwrap().base_units,
            42
        );
        assert_eq!(
            TokenAmount::parse_base_units("-1", 8),
            Err(AmountError::NotAnInteger)
        );
        assert_eq!(
            TokenAmount::parse_base_units("1.5", 8),
            Err(AmountError::NotAnInteger)
        );
        assert_eq!(
            TokenAmount::parse_base_units(&"9".repeat(40), 8),
            Err(AmountError::Overflow)
        );
        let json = serde_json::to_string(&TokenAmount::new(u128::MAX, 18)).unwrap();
        assert!(json.contains("\"340282366920938463463374607431768211455\""));
    }
}
