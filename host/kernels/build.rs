//! Adds the libtorch rpath (shared with the other crates that link libtorch)
//! and compiles `cpp/alloc_cap.cpp`, the CPU allocator wrapper that caps what
//! a kernel's code may allocate while it is prewarmed (`src/alloc_cap.rs`).

#[path = "../build-support/libtorch_rpath.rs"]
mod rpath;

fn main() {
    rpath::main();
    println!("cargo:rerun-if-changed=cpp/alloc_cap.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-env-changed=LIBTORCH_INCLUDE");
    // torch-sys (`links = "tch"`) hands us its libtorch lib directory; the
    // headers sit beside it both in a libtorch download and in a PyTorch
    // installation (`torch/lib`, `torch/include`), unless LIBTORCH_INCLUDE
    // names their root, as torch-sys reads it.
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("DEP_TCH_LIBTORCH_LIB not set: kasmina-kernels must depend on torch-sys directly");
    };
    let include = match std::env::var("LIBTORCH_INCLUDE") {
        Ok(root) if std::env::var_os("LIBTORCH_USE_PYTORCH").is_none() => std::path::Path::new(&root).join("include"),
        _ => std::path::Path::new(&lib_dir).join("../include"),
    };
    if !include.join("c10/core/CPUAllocator.h").exists() {
        panic!(
            "libtorch headers not found at {}: the allocator cap is compiled against them \
             (run scripts/setup.sh, or point LIBTORCH at a full libtorch)",
            include.display()
        );
    }
    // The same ABI switch torch-sys compiles its own C++ with.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .include(&include)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag_if_supported("-Wno-unused-parameter")
        .file("cpp/alloc_cap.cpp")
        .compile("kasmina_alloc_cap");
}
