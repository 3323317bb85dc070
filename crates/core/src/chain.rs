//! Chains the system accepts payments on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest chain name accepted in configuration and on the API.
pub const CHAIN_ID_MAX_LEN: usize = 32;

/// The configured name of a chain (`ethereum`, `polygon`, `solana`, `dev`, …).
///
/// Lowercase ASCII letters, digits and `-`, starting with a letter, at most
/// [`CHAIN_ID_MAX_LEN`] bytes. It appears verbatim in statements, so its alphabet is
/// deliberately narrow.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChainId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainIdError {
    #[error("chain name is empty")]
    Empty,
    #[error("chain name is longer than {CHAIN_ID_MAX_LEN} bytes")]
    TooLong,
    #[error("chain name must start with a lowercase letter and hold only a-z, 0-9 and '-'")]
    BadCharacter,
}

impl ChainId {
    pub fn parse(name: &str) -> Result<Self, ChainIdError> {
        if name.is_empty() {
            return Err(ChainIdError::Empty);
        }
        if name.len() > CHAIN_ID_MAX_LEN {
            return Err(ChainIdError::TooLong);
        }
        let mut bytes = name.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
        if !first_ok || !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(ChainIdError::BadCharacter);
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ChainId {
    type Err = ChainIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for ChainId {
    type Error = ChainIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ChainId> for String {
    fn from(c: ChainId) -> Self {
        c.0
    }
}

/// The family a chain belongs to; decides which adapter reads it and its units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainKind {
    /// Ethereum, Polygon, Arbitrum, BSC: one adapter, many configurations. Unit: wei.
    Evm,
    /// Solana. Unit: lamports.
    Solana,
    /// The in-process development chain of `ubtc demo` and the tests. Unit: "dev units".
    Dev,
}

impl ChainKind {
    /// Name of the chain's smallest native unit, as shown in the API.
    pub fn native_unit(self) -> &'static str {
        match self {
            ChainKind::Evm => "wei",
            ChainKind::Solana => "lamports",
            ChainKind::Dev => "dev-units",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChainKind::Evm => "evm",
            ChainKind::Solana => "solana",
            ChainKind::Dev => "dev",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names() {
        assert!(ChainId::parse("ethereum").is_ok());
        assert!(ChainId::parse("bsc-testnet2").is_ok());
        assert_eq!(ChainId::parse(""), Err(ChainIdError::Empty));
        assert_eq!(ChainId::parse("Ethereum"), Err(ChainIdError::BadCharacter));
        assert_eq!(ChainId::parse("2chain"), Err(ChainIdError::BadCharacter));
        assert_eq!(
            ChainId::parse("eth\nchain"),
            Err(ChainIdError::BadCharacter)
        );
        assert_eq!(ChainId::parse(&"a".repeat(33)), Err(ChainIdError::TooLong));
        let json = serde_json::to_string(&ChainId::parse("solana").unwrap()).unwrap();
        assert_eq!(json, "\"solana\"");
        assert!(serde_json::from_str::<ChainId>("\"So lana\"").is_err());
    }
}
