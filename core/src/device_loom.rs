//! loom models of the device's own QUERY, wake-up and cancel code (not a copy of it): run
//! with the loom models, `RUSTFLAGS="--cfg loom" cargo test --release -p ringmap-core --lib`.

use alloc::boxed::Box;
use alloc::vec::Vec;

use loom::sync::{Arc, Mutex};
use loom::thread;

use crate::abi::{EmptyRequest, QueryReply, QueryRequest, Request, Status, Wire, WriteRequest};
use crate::device::{Device, HandleId, NewMapping, Outcome, Platform, ViewHandles};
use crate::layout::{Capacity, ConsumerPage};
use crate::placement::HeapRing;

/// A platform whose lock is a loom mutex; it records the QUERYs it completed.
#[derive(Default)]
struct LoomPlatform {
    lock: Mutex<()>,
    completed: Mutex<Vec<(u32, Result<QueryReply, Status>)>>,
}

// SAFETY: `with_lock` runs its closure under a mutex.
unsafe impl Platform for LoomPlatform {
    type PendingQuery = u32;
    type ConsumerPage = Box<ConsumerPage>;
    fn with_lock<R>(&self, f: impl FnOnce() -> R) -> R {
        let _guard = self.lock.lock().unwrap();
        f()
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
/// (at once, or by the wake-up, or by its re-check after arming), and nothing stays armed.
#[test]
fn loom_device_query_against_a_write_completes_exactly_once() {
    model("device QUERY against a WRITE", || {
        let (device, _heap, _consumer) = mapped_device();
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
