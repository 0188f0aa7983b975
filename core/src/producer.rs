//! The producer side: many producers reserve, write, then submit or discard records, without
//! locks and without ever waiting for the consumer.
//!
//! Reserve is a compare-and-swap of the reserve offset (kernel page), checked against the
//! validated consumer offset so that no record still being read or written is overwritten. The
//! reserving producer then writes the record's header with LOCKED set and publishes it
//! ([`crate::publish`]): the producer offset passes claims in claim order only, so every
//! header below it is written and the consumer never sees an uninitialised record (the seed's
//! `buggy_publish_before_lock` bug). A producer whose earlier claims are not yet published
//! leaves its claim to whoever publishes them, and goes on.
//!
//! [`Ring::write`] and [`Ring::write_batch`] copy the payloads and write committed headers
//! before the publish, so the consumer never meets their records LOCKED.

use core::fmt;

use crate::layout::Capacity;
use crate::placement::RingPlacement;
use crate::record::{DISCARDED, LOCKED, MAX_PAYLOAD, RecordHeader, padded_size, page_offset_of};
use crate::sync::{Ordering, fence, spin_hint};

/// What the host does for the ring at the two places the ring cannot decide alone.
pub trait Hooks: Sync {
    /// A producer just committed or published the record at `head` of `ring`, which is now
    /// both, and a query was armed for exactly that record ([`Ring::arm_query`]). The host completes the query if it still
    /// waits for it ([`Ring::disarm_query_for`] tells, under the host's query lock). Runs in
    /// the producer's context, at the producer's IRQL in the kernel.
    fn wake_query(&self, ring: &Ring<Self>, head: u64)
    where
        Self: Sized,
    {
        let _ = (ring, head);
    }

    /// A producer waits for an earlier producer to publish (only when its claim's slot in the
    /// offer table is taken, see [`crate::publish`]); `spins` counts the waits so far. The
    /// default is a CPU spin hint, right in the kernel where the wait runs at DISPATCH_LEVEL;
    /// a user-mode host with more producer threads than processors should yield after a few
    /// spins.
    fn relax(&self, spins: u32) {
        let _ = spins;
        spin_hint();
    }
}

/// No query to wake, spin while waiting: for tests and benchmarks.
impl Hooks for () {}

/// Why a reservation failed. A failed reservation changes nothing but, for [`Full`], the
/// drop counter.
///
/// [`Full`]: ReserveError::Full
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReserveError {
    /// A record must carry at least one byte.
    Empty,
    /// The payload is longer than a record can say (2^30 - 1 bytes).
    TooLong {
        /// The payload length asked for.
        len: usize,
    },
    /// The record with its header and padding is larger than the whole ring.
    LargerThanRing {
        /// The payload length asked for.
        len: usize,
        /// The ring's capacity.
        capacity: Capacity,
    },
    /// There is no room now: the consumer has not returned enough space. Counted as dropped.
    Full,
}

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ReserveError::Empty => f.write_str("a record must carry at least one byte"),
            ReserveError::TooLong { len } => write!(
                f,
                "a record of {len} bytes is longer than the longest possible ({MAX_PAYLOAD} bytes)"
            ),
            ReserveError::LargerThanRing { len, capacity } => write!(
                f,
                "a record of {len} bytes does not fit in a ring of {capacity} (8 bytes of header, padded to 8)"
            ),
            ReserveError::Full => {
                f.write_str("the ring is full: the consumer has not returned enough space")
            }
        }
    }
}

impl core::error::Error for ReserveError {}

/// What a producer that found the ring full learns when it looks again.
enum Room {
    /// The validated consumer offset moved: this much is returned now.
    Free(u64),
    /// Another producer claimed meanwhile: the reserve offset and the validated consumer
    /// offset are here now.
    Moved { start: u64, consumer: u64 },
    /// Full still; the drops are counted.
    Full,
}

/// The producer side of a ring: shared by every producer (`&Ring` is all a producer needs).
pub struct Ring<H: Hooks = ()> {
    placement: RingPlacement,
    hooks: H,
}

impl<H: Hooks> Ring<H> {
    /// Starts a ring, empty, in the placement's memory.
    ///
    /// # Safety
    ///
    /// The placement's contract ([`RingPlacement::new`]) holds for the life of the ring, and no
    /// other `Ring` uses the same kernel page at the same time.
    pub unsafe fn new(placement: RingPlacement, hooks: H) -> Ring<H> {
        let ring = Ring { placement, hooks };
        let kernel = ring.placement.kernel();
        // Relaxed: nobody shares the ring yet; whatever hands it to other threads or maps it
        // into a consumer orders these stores before their first access.
        kernel.claim.0.reserve_offset.store(0, Ordering::Relaxed);
        kernel
            .validated_consumer_offset
            .0
            .store(0, Ordering::Relaxed);
        kernel.armed.0.store(0, Ordering::Relaxed);
        kernel.offers.0.clear();
        kernel.dropped.0.store(0, Ordering::Relaxed);
        kernel.discarded.0.store(0, Ordering::Relaxed);
        kernel.consumed.0.store(0, Ordering::Relaxed);
        // The producer offset's value, stored below: the first claim, at 0, is its owner's.
        kernel.claim.0.published_end.store(0, Ordering::Relaxed);
        kernel.mapping.0.attached.store(0, Ordering::Relaxed);
        kernel.mapping.0.walkers.store(0, Ordering::Relaxed);
        kernel.mapping.0.last_generation.store(0, Ordering::Relaxed);
        kernel
            .mapping
            .0
            .page
            .store(core::ptr::null_mut(), Ordering::Relaxed);
        ring.placement
            .data()
            .producer_offset()
            .store(0, Ordering::Relaxed);
        ring
    }

    /// The data capacity.
    #[inline]
    pub fn capacity(&self) -> Capacity {
        self.placement.data().capacity()
    }

    /// The host's hooks.
    pub fn hooks(&self) -> &H {
        &self.hooks
    }

    pub(crate) fn placement(&self) -> &RingPlacement {
        &self.placement
    }

    /// Reserves room for a record of `len` payload bytes.
    ///
    /// Fails at once, changing nothing, for 0 bytes, more than 2^30 - 1, or a record larger
    /// than the ring; fails with [`ReserveError::Full`] (and counts a drop) when the consumer
    /// has not returned enough space. Never waits for the consumer, nor (but on a collision in
    /// the offer table, see [`crate::publish`]) for producers that reserved earlier.
    #[inline]
    pub fn reserve(&self, len: usize) -> Result<Reservation<'_, H>, ReserveError> {
        let size = self.checked_size(len)?;
        let start = self.claim(size, 1)?;

        let view = self.placement.data();
        let header = view.header(start);
        // Relaxed: no one reads this header before the producer offset passes it, and the
        // release store of the producer offset below publishes it.
        header.len.store(LOCKED | len as u32, Ordering::Relaxed);
        header.page_offset.store(
            page_offset_of(self.capacity().index(start)),
            Ordering::Relaxed,
        );
        self.publish(start, start + size);

        Ok(Reservation {
            ring: self,
            start,
            len: len as u32,
            committed: false,
        })
    }

    /// The padded size of a record of `len` payload bytes, or why there cannot be one.
    #[inline]
    fn checked_size(&self, len: usize) -> Result<u64, ReserveError> {
        if len == 0 {
            return Err(ReserveError::Empty);
        }
        if len > MAX_PAYLOAD as usize {
            return Err(ReserveError::TooLong { len });
        }
        let size = padded_size(len as u32);
        let capacity = self.capacity();
        if size > capacity.as_u64() {
            return Err(ReserveError::LargerThanRing { len, capacity });
        }
        Ok(size)
    }

    /// Claims `size` bytes (at most the capacity) at the reserve offset, for `records`
    /// records, and returns where they start; [`ReserveError::Full`], counting `records`
    /// drops, if the consumer has not returned enough space.
    #[inline]
    pub(crate) fn claim(&self, size: u64, records: u64) -> Result<u64, ReserveError> {
        let capacity = self.capacity().as_u64();
        let kernel = self.placement.kernel();
        let reserve = &kernel.claim.0.reserve_offset;
        // Relaxed: the reserve offset only hands out ranges; it guards no data. The bytes of
        // a range are guarded by the validated consumer offset (acquired below) and published
        // by the producer offset.
        let mut start = reserve.load(Ordering::Relaxed);
        // Acquire: pairs with the release that advanced it (consumer_offset.rs), so that the
        // consumer's reads of the space we are about to reuse happen before our writes.
        let mut consumer = kernel.validated_consumer_offset.0.load(Ordering::Acquire);
        loop {
            if start + size > consumer + capacity {
                // Looks full: out of line, so that the common path keeps its registers.
                match self.look_again_when_full(start, size, records) {
                    Room::Free(validated) => consumer = validated,
                    Room::Moved {
                        start: now,
                        consumer: validated,
                    } => {
                        start = now;
                        consumer = validated;
                    }
                    Room::Full => return Err(ReserveError::Full),
                }
                continue;
            }
            // Relaxed on both paths, as for the loads of `reserve`: the range is ours by the
            // atomicity of the exchange alone.
            match reserve.compare_exchange_weak(
                start,
                start + size,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(start),
                Err(now) => start = now,
            }
        }
    }

    /// The ring looked full for `size` bytes at `start`: returns what the consumer has read
    /// (a walk of the validated offset toward its page), then looks again. Counts `records`
    /// drops when it is full still.
    #[cold]
    #[inline(never)]
    fn look_again_when_full(&self, start: u64, size: u64, records: u64) -> Room {
        let consumer = self.advance_consumer_offset_from_page();
        if start + size <= consumer + self.capacity().as_u64() {
            return Room::Free(consumer);
        }
        let kernel = self.placement.kernel();
        // Relaxed: see the first load of `reserve` in `claim`.
        let now = kernel.claim.0.reserve_offset.load(Ordering::Relaxed);
        if now != start {
            return Room::Moved {
                start: now,
                consumer,
            };
        }
        // Relaxed: a statistic; nothing is ordered by it.
        kernel.dropped.0.fetch_add(records, Ordering::Relaxed);
        Room::Full
    }

    /// Writes one record: claims room, copies `payload` in, writes its header committed and
    /// publishes it (a batch of one, see [`write_batch`](Self::write_batch)): the consumer
    /// never meets it LOCKED. Returns the record's offset. Fails as
    /// [`reserve`](Self::reserve) does.
    #[inline]
    pub fn write(&self, payload: &[u8]) -> Result<u64, ReserveError> {
        let size = self.checked_size(payload.len())?;
        let start = self.claim(size, 1)?;
        let end = self.place(start, payload);
        // As in `write_batch`: the publish wakes a query waiting for the record.
        self.publish(start, end);
        Ok(start)
    }

    /// Copies `payload` into the claimed, unpublished record at `offset` and writes its
    /// header, committed; returns where the next record starts.
    #[inline]
    pub(crate) fn place(&self, offset: u64, payload: &[u8]) -> u64 {
        let view = self.placement.data();
        #[cfg(loom)]
        view.track_payload(offset, payload.len(), true);
        // SAFETY: the bytes lie in the view (`index + padded size <= 2 * capacity`, see
        // `SharedView::payload_ptr`) and belong to this claim alone: the compare-and-swap
        // gave the range to no other producer, and no one reads at or above the producer
        // offset, which reaches this range only with the caller's publish. The source is a
        // caller's slice, which cannot overlap the ring's data (only the ring hands out
        // references into it, and none into unpublished space).
        unsafe {
            core::ptr::copy_nonoverlapping(
                payload.as_ptr(),
                view.payload_ptr(offset),
                payload.len(),
            );
        }
        let header = view.header(offset);
        // Relaxed: nobody reads a header at or above the producer offset (the consumer, the
        // walk and `is_committed` stop there); the release store of the producer offset in
        // `publish` publishes it with the payload.
        header.len.store(payload.len() as u32, Ordering::Relaxed);
        header.page_offset.store(
            page_offset_of(self.capacity().index(offset)),
            Ordering::Relaxed,
        );
        offset + padded_size(payload.len() as u32)
    }

    /// Writes several records with one claim and one publish, for a producer that has more
    /// than one: one compare-and-swap claims room for all of them, the payloads are copied and
    /// the headers written (already committed: no LOCKED phase), then one publish makes them
    /// all visible at once, and one load of the armed word wakes a query waiting for any of
    /// them. Returns the offset of the first record; the
    /// others follow it in order.
    ///
    /// Fails at once, changing nothing, for no payload, an empty or too long payload, or
    /// records that together do not fit in the ring (`LargerThanRing` then gives the payload
    /// bytes of the whole batch); fails with [`ReserveError::Full`], counting every record of
    /// the batch as dropped, when the consumer has not returned room for all of them. A
    /// producer that claims after this claim and publishes first leaves its claim for this
    /// one to publish (see [`crate::publish`]).
    ///
    /// Its ordering is modelled in `models/ring_buffer/RingBufferMP.tla` (`Batch`) and
    /// `core/tests/loom.rs` (`loom_batch_*`).
    #[inline]
    pub fn write_batch(&self, payloads: &[&[u8]]) -> Result<u64, ReserveError> {
        if payloads.is_empty() {
            return Err(ReserveError::Empty);
        }
        let mut size = 0u64;
        let mut bytes = 0usize;
        for payload in payloads {
            size = size.saturating_add(self.checked_size(payload.len())?);
            bytes = bytes.saturating_add(payload.len());
        }
        let capacity = self.capacity();
        if size > capacity.as_u64() {
            return Err(ReserveError::LargerThanRing {
                len: bytes,
                capacity,
            });
        }
        let start = self.claim(size, payloads.len() as u64)?;

        let mut offset = start;
        for payload in payloads {
            offset = self.place(offset, payload);
        }
        // The publish's SeqCst fence and load of the armed word wake a query waiting for
        // any record of the batch: with the store of the producer offset as this side's
        // store, as the header's store in `commit`.
        self.publish(start, offset);
        Ok(start)
    }

    /// Reservations refused because the ring was full, since the ring started.
    pub fn dropped(&self) -> u64 {
        // Relaxed: a statistic.
        self.placement.kernel().dropped.0.load(Ordering::Relaxed)
    }

    /// Submitted records whose space was returned (the validated offset passed them).
    pub fn consumed(&self) -> u64 {
        // Relaxed: a statistic.
        self.placement.kernel().consumed.0.load(Ordering::Relaxed)
    }

    /// Records discarded since the ring started (explicitly or by dropping a reservation).
    pub fn discarded(&self) -> u64 {
        // Relaxed: a statistic.
        self.placement.kernel().discarded.0.load(Ordering::Relaxed)
    }

    /// The producer offset: every record below it is published.
    pub fn producer_offset(&self) -> u64 {
        // Acquire: callers that read headers below it must see them written.
        self.placement
            .data()
            .producer_offset()
            .load(Ordering::Acquire)
    }

    /// The reserve offset: where the next reservation starts.
    pub fn reserve_offset(&self) -> u64 {
        // Relaxed: a snapshot for statistics.
        self.placement
            .kernel()
            .claim
            .0
            .reserve_offset
            .load(Ordering::Relaxed)
    }

    /// Commits the record at `start`: one release store of its header, then the check for a
    /// query waiting on it.
    #[inline]
    fn commit(&self, start: u64, len: u32, flags: u32) {
        let header: &RecordHeader = self.placement.data().header(start);
        // Release: a consumer or a validation walk that acquires this word sees the payload.
        header.len.store(len | flags, Ordering::Release);
        if flags & DISCARDED != 0 {
            // Relaxed: a statistic; discards only, so submits never write this line.
            self.placement
                .kernel()
                .discarded
                .0
                .fetch_add(1, Ordering::Relaxed);
        }
        // SeqCst fence: store (header) then load (armed) here, store (armed) then load
        // (header) in `arm_query`; with a SeqCst fence between each pair, at least one side
        // sees the other's store, so a query is never armed for a record whose commit nobody
        // sees (no lost wake-up). Loads only on this path: producers never write the armed
        // word's cache line.
        fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence above.
        if self.placement.kernel().armed.0.load(Ordering::Relaxed) == start + 1
            && self.published_past(start)
        {
            self.hooks.wake_query(self, start);
        }
    }

    /// After the commit's SeqCst fence: whether the record at `start` is published. An
    /// offered claim may be committed before the producer that takes its offer publishes it;
    /// that producer's publish then wakes the query (the three-party meeting of
    /// `Ring::header_committed` in `publish.rs`).
    #[cold]
    fn published_past(&self, start: u64) -> bool {
        // Relaxed: ordered by the commit's SeqCst fence; decides only whether to wake.
        self.placement
            .data()
            .producer_offset()
            .load(Ordering::Relaxed)
            > start
    }
}

/// A reserved record: write its payload, then [`submit`](Self::submit) or
/// [`discard`](Self::discard) it. Dropping it discards it, so the ring never stalls on a
/// record nobody will finish; forgetting it (`mem::forget`) stalls the consumer at it.
pub struct Reservation<'r, H: Hooks = ()> {
    ring: &'r Ring<H>,
    start: u64,
    len: u32,
    committed: bool,
}

impl<H: Hooks> Reservation<'_, H> {
    /// The record's offset: what identifies it to the consumer and the query.
    pub fn offset(&self) -> u64 {
        self.start
    }

    /// The payload length.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Never true: a reservation carries at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The payload bytes, to write.
    #[inline]
    pub fn payload(&mut self) -> &mut [u8] {
        let view = self.ring.placement().data();
        #[cfg(loom)]
        view.track_payload(self.start, self.len as usize, true);
        let ptr = view.payload_ptr(self.start);
        // SAFETY: the bytes lie in the view (`index + padded size <= 2 * capacity`, see
        // `SharedView::payload_ptr`) and belong to this reservation alone: the compare-and-swap
        // gave this range to no other producer; the consumer stops at its LOCKED header; the
        // validated consumer offset never passes a LOCKED header, so no later reservation
        // reaches it. `&mut self` keeps the borrow unique.
        unsafe { core::slice::from_raw_parts_mut(ptr, self.len as usize) }
    }

    /// Submits the record: the consumer will hand it out.
    #[inline]
    pub fn submit(mut self) {
        self.committed = true;
        self.ring.commit(self.start, self.len, 0);
    }

    /// Discards the record: the consumer will skip it and return its space.
    #[inline]
    pub fn discard(mut self) {
        self.committed = true;
        self.ring.commit(self.start, self.len, DISCARDED);
    }
}

impl<H: Hooks> Drop for Reservation<'_, H> {
    #[inline]
    fn drop(&mut self) {
        if !self.committed {
            self.ring.commit(self.start, self.len, DISCARDED);
        }
    }
}

impl<H: Hooks> fmt::Debug for Reservation<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("offset", &self.start)
            .field("len", &self.len)
            .finish()
    }
}
