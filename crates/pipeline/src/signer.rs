//! Who signs statements with the reserve keys.
//!
//! [`ReserveSigner`] is the seam between the pipeline and the keys: the single-key
//! [`LocalKeySigner`] here (embedded default, tests, benchmarks), and the guardian
//! coordinator, which asks M-of-N guardian daemons over HTTP and implements the same
//! trait. Private keys exist only inside a signer.

use async_trait::async_trait;
use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use bitcoin::{Address, CompressedPublicKey, Network};
use ubtc_core::bundle::{GuardianApproval, ProofOfFunds, ReserveSignature};
use ubtc_core::validation::Reason;
use ubtc_core::Statement;

/// What a signer returns for one statement.
#[derive(Clone, Debug)]
pub struct SignedStatement {
    /// One signature of the statement text per reserve address.
    pub reserves: Vec<ReserveSignature>,
    /// Each guardian's answer (empty for a local key).
    pub approvals: Vec<GuardianApproval>,
    pub proof_of_funds: Option<ProofOfFunds>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignFailure {
    /// Might succeed later (guardians down, quorum not reached): retry with back-off.
    Retry(Reason),
    /// Will never succeed for this statement: dead-letter now.
    Fatal(Reason),
}

#[async_trait]
pub trait ReserveSigner: Send + Sync + 'static {
    /// Signs `statement.text()` with every active reserve key. Must be idempotent for
    /// one statement: asking twice may return the same or an equally valid answer,
    /// never a signature of anything else.
    async fn sign(&self, statement: &Statement) -> Result<SignedStatement, SignFailure>;

    /// The reserve addresses this signer signs for, with their descriptors.
    fn reserves(&self) -> Vec<(String, String)>;
}

/// One P2WPKH reserve key held in this process.
pub struct LocalKeySigner {
    signer: ubtc_bitcoin::bip322::SingleKeySigner,
    address: Address,
    descriptor: String,
}

impl std::fmt::Debug for LocalKeySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeySigner")
            .field("secret", &"[redacted]")
            .field("address", &self.address.to_string())
            .finish()
    }
}

impl LocalKeySigner {
    pub fn new(secret: SecretKey, network: Network) -> Self {
        let public = CompressedPublicKey(PublicKey::from_secret_key(
            &Secp256k1::signing_only(),
            &secret,
        ));
        let address = Address::p2wpkh(&public, network);
        let descriptor = ubtc_bitcoin::descriptor::with_checksum(&format!("wpkh({public})"))
            .unwrap_or_else(|_| format!("wpkh({public})"));
        let signer = ubtc_bitcoin::bip322::SingleKeySigner::new(secret, &address)
            .unwrap_or_else(|_| unreachable!("the address was derived from this key"));
        Self {
            signer,
            address,
            descriptor,
        }
    }

    pub fn address(&self) -> &Address {
        &self.address
    }

    pub fn descriptor(&self) -> &str {
        &self.descriptor
    }
}

#[async_trait]
impl ReserveSigner for LocalKeySigner {
    async fn sign(&self, statement: &Statement) -> Result<SignedStatement, SignFailure> {
        let text = statement.text();
        let signature = self
            .signer
            .sign_simple(text.as_bytes())
            .map_err(|e| SignFailure::Fatal(Reason::new("signing_error", e.to_string())))?;
        Ok(SignedStatement {
            reserves: vec![ReserveSignature {
                address: self.address.to_string(),
                descriptor: self.descriptor.clone(),
                signature,
            }],
            approvals: Vec::new(),
            proof_of_funds: None,
        })
    }

    fn reserves(&self) -> Vec<(String, String)> {
        vec![(self.address.to_string(), self.descriptor.clone())]
    }
}
