//! Where a ring's memory comes from, and the only place that turns its pointers into
//! references.
//!
//! A host (the driver, usersim, a test) decides where the pages live and hands the ring their
//! addresses: a [`SharedView`] (consumer page, producer page, data mapped twice) and, for the
//! producer side, a [`RingPlacement`] that adds the private kernel page. [`HeapRing`] places a
//! ring in ordinary heap memory for tests, benchmarks and miri.
//!
//! Ordinary memory stands in for the double mapping because of one rule that both sides keep:
//! a record is only ever accessed through its start index, `offset & (capacity - 1)`, up to
//! `index + padded size <= 2 * capacity`. A wrapping record then lies in the second copy for
//! producer and consumer alike, and no byte is ever reached through both copies while it
//! belongs to one record, so the two copies never need to agree.

use core::ptr::NonNull;

use crate::layout::{Capacity, ConsumerPage, KernelPage, ProducerPage};
use crate::record::{HEADER_SIZE, RECORD_ALIGN, RecordHeader};
use crate::sync::AtomicU64;

/// Why a host's pointers were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlacementError {
    /// A page or the data pointer is null.
    Null,
    /// A page or the data is not aligned to 8 bytes.
    Misaligned,
}

impl core::fmt::Display for PlacementError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            PlacementError::Null => "a ring page address is null",
            PlacementError::Misaligned => "a ring page address is not aligned to 8 bytes",
        })
    }
}

impl core::error::Error for PlacementError {}

/// What producers and the consumer share: the producer page and the data mapped twice back
/// to back. The consumer's [`SharedView`] adds its own consumer page; the producer side's
/// [`RingPlacement`] adds the private kernel page.
#[derive(Clone, Copy, Debug)]
pub struct DataView {
    producer_page: NonNull<ProducerPage>,
    data: NonNull<u8>,
    capacity: Capacity,
    /// Under loom the headers live in a side table of modelled atomics, one per 8 data bytes,
    /// since loom cannot model atomics placed in raw bytes.
    #[cfg(loom)]
    headers: NonNull<RecordHeader>,
    /// Under loom, one tracked cell per 8 data bytes: payload writes and reads register
    /// accesses on them, so that loom reports a payload access the ring's orderings leave
    /// unordered in the executions it explores.
    #[cfg(loom)]
    shadow: NonNull<loom::cell::UnsafeCell<()>>,
}

// SAFETY: a view is a set of addresses of memory shared on purpose; every access through it
// is atomic (pages, headers) or covered by the ring protocol (payloads), as argued where the
// accesses are made.
unsafe impl Send for DataView {}
// SAFETY: as for `Send`.
unsafe impl Sync for DataView {}

fn checked<T>(ptr: *mut T) -> Result<NonNull<T>, PlacementError> {
    let ptr = NonNull::new(ptr).ok_or(PlacementError::Null)?;
    if !(ptr.as_ptr() as usize).is_multiple_of(RECORD_ALIGN) {
        return Err(PlacementError::Misaligned);
    }
    Ok(ptr)
}

impl DataView {
    /// Makes a view of the producer page and the data of a ring placed by the caller.
    ///
    /// # Safety
    ///
    /// For as long as any `Ring` or `Consumer` made from this view lives:
    /// - `producer_page` points to at least 8 bytes, readable (and writable for producers);
    /// - `data` points to `2 * capacity` bytes, readable by the consumer and readable and
    ///   writable by producers, either a double mapping (byte `capacity + i` is byte `i`) or
    ///   ordinary memory (see the module comment);
    /// - nothing but rings and consumers made from views of this memory writes to it through
    ///   Rust references.
    ///
    /// Null or misaligned addresses are refused with an error.
    pub unsafe fn new(
        producer_page: *mut u8,
        data: *mut u8,
        capacity: Capacity,
    ) -> Result<DataView, PlacementError> {
        #[cfg(loom)]
        let headers = {
            let table: alloc::vec::Vec<RecordHeader> = (0..capacity.bytes() / HEADER_SIZE)
                .map(|_| RecordHeader::default())
                .collect();
            // Leaked on purpose: a loom model builds a few small rings.
            NonNull::from(alloc::boxed::Box::leak(table.into_boxed_slice())).cast()
        };
        #[cfg(loom)]
        let shadow = {
            let table: alloc::vec::Vec<loom::cell::UnsafeCell<()>> = (0..capacity.bytes()
                / HEADER_SIZE)
                .map(|_| loom::cell::UnsafeCell::new(()))
                .collect();
            NonNull::from(alloc::boxed::Box::leak(table.into_boxed_slice())).cast()
        };
        Ok(DataView {
            producer_page: checked(producer_page.cast())?,
            data: checked(data)?,
            capacity,
            #[cfg(loom)]
            headers,
            #[cfg(loom)]
            shadow,
        })
    }

    /// The data capacity.
    #[inline]
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// The producer page's `producer_offset`.
    #[inline]
    pub(crate) fn producer_offset(&self) -> &AtomicU64 {
        // SAFETY: `new`'s contract: the page is valid and aligned for as long as `self` is
        // used; it is only ever accessed atomically.
        unsafe { &self.producer_page.as_ref().producer_offset }
    }

    /// The header of the record that starts at `offset`. Any offset is fine: it is masked
    /// into the data, and every 8-aligned index leaves room for a header before the end.
    #[inline]
    pub(crate) fn header(&self, offset: u64) -> &RecordHeader {
        let index = self.capacity.index(offset) & !(HEADER_SIZE - 1);
        #[cfg(not(loom))]
        // SAFETY: `index + 8 <= capacity` (index is a multiple of 8 below the capacity), the
        // data is 8-aligned and valid for the view's lifetime (`new`'s contract), and headers
        // are only ever accessed atomically.
        unsafe {
            self.data.add(index).cast::<RecordHeader>().as_ref()
        }
        #[cfg(loom)]
        // SAFETY: the side table has `capacity / 8` entries and lives as long as the program.
        unsafe {
            self.headers.add(index / HEADER_SIZE).as_ref()
        }
    }

    /// Asks the processor to bring the header at `offset` (masked into the data, as in
    /// [`header`](Self::header)) into its cache, for a walk that expects to read it soon. A
    /// hint: it reads nothing, orders nothing and cannot fault; nothing where the target has
    /// no such instruction, and under loom and miri.
    #[inline]
    pub(crate) fn prefetch_header(&self, offset: u64) {
        #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
        {
            let index = self.capacity.index(offset) & !(HEADER_SIZE - 1);
            // SAFETY: `index < capacity`, so the address lies in the data (as in `header`);
            // `_mm_prefetch` needs SSE, which every x86_64 processor has, and is no access in
            // the language's sense: it cannot fault, and no write races with it.
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    self.data.add(index).as_ptr().cast::<i8>(),
                );
            }
        }
        #[cfg(not(all(target_arch = "x86_64", not(loom), not(miri))))]
        let _ = offset;
    }

    /// Under loom: registers a payload access of `bytes` bytes at `offset` with the model
    /// (a write if `write`), slot by slot, as the double mapping places them.
    #[cfg(loom)]
    pub(crate) fn track_payload(&self, offset: u64, bytes: usize, write: bool) {
        let slots = (HEADER_SIZE + bytes).div_ceil(HEADER_SIZE);
        for slot in 0..slots {
            let index = self.capacity.index(offset + (slot * HEADER_SIZE) as u64) / HEADER_SIZE;
            // SAFETY: the shadow table has `capacity / 8` entries and lives forever.
            let cell = unsafe { self.shadow.add(index).as_ref() };
            if write {
                cell.with_mut(|_| ());
            } else {
                cell.with(|_| ());
            }
        }
    }

    /// Where the payload of the record that starts at `offset` begins. The payload's bytes
    /// up to `index + padded size <= 2 * capacity` are inside the view.
    #[inline]
    pub(crate) fn payload_ptr(&self, offset: u64) -> *mut u8 {
        let index = self.capacity.index(offset);
        // SAFETY: `index + HEADER_SIZE <= capacity < 2 * capacity`: in bounds of the data.
        unsafe { self.data.as_ptr().add(index + HEADER_SIZE) }
    }
}

/// What the consumer sees of a ring: its own consumer page, and the producer page and the
/// data mapped twice back to back ([`DataView`], which it derefs to).
#[derive(Clone, Copy, Debug)]
pub struct SharedView {
    consumer_page: NonNull<ConsumerPage>,
    data: DataView,
}

// SAFETY: as for `DataView`; the consumer page is only ever accessed atomically.
unsafe impl Send for SharedView {}
// SAFETY: as for `Send`.
unsafe impl Sync for SharedView {}

impl SharedView {
    /// Makes a consumer's view of a ring placed by the caller.
    ///
    /// # Safety
    ///
    /// As [`DataView::new`] for `producer_page`, `data` and `capacity`, and `consumer_page`
    /// points to at least 8 bytes, readable and writable, for as long as the `Consumer` made
    /// from this view lives, with at most one `Consumer` made from it at a time.
    pub unsafe fn new(
        consumer_page: *mut u8,
        producer_page: *mut u8,
        data: *mut u8,
        capacity: Capacity,
    ) -> Result<SharedView, PlacementError> {
        // SAFETY: forwarded from this function's contract.
        let data = unsafe { DataView::new(producer_page, data, capacity)? };
        // SAFETY: forwarded from this function's contract.
        unsafe { SharedView::with_data(consumer_page, data) }
    }

    /// A consumer's view over `data` that a producer side shares (heap rings, tests).
    ///
    /// # Safety
    ///
    /// As [`SharedView::new`] for `consumer_page`.
    pub unsafe fn with_data(
        consumer_page: *mut u8,
        data: DataView,
    ) -> Result<SharedView, PlacementError> {
        Ok(SharedView {
            consumer_page: checked(consumer_page.cast())?,
            data,
        })
    }

    /// The consumer page's `consumer_offset`, which the consumer writes.
    #[inline]
    pub(crate) fn consumer_offset(&self) -> &AtomicU64 {
        // SAFETY: `new`'s contract: the page is valid and aligned for as long as `self` is
        // used; it is only ever accessed atomically.
        unsafe { &self.consumer_page.as_ref().consumer_offset }
    }

    /// The consumer page's `read_offset`, which the consumer writes.
    #[inline]
    pub(crate) fn read_offset(&self) -> &AtomicU64 {
        // SAFETY: as for `consumer_offset`.
        unsafe { &self.consumer_page.as_ref().read_offset }
    }
}

impl core::ops::Deref for SharedView {
    type Target = DataView;
    fn deref(&self) -> &DataView {
        &self.data
    }
}

/// Everything a producer side needs: the producer page and the data, and the private kernel
/// page. The consumer page is not part of it: each mapping brings its own
/// ([`Ring::attach_consumer_page`](crate::Ring::attach_consumer_page)).
#[derive(Clone, Copy, Debug)]
pub struct RingPlacement {
    kernel_page: NonNull<KernelPage>,
    data: DataView,
}

// SAFETY: as for `SharedView`: only atomics and protocol-covered payloads are reached.
unsafe impl Send for RingPlacement {}
// SAFETY: as for `Send`.
unsafe impl Sync for RingPlacement {}

impl RingPlacement {
    /// Adds the kernel page to a data view.
    ///
    /// # Safety
    ///
    /// `kernel_page` points to a page readable and writable by the host, never mapped into a
    /// consumer, valid for as long as any `Ring` made from this placement lives, and used by
    /// at most one `Ring` at a time. `data` obeys [`DataView::new`]'s contract.
    pub unsafe fn new(
        kernel_page: *mut u8,
        data: DataView,
    ) -> Result<RingPlacement, PlacementError> {
        Ok(RingPlacement {
            kernel_page: checked(kernel_page.cast())?,
            data,
        })
    }

    /// The producer page and the data.
    pub fn data(&self) -> &DataView {
        &self.data
    }

    #[inline]
    pub(crate) fn kernel(&self) -> &KernelPage {
        // SAFETY: `new`'s contract; the kernel page is only ever accessed atomically.
        unsafe { self.kernel_page.as_ref() }
    }
}

#[cfg(any(feature = "alloc", test, loom))]
mod heap {
    use alloc::alloc::{Layout, alloc_zeroed, dealloc, handle_alloc_error};
    use alloc::sync::Arc;

    use alloc::boxed::Box;
    use core::sync::atomic::Ordering;

    use super::{DataView, RingPlacement, SharedView};
    use crate::consumer::Consumer;
    use crate::layout::{Capacity, ConsumerPage, PAGE_SIZE, RingLayout};
    use crate::mapping::Retired;
    use crate::producer::{Hooks, Ring};

    /// Heap memory for one ring's host region (kernel page, producer page, the data twice),
    /// zeroed, page-aligned.
    #[derive(Debug)]
    pub struct HeapMemory {
        base: *mut u8,
        layout: Layout,
    }

    // SAFETY: the memory is plain bytes; who touches it, and how, is the ring's business.
    unsafe impl Send for HeapMemory {}
    // SAFETY: as for `Send`.
    unsafe impl Sync for HeapMemory {}

    impl HeapMemory {
        fn new(capacity: Capacity) -> HeapMemory {
            let bytes = capacity.layout().region_bytes();
            let layout = Layout::from_size_align(bytes, PAGE_SIZE)
                .expect("a ring region of at most 2 GiB + 3 pages is a valid layout");
            // SAFETY: `layout` has a non-zero size.
            let base = unsafe { alloc_zeroed(layout) };
            if base.is_null() {
                handle_alloc_error(layout);
            }
            HeapMemory { base, layout }
        }

        /// The address of the page at `offset` (a `RingLayout` offset).
        #[cfg(not(loom))]
        fn at(&self, offset: usize) -> *mut u8 {
            debug_assert!(offset < self.layout.size());
            // SAFETY: `offset` is one of `RingLayout`'s page offsets, inside the allocation.
            unsafe { self.base.add(offset) }
        }

        /// Under loom the pages hold loom's atomics, which all-zero bytes are not: they are
        /// made as values and leaked (a model builds a few small rings); the data stays in
        /// the allocation.
        #[cfg(loom)]
        fn at(&self, offset: usize) -> *mut u8 {
            use crate::layout::{KernelPage, ProducerPage};
            match offset {
                RingLayout::KERNEL_PAGE => Box::into_raw(Box::new(KernelPage::default())).cast(),
                RingLayout::PRODUCER_PAGE => {
                    Box::into_raw(Box::new(ProducerPage::default())).cast()
                }
                // SAFETY: inside the allocation.
                _ => unsafe { self.base.add(offset) },
            }
        }
    }

    impl Drop for HeapMemory {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout, freed once.
            unsafe { dealloc(self.base, self.layout) }
        }
    }

    /// A ring in ordinary heap memory, for tests, benchmarks and miri. Derefs to its [`Ring`].
    /// Its first consumer page is attached as mapping 1; [`HeapRing::remap`] hands over to a
    /// consumer with a fresh page, as a host's MAP after UNMAP does.
    pub struct HeapRing<H: Hooks = ()> {
        ring: Ring<H>,
        data: DataView,
        memory: Arc<HeapMemory>,
    }

    /// A consumer page on the heap, kept alive by the consumer that uses it (and by a
    /// [`StalePage`] after its mapping ended).
    #[derive(Debug)]
    pub struct HeapConsumerPage {
        page: *mut ConsumerPage,
    }

    // SAFETY: a heap page only ever accessed atomically.
    unsafe impl Send for HeapConsumerPage {}
    // SAFETY: as for `Send`.
    unsafe impl Sync for HeapConsumerPage {}

    impl HeapConsumerPage {
        fn new() -> Arc<HeapConsumerPage> {
            Arc::new(HeapConsumerPage {
                page: Box::into_raw(Box::new(ConsumerPage::default())),
            })
        }
    }

    impl Drop for HeapConsumerPage {
        fn drop(&mut self) {
            // SAFETY: made by `Box::into_raw` in `new`, freed once, when nothing uses it.
            drop(unsafe { Box::from_raw(self.page) });
        }
    }

    /// The consumer page of a mapping that ended, still writable by its former consumer (a
    /// process keeps its views after UNMAP): what a hostile former consumer writes there must
    /// not reach the ring.
    #[derive(Debug)]
    pub struct StalePage(Arc<HeapConsumerPage>);

    impl StalePage {
        /// Writes `value` into the old page, as the former consumer's process may.
        pub fn store(&self, value: u64) {
            // SAFETY: the page lives as long as `self.0`.
            // Relaxed: a hostile writer orders nothing.
            unsafe {
                (*self.0.page)
                    .consumer_offset
                    .store(value, Ordering::Relaxed)
            };
        }

        /// Under loom: frees the old page as a host does once the mapping ended, and has loom
        /// check that every access of the page (a producer's walk that read it, a QUERY's)
        /// happens before the free: the free is a non-atomic access of the page's words.
        #[cfg(loom)]
        #[doc(hidden)]
        pub fn free(mut self) {
            let page = Arc::get_mut(&mut self.0)
                .expect("a stale page is the last reference to its page")
                .page;
            // SAFETY: the page lives until `self` drops below; the retirement waited for every
            // walk in the gate, so no reference to the page is in use (what loom checks).
            let page = unsafe { &mut *page };
            page.consumer_offset.with_mut(|_| ());
            page.read_offset.with_mut(|_| ());
        }
    }

    impl<H: Hooks> HeapRing<H> {
        /// Places a ring of `capacity` bytes on the heap; returns the producer side and the
        /// one consumer. The memory lives until both are dropped.
        pub fn new(capacity: Capacity, hooks: H) -> (HeapRing<H>, Consumer) {
            let memory = Arc::new(HeapMemory::new(capacity));
            // SAFETY: the addresses are page-aligned pages of one live allocation, kept alive
            // by the `Arc` held by both sides; the data is `2 * capacity` ordinary bytes (see
            // the module comment); the kernel page is used by this one ring only.
            let (data, placement) = unsafe {
                let data = DataView::new(
                    memory.at(RingLayout::PRODUCER_PAGE),
                    memory.at(RingLayout::DATA),
                    capacity,
                )
                .expect("heap pages are non-null and page-aligned");
                let placement = RingPlacement::new(memory.at(RingLayout::KERNEL_PAGE), data)
                    .expect("heap pages are non-null and page-aligned");
                (data, placement)
            };
            // SAFETY: as above.
            let ring = unsafe { Ring::new(placement, hooks) };
            let heap = HeapRing { ring, data, memory };
            let consumer = heap.attach();
            (heap, consumer)
        }

        /// Attaches a fresh consumer page and makes the one consumer over it.
        fn attach(&self) -> Consumer {
            let page = HeapConsumerPage::new();
            // SAFETY: the page lives as long as the consumer and the `StalePage` that keep
            // it, and at least until `remap` retires its mapping (the consumer is given back
            // to it, and its page is kept by the `StalePage` it returns); the previous
            // mapping was retired; `&self` methods that attach are serialised by `remap`
            // taking the old consumer by value.
            let _ = unsafe { self.ring.attach_consumer_page(page.page.cast()) };
            // SAFETY: the view's consumer page is the page just attached and set to the start;
            // the data view is this ring's; exactly one consumer is made for this mapping.
            unsafe {
                let view = SharedView::with_data(page.page.cast(), self.data)
                    .expect("a boxed consumer page is non-null and aligned");
                Consumer::new(view)
                    .keep_alive(self.memory.clone())
                    .keep_page(page)
            }
        }

        /// Ends the current mapping (its consumer, given back, stops) and attaches a new one
        /// with a fresh page: what UNMAP then MAP does on a host. Returns the new consumer
        /// and the old page, which a test may keep writing as a former consumer would.
        pub fn remap(&self, old: Consumer) -> (Consumer, StalePage, Retired) {
            let generation = self
                .ring
                .attached_generation()
                .expect("a heap ring's consumer is attached until remap");
            let retired = self.ring.retire_consumer_page(generation);
            let stale = StalePage(old.into_page().expect("a heap ring's consumer has a page"));
            (self.attach(), stale, retired)
        }
    }

    impl<H: Hooks> core::ops::Deref for HeapRing<H> {
        type Target = Ring<H>;
        fn deref(&self) -> &Ring<H> {
            &self.ring
        }
    }
}

#[cfg(any(feature = "alloc", test, loom))]
pub use heap::{HeapConsumerPage, HeapMemory, HeapRing, StalePage};
