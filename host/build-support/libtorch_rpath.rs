//! Build script shared by every crate whose binaries or tests link libtorch
//! (via `build = "../build-support/libtorch_rpath.rs"`).
//!
//! tch's own build script sets an rpath only for its own targets, so without
//! this our test and binary targets fail at start-up with
//! `libtorch_cpu.so: cannot open shared object file` unless the user exports
//! `LD_LIBRARY_PATH`. Each such crate depends on `torch-sys` directly; torch-sys
//! declares `links = "tch"`, which hands us `DEP_TCH_LIBTORCH_LIB`.

/// Adds the libtorch rpath (and, with a CUDA libtorch, keeps libtorch.so).
pub fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        // The fuzz checks link libtorch only with their `host` feature (the
        // fuzz workspace's light build turns it off): nothing to do then.
        if std::env::var("CARGO_PKG_NAME").as_deref() == Ok("kasmina-fuzz-checks")
            && std::env::var_os("CARGO_FEATURE_HOST").is_none()
        {
            return;
        }
        // Not reachable while torch-sys is a direct dependency; say so loudly.
        println!(
            "cargo:warning=DEP_TCH_LIBTORCH_LIB not set: this crate must depend on torch-sys directly for the libtorch rpath"
        );
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    // With a CUDA libtorch, `--as-needed` drops libtorch.so (nothing references
    // it by symbol), and with it the CUDA backend's registration (known tch
    // issue). Only then: the slim CPU set has no libtorch_cuda.so, and the
    // wheel's libtorch.so NEEDS it, so forcing it there breaks start-up.
    if !std::path::Path::new(&lib_dir).join("libtorch_cuda.so").exists() {
        return;
    }
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-L{lib_dir}");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
}
