#!/usr/bin/env python3
"""Checks and the Markdown summary for scripts/gpu-check.sh (standard library only).

    gpu-check-report.py bench WORK MIN_RATIO       # exit 1 if a blend is under MIN_RATIO x copy_
    gpu-check-report.py demo WORK MAX_POINTS       # exit 1 if gate decisions differ or accuracy moved
    gpu-check-report.py render WORK OUT.md         # the summary, from whatever WORK holds so far

WORK is the script's work folder. Files read there (each optional):
  env.tsv          key<TAB>value lines (machine, versions, mode)
  steps.tsv        name<TAB>status<TAB>seconds<TAB>bound<TAB>command<TAB>note
  tests.log        output of the tensor plane's CUDA test binary
  bandwidth.jsonl  output of the blend_bandwidth example (one JSON object per line)
  peak_gbps        the device's peak memory bandwidth, GB/s (empty if unknown)
  demo-ref.json    the digits demo's JSON summary on the CPU (the reference)
  demo-dev.json    the same demo on the device under test
  python.log       output of the Python grafter's tests
"""
import json
import os
import re
import sys

BLENDS = ("convex", "residual", "channel", "confidence")


def read(work, name):
    try:
        with open(os.path.join(work, name), encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def tsv(work, name):
    text = read(work, name) or ""
    return [line.split("\t") for line in text.splitlines() if line.strip()]


def bench_rows(work):
    """(device line, op rows) of bandwidth.jsonl, or (None, [])."""
    device, ops = None, []
    for line in (read(work, "bandwidth.jsonl") or "").splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        obj = json.loads(line)
        if obj.get("kind") == "device":
            device = obj
        elif obj.get("kind") == "op":
            ops.append(obj)
    return device, ops


def peak(work):
    text = (read(work, "peak_gbps") or "").strip()
    try:
        return float(text) if text else None
    except ValueError:
        return None


def bench_verdict(work, min_ratio):
    _, ops = bench_rows(work)
    by = {o["op"]: o for o in ops}
    if "copy_" not in by or any(b not in by for b in BLENDS):
        return False, "bandwidth output incomplete: expected copy_ and " + ", ".join(BLENDS)
    copy = by["copy_"]["gbps"]
    low = [f"{b} {by[b]['gbps'] / copy:.2f}x" for b in BLENDS if by[b]["gbps"] < min_ratio * copy]
    worst = min(by[b]["gbps"] / copy for b in BLENDS)
    if low:
        return False, f"under {min_ratio}x copy_: " + ", ".join(low)
    return True, f"every blend >= {min_ratio}x copy_ (worst {worst:.2f}x)"


def demo_load(work, name):
    text = read(work, name)
    return json.loads(text) if text else None


def gate_decisions(summary):
    return [
        (e["step"], e["seed_id"], e["what"], e["passed"])
        for e in summary["outcome"]["timeline"]
        if e["kind"] == "gate"
    ]


def final_states(summary):
    return [(s["seed_id"], s["stage"]) for s in summary["outcome"].get("seeds", [])]


def demo_verdict(work, max_points):
    ref, dev = demo_load(work, "demo-ref.json"), demo_load(work, "demo-dev.json")
    if ref is None or dev is None:
        return False, "a demo summary is missing"
    problems = []
    g_ref, g_dev = gate_decisions(ref), gate_decisions(dev)
    if [g[1:] for g in g_ref] != [g[1:] for g in g_dev]:
        problems.append("gate decisions differ")
    elif g_ref != g_dev:
        problems.append("same gate decisions at different steps")
    if final_states(ref) != final_states(dev):
        problems.append("final seed stages differ")
    for run in ("baseline", "seeded"):
        delta = 100 * abs(dev["outcome"][run]["test_accuracy"] - ref["outcome"][run]["test_accuracy"])
        if delta > max_points:
            problems.append(f"{run} test accuracy moved {delta:.2f} points (> {max_points})")
    if problems:
        return False, "; ".join(problems)
    return True, f"same {len(g_ref)} gate decisions and final stages; accuracy within {max_points} points"


def test_counts(log):
    m = re.search(r"test result: (\w+)\. (\d+) passed; (\d+) failed", log or "")
    return (m.group(1), int(m.group(2)), int(m.group(3))) if m else None


def md_escape(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(work, out):
    env = dict((row[0], row[1] if len(row) > 1 else "") for row in tsv(work, "env.tsv"))
    steps = tsv(work, "steps.tsv")
    dry = env.get("mode") == "dry-run"
    lines = []
    title = "GPU check (CPU dry run: flow test, no GPU figures)" if dry else "GPU check"
    lines += [f"# {title}", ""]
    failed = [s[0] for s in steps if len(s) > 1 and s[1] in ("FAIL", "TIMEOUT")]
    verdict = "FAIL: " + ", ".join(failed) if failed else ("PASS" if steps else "no steps ran")
    lines += [f"Verdict: **{verdict}**", ""]
    if dry:
        lines += [
            "Every figure below comes from CPU stand-ins (`--dry-run`): the same binaries and steps "
            "with `--device cpu` / `KASMINA_TEST_DEVICE=cpu`. They test the script, not the GPU; "
            "the bandwidth gate is reported but not applied.",
            "",
        ]
    lines += ["## Environment", "", "| | |", "|---|---|"]
    lines += [f"| {md_escape(k)} | {md_escape(v)} |" for k, v in env.items()]
    lines += ["", "## Steps", "", "| step | status | seconds | bound (s) | note |", "|---|---|---:|---:|---|"]
    for s in steps:
        s = s + [""] * (6 - len(s))
        lines.append(f"| {s[0]} | {s[1]} | {s[2]} | {s[3]} | {md_escape(s[5])} |")
    lines += ["", "Commands, in order:", "", "```sh"]
    lines += [s[4] for s in steps if len(s) > 4 and s[4]]
    lines += ["```", ""]

    log = read(work, "tests.log")
    if log is not None:
        lines += ["## Tensor plane tests (`--features cuda-tests`)", ""]
        counts = test_counts(log)
        if counts:
            lines += [f"Result: {counts[0]}, {counts[1]} passed, {counts[2]} failed.", ""]
        for m in re.finditer(r"^test (\S+) \.\.\. (\S+)", log, re.M):
            lines.append(f"- `{m.group(1)}`: {m.group(2)}")
        lines.append("")

    device, ops = bench_rows(work)
    if ops:
        pk = peak(work)
        lines += ["## Blend bandwidth vs `copy_`", ""]
        if device:
            lines += [
                f"Device {device['device']}, {device['elements']} f32 elements (shape {device['shape']}), "
                f"median of {device['rounds']} rounds of {device['iters']} calls; bytes counted: "
                "2 reads + 1 write per blend, 1 read + 1 write per `copy_`.",
                "",
            ]
        peak_txt = f"{pk:.0f} GB/s" if pk else "unknown"
        lines += [f"Device peak memory bandwidth: {peak_txt}.", ""]
        lines += ["| op | µs/call | GB/s | × copy_ | % of peak |", "|---|---:|---:|---:|---:|"]
        for o in ops:
            pct = f"{100 * o['gbps'] / pk:.0f}%" if pk else "n/a"
            lines.append(f"| {o['op']} | {o['median_s'] * 1e6:.1f} | {o['gbps']:.1f} | {o['vs_copy']:.2f} | {pct} |")
        ok, why = bench_verdict(work, float(env.get("bandwidth_gate", "0.8")))
        applied = "not applied (CPU stand-in)" if dry else ("PASS" if ok else "FAIL")
        lines += ["", f"Gate (every blend >= {env.get('bandwidth_gate', '0.8')}x copy_): {applied}: {why}.", ""]

    ref, dev = demo_load(work, "demo-ref.json"), demo_load(work, "demo-dev.json")
    if ref or dev:
        lines += ["## Digits demo: CPU reference vs device", ""]
        label = "CPU stand-in" if dry else env.get("device_under_test", "device")
        lines += [f"| | CPU (reference) | {label} |", "|---|---:|---:|"]
        for run in ("baseline", "seeded"):
            for key, fmt in (("test_accuracy", "{:.4f}"), ("val_accuracy", "{:.4f}"), ("ms_per_step", "{:.2f}")):
                cells = [fmt.format(d["outcome"][run][key]) if d else "–" for d in (ref, dev)]
                lines.append(f"| {run} {key} | {cells[0]} | {cells[1]} |")
        if ref and dev:
            ok, why = demo_verdict(work, float(env.get("demo_max_points", "0.5")))
            lines += ["", f"Comparison: {'PASS' if ok else 'FAIL'}: {why}.", ""]
            lines += [f"Gate decisions on the {label}:", ""]
            lines += [f"- step {g[0]}: {g[1]} {g[2]} {'pass' if g[3] else 'FAIL'}" for g in gate_decisions(dev)]
            lines.append("")

    py = read(work, "python.log")
    if py is not None:
        lines += ["## Python grafter tests", "", "```", py.strip()[-3000:], "```", ""]
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    cmd, work = argv[1], argv[2]
    if cmd == "bench":
        ok, why = bench_verdict(work, float(argv[3]))
    elif cmd == "demo":
        ok, why = demo_verdict(work, float(argv[3]))
    elif cmd == "render":
        render(work, argv[3])
        return 0
    else:
        sys.exit(__doc__)
    print(why)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
