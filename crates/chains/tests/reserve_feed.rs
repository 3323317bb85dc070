//! `contracts/ReserveFeed.sol` and `contracts/SecureWrappedBTC.sol` against a real anvil:
//! reports and mint authorisations are signed here as the guardians sign them (EIP-712
//! digests computed independently of the contracts, recoverable secp256k1 signatures
//! from the guardians' own keys), and every refusal is checked by its custom error.
//! The gas figures: `cargo nextest run -p ubtc-chains --test reserve_feed --run-ignored
//! only --no-capture` (the `gas_figures` test).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use anyhow::{bail, Context, Result};
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
use common::*;
use serde_json::{json, Value};
use ubtc_chains::evm::abi::{self, keccak256, selector};
use ubtc_chains::evm::minter::address_of;

// ----- ABI words, by hand (as the contracts define them) -----

type Word = [u8; 32];

fn w_u(v: u128) -> Word {
    let mut w = [0u8; 32];
    w[16..].copy_from_slice(&v.to_be_bytes());
    w
}

fn w_addr(a: &str) -> Word {
    let b = abi::decode_hex(a).unwrap();
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(&b);
    w
}

enum Arg {
    W(Word),
    /// `bytes`
    Bytes(Vec<u8>),
    /// A dynamic array of one-word elements.
    Words(Vec<Word>),
}

fn encode_call(signature: &str, args: Vec<Arg>) -> Vec<u8> {
    let head_len: usize = args.len() * 32;
    let mut head: Vec<u8> = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    for a in args {
        match a {
            Arg::W(w) => head.extend_from_slice(&w),
            Arg::Bytes(b) => {
                head.extend_from_slice(&w_u((head_len + tail.len()) as u128));
                tail.extend_from_slice(&w_u(b.len() as u128));
                tail.extend_from_slice(&b);
                tail.extend(std::iter::repeat_n(0u8, (32 - b.len() % 32) % 32));
            }
            Arg::Words(ws) => {
                head.extend_from_slice(&w_u((head_len + tail.len()) as u128));
                tail.extend_from_slice(&w_u(ws.len() as u128));
                for w in ws {
                    tail.extend_from_slice(&w);
                }
            }
        }
    }
    let mut out = selector(signature).to_vec();
    out.extend(head);
    out.extend(tail);
    out
}

/// `head_len` above counts one word per argument: true for every call here except
/// `submit`, whose report is a static tuple of seven words inlined in the head.
fn encode_submit(report: &Report, signatures: &[u8]) -> Vec<u8> {
    let mut out = selector(SUBMIT).to_vec();
    for w in report.words() {
        out.extend_from_slice(&w);
    }
    out.extend_from_slice(&w_u(8 * 32));
    out.extend_from_slice(&w_u(signatures.len() as u128));
    out.extend_from_slice(signatures);
    out.extend(std::iter::repeat_n(0u8, (32 - signatures.len() % 32) % 32));
    out
}

fn word_at(data: &[u8], i: usize) -> u128 {
    abi::word_u128(&data[i * 32..(i + 1) * 32]).unwrap()
}

// ----- EIP-712, as the guardians compute it -----

const SUBMIT: &str = "submit((uint32,bytes32,uint64,uint64,bytes32,bytes32,uint64),bytes)";
const REPORT_TYPE: &str = "Report(uint32 btcHeight,bytes32 btcBlockHash,uint64 reserveSats,uint64 otherChainsSupply,bytes32 otherChainsDigest,bytes32 attestationDigest,uint64 timestamp)";
const GUARDIAN_SET_TYPE: &str = "GuardianSet(address[] guardians,uint8 threshold,uint64 nonce)";
const REGISTRY_TYPE: &str = "Registry(bytes32 fingerprint,uint64 nonce)";
const MINT_TYPE: &str =
    "Mint(address recipient,uint256 amount,bytes32 depositTxid,uint32 depositVout,uint256 nonce)";
const FEED_NAME: &str = "Universal Bitcoin Reserve Feed";
const TOKEN_NAME: &str = "Universal Bitcoin";

fn struct_hash(type_string: &str, fields: &[Word]) -> Word {
    let mut buf = keccak256(type_string.as_bytes()).to_vec();
    for f in fields {
        buf.extend_from_slice(f);
    }
    keccak256(&buf)
}

fn typed_digest(name: &str, chain_id: u64, contract: &str, struct_hash: Word) -> Word {
    let domain = struct_hash_domain(name, chain_id, contract);
    let mut buf = vec![0x19, 0x01];
    buf.extend_from_slice(&domain);
    buf.extend_from_slice(&struct_hash);
    keccak256(&buf)
}

fn struct_hash_domain(name: &str, chain_id: u64, contract: &str) -> Word {
    struct_hash(
        "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)",
        &[
            keccak256(name.as_bytes()),
            keccak256(b"1"),
            w_u(chain_id.into()),
            w_addr(contract),
        ],
    )
}

#[derive(Clone)]
struct Report {
    btc_height: u32,
    btc_block_hash: Word,
    reserve_sats: u64,
    other_chains_supply: u64,
    other_chains_digest: Word,
    attestation_digest: Word,
    timestamp: u64,
}

impl Report {
    fn new(height: u32, reserve_sats: u64, other: u64, timestamp: u64) -> Self {
        Self {
            btc_height: height,
            btc_block_hash: keccak256(format!("block {height}").as_bytes()),
            reserve_sats,
            other_chains_supply: other,
            other_chains_digest: keccak256(format!("supply {other}").as_bytes()),
            attestation_digest: keccak256(format!("attestation {height}").as_bytes()),
            timestamp,
        }
    }

    fn words(&self) -> [Word; 7] {
        [
            w_u(self.btc_height.into()),
            self.btc_block_hash,
            w_u(self.reserve_sats.into()),
            w_u(self.other_chains_supply.into()),
            self.other_chains_digest,
            self.attestation_digest,
            w_u(self.timestamp.into()),
        ]
    }

    fn digest(&self, chain_id: u64, feed: &str) -> Word {
        typed_digest(
            FEED_NAME,
            chain_id,
            feed,
            struct_hash(REPORT_TYPE, &self.words()),
        )
    }
}

// ----- guardians -----

struct Guardian {
    key: SecretKey,
    address: String,
}

fn guardians(first_seed: u8, n: usize) -> Vec<Guardian> {
    let secp = Secp256k1::new();
    let mut gs: Vec<Guardian> = (0..n)
        .map(|i| {
            let key = SecretKey::from_slice(&[first_seed + i as u8; 32]).unwrap();
            let address = address_of(&PublicKey::from_secret_key(&secp, &key));
            Guardian { key, address }
        })
        .collect();
    // The contracts want signers in ascending address order.
    gs.sort_by(|a, b| a.address.cmp(&b.address));
    gs
}

/// The 65-byte (r, s, v) signature Ethereum's `ecrecover` reads; libsecp256k1 always
/// produces the low-s form.
fn sign(g: &Guardian, digest: Word) -> Vec<u8> {
    let secp = Secp256k1::new();
    let sig = secp.sign_ecdsa_recoverable(&Message::from_digest(digest), &g.key);
    let (id, rs) = sig.serialize_compact();
    let mut out = rs.to_vec();
    out.push(27 + id.to_i32() as u8);
    out
}

fn sign_all(signers: &[&Guardian], digest: Word) -> Vec<u8> {
    signers.iter().flat_map(|g| sign(g, digest)).collect()
}

fn addresses(gs: &[Guardian]) -> Vec<Word> {
    gs.iter().map(|g| w_addr(&g.address)).collect()
}

// ----- chain access -----

/// `eth_call`: Ok(return data) or Err(revert data). Reads the error's `data`, which
/// the harness's RPC client does not expose.
async fn eth_call(
    anvil: &Anvil,
    from: &str,
    to: &str,
    data: &[u8],
) -> Result<Result<Vec<u8>, Vec<u8>>> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_call",
        "params": [{"from": from, "to": to, "data": format!("0x{}", hex::encode(data))}, "latest"]});
    let v: Value = reqwest::Client::new()
        .post(&anvil.url)
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    if let Some(r) = v["result"].as_str() {
        return Ok(Ok(abi::decode_hex(r)?));
    }
    let data = v["error"]["data"]
        .as_str()
        .with_context(|| format!("no revert data in {v}"))?;
    Ok(Err(abi::decode_hex(data)?))
}

async fn view(anvil: &Anvil, to: &str, data: Vec<u8>) -> Result<Vec<u8>> {
    match eth_call(anvil, &zero(), to, &data).await? {
        Ok(out) => Ok(out),
        Err(e) => bail!("view reverted: 0x{}", hex::encode(e)),
    }
}

fn zero() -> String {
    format!("0x{}", "00".repeat(20))
}

/// Sends a transaction that must succeed; returns its gas used.
async fn send_ok(anvil: &Anvil, from: &str, to: &str, data: &[u8]) -> Result<u64> {
    if let Err(e) = eth_call(anvil, from, to, data).await? {
        bail!("would revert: 0x{}", hex::encode(e));
    }
    let tx = anvil.send(from, Some(to), 0, data).await?;
    let r = anvil.receipt(&tx).await?;
    if r["status"] != "0x1" {
        bail!("reverted on chain: {r}");
    }
    Ok(abi::quantity_u64(
        r["gasUsed"].as_str().context("gasUsed")?,
    )?)
}

/// Checks that the call reverts with the custom error `error_signature`, then sends it
/// anyway and checks that it fails on chain too.
async fn send_refused(
    anvil: &Anvil,
    from: &str,
    to: &str,
    data: &[u8],
    error_signature: &str,
) -> Result<Vec<u8>> {
    let reverted = match eth_call(anvil, from, to, data).await? {
        Ok(_) => bail!("expected {error_signature}, but the call succeeded"),
        Err(e) => e,
    };
    assert_eq!(
        hex::encode(&reverted[..4.min(reverted.len())]),
        hex::encode(selector(error_signature)),
        "expected {error_signature}, got 0x{}",
        hex::encode(&reverted)
    );
    let tx = anvil.send(from, Some(to), 0, data).await?;
    let r = anvil.receipt(&tx).await?;
    assert_eq!(r["status"], "0x0", "{error_signature}: mined as a success");
    Ok(reverted[4..].to_vec())
}

async fn now(anvil: &Anvil) -> Result<u64> {
    let b: Value = anvil
        .call("eth_getBlockByNumber", json!(["latest", false]))
        .await?;
    Ok(abi::quantity_u64(
        b["timestamp"].as_str().context("timestamp")?,
    )?)
}

async fn deploy_feed(
    anvil: &Anvil,
    from: &str,
    gs: &[Guardian],
    threshold: u8,
    fingerprint: Word,
) -> Result<String> {
    // constructor(address[], uint8, bytes32): the array's offset is 3 words.
    let mut args = w_u(96).to_vec();
    args.extend_from_slice(&w_u(threshold.into()));
    args.extend_from_slice(&fingerprint);
    args.extend_from_slice(&w_u(gs.len() as u128));
    for a in addresses(gs) {
        args.extend_from_slice(&a);
    }
    anvil.deploy(from, "ReserveFeed", args).await
}

async fn latest_round(anvil: &Anvil, feed: &str) -> Result<u128> {
    Ok(word_at(
        &view(anvil, feed, selector("latestRound()").to_vec()).await?,
        0,
    ))
}

// ----- the tests -----

#[tokio::test]
async fn reports_are_accepted_only_with_m_guardian_signatures() -> Result<()> {
    let anvil = Anvil::start().await?;
    let acct = anvil.accounts().await?;
    let relayer = &acct[0];
    let gs = guardians(1, 3);
    let fingerprint = keccak256(b"registry v1");
    let feed = deploy_feed(&anvil, relayer, &gs, 2, fingerprint).await?;

    // Nothing published yet: Chainlink consumers see "no data", not a zero reserve.
    let r = eth_call(&anvil, relayer, &feed, &selector("latestRoundData()")).await?;
    assert_eq!(
        r.unwrap_err()[..4],
        selector("NoRound(uint80)"),
        "an empty feed answers"
    );

    // The contract's digest equals the one computed here from the EIP-712 spec.
    let t = now(&anvil).await?;
    let report = Report::new(900_000, 150_000_000, 40_000_000, t);
    let digest = report.digest(ANVIL_CHAIN_ID, &feed);
    let mut call =
        selector("reportDigest((uint32,bytes32,uint64,uint64,bytes32,bytes32,uint64))").to_vec();
    for w in report.words() {
        call.extend_from_slice(&w);
    }
    assert_eq!(view(&anvil, &feed, call).await?, digest.to_vec());

    // One signature of a 2-of-3 set.
    let one = sign_all(&[&gs[0]], digest);
    let args = send_refused(
        &anvil,
        relayer,
        &feed,
        &encode_submit(&report, &one),
        "TooFewSignatures(uint256,uint256)",
    )
    .await?;
    assert_eq!((word_at(&args, 0), word_at(&args, 1)), (1, 2));

    // The same guardian twice.
    let twice = sign_all(&[&gs[0], &gs[0]], digest);
    let args = send_refused(
        &anvil,
        relayer,
        &feed,
        &encode_submit(&report, &twice),
        "RepeatedSigner(address)",
    )
    .await?;
    assert_eq!(abi::word_address(&args[..32])?, gs[0].address);

    // Two distinct guardians out of order.
    let backwards = sign_all(&[&gs[1], &gs[0]], digest);
    send_refused(
        &anvil,
        relayer,
        &feed,
        &encode_submit(&report, &backwards),
        "SignersNotAscending(address,address)",
    )
    .await?;

    // A guardian plus an outsider (still ascending, so only membership fails).
    let outsider = guardians(50, 1).pop().unwrap();
    let mut pair = [&gs[0], &outsider];
    pair.sort_by(|a, b| a.address.cmp(&b.address));
    let args = send_refused(
        &anvil,
        relayer,
        &feed,
        &encode_submit(&report, &sign_all(&pair, digest)),
        "NotGuardian(address)",
    )
    .await?;
    assert_eq!(abi::word_address(&args[..32])?, outsider.address);

    // A malleated twin (high s, flipped v) of a valid signature.
    let mut high = sign(&gs[0], digest);
    let n = hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")?;
    let s = &high[32..64];
    let mut twin = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = n[i] as i16 - s[i] as i16 - borrow;
        borrow = i16::from(d < 0);
        twin[i] = (d + 256 * borrow) as u8;
    }
    high[32..64].copy_from_slice(&twin);
    high[64] ^= 1; // 27 <-> 28
    let mut sigs = high;
    sigs.extend(sign(&gs[1], digest));
    send_refused(
        &anvil,
        relayer,
        &feed,
        &encode_submit(&report, &sigs),
        "HighS(uint256)",
    )
    .await?;

    // Signed for another chain id (same feed address), and for another feed.
    let other_chain = report.digest(1, &feed);
    send_refused(
        &anvil,
        relayer,
        &feed,
        &encode_submit(&report, &sign_all(&[&gs[0], &gs[1]], other_chain)),
        "NotGuardian(address)",
    )
    .await?;
    let feed_b = deploy_feed(&anvil, relayer, &gs, 2, fingerprint).await?;
    let for_b = report.digest(ANVIL_CHAIN_ID, &feed_b);
    send_refused(
        &anvil,
        relayer,
        &feed,
        &encode_submit(&report, &sign_all(&[&gs[0], &gs[1]], for_b)),
        "NotGuardian(address)",
    )
    .await?;

    // A figure changed after signing.
    let mut lie = report.clone();
    lie.reserve_sats += 1;
    send_refused(
        &anvil,
        relayer,
        &feed,
        &encode_submit(&lie, &sign_all(&[&gs[0], &gs[1]], digest)),
        "NotGuardian(address)",
    )
    .await?;
    assert_eq!(
        latest_round(&anvil, &feed).await?,
        0,
        "refusals changed nothing"
    );

    // 2 of 3, accepted; then read back through the Chainlink interface.
    let gas = send_ok(
        &anvil,
        relayer,
        &feed,
        &encode_submit(&report, &sign_all(&[&gs[0], &gs[2]], digest)),
    )
    .await?;
    assert!(gas < 150_000, "first submit cost {gas}");
    let out = view(&anvil, &feed, selector("latestRoundData()").to_vec()).await?;
    assert_eq!(word_at(&out, 0), 1, "roundId");
    assert_eq!(word_at(&out, 1), 150_000_000, "answer: reserve sats");
    assert_eq!(word_at(&out, 2), t.into(), "startedAt: the report's time");
    assert_eq!(word_at(&out, 4), 1, "answeredInRound");
    let decimals = view(&anvil, &feed, selector("decimals()").to_vec()).await?;
    assert_eq!(word_at(&decimals, 0), 8);
    let att = view(
        &anvil,
        &feed,
        selector("latestAttestationDigest()").to_vec(),
    )
    .await?;
    assert_eq!(att, report.attestation_digest.to_vec());

    // Replaying the accepted report, or an older height, is refused.
    let args = send_refused(
        &anvil,
        relayer,
        &feed,
        &encode_submit(&report, &sign_all(&[&gs[0], &gs[2]], digest)),
        "HeightNotAbove(uint32,uint32)",
    )
    .await?;
    assert_eq!((word_at(&args, 0), word_at(&args, 1)), (900_000, 900_000));
    let older = Report::new(899_999, 150_000_000, 0, t);
    let od = older.digest(ANVIL_CHAIN_ID, &feed);
    send_refused(
        &anvil,
        relayer,
        &feed,
        &encode_submit(&older, &sign_all(&[&gs[0], &gs[1]], od)),
        "HeightNotAbove(uint32,uint32)",
    )
    .await?;

    // The next report: all three may sign; round 2 answers, round 1 stays readable.
    let next = Report::new(900_006, 160_000_000, 41_000_000, now(&anvil).await?);
    let nd = next.digest(ANVIL_CHAIN_ID, &feed);
    let gas = send_ok(
        &anvil,
        relayer,
        &feed,
        &encode_submit(&next, &sign_all(&[&gs[0], &gs[1], &gs[2]], nd)),
    )
    .await?;
    eprintln!("submit 3-of-3 signatures on a 2-of-3 feed: {gas} gas");
    let out = view(
        &anvil,
        &feed,
        encode_call("getRoundData(uint80)", vec![Arg::W(w_u(1))]),
    )
    .await?;
    assert_eq!(word_at(&out, 1), 150_000_000);
    let out = view(&anvil, &feed, selector("latestRoundData()").to_vec()).await?;
    assert_eq!((word_at(&out, 0), word_at(&out, 1)), (2, 160_000_000));

    // A consumer that knows only AggregatorV3Interface reads the same reserve.
    let consumer = anvil
        .deploy(relayer, "ReserveConsumer", w_addr(&feed).to_vec())
        .await?;
    let out = view(&anvil, &consumer, selector("reserveSats()").to_vec()).await?;
    assert_eq!(word_at(&out, 0), 160_000_000);
    Ok(())
}

#[tokio::test]
async fn submit_at_two_of_three_costs_under_120k_gas() -> Result<()> {
    let anvil = Anvil::start().await?;
    let acct = anvil.accounts().await?;
    let (first, steady) = submit_gas(&anvil, &acct[0], 2, 3).await?;
    eprintln!("submit 2-of-3: first {first} gas, then {steady} gas");
    assert!(steady < 120_000, "submit 2-of-3 costs {steady} gas");
    assert!(first < 140_000, "first submit 2-of-3 costs {first} gas");
    Ok(())
}

/// Gas of the first `submit` (which also fills the attestation slot) and of the next.
async fn submit_gas(anvil: &Anvil, from: &str, m: usize, n: usize) -> Result<(u64, u64)> {
    let gs = guardians(100, n);
    let feed = deploy_feed(anvil, from, &gs, m as u8, [7; 32]).await?;
    let signers: Vec<&Guardian> = gs.iter().take(m).collect();
    let mut gas = Vec::new();
    for height in [800_000, 800_001] {
        let r = Report::new(
            height,
            2_000_000_000_000,
            1_000_000_000_000,
            now(anvil).await?,
        );
        let sigs = sign_all(&signers, r.digest(ANVIL_CHAIN_ID, &feed));
        gas.push(send_ok(anvil, from, &feed, &encode_submit(&r, &sigs)).await?);
    }
    Ok((gas[0], gas[1]))
}

#[tokio::test]
async fn guardian_set_and_registry_change_only_with_m_signatures() -> Result<()> {
    let anvil = Anvil::start().await?;
    let acct = anvil.accounts().await?;
    let relayer = &acct[0];
    let old = guardians(1, 3);
    let feed = deploy_feed(&anvil, relayer, &old, 2, keccak256(b"registry v1")).await?;

    let new = guardians(10, 4);
    let rotate_digest = |nonce: u64| {
        let list: Vec<u8> = addresses(&new).concat();
        typed_digest(
            FEED_NAME,
            ANVIL_CHAIN_ID,
            &feed,
            struct_hash(
                GUARDIAN_SET_TYPE,
                &[keccak256(&list), w_u(3), w_u(nonce.into())],
            ),
        )
    };
    let rotate = |sigs: Vec<u8>| {
        encode_call(
            "setGuardians(address[],uint8,bytes)",
            vec![
                Arg::Words(addresses(&new)),
                Arg::W(w_u(3)),
                Arg::Bytes(sigs),
            ],
        )
    };

    // One old guardian alone cannot rotate; nor can the new set appoint itself.
    send_refused(
        &anvil,
        relayer,
        &feed,
        &rotate(sign_all(&[&old[0]], rotate_digest(0))),
        "TooFewSignatures(uint256,uint256)",
    )
    .await?;
    send_refused(
        &anvil,
        relayer,
        &feed,
        &rotate(sign_all(&[&new[0], &new[1], &new[2]], rotate_digest(0))),
        "NotGuardian(address)",
    )
    .await?;
    // Signed for the wrong nonce.
    send_refused(
        &anvil,
        relayer,
        &feed,
        &rotate(sign_all(&[&old[0], &old[1]], rotate_digest(1))),
        "NotGuardian(address)",
    )
    .await?;

    send_ok(
        &anvil,
        relayer,
        &feed,
        &rotate(sign_all(&[&old[0], &old[1]], rotate_digest(0))),
    )
    .await?;
    let th = view(&anvil, &feed, selector("threshold()").to_vec()).await?;
    assert_eq!(word_at(&th, 0), 3);
    let isg = |a: &str| encode_call("isGuardian(address)", vec![Arg::W(w_addr(a))]);
    assert_eq!(
        word_at(&view(&anvil, &feed, isg(&old[0].address)).await?, 0),
        0,
        "old guardian retired"
    );
    assert_eq!(
        word_at(&view(&anvil, &feed, isg(&new[3].address)).await?, 0),
        1
    );
    // The old set cannot rotate again, even with all three signatures.
    send_refused(
        &anvil,
        relayer,
        &feed,
        &rotate(sign_all(&[&old[0], &old[1], &old[2]], rotate_digest(0))),
        "NotGuardian(address)",
    )
    .await?;

    // Reports now need three of the new set; the old set's signatures are worthless.
    let r = Report::new(1, 1_000, 0, now(&anvil).await?);
    let d = r.digest(ANVIL_CHAIN_ID, &feed);
    send_refused(
        &anvil,
        relayer,
        &feed,
        &encode_submit(&r, &sign_all(&[&old[0], &old[1], &old[2]], d)),
        "NotGuardian(address)",
    )
    .await?;
    send_refused(
        &anvil,
        relayer,
        &feed,
        &encode_submit(&r, &sign_all(&[&new[0], &new[1]], d)),
        "TooFewSignatures(uint256,uint256)",
    )
    .await?;
    send_ok(
        &anvil,
        relayer,
        &feed,
        &encode_submit(&r, &sign_all(&[&new[0], &new[2], &new[3]], d)),
    )
    .await?;

    // The registry fingerprint: nonce is now 1.
    let fp = keccak256(b"registry v2");
    let reg_digest = typed_digest(
        FEED_NAME,
        ANVIL_CHAIN_ID,
        &feed,
        struct_hash(REGISTRY_TYPE, &[fp, w_u(1)]),
    );
    let set_reg = |sigs: Vec<u8>| {
        encode_call(
            "setRegistry(bytes32,bytes)",
            vec![Arg::W(fp), Arg::Bytes(sigs)],
        )
    };
    send_refused(
        &anvil,
        relayer,
        &feed,
        &set_reg(sign_all(&[&new[0], &new[1]], reg_digest)),
        "TooFewSignatures(uint256,uint256)",
    )
    .await?;
    send_refused(
        &anvil,
        relayer,
        &feed,
        &set_reg(sign_all(&[&old[0], &old[1], &old[2]], reg_digest)),
        "NotGuardian(address)",
    )
    .await?;
    let before = view(&anvil, &feed, selector("registryFingerprint()").to_vec()).await?;
    assert_eq!(before, keccak256(b"registry v1").to_vec());
    send_ok(
        &anvil,
        relayer,
        &feed,
        &set_reg(sign_all(&[&new[0], &new[1], &new[3]], reg_digest)),
    )
    .await?;
    let after = view(&anvil, &feed, selector("registryFingerprint()").to_vec()).await?;
    assert_eq!(after, fp.to_vec());
    Ok(())
}

// ----- the secure token -----

const MINT: &str = "mint(address,uint256,bytes32,uint32,uint256,bytes)";

struct MintAuth {
    to: String,
    amount: u128,
    txid: Word,
    vout: u32,
    nonce: u128,
}

impl MintAuth {
    fn new(to: &str, amount: u128, deposit: u8, nonce: u128) -> Self {
        Self {
            to: to.to_owned(),
            amount,
            txid: [deposit; 32],
            vout: 1,
            nonce,
        }
    }

    fn digest(&self, chain_id: u64, token: &str) -> Word {
        typed_digest(
            TOKEN_NAME,
            chain_id,
            token,
            struct_hash(
                MINT_TYPE,
                &[
                    w_addr(&self.to),
                    w_u(self.amount),
                    self.txid,
                    w_u(self.vout.into()),
                    w_u(self.nonce),
                ],
            ),
        )
    }

    fn call(&self, sigs: Vec<u8>) -> Vec<u8> {
        encode_call(
            MINT,
            vec![
                Arg::W(w_addr(&self.to)),
                Arg::W(w_u(self.amount)),
                Arg::W(self.txid),
                Arg::W(w_u(self.vout.into())),
                Arg::W(w_u(self.nonce)),
                Arg::Bytes(sigs),
            ],
        )
    }
}

struct TokenSetup {
    anvil: Anvil,
    acct: Vec<String>,
    gs: Vec<Guardian>,
    feed: String,
    token: String,
}

const MAX_AGE: u64 = 3_600;

async fn token_setup(reserve: u64, other: u64) -> Result<TokenSetup> {
    let anvil = Anvil::start().await?;
    let acct = anvil.accounts().await?;
    let gs = guardians(1, 3);
    let feed = deploy_feed(&anvil, &acct[0], &gs, 2, [1; 32]).await?;
    let mut args = w_addr(&feed).to_vec();
    args.extend_from_slice(&w_u(MAX_AGE.into()));
    let token = anvil.deploy(&acct[0], "SecureWrappedBTC", args).await?;
    let s = TokenSetup {
        anvil,
        acct,
        gs,
        feed,
        token,
    };
    s.report(100, reserve, other).await?;
    Ok(s)
}

impl TokenSetup {
    async fn report(&self, height: u32, reserve: u64, other: u64) -> Result<()> {
        let r = Report::new(height, reserve, other, now(&self.anvil).await?);
        let sigs = sign_all(
            &[&self.gs[0], &self.gs[1]],
            r.digest(ANVIL_CHAIN_ID, &self.feed),
        );
        send_ok(
            &self.anvil,
            &self.acct[0],
            &self.feed,
            &encode_submit(&r, &sigs),
        )
        .await?;
        Ok(())
    }

    fn signed(&self, m: &MintAuth) -> Vec<u8> {
        m.call(sign_all(
            &[&self.gs[0], &self.gs[2]],
            m.digest(ANVIL_CHAIN_ID, &self.token),
        ))
    }

    async fn supply(&self) -> Result<u128> {
        Ok(word_at(
            &view(&self.anvil, &self.token, selector("totalSupply()").to_vec()).await?,
            0,
        ))
    }

    async fn balance(&self, who: &str) -> Result<u128> {
        let call = encode_call("balanceOf(address)", vec![Arg::W(w_addr(who))]);
        Ok(word_at(&view(&self.anvil, &self.token, call).await?, 0))
    }
}

#[tokio::test]
async fn mints_are_bounded_by_the_attested_reserve_and_burns_always_pass() -> Result<()> {
    // 1,000 sats in reserve, 200 already minted on other chains: 800 may be minted here.
    let s = token_setup(1_000, 200).await?;
    let (relayer, alice) = (&s.acct[0], &s.acct[1]);

    send_ok(
        &s.anvil,
        relayer,
        &s.token,
        &s.signed(&MintAuth::new(alice, 500, 1, 1)),
    )
    .await?;
    let args = send_refused(
        &s.anvil,
        relayer,
        &s.token,
        &s.signed(&MintAuth::new(alice, 301, 2, 2)),
        "ExceedsReserves(uint256,uint256)",
    )
    .await?;
    assert_eq!((word_at(&args, 0), word_at(&args, 1)), (1_001, 1_000));
    // Exactly the reserve is fine; the refused authorisation's deposit is still unused.
    send_ok(
        &s.anvil,
        relayer,
        &s.token,
        &s.signed(&MintAuth::new(alice, 300, 2, 2)),
    )
    .await?;
    assert_eq!(s.supply().await?, 800);
    send_refused(
        &s.anvil,
        relayer,
        &s.token,
        &s.signed(&MintAuth::new(alice, 1, 3, 3)),
        "ExceedsReserves(uint256,uint256)",
    )
    .await?;

    // More reserve attested: room again; then the feed goes stale and mints stop.
    s.report(101, 2_000, 200).await?;
    send_ok(
        &s.anvil,
        relayer,
        &s.token,
        &s.signed(&MintAuth::new(alice, 1, 3, 3)),
    )
    .await?;
    s.anvil
        .call("evm_increaseTime", json!([MAX_AGE + 1]))
        .await?;
    s.anvil.mine(1).await?;
    send_refused(
        &s.anvil,
        relayer,
        &s.token,
        &s.signed(&MintAuth::new(alice, 1, 4, 4)),
        "StaleReserves(uint256,uint256)",
    )
    .await?;

    // A burn passes with a stale feed, and names where the BTC goes.
    let script = hex::decode("0014751e76e8199196d454941c45d1b3a323f1433bd6")?;
    let burn = encode_call(
        "burn(uint256,bytes)",
        vec![Arg::W(w_u(101)), Arg::Bytes(script.clone())],
    );
    send_ok(&s.anvil, alice, &s.token, &burn).await?;
    assert_eq!(s.supply().await?, 700);
    assert_eq!(s.balance(alice).await?, 700);
    let logs: Vec<Value> = s
        .anvil
        .rpc
        .call(
            "eth_getLogs",
            json!([{"address": s.token, "fromBlock": "0x0",
            "topics": [abi::event_topic("Redeemed(address,uint256,bytes)")]}]),
        )
        .await?;
    assert_eq!(logs.len(), 1);
    let data = abi::decode_hex(logs[0]["data"].as_str().context("data")?)?;
    assert_eq!(word_at(&data, 0), 101);
    assert_eq!(&data[96..96 + script.len()], &script[..]);

    // Even a burn of everything while the reserve report says less than the supply.
    s.report(102, 10, 0).await?;
    let burn_all = encode_call(
        "burn(uint256,bytes)",
        vec![Arg::W(w_u(700)), Arg::Bytes(script)],
    );
    send_ok(&s.anvil, alice, &s.token, &burn_all).await?;
    assert_eq!(s.supply().await?, 0);
    // A burn without a script is refused: the release would have no destination.
    let no_script = encode_call(
        "burn(uint256,bytes)",
        vec![Arg::W(w_u(0)), Arg::Bytes(vec![])],
    );
    send_refused(&s.anvil, alice, &s.token, &no_script, "BadScript(uint256)").await?;
    Ok(())
}

#[tokio::test]
async fn a_mint_needs_m_guardians_and_a_fresh_deposit_and_nonce() -> Result<()> {
    let s = token_setup(1_000_000, 0).await?;
    let (relayer, alice, mallory) = (&s.acct[0], &s.acct[1], &s.acct[2]);
    let auth = MintAuth::new(alice, 1_000, 1, 1);
    let digest = auth.digest(ANVIL_CHAIN_ID, &s.token);

    // The contract's digest equals the one computed here.
    let call = encode_call(
        "mintDigest(address,uint256,bytes32,uint32,uint256)",
        vec![
            Arg::W(w_addr(alice)),
            Arg::W(w_u(1_000)),
            Arg::W([1; 32]),
            Arg::W(w_u(1)),
            Arg::W(w_u(1)),
        ],
    );
    assert_eq!(view(&s.anvil, &s.token, call).await?, digest.to_vec());

    send_refused(
        &s.anvil,
        relayer,
        &s.token,
        &auth.call(vec![]),
        "TooFewSignatures(uint256,uint256)",
    )
    .await?;
    send_refused(
        &s.anvil,
        relayer,
        &s.token,
        &auth.call(sign_all(&[&s.gs[0]], digest)),
        "TooFewSignatures(uint256,uint256)",
    )
    .await?;
    send_refused(
        &s.anvil,
        relayer,
        &s.token,
        &auth.call(sign_all(&[&s.gs[1], &s.gs[1]], digest)),
        "RepeatedSigner(address)",
    )
    .await?;
    // The authorisation redirected to another recipient, or inflated.
    let mut stolen = MintAuth::new(mallory, 1_000, 1, 1);
    send_refused(
        &s.anvil,
        relayer,
        &s.token,
        &stolen.call(sign_all(&[&s.gs[0], &s.gs[1]], digest)),
        "NotGuardian(address)",
    )
    .await?;
    stolen = MintAuth::new(alice, 1_000_000, 1, 1);
    send_refused(
        &s.anvil,
        relayer,
        &s.token,
        &stolen.call(sign_all(&[&s.gs[0], &s.gs[1]], digest)),
        "NotGuardian(address)",
    )
    .await?;
    // Signed for the token on another chain.
    let elsewhere = auth.digest(1, &s.token);
    send_refused(
        &s.anvil,
        relayer,
        &s.token,
        &auth.call(sign_all(&[&s.gs[0], &s.gs[1]], elsewhere)),
        "NotGuardian(address)",
    )
    .await?;
    assert_eq!(s.supply().await?, 0);

    // Anyone may relay a valid authorisation: the recipient is fixed by the signatures.
    send_ok(&s.anvil, mallory, &s.token, &s.signed(&auth)).await?;
    assert_eq!(s.balance(alice).await?, 1_000);
    assert_eq!(s.balance(mallory).await?, 0);

    // The same deposit again (even with a new nonce), and a new deposit with the old nonce.
    let args = send_refused(
        &s.anvil,
        relayer,
        &s.token,
        &s.signed(&MintAuth::new(alice, 1_000, 1, 2)),
        "DepositUsed(bytes32,uint32)",
    )
    .await?;
    assert_eq!(&args[..32], &[1u8; 32]);
    send_refused(
        &s.anvil,
        relayer,
        &s.token,
        &s.signed(&MintAuth::new(alice, 1_000, 2, 1)),
        "NonceUsed(uint256)",
    )
    .await?;
    // Another output of the same transaction is another deposit.
    let mut other_vout = MintAuth::new(alice, 1_000, 1, 2);
    other_vout.vout = 0;
    send_ok(&s.anvil, relayer, &s.token, &s.signed(&other_vout)).await?;
    assert_eq!(s.supply().await?, 2_000);
    Ok(())
}

#[tokio::test]
#[ignore = "gas figures: run with --run-ignored only --no-capture"]
async fn gas_figures() -> Result<()> {
    let anvil = Anvil::start().await?;
    let acct = anvil.accounts().await?;
    for (m, n) in [(2, 3), (3, 5), (7, 10)] {
        let (first, steady) = submit_gas(&anvil, &acct[0], m, n).await?;
        println!("submit {m}-of-{n}: {steady} gas ({first} for the feed's first report)");
    }
    drop(anvil);

    // Ungated: today's WrappedBTC, minted by its minter key.
    let s = token_setup(2_100_000_000_000_000, 0).await?;
    let old = s
        .anvil
        .deploy(
            &s.acct[0],
            "WrappedBTC",
            [w_addr(&s.acct[0]), w_addr(&s.acct[0])].concat(),
        )
        .await?;
    let ungated = encode_call(
        "mint(address,uint256)",
        vec![Arg::W(w_addr(&s.acct[3])), Arg::W(w_u(1_000))],
    );
    let ungated_gas = send_ok(&s.anvil, &s.acct[0], &old, &ungated).await?;
    let gated_gas = send_ok(
        &s.anvil,
        &s.acct[0],
        &s.token,
        &s.signed(&MintAuth::new(&s.acct[3], 1_000, 9, 9)),
    )
    .await?;
    println!("mint, ungated WrappedBTC: {ungated_gas} gas");
    println!("mint, SecureWrappedBTC (2-of-3 authorisation, reserve check): {gated_gas} gas");
    Ok(())
}

#[tokio::test]
async fn malformed_reports_and_sets_are_refused() -> Result<()> {
    let anvil = Anvil::start().await?;
    let acct = anvil.accounts().await?;
    let relayer = &acct[0];
    let gs = guardians(1, 3);
    let feed = deploy_feed(&anvil, relayer, &gs, 2, [0; 32]).await?;
    let t = now(&anvil).await?;
    let signed = |r: &Report| sign_all(&[&gs[0], &gs[1]], r.digest(ANVIL_CHAIN_ID, &feed));

    // Signed by two guardians, and still refused: the guardians' word has limits too.
    let future = Report::new(1, 1_000, 0, t + 3_600);
    send_refused(
        &anvil,
        relayer,
        &feed,
        &encode_submit(&future, &signed(&future)),
        "TimestampInFuture(uint64)",
    )
    .await?;
    let too_much = Report::new(1, 2_100_000_000_000_001, 0, t);
    send_refused(
        &anvil,
        relayer,
        &feed,
        &encode_submit(&too_much, &signed(&too_much)),
        "ReserveTooLarge(uint64)",
    )
    .await?;
    let ok = Report::new(1, 1_000, 0, t);
    let mut cut = signed(&ok);
    cut.pop();
    send_refused(
        &anvil,
        relayer,
        &feed,
        &encode_submit(&ok, &cut),
        "BadSignatureLength(uint256)",
    )
    .await?;
    let mut bad_v = signed(&ok);
    bad_v[64] = 29;
    send_refused(
        &anvil,
        relayer,
        &feed,
        &encode_submit(&ok, &bad_v),
        "BadSignature(uint256)",
    )
    .await?;
    assert_eq!(latest_round(&anvil, &feed).await?, 0);

    // A rotation to a set with a repeated member, signed by the current set.
    let next = vec![w_addr(&gs[0].address), w_addr(&gs[0].address)];
    let digest = typed_digest(
        FEED_NAME,
        ANVIL_CHAIN_ID,
        &feed,
        struct_hash(
            GUARDIAN_SET_TYPE,
            &[keccak256(&next.concat()), w_u(1), w_u(0)],
        ),
    );
    let call = encode_call(
        "setGuardians(address[],uint8,bytes)",
        vec![
            Arg::Words(next),
            Arg::W(w_u(1)),
            Arg::Bytes(sign_all(&[&gs[0], &gs[1]], digest)),
        ],
    );
    send_refused(&anvil, relayer, &feed, &call, "BadGuardianSet()").await?;
    let nonce = view(&anvil, &feed, selector("nonce()").to_vec()).await?;
    assert_eq!(word_at(&nonce, 0), 0, "a refused rotation uses no nonce");
    Ok(())
}

/// `ubtc_chains::evm::feed` (what the guardians and the relayer will use) builds digests
/// and calls the contracts accept, and agrees with the spec-derived helpers above.
#[tokio::test]
async fn the_feed_module_builds_what_the_contracts_accept() -> Result<()> {
    use ubtc_chains::evm::feed;
    let s = token_setup(10_000, 0).await?;
    let relayer = &s.acct[0];
    let keys: Vec<SecretKey> = s.gs.iter().map(|g| g.key).collect();
    let sign_with = |idx: &[usize], digest: Word| {
        feed::pack_signatures(
            idx.iter()
                .map(|&i| feed::sign_digest(&keys[i], digest))
                .collect(),
        )
    };

    let r = feed::Report {
        btc_height: 200,
        btc_block_hash: [2; 32],
        reserve_sats: 20_000,
        other_chains_supply: 1_000,
        other_chains_digest: [3; 32],
        attestation_digest: [4; 32],
        timestamp: now(&s.anvil).await?,
    };
    let spec = Report {
        btc_height: r.btc_height,
        btc_block_hash: r.btc_block_hash,
        reserve_sats: r.reserve_sats,
        other_chains_supply: r.other_chains_supply,
        other_chains_digest: r.other_chains_digest,
        attestation_digest: r.attestation_digest,
        timestamp: r.timestamp,
    };
    let digest = r.digest(ANVIL_CHAIN_ID, &s.feed)?;
    assert_eq!(digest, spec.digest(ANVIL_CHAIN_ID, &s.feed));
    // Keys passed in any order: the packing sorts them.
    let sigs = sign_with(&[2, 0], digest);
    assert_eq!(r.submit_call(&sigs), encode_submit(&spec, &sigs));
    send_ok(&s.anvil, relayer, &s.feed, &r.submit_call(&sigs)).await?;

    let m = feed::MintAuthorisation {
        recipient: s.acct[4].clone(),
        amount_sats: 5_000,
        deposit_txid: [5; 32],
        deposit_vout: 0,
        nonce: 77,
    };
    let md = m.digest(ANVIL_CHAIN_ID, &s.token)?;
    send_ok(
        &s.anvil,
        relayer,
        &s.token,
        &m.mint_call(&sign_with(&[1, 2], md))?,
    )
    .await?;
    assert_eq!(s.balance(&s.acct[4]).await?, 5_000);

    let fp = [9; 32];
    let rd = feed::registry_digest(ANVIL_CHAIN_ID, &s.feed, fp, 0)?;
    let call = encode_call(
        "setRegistry(bytes32,bytes)",
        vec![Arg::W(fp), Arg::Bytes(sign_with(&[0, 1], rd))],
    );
    send_ok(&s.anvil, relayer, &s.feed, &call).await?;

    let next: Vec<String> = guardians(30, 2).into_iter().map(|g| g.address).collect();
    let gd = feed::guardian_set_digest(ANVIL_CHAIN_ID, &s.feed, &next, 2, 1)?;
    let words = next.iter().map(|a| w_addr(a)).collect();
    let call = encode_call(
        "setGuardians(address[],uint8,bytes)",
        vec![
            Arg::Words(words),
            Arg::W(w_u(2)),
            Arg::Bytes(sign_with(&[0, 2], gd)),
        ],
    );
    send_ok(&s.anvil, relayer, &s.feed, &call).await?;
    let isg = encode_call("isGuardian(address)", vec![Arg::W(w_addr(&next[1]))]);
    assert_eq!(word_at(&view(&s.anvil, &s.feed, isg).await?, 0), 1);
    Ok(())
}
