//! UTXOs a request claims, compared with this guardian's own Bitcoin view: a
//! statement's proof of funds and a release's inputs are signed only for outputs the
//! guardian itself sees unspent and confirmed, with exactly the stated amount and
//! script.

use std::collections::HashMap;

use ubtc_bitcoin::multisig::SigningRequest;
use ubtc_chains::BitcoinBackend;
use ubtc_core::bundle::Utxo;

use crate::protocol::RefusalCode;

/// Why `claimed` is not an output in `own` (the unspent outputs of its address on this
/// guardian's view) with the same amount and script; `None` when it is.
pub(crate) fn mismatch(own: &[Utxo], claimed: &Utxo) -> Option<String> {
    let Some(seen) = own
        .iter()
        .find(|o| o.txid.eq_ignore_ascii_case(&claimed.txid) && o.vout == claimed.vout)
    else {
        return Some(format!(
            "{}:{} is not an unspent reserve output here",
            claimed.txid, claimed.vout
        ));
    };
    if seen.amount_sats != claimed.amount_sats
        || !seen
            .script_pubkey_hex
            .eq_ignore_ascii_case(&claimed.script_pubkey_hex)
    {
        return Some(format!(
            "{}:{} holds {} sats here, the request says {}",
            claimed.txid, claimed.vout, seen.amount_sats, claimed.amount_sats
        ));
    }
    None
}

/// This guardian's Bitcoin view, read once per address and transaction for a batch.
pub(crate) struct UtxoView<'a> {
    bitcoin: &'a dyn BitcoinBackend,
    /// address → its unspent outputs, or why they could not be read.
    utxos: HashMap<String, Result<Vec<Utxo>, String>>,
    /// txid → confirmed (at least one block), or why it could not be read.
    confirmed: HashMap<String, Result<bool, String>>,
}

impl<'a> UtxoView<'a> {
    pub(crate) fn new(bitcoin: &'a dyn BitcoinBackend) -> Self {
        Self {
            bitcoin,
            utxos: HashMap::new(),
            confirmed: HashMap::new(),
        }
    }

    /// Every UTXO of a proof-of-funds request against the view: `utxo_set_mismatch`
    /// for the first one that is not there as stated, `chain_unavailable` when the
    /// view cannot be read.
    pub(crate) async fn check(
        &mut self,
        signing: &SigningRequest,
    ) -> Result<(), (RefusalCode, String)> {
        let address = signing
            .address()
            .map_err(|e| (RefusalCode::BadRequest, e.to_string()))?
            .to_string();
        if !self.utxos.contains_key(&address) {
            let read = self
                .bitcoin
                .address_utxos(&address)
                .await
                .map_err(|e| e.to_string());
            self.utxos.insert(address.clone(), read);
        }
        let own = match self.utxos.get(&address) {
            Some(Ok(own)) => own,
            Some(Err(e)) => {
                return Err((RefusalCode::ChainUnavailable, format!("bitcoin view: {e}")))
            }
            None => return Err((RefusalCode::Internal, "no UTXO read".into())),
        };
        for claimed in &signing.utxos {
            if let Some(why) = mismatch(own, claimed) {
                return Err((RefusalCode::UtxoSetMismatch, why));
            }
        }
        for claimed in &signing.utxos {
            let txid = claimed.txid.to_ascii_lowercase();
            if !self.confirmed.contains_key(&txid) {
                let depth = self
                    .bitcoin
                    .tx_confirmations(&txid)
                    .await
                    .map(|d| d.is_some_and(|d| d >= 1))
                    .map_err(|e| e.to_string());
                self.confirmed.insert(txid.clone(), depth);
            }
            match self.confirmed.get(&txid) {
                Some(Ok(true)) => {}
                Some(Ok(false)) => {
                    return Err((
                        RefusalCode::UtxoSetMismatch,
                        format!("{}:{} is not confirmed here", claimed.txid, claimed.vout),
                    ))
                }
                Some(Err(e)) => {
                    return Err((RefusalCode::ChainUnavailable, format!("bitcoin view: {e}")))
                }
                None => return Err((RefusalCode::Internal, "no confirmation read".into())),
            }
        }
        Ok(())
    }
}
