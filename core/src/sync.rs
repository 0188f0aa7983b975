//! The atomics the ring uses: `core`'s normally, loom's when built with `--cfg loom` so that
//! loom can explore every interleaving of the handshakes.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering, fence};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering, fence};

/// What a producer does while it waits for an earlier producer to publish: a CPU spin hint,
/// or under loom a yield so that the model can schedule the thread being waited for.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}
