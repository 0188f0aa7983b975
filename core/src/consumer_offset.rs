//! The validated consumer offset: the consumer offset producers trust.
//!
//! The consumer page is writable by the consumer's process, so any value can appear there at
//! any moment (in Linux this was CVE-2024-41009). Producers therefore never check free space
//! against it. They check against the validated consumer offset in the kernel page, which
//! advances only by walking committed (unlocked) headers from its current value toward
//! `min(hint, producer offset)`, where the hint is the consumer page (when the ring looks full)
//! or the offset a query carries. A hostile value can then only starve its own consumer: a
//! value behind stops nothing but its own progress, a value ahead is cut at the producer
//! offset and at the first LOCKED record, a value inside a record stops before that record.
//!
//! The walk touches one header per record and each record is walked once, so it adds no shared
//! write per record in the common case (it runs only when the ring looks full, on each query,
//! and when a mapping ends); one walk visits at most `capacity / 8` headers. Every walk runs
//! inside the hint gate of [`crate::mapping`]: only the attached mapping's page and QUERYs
//! move the offset.

use crate::mapping::Admit;
use crate::producer::{Hooks, Ring};
use crate::record::{DISCARDED, LEN_MASK, LOCKED, padded_size};
use crate::sync::{Ordering, fence};

impl<H: Hooks> Ring<H> {
    /// The validated consumer offset: every record below it has been committed and returned.
    /// A report: it orders nothing, so code that reuses space on the strength of it acquires
    /// it instead (as the walk and the producers do).
    pub fn validated_consumer_offset(&self) -> u64 {
        // Relaxed: no caller reuses space on the strength of this load; each needs only a
        // value the offset really held, or the latest one, which something else orders:
        // - the retirement's final offset: every walk that moved the offset left the gate
        //   with a release that the retirement's wait acquired (and its own walk came before
        //   in program order), and no walk moves it once the gate is closed, so coherence
        //   gives the last exchange; the next mapping's attach comes after the retirement
        //   (the host serialises them) and reads the same value;
        // - `is_committed`: the offset only grows, so `> head` is true only if it is; a false
        //   reading in `arm_query` comes after its SeqCst fence, and the handshake with the
        //   walk's fence (`wake_query_passed`) makes the walk that it missed wake the query;
        // - QUERY replies, statistics and the snapshot of `consumer_page_offset`: reports.
        // The consumer's reads of the space below it are acquired by the loads that lead to
        // reuse: reserve's own load and `acquire_validated_offset`.
        self.placement()
            .kernel()
            .validated_consumer_offset
            .0
            .load(Ordering::Relaxed)
    }

    /// The validated consumer offset, acquired: for a producer that may reuse the space below
    /// it plus one capacity (the walk's start and a producer shut out of the hint gate).
    fn acquire_validated_offset(&self) -> u64 {
        // Acquire: pairs with the release of the exchange that advanced it, which carries the
        // walker's acquire of the consumer's reads (its hint) and of the producers' writes
        // (each header it passed), so that those happen before our writes into that space.
        self.placement()
            .kernel()
            .validated_consumer_offset
            .0
            .load(Ordering::Acquire)
    }

    /// Advances the validated consumer offset toward what the attached mapping's consumer
    /// page says (a producer whose ring looks full). Nothing moves while no mapping is
    /// attached.
    pub(crate) fn advance_consumer_offset_from_page(&self) -> u64 {
        let Some(walk) = self.enter_hint_walk(Admit::Attached) else {
            // Shut out (no mapping): reserve may reuse space up to what the last walk
            // returned, so acquire it.
            return self.acquire_validated_offset();
        };
        // Acquire: pairs with the consumer's release store of its offset, so its reads of the
        // records below happen before any producer reuses their space.
        let hint = walk.page_value(Ordering::Acquire);
        self.advance_consumer_offset(hint)
    }

    /// Advances the validated consumer offset toward `hint`, the offset a QUERY of mapping
    /// `generation` carries; `None`, changing nothing, if that mapping is not the attached
    /// one (it ended meanwhile).
    ///
    /// The request path that carried `hint` orders the consumer's reads before it (a system
    /// call, as the consumer's release store would).
    pub fn advance_consumer_offset_for(&self, generation: u64, hint: u64) -> Option<u64> {
        let walk = self.enter_hint_walk(Admit::Generation(generation))?;
        let head = self.advance_consumer_offset(hint);
        drop(walk);
        Some(head)
    }

    /// Advances the validated consumer offset toward `min(hint, producer offset)`, over
    /// committed records only, and returns its new value. Any `hint` is safe.
    ///
    /// Callers take `hint` from a mapping inside the hint gate ([`crate::mapping`]), having
    /// acquired it the way the consumer released it. A walk that passes the head an armed
    /// query waits for calls [`Hooks::wake_query`], so a host must not hold its query lock
    /// while it calls this.
    pub(crate) fn advance_consumer_offset(&self, hint: u64) -> u64 {
        let kernel = self.placement().kernel();
        let view = self.placement().data();
        let validated = &kernel.validated_consumer_offset.0;
        let capacity = self.capacity().as_u64();
        loop {
            // Acquired: a walk that returns `current` unchanged (its hint was older) lets the
            // producer reuse the space below it; and the exchange below reads from this value.
            let current = self.acquire_validated_offset();
            // Acquire: every header below the producer offset is written.
            let producer = view.producer_offset().load(Ordering::Acquire);
            // At most `capacity / 8` steps: each step moves at least 8 bytes, and the walk
            // ends one capacity past `current` at the latest. The producer offset, never more
            // than one capacity ahead of the validated offset, keeps it there already; the cut
            // makes the bound the walk's own, so a walk that lost track of the producer offset
            // (a corrupted producer page, a bug) stops after one ring of headers.
            let target = hint.min(producer).min(current.saturating_add(capacity));
            if target <= current {
                return current;
            }
            let mut position = current;
            let mut submitted = 0u64;
            while position < target {
                // Acquire: pairs with the producer's release of this word at commit, so that
                // the producer's writes happen before the space is reused.
                let word = view.header(position).len.load(Ordering::Acquire);
                if word & LOCKED != 0 {
                    break;
                }
                let size = padded_size(word & LEN_MASK);
                if size > target - position {
                    // The hint ends inside this record: it was not read to its end.
                    break;
                }
                position += size;
                submitted += u64::from(word & DISCARDED == 0);
                // Each header's address comes from the one before, so a walk over headers
                // that left this processor's cache waits for one miss at a time. Records in a
                // stream are mostly of one size: the header four of this record's size ahead
                // is asked for now, so that the misses overlap (`cargo bench -p ringmap-core
                // -- 4KiB`: the walk was a sixth of the 4 KiB producer's time). A wrong guess
                // costs one hint.
                view.prefetch_header(position.wrapping_add(4 * size));
            }
            if position == current {
                return current;
            }
            // Release on success: producers that acquire the new value see the consumer's
            // reads (our acquire of the hint) and the producers' writes (our acquire of each
            // header) before they reuse the space. No acquire on success: the offsets never
            // repeat (every store after `Ring::new`'s is an exchange to a larger value), so an
            // exchange that finds `current` reads the very store our acquire of `current`
            // read and synchronised with already. Relaxed on failure: the value is dropped and
            // the loop acquires `current` again. Exchanging from `current` only: success means
            // no one advanced it during the walk, no space we walked was reused, and every
            // header read was of the records that are there now.
            match validated.compare_exchange(
                current,
                position,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    // Relaxed: a statistic, added once per walk by the walk that won.
                    kernel.consumed.0.fetch_add(submitted, Ordering::Relaxed);
                    self.wake_query_passed(current, position);
                    return position;
                }
                Err(_) => continue,
            }
        }
    }

    /// Wakes the armed query if the walk from `from` to `to` passed the head it waits for:
    /// that head is committed, and its slot may already hold a newer record, whose commit
    /// would not match the armed word.
    fn wake_query_passed(&self, from: u64, to: u64) {
        // SeqCst fence: the walk's exchange (store) then this load of the armed word, against
        // `arm_query`'s store of the armed word then its load of the validated offset: one of
        // the two sees the other's store (see notify.rs).
        fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence.
        let armed = self.placement().kernel().armed.0.load(Ordering::Relaxed);
        if armed != 0 && (from..to).contains(&(armed - 1)) {
            self.hooks().wake_query(self, armed - 1);
        }
    }
}
