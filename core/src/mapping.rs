//! The current mapping: which consumer page producers read, and how a mapping ends so that
//! nothing its consumer does afterwards reaches the ring.
//!
//! Every mapping brings a fresh consumer page ([`Ring::attach_consumer_page`]), numbered by a
//! generation (`attached`, 0 when no consumer is mapped). Producers read only the attached
//! page, and only inside the *hint gate*: every walk of the validated consumer offset toward
//! an untrusted hint — a producer's page walk when the ring looks full, a QUERY's carried
//! offset, the last walk of a mapping that ends — enters the gate first:
//!
//! ```text
//! enter(g):  walkers += 1;  SeqCst fence;  if attached != g { walkers -= 1; skip }
//!            ... load the hint, walk, compare-exchange the validated offset ...
//! exit:      walkers -= 1
//! ```
//!
//! A mapping ends ([`Ring::retire_consumer_page`]) with one last walk from its page, then
//! `attached := 0`, a SeqCst fence, then a wait until `walkers == 0`, and only then reads the
//! validated offset as its final offset. Either a walker sees `attached` change and skips, or
//! the retirer sees the walker in the gate and waits for it (each side stores, fences with
//! SeqCst, then loads what the other stores, so one of them sees the other's store; loom
//! models SeqCst fences, not SeqCst accesses, which is why the pair is built from fences).
//! So once retire returns, no walk that read the old page
//! or a hint of the old mapping is still in flight, the old page is never read again (the host
//! may free its side of it), and the validated offset does not move until the next mapping is
//! attached. The next consumer starts exactly there: the TLA+ model `ConsumerHandover` checks
//! this design, and its buggy configurations the three ways of getting it wrong.

use crate::layout::ConsumerPage;
use crate::producer::{Hooks, Ring};
use crate::record::{HeaderState, decode, padded_size};
use crate::sync::{AtomicPtr, AtomicU64, Ordering, fence};

/// Which mapping is attached, its page, and the walks in the gate. In the kernel page.
#[derive(Debug, Default)]
pub(crate) struct MappingGate {
    /// The attached mapping's generation; 0 while no consumer is mapped.
    pub(crate) attached: AtomicU64,
    /// The attached mapping's consumer page (null while none is attached).
    pub(crate) page: AtomicPtr<ConsumerPage>,
    /// Hint walks inside the gate.
    pub(crate) walkers: AtomicU64,
    /// The generation the last attached mapping had.
    pub(crate) last_generation: AtomicU64,
}

/// Which hint walks a gate admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Whatever mapping is attached (a producer's page walk).
    Attached,
    /// Only this generation (a QUERY of that mapping, its retirement).
    Generation(u64),
}

/// A hint walk inside the gate; leaving it (drop) lets a retirement go on.
pub(crate) struct InGate<'r> {
    walkers: &'r AtomicU64,
    page: *mut ConsumerPage,
}

impl InGate<'_> {
    /// The consumer page of the mapping the gate admitted: untrusted, any value.
    pub(crate) fn page_value(&self, order: Ordering) -> u64 {
        // SAFETY: `attach_consumer_page`'s contract keeps the page valid until
        // `retire_consumer_page` returns, which waits for this walk to leave the gate.
        unsafe { (*self.page).consumer_offset.load(order) }
    }
}

impl Drop for InGate<'_> {
    fn drop(&mut self) {
        // Release: the walk's loads of the page and its compare-exchange happen before a
        // retirement that sees the count drop (its Acquire loads of `walkers`) frees the page or
        // reads the final offset.
        self.walkers.fetch_sub(1, Ordering::Release);
    }
}

/// How a mapping ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retired {
    /// The validated consumer offset once the mapping was gone: where the next one starts.
    pub final_offset: u64,
    /// Submitted records the consumer had been handed (its page's read offset says how far)
    /// but had not returned: the next consumer receives them again (delivery across a
    /// consumer's end is at-least-once). Taken from the consumer's own page, so a hostile
    /// consumer can only inflate its own count.
    pub redelivered: u64,
}

impl<H: Hooks> Ring<H> {
    fn gate(&self) -> &MappingGate {
        &self.placement().kernel().mapping.0
    }

    /// Enters the hint gate, if it admits a walk for `admit`.
    pub(crate) fn enter_hint_walk(&self, admit: Admit) -> Option<InGate<'_>> {
        let gate = self.gate();
        // Relaxed, then the SeqCst fence: the walker's store (this increment) then load
        // (`attached`), against the retirer's store (`attached`), its SeqCst fence and its load
        // (`walkers`): with a SeqCst fence between each pair, one side sees the other's store.
        gate.walkers.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        // Acquire: pairs with the attach's release store of `attached`, which comes after its
        // stores of the page and of the page's first value.
        let attached = gate.attached.load(Ordering::Acquire);
        let admitted = match admit {
            Admit::Attached => attached != 0,
            Admit::Generation(generation) => attached == generation && generation != 0,
        };
        // Relaxed: stored before `attached` was, and the acquire above orders it; it cannot
        // change while we are in the gate (a retirement waits for us before anything else
        // attaches).
        let page = gate.page.load(Ordering::Relaxed);
        let walk = InGate {
            walkers: &gate.walkers,
            page,
        };
        // Not admitted: dropping `walk` leaves the gate at once.
        admitted.then_some(walk)
    }

    /// Attaches a new mapping's consumer page, sets it to the validated consumer offset, and
    /// returns the mapping's generation and that offset: where its consumer starts.
    ///
    /// # Safety
    ///
    /// `page` points to a consumer page (8 bytes, 8-aligned, readable and writable by the
    /// host) that stays valid until [`retire_consumer_page`](Self::retire_consumer_page) of
    /// the returned generation has returned. No mapping is attached (the previous one was
    /// retired), and no other attach or retirement runs at the same time (the host's lock or
    /// its request order keeps them apart).
    pub unsafe fn attach_consumer_page(&self, page: *mut u8) -> (u64, u64) {
        let gate = self.gate();
        let page = page.cast::<ConsumerPage>();
        // Nothing moves the validated offset while no mapping is attached (every move is a
        // gated hint walk), so this is the previous mapping's final offset.
        let start = self.validated_consumer_offset();
        // SAFETY: the caller's contract: the page is valid, and no walker reads it before the
        // store of `attached` below publishes it.
        unsafe { (*page).consumer_offset.store(start, Ordering::Relaxed) };
        // Relaxed: only attach (serialised by the caller) touches it.
        let generation = gate.last_generation.load(Ordering::Relaxed) + 1;
        gate.last_generation.store(generation, Ordering::Relaxed);
        // Relaxed: published by the release store below.
        gate.page.store(page, Ordering::Relaxed);
        // Release: the page and its first value, to walkers that acquire `attached`.
        gate.attached.store(generation, Ordering::Release);
        (generation, start)
    }

    /// Ends mapping `generation`: one last walk from its page (what its consumer returned
    /// counts), then it is detached, and every walk still in the gate is waited for. Returns
    /// the final offset, where the next mapping starts. After this, nothing reads the page:
    /// the host may free its side of it. Does nothing but report if `generation` is not the
    /// attached one. Spins (with [`Hooks::relax`]) only while producers are inside a walk.
    pub fn retire_consumer_page(&self, generation: u64) -> Retired {
        let gate = self.gate();
        let mut read = 0;
        if let Some(walk) = self.enter_hint_walk(Admit::Generation(generation)) {
            // Acquire: pairs with the consumer's release store of its offset, so its reads of
            // the records below happen before producers reuse their space.
            let hint = walk.page_value(Ordering::Acquire);
            self.advance_consumer_offset(hint);
            // SAFETY: as in `InGate::page_value`.
            // Relaxed: a statistic; any value is safe (it bounds a count, nothing else).
            read = unsafe { (*walk.page).read_offset.load(Ordering::Relaxed) };
            drop(walk);
            // Relaxed: the retirer's store of the store-then-load pair; the SeqCst fence
            // below orders it before the load of `walkers` (module comment).
            let _ =
                gate.attached
                    .compare_exchange(generation, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
        // SeqCst fence: see `enter_hint_walk`.
        fence(Ordering::SeqCst);
        let mut spins = 0u32;
        // Acquire: pairs with each walker's release decrement (the decrements form one
        // release sequence), so their walks happen before we read the final offset below.
        while gate.walkers.load(Ordering::Acquire) != 0 {
            self.hooks().relax(spins);
            spins = spins.wrapping_add(1);
        }
        let final_offset = self.validated_consumer_offset();
        Retired {
            final_offset,
            redelivered: self.submitted_between(final_offset, read),
        }
    }

    /// The attached mapping's generation, if one is attached (statistics, tests).
    pub fn attached_generation(&self) -> Option<u64> {
        // Relaxed: a snapshot.
        match self.gate().attached.load(Ordering::Relaxed) {
            0 => None,
            generation => Some(generation),
        }
    }

    /// What the attached mapping's consumer page says now (untrusted, any value), or the
    /// validated offset while none is attached.
    pub fn consumer_page_offset(&self) -> u64 {
        match self.enter_hint_walk(Admit::Attached) {
            // Relaxed: a snapshot; whoever acts on it validates it first.
            Some(walk) => walk.page_value(Ordering::Relaxed),
            None => self.validated_consumer_offset(),
        }
    }

    /// Submitted records from `from` up to `to` (cut at the producer offset), stopping at the
    /// first LOCKED one (records past it cannot have been handed out).
    fn submitted_between(&self, from: u64, to: u64) -> u64 {
        let data = self.placement().data();
        // Acquire: every header below the producer offset is written.
        let end = data.producer_offset().load(Ordering::Acquire).min(to);
        let mut position = from;
        let mut records = 0;
        while position < end {
            // Acquire: as the consumer's header load.
            let (state, len) = decode(data.header(position).len.load(Ordering::Acquire));
            let size = padded_size(len);
            if state == HeaderState::Locked || size > end - position {
                break;
            }
            if state == HeaderState::Submitted {
                records += 1;
            }
            position += size;
        }
        records
    }

    /// Writes `value` into the attached consumer page, as a hostile consumer process may at
    /// any time.
    #[cfg(any(test, loom))]
    #[doc(hidden)]
    pub fn hostile_store_consumer_page(&self, value: u64) {
        if let Some(walk) = self.enter_hint_walk(Admit::Attached) {
            // SAFETY: as in `InGate::page_value`.
            // Relaxed: hostile writers order nothing.
            unsafe { (*walk.page).consumer_offset.store(value, Ordering::Relaxed) };
        }
    }
}
