//! The consumer side: one consumer reads records in order, through its view of the ring.
//!
//! A [`Batch`] is every committed record from the consumer's position up to the first LOCKED
//! one (records are delivered in order, so a record still being written stops the batch).
//! Discarded records are skipped. Payloads are handed out by reference, with no copy; the
//! space of the whole batch is returned with one release store of the consumer offset when
//! the batch is dropped. The consumer keeps a cached copy of the producer offset and reloads
//! it only when the cached view is used up (the idiom of rtrb's head and tail), so a batch
//! touches the producer page at most once.

use core::ops::ControlFlow;

use crate::placement::{DataView, SharedView};
use crate::record::{HeaderState, decode, padded_size};
use crate::sync::Ordering;

/// The one consumer of a ring.
pub struct Consumer {
    view: SharedView,
    /// Where the next record starts; what the consumer page says between batches.
    position: u64,
    /// The producer offset as last loaded: records below it are published.
    cached_producer: u64,
    #[cfg(any(feature = "alloc", test, loom))]
    _memory: Option<alloc::sync::Arc<crate::placement::HeapMemory>>,
    #[cfg(any(feature = "alloc", test, loom))]
    page: Option<alloc::sync::Arc<crate::placement::HeapConsumerPage>>,
}

impl Consumer {
    /// A consumer over `view`, starting where the consumer page says.
    ///
    /// # Safety
    ///
    /// `view` obeys [`SharedView::new`]'s contract, and this consumer is the only one, and the
    /// only writer of the consumer page, for as long as it lives: payloads are lent out until
    /// their batch ends, and a write to the consumer page by anyone else could let producers
    /// reuse them meanwhile.
    pub unsafe fn new(view: SharedView) -> Consumer {
        // Acquire: pairs with the host's release when it set the page (a new mapping).
        let position = view.consumer_offset().load(Ordering::Acquire);
        Consumer {
            view,
            position,
            cached_producer: position,
            #[cfg(any(feature = "alloc", test, loom))]
            _memory: None,
            #[cfg(any(feature = "alloc", test, loom))]
            page: None,
        }
    }

    #[cfg(any(feature = "alloc", test, loom))]
    pub(crate) fn keep_alive(
        mut self,
        memory: alloc::sync::Arc<crate::placement::HeapMemory>,
    ) -> Consumer {
        self._memory = Some(memory);
        self
    }

    #[cfg(any(feature = "alloc", test, loom))]
    pub(crate) fn keep_page(
        mut self,
        page: alloc::sync::Arc<crate::placement::HeapConsumerPage>,
    ) -> Consumer {
        self.page = Some(page);
        self
    }

    /// Stops this consumer and gives back the heap page it used (a heap ring's handover).
    #[cfg(any(feature = "alloc", test, loom))]
    pub(crate) fn into_page(self) -> Option<alloc::sync::Arc<crate::placement::HeapConsumerPage>> {
        self.page
    }

    /// Where the next record starts.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The view this consumer reads.
    pub fn view(&self) -> &SharedView {
        &self.view
    }

    /// Every committed record from the current position up to the first LOCKED one.
    pub fn batch(&mut self) -> Batch<'_> {
        self.batch_up_to(usize::MAX)
    }

    /// Like [`batch`](Self::batch), with at most `max_records` submitted records.
    pub fn batch_up_to(&mut self, max_records: usize) -> Batch<'_> {
        let mut walk = self.walk();
        let start = walk.position;
        let mut records = 0usize;
        while records < max_records {
            match walk.next() {
                Some(found) => records += usize::from(found.submitted),
                None => break,
            }
        }
        self.cached_producer = walk.cached_producer;
        Batch {
            consumer: self,
            start,
            end: walk.position,
            records,
        }
    }

    /// A walk from the consumer's position, with the view's fields and the cached producer
    /// offset in locals (registers), which the consumer takes back when the walk ends.
    #[inline]
    fn walk(&self) -> Walk {
        Walk {
            view: *self.view,
            position: self.position,
            cached_producer: self.cached_producer,
            refreshed: false,
        }
    }

    /// Whether a committed record waits at the consumer's position. Hands nothing out and
    /// returns nothing but the space of discarded records in front of it.
    pub fn has_records(&mut self) -> bool {
        let mut batch = self.batch_up_to(1);
        let any = !batch.is_empty();
        batch.keep_first(0);
        any
    }

    /// Hands every record of one batch to `each`, then returns its space. Returns how many.
    #[inline]
    pub fn consume(&mut self, mut each: impl FnMut(Record<'_>)) -> usize {
        self.consume_while(usize::MAX, |record| {
            each(record);
            ControlFlow::Continue(())
        })
    }

    /// Hands the records of one batch (at most `max_records`) to `each` until it breaks, and
    /// returns the space of the records it handled only: the record it broke on, and every
    /// record after it, is handed out again by the next batch (libbpf's
    /// `ring_buffer__consume` stops at a callback's error the same way). Returns how many
    /// records were handled. Inlined, so that `each` is too and what it keeps stays in
    /// registers.
    #[inline]
    pub fn consume_while(
        &mut self,
        max_records: usize,
        mut each: impl FnMut(Record<'_>) -> ControlFlow<()>,
    ) -> usize {
        // One pass: each header is loaded once, and each submitted record handed out as it
        // is found (`batch_up_to` then `Batch::iter` would load every header twice).
        let mut walk = self.walk();
        let start = walk.position;
        let read_offset = self.view.read_offset();
        let mut handled = 0usize;
        while handled < max_records {
            let Some(found) = walk.next() else {
                break;
            };
            if !found.submitted {
                continue;
            }
            // Relaxed: informative only, as in `Batch::iter` (how far records were handed
            // out); stored before each record is handed out.
            read_offset.store(walk.position, Ordering::Relaxed);
            if each(record_at(&walk.view, found.offset, found.len)).is_break() {
                // Handed out again by the next batch: the space returned ends where it starts.
                walk.position = found.offset;
                break;
            }
            handled += 1;
        }
        self.cached_producer = walk.cached_producer;
        // Dropping the batch returns the space of what was handled (and of the discarded
        // records before the next submitted one).
        drop(Batch {
            consumer: self,
            start,
            end: walk.position,
            records: handled,
        });
        handled
    }
}

/// One pass over the committed records from a position, stopping at the first LOCKED one or
/// at the producer offset (loaded again at most once, when the cached one is reached).
struct Walk {
    view: DataView,
    position: u64,
    cached_producer: u64,
    refreshed: bool,
}

/// A committed record a walk passed.
struct Found {
    offset: u64,
    len: u32,
    /// Submitted; otherwise discarded.
    submitted: bool,
}

impl Walk {
    /// Passes the record at the walk's position, if it is committed and lies inside the
    /// published offsets.
    #[inline(always)]
    fn next(&mut self) -> Option<Found> {
        let position = self.position;
        if position == self.cached_producer {
            if self.refreshed {
                return None;
            }
            self.refreshed = true;
            // Acquire: pairs with the producers' release of the producer offset; every
            // header below the loaded value is written.
            let producer = self.view.producer_offset().load(Ordering::Acquire);
            if producer.wrapping_sub(position) > self.view.capacity().as_u64() {
                // Behind us or more than a ring ahead: not a state producers make.
                return None;
            }
            self.cached_producer = producer;
            if position == producer {
                return None;
            }
        }
        // Acquire: pairs with the commit's release store; the payload is then visible.
        let word = self.view.header(position).len.load(Ordering::Acquire);
        let (state, len) = decode(word);
        if state == HeaderState::Locked {
            return None;
        }
        let size = padded_size(len);
        if size > self.cached_producer - position {
            // A record cannot end past the published offsets; stop rather than trust it.
            return None;
        }
        self.position = position + size;
        Some(Found {
            offset: position,
            len,
            submitted: state == HeaderState::Submitted,
        })
    }
}

/// The submitted record at `offset`, of `len` payload bytes, that a walk found committed and
/// inside the published offsets, lent out for as long as the view is borrowed.
#[inline(always)]
fn record_at(view: &DataView, offset: u64, len: u32) -> Record<'_> {
    #[cfg(loom)]
    view.track_payload(offset, len as usize, false);
    let ptr = view.payload_ptr(offset);
    // SAFETY: a walk found this record committed (its header acquired) and inside the
    // published offsets, so its bytes lie in the view (`index + padded size <= 2 * capacity`).
    // Producers do not write them until the validated consumer offset passes them, which
    // needs the consumer offset to pass them, which happens only when the batch that found
    // them is dropped, after this borrow ends (`Consumer::new`'s contract rules out other
    // writers of the consumer page).
    let payload = unsafe { core::slice::from_raw_parts(ptr, len as usize) };
    Record { offset, payload }
}

impl core::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Consumer")
            .field("position", &self.position)
            .field("cached_producer", &self.cached_producer)
            .finish()
    }
}

/// Committed records lent out by a consumer. Dropping the batch returns their space.
pub struct Batch<'c> {
    consumer: &'c mut Consumer,
    start: u64,
    end: u64,
    records: usize,
}

impl Batch<'_> {
    /// The number of submitted records in the batch (discarded ones are not counted).
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether the batch has no submitted record (it may still skip discarded ones).
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The offset of the batch's first record.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The offset after the batch's last record: the consumer's position once it is dropped.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The submitted records, in order.
    pub fn iter(&self) -> Records<'_> {
        if self.end != self.start {
            // Relaxed: informative only (how far records were handed out, for the host's
            // count of what a consumer that ends now would have delivered twice).
            self.consumer
                .view
                .read_offset()
                .store(self.end, Ordering::Relaxed);
        }
        self.records()
    }

    /// The records, without marking them handed out.
    fn records(&self) -> Records<'_> {
        Records {
            view: &self.consumer.view,
            position: self.start,
            end: self.end,
        }
    }

    /// Cuts the batch after its first `records` submitted records: dropping it then returns
    /// their space only (and that of discarded records before the next submitted one), and
    /// the next batch starts with the first record cut off. `keep_first(0)` returns nothing.
    pub fn keep_first(&mut self, records: usize) {
        if records >= self.records {
            return;
        }
        // Where the first record cut off starts: every record below it was handled.
        let end = self
            .records()
            .nth(records)
            .map_or(self.end, |first_cut| first_cut.offset());
        self.end = end;
        self.records = records;
    }
}

impl<'b> IntoIterator for &'b Batch<'_> {
    type Item = Record<'b>;
    type IntoIter = Records<'b>;
    fn into_iter(self) -> Records<'b> {
        self.iter()
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if self.end != self.start {
            // Release: our reads of the batch's payloads happen before the host, which
            // acquires this value, lets producers reuse their space.
            self.consumer
                .view
                .consumer_offset()
                .store(self.end, Ordering::Release);
            self.consumer.position = self.end;
        }
    }
}

/// One submitted record lent out by a batch: its payload (the record derefs to it) and its
/// offset in the ring.
#[derive(Clone, Copy, Debug)]
pub struct Record<'b> {
    offset: u64,
    payload: &'b [u8],
}

impl<'b> Record<'b> {
    /// The record's offset: where its header starts (what WRITE's reply and QUERY name).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The payload.
    pub fn payload(&self) -> &'b [u8] {
        self.payload
    }
}

impl core::ops::Deref for Record<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.payload
    }
}

/// A batch's submitted records, in order.
pub struct Records<'b> {
    view: &'b SharedView,
    position: u64,
    end: u64,
}

impl<'b> Iterator for Records<'b> {
    type Item = Record<'b>;

    fn next(&mut self) -> Option<Record<'b>> {
        while self.position < self.end {
            // Relaxed: the batch acquired this committed word already, and it cannot change
            // until the batch returns the space.
            let word = self.view.header(self.position).len.load(Ordering::Relaxed);
            let (state, len) = decode(word);
            let offset = self.position;
            self.position += padded_size(len);
            if state == HeaderState::Submitted {
                return Some(record_at(self.view, offset, len));
            }
        }
        None
    }
}
