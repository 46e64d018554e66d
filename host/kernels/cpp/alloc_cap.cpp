// A cap on what the kernel's own code may allocate while it is prewarmed.
//
// libtorch allocates every CPU tensor through the allocator registered for
// the CPU device. This wraps it once (at the first kernel load) with one
// that, on a thread where a cap is active, counts the bytes requested and
// throws a c10::Error before asking for more than the cap: the TorchScript
// interpreter unwinds and tch turns the exception into an error, so an
// artifact that asks for tens of GiB fails its load instead of taking the
// process's memory. Threads without an active cap (every thread outside a
// prewarm) pay one thread-local read per allocation.
//
// The count is of bytes requested during the cap, not bytes live: the
// budget covers one probe forward pass (a few intermediate tensors), and
// counting frees would need a wrapping context that breaks
// Allocator::raw_allocate. Work a kernel hands to another thread (`fork`)
// would escape a thread-local cap; archive_check refuses such code.

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <mutex>

namespace {

struct Cap {
  bool active = false;
  uint64_t budget = 0;
  uint64_t used = 0;
  uint64_t refused = 0;  // size of the first request refused, 0 if none
};

thread_local Cap cap;

class CappedCpuAllocator final : public c10::Allocator {
 public:
  explicit CappedCpuAllocator(c10::Allocator* inner) : inner_(inner) {}

  c10::DataPtr allocate(size_t n) override {
    if (cap.active) {
      const uint64_t want = static_cast<uint64_t>(n);
      if (want > cap.budget - cap.used) {
        if (cap.refused == 0) {
          cap.refused = want == 0 ? 1 : want;
        }
        TORCH_CHECK(false, "kasmina: the kernel asked for ", want, " bytes with ", cap.used, " of its ", cap.budget,
                    " byte prewarm allocation cap already used");
      }
      cap.used += want;
    }
    return inner_->allocate(n);
  }

  c10::DeleterFnPtr raw_deleter() const override { return inner_->raw_deleter(); }

  bool is_simple_data_ptr(const c10::DataPtr& data_ptr) const override {
    return inner_->is_simple_data_ptr(data_ptr);
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    inner_->copy_data(dest, src, count);
  }

 private:
  c10::Allocator* inner_;
};

std::once_flag installed_once;
int install_result = -1;  // 0: installed; 1: another allocator kept its place; 2: exception

}  // namespace

extern "C" {

// Wraps the CPU allocator once; later calls return the first call's
// result. Other threads may be allocating meanwhile (a trainer's steps
// beside a background kernel load): c10 stores the new allocator pointer
// with one aligned store, so each allocation sees the old or the new one,
// and every tensor is freed through the deleter its own allocation
// returned, whichever allocator that was. 0 on success, 1 if a higher-priority allocator stayed in place,
// 2 if libtorch threw.
int kasmina_alloc_cap_install() {
  std::call_once(installed_once, [] {
    try {
      c10::Allocator* current = c10::GetCPUAllocator();
      // Leaked on purpose: tensors freed at process exit may still call it.
      auto* capped = new CappedCpuAllocator(current);
      c10::SetCPUAllocator(capped, /*priority=*/0);
      install_result = c10::GetCPUAllocator() == capped ? 0 : 1;
    } catch (const std::exception&) {
      install_result = 2;
    }
  });
  return install_result;
}

// Starts a cap of `budget` bytes on the calling thread.
void kasmina_alloc_cap_begin(uint64_t budget) {
  cap = Cap{};
  cap.active = true;
  cap.budget = budget;
}

// Ends the calling thread's cap; returns the bytes requested under it and
// writes the first refused request's size (0 if none) to `refused`.
uint64_t kasmina_alloc_cap_end(uint64_t* refused) {
  const uint64_t used = cap.used;
  if (refused != nullptr) {
    *refused = cap.refused;
  }
  cap = Cap{};
  return used;
}

}  // extern "C"
