//! Conformance of per-address reserve balances (migration 0011), written once against
//! `&dyn Store` and run on SQLite and PostgreSQL (see `common`): balances are read
//! back per Bitcoin block, a second recording at the same block replaces the first,
//! another block keeps its own, and bad figures are refused without writing anything.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use ubtc_core::{Sats, Timestamp};
use ubtc_store::*;

mod common;
use common::on_both_backends;

const T0: Timestamp = Timestamp(1_700_000_000_000);

on_both_backends!(balances_are_kept_per_block);

fn balance(address: &str, sats: u64, utxos: u64) -> ReserveAddressBalance {
    ReserveAddressBalance {
        address: address.into(),
        descriptor: (address == "bc1qa").then(|| "wpkh(02aa)".to_owned()),
        balance_sats: Sats(sats),
        utxos,
    }
}

async fn balances_are_kept_per_block(store: Arc<dyn Store>) {
    let (h1, h2) = ("11".repeat(32), "22".repeat(32));
    assert!(store
        .reserve_address_balances(&h1)
        .await
        .unwrap()
        .is_empty());

    let first = [balance("bc1qb", 5_000, 2), balance("bc1qa", 70_000, 1)];
    store
        .record_reserve_address_balances(100, &h1, &first, T0)
        .await
        .unwrap();
    // Sorted by address, the descriptor kept only where there is one.
    let got = store.reserve_address_balances(&h1).await.unwrap();
    assert_eq!(got, vec![first[1].clone(), first[0].clone()]);

    // Same block again (a snapshot on the interval): the newer figures replace.
    let again = [balance("bc1qa", 80_000, 2), balance("bc1qb", 5_000, 2)];
    store
        .record_reserve_address_balances(100, &h1, &again, T0.plus_millis(1))
        .await
        .unwrap();
    assert_eq!(store.reserve_address_balances(&h1).await.unwrap(), again);

    // Another block keeps its own rows and leaves the first block's alone.
    let next = [balance("bc1qa", 1, 1)];
    store
        .record_reserve_address_balances(101, &h2, &next, T0.plus_millis(2))
        .await
        .unwrap();
    assert_eq!(store.reserve_address_balances(&h2).await.unwrap(), next);
    assert_eq!(store.reserve_address_balances(&h1).await.unwrap(), again);

    // A balance beyond what the database holds is refused, and the whole set with it:
    // the valid entry before it is not written either.
    let bad = [balance("bc1qc", 3, 1), balance("bc1qd", u64::MAX, 1)];
    let err = store
        .record_reserve_address_balances(102, &"33".repeat(32), &bad, T0)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err:?}");
    assert!(store
        .reserve_address_balances(&"33".repeat(32))
        .await
        .unwrap()
        .is_empty());
}
