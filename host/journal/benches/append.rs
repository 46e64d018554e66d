//! Cost of journaling one acknowledged command: append + fsync of a
//! realistic `CommandAccepted` record, and append alone for comparison.
//!
//! Run: `cargo bench -p kasmina-journal --bench append`
//! (the fsync number depends entirely on the file system under the temp dir).

#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kasmina_journal::{DecisionJournal, decision_journal_config};
use leyline::journal::JournalRecord;
use leyline::{AdaptationCommand, CommandPayload, Outcome, SeedCommand, SeedOperation};

fn record() -> JournalRecord {
    let mut parameters = BTreeMap::new();
    parameters.insert("rank".to_owned(), 8.0);
    let mut annotations = BTreeMap::new();
    annotations.insert("blend_mode".to_owned(), "CONVEX".to_owned());
    annotations.insert("mesh_layers".to_owned(), "hidden".to_owned());
    JournalRecord::CommandAccepted {
        command: AdaptationCommand {
            version: 1,
            command_id: "cmd-0000000000000001".to_owned(),
            target_seed_id: "seed-hidden-0".to_owned(),
            execution_deadline_ms: Some(1_700_000_060_000),
            issued_at_ms: Some(1_700_000_000_000),
            issued_by: "tamiyo".to_owned(),
            payload: CommandPayload::Seed(SeedCommand {
                operation: SeedOperation::Germinate,
                blueprint_id: "bp-lora-8".to_owned(),
                parameters,
            }),
            annotations,
            signature: Some(vec![0xAB; 32]),
        },
        outcome: Outcome::accepted(),
        recorded_at_ms: 1_700_000_000_001,
    }
}

fn bench_append(c: &mut Criterion) {
    let Ok(dir) = tempfile::tempdir() else { return };
    let Ok((mut journal, _, _)) = DecisionJournal::open(dir.path(), decision_journal_config()) else { return };
    let rec = record();
    c.bench_function("journal_append_fsync_command", |b| {
        b.iter(|| black_box(journal.append_durable(black_box(&rec)).map(|s| s.0).unwrap_or(0)))
    });
    c.bench_function("journal_append_buffered_command", |b| {
        b.iter(|| black_box(journal.append(black_box(&rec)).map(|s| s.0).unwrap_or(0)))
    });
}

criterion_group!(benches, bench_append);
criterion_main!(benches);
