//! A guardian's durable approval record: an fsync'd, append-only JSON-lines file.
//!
//! Contract: a line is written and `fsync`ed *before* the partial signature it holds
//! leaves the process, so a guardian that crashes between the two answers the retry
//! with the same signature, and it never approves a second statement for a payment it
//! has approved once, across restarts. The file is read whole at start; it grows by
//! one short line per approval, which is small next to the chain data a guardian
//! keeps anyway.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use ubtc_bitcoin::multisig::PartialSignature;
use ubtc_core::{PaymentRef, Timestamp};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("approval record {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("approval record {path} is damaged at line {line}: {detail}")]
    Damaged {
        path: String,
        line: usize,
        detail: String,
    },
}

/// One approval, as recorded.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub payment: PaymentRef,
    pub statement_digest: String,
    /// The reserve descriptor the partial signature is for.
    pub descriptor: String,
    pub partial: PartialSignature,
    /// The request that first obtained this approval.
    pub request_id: Uuid,
    pub recorded_at: Timestamp,
}

pub struct ApprovalLog {
    path: PathBuf,
    file: Arc<std::fs::File>,
    flush: Arc<FlushState>,
    by_payment: HashMap<PaymentRef, Vec<Approval>>,
}

impl std::fmt::Debug for ApprovalLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalLog")
            .field("path", &self.path)
            .field("payments", &self.by_payment.len())
            .finish()
    }
}

impl ApprovalLog {
    /// Opens (creating when missing) and reads the record. A torn last line — a crash
    /// in the middle of a write, before its fsync returned and so before anything was
    /// answered — is ignored; damage anywhere else is an error, because skipping an
    /// approval could let the guardian sign a second statement for that payment.
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        let io = |source| RecordError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
        }
        let mut by_payment: HashMap<PaymentRef, Vec<Approval>> = HashMap::new();
        match std::fs::File::open(path) {
            Ok(f) => {
                let lines: Vec<String> = std::io::BufReader::new(f)
                    .lines()
                    .collect::<Result<_, _>>()
                    .map_err(io)?;
                let last = lines.len();
                for (i, line) in lines.iter().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Approval>(line) {
                        Ok(a) => by_payment.entry(a.payment.clone()).or_default().push(a),
                        Err(_) if i + 1 == last => {
                            tracing::warn!(path = %path.display(), "ignoring a torn last line in the approval record");
                        }
                        Err(e) => {
                            return Err(RecordError::Damaged {
                                path: path.display().to_string(),
                                line: i + 1,
                                detail: e.to_string(),
                            })
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(Self {
            path: path.to_owned(),
            file: Arc::new(file),
            flush: Arc::new(FlushState::default()),
            by_payment,
        })
    }

    /// Every approval recorded for `payment`.
    pub fn for_payment(&self, payment: &PaymentRef) -> &[Approval] {
        self.by_payment.get(payment).map_or(&[], Vec::as_slice)
    }

    /// Appends one approval without waiting for the disk; the caller must
    /// [`ApprovalLog::sync`] before any partial signature leaves the process.
    ///
    /// Split in two so the guardian writes under its decision lock (which makes
    /// check-then-record atomic) but waits for the fsync after releasing it: concurrent
    /// requests then share one disk flush (group commit) instead of queueing behind
    /// one fsync each. An approval that is written but not yet synced is already seen
    /// by later checks, which only makes them stricter.
    pub fn append(&mut self, approval: Approval) -> Result<(), RecordError> {
        let io = |source| RecordError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let mut line = serde_json::to_string(&approval).map_err(|e| RecordError::Damaged {
            path: self.path.display().to_string(),
            line: 0,
            detail: e.to_string(),
        })?;
        line.push('\n');
        (&*self.file).write_all(line.as_bytes()).map_err(io)?;
        // Counted once written: a flush that reads this count afterwards covers it.
        self.flush.written.fetch_add(1, Ordering::SeqCst);
        self.by_payment
            .entry(approval.payment.clone())
            .or_default()
            .push(approval);
        Ok(())
    }

    /// A handle that flushes everything appended so far to disk (`fdatasync`).
    pub fn syncer(&self) -> Syncer {
        Syncer {
            path: self.path.clone(),
            file: self.file.clone(),
            flush: self.flush.clone(),
            target: self.flush.written.load(Ordering::SeqCst),
        }
    }

    pub fn len(&self) -> usize {
        self.by_payment.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_payment.is_empty()
    }
}

/// Group commit: appends counted, and how many of them a finished flush covers.
#[derive(Default)]
struct FlushState {
    /// Lines written so far (incremented after each write returns).
    written: AtomicU64,
    /// Lines known to be on disk; the lock also lets one flush run at a time, so
    /// requests that queue behind a flush find their line covered by the next one.
    synced: Mutex<u64>,
}

/// Flushes an [`ApprovalLog`] to disk; usable without the log's lock.
#[derive(Clone)]
pub struct Syncer {
    path: PathBuf,
    file: Arc<std::fs::File>,
    flush: Arc<FlushState>,
    /// Lines written when this handle was taken: all of them must be on disk.
    target: u64,
}

impl Syncer {
    /// Blocks until every line appended before [`ApprovalLog::syncer`] is on disk.
    /// Concurrent callers share flushes: while one `fdatasync` runs the others wait,
    /// and the next one covers every line written meanwhile; a caller whose lines a
    /// finished flush already covers returns without touching the disk.
    pub fn sync(&self) -> Result<(), RecordError> {
        let mut synced = self.flush.synced.lock().unwrap_or_else(|e| e.into_inner());
        if *synced >= self.target {
            return Ok(());
        }
        // Read before the flush: every line counted here was fully written before.
        let upto = self.flush.written.load(Ordering::SeqCst);
        self.file.sync_data().map_err(|source| RecordError::Io {
            path: self.path.display().to_string(),
            source,
        })?;
        *synced = upto;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ubtc_core::payment::TxHash;
    use ubtc_core::ChainId;

    fn approval(tx: &str) -> Approval {
        let key = crate::GuardianKey::generate();
        Approval {
            payment: PaymentRef {
                chain: ChainId::parse("dev").unwrap(),
                tx_hash: TxHash::parse(tx).unwrap(),
                index: 0,
            },
            statement_digest: "ab".repeat(32),
            descriptor: "wsh(sortedmulti(1,…))".into(),
            partial: PartialSignature {
                pubkey: bitcoin::CompressedPublicKey(key.public()),
                signatures: vec![vec![1, 2, 3]],
            },
            request_id: Uuid::new_v4(),
            recorded_at: Timestamp::from_millis(1),
        }
    }

    #[test]
    fn survives_reopen_ignores_torn_tail_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut log = ApprovalLog::open(&path).unwrap();
        log.append(approval("0x01")).unwrap();
        log.append(approval("0x02")).unwrap();
        log.syncer().sync().unwrap();
        drop(log);
        // A crash in the middle of the third write.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"payment\":{\"cha").unwrap();
        drop(f);
        let log = ApprovalLog::open(&path).unwrap();
        assert_eq!(log.len(), 2);
        let p = approval("0x02").payment;
        assert_eq!(log.for_payment(&p).len(), 1);
        drop(log);
        // Damage before the last line is not skipped.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("garbage\n{text}")).unwrap();
        assert!(matches!(
            ApprovalLog::open(&path),
            Err(RecordError::Damaged { line: 1, .. })
        ));
    }
}
