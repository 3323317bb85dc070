//! A guardian's durable approval records: fsync'd, append-only JSON-lines files.
//!
//! [`JsonLines`] is the one file type behind both records a guardian keeps: the
//! statement approvals ([`ApprovalLog`]) and the reserve-operation approvals
//! (`reserve_ops`). Contract: a line is written and `fsync`ed *before* whatever it
//! records leaves the process, so a guardian that crashes between the two answers the
//! retry the same way, and it never approves a second statement for a payment (or a
//! second use of a deposit, burn or input) across restarts. A file is read whole at
//! start; it grows by one short line per approval.
//!
//! One rule for damage, the same for both files:
//! - a torn last line (bytes after the last newline: a crash in the middle of a write,
//!   before its fsync returned and so before anything was answered) is cut off on open
//!   (the file is truncated to its last complete line and synced) and logged, so the
//!   next line is never glued onto the fragment; the cut bytes are first saved beside
//!   the file (`FILE.torn-<unix millis>`), so a hand-edited file loses nothing silently;
//! - a write that fails while the guardian runs (a full disk, an I/O error) is undone
//!   at once: the file is truncated back to its length before the write and synced, so
//!   the next approval is never glued onto a fragment and then answered. When even that
//!   fails the file is marked unusable and every later append fails (the guardian
//!   answers `internal`) until it is reopened, where the open rule above applies;
//! - any other line that does not parse stops the guardian with an error naming the
//!   file and the line: skipping it could forget an approval that was answered.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
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

/// What [`JsonLines::open`] cut off the end of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The line number the fragment started on.
    pub line: usize,
    /// Bytes removed.
    pub bytes: usize,
    /// Where the removed bytes were saved.
    pub saved_to: PathBuf,
}

/// Faults a unit test injects into [`JsonLines::append`]: no full disk can be made on
/// this machine, so the failing writer is simulated.
#[cfg(test)]
#[derive(Default)]
struct Faults {
    /// Write only this many bytes of the next line, then fail.
    short_write: Option<usize>,
    /// Fail the truncation that undoes a failed write.
    truncate_fails: bool,
}

/// An append-only, fsync'd JSON-lines file of `R` records (see the module docs for the
/// damage rule). Appending and flushing are split so that a caller can write under its
/// decision lock and flush after releasing it ([`Syncer`], group commit).
pub struct JsonLines<R> {
    path: PathBuf,
    file: Arc<std::fs::File>,
    flush: Arc<FlushState>,
    torn: Option<TornTail>,
    /// Held across measure-write-undo, so undoing one failed write can never cut a line
    /// another append wrote meanwhile.
    write_lock: Mutex<()>,
    /// A failed write could not be undone: the file may end in a fragment.
    unusable: AtomicBool,
    #[cfg(test)]
    faults: Mutex<Faults>,
    _record: PhantomData<fn(R) -> R>,
}

impl<R> std::fmt::Debug for JsonLines<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLines")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<R: Serialize + DeserializeOwned> JsonLines<R> {
    /// Opens (creating when missing) the file and reads every record, in order. A torn
    /// last line is cut off (and logged); any other unparsable line is
    /// [`RecordError::Damaged`] and the file is left as it is.
    pub fn open(path: &Path) -> Result<(Self, Vec<R>), RecordError> {
        let io = |source| RecordError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        // The complete lines, without their final newline; nothing when there is none.
        let body = &bytes[..complete.saturating_sub(1)];
        let mut records = Vec::new();
        let mut lines = 0;
        if complete > 0 {
            for (i, line) in body.split(|b| *b == b'\n').enumerate() {
                lines = i + 1;
                let damaged = |detail: String| RecordError::Damaged {
                    path: path.display().to_string(),
                    line: i + 1,
                    detail,
                };
                let text = std::str::from_utf8(line).map_err(|e| damaged(e.to_string()))?;
                if text.trim().is_empty() {
                    continue;
                }
                records.push(serde_json::from_str(text).map_err(|e| damaged(e.to_string()))?);
            }
        }
        let mut torn = None;
        if complete < bytes.len() {
            // Checked only after every complete line parsed: a damaged file is left
            // exactly as found, for the operator to look at.
            let saved_to = save_fragment(path, &bytes[complete..]).map_err(io)?;
            let fragment = TornTail {
                line: lines + 1,
                bytes: bytes.len() - complete,
                saved_to,
            };
            file.set_len(complete as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
            tracing::warn!(
                path = %path.display(),
                line = fragment.line,
                bytes = fragment.bytes,
                saved_to = %fragment.saved_to.display(),
                "cut a torn last line off the approval record (a write interrupted before it was answered)"
            );
            torn = Some(fragment);
        }
        Ok((
            Self {
                path: path.to_owned(),
                file: Arc::new(file),
                flush: Arc::new(FlushState::default()),
                torn,
                write_lock: Mutex::new(()),
                unusable: AtomicBool::new(false),
                #[cfg(test)]
                faults: Mutex::new(Faults::default()),
                _record: PhantomData,
            },
            records,
        ))
    }

    /// The fragment cut off at open, if any.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn.as_ref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record without waiting for the disk; [`JsonLines::syncer`] must
    /// flush it before anything it records leaves the process.
    pub fn append(&self, record: &R) -> Result<(), RecordError> {
        let mut line = serde_json::to_string(record).map_err(|e| RecordError::Io {
            path: self.path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        line.push('\n');
        let io = |source| RecordError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let _writing = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.unusable.load(Ordering::SeqCst) {
            return Err(io(std::io::Error::other(
                "an earlier failed write could not be undone; reopen the record",
            )));
        }
        let before = self.file.metadata().map_err(io)?.len();
        // One write of the whole line (O_APPEND): a crash leaves at most a torn tail.
        if let Err(source) = self.write_line(line.as_bytes()) {
            match self.undo(before) {
                Ok(()) => tracing::warn!(
                    path = %self.path.display(),
                    error = %source,
                    "a write to the approval record failed; truncated back to its last line"
                ),
                Err(undo) => {
                    self.unusable.store(true, Ordering::SeqCst);
                    tracing::error!(
                        path = %self.path.display(),
                        error = %source,
                        undo_error = %undo,
                        "a write to the approval record failed and could not be undone; \
                         refusing every later approval until it is reopened"
                    );
                }
            }
            return Err(io(source));
        }
        // Counted once written: a flush that reads this count afterwards covers it.
        self.flush.written.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn write_line(&self, bytes: &[u8]) -> std::io::Result<()> {
        #[cfg(test)]
        if let Some(n) = self
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .short_write
            .take()
        {
            (&*self.file).write_all(&bytes[..n.min(bytes.len())])?;
            return Err(std::io::Error::other("injected short write"));
        }
        (&*self.file).write_all(bytes)
    }

    /// Cuts the file back to `len` bytes and syncs it.
    fn undo(&self, len: u64) -> std::io::Result<()> {
        #[cfg(test)]
        if self
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .truncate_fails
        {
            return Err(std::io::Error::other("injected truncation failure"));
        }
        self.file.set_len(len)?;
        self.file.sync_data()
    }

    /// [`JsonLines::append`], then waits until it is on disk.
    pub fn append_synced(&self, record: &R) -> Result<(), RecordError> {
        self.append(record)?;
        self.syncer().sync()
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
}

/// Writes a torn fragment to `FILE.torn-<unix millis>` (synced) before it is cut.
fn save_fragment(path: &Path, fragment: &[u8]) -> std::io::Result<PathBuf> {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".torn-{}", Timestamp::now().as_millis()));
    let saved = PathBuf::from(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&saved)?;
    f.write_all(fragment)?;
    f.sync_all()?;
    Ok(saved)
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

/// The statement approvals, indexed by payment.
pub struct ApprovalLog {
    file: JsonLines<Approval>,
    by_payment: HashMap<PaymentRef, Vec<Approval>>,
}

impl std::fmt::Debug for ApprovalLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalLog")
            .field("path", &self.file.path)
            .field("payments", &self.by_payment.len())
            .finish()
    }
}

impl ApprovalLog {
    /// Opens (creating when missing) and reads the record, under the damage rule of
    /// [`JsonLines::open`].
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        let (file, approvals) = JsonLines::<Approval>::open(path)?;
        let mut by_payment: HashMap<PaymentRef, Vec<Approval>> = HashMap::new();
        for a in approvals {
            by_payment.entry(a.payment.clone()).or_default().push(a);
        }
        Ok(Self { file, by_payment })
    }

    /// Every approval recorded for `payment`.
    pub fn for_payment(&self, payment: &PaymentRef) -> &[Approval] {
        self.by_payment.get(payment).map_or(&[], Vec::as_slice)
    }

    /// Appends one approval without waiting for the disk; the caller must
    /// [`Syncer::sync`] before any partial signature leaves the process.
    ///
    /// Split in two so the guardian writes under its decision lock (which makes
    /// check-then-record atomic) but waits for the fsync after releasing it: concurrent
    /// requests then share one disk flush (group commit) instead of queueing behind
    /// one fsync each. An approval that is written but not yet synced is already seen
    /// by later checks, which only makes them stricter.
    pub fn append(&mut self, approval: Approval) -> Result<(), RecordError> {
        self.file.append(&approval)?;
        self.by_payment
            .entry(approval.payment.clone())
            .or_default()
            .push(approval);
        Ok(())
    }

    /// A handle that flushes everything appended so far to disk (`fdatasync`).
    pub fn syncer(&self) -> Syncer {
        self.file.syncer()
    }

    /// The torn fragment cut off when the record was opened, if any.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.file.torn_tail()
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

/// Flushes a [`JsonLines`] file to disk; usable without the owner's lock.
#[derive(Clone)]
pub struct Syncer {
    path: PathBuf,
    file: Arc<std::fs::File>,
    flush: Arc<FlushState>,
    /// Lines written when this handle was taken: all of them must be on disk.
    target: u64,
}

impl Syncer {
    /// Blocks until every line appended before [`JsonLines::syncer`] is on disk.
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

    fn tear(path: &Path, fragment: &[u8]) {
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(fragment).unwrap();
    }

    /// A crash mid-write, a reopen, two more approvals, another reopen: every complete
    /// record is there, the fragment is gone, nothing is glued to it. Damage anywhere
    /// but the tail stops the open and changes nothing.
    #[test]
    fn torn_tail_is_cut_later_approvals_survive_other_damage_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut log = ApprovalLog::open(&path).unwrap();
        assert!(log.torn_tail().is_none());
        log.append(approval("0x01")).unwrap();
        log.append(approval("0x02")).unwrap();
        log.syncer().sync().unwrap();
        drop(log);
        tear(&path, b"{\"payment\":{\"cha");
        let mut log = ApprovalLog::open(&path).unwrap();
        let torn = log.torn_tail().unwrap();
        assert_eq!((torn.line, torn.bytes), (3, 16));
        assert_eq!(
            std::fs::read(&torn.saved_to).unwrap(),
            b"{\"payment\":{\"cha"
        );
        assert!(torn
            .saved_to
            .to_string_lossy()
            .starts_with(&format!("{}.torn-", path.display())));
        assert_eq!(log.len(), 2);
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"));
        log.append(approval("0x03")).unwrap();
        log.append(approval("0x04")).unwrap();
        log.syncer().sync().unwrap();
        drop(log);
        let log = ApprovalLog::open(&path).unwrap();
        assert!(log.torn_tail().is_none());
        assert_eq!(log.len(), 4);
        for tx in ["0x01", "0x02", "0x03", "0x04"] {
            assert_eq!(log.for_payment(&approval(tx).payment).len(), 1, "{tx}");
        }
        drop(log);

        // A damaged line in the middle (a fragment glued to the next line, as an older
        // build wrote it): an error naming the file and the line; the file is untouched.
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        let glued = format!("{{\"payment\":{{\"cha{}", lines[1]);
        lines[1] = &glued;
        let damaged = format!("{}\n", lines.join("\n"));
        std::fs::write(&path, &damaged).unwrap();
        match ApprovalLog::open(&path) {
            Err(e @ RecordError::Damaged { line: 2, .. }) => {
                assert!(e.to_string().contains(&path.display().to_string()), "{e}");
                assert!(e.to_string().contains("line 2"), "{e}");
            }
            other => panic!("expected damage at line 2, got {other:?}"),
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), damaged);
        // The glued line as the last complete line is damage too, not a torn tail: it
        // holds an approval that was answered.
        let last_glued = format!("{}\n{glued}\n", lines[0]);
        std::fs::write(&path, &last_glued).unwrap();
        assert!(matches!(
            ApprovalLog::open(&path),
            Err(RecordError::Damaged { line: 2, .. })
        ));
        // Damage before a torn tail: the damage wins, and the tail is not cut either.
        let both = format!("garbage\n{}\n{{\"pay", lines[0]);
        std::fs::write(&path, &both).unwrap();
        assert!(matches!(
            ApprovalLog::open(&path),
            Err(RecordError::Damaged { line: 1, .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), both);
    }

    /// A file holding only a fragment (a crash during the first write) opens empty.
    #[test]
    fn a_lone_fragment_is_cut_to_an_empty_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(&path, b"{\"payment").unwrap();
        let log = ApprovalLog::open(&path).unwrap();
        assert_eq!(log.torn_tail().map(|t| t.line), Some(1));
        assert!(log.is_empty());
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }

    /// A write that fails half way is undone before the error returns: the next
    /// approval starts on a fresh line and a reopen finds every record, no fragment.
    #[test]
    fn a_failed_write_is_truncated_away_and_the_next_append_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut log = ApprovalLog::open(&path).unwrap();
        log.append(approval("0x01")).unwrap();
        let before = std::fs::read(&path).unwrap();
        log.file.faults.lock().unwrap().short_write = Some(20);
        assert!(matches!(
            log.append(approval("0x02")),
            Err(RecordError::Io { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), before);
        log.append(approval("0x03")).unwrap();
        log.syncer().sync().unwrap();
        drop(log);
        let log = ApprovalLog::open(&path).unwrap();
        assert!(log.torn_tail().is_none());
        assert_eq!(log.len(), 2);
        assert_eq!(log.for_payment(&approval("0x03").payment).len(), 1);
    }

    /// When the undo fails too, the record refuses every later append (so nothing is
    /// glued onto the fragment and answered) until it is reopened; the reopen cuts the
    /// fragment under the open rule and keeps it beside the file.
    #[test]
    fn a_failed_write_that_cannot_be_undone_makes_the_record_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let log = JsonLines::<Approval>::open(&path).unwrap().0;
        log.append(&approval("0x01")).unwrap();
        {
            let mut f = log.faults.lock().unwrap();
            f.short_write = Some(20);
            f.truncate_fails = true;
        }
        assert!(log.append(&approval("0x02")).is_err());
        let fragment_len = std::fs::read(&path).unwrap().len();
        log.faults.lock().unwrap().truncate_fails = false;
        match log.append(&approval("0x03")) {
            Err(e @ RecordError::Io { .. }) => assert!(e.to_string().contains("reopen"), "{e}"),
            other => panic!("expected the record to be unusable, got {other:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap().len(), fragment_len);
        drop(log);
        let (log, records) = JsonLines::<Approval>::open(&path).unwrap();
        assert_eq!(records.len(), 1);
        let torn = log.torn_tail().unwrap();
        assert_eq!(torn.bytes, 20);
        assert_eq!(std::fs::read(&torn.saved_to).unwrap().len(), 20);
        log.append(&approval("0x04")).unwrap();
        drop(log);
        assert_eq!(JsonLines::<Approval>::open(&path).unwrap().1.len(), 2);
    }
}
