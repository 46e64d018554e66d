//! Writes the seed corpora under `fuzz/corpus/<target>/` from the real
//! encoders and writers (frames from leyline's types, journal segments from
//! the real journal). Run after a format change, then commit the files:
//!
//! ```sh
//! scripts/fuzz.sh gen-corpus
//! ```
//! Seeds of the host targets (settings, Urza catalog, TorchScript) are copied
//! from the repository's own fixtures by scripts/fuzz.sh.

use std::fs;
use std::path::{Path, PathBuf};

use kasmina_client::codec::encode_frame;
use kasmina_client::command::CommandBuilder;
use kasmina_client::key::HmacKey;
use kasmina_fuzz_checks::{journal_config, piece};
use kasmina_journal::DecisionJournal;
use kasmina_journal::recovery::segment_name;
use leyline::api::{ApiError, ApiErrorCode, HostRegistration, SeedStepReport, SiteSpec, SlotSpec, StepReport};
use leyline::journal::JournalRecord;
use leyline::protocol::{ClientFrame, PROTOCOL_VERSION, RequestBody, Role, ServerFrame};
use leyline::{Dim, SeedOperation, SeedStage, TelemetryLevel};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("corpus dir");
    fs::write(dir.join(name), bytes).expect("seed written");
}

fn requests() -> Vec<(&'static str, RequestBody)> {
    let key = HmacKey::from_bytes(&[7u8; 32]).expect("a 32-byte key");
    let germinate = CommandBuilder::seed("seed-a", SeedOperation::Germinate, "mlp_adapter_64")
        .command_id("cmd-1")
        .issued_at_ms(Some(1_700_000_000_000))
        .annotation("blend_mode", "CHANNEL")
        .annotation("alpha_vec", "[0.5, 0.25]")
        .sign(&key);
    let registration = HostRegistration::new(
        "run-1",
        vec![SiteSpec { name: "hidden".into(), feature_shape: vec![Dim::Batch, Dim::Fixed(64)] }],
        vec![SlotSpec { seed_id: "seed-a".into(), site: "hidden".into() }],
    );
    let step = StepReport {
        step: 3,
        training_run_id: "run-1".into(),
        task_loss: 0.5,
        global_metric: Some(0.9),
        seeds: vec![SeedStepReport {
            seed_id: "seed-a".into(),
            stage: SeedStage::Training,
            kernel_attached: true,
            kernel_sha256: Some("ab".repeat(32)),
            loss: Some(0.1),
            outputs_finite: true,
            output_shape_ok: true,
            kernel_latency_us: 12,
            isolation_violations: 0,
            max_gradient_cosine: 0.0,
            fallback_used: false,
            alpha: 0.25,
            blend: None,
        }],
        distillation: None,
        checkpoints: Vec::new(),
        ranks: None,
    };
    vec![
        ("submit", RequestBody::SubmitCommand(germinate)),
        ("register", RequestBody::RegisterHost(registration)),
        ("fetch", RequestBody::FetchKernel { blueprint_id: "mlp_adapter_64".into() }),
        ("step", RequestBody::StepReport(step)),
        ("seeds", RequestBody::SeedStates),
        ("status", RequestBody::Status),
        ("subscribe", RequestBody::SubscribeTelemetry { min_level: TelemetryLevel::Warning }),
        ("drain", RequestBody::DrainTelemetry),
    ]
}

fn frames(root: &Path) {
    let hello = ClientFrame::Hello { protocol_version: PROTOCOL_VERSION, role: Role::Trainer, client_name: "t".into() };
    let dec = root.join("frame_decoder");
    let cf = root.join("client_frame");
    let mut all = Vec::new();
    encode_frame(&hello, 4096, &mut all).expect("hello encodes");
    write(&cf, "hello", &[&[0u8][..], &postcard::to_stdvec(&hello).expect("encodes")].concat());
    for (i, (name, body)) in requests().into_iter().enumerate() {
        let frame = ClientFrame::Request { correlation_id: i as u64 + 1, body };
        let payload = postcard::to_stdvec(&frame).expect("encodes");
        write(&cf, name, &[&[0u8][..], &payload].concat());
        let mut one = Vec::new();
        encode_frame(&hello, 4096, &mut one).expect("encodes");
        encode_frame(&frame, 4096, &mut one).expect("encodes");
        // cap 4096 (0x0FFF), chunk pattern 0x05 / 0x85 (the latter asks for what is missing)
        write(&dec, name, &[&[0x0F, 0xFF, 0x05][..], &one].concat());
        encode_frame(&frame, 4096, &mut all).expect("encodes");
    }
    write(&dec, "all", &[&[0x0F, 0xFF, 0x85][..], &all].concat());
    let server = [
        ("welcome", ServerFrame::Welcome { protocol_version: PROTOCOL_VERSION, server: "kasminad".into() }),
        ("refused", ServerFrame::Refused { reason: "too many connections".into() }),
        (
            "response_err",
            ServerFrame::Response {
                correlation_id: 9,
                body: Err(ApiError::new(ApiErrorCode::BadRequest, "role observer may not send StepReport")),
            },
        ),
        ("closing", ServerFrame::Closing(ApiError::new(ApiErrorCode::ShuttingDown, "server shutting down"))),
    ];
    for (name, frame) in server {
        write(&cf, &format!("server_{name}"), &[&[1u8][..], &postcard::to_stdvec(&frame).expect("encodes")].concat());
    }
}

fn annotations(root: &Path) {
    let dir = root.join("annotations");
    let sets: [(&str, &str); 7] = [
        ("run", "training_run_id=run-1\nmesh_layers=[\"hidden\", \"head\", \"hidden\"]"),
        ("convex", "blend_mode=CONVEX\nblend_mode_source=controller\nalpha_lo=0.1\nalpha_hi=0.9"),
        ("channel", "blend_mode=CHANNEL\nalpha_vec=[0.5, 1.5, -0.25, 0.125]\nalpha_vec_len=4"),
        ("channel_csv", "blend_mode=channel\nalpha_vec=0.5,0.25,1e-3"),
        ("confidence", "blend_mode=CONFIDENCE\ngate_k=4.0\ngate_tau=0.5\nconfidence_logits_required=true"),
        ("bad", "blend_mode=RESIDUAL\ngate_k=NaN\nalpha_vec=[1,2,\nmesh_layers=a,b,,c\nunknown=1"),
        ("mesh_csv", "mesh_layers=hidden,head,conv1,conv2"),
    ];
    for (name, text) in sets {
        write(&dir, name, &[&[0u8, 0, 0, 0, 0][..], text.as_bytes()].concat());
    }
}

fn journal(root: &Path) {
    let dir = root.join("journal");
    let scratch = std::env::temp_dir().join(format!("kasmina-gen-journal-{}", std::process::id()));
    let record = |i: u64| JournalRecord::Transition {
        seed_id: format!("seed-{i}"),
        from: SeedStage::Dormant,
        to: SeedStage::Germinated,
        step: i,
        reason: "G0 passed".into(),
        recorded_at_ms: 1_700_000_000_000 + i,
    };
    for (name, count) in [("one_record", 1u64), ("few_records", 5), ("rotated", 400)] {
        let _ = fs::remove_dir_all(&scratch);
        let (mut j, _, _) = DecisionJournal::open(&scratch, journal_config()).expect("journal opens");
        for i in 1..=count {
            j.append_durable(&record(i)).expect("append");
        }
        drop(j);
        let mut segments: Vec<PathBuf> =
            fs::read_dir(&scratch).expect("dir").filter_map(Result::ok).map(|e| e.path()).collect();
        segments.sort();
        // At most 3 segments fit the input format: keep the newest.
        let keep = &segments[segments.len().saturating_sub(3)..];
        let mut seed = vec![u8::try_from(keep.len() - 1).expect("at most 3")];
        for path in keep {
            let file = path.file_name().expect("name").to_string_lossy().into_owned();
            let first: u64 = file.split('.').next().and_then(|n| n.parse().ok()).expect("segment name");
            assert_eq!(segment_name(first), file);
            seed.push(u8::try_from(first - 1).unwrap_or(0));
            seed.extend(piece(&fs::read(path).expect("segment")));
        }
        write(&dir, name, &seed);
    }
    let _ = fs::remove_dir_all(&scratch);
}

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));
    frames(&root);
    annotations(&root);
    journal(&root);
    println!("seed corpora written under {}", root.display());
}
