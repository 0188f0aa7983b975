//! The publish: producers move the producer offset over their claims in claim order, and no
//! producer waits for another (but on a collision in the offer table, below).
//!
//! A claim whose headers are written is published when the producer offset passes it. The
//! producer offset may pass a claim only when it reaches the claim's start, so claims are
//! published in the order they were made. A producer that finds the producer offset at its
//! start publishes its claim at once (the *owner*). One that finds an earlier claim still
//! unpublished does not wait for it: it leaves an *offer* (its claim's start and size) in
//! the offer table, in the kernel page, and goes on; whoever publishes up to that start takes
//! the offer and publishes the claim with its own (it *combines* them). So a producer that is
//! preempted between its claim and its publish holds up the consumer, which reads in order,
//! but no other producer.
//!
//! The offer and the publish are a store-load pair on each side, like the query's arm and
//! commit (`notify`): the offerer stores its offer, fences, and loads the producer offset;
//! the owner stores the producer offset, fences, and loads the offer slot at its new end.
//! With SeqCst fences on both sides, at least one of them sees the other's store. If the
//! offerer sees the producer offset at its start, it takes its offer back with a
//! compare-and-swap and publishes itself; if the owner sees the offer, it takes it with a
//! compare-and-swap. Both may see each other: exactly one compare-and-swap succeeds, so
//! exactly one of them publishes the claim, and no offer is left behind.
//!
//! The table has [`OFFER_SLOTS`] slots; a claim's slot is a hash of its start. Two claims
//! offered at once may hash to one slot: the second then joins an offer that ends where it
//! starts, if there is one (a read-modify-write of that offer's word, which grows by the
//! claim's size), so the producers behind a preempted one never run out of slots; only if
//! no offer ends there does it wait, as every producer did before offers, until its slot is
//! free or the producer offset reaches its start ([`Hooks::relax`] decides how). Every take
//! of an offer (by the owner, or by the offerer taking it back) is a compare-and-swap of the
//! word it just read, so it takes the offer as grown. An offer holds the low 32 bits of its
//! start and its size; the claims in flight lie within one capacity (at most 2^30 bytes) of
//! the producer offset, so no two have the same low start bits, and an offer at a slot is
//! the claim at an offset only if they match.
//!
//! A producer tells whether it is the owner by loading `published_end`, a kernel-page word
//! each owner stores once it has published (the end it published to), not the producer
//! offset, whose line the consumer polls: a value that lags behind only sends it down the
//! offer path, whose recheck reads the producer offset itself (see `publish`).
//!
//! Modelled in `models/ring_buffer/RingBufferMP.tla` (`PubCheck`, `Offer`, `Recheck`,
//! `Reclaim`, `Extend`, `FallbackWait`, `Advance`, `Combine`, `StoreEnd`, `CheckArmedRange`)
//! and loom-tested in `core/tests/loom.rs` (`loom_offer_*`).

use crate::producer::{Hooks, Ring};
use crate::record::LOCKED;
use crate::sync::{AtomicU64, Ordering, fence};

/// Slots of the offer table: more than the producers that are ever between their claim and
/// their publish at once in the kernel (one per processor), and few enough (eight cache
/// lines) that `Offers::extend`'s scan of them all, on a collision only, stays cheap. Two
/// under loom, so that its models meet collisions.
#[cfg(not(loom))]
pub(crate) const OFFER_SLOTS: usize = 64;
#[cfg(loom)]
pub(crate) const OFFER_SLOTS: usize = 2;

/// The offer table: in the kernel page, so no client ever reads or writes it. A zero slot is
/// empty (an offer's size is never zero).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Offers {
    slots: [AtomicU64; OFFER_SLOTS],
}

impl Default for Offers {
    fn default() -> Offers {
        Offers {
            slots: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Offers {
    /// The slot of the claim that starts at `start`: Fibonacci hashing of its 8-byte unit, so
    /// that records of any one size spread over the table.
    #[inline]
    fn slot(&self, start: u64) -> &AtomicU64 {
        let bits = OFFER_SLOTS.trailing_zeros();
        // 32 bits: a multiply by an immediate; the claims in flight differ in their low bits.
        let hash = (start >> 3) as u32;
        let hash = hash.wrapping_mul(0x9E37_79B9) >> (32 - bits);
        &self.slots[hash as usize % OFFER_SLOTS]
    }

    /// Takes the offer of the claim that starts at `start`, if one is in its slot: empties
    /// the slot and returns the offer's size, as it is when taken (it may have grown).
    #[inline]
    fn take(&self, start: u64) -> Option<u64> {
        let slot = self.slot(start);
        // Relaxed: only decides whether to try; the exchange below acquires.
        let mut word = slot.load(Ordering::Relaxed);
        loop {
            let size = offered_size(word, start)?;
            // Acquire: takes the offerer's release of its headers and payloads, and those of
            // every claim that joined the offer (`extend`: read-modify-writes continue the
            // release sequence), which the caller's release of the producer offset passes
            // on. Relaxed on failure: the offer grew (try again) or was taken.
            match slot.compare_exchange_weak(word, 0, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Some(size),
                Err(now) => word = now,
            }
        }
    }

    /// Adds the claim `start..end` to an offer that ends at `start`, if there is one. True if
    /// it did: whoever takes that offer publishes this claim with it. A read-modify-write of
    /// the offer's word, as the take is: if the take comes first, the exchange fails.
    #[cold]
    fn extend(&self, start: u64, end: u64) -> bool {
        for slot in &self.slots {
            // Relaxed: only decides whether to try; the exchange below releases.
            let mut word = slot.load(Ordering::Relaxed);
            while word != 0 && ((word >> 32) as u32).wrapping_add(word as u32) == start as u32 {
                let grown = word + (end - start);
                // Release: the taker (acquire) sees our headers and payloads. Relaxed on
                // failure: the offer was taken or grew; look again.
                match slot.compare_exchange_weak(word, grown, Ordering::Release, Ordering::Relaxed)
                {
                    Ok(_) => return true,
                    Err(now) => word = now,
                }
            }
        }
        false
    }

    /// Empties every slot: a ring that starts has no claims.
    pub(crate) fn clear(&self) {
        for slot in &self.slots {
            // Relaxed: as for the other stores of `Ring::new`: nobody shares the ring yet.
            slot.store(0, Ordering::Relaxed);
        }
    }
}

/// An offer's word: the low 32 bits of the claim's start, and its size (at most the capacity,
/// 2^30, never zero).
#[inline]
fn offer_word(start: u64, size: u64) -> u64 {
    (start as u32 as u64) << 32 | size
}

/// The size of the claim at `start` that the offer `word` describes, if it describes it.
#[inline]
fn offered_size(word: u64, start: u64) -> Option<u64> {
    (word != 0 && (word >> 32) as u32 == start as u32).then_some(word & 0xFFFF_FFFF)
}

impl<H: Hooks> Ring<H> {
    /// Publishes the claim `start..end`, whose headers are written: at once if the producer
    /// offset is at `start`, else by leaving an offer for the producer that publishes up to
    /// `start`.
    #[inline]
    pub(crate) fn publish(&self, start: u64, end: u64) {
        let published_end = &self.placement().kernel().claim.0.published_end;
        // The owner before us stores `published_end` once it has published up to `start`: a
        // kernel-page word, where the producer offset's line is polled by the consumer and so
        // a miss here. Equal to `start` is enough: only owners store either word, each the
        // value it stored in the producer offset just before, so the producer offset is at
        // `start` or past it; past it only once our claim is published, which takes our own
        // publish or our offer, and we have made neither. Offsets only grow (64 bits, never
        // repeat), so an old value never equals a later claim's start. A value that lags (an
        // owner between its two stores, or two owners' stores landing out of order, a smaller
        // over a larger) only sends us to `offer`, whose SeqCst recheck of the producer offset
        // itself finds it at `start` and publishes after all: slower, never wrong.
        // Acquire: the producer before us released the headers below `start` with its
        // release stores of the producer offset, and its release store of `published_end`
        // comes after them in its program order, so acquiring the value we read takes them
        // too. Our release in `advance` is a plain store, which does not continue that
        // producer's release sequence, so we acquire its headers ourselves to pass them on.
        if published_end.load(Ordering::Acquire) == start {
            self.advance(start, end);
        } else if let Some(end) = self.offer(start, end) {
            self.advance(start, end);
        }
    }

    /// The producer offset was not at `start`: offers the claim `start..end`. Returns the end
    /// of what the caller must publish after all (the producer offset reached `start`
    /// meanwhile; an offer it takes back may have grown, see `extend`), or `None` when the
    /// claim is left to whoever publishes up to `start`.
    #[cold]
    #[inline(never)]
    fn offer(&self, start: u64, end: u64) -> Option<u64> {
        let producer_offset = self.placement().data().producer_offset();
        let offers = &self.placement().kernel().offers.0;
        let slot = offers.slot(start);
        let word = offer_word(start, end - start);
        let mut spins = 0u32;
        loop {
            // Release on success: the owner that takes the offer (acquire) sees our headers
            // and payloads, and passes them on with its release of the producer offset.
            // Relaxed on failure: the slot's other offer tells us nothing we read.
            if slot
                .compare_exchange(0, word, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                break;
            }
            // The slot holds another claim's offer. If an offer ends where our claim starts,
            // our claim joins it (the producers behind a preempted one then never run out
            // of slots); if none does, perhaps the producer offset is here now.
            if offers.extend(start, end) {
                return None;
            }
            // Acquire: as in `publish`.
            if producer_offset.load(Ordering::Acquire) == start {
                return Some(end);
            }
            self.hooks().relax(spins);
            spins = spins.wrapping_add(1);
        }
        // SeqCst fence: store (the offer) then load (the producer offset) here, store (the
        // producer offset) then load (the slot) in `advance`, a SeqCst fence between each
        // pair: at least one side sees the other's store, so an offer is never left with
        // nobody to publish it.
        fence(Ordering::SeqCst);
        // Acquire: as in `publish`, should we publish after all.
        if producer_offset.load(Ordering::Acquire) != start {
            return None;
        }
        // The producer offset is at our start: take the offer back (grown, perhaps), unless
        // the owner that moved it here took it first.
        offers.take(start).map(|size| start + size)
    }

    /// Moves the producer offset from `start` (where it is, and only this caller may move
    /// it) to `end`, then over every offer that starts where it stops; then wakes a query
    /// waiting for a record it published, if that record is committed.
    #[inline]
    fn advance(&self, start: u64, mut end: u64) {
        let producer_offset = self.placement().data().producer_offset();
        let kernel = self.placement().kernel();
        loop {
            // Release: a consumer or walk that acquires `end` sees every header (and, for a
            // batch, payload) below it: ours, those acquired in `publish`, and the offers
            // taken below.
            producer_offset.store(end, Ordering::Release);
            // SeqCst fence: the store-load pair with `offer` (see there), and with
            // `arm_query` for the check of the armed word below (as in `commit`: one of the
            // two sees the other's store, so a query armed for a record we publish is woken
            // by us or sees the record published).
            fence(Ordering::SeqCst);
            // Nobody has claimed past `end`: no offer can wait there, and a claim made from
            // now on finds the producer offset at its start, if not at once then after its
            // offer's fence. Relaxed: ordered by the fence above; if this load misses a claim,
            // that claim's compare-and-swap comes after our fence in the fences' total order,
            // so its offer's fence does too, and its load after that sees our store.
            if kernel.claim.0.reserve_offset.load(Ordering::Relaxed) == end {
                break;
            }
            // The offer at our end, taken; or nobody's (its producer takes it back, or has
            // not offered yet and will find the producer offset here).
            let Some(size) = kernel.offers.0.take(end) else {
                break;
            };
            end += size;
        }
        // Release: the next claim's producer, which acquires `end` here in `publish`, sees
        // every header (and payload) below it, as it would by acquiring the producer offset
        // we stored above, before this store in our program order. (The last SeqCst fence
        // above, after that store, releases as well, so a Relaxed store would do; Release
        // says what it is for and costs nothing more on x86.) Not a fence's partner: a load
        // that misses it goes to `offer`, whose recheck reads the producer offset.
        kernel.claim.0.published_end.store(end, Ordering::Release);
        // Relaxed: ordered by the last SeqCst fence above.
        let armed = kernel.armed.0.load(Ordering::Relaxed);
        let head = armed.wrapping_sub(1);
        if armed != 0 && head.wrapping_sub(start) < end - start && self.header_committed(head) {
            self.hooks().wake_query(self, head);
        }
    }

    /// After a SeqCst fence, with the record at `head` published: whether it is committed.
    /// A record we published may be LOCKED still (ours, a reservation; or an offered one):
    /// its commit wakes the query then. Three parties meet here, each storing one word,
    /// fencing and loading the other two: the query (armed; producer offset and header, in
    /// `arm_query`), the committer (header; armed and producer offset, in `commit`) and the
    /// publisher (producer offset; armed and header, here). Whichever fences last in the
    /// fences' single total order sees both other stores, and completes or wakes the query.
    #[inline]
    fn header_committed(&self, head: u64) -> bool {
        // Relaxed: ordered by the caller's SeqCst fence (see above); the host reads nothing of
        // the record on the strength of it.
        self.placement()
            .data()
            .header(head)
            .len
            .load(Ordering::Relaxed)
            & LOCKED
            == 0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn an_offer_describes_only_its_own_start() {
        let word = offer_word(0x1_0000_0040, 48);
        assert_eq!(offered_size(word, 0x1_0000_0040), Some(48));
        assert_eq!(offered_size(word, 0x40), Some(48), "low 32 bits only");
        assert_eq!(offered_size(word, 0x1_0000_0050), None);
        assert_eq!(offered_size(0, 0), None, "an empty slot offers nothing");
    }

    /// Claims in flight are consecutive: eight consecutive records of one common size never
    /// share a slot, wherever they start (a shared slot makes the second producer wait).
    #[test]
    fn eight_consecutive_records_of_one_size_take_eight_slots() {
        let offers = Offers::default();
        // Under miri a sample of the starts: all of them take minutes there.
        let (starts, step) = if cfg!(miri) {
            (1u64 << 10, 264)
        } else {
            (1 << 14, 8)
        };
        for size in [
            16u64,
            24,
            32,
            48,
            64,
            128,
            256,
            1024,
            4096,
            4104,
            1 << 16,
            1 << 20,
        ] {
            for first in (0..starts).step_by(step) {
                let mut used = std::collections::BTreeSet::new();
                for i in 0..8 {
                    used.insert(offers.slot(first + i * size) as *const AtomicU64 as usize);
                }
                assert_eq!(used.len(), 8, "{size}-byte records from {first}");
            }
        }
    }
}
