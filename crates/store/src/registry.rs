//! The rule the store keeps for the reserve registry: a version is stored only when it
//! verifies against the stored latest one (the signature checks are
//! `ubtc_bitcoin::registry`'s; the store only refuses to keep what fails them).

use ubtc_core::registry::RegistryVersion;

use crate::{StoreError, StoreResult};

pub(crate) fn decode(body: &str) -> StoreResult<RegistryVersion> {
    serde_json::from_str(body)
        .map_err(|e| StoreError::Corrupt(format!("stored registry version: {e}")))
}

/// `next` may follow `last` (none stored yet: `next` must be a self-signed version 1).
pub(crate) fn check_append(
    last: Option<&RegistryVersion>,
    next: &RegistryVersion,
) -> StoreResult<()> {
    let checked = match last {
        None => ubtc_bitcoin::registry::check_genesis(next),
        Some(last) => ubtc_bitcoin::registry::check_next(last, next),
    };
    checked.map_err(|e| StoreError::InvalidInput(format!("{}: {e}", e.code())))
}
