//! The device: one ring and the requests of `abi.rs` (ARCHITECTURE.md), written once.
//!
//! Its host, the KMDF driver (on Windows, and on Linux on wdk-usersim), implements
//! [`Platform`]: a lock, completing a pending
//! QUERY, handing the consumer view to a caller, a clock, and threads for the generator. It
//! turns each request it receives into a call of [`Device::request`] and each handle it
//! closes into [`Device::close`]; everything else — checking every size and field before
//! anything changes, one mapping at a time, one pending QUERY that completes when the head
//! record is committed, cancel against completion, the generator's records — is here.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

use crate::abi::MAX_GENERATOR_PRODUCERS;
use crate::abi::{
    EmptyRequest, GenerateAction, GenerateReply, GenerateRequest, MapReply, QueryReply,
    QueryRequest, Request, SetEventRequest, StatsReply, Status, Wire, WriteReply, WriteRequest,
    generated,
};
use crate::layout::CacheLine;
use crate::placement::RingPlacement;
use crate::producer::{Hooks, ReserveError, Ring};
use crate::record::padded_size;

// The device's own counters and flags are statistics and control words: they order no ring
// memory, so they use core's atomics even under loom, and `Relaxed` throughout unless said.
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

/// Identifies an open handle (the file object; on Linux one per socket connection). Never
/// sent to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HandleId(pub u64);

/// The consumer view as the caller receives it: three handles valid in the caller's process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ViewHandles {
    /// The consumer page, read-write.
    pub consumer_page: u64,
    /// The producer page, read-only.
    pub producer_page: u64,
    /// The data, read-only, to be mapped twice back to back.
    pub data: u64,
}

/// A fresh consumer page for one mapping, made by [`Platform::map_view`], and the handles its
/// caller maps the view with.
pub struct NewMapping<Page> {
    /// Handles (or descriptor indexes) valid in the caller's process.
    pub handles: ViewHandles,
    /// The host's own address of the new consumer page (8-aligned, zeroed, at least the size
    /// of [`ConsumerPage`](crate::layout::ConsumerPage): in practice a whole page),
    /// readable and writable by the host until [`Platform::unmap_view`] gets `page` back.
    pub page_address: *mut u8,
    /// What the host needs to free its side of the page.
    pub page: Page,
    /// The caller's process id (STATS names the process that holds the mapping).
    pub process_id: u64,
}

/// What a host provides.
///
/// # Safety
///
/// [`with_lock`](Platform::with_lock) must run its closure under mutual exclusion with every
/// other call of it on the same platform (the device keeps state that only the lock guards),
/// and the device never calls it from inside itself. In the kernel it must raise to
/// DISPATCH_LEVEL, since producers take it from DISPATCH_LEVEL when they wake a query.
pub unsafe trait Platform: Sync + Sized {
    /// A QUERY whose reply comes later.
    type PendingQuery: Send;

    /// The host's side of one mapping's consumer page.
    type ConsumerPage: Send;

    /// An event of the caller's that a mapping's QUERYs set (SET_EVENT), referenced by the
    /// device; dropping it lets go of the reference (allowed at DISPATCH_LEVEL, but the
    /// device drops it without the lock).
    type Event: Send;

    /// Runs `f` under the device's lock.
    fn with_lock<R>(&self, f: impl FnOnce() -> R) -> R;

    /// Called under the lock, in the same locked step that takes a pending QUERY out of the
    /// device to complete it (a producer's wake, QUERY's complete-now path, UNMAP or close;
    /// never the cancel path, [`Device::cancel_query`]): makes it no longer cancelable. The
    /// Windows host calls `WdfRequestUnmarkCancelable` here and returns `None` if that returns
    /// `STATUS_CANCELLED`: the cancel routine owns the request then (it takes this same lock,
    /// finds nothing pending and completes it), and the device drops the query without
    /// completing it. Unmarking here, not after the lock is released, is what keeps an Unmark
    /// from touching a request the cancel routine already completed (RingBufferMP.tla takes
    /// and unmarks in one step).
    fn take_query(&self, query: Self::PendingQuery) -> Option<Self::PendingQuery>;

    /// Completes a pending QUERY, taken by [`take_query`](Platform::take_query) or by the
    /// cancel path, with its reply or a status. Called without the lock held.
    fn complete_query(&self, query: Self::PendingQuery, reply: Result<QueryReply, Status>);

    /// References the event `event_handle` names in the caller's process (SET_EVENT). Called
    /// without the lock held, in the caller's context (Windows: `EvtIoInCallerContext`).
    /// [`Status::InvalidParameter`] if it names no event the caller may set.
    fn reference_event(&self, handle: HandleId, event_handle: u64) -> Result<Self::Event, Status>;

    /// Sets `event`. Called under the lock (so that it cannot be let go meanwhile), in the
    /// same locked step that takes the mapping's QUERY to complete it, and when the mapping
    /// ends.
    fn signal_event(&self, event: &Self::Event);

    /// Makes a fresh consumer page (zeroed) and the consumer view available to the caller of
    /// `handle`: handles (or descriptor indexes) valid in its process, the consumer page's
    /// read-write, the producer page's and the data's read-only. Called without the lock
    /// held, in the caller's context. The page is the new mapping's alone: no earlier
    /// consumer may have any access to it.
    fn map_view(&self, handle: HandleId) -> Result<NewMapping<Self::ConsumerPage>, Status>;

    /// The mapping of `handle` has ended and nothing reads `page` any more: free the host's
    /// side of it (the former consumer may keep its own view; nothing reads it). Called
    /// without the lock held.
    fn unmap_view(&self, handle: HandleId, page: Self::ConsumerPage);

    /// Whether `handle` may take the mapping away from whoever holds it (REVOKE): an elevated
    /// handle (the driver's device admits only elevated callers: every handle is).
    fn is_privileged(&self, handle: HandleId) -> bool;

    /// A monotonic clock in nanoseconds, the same one consumers read (for wake latency).
    fn now_ns(&self) -> u64;

    /// Starts `producers` generator threads; thread `i` calls [`Device::run_producer`]`(i)`
    /// and ends when it returns.
    fn start_producers(&self, producers: u32) -> Result<(), Status>;

    /// Waits until every generator thread has returned. Called without the lock held.
    fn join_producers(&self);

    /// Waits about `ns` nanoseconds on a generator thread (rate control).
    fn sleep_ns(&self, ns: u64);

    /// What a producer does while it waits for an earlier producer to publish, or a
    /// generator thread while the ring is full; `spins` counts the waits so far. The default
    /// spins, right in the kernel, where reserve runs at DISPATCH_LEVEL and the producer
    /// waited for cannot be preempted on this processor; a user-mode host with more producer
    /// threads than processors yields after a few spins.
    fn relax(&self, spins: u32) {
        let _ = spins;
        core::hint::spin_loop();
    }

    /// Runs `f` at the IRQL producers reserve at (DISPATCH_LEVEL in the kernel, so that a
    /// producer that waits for an earlier one cannot have preempted it); user mode just calls.
    fn as_producer<R>(&self, f: impl FnOnce() -> R) -> R {
        f()
    }
}

/// How a request ended: a reply of this many bytes written to the output buffer, or pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Completed with a reply of this many bytes.
    Done(usize),
    /// The QUERY is pending; [`Platform::complete_query`] will complete it.
    Pending,
}

/// Who holds the ring's one mapping.
enum MappingState<Page> {
    /// Nobody: a MAP may attach one.
    Unmapped,
    /// A MAP attaching, or an UNMAP or close retiring, the mapping of `handle`: every other
    /// MAP is refused until it is done. `closed`: the handle was closed during a MAP, which
    /// then retires what it attached.
    Changing { handle: HandleId, closed: bool },
    /// `handle` (of process `process`) holds mapping `generation`, whose consumer page is
    /// `page`.
    Mapped {
        handle: HandleId,
        generation: u64,
        page: Page,
        process: u64,
    },
}

/// What only the lock guards.
struct Locked<P: Platform> {
    mapping: MappingState<P::ConsumerPage>,
    pending: Option<(HandleId, P::PendingQuery)>,
    /// A QUERY of the mapping is between its checks and pending (or its reply): a second one
    /// is refused as busy before it changes anything.
    query_in_progress: bool,
    /// The current mapping's event (SET_EVENT), set whenever its QUERY is taken to complete
    /// (not when it is cancelled) and when the mapping ends; taken away when it ends.
    event: Option<P::Event>,
}

impl<P: Platform> Locked<P> {
    /// The generation of the mapping `handle` holds, if it holds it.
    fn generation_of(&self, handle: HandleId) -> Option<u64> {
        match self.mapping {
            MappingState::Mapped {
                handle: holder,
                generation,
                ..
            } if holder == handle => Some(generation),
            _ => None,
        }
    }

    /// Sets the mapping's event, if it has one (under the lock).
    fn signal(&self, platform: &P) {
        if let Some(event) = &self.event {
            platform.signal_event(event);
        }
    }

    /// Takes the pending QUERY of `handle`, disarmed, if it has one.
    fn take_query_of<H: Hooks>(
        &mut self,
        ring: &Ring<H>,
        handle: HandleId,
    ) -> Option<P::PendingQuery> {
        match &self.pending {
            Some((owner, _)) if *owner == handle => {
                ring.disarm_query();
                self.pending.take().map(|(_, query)| query)
            }
            _ => None,
        }
    }
}

/// The device's side of the ring's hooks: the platform, the locked state, the counters.
pub struct DeviceCore<P: Platform> {
    platform: P,
    locked: UnsafeCell<Locked<P>>,
    produced: AtomicU64,
    queries: AtomicU64,
    wakeups: AtomicU64,
    redelivered: AtomicU64,
    generator: Generator,
}

// SAFETY: `locked` is only reached under the platform's lock (`DeviceCore::locked`); the rest
// is atomics and the platform, which is `Sync`; pending queries and pages are `Send`.
unsafe impl<P: Platform> Sync for DeviceCore<P> {}

/// The generator's settings and state, written by GENERATE while it is stopped.
struct Generator {
    /// Who owns the generator: [`IDLE`], [`STARTING`], [`RUNNING`] or [`STOPPING`]. A start
    /// or a stop claims it with a compare-exchange, so that exactly one caller writes the
    /// settings, resets `stop` or joins the threads at a time.
    state: AtomicU32,
    /// Producer threads still producing (a counted run ends by itself).
    active: AtomicU32,
    stop: AtomicBool,
    payload_size: AtomicU32,
    records_per_second: AtomicU64,
    count: AtomicU64,
    /// Records each generator producer submitted, one cache line per producer index, so
    /// that STATS counts them exactly with no shared write per record.
    produced: [CacheLine<AtomicU64>; MAX_GENERATOR_PRODUCERS as usize],
}

impl Default for Generator {
    fn default() -> Generator {
        Generator {
            state: AtomicU32::new(IDLE),
            active: AtomicU32::new(0),
            stop: AtomicBool::new(false),
            payload_size: AtomicU32::new(0),
            records_per_second: AtomicU64::new(0),
            count: AtomicU64::new(0),
            produced: core::array::from_fn(|_| CacheLine(AtomicU64::new(0))),
        }
    }
}

/// [`Generator::state`]: no generator threads to join; a start may claim it.
const IDLE: u32 = 0;
/// A GENERATE start owns the generator: it writes the settings and starts the threads.
const STARTING: u32 = 1;
/// Threads were started (a counted run's threads may all have finished since).
const RUNNING: u32 = 2;
/// A stop owns the generator: it joins the threads; starts and other stops are refused.
const STOPPING: u32 = 3;

impl<P: Platform> DeviceCore<P> {
    /// Runs `f` on the locked state, under the platform's lock.
    fn locked<R>(&self, f: impl FnOnce(&mut Locked<P>) -> R) -> R {
        self.platform.with_lock(|| {
            // SAFETY: the platform's lock excludes every other access (`Platform`'s
            // contract), and no caller of `locked` calls it again inside `f`.
            f(unsafe { &mut *self.locked.get() })
        })
    }
}

impl<P: Platform> Hooks for DeviceCore<P> {
    fn relax(&self, spins: u32) {
        self.platform.relax(spins);
    }

    fn wake_query(&self, ring: &Ring<Self>, head: u64) {
        let query = self.locked(|state| {
            if ring.disarm_query_for(head) {
                let (_, query) = state.pending.take()?;
                // The waiter on the mapping's event wakes first, before the request is taken
                // back from its cancel routine: the record it waits for is committed whatever
                // becomes of the request (if a cancel routine owns it, the request completes
                // as cancelled and the event is set all the same), and the waiter's wake-up
                // starts a step earlier. The request's reply follows.
                state.signal(&self.platform);
                self.platform.take_query(query)
            } else {
                None
            }
        });
        if let Some(query) = query {
            self.wakeups.fetch_add(1, Relaxed);
            self.platform.complete_query(query, Ok(query_reply(ring)));
        }
    }
}

fn query_reply<H: Hooks>(ring: &Ring<H>) -> QueryReply {
    QueryReply {
        size: QueryReply::SIZE,
        reserved: 0,
        producer_offset: ring.producer_offset(),
        consumer_offset: ring.validated_consumer_offset(),
        dropped: ring.dropped(),
    }
}

/// The device: a ring and the requests on it.
pub struct Device<P: Platform> {
    ring: Ring<DeviceCore<P>>,
}

impl<P: Platform> Device<P> {
    /// A device with an empty ring in `placement`.
    ///
    /// # Safety
    ///
    /// As [`Ring::new`]: the placement's memory is valid and used by this device alone for
    /// as long as it lives.
    pub unsafe fn new(placement: RingPlacement, platform: P) -> Device<P> {
        let core = DeviceCore {
            platform,
            locked: UnsafeCell::new(Locked {
                mapping: MappingState::Unmapped,
                pending: None,
                query_in_progress: false,
                event: None,
            }),
            produced: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            wakeups: AtomicU64::new(0),
            redelivered: AtomicU64::new(0),
            generator: Generator::default(),
        };
        // SAFETY: forwarded from this function's contract.
        Device {
            ring: unsafe { Ring::new(placement, core) },
        }
    }

    /// The ring (for hosts and tests).
    pub fn ring(&self) -> &Ring<DeviceCore<P>> {
        &self.ring
    }

    /// The platform.
    pub fn platform(&self) -> &P {
        &self.ring.hooks().platform
    }

    fn core(&self) -> &DeviceCore<P> {
        self.ring.hooks()
    }

    /// Handles one request from `handle`: `input` is the request's bytes, the reply goes to
    /// the start of `output`. A QUERY that cannot complete at once is turned into a pending
    /// one by `pend` (Windows: `WdfRequestMarkCancelableEx`), under the lock. Every size and
    /// field is checked before anything changes; a failed request changes nothing.
    pub fn request(
        &self,
        handle: HandleId,
        request: Request,
        input: &[u8],
        output: &mut [u8],
        pend: impl FnOnce() -> Result<P::PendingQuery, Status>,
    ) -> Result<Outcome, Status> {
        match request {
            Request::Map => self.map(handle, input, output),
            Request::Unmap => self.unmap(handle, input),
            Request::Query => self.query(handle, input, output, pend),
            Request::Write => self.write(input, output),
            Request::Stats => self.stats(input, output),
            Request::Generate => self.generate(input, output),
            Request::Revoke => self.revoke(handle, input),
            Request::SetEvent => self.set_event(handle, input),
        }
    }

    /// MAP: attaches a fresh consumer page for `handle`'s process, starting at the validated
    /// consumer offset, which the reply carries (`models/ring_buffer/ConsumerHandover.tla`,
    /// `Map`).
    fn map(&self, handle: HandleId, input: &[u8], output: &mut [u8]) -> Result<Outcome, Status> {
        EmptyRequest::read_exact(input)?;
        fits::<MapReply>(output)?;
        let core = self.core();
        core.locked(|state| {
            if !matches!(state.mapping, MappingState::Unmapped) {
                return Err(Status::SharingViolation);
            }
            state.mapping = MappingState::Changing {
                handle,
                closed: false,
            };
            Ok(())
        })?;
        let new = match core.platform.map_view(handle) {
            Ok(new) => new,
            Err(status) => {
                core.locked(|state| state.mapping = MappingState::Unmapped);
                return Err(status);
            }
        };
        // SAFETY: `map_view`'s contract keeps the page valid until `unmap_view` gets it back,
        // which happens only after `retire_consumer_page` of this generation (`end_mapping`,
        // or below); the previous mapping was retired before the state went `Unmapped`, and
        // the `Changing` state keeps every other attach and retirement out meanwhile.
        let (generation, start) = unsafe { self.ring.attach_consumer_page(new.page_address) };
        let page = core.locked(|state| {
            let closed = matches!(state.mapping, MappingState::Changing { closed: true, .. });
            if closed {
                return Some(new.page);
            }
            state.mapping = MappingState::Mapped {
                handle,
                generation,
                page: new.page,
                process: new.process_id,
            };
            None
        });
        if let Some(page) = page {
            // The handle was closed while we attached: end the mapping at once.
            self.retire(handle, generation, page);
            return Err(Status::Cancelled);
        }
        let reply = MapReply {
            size: MapReply::SIZE,
            reserved: 0,
            capacity: self.ring.capacity().as_u64(),
            consumer_offset: start,
            consumer_page_handle: new.handles.consumer_page,
            producer_page_handle: new.handles.producer_page,
            data_handle: new.handles.data,
        };
        Ok(Outcome::Done(reply.write_to(output)?))
    }

    /// Retires mapping `generation` of `handle` (its state is `Changing` already): the last
    /// walk from its page, the wait for walks in flight, then the page goes back to the host
    /// and the ring is free to map (`ConsumerHandover.tla`, `Retire*`).
    fn retire(&self, handle: HandleId, generation: u64, page: P::ConsumerPage) {
        let core = self.core();
        let retired = self.ring.retire_consumer_page(generation);
        core.platform.unmap_view(handle, page);
        core.redelivered.fetch_add(retired.redelivered, Relaxed);
        core.locked(|state| state.mapping = MappingState::Unmapped);
    }

    /// Ends `handle`'s mapping, if it holds it, and cancels its pending QUERY. `None` if it
    /// holds no mapping (its QUERY, if any, is still cancelled).
    fn end_mapping(&self, handle: HandleId) -> Option<()> {
        let core = self.core();
        let (mapping, query, event) = core.locked(|state| {
            let query = state
                .take_query_of(&self.ring, handle)
                .and_then(|query| core.platform.take_query(query));
            let mut event = None;
            let mapping = match core::mem::replace(&mut state.mapping, MappingState::Unmapped) {
                MappingState::Mapped {
                    handle: holder,
                    generation,
                    page,
                    ..
                } if holder == handle => {
                    state.mapping = MappingState::Changing {
                        handle,
                        closed: false,
                    };
                    // Its waiter learns that the mapping ended; the event goes with it.
                    state.signal(&core.platform);
                    event = state.event.take();
                    Some((generation, page))
                }
                MappingState::Changing {
                    handle: holder,
                    closed,
                } => {
                    // A MAP of this handle in progress retires what it attaches.
                    state.mapping = MappingState::Changing {
                        handle: holder,
                        closed: closed || holder == handle,
                    };
                    None
                }
                other => {
                    state.mapping = other;
                    None
                }
            };
            (mapping, query, event)
        });
        // Let go of outside the lock.
        drop(event);
        if let Some(query) = query {
            core.platform.complete_query(query, Err(Status::Cancelled));
        }
        let (generation, page) = mapping?;
        self.retire(handle, generation, page);
        Some(())
    }

    /// UNMAP: synchronous; when it returns, another handle may MAP, and nothing the former
    /// consumer writes into its old page reaches the ring.
    fn unmap(&self, handle: HandleId, input: &[u8]) -> Result<Outcome, Status> {
        EmptyRequest::read_exact(input)?;
        let holds = self
            .core()
            .locked(|state| state.generation_of(handle).is_some());
        if !holds {
            return Err(Status::InvalidDeviceState);
        }
        self.end_mapping(handle).ok_or(Status::InvalidDeviceState)?;
        Ok(Outcome::Done(0))
    }

    /// REVOKE: an administrator takes the mapping away from whoever holds it (a stopped
    /// holder would otherwise block every consumer): ended as UNMAP ends it, its QUERY
    /// cancelled; the holder's later QUERYs are refused as from any other handle, and the
    /// next MAP works. Only a privileged handle ([`Platform::is_privileged`]) may.
    fn revoke(&self, handle: HandleId, input: &[u8]) -> Result<Outcome, Status> {
        EmptyRequest::read_exact(input)?;
        if !self.core().platform.is_privileged(handle) {
            return Err(Status::AccessDenied);
        }
        let holder = self.core().locked(|state| match state.mapping {
            MappingState::Mapped { handle, .. } => Some(handle),
            _ => None,
        });
        let holder = holder.ok_or(Status::InvalidDeviceState)?;
        self.end_mapping(holder).ok_or(Status::InvalidDeviceState)?;
        Ok(Outcome::Done(0))
    }

    /// QUERY: only from the handle that holds the mapping (anything else is refused with
    /// [`Status::AccessDenied`] and changes nothing), one at a time (else
    /// [`Status::DeviceBusy`], changing nothing): returns the space up to the offset it
    /// carries, then completes at once if the head record is committed, or pends until it is.
    fn query(
        &self,
        handle: HandleId,
        input: &[u8],
        output: &mut [u8],
        pend: impl FnOnce() -> Result<P::PendingQuery, Status>,
    ) -> Result<Outcome, Status> {
        let request = QueryRequest::read_exact(input)?;
        fits::<QueryReply>(output)?;
        let core = self.core();
        let generation = core.locked(|state| {
            let generation = state.generation_of(handle).ok_or(Status::AccessDenied)?;
            if state.pending.is_some() || state.query_in_progress {
                return Err(Status::DeviceBusy);
            }
            state.query_in_progress = true;
            Ok(generation)
        })?;
        // Every check passed: from here on the QUERY counts.
        core.queries.fetch_add(1, Relaxed);
        // Return the space the consumer says it has read (validated), without the lock: a
        // walk may wake an armed query, which takes the lock.
        let Some(head) = self
            .ring
            .advance_consumer_offset_for(generation, request.consumer_offset)
        else {
            // The mapping ended meanwhile (UNMAP or close on another thread).
            core.locked(|state| state.query_in_progress = false);
            return Err(Status::Cancelled);
        };
        if self.ring.is_committed(head) {
            core.locked(|state| {
                state.query_in_progress = false;
                // Its reply is on its way at once: a waiter on the event wakes too.
                state.signal(&core.platform);
            });
            return Ok(Outcome::Done(query_reply(&self.ring).write_to(output)?));
        }
        let complete_now = core.locked(|state| {
            state.query_in_progress = false;
            if state.generation_of(handle) != Some(generation) {
                return Err(Status::Cancelled);
            }
            let query = pend()?;
            if self.ring.arm_query(head) && self.ring.disarm_query_for(head) {
                // Committed meanwhile: complete it ourselves, now that it is pending (taken
                // back under this lock, so a cancel routine that already runs owns it).
                let query = core.platform.take_query(query);
                if query.is_some() {
                    state.signal(&core.platform);
                }
                return Ok(query);
            }
            state.pending = Some((handle, query));
            Ok(None)
        })?;
        if let Some(query) = complete_now {
            core.platform
                .complete_query(query, Ok(query_reply(&self.ring)));
        }
        Ok(Outcome::Pending)
    }

    /// SET_EVENT: gives the mapping of `handle` an event (or takes it away, with handle 0)
    /// that its QUERYs set when they complete, so that its consumer can wait on the event,
    /// a wake-up with no request completion in its way. Only the handle that holds the
    /// mapping may ([`Status::AccessDenied`] otherwise, changing nothing); the event is
    /// referenced before anything changes ([`Status::InvalidParameter`] if it is none).
    fn set_event(&self, handle: HandleId, input: &[u8]) -> Result<Outcome, Status> {
        let request = SetEventRequest::read_exact(input)?;
        let core = self.core();
        let generation = core
            .locked(|state| state.generation_of(handle))
            .ok_or(Status::AccessDenied)?;
        let event = match request.event_handle {
            0 => None,
            event_handle => Some(core.platform.reference_event(handle, event_handle)?),
        };
        let replaced = core.locked(|state| {
            if state.generation_of(handle) != Some(generation) {
                // The mapping ended meanwhile: nothing changes.
                return Err((Status::Cancelled, event));
            }
            Ok(core::mem::replace(&mut state.event, event))
        });
        // Let go of outside the lock: the event replaced, or the one refused.
        match replaced {
            Ok(old) => {
                drop(old);
                Ok(Outcome::Done(0))
            }
            Err((status, refused)) => {
                drop(refused);
                Err(status)
            }
        }
    }

    /// Takes the pending QUERY if `is_it` says it is the one being cancelled, and disarms it.
    /// The host completes it with [`Status::Cancelled`] (the Windows cancel routine
    /// completes the request it is given in any case). `None` if it was not pending (a
    /// completion won the race).
    pub fn cancel_query(
        &self,
        is_it: impl FnOnce(&P::PendingQuery) -> bool,
    ) -> Option<P::PendingQuery> {
        self.core().locked(|state| match &state.pending {
            Some((_, query)) if is_it(query) => {
                self.ring.disarm_query();
                state.pending.take().map(|(_, query)| query)
            }
            _ => None,
        })
    }

    /// The handle is closed (or its process died): end its mapping as UNMAP does, and
    /// complete its pending QUERY with [`Status::Cancelled`].
    pub fn close(&self, handle: HandleId) {
        let _ = self.end_mapping(handle);
    }

    fn write(&self, input: &[u8], output: &mut [u8]) -> Result<Outcome, Status> {
        let (header, payload) = WriteRequest::parse(input)?;
        fits::<WriteReply>(output)?;
        if padded_size(header.length) > self.ring.capacity().as_u64() {
            return Err(Status::InvalidParameter);
        }
        let offset = self.core().platform.as_producer(|| {
            let mut reservation = self.ring.reserve(payload.len()).map_err(reserve_status)?;
            reservation.payload().copy_from_slice(payload);
            let offset = reservation.offset();
            reservation.submit();
            Ok(offset)
        })?;
        self.core().produced.fetch_add(1, Relaxed);
        let reply = WriteReply {
            size: WriteReply::SIZE,
            reserved: 0,
            offset,
        };
        Ok(Outcome::Done(reply.write_to(output)?))
    }

    /// The STATS reply, as a host or test wants it.
    pub fn stats_reply(&self) -> StatsReply {
        let core = self.core();
        let mapping_process = core.locked(|state| match state.mapping {
            MappingState::Mapped { process, .. } => Some(process),
            _ => None,
        });
        StatsReply {
            size: StatsReply::SIZE,
            mapped: mapping_process.is_some() as u32,
            capacity: self.ring.capacity().as_u64(),
            producer_offset: self.ring.producer_offset(),
            reserve_offset: self.ring.reserve_offset(),
            consumer_offset: self.ring.validated_consumer_offset(),
            consumer_page_offset: self.ring.consumer_page_offset(),
            produced: core.produced.load(Relaxed)
                + core
                    .generator
                    .produced
                    .iter()
                    .map(|line| line.0.load(Relaxed))
                    .sum::<u64>(),
            discarded: self.ring.discarded(),
            dropped: self.ring.dropped(),
            queries: core.queries.load(Relaxed),
            wakeups: core.wakeups.load(Relaxed),
            generator_producers: core.generator.active.load(Relaxed),
            reserved: 0,
            redelivered: core.redelivered.load(Relaxed),
            consumed: self.ring.consumed(),
            mapping_process: mapping_process.unwrap_or(0),
        }
    }

    fn stats(&self, input: &[u8], output: &mut [u8]) -> Result<Outcome, Status> {
        EmptyRequest::read_exact(input)?;
        fits::<StatsReply>(output)?;
        Ok(Outcome::Done(self.stats_reply().write_to(output)?))
    }

    fn generate(&self, input: &[u8], output: &mut [u8]) -> Result<Outcome, Status> {
        let request = GenerateRequest::read_exact(input)?;
        fits::<GenerateReply>(output)?;
        let generator = &self.core().generator;
        match request.action() {
            GenerateAction::Start => {
                if padded_size(request.payload_size) > self.ring.capacity().as_u64() {
                    return Err(Status::InvalidParameter);
                }
                self.claim_start()?;
                generator.stop.store(false, Relaxed);
                generator.payload_size.store(request.payload_size, Relaxed);
                generator
                    .records_per_second
                    .store(request.records_per_second, Relaxed);
                generator.count.store(request.count, Relaxed);
                generator.active.store(request.producers, Relaxed);
                // The settings above reach the threads through the platform's thread start,
                // which orders everything before it.
                if let Err(status) = self.core().platform.start_producers(request.producers) {
                    // Threads that did start stop and are joined before the generator is free.
                    generator.stop.store(true, Relaxed);
                    self.core().platform.join_producers();
                    generator.active.store(0, Relaxed);
                    // Release: the next owner, which claims with Acquire, sees the threads
                    // joined and the words above written.
                    generator.state.store(IDLE, Release);
                    return Err(status);
                }
                // Release: a stop that claims RUNNING with Acquire sees the settings and the
                // threads' start (it joins them).
                generator.state.store(RUNNING, Release);
            }
            GenerateAction::Stop => {
                // Acquire on success: the stop sees the start's writes (its threads are in the
                // platform's list to join); the failure orderings only pick the answer.
                match generator
                    .state
                    .compare_exchange(RUNNING, STOPPING, Acquire, Acquire)
                {
                    Ok(_) => self.join_claimed(),
                    // Stopped already: nothing to do, and stopping is idempotent.
                    Err(IDLE) => {}
                    // A start or another stop is under way: this one neither joins nor waits.
                    Err(_) => return Err(Status::DeviceBusy),
                }
            }
        }
        let reply = GenerateReply {
            size: GenerateReply::SIZE,
            producers: generator.active.load(Relaxed),
        };
        Ok(Outcome::Done(reply.write_to(output)?))
    }

    /// Makes this GENERATE start the generator's owner ([`STARTING`]): from [`IDLE`], or from
    /// [`RUNNING`] once every thread of a counted run has finished (they are joined first).
    /// A generator still producing, or one being started or stopped, is refused.
    fn claim_start(&self) -> Result<(), Status> {
        let generator = &self.core().generator;
        // Acquire on success: the previous owner's release (threads joined, words written)
        // comes before this start's writes. The failure ordering only picks the answer.
        match generator
            .state
            .compare_exchange(IDLE, STARTING, Acquire, Relaxed)
        {
            Ok(_) => return Ok(()),
            Err(RUNNING) => {}
            Err(_) => return Err(Status::InvalidDeviceState),
        }
        // RUNNING: a counted run may have ended by itself. `active` only falls while RUNNING;
        // the first load spares a running generator the claim below.
        if generator.active.load(Relaxed) != 0 {
            return Err(Status::InvalidDeviceState);
        }
        // Claim the finished run as a stop would (Acquire as there), so that no stop joins
        // and no other start resets `stop` meanwhile.
        if generator
            .state
            .compare_exchange(RUNNING, STOPPING, Acquire, Relaxed)
            .is_err()
        {
            return Err(Status::InvalidDeviceState);
        }
        // Checked again now that it is ours: between the first load and the claim, a stop
        // and a new start may have run (the RUNNING claimed is then a new, producing run).
        if generator.active.load(Relaxed) != 0 {
            // Release: hands the run back as it was, to the next claimer's Acquire.
            generator.state.store(RUNNING, Release);
            return Err(Status::InvalidDeviceState);
        }
        generator.stop.store(true, Relaxed);
        self.core().platform.join_producers();
        // Still owned: STOPPING becomes STARTING without a window for anyone else (only the
        // owner writes the state outside a compare-exchange).
        generator.state.store(STARTING, Relaxed);
        Ok(())
    }

    /// Joins the generator's threads, which this caller claimed ([`STOPPING`]), and frees it.
    fn join_claimed(&self) {
        let generator = &self.core().generator;
        generator.stop.store(true, Relaxed);
        self.core().platform.join_producers();
        // Every thread has returned: none is producing (a start that failed half-way set
        // `active` to threads that never ran).
        generator.active.store(0, Relaxed);
        // Release: the next owner, which claims with Acquire, sees the threads joined.
        generator.state.store(IDLE, Release);
    }

    /// Stops the generator, if it runs, and waits for its threads (device removal, or a host
    /// whose thread start failed). Only a running generator is joined here: during a GENERATE
    /// start this sets `stop` and leaves the joining to that start's failure path; a GENERATE
    /// stop under way joins by itself (removal comes after every request has ended).
    pub fn stop_generator(&self) {
        let generator = &self.core().generator;
        generator.stop.store(true, Relaxed);
        // Acquire on success, as GENERATE stop's claim; a failure changes nothing.
        if generator
            .state
            .compare_exchange(RUNNING, STOPPING, Acquire, Relaxed)
            .is_ok()
        {
            self.join_claimed();
        }
    }

    /// The body of generator thread `producer`: submits records until it has submitted
    /// `count` of them (if a count was given) or the generator is stopped. A full ring is a
    /// dropped record, counted by the ring; the producer then retries the same sequence
    /// number after a short pause, so sequence numbers stay gapless.
    pub fn run_producer(&self, producer: u32) {
        let core = self.core();
        let generator = &core.generator;
        let payload_size = generator.payload_size.load(Relaxed) as usize;
        let per_second = generator.records_per_second.load(Relaxed);
        let count = generator.count.load(Relaxed);
        let interval_ns = 1_000_000_000u64.checked_div(per_second).unwrap_or(0);
        let mut sequence = 0u64;
        // This thread's own counter line: one plain store per record, no shared write.
        let produced = &generator.produced[producer as usize % generator.produced.len()].0;
        let mut full_waits = 0u32;
        let mut next_due = core.platform.now_ns();
        while (count == 0 || sequence < count) && !generator.stop.load(Relaxed) {
            if interval_ns != 0 {
                let now = core.platform.now_ns();
                if now < next_due {
                    core.platform.sleep_ns(next_due - now);
                }
                next_due += interval_ns;
            }
            let submitted = core
                .platform
                .as_producer(|| match self.ring.reserve(payload_size) {
                    Ok(mut reservation) => {
                        generated::fill(
                            reservation.payload(),
                            producer as u16,
                            sequence,
                            core.platform.now_ns(),
                        );
                        reservation.submit();
                        true
                    }
                    Err(_) => false,
                });
            if submitted {
                sequence += 1;
                // Relaxed load and store, not a read-modify-write: this thread is the line's
                // only writer while it runs (the thread that used index `producer` before was
                // joined before this one started), and STATS only reads it.
                produced.store(produced.load(Relaxed) + 1, Relaxed);
            } else {
                // The ring is full: wait for the consumer, briefly at first, then backing off
                // to at most a millisecond between tries, so that a ring nobody consumes
                // costs next to no CPU.
                full_waits = full_waits.saturating_add(1);
                if full_waits < 256 {
                    core.platform.relax(full_waits);
                } else {
                    core.platform.sleep_ns(full_ring_pause_ns(full_waits));
                }
                continue;
            }
            full_waits = 0;
        }
        generator.active.fetch_sub(1, Relaxed);
    }
}

/// How long a generator producer sleeps after `full_waits` tries found the ring full (256 or
/// more): 20 µs, doubling every 16 tries, up to 1 ms.
fn full_ring_pause_ns(full_waits: u32) -> u64 {
    let doublings = ((full_waits - 256) / 16).min(6);
    (20_000u64 << doublings).min(1_000_000)
}

fn fits<T: Wire>(output: &[u8]) -> Result<(), Status> {
    if output.len() < T::SIZE as usize {
        Err(Status::BufferTooSmall)
    } else {
        Ok(())
    }
}

fn reserve_status(error: ReserveError) -> Status {
    match error {
        ReserveError::Full => Status::InsufficientResources,
        ReserveError::Empty
        | ReserveError::TooLong { .. }
        | ReserveError::LargerThanRing { .. } => Status::InvalidParameter,
    }
}
