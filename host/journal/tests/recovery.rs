//! Recovery on real files: torn tails are cut and reported, other damage is
//! refused, rotation and compaction survive reopening.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use kasmina_journal::format::RecordDefect;
use kasmina_journal::{DecisionJournal, JournalConfig, JournalError, TailDefect, decision_journal_config};
use leyline::SeedStage;
use leyline::journal::JournalRecord;

fn transition(i: u64) -> JournalRecord {
    JournalRecord::Transition {
        seed_id: format!("seed-{i}"),
        from: SeedStage::Dormant,
        to: SeedStage::Germinated,
        step: i,
        reason: format!("command cmd-{i} {}", "x".repeat((i % 7) as usize * 10)),
        recorded_at_ms: 1_000 + i,
    }
}

/// Writes `n` durable records and returns the segment path and the byte
/// offset at which the last record starts.
fn write_records(dir: &Path, n: u64) -> (PathBuf, u64) {
    let (mut j, recs, report) = DecisionJournal::open(dir, decision_journal_config()).unwrap();
    assert!(recs.is_empty() && report.torn_tail.is_none());
    let mut last_start = 0;
    for i in 1..=n {
        last_start = j.total_bytes();
        assert_eq!(j.append_durable(&transition(i)).unwrap().0, i);
    }
    let seg = fs::read_dir(dir).unwrap().next().unwrap().unwrap().path();
    (seg, last_start)
}

fn reopen(dir: &Path) -> Result<(DecisionJournal, Vec<JournalRecord>, kasmina_journal::RecoveryReport), JournalError> {
    let (j, entries, report) = DecisionJournal::open(dir, decision_journal_config())?;
    for (k, e) in entries.iter().enumerate() {
        assert_eq!(e.seq.0, k as u64 + 1, "sequence numbers are consecutive from 1");
    }
    Ok((j, entries.into_iter().map(|e| e.record).collect(), report))
}

#[test]
fn clean_journal_reopens_with_every_record() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 10);
    let (j, recs, report) = reopen(dir.path()).unwrap();
    assert_eq!(recs, (1..=10).map(transition).collect::<Vec<_>>());
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.records, 10);
    assert_eq!(j.next_seq().0, 11);
}

#[test]
fn truncation_anywhere_inside_the_last_record_is_cut_and_reported() {
    let probe = tempfile::tempdir().unwrap();
    let (seg, last_start) = write_records(probe.path(), 5);
    let full = fs::metadata(&seg).unwrap().len();
    for cut_at in (last_start + 1)..full {
        let dir = tempfile::tempdir().unwrap();
        let (seg, _) = write_records(dir.path(), 5);
        OpenOptions::new().write(true).open(&seg).unwrap().set_len(cut_at).unwrap();
        let (mut j, recs, report) = reopen(dir.path()).unwrap();
        assert_eq!(recs, (1..=4).map(transition).collect::<Vec<_>>(), "cut at {cut_at}");
        let torn = report.torn_tail.expect("torn tail reported");
        assert_eq!((torn.offset, torn.bytes_cut), (last_start, cut_at - last_start));
        assert!(matches!(
            torn.defect,
            TailDefect::Record(RecordDefect::ShortHeader | RecordDefect::ShortPayload { .. })
        ));
        assert_eq!(fs::metadata(&seg).unwrap().len(), last_start, "file truncated to the last intact record");
        // The journal keeps working where the intact prefix ends.
        assert_eq!(j.append_durable(&transition(99)).unwrap().0, 5);
        drop(j);
        let (_, recs, report) = reopen(dir.path()).unwrap();
        assert_eq!(recs.len(), 5);
        assert_eq!(recs[4], transition(99));
        assert_eq!(report.torn_tail, None);
    }
}

#[test]
fn a_flipped_byte_in_the_last_record_is_cut_never_misread() {
    let probe = tempfile::tempdir().unwrap();
    let (seg, last_start) = write_records(probe.path(), 3);
    let full = fs::metadata(&seg).unwrap().len();
    for byte in last_start..full {
        let dir = tempfile::tempdir().unwrap();
        let (seg, _) = write_records(dir.path(), 3);
        let mut bytes = fs::read(&seg).unwrap();
        bytes[byte as usize] ^= 0x40;
        fs::write(&seg, &bytes).unwrap();
        let (_, recs, report) = reopen(dir.path()).unwrap();
        assert_eq!(recs, (1..=2).map(transition).collect::<Vec<_>>(), "flip at {byte}");
        let torn = report.torn_tail.expect("damage reported");
        assert_eq!((torn.offset, torn.bytes_cut), (last_start, full - last_start));
    }
}

#[test]
fn garbage_and_zeros_after_the_last_record_are_cut() {
    for tail in [b"\xde\xad\xbe\xef garbage that is not a record at all".to_vec(), vec![0u8; 4096], vec![0xFF; 3]] {
        let dir = tempfile::tempdir().unwrap();
        let (seg, _) = write_records(dir.path(), 4);
        let intact = fs::metadata(&seg).unwrap().len();
        OpenOptions::new().append(true).open(&seg).unwrap().write_all(&tail).unwrap();
        let (_, recs, report) = reopen(dir.path()).unwrap();
        assert_eq!(recs, (1..=4).map(transition).collect::<Vec<_>>());
        let torn = report.torn_tail.expect("garbage reported");
        assert_eq!((torn.offset, torn.bytes_cut), (intact, tail.len() as u64));
    }
}

#[test]
fn damage_followed_by_intact_records_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (seg, _) = write_records(dir.path(), 6);
    let mut bytes = fs::read(&seg).unwrap();
    bytes[24 + 20] ^= 0x01; // inside the first record's payload
    fs::write(&seg, &bytes).unwrap();
    let err = reopen(dir.path()).expect_err("refused");
    assert!(matches!(err, JournalError::Corrupt { offset: 24, .. }), "{err}");
    assert_eq!(fs::read(&seg).unwrap(), bytes, "nothing was cut");
}

fn small_config() -> JournalConfig {
    JournalConfig { segment_bytes: 256, compact_after_bytes: 1024, ..decision_journal_config() }
}

#[test]
fn rotation_spreads_records_over_segments_and_reads_them_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _, _) = DecisionJournal::open(dir.path(), small_config()).unwrap();
    for i in 1..=40 {
        j.append(&transition(i)).unwrap();
    }
    j.sync().unwrap();
    assert!(j.segment_count() > 5, "rotated into {} segments", j.segment_count());
    assert!(j.needs_compaction());
    drop(j);
    let (j, entries, report) = DecisionJournal::open(dir.path(), small_config()).unwrap();
    assert_eq!(entries.into_iter().map(|e| e.record).collect::<Vec<_>>(), (1..=40).map(transition).collect::<Vec<_>>());
    assert_eq!(report.segments, j.segment_count());
}

#[test]
fn damage_in_an_older_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _, _) = DecisionJournal::open(dir.path(), small_config()).unwrap();
    for i in 1..=20 {
        j.append_durable(&transition(i)).unwrap();
    }
    drop(j);
    let mut segs: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    let oldest = &segs[0];
    let len = fs::metadata(oldest).unwrap().len();
    OpenOptions::new().write(true).open(oldest).unwrap().set_len(len - 1).unwrap();
    let err = DecisionJournal::open(dir.path(), small_config()).expect_err("refused");
    assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");
}

#[test]
fn compaction_replaces_history_with_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _, _) = DecisionJournal::open(dir.path(), small_config()).unwrap();
    for i in 1..=30 {
        j.append_durable(&transition(i)).unwrap();
    }
    let snapshot = JournalRecord::Snapshot {
        seeds: Vec::new(),
        nonces: Vec::new(),
        progress: Default::default(),
        recorded_at_ms: 7,
    };
    assert_eq!(j.compact(&snapshot).unwrap().0, 31);
    assert_eq!(j.segment_count(), 1);
    assert!(!j.needs_compaction());
    j.append_durable(&transition(32)).unwrap();
    drop(j);
    let (j, entries, _) = DecisionJournal::open(dir.path(), small_config()).unwrap();
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq.0).collect();
    assert_eq!(seqs, vec![31, 32]);
    assert_eq!(entries[0].record, snapshot);
    assert_eq!(leyline::journal::replay_start(entries.iter().map(|e| &e.record)), 0);
    assert_eq!(j.next_seq().0, 33);
}

#[test]
fn an_oversized_record_is_refused_and_the_journal_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig { max_record_bytes: 64, ..decision_journal_config() };
    let (mut j, _, _) = DecisionJournal::open(dir.path(), config.clone()).unwrap();
    let big = JournalRecord::Transition {
        seed_id: "s".repeat(200),
        from: SeedStage::Dormant,
        to: SeedStage::Germinated,
        step: 0,
        reason: String::new(),
        recorded_at_ms: 0,
    };
    assert!(matches!(j.append(&big), Err(JournalError::RecordTooLarge { max: 64, .. })));
    assert_eq!(j.append_durable(&transition(1)).unwrap().0, 1);
    drop(j);
    assert_eq!(DecisionJournal::open(dir.path(), config).unwrap().1.len(), 1);
}

#[test]
fn another_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 1);
    let config = JournalConfig { schema_version: 999, ..decision_journal_config() };
    let err = DecisionJournal::open(dir.path(), config).expect_err("refused");
    let written = leyline::journal::JOURNAL_RECORD_VERSION;
    assert!(matches!(err, JournalError::SchemaMismatch { found, expected: 999, .. } if found == written), "{err}");
}

#[test]
fn a_torn_newest_segment_header_is_removed_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 2);
    let torn = dir.path().join(format!("{:020}.kjl", 3));
    fs::write(&torn, b"KSJRNL").unwrap();
    let (mut j, recs, report) = reopen(dir.path()).unwrap();
    assert_eq!(recs.len(), 2);
    let tail = report.torn_tail.expect("reported");
    assert_eq!((tail.defect, tail.bytes_cut), (TailDefect::SegmentHeader, 6));
    assert!(!torn.exists());
    assert_eq!(j.append_durable(&transition(3)).unwrap().0, 3);
}
