//! loom models of the device's own QUERY, wake-up and cancel code (not a copy of it): run
//! with the loom models, `RUSTFLAGS="--cfg loom" cargo test --release -p ringmap-core --lib`.

use alloc::boxed::Box;
use alloc::vec::Vec;

use loom::sync::{Arc, Mutex};
use loom::thread;

use crate::abi::{
    EmptyRequest, QueryReply, QueryRequest, Request, SetEventRequest, Status, Wire, WriteRequest,
};
use crate::device::{Device, HandleId, NewMapping, Outcome, Platform, ViewHandles};
use crate::layout::{Capacity, ConsumerPage};
use crate::placement::HeapRing;

/// A platform whose lock is a loom mutex; it records the QUERYs it completed and has one
/// event (handle 1).
#[derive(Default)]
struct LoomPlatform {
    lock: Mutex<()>,
    completed: Mutex<Vec<(u32, Result<QueryReply, Status>)>>,
    event: Arc<LoomEvent>,
}

/// The one event: how often it was set, and whether the device still holds it.
#[derive(Default)]
struct LoomEvent {
    sets: loom::sync::atomic::AtomicU32,
    held: loom::sync::atomic::AtomicBool,
}

/// The device's reference to the event; dropping it lets go of it.
struct LoomEventReference(Arc<LoomEvent>);

impl Drop for LoomEventReference {
    fn drop(&mut self) {
        // SeqCst: model bookkeeping, not under test.
        self.0
            .held
            .store(false, loom::sync::atomic::Ordering::SeqCst);
    }
}

// SAFETY: `with_lock` runs its closure under a mutex.
unsafe impl Platform for LoomPlatform {
    type PendingQuery = u32;
    type ConsumerPage = Box<ConsumerPage>;
    type Event = LoomEventReference;
    fn with_lock<R>(&self, f: impl FnOnce() -> R) -> R {
        let _guard = self.lock.lock().unwrap();
        f()
    }
    fn reference_event(&self, _handle: HandleId, event: u64) -> Result<LoomEventReference, Status> {
        if event != 1 {
            return Err(Status::InvalidParameter);
        }
        // SeqCst: model bookkeeping.
        self.event
            .held
            .store(true, loom::sync::atomic::Ordering::SeqCst);
        Ok(LoomEventReference(self.event.clone()))
    }
    fn signal_event(&self, event: &LoomEventReference) {
        // SeqCst: model bookkeeping. Set only while the device holds it: a producer that set
        // an event the mapping's end had let go of would write freed memory in the kernel.
        assert!(
            event.0.held.load(loom::sync::atomic::Ordering::SeqCst),
            "an event set after it was let go of"
        );
        event
            .0
            .sets
            .fetch_add(1, loom::sync::atomic::Ordering::SeqCst);
    }
    fn take_query(&self, query: u32) -> Option<u32> {
        // No cancel routine owns a query here (the models cancel through the device).
        Some(query)
    }
    fn complete_query(&self, query: u32, reply: Result<QueryReply, Status>) {
        self.completed.lock().unwrap().push((query, reply));
    }
    fn map_view(&self, _handle: HandleId) -> Result<NewMapping<Box<ConsumerPage>>, Status> {
        let page = Box::new(ConsumerPage::default());
        Ok(NewMapping {
            handles: ViewHandles::default(),
            // Only ever accessed through its atomics (shared references suffice).
            page_address: (&*page as *const ConsumerPage).cast_mut().cast(),
            page,
            process_id: 1,
        })
    }
    fn unmap_view(&self, _handle: HandleId, _page: Box<ConsumerPage>) {}
    fn is_privileged(&self, _handle: HandleId) -> bool {
        false
    }
    fn now_ns(&self) -> u64 {
        0
    }
    fn start_producers(&self, _producers: u32) -> Result<(), Status> {
        Err(Status::InvalidDeviceState)
    }
    fn join_producers(&self) {}
    fn sleep_ns(&self, _ns: u64) {}
    fn relax(&self, _spins: u32) {
        thread::yield_now();
    }
}

const A: HandleId = HandleId(1);

/// A mapped device over a heap ring of 4096 bytes, and the heap ring that owns the memory.
fn mapped_device() -> (Device<LoomPlatform>, HeapRing, crate::Consumer) {
    let (heap, consumer) = HeapRing::new(Capacity::new(4096).unwrap(), ());
    // SAFETY: the heap ring's memory outlives the device (returned together), and the heap
    // ring's own producer side is never used: the device is the only producer side.
    let device = unsafe { Device::new(*heap.placement(), LoomPlatform::default()) };
    let mut output = [0u8; 128];
    let mapped = device.request(
        A,
        Request::Map,
        EmptyRequest::new().as_bytes(),
        &mut output,
        || Err(Status::InvalidDeviceState),
    );
    assert!(matches!(mapped, Ok(Outcome::Done(_))), "{mapped:?}");
    (device, heap, consumer)
}

/// A QUERY of handle A carrying `consumer_offset`; `id` names it if it pends.
fn query(device: &Device<LoomPlatform>, consumer_offset: u64, id: u32) -> Outcome {
    let mut output = [0u8; 128];
    device
        .request(
            A,
            Request::Query,
            QueryRequest::new(consumer_offset).as_bytes(),
            &mut output,
            || Ok(id),
        )
        .unwrap()
}

/// WRITE of an 8-byte record (16 bytes in the ring) through the device.
fn write(device: &Device<LoomPlatform>) {
    let mut input = Vec::new();
    input.extend_from_slice(WriteRequest::new(8).as_bytes());
    input.extend_from_slice(&[5; 8]);
    let mut output = [0u8; 128];
    let written = device.request(A, Request::Write, &input, &mut output, || {
        Err(Status::InvalidDeviceState)
    });
    assert!(matches!(written, Ok(Outcome::Done(_))), "{written:?}");
}

fn completed(device: &Device<LoomPlatform>, id: u32) -> usize {
    let completed = device.platform().completed.lock().unwrap();
    completed.iter().filter(|(query, _)| *query == id).count()
}

/// Checks a model and prints how many runs loom explored.
fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    let runs: &'static std::sync::atomic::AtomicUsize = Box::leak(Box::default());
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    builder.max_branches = 100_000;
    let f = alloc::sync::Arc::new(f);
    builder.check(move || {
        // Relaxed: a count across runs, outside the model.
        runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The device is large (its counters sit on cache lines of their own): it overflows
        // the stack loom gives the model's main thread, so the model runs on a thread of
        // its own with a larger one.
        let f = f.clone();
        thread::Builder::new()
            .stack_size(1 << 22)
            .spawn(move || f())
            .unwrap()
            .join()
            .unwrap();
    });
    let runs = runs.load(std::sync::atomic::Ordering::Relaxed);
    std::eprintln!("{name}: {runs} runs explored");
}

/// A QUERY for the head against the WRITE that commits it: the QUERY completes exactly once
/// (at once, or by the wake-up, or by its re-check after arming), nothing stays armed, and
/// the mapping's event (SET_EVENT) is set exactly once whichever way it completed: a waiter
/// on the event is never left waiting with its record committed.
#[test]
fn loom_device_query_against_a_write_completes_exactly_once_and_sets_the_event() {
    model("device QUERY and its event against a WRITE", || {
        let (device, _heap, _consumer) = mapped_device();
        set_event(&device, 1);
        let device = Arc::new(device);
        let producer = {
            let device = device.clone();
            thread::spawn(move || write(&device))
        };
        let outcome = query(&device, 0, 1);
        producer.join().unwrap();
        let completions = completed(&device, 1);
        match outcome {
            Outcome::Done(_) => assert_eq!(completions, 0),
            Outcome::Pending => {
                assert_eq!(completions, 1, "the committed head's QUERY pends forever")
            }
        }
        assert_eq!(device.ring().armed_head(), None);
        assert_eq!(
            event_sets(&device),
            1,
            "the waiter on the event is not woken"
        );
    });
}

/// A wake-up for a head whose QUERY completed already must not complete the next QUERY,
/// which waits for a head nobody commits: the wake-up completes only what `disarm_query_for`
/// says still waits for its head.
#[test]
fn loom_device_a_late_wakeup_leaves_the_next_query_pending() {
    model("device late wake-up", || {
        let (device, _heap, _consumer) = mapped_device();
        let device = Arc::new(device);
        let producer = {
            let device = device.clone();
            thread::spawn(move || write(&device))
        };
        // QUERY 1 for the head at 0, until it has completed.
        if query(&device, 0, 1) == Outcome::Pending {
            while completed(&device, 1) == 0 {
                thread::yield_now();
            }
        }
        // The record is read: QUERY 2 returns it and waits for the head at 16, which no one
        // writes.
        assert_eq!(query(&device, 16, 2), Outcome::Pending);
        producer.join().unwrap();
        assert_eq!(
            completed(&device, 2),
            0,
            "QUERY 2 completed with no record at its head"
        );
        assert_eq!(device.ring().armed_head(), Some(16));
        // Cancel it: exactly one of cancel and completion wins.
        assert_eq!(device.cancel_query(|&id| id == 2), Some(2));
        assert_eq!(device.ring().armed_head(), None);
    });
}

fn set_event(device: &Device<LoomPlatform>, event: u64) {
    let mut output = [0u8; 16];
    let set = device.request(
        A,
        Request::SetEvent,
        SetEventRequest::new(event).as_bytes(),
        &mut output,
        || Err(Status::InvalidDeviceState),
    );
    assert_eq!(set, Ok(Outcome::Done(0)));
}

fn event_sets(device: &Device<LoomPlatform>) -> u32 {
    // SeqCst: model bookkeeping.
    device
        .platform()
        .event
        .sets
        .load(loom::sync::atomic::Ordering::SeqCst)
}

/// The mapping's end lets go of its event while a producer may be setting it: the set
/// happens under the lock that the end takes it away under, so no set comes after it is
/// let go of (the platform asserts it), and the end sets it once more.
#[test]
fn loom_device_no_event_is_set_after_the_mapping_end_lets_it_go() {
    model("device event against the mapping's end", || {
        let (device, _heap, _consumer) = mapped_device();
        set_event(&device, 1);
        assert_eq!(query(&device, 0, 1), Outcome::Pending);
        let device = Arc::new(device);
        let producer = {
            let device = device.clone();
            thread::spawn(move || write(&device))
        };
        device.close(A);
        producer.join().unwrap();
        // SeqCst: model bookkeeping.
        assert!(
            !device
                .platform()
                .event
                .held
                .load(loom::sync::atomic::Ordering::SeqCst)
        );
        // Set by the wake-up and by the end, or by the end alone (it cancelled the QUERY).
        let sets = event_sets(&device);
        assert!((1..=2).contains(&sets), "{sets}");
        assert_eq!(completed(&device, 1), 1, "the QUERY completed exactly once");
    });
}
