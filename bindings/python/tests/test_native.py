"""The native module: typed contract objects, errors with reason codes,
command signing with Rust's canonical bytes (accepted by the real daemon,
refused when a byte is flipped), and a client that releases the GIL."""

import socket
import threading
import time

import pytest

import kasmina
from conftest import germinate


def test_contract_objects_are_typed_not_dicts():
    report = kasmina.StepReport(
        step=3,
        training_run_id="run",
        task_loss=0.25,
        seeds=[
            kasmina.SeedStepReport(
                "s", kasmina.SeedStage.BLENDING, True, blend=kasmina.BlendReport(kasmina.BlendMode.CONVEX, 0.5, 0.5)
            )
        ],
    )
    assert isinstance(report.seeds[0], kasmina.SeedStepReport)
    assert report.seeds[0].stage is kasmina.SeedStage.BLENDING or report.seeds[0].stage == kasmina.SeedStage.BLENDING
    assert report.seeds[0].blend.mode == kasmina.BlendMode.CONVEX
    assert report == kasmina.StepReport(3, "run", 0.25, None, list(report.seeds))
    assert report != kasmina.StepReport(4, "run", 0.25, None, list(report.seeds))
    d = kasmina.GraftDirective.Stage(seed_id="s", stage=kasmina.SeedStage.TRAINING, alpha=0.0)
    assert isinstance(d, kasmina.GraftDirective) and isinstance(d, kasmina.GraftDirective.Stage)
    assert (d.seed_id, d.stage, d.alpha, d.target) == ("s", kasmina.SeedStage.TRAINING, 0.0, "s")
    with pytest.raises(AttributeError):
        d.alpha = 1.0  # frozen


def test_enum_wire_names_and_strict_parsing():
    assert kasmina.SeedStage.BLENDING.name == "BLENDING" and str(kasmina.SeedStage.BLENDING) == "BLENDING"
    assert kasmina.ReasonCode.INVALID_SIGNATURE.name == "invalid_signature"
    assert kasmina.ReasonCode.parse("invalid_signature") == kasmina.ReasonCode.parse("INVALID_SIGNATURE")
    assert kasmina.Role.parse("trainer") == kasmina.Role.TRAINER
    assert len(kasmina.SeedStage.values()) == 12
    with pytest.raises(ValueError, match="unknown BlendMode"):
        kasmina.BlendMode.parse("convex")  # exact names only: no fallback
    assert kasmina.can_transition(kasmina.SeedStage.BLENDING, kasmina.SeedStage.SHADOWING)
    assert not kasmina.can_transition(kasmina.SeedStage.DORMANT, kasmina.SeedStage.FOSSILIZED)


def test_blend_spec_validation_is_the_contracts_and_names_the_key():
    kasmina.BlendSpec.channel([0.0, 1.0]).validate()
    for spec, key in (
        (kasmina.BlendSpec.confidence(0.0, 0.1, 0.0, 1.0), "gate_k"),
        (kasmina.BlendSpec.confidence(4.0, 0.1, 0.8, 0.2), "alpha_hi"),
        (kasmina.BlendSpec.channel([]), "alpha_vec"),
        (kasmina.BlendSpec.channel([0.5, 1.5]), "alpha_vec"),
        (kasmina.BlendSpec(kasmina.BlendMode.CONVEX, [0.5]), "alpha_vec"),
    ):
        with pytest.raises(kasmina.BlendSpecError) as err:
            spec.validate()
        assert (err.value.code, err.value.key) == ("invalid_blend", key)
        assert isinstance(err.value, kasmina.KasminaError)


def test_canonical_bytes_match_the_rust_golden_vector():
    """The same command as leyline's `canonical_bytes_match_golden_vector` test."""
    cmd = (
        kasmina.Command.seed("seed-a", "GERMINATE", "mlp-adapter")
        .version(1)
        .command_id("cmd-0001")
        .deadline_ms(1_700_000_060_000)
        .issued_at_ms(1_700_000_000_000)
        .issued_by("tamiyo")
        .parameter("width", 64.0)
        .parameter("dropout", 0.125)
        .annotation("mesh_layers", "block1,block2")
        .annotation("training_run_id", "run-7")
        .build()
    )
    golden = (
        "65737065722e6b61736d696e612e636f6d6d616e642e7631000108636d642d3030303106736565642d6101e0a499ffbc"
        "310180d095ffbc310674616d69796f00000b6d6c702d61646170746572020764726f706f7574000000000000c03f0577"
        "696474680000000000005040020b6d6573685f6c61796572730d626c6f636b312c626c6f636b320f747261696e696e67"
        "5f72756e5f69640572756e2d37"
    )
    assert cmd.canonical_bytes().hex() == golden
    key = kasmina.HmacKey.from_bytes(bytes(range(32)))
    signed = kasmina.Command.seed("seed-a", "GERMINATE", "mlp-adapter").command_id("cmd-0001").sign(key)
    assert signed.verify(key)
    assert signed.signature == key.tag(signed.canonical_bytes())
    assert repr(key) == "HmacKey(<redacted>)"


def test_key_errors_never_show_key_material(tmp_path):
    with pytest.raises(kasmina.HmacKeyError) as err:
        kasmina.HmacKey.from_hex("ab" * 31 + "zz")
    assert err.value.code == "key" and "zz" not in str(err.value)
    with pytest.raises(kasmina.HmacKeyError, match="bytes"):
        kasmina.HmacKey.from_bytes(b"short")
    with pytest.raises(ValueError, match="take no parameters"):
        kasmina.Command.pause("s").parameter("lr", 0.1)


def test_python_signed_command_is_accepted_and_a_flipped_byte_refused(daemon, hmac_key):
    trainer = daemon.client("trainer")
    trainer.register_host(
        kasmina.HostRegistration(
            "run-sign", [kasmina.SiteSpec("hidden", [None, 64])], [kasmina.SlotSpec("hidden-0", "hidden")]
        )
    )
    controller = daemon.client("controller")
    outcome = germinate(controller, hmac_key, "run-sign", "hidden-0", "mlp_adapter_64", "hidden")
    assert outcome.accepted, outcome
    assert outcome.reason is None
    states = {s.seed_id: s for s in controller.seed_states()}
    assert states["hidden-0"].stage == kasmina.SeedStage.GERMINATED
    assert states["hidden-0"].blueprint_id == "mlp_adapter_64"

    signed = (
        kasmina.Command.seed("hidden-0", "CULL", "mlp_adapter_64")
        .annotation("training_run_id", "run-sign")
        .sign(hmac_key)
    )
    flipped = bytearray(signed.signature)
    flipped[7] ^= 0x01
    outcome = controller.submit_command(signed.with_signature(bytes(flipped)))
    assert not outcome.accepted
    assert outcome.reason == kasmina.ReasonCode.INVALID_SIGNATURE
    with pytest.raises(kasmina.CommandRejected) as err:
        controller.submit_command(signed.with_signature(bytes(flipped)), check=True)
    assert err.value.code == "invalid_signature" and err.value.outcome.reason == kasmina.ReasonCode.INVALID_SIGNATURE
    # A byte flipped in the signed fields instead of the signature: refused too.
    retargeted = (
        kasmina.Command.seed("hidden-0", "CULL", "mlp_adapter_64x")
        .command_id(signed.command_id)
        .issued_at_ms(signed.issued_at_ms)
        .annotation("training_run_id", "run-sign")
        .build()
        .with_signature(signed.signature)
    )
    assert controller.submit_command(retargeted).reason == kasmina.ReasonCode.INVALID_SIGNATURE
    # Nothing changed; the genuine command is accepted, and its replay refused.
    assert {s.seed_id: s.stage for s in controller.seed_states()}["hidden-0"] == kasmina.SeedStage.GERMINATED
    assert controller.submit_command(signed).accepted
    assert controller.submit_command(signed).reason == kasmina.ReasonCode.NONCE_REPLAYED
    status = controller.status()
    assert status.commands_rejected >= 4 and status.training_run_id == "run-sign"


def test_api_errors_raise_kasmina_errors_with_codes(daemon):
    trainer = daemon.client("trainer")
    with pytest.raises(kasmina.KasminaError) as err:
        trainer.fetch_kernel("no-such-blueprint")
    assert isinstance(err.value, kasmina.ApiError)
    assert err.value.code in ("kernel_unavailable", "not_found")
    with pytest.raises(kasmina.BadRequestError) as err:
        trainer.step_report(kasmina.StepReport(1, "unregistered-run", 0.1))
    assert err.value.code == "bad_request"
    trainer.close()
    assert trainer.closed
    with pytest.raises(kasmina.TransportError) as err:
        trainer.status()
    assert err.value.code == "transport" and "closed" in err.value.message
    with pytest.raises(kasmina.TransportError):
        kasmina.Client.connect(str(daemon.dir / "absent.sock"), "trainer")


def test_fetched_kernel_is_the_verified_artifact(daemon):
    import hashlib

    art = daemon.client("trainer").fetch_kernel("mlp_adapter_64")
    assert hashlib.sha256(art.bytes).hexdigest() == art.sha256
    assert art.descriptor.blueprint_id == "mlp_adapter_64"
    assert art.descriptor.tier == kasmina.BlueprintTier.SAFE
    assert art.descriptor.inputs[0].shape == [None, 64] and art.descriptor.inputs[0].dtype == kasmina.DType.F32
    assert len(art) == len(art.bytes) > 0


def test_the_gil_is_released_while_a_request_waits(tmp_path):
    """A peer that accepts but never answers: the connect blocks in Rust for
    its whole timeout, and a Python thread keeps running meanwhile."""
    path = str(tmp_path / "silent.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    counted = [0]
    stop = threading.Event()

    def count():
        while not stop.is_set():
            counted[0] += 1

    worker = threading.Thread(target=count)
    worker.start()
    started = time.monotonic()
    try:
        with pytest.raises(kasmina.TransportError):
            kasmina.Client.connect(path, "trainer", timeout=0.5)
        waited = time.monotonic() - started
    finally:
        stop.set()
        worker.join()
        server.close()
    assert waited >= 0.45, waited
    # With the GIL held for 0.5 s the counter could not move at all.
    assert counted[0] > 10_000, counted[0]
