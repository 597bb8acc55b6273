//! The aborted-transactions index of one segment (Kafka's `.txnindex`): one entry per ABORT
//! marker in the segment, saying which producer's records between which offsets a
//! read_committed consumer must drop. Entries are 34 bytes in Kafka's layout (version i16,
//! producer id i64, first offset i64, last offset i64, last stable offset i64). The file is
//! created with the segment's first abort; a recovered segment's entries are rebuilt from its
//! markers, so the file never needs to be more durable than the segment itself.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::Result;

const ENTRY_LEN: usize = 34;

/// One aborted transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    /// The transaction's first record in this partition.
    pub first_offset: i64,
    /// The ABORT marker's offset.
    pub last_offset: i64,
    /// The partition's last stable offset once the marker was written.
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut out = [0u8; ENTRY_LEN];
        out[0..2].copy_from_slice(&0i16.to_be_bytes());
        out[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        out[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        out[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        out[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        out
    }

    fn decode(b: &[u8]) -> Option<AbortedTxn> {
        let i64_at = |at: usize| -> Option<i64> {
            Some(i64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
        };
        Some(AbortedTxn {
            producer_id: i64_at(2)?,
            first_offset: i64_at(10)?,
            last_offset: i64_at(18)?,
            last_stable_offset: i64_at(26)?,
        })
    }
}

pub(crate) fn txn_index_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.txnindex"))
}

/// A segment's aborted transactions, in marker order, kept in memory and in its file.
#[derive(Debug)]
pub(crate) struct TxnIndex {
    path: PathBuf,
    entries: Vec<AbortedTxn>,
    file: Option<File>,
}

impl TxnIndex {
    /// The index of segment `base`: its file's entries when there is one. A torn last entry
    /// (a crash while it was written) is ignored.
    pub fn open(dir: &Path, base: i64) -> Result<TxnIndex> {
        let path = txn_index_path(dir, base);
        let entries = match std::fs::read(&path) {
            Ok(bytes) => bytes
                .chunks_exact(ENTRY_LEN)
                .filter_map(AbortedTxn::decode)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(TxnIndex {
            path,
            entries,
            file: None,
        })
    }

    /// An empty index for a new segment (a stale file of the same name is removed).
    pub fn create(dir: &Path, base: i64) -> Result<TxnIndex> {
        let path = txn_index_path(dir, base);
        remove_if_present(&path)?;
        Ok(TxnIndex {
            path,
            entries: Vec::new(),
            file: None,
        })
    }

    pub fn entries(&self) -> &[AbortedTxn] {
        &self.entries
    }

    pub fn push(&mut self, entry: AbortedTxn) -> Result<()> {
        let at = (self.entries.len() * ENTRY_LEN) as u64;
        self.entries.push(entry);
        if self.file.is_none() {
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .read(true)
                    .write(true)
                    .open(&self.path)?,
            );
        }
        if let Some(file) = &self.file {
            file.write_all_at(&entry.encode(), at)?;
        }
        Ok(())
    }

    /// Replaces the entries (recovery rebuilt them from the segment's markers) and the file.
    pub fn replace(&mut self, entries: Vec<AbortedTxn>) -> Result<()> {
        if entries == self.entries && (entries.is_empty() || self.path.exists()) {
            return Ok(());
        }
        self.file = None;
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.encode()).collect();
        let tmp = self.path.with_extension("txnindex.tmp");
        std::fs::write(&tmp, &bytes)?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        self.entries = entries;
        Ok(())
    }

    pub fn flush(&self) -> Result<()> {
        if let Some(file) = &self.file {
            file.sync_data()?;
        }
        Ok(())
    }

    pub fn delete(&self) -> Result<()> {
        remove_if_present(&self.path)
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: i64, first: i64, last: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: last + 1,
        }
    }

    #[test]
    fn entries_survive_reopening_and_a_torn_entry_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = TxnIndex::create(dir.path(), 100).expect("create");
        assert!(
            !txn_index_path(dir.path(), 100).exists(),
            "no file before the first abort"
        );
        index.push(entry(7, 100, 110)).expect("push");
        index.push(entry(8, 105, 120)).expect("push");
        let reopened = TxnIndex::open(dir.path(), 100).expect("open");
        assert_eq!(reopened.entries(), index.entries());
        // Half an entry at the end: a crash during its write.
        let path = txn_index_path(dir.path(), 100);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.extend_from_slice(&[0u8; 10]);
        std::fs::write(&path, bytes).expect("write");
        assert_eq!(
            TxnIndex::open(dir.path(), 100).expect("open").entries(),
            &[entry(7, 100, 110), entry(8, 105, 120)]
        );
        let mut rebuilt = TxnIndex::open(dir.path(), 100).expect("open");
        rebuilt.replace(vec![entry(7, 100, 110)]).expect("replace");
        assert_eq!(
            TxnIndex::open(dir.path(), 100).expect("open").entries(),
            &[entry(7, 100, 110)]
        );
        rebuilt.delete().expect("delete");
        assert!(!path.exists());
    }
}
