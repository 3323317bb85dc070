//! The EIP-712 messages of `contracts/ReserveFeed.sol` and `contracts/SecureWrappedBTC.sol`
//! (see docs/reserve-feed.md): their digests, the guardians' signatures over them, and
//! the calldata of `submit` and the secure `mint`. Shared by whoever signs (guardians)
//! and whoever relays (the worker), so that both hash exactly what the contracts hash.

use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey};

use super::abi::{self, keccak256, selector, AbiError};
use super::minter::address_of;

/// A 32-byte ABI word.
pub type Word = [u8; 32];

pub const FEED_DOMAIN_NAME: &str = "Universal Bitcoin Reserve Feed";
pub const TOKEN_DOMAIN_NAME: &str = "Universal Bitcoin";
pub const DOMAIN_VERSION: &str = "1";

pub const DOMAIN_TYPE: &str =
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)";
pub const REPORT_TYPE: &str = "Report(uint32 btcHeight,bytes32 btcBlockHash,uint64 reserveSats,uint64 otherChainsSupply,bytes32 otherChainsDigest,bytes32 attestationDigest,uint64 timestamp)";
pub const GUARDIAN_SET_TYPE: &str = "GuardianSet(address[] guardians,uint8 threshold,uint64 nonce)";
pub const REGISTRY_TYPE: &str = "Registry(bytes32 fingerprint,uint64 nonce)";
pub const MINT_TYPE: &str =
    "Mint(address recipient,uint256 amount,bytes32 depositTxid,uint32 depositVout,uint256 nonce)";

pub const SUBMIT_SIGNATURE: &str =
    "submit((uint32,bytes32,uint64,uint64,bytes32,bytes32,uint64),bytes)";
pub const MINT_SIGNATURE: &str = "mint(address,uint256,bytes32,uint32,uint256,bytes)";

pub fn word_u128(v: u128) -> Word {
    let mut w = [0u8; 32];
    w[16..].copy_from_slice(&v.to_be_bytes());
    w
}

pub fn word_address(address: &str) -> Result<Word, AbiError> {
    let bytes = abi::decode_hex(&abi::normalize_address(address)?)?;
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(&bytes);
    Ok(w)
}

/// `keccak256(typeHash ‖ fields)`: the EIP-712 struct hash of one-word fields.
pub fn struct_hash(type_string: &str, fields: &[Word]) -> Word {
    let mut buf = keccak256(type_string.as_bytes()).to_vec();
    for f in fields {
        buf.extend_from_slice(f);
    }
    keccak256(&buf)
}

pub fn domain_separator(name: &str, chain_id: u64, contract: &str) -> Result<Word, AbiError> {
    Ok(struct_hash(
        DOMAIN_TYPE,
        &[
            keccak256(name.as_bytes()),
            keccak256(DOMAIN_VERSION.as_bytes()),
            word_u128(chain_id.into()),
            word_address(contract)?,
        ],
    ))
}

/// `keccak256(0x1901 ‖ domainSeparator ‖ structHash)`.
pub fn typed_digest(domain: Word, struct_hash: Word) -> Word {
    let mut buf = Vec::with_capacity(66);
    buf.extend_from_slice(&[0x19, 0x01]);
    buf.extend_from_slice(&domain);
    buf.extend_from_slice(&struct_hash);
    keccak256(&buf)
}

/// A reserve report as the feed stores it (docs/reserve-feed.md, EIP-712 types).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub btc_height: u32,
    pub btc_block_hash: Word,
    pub reserve_sats: u64,
    /// Sum of every other chain's attested supply, in sats.
    pub other_chains_supply: u64,
    pub other_chains_digest: Word,
    pub attestation_digest: Word,
    /// The attestation's time, Unix seconds.
    pub timestamp: u64,
}

impl Report {
    /// The fields as ABI words, in type order (also the inline calldata of `submit`).
    pub fn words(&self) -> [Word; 7] {
        [
            word_u128(self.btc_height.into()),
            self.btc_block_hash,
            word_u128(self.reserve_sats.into()),
            word_u128(self.other_chains_supply.into()),
            self.other_chains_digest,
            self.attestation_digest,
            word_u128(self.timestamp.into()),
        ]
    }

    /// What the guardians sign for the feed at `feed` on chain `chain_id`.
    pub fn digest(&self, chain_id: u64, feed: &str) -> Result<Word, AbiError> {
        Ok(typed_digest(
            domain_separator(FEED_DOMAIN_NAME, chain_id, feed)?,
            struct_hash(REPORT_TYPE, &self.words()),
        ))
    }

    /// Calldata of `submit(report, signatures)`; `signatures` from [`pack_signatures`].
    pub fn submit_call(&self, signatures: &[u8]) -> Vec<u8> {
        let mut out = selector(SUBMIT_SIGNATURE).to_vec();
        for w in self.words() {
            out.extend_from_slice(&w);
        }
        // The report is a static tuple inlined in the head: 7 words, then the offset.
        out.extend_from_slice(&word_u128(8 * 32));
        push_bytes(&mut out, signatures);
        out
    }
}

/// A guardian-signed authorisation of one `SecureWrappedBTC.mint`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MintAuthorisation {
    pub recipient: String,
    /// Token base units: sats (8 decimals).
    pub amount_sats: u128,
    /// The deposit's txid in its displayed (RPC) byte order.
    pub deposit_txid: Word,
    pub deposit_vout: u32,
    pub nonce: u128,
}

impl MintAuthorisation {
    fn fields(&self) -> Result<[Word; 5], AbiError> {
        Ok([
            word_address(&self.recipient)?,
            word_u128(self.amount_sats),
            self.deposit_txid,
            word_u128(self.deposit_vout.into()),
            word_u128(self.nonce),
        ])
    }

    /// What the guardians sign for the token at `token` on chain `chain_id`.
    pub fn digest(&self, chain_id: u64, token: &str) -> Result<Word, AbiError> {
        Ok(typed_digest(
            domain_separator(TOKEN_DOMAIN_NAME, chain_id, token)?,
            struct_hash(MINT_TYPE, &self.fields()?),
        ))
    }

    /// Calldata of `mint(…, signatures)`.
    pub fn mint_call(&self, signatures: &[u8]) -> Result<Vec<u8>, AbiError> {
        let mut out = selector(MINT_SIGNATURE).to_vec();
        for w in self.fields()? {
            out.extend_from_slice(&w);
        }
        out.extend_from_slice(&word_u128(6 * 32));
        push_bytes(&mut out, signatures);
        Ok(out)
    }
}

/// The digest of a `setGuardians(next, threshold, …)` at the feed's current `nonce`.
pub fn guardian_set_digest(
    chain_id: u64,
    feed: &str,
    next: &[String],
    threshold: u8,
    nonce: u64,
) -> Result<Word, AbiError> {
    let mut list = Vec::with_capacity(next.len() * 32);
    for a in next {
        list.extend_from_slice(&word_address(a)?);
    }
    Ok(typed_digest(
        domain_separator(FEED_DOMAIN_NAME, chain_id, feed)?,
        struct_hash(
            GUARDIAN_SET_TYPE,
            &[
                keccak256(&list),
                word_u128(threshold.into()),
                word_u128(nonce.into()),
            ],
        ),
    ))
}

/// The digest of a `setRegistry(fingerprint, …)` at the feed's current `nonce`.
pub fn registry_digest(
    chain_id: u64,
    feed: &str,
    fingerprint: Word,
    nonce: u64,
) -> Result<Word, AbiError> {
    Ok(typed_digest(
        domain_separator(FEED_DOMAIN_NAME, chain_id, feed)?,
        struct_hash(REGISTRY_TYPE, &[fingerprint, word_u128(nonce.into())]),
    ))
}

/// One guardian's signature over an EIP-712 digest: `(signer address, r ‖ s ‖ v)` with
/// `v` 27 or 28, as `ecrecover` reads it. libsecp256k1 always produces the low-s form
/// the contracts require.
pub fn sign_digest(key: &SecretKey, digest: Word) -> (String, [u8; 65]) {
    let secp = Secp256k1::new();
    let sig = secp.sign_ecdsa_recoverable(&Message::from_digest(digest), key);
    let (id, rs) = sig.serialize_compact();
    let mut out = [0u8; 65];
    out[..64].copy_from_slice(&rs);
    // The recovery id is 0..=3; 2 and 3 (an R with x above the group order, chance
    // about 2^-127) have no `v` in ecrecover, and the contract would then refuse the
    // signature as from a non-guardian.
    out[64] = 27 + (id.to_i32() & 1) as u8;
    (address_of(&PublicKey::from_secret_key(&secp, key)), out)
}

/// The contracts' `signatures` argument: signatures in ascending order of their
/// signers' addresses, concatenated. A repeated signer is kept, and the contract
/// refuses it: the packing does not hide a mistake.
pub fn pack_signatures(mut signed: Vec<(String, [u8; 65])>) -> Vec<u8> {
    signed.sort_by(|a, b| a.0.cmp(&b.0));
    signed.iter().flat_map(|(_, s)| s.iter().copied()).collect()
}

fn push_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&word_u128(b.len() as u128));
    out.extend_from_slice(b);
    out.extend(std::iter::repeat_n(0u8, (32 - b.len() % 32) % 32));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_recover_to_the_guardian_address() {
        let key = SecretKey::from_slice(&[7; 32]).expect("key");
        let digest = keccak256(b"report");
        let (address, sig) = sign_digest(&key, digest);
        let secp = Secp256k1::new();
        let id =
            bitcoin::secp256k1::ecdsa::RecoveryId::from_i32(i32::from(sig[64] - 27)).expect("id");
        let rec = bitcoin::secp256k1::ecdsa::RecoverableSignature::from_compact(&sig[..64], id)
            .expect("sig");
        let public = secp
            .recover_ecdsa(&Message::from_digest(digest), &rec)
            .expect("recover");
        assert_eq!(address_of(&public), address);
    }

    #[test]
    fn packing_sorts_by_signer_address() {
        let packed = pack_signatures(vec![("0xbb".into(), [2; 65]), ("0xaa".into(), [1; 65])]);
        assert_eq!(packed[0], 1);
        assert_eq!(packed[65], 2);
        assert_eq!(packed.len(), 130);
    }

    #[test]
    fn submit_calldata_layout() {
        let r = Report {
            btc_height: 1,
            btc_block_hash: [0; 32],
            reserve_sats: 2,
            other_chains_supply: 3,
            other_chains_digest: [0; 32],
            attestation_digest: [0; 32],
            timestamp: 4,
        };
        let call = r.submit_call(&[9; 65]);
        // selector, 7 report words, offset, length, 65 bytes padded to 96.
        assert_eq!(call.len(), 4 + 32 * 9 + 96);
        assert_eq!(&call[4 + 7 * 32..4 + 8 * 32], &word_u128(256));
        assert_eq!(&call[4 + 8 * 32..4 + 9 * 32], &word_u128(65));
    }
}
