//! The arm / check handshake of the asynchronous query.
//!
//! A query waits for the record at the head (the validated consumer offset) to be committed,
//! not merely for `producer > consumer`: a consumer stopped at a LOCKED record is not woken
//! again and again. The host keeps the pending query under its own lock; this module keeps the
//! lock off the producers' path: the armed word holds `head + 1` while a query waits for the
//! record at `head`, and each commit checks it with one load (see `Ring::commit`).
//!
//! The handshake cannot lose a wake-up. The query side stores the armed word, fences, and
//! checks the head; a producer stores the header, fences, and loads the armed word. With
//! SeqCst fences on both sides, at least one of them sees the other's store: either the query
//! sees the commit and completes itself, or the producer sees the armed word and wakes it.
//!
//! A head can also stop being visible as committed: once the validated consumer offset has
//! walked past it, its slot may hold a newer, LOCKED record. So the check also counts a head
//! the validated offset has passed as committed, and a walk that passes an armed head wakes
//! the query (the same store, fence, load pair: the walk's exchange, a SeqCst fence, the load
//! of the armed word). The TLA+ model `RingBufferMP` found this case
//! (`models/ring_buffer/CONFORMANCE.md`).

use crate::producer::{Hooks, Ring};
use crate::record::LOCKED;
use crate::sync::{Ordering, fence};

impl<H: Hooks> Ring<H> {
    /// Whether the record at `head` is committed (submitted or discarded): the validated
    /// consumer offset has passed it (it passes only committed records), or it is published
    /// and its header is not LOCKED.
    pub fn is_committed(&self, head: u64) -> bool {
        let view = self.placement().data();
        // Acquire: a header below the producer offset is written.
        if view.producer_offset().load(Ordering::Acquire) > head {
            // Relaxed: a bit test, and no caller reads the record on the strength of it (the
            // device replies with offsets; the consumer acquires the header itself). The
            // acquire above put the LOCKED store of the record at `head` before this load, so
            // it reads that store or a later one: never a stale, unlocked word. An unlocked
            // word is the head's commit, or a later record's in a reused slot (the slot is
            // reused only once the head is committed and passed): true either way.
            if view.header(head).len.load(Ordering::Relaxed) & LOCKED == 0 {
                return true;
            }
        }
        // A LOCKED header in the head's slot may be a newer record's: the slot is reused only
        // once the validated offset has passed the head, which it does over committed records
        // only. In `arm_query` this load comes after the SeqCst fence: if it misses the walk
        // that passed the head, that walk's own fence and load of the armed word see our
        // arming, and it wakes the query itself (`wake_query_passed`).
        self.validated_consumer_offset() > head
    }

    /// Arms the query for the record at `head` and checks it once more. Returns true if the
    /// head is committed already: the caller then completes the query itself, if
    /// [`disarm_query_for`](Self::disarm_query_for) says it still may. Call with the host's
    /// query lock held.
    pub fn arm_query(&self, head: u64) -> bool {
        // Relaxed store, then the SeqCst fence: the store-load pair of the handshake (see the
        // module comment and `Ring::commit`).
        self.placement()
            .kernel()
            .armed
            .0
            .store(head + 1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.is_committed(head)
    }

    /// Disarms the query if it is armed for `head`; true if it was. Whoever disarms it, the
    /// query side or the producer's wake-up, completes it: call with the host's query lock
    /// held, so exactly one of them does.
    pub fn disarm_query_for(&self, head: u64) -> bool {
        // Relaxed: the host's lock orders the completion; this only decides who completes.
        self.placement()
            .kernel()
            .armed
            .0
            .compare_exchange(head + 1, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Disarms the query whatever it waits for (cancel, close). True if one was armed.
    pub fn disarm_query(&self) -> bool {
        // Relaxed: as for `disarm_query_for`.
        self.placement().kernel().armed.0.swap(0, Ordering::Relaxed) != 0
    }

    /// The head the armed query waits for, if any.
    pub fn armed_head(&self) -> Option<u64> {
        // Relaxed: a snapshot for statistics and tests.
        match self.placement().kernel().armed.0.load(Ordering::Relaxed) {
            0 => None,
            armed => Some(armed - 1),
        }
    }
}
