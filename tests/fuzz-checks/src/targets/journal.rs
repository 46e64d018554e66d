//! The journal reader (`kasmina_journal::Journal::open`) on torn and corrupt
//! segments, in a scratch directory in memory (/dev/shm).
//!
//! Input: 1 byte gives the number of segment files (1..=3); each segment is
//! a byte for its first sequence number (its file name) and a u16-length
//! piece of file content. Seeds are segments the real writer produced
//! (`gen_corpus`). Recovery must either refuse, changing no file, or return
//! records that a second open returns again unchanged (the torn tail is cut
//! once, never misread); after it, an appended record reads back. No
//! allocation may exceed a segment's bound (segment size + one record).
//!
//! Run: `scripts/fuzz.sh journal 60`.

use std::fs;
use std::path::Path;

use crate::{
    Input, JOURNAL_MAX_RECORD_BYTES as MAX_RECORD_BYTES, JOURNAL_SEGMENT_BYTES as SEGMENT_BYTES, journal_config,
    scratch_dir, with_alloc_cap,
};
use kasmina_journal::DecisionJournal;
use kasmina_journal::format::RECORD_HEADER_LEN;
use kasmina_journal::recovery::segment_name;
use leyline::SeedStage;
use leyline::journal::JournalRecord;

/// Every file in `dir`, sorted, with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .expect("scratch dir readable")
        .filter_map(Result::ok)
        .map(|e| (e.file_name().to_string_lossy().into_owned(), fs::read(e.path()).expect("file readable")))
        .collect();
    files.sort();
    files
}

fn encoded(entries: &[kasmina_journal::Entry<JournalRecord>]) -> Vec<(u64, Vec<u8>)> {
    entries.iter().map(|e| (e.seq.0, postcard::to_stdvec(&e.record).expect("a record encodes"))).collect()
}

/// The largest single allocation recovery may make for `total` bytes of
/// segments: one segment at its bound, or the vector of recovered entries
/// (at most one per record header, doubled by growth).
fn alloc_cap(total: usize) -> usize {
    let segment = (SEGMENT_BYTES + u64::from(MAX_RECORD_BYTES) + 64) as usize;
    let entries = 2 * std::mem::size_of::<kasmina_journal::Entry<JournalRecord>>() * (total / RECORD_HEADER_LEN + 1);
    segment.max(entries)
}

fn open(dir: &Path) -> Result<(DecisionJournal, Vec<kasmina_journal::Entry<JournalRecord>>), String> {
    let total: usize = snapshot(dir).iter().map(|(_, b)| b.len()).sum();
    with_alloc_cap(alloc_cap(total), "recovering the journal", || DecisionJournal::open(dir, journal_config()))
        .map(|(j, records, _report)| (j, records))
        .map_err(|e| e.to_string())
}

/// Runs the check on one input; panics (or aborts, over an allocation cap) on a finding.
pub fn check(data: &[u8]) {
    let dir = scratch_dir("journal");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch dir");
    let mut input = Input::new(data);
    let segments = input.byte() % 3 + 1;
    for _ in 0..segments {
        let first_seq = u64::from(input.byte()) + 1;
        fs::write(dir.join(segment_name(first_seq)), input.piece()).expect("segment written");
    }
    let before = snapshot(&dir);
    match open(&dir) {
        Err(first) => {
            assert_eq!(snapshot(&dir), before, "a refused journal was modified ({first})");
            let again = open(&dir).err();
            assert_eq!(again.as_deref(), Some(first.as_str()), "a refusal is not stable");
        }
        Ok((journal, records)) => {
            drop(journal);
            let (mut journal, again) = open(&dir).expect("a recovered journal opens again");
            assert_eq!(encoded(&again), encoded(&records), "a second recovery read different records");
            let seqs: Vec<u64> = records.iter().map(|e| e.seq.0).collect();
            assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "sequence numbers not consecutive: {seqs:?}");
            let record = JournalRecord::Transition {
                seed_id: "fuzz".into(),
                from: SeedStage::Dormant,
                to: SeedStage::Germinated,
                step: 1,
                reason: "fuzz".into(),
                recorded_at_ms: 0,
            };
            let seq = journal.append_durable(&record).expect("append after recovery");
            drop(journal);
            let (_journal, after) = open(&dir).expect("the journal opens after an append");
            assert_eq!(after.len(), records.len() + 1, "the appended record is missing");
            assert_eq!(after.last().map(|e| e.seq), Some(seq));
        }
    }
    let _ = fs::remove_dir_all(&dir);
}
