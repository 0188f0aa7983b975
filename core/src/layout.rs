//! Where everything of a ring lives.
//!
//! A consumer sees a ring as these pages, in this order (the layout of eBPF for Windows' ring
//! buffer map and of the Linux BPF ringbuf, without their kernel page):
//!
//! ```text
//! [ consumer page | producer page | data (capacity) | the same data again ]
//! ```
//!
//! The host keeps `[ kernel page | producer page | data | data ]`, and each mapping's consumer
//! page apart from it (a fresh page for every mapping, [`crate::mapping`]).
//!
//! - The kernel page holds what only the host may see: the reserve offset, the validated
//!   consumer offset, the armed query word, the counters and the attached mapping. It is never
//!   mapped into the consumer's process.
//! - The consumer page holds `consumer_offset`, written by the consumer (and so untrusted).
//! - The producer page holds `producer_offset`, written by producers, read-only to the consumer.
//! - The data pages are mapped twice back to back, so that a record that wraps around the end
//!   of the data is contiguous in memory.
//!
//! Offsets are 64-bit counters that only grow; the byte index of an offset in the data is
//! `offset & (capacity - 1)`.

use core::fmt;

use crate::sync::AtomicU64;

/// The page size of every platform ringmap runs on (x86-64 and ARM64 Windows, x86-64 Linux).
pub const PAGE_SIZE: usize = 4096;

/// The smallest capacity: one page of data. Under loom, whose header side table has one
/// modelled atomic per 8 bytes, it is 64 bytes so that the models stay small.
#[cfg(not(loom))]
pub const MIN_CAPACITY: usize = PAGE_SIZE;
/// The smallest capacity under loom (see above).
#[cfg(loom)]
pub const MIN_CAPACITY: usize = 64;

/// The largest capacity. Records carry 30-bit lengths and 32-bit page offsets; one GiB keeps
/// both far from overflow and is more than any ring needs.
pub const MAX_CAPACITY: usize = 1 << 30;

/// The capacity a device uses when its configuration does not say otherwise: 1 MiB.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// The size of the data area of a ring: a power of two and a multiple of [`PAGE_SIZE`],
/// between [`MIN_CAPACITY`] and [`MAX_CAPACITY`]. Only [`Capacity::new`] makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Capacity(usize);

/// Why a capacity was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The capacity is not a power of two.
    NotPowerOfTwo(u64),
    /// The capacity is smaller than one page.
    TooSmall(u64),
    /// The capacity is larger than [`MAX_CAPACITY`].
    TooLarge(u64),
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LayoutError::NotPowerOfTwo(n) => {
                write!(f, "ring capacity {n} is not a power of two")
            }
            LayoutError::TooSmall(n) => write!(
                f,
                "ring capacity {n} is smaller than one page ({MIN_CAPACITY} bytes)"
            ),
            LayoutError::TooLarge(n) => write!(
                f,
                "ring capacity {n} is larger than the maximum ({MAX_CAPACITY} bytes)"
            ),
        }
    }
}

impl core::error::Error for LayoutError {}

impl Capacity {
    /// Checks `bytes` and makes a capacity of it.
    pub const fn new(bytes: u64) -> Result<Capacity, LayoutError> {
        if bytes < MIN_CAPACITY as u64 {
            Err(LayoutError::TooSmall(bytes))
        } else if bytes > MAX_CAPACITY as u64 {
            Err(LayoutError::TooLarge(bytes))
        } else if !bytes.is_power_of_two() {
            // A power of two of at least one page is a multiple of the page size.
            Err(LayoutError::NotPowerOfTwo(bytes))
        } else {
            Ok(Capacity(bytes as usize))
        }
    }

    /// The default capacity, 1 MiB.
    pub const DEFAULT: Capacity = Capacity(DEFAULT_CAPACITY);

    /// The number of data bytes.
    pub const fn bytes(self) -> usize {
        self.0
    }

    /// The number of data bytes, as an offset.
    pub const fn as_u64(self) -> u64 {
        self.0 as u64
    }

    /// The byte index in the data of a 64-bit offset.
    #[inline]
    pub const fn index(self, offset: u64) -> usize {
        (offset & (self.0 as u64 - 1)) as usize
    }

    /// The layout of a whole ring of this capacity.
    pub const fn layout(self) -> RingLayout {
        RingLayout { capacity: self }
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

/// Byte offsets of the pages of a ring of a given capacity, in the host's whole region and in
/// the consumer's view (which starts at the consumer page: the kernel page is not in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingLayout {
    /// The data capacity.
    pub capacity: Capacity,
}

impl RingLayout {
    /// Offset of the kernel page in the host's region.
    pub const KERNEL_PAGE: usize = 0;
    /// Offset of the producer page in the host's region.
    pub const PRODUCER_PAGE: usize = PAGE_SIZE;
    /// Offset of the first copy of the data in the host's region.
    pub const DATA: usize = 2 * PAGE_SIZE;

    /// Offset of the consumer page in the consumer's view.
    pub const VIEW_CONSUMER_PAGE: usize = 0;
    /// Offset of the producer page in the consumer's view.
    pub const VIEW_PRODUCER_PAGE: usize = PAGE_SIZE;
    /// Offset of the first copy of the data in the consumer's view.
    pub const VIEW_DATA: usize = 2 * PAGE_SIZE;

    /// Bytes of the host's whole region: two pages and the data twice.
    pub const fn region_bytes(self) -> usize {
        Self::DATA + 2 * self.capacity.bytes()
    }

    /// Bytes of the consumer's view: two pages and the data twice.
    pub const fn view_bytes(self) -> usize {
        Self::VIEW_DATA + 2 * self.capacity.bytes()
    }

    /// Number of distinct physical pages behind the host's region (the data is backed once).
    pub const fn backing_pages(self) -> usize {
        2 + self.capacity.bytes() / PAGE_SIZE
    }
}

/// Keeps a hot atomic on a cache line (two, for adjacent-line prefetchers) of its own.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct CacheLine<T>(pub(crate) T);

/// The kernel page: private to the host. All-zero bytes are its initial state.
#[repr(C)]
#[derive(Debug, Default)]
pub struct KernelPage {
    /// Where the next reservation starts, and the end the last owner published: the two
    /// words every producer writes, on one line (see [`ClaimLine`]).
    pub(crate) claim: CacheLine<ClaimLine>,
    /// The consumer offset producers trust: advanced only over committed records, never past
    /// the producer offset (see [`crate::consumer_offset`]).
    pub(crate) validated_consumer_offset: CacheLine<AtomicU64>,
    /// 0 when no query waits; otherwise the offset of the head record it waits for, plus one
    /// (see [`crate::notify`]).
    pub(crate) armed: CacheLine<AtomicU64>,
    /// Claims left to whoever publishes up to their start (see [`crate::publish`]).
    pub(crate) offers: CacheLine<crate::publish::Offers>,
    /// Reservations refused because the ring was full.
    pub(crate) dropped: CacheLine<AtomicU64>,
    /// Records discarded (off the submit path: only discards write it).
    pub(crate) discarded: CacheLine<AtomicU64>,
    /// Submitted records the validated consumer offset has passed (written once per walk).
    pub(crate) consumed: CacheLine<AtomicU64>,
    /// The attached mapping, its consumer page and the hint walks in progress (see
    /// [`crate::mapping`]).
    pub(crate) mapping: CacheLine<crate::mapping::MappingGate>,
}

/// The words of a claim and its publish, which only producers write (and, but for STATS'
/// snapshot of the reserve offset, only producers read), on one line: a producer that claims
/// and then publishes takes one line from the others, not two. Measured (`cargo bench -p
/// ringmap-core -- ringmap-8B crossbeam-8B`, six runs interleaved with the build that kept
/// them on separate lines): 8 B with one producer went from 14.2-15.8 to 15.3-16.4 M/s, with
/// two from 11.1-13.6 to 13.6-14.5 M/s; with four it moved within the noise (8.4-10.0 M/s
/// before and after).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct ClaimLine {
    /// Where the next reservation starts. Advanced by producers with compare-and-swap.
    pub(crate) reserve_offset: AtomicU64,
    /// The end of what the last owner published: a copy of a producer offset it stored,
    /// stored once per publish after the last of them. `Ring::publish` checks it, not the
    /// producer offset, whose line the consumer polls (see [`crate::publish`]).
    pub(crate) published_end: AtomicU64,
}

/// The consumer page: mapped read-write into the consumer's process, so untrusted. Each
/// mapping has a page of its own (see [`crate::mapping`]).
#[repr(C)]
#[derive(Debug, Default)]
pub struct ConsumerPage {
    /// How far the consumer has returned space (read and done with). Any value may appear here
    /// at any moment.
    pub(crate) consumer_offset: AtomicU64,
    /// How far the consumer has handed records out (read, perhaps not returned): what a
    /// consumer that ends now would have delivered twice. Informative only (STATS
    /// `redelivered`); untrusted like the rest of the page.
    pub(crate) read_offset: AtomicU64,
}

/// The producer page: written by producers, mapped read-only into the consumer's process.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ProducerPage {
    /// Every record below this offset has its header written (LOCKED or committed).
    pub(crate) producer_offset: AtomicU64,
}

// Under loom the pages are made of loom's atomics, larger and never placed in real pages.
#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<KernelPage>() <= PAGE_SIZE);
#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<ConsumerPage>() <= PAGE_SIZE);
#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<ProducerPage>() <= PAGE_SIZE);

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn capacity_accepts_powers_of_two_from_one_page() {
        assert_eq!(Capacity::new(4096).unwrap().bytes(), 4096);
        assert_eq!(Capacity::new(1 << 20).unwrap(), Capacity::DEFAULT);
        assert_eq!(Capacity::new(1 << 30).unwrap().bytes(), MAX_CAPACITY);
    }

    #[test]
    fn capacity_refuses_the_rest() {
        assert_eq!(Capacity::new(0), Err(LayoutError::TooSmall(0)));
        assert_eq!(Capacity::new(2048), Err(LayoutError::TooSmall(2048)));
        assert_eq!(
            Capacity::new(3 * 4096),
            Err(LayoutError::NotPowerOfTwo(3 * 4096))
        );
        assert_eq!(Capacity::new(4097), Err(LayoutError::NotPowerOfTwo(4097)));
        assert_eq!(Capacity::new(1 << 31), Err(LayoutError::TooLarge(1 << 31)));
        assert_eq!(
            Capacity::new(u64::MAX),
            Err(LayoutError::TooLarge(u64::MAX))
        );
    }

    #[test]
    fn errors_are_sentences() {
        let text = Capacity::new(5000).unwrap_err().to_string();
        assert!(
            text.contains("5000") && text.contains("power of two"),
            "{text}"
        );
    }

    #[test]
    fn index_masks_the_offset() {
        let c = Capacity::new(8192).unwrap();
        assert_eq!(c.index(0), 0);
        assert_eq!(c.index(8192), 0);
        assert_eq!(c.index(8192 * 5 + 24), 24);
        assert_eq!(c.index(u64::MAX - 7), 8192 - 8);
    }

    #[test]
    fn layout_offsets() {
        let l = Capacity::new(8192).unwrap().layout();
        assert_eq!(RingLayout::DATA, 2 * PAGE_SIZE);
        assert_eq!(l.region_bytes(), 2 * PAGE_SIZE + 2 * 8192);
        assert_eq!(l.view_bytes(), 2 * PAGE_SIZE + 2 * 8192);
        assert_eq!(l.backing_pages(), 4);
    }
}
