//! Response bodies. Explicit structs rather than the store's records, so that a
//! new column never leaks (lease owners and callback URLs stay private) and the wire
//! format changes only when this file does. Amounts are decimal strings, timestamps
//! RFC 3339.

use std::collections::BTreeMap;

use serde::Serialize;
use ubtc_core::{ChainId, Timestamp, ValidationStatus};
use ubtc_store::{
    ReserveAddress, ReserveAddressBalance, ReserveHistoryPoint, ReserveSnapshot, Stats,
    ValidationRecord,
};

use crate::state::ChainInfo;

/// Unit shown for amounts on a chain that is no longer configured.
const UNKNOWN_UNIT: &str = "base-units";

#[derive(Serialize)]
pub struct ValidationList {
    pub items: Vec<ValidationView>,
    /// Pass as `before` to get the next (older) page; `null` on the last page.
    pub next_before: Option<String>,
}

#[derive(Serialize)]
pub struct ValidationView {
    pub id: String,
    pub status: ValidationStatus,
    pub reason: Option<ReasonView>,
    pub payment: PaymentView,
    pub message: MessageView,
    pub confirmations: u64,
    pub attempts: u32,
    /// Earliest time a worker will pick it up (rate-limit delay or retry back-off).
    pub not_before: Option<Timestamp>,
    /// The "delay warning": set while the validation is rate limited.
    pub delay: Option<DelayView>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub confirmed_at: Option<Timestamp>,
    pub signed_at: Option<Timestamp>,
    /// The statement the guardians signed, once signed.
    pub statement: Option<String>,
    /// Where the proof bundle is, once signed.
    pub proof_url: Option<String>,
    pub url: String,
}

#[derive(Serialize)]
pub struct ReasonView {
    pub code: String,
    pub detail: String,
}

#[derive(Serialize)]
pub struct PaymentView {
    pub chain: String,
    pub tx_hash: String,
    pub index: u32,
    pub payer: String,
    pub amount: AmountView,
    pub block: BlockView,
}

#[derive(Serialize)]
pub struct AmountView {
    /// Decimal string of base units (never a float).
    pub base_units: String,
    pub unit: String,
}

#[derive(Serialize)]
pub struct BlockView {
    pub number: u64,
    pub hash: String,
}

#[derive(Serialize)]
pub struct MessageView {
    pub hex: String,
    /// The message as text when its bytes are valid UTF-8.
    pub text: Option<String>,
}

#[derive(Serialize)]
pub struct DelayView {
    pub until: Timestamp,
    pub remaining_secs: i64,
    pub message: String,
}

impl ValidationView {
    pub fn new(record: &ValidationRecord, chains: &[ChainInfo], now: Timestamp) -> Self {
        let id = record.id.to_string();
        let unit = chains
            .iter()
            .find(|c| c.name == record.payment.chain)
            .map_or(UNKNOWN_UNIT, |c| c.native_unit.as_str())
            .to_owned();
        let text = hex::decode(&record.message_hex)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        let delay = match (record.status, record.not_before) {
            (ValidationStatus::Delayed, Some(until)) => Some(DelayView {
                until,
                remaining_secs: (until.as_millis() - now.as_millis()).max(0) / 1000,
                message: format!("rate limited: this validation will be processed after {until}"),
            }),
            _ => None,
        };
        let signed = record.status.is_signed();
        ValidationView {
            status: record.status,
            reason: record.reason.as_ref().map(|r| ReasonView {
                code: r.code.clone(),
                detail: r.detail.clone(),
            }),
            payment: PaymentView {
                chain: record.payment.chain.to_string(),
                tx_hash: record.payment.tx_hash.to_string(),
                index: record.payment.index,
                payer: record.payer.to_string(),
                amount: AmountView {
                    base_units: record.amount_base_units.to_string(),
                    unit,
                },
                block: BlockView {
                    number: record.block.number,
                    hash: record.block.hash.clone(),
                },
            },
            message: MessageView {
                hex: record.message_hex.clone(),
                text,
            },
            confirmations: record.confirmations,
            attempts: record.attempts,
            not_before: record.not_before,
            delay,
            created_at: record.created_at,
            updated_at: record.updated_at,
            confirmed_at: record.confirmed_at,
            signed_at: record.signed_at,
            statement: record.statement_text.clone(),
            proof_url: signed.then(|| format!("/v1/proofs/{id}")),
            url: format!("/v1/validations/{id}"),
            id,
        }
    }
}

#[derive(Serialize)]
pub struct ChainList<'a> {
    pub items: &'a [ChainInfo],
}

#[derive(Serialize)]
pub struct ReservesView {
    pub addresses: Vec<ReserveAddressView>,
    /// `null` until the first snapshot is taken. The snapshotter's own reading,
    /// signed by nobody: unproven.
    pub snapshot: Option<SnapshotView>,
    /// The latest reserve attestation (guardian-signed, checkable with `ubtc verify`):
    /// the proven figures. `null` until the first one is made.
    pub attestation: Option<crate::attestations::AttestationView>,
}

#[derive(Serialize)]
pub struct ReserveAddressView {
    pub address: String,
    pub kind: String,
    pub descriptor: String,
    pub label: Option<String>,
    pub since: Timestamp,
    /// Balance in satoshis (decimal string) at the latest snapshot's Bitcoin block;
    /// `null` when that snapshot did not count this address (none yet, or the address
    /// was added after it).
    pub balance_sats: Option<String>,
    /// Unspent outputs making up `balance_sats`; `null` with it.
    pub utxos: Option<u64>,
}

impl From<&ReserveAddress> for ReserveAddressView {
    fn from(a: &ReserveAddress) -> Self {
        Self {
            address: a.address.clone(),
            kind: a.kind.clone(),
            descriptor: a.descriptor.clone(),
            label: a.label.clone(),
            since: a.created_at,
            balance_sats: None,
            utxos: None,
        }
    }
}

impl ReserveAddressView {
    /// This address's balance among `balances` (those of the latest snapshot).
    pub fn with_balance(mut self, balances: &[ReserveAddressBalance]) -> Self {
        if let Some(b) = balances.iter().find(|b| b.address == self.address) {
            self.balance_sats = Some(b.balance_sats.0.to_string());
            self.utxos = Some(b.utxos);
        }
        self
    }
}

/// One reserve address's balance as counted in a snapshot.
#[derive(Serialize)]
pub struct AddressBalanceView {
    pub address: String,
    pub descriptor: Option<String>,
    pub balance_sats: String,
    pub utxos: u64,
}

impl From<&ReserveAddressBalance> for AddressBalanceView {
    fn from(b: &ReserveAddressBalance) -> Self {
        Self {
            address: b.address.clone(),
            descriptor: b.descriptor.clone(),
            balance_sats: b.balance_sats.0.to_string(),
            utxos: b.utxos,
        }
    }
}

#[derive(Serialize)]
pub struct SnapshotView {
    pub as_of: Timestamp,
    pub age_secs: i64,
    pub bitcoin_height: u32,
    pub bitcoin_block_hash: String,
    pub reserve_sats: String,
    pub supply_sats: String,
    /// Reserve over supply as a decimal string with six decimals (`"1.000000"`);
    /// `null` when there is no supply.
    pub ratio: Option<String>,
    pub ratio_ppm: Option<u64>,
    pub healthy: bool,
    pub stale: bool,
    pub supply: Vec<SupplyView>,
    /// Each reserve address's balance at `bitcoin_height`, as counted in
    /// `reserve_sats` (their sum); empty for snapshots taken before balances were kept.
    pub addresses: Vec<AddressBalanceView>,
}

#[derive(Serialize)]
pub struct SupplyView {
    pub chain: String,
    pub token: String,
    pub block_number: u64,
    pub block_hash: String,
    pub supply_base_units: String,
    pub decimals: u8,
    pub as_of: Timestamp,
}

impl SnapshotView {
    /// `max_age_ms`: when set, a snapshot older than that now is shown stale and not
    /// healthy, whatever was stored when it was taken.
    pub fn new(s: &ReserveSnapshot, now: Timestamp, max_age_ms: Option<i64>) -> Self {
        let age_ms = (now.as_millis() - s.taken_at.as_millis()).max(0);
        let stale = s.stale || max_age_ms.is_some_and(|max| age_ms > max);
        Self {
            as_of: s.taken_at,
            age_secs: age_ms / 1000,
            bitcoin_height: s.bitcoin_height,
            bitcoin_block_hash: s.bitcoin_block_hash.clone(),
            reserve_sats: s.reserve_sats.0.to_string(),
            supply_sats: s.supply_sats.0.to_string(),
            ratio: s.ratio_ppm.map(ratio_text),
            ratio_ppm: s.ratio_ppm,
            healthy: s.healthy && !stale,
            stale,
            supply: s
                .supply
                .iter()
                .map(|e| SupplyView {
                    chain: e.chain.to_string(),
                    token: e.token.clone(),
                    block_number: e.block_number,
                    block_hash: e.block_hash.clone(),
                    supply_base_units: e.supply.base_units.to_string(),
                    decimals: e.supply.decimals,
                    as_of: e.as_of,
                })
                .collect(),
            addresses: Vec::new(),
        }
    }

    /// With the per-address balances recorded at this snapshot's block.
    pub fn with_balances(mut self, balances: &[ReserveAddressBalance]) -> Self {
        self.addresses = balances.iter().map(AddressBalanceView::from).collect();
        self
    }
}

/// Reserve over supply as a decimal string with six decimals (`"1.000000"`).
fn ratio_text(ppm: u64) -> String {
    format!("{}.{:06}", ppm / 1_000_000, ppm % 1_000_000)
}

#[derive(Serialize)]
pub struct ReserveHistoryView {
    /// The chain whose supply `chain_supply_sats` shows; `null` when none was asked.
    pub chain: Option<String>,
    pub bucket: &'static str,
    pub from: Timestamp,
    pub to: Timestamp,
    /// Oldest first; buckets without a snapshot are absent.
    pub points: Vec<HistoryPointView>,
}

/// One bucket: the figures of its last snapshot, with the bucket's ratio range.
#[derive(Serialize)]
pub struct HistoryPointView {
    /// Start of the bucket.
    pub time: Timestamp,
    /// When the bucket's last snapshot was taken.
    pub taken_at: Timestamp,
    pub samples: u64,
    pub bitcoin_height: u32,
    pub reserve_sats: String,
    /// Total supply over all chains, in satoshis.
    pub supply_sats: String,
    /// The asked chain's supply in satoshis; `null` without `chain` or when that
    /// snapshot has no entry for it.
    pub chain_supply_sats: Option<String>,
    pub ratio: Option<String>,
    pub ratio_ppm: Option<u64>,
    pub min_ratio_ppm: Option<u64>,
    pub max_ratio_ppm: Option<u64>,
    pub healthy: bool,
    pub stale: bool,
}

impl HistoryPointView {
    pub fn new(p: &ReserveHistoryPoint, chain: Option<&ChainId>) -> Self {
        let s = &p.last;
        let chain_supply_sats = chain
            .and_then(|c| s.supply.iter().find(|e| &e.chain == c))
            .and_then(|e| e.supply.to_sats_floor())
            .map(|sats| sats.0.to_string());
        Self {
            time: p.bucket_start,
            taken_at: s.taken_at,
            samples: p.samples,
            bitcoin_height: s.bitcoin_height,
            reserve_sats: s.reserve_sats.0.to_string(),
            supply_sats: s.supply_sats.0.to_string(),
            chain_supply_sats,
            ratio: s.ratio_ppm.map(ratio_text),
            ratio_ppm: s.ratio_ppm,
            min_ratio_ppm: p.min_ratio_ppm,
            max_ratio_ppm: p.max_ratio_ppm,
            healthy: s.healthy,
            stale: s.stale,
        }
    }
}

#[derive(Serialize)]
pub struct StatsView {
    pub window_secs: i64,
    pub since: Timestamp,
    pub total: u64,
    pub by_status: BTreeMap<String, u64>,
    /// chain → status → count.
    pub by_chain: BTreeMap<String, BTreeMap<String, u64>>,
    pub signed_in_window: u64,
    pub processing_ms: Percentiles,
}

#[derive(Serialize)]
pub struct Percentiles {
    pub p50: Option<i64>,
    pub p90: Option<i64>,
    pub p99: Option<i64>,
}

impl StatsView {
    pub fn new(stats: &Stats, since: Timestamp, window_secs: i64) -> Self {
        let mut by_status = BTreeMap::new();
        let mut by_chain: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let mut total = 0u64;
        for c in &stats.counts {
            total += c.count;
            *by_status.entry(c.status.to_string()).or_insert(0) += c.count;
            *by_chain
                .entry(c.chain.to_string())
                .or_default()
                .entry(c.status.to_string())
                .or_insert(0) += c.count;
        }
        Self {
            window_secs,
            since,
            total,
            by_status,
            by_chain,
            signed_in_window: stats.signed_since,
            processing_ms: Percentiles {
                p50: stats.processing_ms_p50,
                p90: stats.processing_ms_p90,
                p99: stats.processing_ms_p99,
            },
        }
    }
}

#[derive(Serialize)]
pub struct DemoPaymentView {
    pub chain: String,
    pub tx_hash: String,
    pub index: u32,
    /// Where to watch the validation this payment creates.
    pub validations_url: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ubtc_core::Sats;

    #[test]
    fn a_snapshot_past_its_max_age_reads_stale() {
        let taken_at = Timestamp::from_millis(1_000_000);
        let s = ReserveSnapshot {
            taken_at,
            bitcoin_height: 1,
            bitcoin_block_hash: "00".into(),
            reserve_sats: Sats(2),
            supply_sats: Sats(1),
            ratio_ppm: Some(2_000_000),
            healthy: true,
            stale: false,
            supply: vec![],
        };
        let now = taken_at.plus_millis(90_000);
        let v = SnapshotView::new(&s, now, None);
        assert!(v.healthy && !v.stale && v.age_secs == 90);
        let v = SnapshotView::new(&s, now, Some(120_000));
        assert!(v.healthy && !v.stale);
        let v = SnapshotView::new(&s, now, Some(60_000));
        assert!(!v.healthy && v.stale);
    }
}
