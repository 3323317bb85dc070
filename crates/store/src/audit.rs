//! The hash chain of the audit trail (DESIGN.md §8).
//!
//! Each record's hash covers its predecessor's hash and every field of the record, so
//! changing, removing or reordering any past record breaks every later hash. The
//! encoding is length-prefixed (no separator can be forged by a field's content).
//! [`audit_hash`] is public so that an independent checker can recompute the chain.

use sha2::{Digest, Sha256};
use ubtc_core::Timestamp;

use crate::types::{AuditEntry, NewAuditEntry};

/// `prev_hash` of the first record.
pub const AUDIT_GENESIS_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

const DOMAIN_TAG: &[u8] = b"ubtc-audit-v1";

fn field(h: &mut Sha256, value: Option<&str>) {
    match value {
        // u64::MAX marks "absent": distinct from the empty string.
        None => h.update(u64::MAX.to_be_bytes()),
        Some(v) => {
            h.update((v.len() as u64).to_be_bytes());
            h.update(v.as_bytes());
        }
    }
}

/// Hex SHA-256 of a record chained to `prev_hash`.
pub fn audit_hash(prev_hash: &str, at: Timestamp, entry: &NewAuditEntry) -> String {
    let mut h = Sha256::new();
    h.update(DOMAIN_TAG);
    field(&mut h, Some(prev_hash));
    h.update(at.as_millis().to_be_bytes());
    field(&mut h, Some(&entry.actor));
    field(&mut h, Some(&entry.action));
    field(&mut h, entry.target.as_deref());
    field(&mut h, entry.old_value.as_deref());
    field(&mut h, entry.new_value.as_deref());
    field(&mut h, entry.ip.as_deref());
    field(&mut h, entry.user_agent.as_deref());
    hex::encode(h.finalize())
}

/// Recomputes a stored record's hash.
pub fn recompute(e: &AuditEntry) -> String {
    let fields = NewAuditEntry {
        actor: e.actor.clone(),
        action: e.action.clone(),
        target: e.target.clone(),
        old_value: e.old_value.clone(),
        new_value: e.new_value.clone(),
        ip: e.ip.clone(),
        user_agent: e.user_agent.clone(),
    };
    audit_hash(&e.prev_hash, e.at, &fields)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn absent_and_empty_differ() {
        let mut a = NewAuditEntry {
            actor: "admin".into(),
            action: "reserve.add".into(),
            target: None,
            old_value: None,
            new_value: None,
            ip: None,
            user_agent: None,
        };
        let h1 = audit_hash(AUDIT_GENESIS_HASH, Timestamp(1), &a);
        a.target = Some(String::new());
        let h2 = audit_hash(AUDIT_GENESIS_HASH, Timestamp(1), &a);
        assert_ne!(h1, h2);
        assert_eq!(h1.len(), 64);
        assert_ne!(h1, audit_hash(&h1, Timestamp(1), &a));
    }
}
