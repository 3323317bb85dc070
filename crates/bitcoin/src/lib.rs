//! Bitcoin message signatures for Universal Bitcoin: BIP-322 (2026 revision, `smp` /
//! `ful` / `pof`) and BIP-137 signing and verification, reserve descriptors, split
//! M-of-N signing for the guardians, PSBT proofs of funds, and the offline verifiers of
//! proof bundles and reserve attestations.
//!
//! What this crate must never do:
//! - touch the network: everything here is pure computation over its inputs, so an
//!   auditor can run the verifier offline;
//! - need more than one private key in one process: multisig signing is split
//!   ([`multisig::sign_partial`] per guardian, [`multisig::combine`] with public data
//!   only);
//! - call a proof valid when it did not check every script it contains: scripts the
//!   small interpreter does not understand are *inconclusive*, never valid.

pub mod attestation;
#[cfg(feature = "bench")]
pub mod bench;
pub mod bip137;
pub mod bip322;
pub mod bundle;
pub mod descriptor;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod multisig;
pub mod pof;
pub mod registry;
pub mod release;
pub mod script;

use std::sync::LazyLock;

use bitcoin::secp256k1::{All, Secp256k1};

/// One secp256k1 context for the whole process: creating one costs far more than a
/// signature, so nothing here builds its own.
pub(crate) static SECP: LazyLock<Secp256k1<All>> = LazyLock::new(Secp256k1::new);

pub use bip322::{verify, Format, Verified, VerifyError};
