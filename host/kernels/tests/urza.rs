//! Urza on disk: publish, list, show, atomic catalog (a real publisher
//! killed mid-write), verify + quarantine, and the caps on what it reads.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use kasmina_core::ManualClock;
use kasmina_kernels::fixtures::{self, MLP_ADAPTER, RESIDUAL_CONV};
use kasmina_kernels::urza::catalog::{MAX_CATALOG_BYTES, is_sha256_hex};
use kasmina_kernels::{FetchError, UrzaError, UrzaLibrary, VerifyOutcome};
use sha2::{Digest, Sha256};

#[test]
fn publish_copies_hashes_and_records_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let urza = UrzaLibrary::open_with_clock(dir.path(), Arc::new(ManualClock::new(42))).unwrap();
    let fx = fixtures::get(MLP_ADAPTER).unwrap();
    let entry = urza.publish(fx.descriptor.clone(), &fx.path).unwrap();

    let bytes = std::fs::read(&fx.path).unwrap();
    assert_eq!(entry.artifact_sha256, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(entry.artifact_size, bytes.len() as u64);
    assert_eq!(entry.artifact_file, format!("artifacts/{}.pt", entry.artifact_sha256));
    assert_eq!(entry.published_at_ms, 42);
    assert_eq!(std::fs::read(urza.artifact_path(&entry)).unwrap(), bytes);

    // No temp files are left behind, and a fresh open reads the same catalog.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .chain(std::fs::read_dir(dir.path().join("artifacts")).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let reopened = UrzaLibrary::open(dir.path()).unwrap();
    assert_eq!(reopened.show(MLP_ADAPTER).unwrap(), entry);
    assert!(matches!(reopened.show("nope"), Err(UrzaError::UnknownBlueprint { .. })));
}

#[test]
fn list_show_and_display_cover_every_fixture() {
    let env = common::Env::new(100);
    let listed = env.urza.list();
    let ids: Vec<_> = listed.iter().map(|e| e.id().to_owned()).collect();
    assert_eq!(ids, ["bottleneck", "mlp_adapter", "mlp_adapter_64", "residual_conv", "wrong_iface", "wrong_iface_64"]);
    assert!(listed.iter().all(|e| is_sha256_hex(&e.artifact_sha256) && e.artifact_size < 64 * 1024));
    let shown = env.urza.show(RESIDUAL_CONV).unwrap().to_string();
    assert!(shown.contains("input 0:          [B, 8, 8, 8] F32"), "{shown}");
    assert!(listed[0].summary_line().starts_with("bottleneck"));
}

#[test]
fn republishing_is_idempotent_but_a_changed_blueprint_is_refused() {
    let env = common::Env::new(100);
    let fx = fixtures::get(MLP_ADAPTER).unwrap();
    let before = env.urza.show(MLP_ADAPTER).unwrap();
    assert_eq!(env.urza.publish(fx.descriptor.clone(), &fx.path).unwrap(), before);

    let other = fixtures::get(RESIDUAL_CONV).unwrap();
    match env.urza.publish(fx.descriptor.clone(), &other.path) {
        Err(UrzaError::BlueprintExists { blueprint_id, existing_sha256 }) => {
            assert_eq!(blueprint_id, MLP_ADAPTER);
            assert_eq!(existing_sha256, before.artifact_sha256);
        }
        other => panic!("expected BlueprintExists, got {other:?}"),
    }
    let mut changed = fx.descriptor.clone();
    changed.risk = 0.9;
    assert!(matches!(env.urza.publish(changed, &fx.path), Err(UrzaError::BlueprintExists { .. })));
    assert_eq!(env.urza.show(MLP_ADAPTER).unwrap(), before, "catalog unchanged after refusals");
}

#[test]
fn invalid_descriptors_and_empty_artifacts_are_refused() {
    let env = common::Env::new(100);
    let fx = fixtures::get(MLP_ADAPTER).unwrap();
    type Mutation = Box<dyn Fn(&mut leyline::BlueprintDescriptor)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("empty id", Box::new(|d| d.blueprint_id.clear())),
        ("path id", Box::new(|d| d.blueprint_id = "../evil".into())),
        ("risk", Box::new(|d| d.risk = f64::NAN)),
        (
            "bounds",
            Box::new(|d| {
                d.parameter_bounds.insert("lr".into(), leyline::ParameterBounds { min: 1.0, max: 0.0 });
            }),
        ),
        ("no outputs", Box::new(|d| d.interface.outputs.clear())),
        (
            "huge probe",
            Box::new(|d| d.interface.inputs[0].shape = vec![leyline::Dim::Batch, leyline::Dim::Fixed(1 << 40)]),
        ),
    ];
    for (what, mutate) in cases {
        let mut d = fx.descriptor.clone();
        d.blueprint_id = "fresh_id".into();
        mutate(&mut d);
        assert!(matches!(env.urza.publish(d, &fx.path), Err(UrzaError::InvalidDescriptor { .. })), "{what}");
    }
    let empty = env.dir.path().join("empty.pt");
    std::fs::write(&empty, b"").unwrap();
    let mut d = fx.descriptor.clone();
    d.blueprint_id = "empty_one".into();
    assert!(matches!(env.urza.publish(d, &empty), Err(UrzaError::ArtifactEmpty { .. })));
    assert!(env.urza.entry("empty_one").is_none());
}

#[test]
fn corrupt_or_oversized_catalogs_are_refused_not_guessed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("catalog.json"), b"{ not json").unwrap();
    assert!(matches!(UrzaLibrary::open(dir.path()), Err(UrzaError::CatalogCorrupt { .. })));

    let big = vec![b' '; usize::try_from(MAX_CATALOG_BYTES).unwrap() + 1];
    std::fs::write(dir.path().join("catalog.json"), big).unwrap();
    assert!(matches!(UrzaLibrary::open(dir.path()), Err(UrzaError::CatalogTooLarge { .. })));

    // An entry pointing outside artifacts/ is corrupt, even if it parses.
    let env = common::Env::new(100);
    let path = env.urza.catalog_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let entry = env.urza.show(MLP_ADAPTER).unwrap();
    let evil = text.replace(&entry.artifact_file, "../../etc/passwd");
    std::fs::write(&path, evil).unwrap();
    match env.urza.reload() {
        Err(UrzaError::CatalogCorrupt { detail }) => assert!(detail.contains("artifact_file"), "{detail}"),
        other => panic!("expected CatalogCorrupt, got {other:?}"),
    }
}

#[test]
fn verify_all_reports_and_quarantines_only_the_corrupt() {
    let env = common::Env::new(100);
    let report = env.urza.verify_all();
    assert!(report.all_ok(), "{report}");
    assert_eq!(report.ok_count(), 6);

    let victim = env.artifact_path(RESIDUAL_CONV);
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    std::fs::remove_file(env.artifact_path(MLP_ADAPTER)).unwrap();

    let report = env.urza.verify_all();
    assert!(!report.all_ok());
    assert_eq!(report.ok_count(), 4);
    let outcome = |id: &str| report.results.iter().find(|(i, _)| i == id).map(|(_, o)| o.clone()).unwrap();
    assert_eq!(outcome(MLP_ADAPTER), VerifyOutcome::Missing);
    let VerifyOutcome::Quarantined { path, reason } = outcome(RESIDUAL_CONV) else { panic!("{report}") };
    assert!(reason.contains("does not match"), "{reason}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "quarantine keeps the corrupt bytes for forensics");
    assert!(!victim.exists());
    assert!(report.to_string().contains("4 of 6 artifacts verified"));

    // Fetch now names the quarantine; a second verify reports it as such.
    assert!(matches!(env.urza.fetch(RESIDUAL_CONV), Err(FetchError::ArtifactQuarantined { .. })));
    assert_eq!(
        env.urza.verify_all().results.iter().filter(|(_, o)| *o == VerifyOutcome::AlreadyQuarantined).count(),
        1
    );

    // Republishing the good file restores it.
    let fx = fixtures::get(RESIDUAL_CONV).unwrap();
    env.urza.publish(fx.descriptor, &fx.path).unwrap();
    assert!(env.urza.fetch(RESIDUAL_CONV).is_ok());
}

#[test]
fn strict_fetch_detects_truncation_extension_and_bit_flips() {
    let env = common::Env::new(100);
    let path = env.artifact_path(MLP_ADAPTER);
    let good = std::fs::read(&path).unwrap();
    let fetched = env.urza.fetch(MLP_ADAPTER).unwrap();
    assert_eq!(fetched.bytes, good);

    std::fs::write(&path, &good[..good.len() - 1]).unwrap();
    match env.urza.fetch(MLP_ADAPTER) {
        Err(e @ FetchError::SizeMismatch { expected, actual, .. }) => {
            assert_eq!((expected, actual), (good.len() as u64, good.len() as u64 - 1));
            assert!(e.to_string().contains("truncated"));
        }
        other => panic!("{other:?}"),
    }
    let mut longer = good.clone();
    longer.extend_from_slice(b"trailing");
    std::fs::write(&path, &longer).unwrap();
    assert!(
        matches!(env.urza.fetch(MLP_ADAPTER), Err(FetchError::SizeMismatch { actual, .. }) if actual == good.len() as u64 + 8)
    );
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 1;
    std::fs::write(&path, &flipped).unwrap();
    assert!(matches!(env.urza.fetch(MLP_ADAPTER), Err(FetchError::DigestMismatch { .. })));
    assert!(matches!(env.urza.fetch("ghost"), Err(FetchError::UnknownBlueprint { .. })));
}

/// Child side of the kill test: runs only when re-invoked by it, with
/// `KASMINA_URZA_CRASH_DIR` set. Publishes blueprints `crash_<n>` from
/// `KASMINA_URZA_CRASH_FROM` on, printing `PUBLISHED <n>` after each.
#[test]
fn crash_child_publisher() {
    use std::io::Write;
    let Ok(root) = std::env::var("KASMINA_URZA_CRASH_DIR") else { return };
    let from: u64 = std::env::var("KASMINA_URZA_CRASH_FROM").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let urza = UrzaLibrary::open(&root).expect("child opens the library");
    let fixtures = [fixtures::get(MLP_ADAPTER).unwrap(), fixtures::get(RESIDUAL_CONV).unwrap()];
    let mut out = std::io::stdout().lock();
    for n in from.. {
        let fx = &fixtures[(n % 2) as usize];
        let mut descriptor = fx.descriptor.clone();
        descriptor.blueprint_id = format!("crash_{n}");
        urza.publish(descriptor, &fx.path).expect("publish");
        writeln!(out, "PUBLISHED {n}").expect("stdout");
        out.flush().expect("stdout");
    }
}

/// kill -9 of a real publisher (this test binary, re-invoked) at random
/// points of its publish loop, 30 times: after each kill the library opens,
/// every acknowledged blueprint is listed and verifies, nothing else but the
/// one in flight is listed, and leftover temp files are ignored. Kills that
/// left a temp file behind landed mid-write; the test requires some (a
/// sixth of 30), killing up to 120 times to get them on a loaded machine,
/// where the same random delays land mid-write less often.
#[test]
fn kill_9_mid_publish_leaves_a_readable_catalog_with_every_acknowledged_entry() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    const KILLS: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("urza");
    UrzaLibrary::open(&root).unwrap();
    let exe = std::env::current_exe().unwrap();
    // A small deterministic generator (no RNG crate in this crate's tests).
    let mut state: u64 = 0x7572_7a61;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut acked: u64 = 0;
    let mut mid_write = 0;
    let mut seen_temps = std::collections::BTreeSet::new();
    let mut kill = 0;
    while kill < KILLS || (mid_write < KILLS / 6 && kill < 4 * KILLS) {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child_publisher", "--nocapture", "--test-threads=1"])
            .env("KASMINA_URZA_CRASH_DIR", &root)
            .env("KASMINA_URZA_CRASH_FROM", acked.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Mostly after a few publishes; sometimes during start-up.
        let wait_for = if kill % 5 == 0 { 0 } else { 1 + next(3) };
        let mut seen = 0;
        while seen < wait_for {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(n) = line.strip_prefix("PUBLISHED ") {
                acked = acked.max(n.parse::<u64>().unwrap() + 1);
                seen += 1;
            }
        }
        // Inside the next publish: copy, fsyncs, renames take a few ms.
        std::thread::sleep(std::time::Duration::from_micros(next(2_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("PUBLISHED ") {
                acked = acked.max(n.parse::<u64>().unwrap() + 1);
            }
        }
        // Temp files are never cleaned up by later publishers: count new ones.
        let temps: std::collections::BTreeSet<String> = std::fs::read_dir(&root)
            .unwrap()
            .chain(std::fs::read_dir(root.join("artifacts")).unwrap())
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("tmp"))
            .collect();
        mid_write += usize::from(temps.difference(&seen_temps).next().is_some());
        seen_temps = temps;
        let reopened =
            UrzaLibrary::open(&root).unwrap_or_else(|e| panic!("kill {kill}: the catalog does not open: {e}"));
        let ids: Vec<String> = reopened.list().iter().map(|e| e.id().to_owned()).collect();
        for n in 0..acked {
            assert!(ids.contains(&format!("crash_{n}")), "kill {kill}: acknowledged crash_{n} is missing");
        }
        assert!(ids.len() as u64 <= acked + 1, "kill {kill}: {} entries for {acked} acknowledged", ids.len());
        let report = reopened.verify_all();
        assert!(report.all_ok(), "kill {kill}: {report:?}");
        // The in-flight one, if it made it, counts as published from now on.
        acked = ids.len() as u64;
        kill += 1;
    }
    println!("{kill} publishers killed, {mid_write} with a temp file left (mid-write), {acked} blueprints published");
    assert!(acked >= KILLS as u64, "publishers made progress: {acked}");
    assert!(mid_write >= KILLS / 6, "kills landed mid-write: {mid_write} of {kill}");
}
