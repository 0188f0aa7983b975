//! Unit tests of the device logic against a test platform.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::vec::Vec;

use crate::abi::{
    EmptyRequest, GenerateRequest, MapReply, QueryReply, QueryRequest, Request, SetEventRequest,
    StatsReply, Status, Wire, WriteRequest,
};
use crate::device::{Device, HandleId, NewMapping, Outcome, Platform, ViewHandles};
use crate::layout::Capacity;
use crate::placement::HeapRing;

#[derive(Default)]
struct TestPlatform {
    lock: Mutex<()>,
    completed: Mutex<Vec<(u32, Result<QueryReply, Status>)>>,
    unmapped: Mutex<Vec<HandleId>>,
    started: Mutex<Vec<u32>>,
    /// Every consumer page made, in order: a test may keep writing an old one, as a former
    /// consumer's process may.
    pages: Mutex<Vec<Arc<[AtomicU64; 2]>>>,
    /// Calls of `join_producers` so far.
    joins: AtomicU32,
    /// While set, the first `join_producers` waits (a stop that is still joining).
    hold_first_join: AtomicBool,
    /// Queries passed to `take_query`, in order.
    taken: Mutex<Vec<u32>>,
    /// Queries whose cancel routine already owns them: `take_query` refuses them.
    cancel_owns: Mutex<Vec<u32>>,
    /// Events by handle (SET_EVENT names them): a handle not here is no event.
    events: Mutex<Vec<(u64, Arc<TestEvent>)>>,
}

/// An event a test made: how often it was set, and how many references the device holds.
#[derive(Default)]
struct TestEvent {
    sets: AtomicU32,
    references: AtomicU32,
}

/// The device's reference to a [`TestEvent`]; dropping it lets go of it.
struct EventReference(Arc<TestEvent>);

impl Drop for EventReference {
    fn drop(&mut self) {
        // SeqCst: test counters, read by the test thread.
        self.0.references.fetch_sub(1, Ordering::SeqCst);
    }
}

// SAFETY: `with_lock` runs its closure under a mutex.
unsafe impl Platform for TestPlatform {
    type PendingQuery = u32;
    type ConsumerPage = Arc<[AtomicU64; 2]>;
    type Event = EventReference;
    fn with_lock<R>(&self, f: impl FnOnce() -> R) -> R {
        let _guard = self.lock.lock().unwrap();
        f()
    }
    fn reference_event(
        &self,
        _handle: HandleId,
        event_handle: u64,
    ) -> Result<EventReference, Status> {
        let events = self.events.lock().unwrap();
        let (_, event) = events
            .iter()
            .find(|(h, _)| *h == event_handle)
            .ok_or(Status::InvalidParameter)?;
        // SeqCst: test counters.
        event.references.fetch_add(1, Ordering::SeqCst);
        Ok(EventReference(event.clone()))
    }
    fn signal_event(&self, event: &EventReference) {
        assert!(
            self.lock.try_lock().is_err(),
            "signal_event runs under the device lock"
        );
        // SeqCst: test counters.
        event.0.sets.fetch_add(1, Ordering::SeqCst);
    }
    fn take_query(&self, query: u32) -> Option<u32> {
        assert!(
            self.lock.try_lock().is_err(),
            "take_query runs under the device lock"
        );
        self.taken.lock().unwrap().push(query);
        // A query the cancel routine owns (it was invoked and waits for the lock).
        (!self.cancel_owns.lock().unwrap().contains(&query)).then_some(query)
    }
    fn complete_query(&self, query: u32, reply: Result<QueryReply, Status>) {
        self.completed.lock().unwrap().push((query, reply));
    }
    fn map_view(&self, _handle: HandleId) -> Result<NewMapping<Arc<[AtomicU64; 2]>>, Status> {
        let page = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        self.pages.lock().unwrap().push(page.clone());
        Ok(NewMapping {
            handles: ViewHandles {
                consumer_page: 10,
                producer_page: 11,
                data: 12,
            },
            // Two `AtomicU64`s are a consumer page's layout (consumer offset, read offset);
            // written through atomics only.
            page_address: Arc::as_ptr(&page).cast_mut().cast(),
            page,
            process_id: 4242,
        })
    }
    fn unmap_view(&self, handle: HandleId, _page: Arc<[AtomicU64; 2]>) {
        self.unmapped.lock().unwrap().push(handle);
    }
    fn is_privileged(&self, handle: HandleId) -> bool {
        handle == ADMIN
    }
    fn now_ns(&self) -> u64 {
        7
    }
    fn start_producers(&self, producers: u32) -> Result<(), Status> {
        self.started.lock().unwrap().push(producers);
        Ok(())
    }
    fn join_producers(&self) {
        // SeqCst: a test flag and counter, read by the test thread that watches this one.
        if self.joins.fetch_add(1, Ordering::SeqCst) == 0 {
            while self.hold_first_join.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
        }
    }
    fn sleep_ns(&self, _ns: u64) {}
}

/// A device over heap memory (the HeapRing's memory is borrowed for the placement).
fn device() -> (Device<TestPlatform>, HeapRing, crate::Consumer) {
    let (heap, consumer) = HeapRing::new(Capacity::new(4096).unwrap(), ());
    // SAFETY: the heap ring's memory outlives the device (returned together, and the test
    // never uses the heap ring's own producer side); the device is its only producer side.
    let device = unsafe { Device::new(*heap.placement(), TestPlatform::default()) };
    (device, heap, consumer)
}

const A: HandleId = HandleId(1);
const B: HandleId = HandleId(2);
/// The one handle `TestPlatform` calls privileged.
const ADMIN: HandleId = HandleId(99);

fn call(
    device: &Device<TestPlatform>,
    handle: HandleId,
    request: Request,
    input: &[u8],
    id: u32,
) -> (Result<Outcome, Status>, Vec<u8>) {
    let mut output = vec![0u8; 128];
    let result = device.request(handle, request, input, &mut output, || Ok(id));
    (result, output)
}

/// A QUERY from `handle` for offset 0 that must pend; `id` names the pending request.
fn pend_query(device: &Device<TestPlatform>, handle: HandleId, id: u32) {
    let (result, _) = call(
        device,
        handle,
        Request::Query,
        QueryRequest::new(0).as_bytes(),
        id,
    );
    assert_eq!(result, Ok(Outcome::Pending));
}

/// MAP from `handle`, which must succeed; returns the reply.
fn map(device: &Device<TestPlatform>, handle: HandleId) -> MapReply {
    let (result, output) = call(
        device,
        handle,
        Request::Map,
        EmptyRequest::new().as_bytes(),
        0,
    );
    assert_eq!(result, Ok(Outcome::Done(MapReply::SIZE as usize)));
    MapReply::read_exact(&output[..MapReply::SIZE as usize]).unwrap()
}

/// The consumer page of the `n`th MAP (0 first), as its consumer's process sees it.
fn page(device: &Device<TestPlatform>, n: usize) -> Arc<[AtomicU64; 2]> {
    device.platform().pages.lock().unwrap()[n].clone()
}

/// A device with `A` mapped.
fn mapped_device() -> (Device<TestPlatform>, HeapRing, crate::Consumer) {
    let (device, heap, consumer) = device();
    map(&device, A);
    (device, heap, consumer)
}

fn write(device: &Device<TestPlatform>, payload: &[u8]) -> Result<Outcome, Status> {
    let mut input = WriteRequest::new(payload.len() as u32).as_bytes().to_vec();
    input.extend_from_slice(payload);
    call(device, A, Request::Write, &input, 0).0
}

fn stats(device: &Device<TestPlatform>) -> StatsReply {
    let (result, output) = call(device, A, Request::Stats, EmptyRequest::new().as_bytes(), 0);
    assert_eq!(result, Ok(Outcome::Done(StatsReply::SIZE as usize)));
    StatsReply::read_exact(&output[..StatsReply::SIZE as usize]).unwrap()
}

#[test]
fn one_mapping_at_a_time() {
    let (device, _heap, _consumer) = device();
    let map = EmptyRequest::new();
    let (result, output) = call(&device, A, Request::Map, map.as_bytes(), 0);
    assert_eq!(result, Ok(Outcome::Done(MapReply::SIZE as usize)));
    let reply = MapReply::read_exact(&output[..MapReply::SIZE as usize]).unwrap();
    assert_eq!(
        (
            reply.capacity,
            reply.consumer_page_handle,
            reply.data_handle
        ),
        (4096, 10, 12)
    );
    assert_eq!(
        call(&device, B, Request::Map, map.as_bytes(), 0).0,
        Err(Status::SharingViolation)
    );
    assert_eq!(
        call(&device, B, Request::Unmap, map.as_bytes(), 0).0,
        Err(Status::InvalidDeviceState)
    );
    device.close(A);
    assert_eq!(*device.platform().unmapped.lock().unwrap(), [A]);
    assert!(matches!(
        call(&device, B, Request::Map, map.as_bytes(), 0).0,
        Ok(Outcome::Done(_))
    ));
    assert_eq!(
        call(&device, B, Request::Unmap, map.as_bytes(), 0).0,
        Ok(Outcome::Done(0))
    );
}

#[test]
fn a_query_pends_on_an_empty_ring_and_the_next_write_completes_it() {
    let (device, _heap, _consumer) = mapped_device();
    let query = QueryRequest::new(0);
    assert_eq!(
        call(&device, A, Request::Query, query.as_bytes(), 5).0,
        Ok(Outcome::Pending)
    );
    assert_eq!(
        call(&device, A, Request::Query, query.as_bytes(), 6).0,
        Err(Status::DeviceBusy),
        "one pending query per ring"
    );
    assert_eq!(
        call(&device, B, Request::Query, query.as_bytes(), 6).0,
        Err(Status::AccessDenied),
        "only the mapping queries"
    );
    assert_eq!(write(&device, b"wake"), Ok(Outcome::Done(16)));
    let completed = device.platform().completed.lock().unwrap().clone();
    assert_eq!(completed.len(), 1);
    let (id, reply) = completed[0];
    assert_eq!(id, 5);
    let reply = reply.unwrap();
    assert_eq!(
        (reply.producer_offset, reply.consumer_offset, reply.dropped),
        (16, 0, 0)
    );
    assert_eq!(stats(&device).wakeups, 1);
    assert_eq!(device.ring().armed_head(), None);
}

#[test]
fn a_query_on_a_committed_head_completes_at_once_and_returns_space() {
    let (device, _heap, _consumer) = mapped_device();
    write(&device, b"one").unwrap();
    write(&device, b"two").unwrap();
    let (result, output) = call(
        &device,
        A,
        Request::Query,
        QueryRequest::new(0).as_bytes(),
        1,
    );
    assert_eq!(result, Ok(Outcome::Done(QueryReply::SIZE as usize)));
    let reply = QueryReply::read_exact(&output[..32]).unwrap();
    assert_eq!(reply.producer_offset, 32);
    // The consumer says it read the first record: its space is returned.
    let (result, output) = call(
        &device,
        A,
        Request::Query,
        QueryRequest::new(16).as_bytes(),
        1,
    );
    assert!(matches!(result, Ok(Outcome::Done(_))));
    assert_eq!(
        QueryReply::read_exact(&output[..32])
            .unwrap()
            .consumer_offset,
        16
    );
    // Having read everything, the query pends.
    let (result, _) = call(
        &device,
        A,
        Request::Query,
        QueryRequest::new(32).as_bytes(),
        2,
    );
    assert_eq!(result, Ok(Outcome::Pending));
    assert_eq!(device.ring().armed_head(), Some(32));
}

#[test]
fn a_locked_head_keeps_the_query_pending() {
    let (device, _heap, _consumer) = mapped_device();
    let held = device.ring().reserve(8).unwrap();
    let (result, _) = call(
        &device,
        A,
        Request::Query,
        QueryRequest::new(0).as_bytes(),
        3,
    );
    assert_eq!(
        result,
        Ok(Outcome::Pending),
        "producer > consumer is not enough"
    );
    write(&device, b"behind").unwrap();
    assert!(device.platform().completed.lock().unwrap().is_empty());
    held.submit();
    assert_eq!(device.platform().completed.lock().unwrap().len(), 1);
}

#[test]
fn cancel_and_completion_complete_exactly_once() {
    let (device, _heap, _consumer) = mapped_device();
    pend_query(&device, A, 9);
    assert_eq!(device.cancel_query(|q| *q == 8), None, "not that one");
    assert_eq!(device.cancel_query(|q| *q == 9), Some(9));
    assert_eq!(device.cancel_query(|q| *q == 9), None, "only once");
    write(&device, b"late").unwrap();
    assert!(device.platform().completed.lock().unwrap().is_empty());
    assert_eq!(device.ring().armed_head(), None);
}

#[test]
fn closing_a_handle_cancels_its_query_only() {
    let (device, _heap, _consumer) = mapped_device();
    pend_query(&device, A, 4);
    device.close(B);
    assert!(device.platform().completed.lock().unwrap().is_empty());
    device.close(A);
    assert_eq!(
        *device.platform().completed.lock().unwrap(),
        [(4, Err(Status::Cancelled))]
    );
}

#[test]
fn bad_requests_get_their_status_and_change_nothing() {
    let (device, _heap, _consumer) = device();
    write(&device, b"x").unwrap();
    let before = stats(&device);
    let empty = EmptyRequest::new();
    let mut reserved = empty;
    reserved.reserved = 1;
    let mut oversized = empty.as_bytes().to_vec();
    oversized.push(0);
    for request in [Request::Map, Request::Unmap, Request::Stats] {
        for input in [
            &empty.as_bytes()[..4],
            &oversized[..],
            reserved.as_bytes(),
            &[],
        ] {
            assert_eq!(
                call(&device, A, request, input, 0).0,
                Err(Status::InvalidParameter),
                "{request:?} {input:?}"
            );
        }
    }
    let mut short_output = [0u8; 8];
    assert_eq!(
        device.request(A, Request::Map, empty.as_bytes(), &mut short_output, || Ok(
            0
        )),
        Err(Status::BufferTooSmall)
    );
    assert_eq!(
        device.request(
            A,
            Request::Query,
            QueryRequest::new(0).as_bytes(),
            &mut short_output,
            || Ok(0)
        ),
        Err(Status::BufferTooSmall)
    );
    // WRITE: a length that disagrees with the payload, zero, or larger than the ring.
    let mut lying = WriteRequest::new(5).as_bytes().to_vec();
    lying.extend_from_slice(b"abc");
    assert_eq!(
        call(&device, A, Request::Write, &lying, 0).0,
        Err(Status::InvalidParameter)
    );
    let mut huge = WriteRequest::new(5000).as_bytes().to_vec();
    huge.extend_from_slice(&[0; 5000]);
    assert_eq!(
        call(&device, A, Request::Write, &huge, 0).0,
        Err(Status::InvalidParameter)
    );
    assert_eq!(
        call(
            &device,
            A,
            Request::Generate,
            GenerateRequest::start(0, 8, 0, 0).as_bytes(),
            0
        )
        .0,
        Err(Status::InvalidParameter)
    );
    let after = stats(&device);
    assert_eq!(
        (
            after.producer_offset,
            after.produced,
            after.dropped,
            after.mapped
        ),
        (
            before.producer_offset,
            before.produced,
            before.dropped,
            before.mapped
        )
    );
    assert!(device.platform().started.lock().unwrap().is_empty());
}

#[test]
fn a_full_ring_refuses_writes_and_counts_them() {
    let (device, _heap, _consumer) = device();
    let payload = [1u8; 4088];
    write(&device, &payload).unwrap();
    assert_eq!(
        write(&device, b"no room"),
        Err(Status::InsufficientResources)
    );
    let s = stats(&device);
    assert_eq!((s.produced, s.dropped), (1, 1));
}

#[test]
fn the_generator_writes_tagged_records_and_counts_them() {
    let (device, _heap, mut consumer) = device();
    let start = GenerateRequest::start(1, 24, 0, 10);
    let (result, _) = call(&device, A, Request::Generate, start.as_bytes(), 0);
    assert!(matches!(result, Ok(Outcome::Done(_))));
    assert_eq!(*device.platform().started.lock().unwrap(), [1]);
    assert_eq!(
        call(&device, A, Request::Generate, start.as_bytes(), 0).0,
        Err(Status::InvalidDeviceState),
        "already running"
    );
    assert_eq!(stats(&device).generator_producers, 1);
    device.run_producer(3);
    assert_eq!(
        stats(&device).generator_producers,
        0,
        "a counted run ends by itself"
    );
    let records: Vec<_> = consumer
        .batch()
        .iter()
        .map(|r| crate::abi::generated::parse(&r).unwrap())
        .collect();
    assert_eq!(records.len(), 10);
    for (i, (producer, sequence, time)) in records.into_iter().enumerate() {
        assert_eq!((producer, sequence, time), (3, i as u64, Some(7)));
    }
    assert_eq!(stats(&device).produced, 10);
    let (result, _) = call(
        &device,
        A,
        Request::Generate,
        GenerateRequest::stop().as_bytes(),
        0,
    );
    assert!(matches!(result, Ok(Outcome::Done(_))));
    assert_eq!(stats(&device).generator_producers, 0);
}

#[test]
fn a_former_consumer_writing_its_old_page_moves_nothing() {
    let (device, _heap, _consumer) = mapped_device();
    write(&device, b"one").unwrap(); // 0..16
    write(&device, b"two").unwrap(); // 16..32
    page(&device, 0)[0].store(16, Ordering::Release); // A read "one"
    assert_eq!(
        call(
            &device,
            A,
            Request::Unmap,
            EmptyRequest::new().as_bytes(),
            0
        )
        .0,
        Ok(Outcome::Done(0))
    );
    let reply = map(&device, B);
    assert_eq!(reply.consumer_offset, 16, "B starts where A returned space");
    assert_eq!(
        page(&device, 1)[0].load(Ordering::Acquire),
        16,
        "on a fresh page"
    );
    // A keeps its old view and writes anything into it; producers look at B's page only.
    page(&device, 0)[0].store(u64::MAX, Ordering::Relaxed);
    while write(&device, &[7; 100]).is_ok() {}
    assert_eq!(device.ring().validated_consumer_offset(), 16);
    assert_eq!(stats(&device).consumer_page_offset, 16);
}

#[test]
fn a_query_from_a_handle_that_is_not_the_mapping_is_refused_and_changes_nothing() {
    let (device, _heap, _consumer) = mapped_device();
    write(&device, b"one").unwrap();
    write(&device, b"two").unwrap();
    let before = stats(&device);
    let hostile = QueryRequest::new(u64::MAX);
    assert_eq!(
        call(&device, B, Request::Query, hostile.as_bytes(), 1).0,
        Err(Status::AccessDenied)
    );
    let after = stats(&device);
    assert_eq!(after.as_bytes(), before.as_bytes(), "no counter, no walk");
    // A's own QUERY still works, and pends while it is pending.
    pend_query_at(&device, A, 32, 2);
    assert_eq!(
        call(&device, A, Request::Query, hostile.as_bytes(), 3).0,
        Err(Status::DeviceBusy)
    );
    let busy = stats(&device);
    assert_eq!(
        busy.queries,
        after.queries + 1,
        "the busy one is not counted"
    );
    assert_eq!(
        busy.consumer_offset, 32,
        "the pending one returned the space"
    );
}

fn pend_query_at(device: &Device<TestPlatform>, handle: HandleId, offset: u64, id: u32) {
    let (result, _) = call(
        device,
        handle,
        Request::Query,
        QueryRequest::new(offset).as_bytes(),
        id,
    );
    assert_eq!(result, Ok(Outcome::Pending));
}

#[test]
fn unmap_is_synchronous_cancels_the_query_and_counts_what_was_not_returned() {
    let (device, _heap, _consumer) = mapped_device();
    write(&device, b"one").unwrap();
    write(&device, b"two").unwrap();
    write(&device, b"three").unwrap();
    page(&device, 0)[0].store(16, Ordering::Release);
    pend_query_at(&device, A, 48, 5);
    // The pending query's walk returned everything; then A's page says less (a consumer
    // never goes back, but a hostile one may say so): the validated offset stays.
    assert_eq!(
        call(
            &device,
            A,
            Request::Unmap,
            EmptyRequest::new().as_bytes(),
            0
        )
        .0,
        Ok(Outcome::Done(0))
    );
    assert_eq!(
        *device.platform().completed.lock().unwrap(),
        [(5, Err(Status::Cancelled))]
    );
    let stats = stats(&device);
    assert_eq!((stats.mapped, stats.redelivered), (0, 0));
    assert_eq!(
        call(
            &device,
            A,
            Request::Query,
            QueryRequest::new(48).as_bytes(),
            6
        )
        .0,
        Err(Status::AccessDenied),
        "an unmapped handle is not the mapping"
    );
    assert_eq!(map(&device, B).consumer_offset, 48);
}

#[test]
fn a_closed_consumer_hands_over_its_unreturned_records_to_the_next() {
    let (device, _heap, _consumer) = mapped_device();
    for payload in [&b"one"[..], b"two", b"three"] {
        write(&device, payload).unwrap();
    }
    page(&device, 0)[0].store(16, Ordering::Release); // returned one
    page(&device, 0)[1].store(48, Ordering::Relaxed); // had been handed all three
    device.close(A);
    let stats = stats(&device);
    assert_eq!((stats.mapped, stats.redelivered), (0, 2));
    assert_eq!(map(&device, B).consumer_offset, 16);
}

fn generate(device: &Device<TestPlatform>, request: GenerateRequest) -> Result<u32, Status> {
    let (result, output) = call(device, A, Request::Generate, request.as_bytes(), 0);
    result.map(|outcome| {
        assert_eq!(outcome, Outcome::Done(8));
        u32::from_le_bytes(output[4..8].try_into().unwrap())
    })
}

#[test]
fn stop_with_nothing_running_succeeds_with_no_producers() {
    let (device, _heap, _consumer) = device();
    assert_eq!(generate(&device, GenerateRequest::stop()), Ok(0));
    assert_eq!(generate(&device, GenerateRequest::stop()), Ok(0));
    assert_eq!(device.platform().joins.load(Ordering::SeqCst), 0);
    generate(&device, GenerateRequest::start(1, 24, 0, 0)).unwrap();
    assert_eq!(generate(&device, GenerateRequest::stop()), Ok(0));
    assert_eq!(
        generate(&device, GenerateRequest::stop()),
        Ok(0),
        "idempotent"
    );
    assert_eq!(device.platform().joins.load(Ordering::SeqCst), 1);
}

#[test]
fn a_start_after_a_counted_run_that_finished_joins_it_and_starts() {
    let (device, _heap, _consumer) = device();
    generate(&device, GenerateRequest::start(2, 24, 0, 3)).unwrap();
    device.run_producer(0);
    assert_eq!(
        generate(&device, GenerateRequest::start(1, 24, 0, 3)),
        Err(Status::InvalidDeviceState),
        "one producer still produces"
    );
    assert_eq!(device.platform().joins.load(Ordering::SeqCst), 0);
    device.run_producer(1);
    assert_eq!(stats(&device).generator_producers, 0);
    assert_eq!(
        generate(&device, GenerateRequest::start(1, 24, 0, 3)),
        Ok(1)
    );
    assert_eq!(
        device.platform().joins.load(Ordering::SeqCst),
        1,
        "the finished threads are joined before new ones start"
    );
    assert_eq!(*device.platform().started.lock().unwrap(), [2, 1]);
    device.run_producer(0);
    assert_eq!(stats(&device).produced, 9);
}

#[test]
fn while_a_stop_joins_a_start_is_refused_and_a_second_stop_does_not_join() {
    let (device, _heap, _consumer) = device();
    let device = Arc::new(device);
    generate(&device, GenerateRequest::start(2, 24, 0, 0)).unwrap();
    device
        .platform()
        .hold_first_join
        .store(true, Ordering::SeqCst);
    let stopper = {
        let device = Arc::clone(&device);
        std::thread::spawn(move || generate(&device, GenerateRequest::stop()))
    };
    while device.platform().joins.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    // The first stop is joining.
    assert_eq!(
        generate(&device, GenerateRequest::stop()),
        Err(Status::DeviceBusy)
    );
    assert_eq!(
        generate(&device, GenerateRequest::start(1, 24, 0, 0)),
        Err(Status::InvalidDeviceState)
    );
    assert_eq!(device.platform().joins.load(Ordering::SeqCst), 1);
    assert_eq!(*device.platform().started.lock().unwrap(), [2]);
    device
        .platform()
        .hold_first_join
        .store(false, Ordering::SeqCst);
    assert_eq!(stopper.join().unwrap(), Ok(0));
    assert_eq!(
        generate(&device, GenerateRequest::start(1, 24, 0, 0)),
        Ok(1)
    );
    assert_eq!(*device.platform().started.lock().unwrap(), [2, 1]);
}

#[test]
fn stats_name_the_mapping_process_and_count_what_was_consumed() {
    let (device, _heap, _consumer) = device();
    assert_eq!(stats(&device).mapping_process, 0);
    map(&device, A);
    for payload in [&b"one"[..], b"two", b"three"] {
        write(&device, payload).unwrap();
    }
    device.ring().reserve(8).unwrap().discard();
    page(&device, 0)[0].store(64, Ordering::Release);
    let (result, _) = call(
        &device,
        A,
        Request::Query,
        QueryRequest::new(64).as_bytes(),
        1,
    );
    assert_eq!(result, Ok(Outcome::Pending));
    let stats = stats(&device);
    assert_eq!(
        (stats.mapping_process, stats.consumed),
        (4242, 3),
        "the discard is not"
    );
    assert_eq!(stats.produced, 3);
}

#[test]
fn only_a_privileged_handle_revokes_and_the_next_map_works() {
    let (device, _heap, _consumer) = mapped_device();
    write(&device, b"one").unwrap();
    pend_query_at(&device, A, 16, 7);
    let empty = EmptyRequest::new();
    let before = stats(&device);
    assert_eq!(
        call(&device, B, Request::Revoke, empty.as_bytes(), 0).0,
        Err(Status::AccessDenied)
    );
    assert_eq!(
        stats(&device).as_bytes(),
        before.as_bytes(),
        "refused, nothing changed"
    );
    assert_eq!(
        call(&device, ADMIN, Request::Revoke, empty.as_bytes(), 0).0,
        Ok(Outcome::Done(0))
    );
    assert_eq!(
        *device.platform().completed.lock().unwrap(),
        [(7, Err(Status::Cancelled))],
        "the holder's QUERY is cancelled"
    );
    assert_eq!(
        call(
            &device,
            A,
            Request::Query,
            QueryRequest::new(0).as_bytes(),
            8
        )
        .0,
        Err(Status::AccessDenied),
        "the former holder is no longer the mapping"
    );
    assert_eq!(
        map(&device, B).consumer_offset,
        16,
        "where the holder returned space"
    );
    assert_eq!(
        call(&device, ADMIN, Request::Revoke, empty.as_bytes(), 0).0,
        Ok(Outcome::Done(0))
    );
    assert_eq!(
        call(&device, ADMIN, Request::Revoke, empty.as_bytes(), 0).0,
        Err(Status::InvalidDeviceState),
        "nothing to revoke"
    );
}

#[test]
fn a_taken_query_is_unmarked_under_the_lock_and_one_its_cancel_routine_owns_is_not_completed() {
    let (device, _heap, _consumer) = mapped_device();
    pend_query(&device, A, 7);
    // EvtRequestCancel was invoked for 7 and waits for the lock: the wake's take refuses it.
    device.platform().cancel_owns.lock().unwrap().push(7);
    assert!(write(&device, b"wakes").is_ok());
    assert_eq!(*device.platform().taken.lock().unwrap(), vec![7]);
    assert!(device.platform().completed.lock().unwrap().is_empty());
    // The cancel routine then finds nothing pending (and completes its request itself).
    assert_eq!(device.cancel_query(|&q| q == 7), None);
    // The device is free for the next QUERY (which completes at once: a record is there).
    let (result, _) = call(
        &device,
        A,
        Request::Query,
        QueryRequest::new(0).as_bytes(),
        8,
    );
    assert!(result.is_ok(), "the next QUERY is not refused as busy");
    // The cancel path does not go through take_query.
    assert_eq!(*device.platform().taken.lock().unwrap(), vec![7]);
}

/// An event the platform knows as handle `handle`.
fn make_event(device: &Device<TestPlatform>, handle: u64) -> Arc<TestEvent> {
    let event = Arc::new(TestEvent::default());
    device
        .platform()
        .events
        .lock()
        .unwrap()
        .push((handle, event.clone()));
    event
}

fn set_event(
    device: &Device<TestPlatform>,
    handle: HandleId,
    event: u64,
) -> Result<Outcome, Status> {
    call(
        device,
        handle,
        Request::SetEvent,
        SetEventRequest::new(event).as_bytes(),
        0,
    )
    .0
}

fn sets(event: &TestEvent) -> (u32, u32) {
    // SeqCst: test counters.
    (
        event.sets.load(Ordering::SeqCst),
        event.references.load(Ordering::SeqCst),
    )
}

#[test]
fn only_the_mapping_may_set_its_event_and_a_refusal_changes_nothing() {
    let (device, _heap, _consumer) = device();
    let event = make_event(&device, 5);
    assert_eq!(set_event(&device, A, 5), Err(Status::AccessDenied));
    map(&device, A);
    assert_eq!(set_event(&device, B, 5), Err(Status::AccessDenied));
    assert_eq!(set_event(&device, A, 6), Err(Status::InvalidParameter));
    let mut bad = SetEventRequest::new(5);
    bad.reserved = 1;
    assert_eq!(
        call(&device, A, Request::SetEvent, bad.as_bytes(), 0).0,
        Err(Status::InvalidParameter)
    );
    assert_eq!(sets(&event), (0, 0), "no reference taken by a refusal");
    assert_eq!(set_event(&device, A, 5), Ok(Outcome::Done(0)));
    assert_eq!(sets(&event), (0, 1));
    // Replacing it with none lets go of it.
    assert_eq!(set_event(&device, A, 0), Ok(Outcome::Done(0)));
    assert_eq!(sets(&event), (0, 0));
}

#[test]
fn a_query_completion_sets_the_event_a_cancel_does_not_and_the_mapping_end_lets_it_go() {
    let (device, _heap, _consumer) = device();
    let event = make_event(&device, 5);
    map(&device, A);
    assert_eq!(set_event(&device, A, 5), Ok(Outcome::Done(0)));
    // Pending, then woken by a write: set once, with the wake-up.
    pend_query(&device, A, 1);
    assert_eq!(sets(&event).0, 0, "not set while the QUERY pends");
    write(&device, b"one").unwrap();
    assert_eq!(sets(&event).0, 1);
    // A QUERY that completes at once sets it too (its waiter waits on the event).
    let (result, _) = call(
        &device,
        A,
        Request::Query,
        QueryRequest::new(0).as_bytes(),
        2,
    );
    assert!(matches!(result, Ok(Outcome::Done(_))), "{result:?}");
    assert_eq!(sets(&event).0, 2);
    // A cancelled QUERY does not: its waiter cancelled it.
    let first = 16;
    let (result, _) = call(
        &device,
        A,
        Request::Query,
        QueryRequest::new(first).as_bytes(),
        3,
    );
    assert_eq!(result, Ok(Outcome::Pending));
    assert_eq!(device.cancel_query(|&id| id == 3), Some(3));
    assert_eq!(sets(&event).0, 2);
    // UNMAP: set once more (a waiter learns the mapping ended), and let go of.
    assert_eq!(
        call(
            &device,
            A,
            Request::Unmap,
            EmptyRequest::new().as_bytes(),
            0
        )
        .0,
        Ok(Outcome::Done(0))
    );
    assert_eq!(sets(&event), (3, 0));
    // The next mapping starts with no event.
    map(&device, B);
    pend_query_at(&device, B, first, 4);
    write(&device, b"two").unwrap();
    assert_eq!(sets(&event), (3, 0));
}
