//! A cap on the CPU memory a kernel's own code may ask for while it is
//! prewarmed (the C++ half is `cpp/alloc_cap.cpp`).
//!
//! The archive check bounds what libtorch's *loader* reserves; prewarm then
//! runs the artifact's code, and TorchScript may ask for any size
//! (`torch.zeros([1 << 34])`). Under Linux's overcommit such a request
//! succeeds and the process dies when the memory is touched. So each probe
//! forward runs under a per-thread budget (`kernels.prewarm_memory_bytes`):
//! libtorch's CPU allocator, wrapped once at the first load, refuses the
//! request that would pass it by throwing, and the load fails with
//! [`CapExceeded`] before the memory is taken.
//!
//! What it does not bound: memory other than CPU tensor storage (the
//! interpreter's own small objects; CUDA tensors, which the device's memory
//! bounds), and tensors libtorch allocates on its intra-op worker threads
//! (per-thread scratch, small). Work handed to another thread with `fork`
//! would escape it entirely: the archive check refuses kernels that fork.

// The one FFI boundary of this crate: three C functions with plain
// arguments (and one pointer to a local), defined in cpp/alloc_cap.cpp.
#![allow(unsafe_code)]

use std::ffi::c_int;

unsafe extern "C" {
    fn kasmina_alloc_cap_install() -> c_int;
    fn kasmina_alloc_cap_begin(budget: u64);
    fn kasmina_alloc_cap_end(refused: *mut u64) -> u64;
}

/// A request the cap refused, with what had been asked for before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapExceeded {
    /// Bytes of the refused request.
    pub requested: u64,
    /// Bytes asked for under the cap before it.
    pub used: u64,
    /// The cap.
    pub budget: u64,
}

impl std::fmt::Display for CapExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the kernel's code asked for {} bytes of CPU memory in one probe forward pass ({} already used), \
             over the prewarm cap of {} bytes (kernels.prewarm_memory_bytes): raise the cap if the kernel \
             really needs that much, or fix the kernel",
            self.requested, self.used, self.budget
        )
    }
}

/// Wraps libtorch's CPU allocator (once per process; later calls return
/// the first call's answer). Fails if another allocator registered with a
/// higher priority keeps its place: then no cap could be enforced.
pub fn install() -> Result<(), String> {
    // SAFETY: no arguments; the C++ side runs its body once (std::call_once).
    match unsafe { kasmina_alloc_cap_install() } {
        0 => Ok(()),
        1 => Err("another CPU allocator with a higher priority is registered with libtorch: \
                  the prewarm memory cap cannot be enforced"
            .to_owned()),
        _ => Err("libtorch threw while the CPU allocator was wrapped for the prewarm memory cap".to_owned()),
    }
}

/// Runs `f` on this thread with at most `budget` bytes of CPU tensor
/// memory requested in all. `Err(CapExceeded)` when the cap refused a
/// request (whatever `f` returned: its error is the cap's exception);
/// otherwise `f`'s own result. [`install`] must have succeeded.
pub fn capped<T>(budget: u64, f: impl FnOnce() -> T) -> Result<T, CapExceeded> {
    /// Ends the cap if `f` unwinds, so the thread is not left capped.
    struct EndOnUnwind;
    impl Drop for EndOnUnwind {
        fn drop(&mut self) {
            // SAFETY: a null pointer is allowed (nothing is written).
            unsafe { kasmina_alloc_cap_end(std::ptr::null_mut()) };
        }
    }
    // SAFETY: plain value; sets a thread-local on the C++ side.
    unsafe { kasmina_alloc_cap_begin(budget) };
    let unwinding = EndOnUnwind;
    let out = f();
    std::mem::forget(unwinding);
    let mut refused = 0u64;
    // SAFETY: a valid pointer to a local u64.
    let used = unsafe { kasmina_alloc_cap_end(&mut refused) };
    if refused > 0 {
        return Err(CapExceeded { requested: refused, used, budget });
    }
    Ok(out)
}
