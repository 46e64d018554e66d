//! A driver for counting instructions per gate call with callgrind, which
//! gives the same count whatever else the machine runs (criterion's wall
//! clock does not on a shared 2-core box). It evaluates G2 and G3 `N` times
//! on one plugin in `reuse` isolation; run it with N = 0 and N = 10 000 and
//! divide the difference by N:
//!
//! ```sh
//! cargo build --release -p kasmina-plugin-host --example gate_call_instructions
//! for plugin in v0_2 v0_1; do for n in 0 10000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     $CARGO_TARGET_DIR/release/examples/gate_call_instructions $plugin $n 2>&1 | grep refs
//! done; done
//! ```

#![allow(missing_docs)]

use kasmina_plugin_host::conformance::corpus::passing_gate_inputs;
use kasmina_plugin_host::{
    GatePlugin, InstanceAllocation, Isolation, Pin, PluginLimits, PluginRuntime, PluginSpec, RuntimeConfig,
};
use leyline::GateId;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let which = args.next().ok_or("usage: gate_call_instructions v0_1|v0_2 N")?;
    let n: usize = args.next().ok_or("usage: gate_call_instructions v0_1|v0_2 N")?.parse()?;
    let path = match which.as_str() {
        "v0_1" => kasmina_plugin_artifacts::FIXTURE_GATES_V0_1,
        "v0_2" => kasmina_plugin_artifacts::GATES,
        other => return Err(format!("unknown plugin {other:?}: v0_1 or v0_2").into()),
    };
    // A persistent artifact cache: from the second run on, the component
    // loads precompiled and N = 0 counts no cranelift work.
    let cache = std::env::temp_dir().join("kasmina-gate-call-instructions-cache");
    // On-demand instance memory: valgrind cannot reserve the pooling
    // allocator's large virtual mapping. In `reuse` isolation an instance is
    // made once, so this changes no per-call figure.
    let config = RuntimeConfig { instance_allocation: InstanceAllocation::OnDemand, ..RuntimeConfig::new(&cache) };
    let runtime = PluginRuntime::new(config)?;
    let plugin = GatePlugin::load(&runtime, &PluginSpec::new(path, Pin::Unpinned))?
        .with_limits(PluginLimits { isolation: Isolation::Reuse, ..PluginLimits::default() })?;
    let g2 = passing_gate_inputs(GateId::G2Stability);
    let g3 = passing_gate_inputs(GateId::G3Interface);
    // One warm call each, outside the count's N-dependent part.
    assert!(plugin.evaluate(GateId::G2Stability, &g2).passed && plugin.evaluate(GateId::G3Interface, &g3).passed);
    let mut passed = 0usize;
    for _ in 0..n {
        passed += usize::from(plugin.evaluate(GateId::G2Stability, std::hint::black_box(&g2)).passed);
        passed += usize::from(plugin.evaluate(GateId::G3Interface, std::hint::black_box(&g3)).passed);
    }
    println!("{which}: {passed} of {} calls passed", 2 * n);
    Ok(())
}
