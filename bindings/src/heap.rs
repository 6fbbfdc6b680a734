//! Giving freed heap memory back to the OS (see `Engine::set_heap_release`).

/// glibc keeps memory freed between live allocations mapped; `malloc_trim` returns every whole
/// free page of every arena to the OS (`MADV_DONTNEED`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release() {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    let started = std::time::Instant::now();
    // SAFETY: malloc_trim takes no pointers and is thread-safe (it locks each arena in turn);
    // glibc has had it since 2.0, and this build targets the GNU C library.
    let released = unsafe { malloc_trim(0) };
    tracing::debug!(
        released = released != 0,
        took_us = started.elapsed().as_micros() as u64,
        "heap memory returned to the OS"
    );
}

/// Other C libraries (musl, macOS, Windows) return memory by themselves or offer no such call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release() {}
