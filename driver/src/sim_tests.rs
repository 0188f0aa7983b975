//! The driver's own code on wdk-usersim (Linux): DriverEntry, device add, the request
//! callbacks, the cancel routine, file cleanup and close, sections, MDLs and system threads,
//! driven through the simulated I/O manager, with the rules checked as it runs. Every test
//! ends with an unload whose leak report must be empty and no rule broken.

use std::vec::Vec;

use ringmap_core::abi::{
    EmptyRequest, GenerateRequest, MapReply, QueryReply, QueryRequest, Request, StatsReply, Wire,
    WriteRequest,
};
use wdk_usersim::sim::{File, Irp, Sim};
use wdk_usersim::{STATUS_CANCELLED, STATUS_SUCCESS};

fn bytes<T: Wire>(value: &T) -> Vec<u8> {
    let mut out = std::vec![0u8; T::SIZE as usize];
    value.write_to(&mut out).expect("fits");
    out
}

/// A loaded driver with one open handle.
fn loaded() -> (Sim, File) {
    let sim = Sim::new();
    sim.set_ring_capacity(Some(64 * 1024));
    sim.load(crate::driver_entry)
        .expect("DriverEntry and device add succeed");
    let file = sim.open();
    (sim, file)
}

fn send<T: Wire>(sim: &Sim, file: File, request: Request, input: &T, output: usize) -> Irp {
    sim.ioctl(file, request.ioctl(), &bytes(input), output)
}

fn map(sim: &Sim, file: File) -> MapReply {
    let (code, out) = send(
        sim,
        file,
        Request::Map,
        &EmptyRequest::new(),
        MapReply::SIZE as usize,
    )
    .wait();
    assert_eq!(code, STATUS_SUCCESS, "MAP succeeds");
    MapReply::read_exact(&out).expect("a MAP reply")
}

fn write(sim: &Sim, file: File, payload: &[u8]) {
    let mut input = bytes(&WriteRequest::new(payload.len() as u32));
    input.extend_from_slice(payload);
    let (code, _) = sim.ioctl(file, Request::Write.ioctl(), &input, 64).wait();
    assert_eq!(code, STATUS_SUCCESS, "WRITE succeeds");
}

fn query(sim: &Sim, file: File, consumer_offset: u64) -> Irp {
    send(
        sim,
        file,
        Request::Query,
        &QueryRequest::new(consumer_offset),
        QueryReply::SIZE as usize,
    )
}

fn stats(sim: &Sim, file: File) -> StatsReply {
    let (code, out) = send(
        sim,
        file,
        Request::Stats,
        &EmptyRequest::new(),
        StatsReply::SIZE as usize,
    )
    .wait();
    assert_eq!(code, STATUS_SUCCESS, "STATS succeeds");
    StatsReply::read_exact(&out).expect("a STATS reply")
}

fn close_view(sim: &Sim, reply: &MapReply) {
    for handle in [
        reply.consumer_page_handle,
        reply.producer_page_handle,
        reply.data_handle,
    ] {
        assert!(
            sim.close_user_handle(handle),
            "MAP's handles are the process's"
        );
    }
}

#[test]
fn map_gives_handles_with_exactly_the_access_asked_and_everything_is_freed() {
    let (sim, file) = loaded();
    let reply = map(&sim, file);
    assert_eq!(reply.capacity, 64 * 1024);
    assert_eq!(
        sim.user_handle_writable(reply.consumer_page_handle),
        Some(true)
    );
    assert_eq!(
        sim.user_handle_writable(reply.producer_page_handle),
        Some(false)
    );
    assert_eq!(sim.user_handle_writable(reply.data_handle), Some(false));
    assert_eq!(stats(&sim, file).mapped, 1);
    let (code, _) = send(&sim, file, Request::Unmap, &EmptyRequest::new(), 0).wait();
    assert_eq!(code, STATUS_SUCCESS);
    close_view(&sim, &reply);
    sim.close(file);
    sim.assert_clean_unload();
}

#[test]
fn a_query_pends_until_a_write_completes_it() {
    let (sim, file) = loaded();
    let reply = map(&sim, file);
    let pending = query(&sim, file, reply.consumer_offset);
    assert!(pending.result().is_none(), "QUERY on an empty ring pends");
    write(&sim, file, b"hello");
    let (code, out) = pending.wait();
    assert_eq!(code, STATUS_SUCCESS);
    let answer = QueryReply::read_exact(&out).expect("a QUERY reply");
    assert!(answer.producer_offset > reply.consumer_offset);
    sim.close(file);
    sim.assert_clean_unload();
}

#[test]
fn cancel_completes_a_pending_query_cancelled() {
    let (sim, file) = loaded();
    let reply = map(&sim, file);
    let pending = query(&sim, file, reply.consumer_offset);
    sim.cancel(&pending);
    assert_eq!(pending.wait().0, STATUS_CANCELLED);
    write(&sim, file, b"after");
    sim.close(file);
    sim.assert_clean_unload();
}

/// CancelIoEx runs the cancel routine on the cancelling thread, as Windows does (the I/O
/// manager calls it from IoCancelIrp, in the caller's context): the usersim server cancels
/// a timed-out client's QUERY on its loop, and a thread started per cancel cost it a thread
/// creation and a join each time (about 150 us of CPU here), which any client could make it
/// pay as fast as it could send QUERY and CANCEL.
#[test]
fn cancel_runs_the_cancel_routine_on_the_cancelling_thread() {
    let (sim, file) = loaded();
    let reply = map(&sim, file);
    let completed_on = std::sync::Arc::new(std::sync::Mutex::new(None));
    let record = completed_on.clone();
    let pending = sim.ioctl_then(
        file,
        Request::Query.ioctl(),
        &bytes(&QueryRequest::new(reply.consumer_offset)),
        QueryReply::SIZE as usize,
        std::boxed::Box::new(move |_, _| {
            *record.lock().unwrap() = Some(std::thread::current().id());
        }),
    );
    assert!(pending.result().is_none(), "the QUERY pends");
    sim.cancel(&pending);
    assert_eq!(pending.wait().0, STATUS_CANCELLED);
    assert_eq!(
        *completed_on.lock().unwrap(),
        Some(std::thread::current().id()),
        "the cancel routine completed the QUERY on the thread that cancelled it"
    );
    sim.close(file);
    sim.assert_clean_unload();
}

/// A thread blocked in the I/O manager's wait for a QUERY gets the reply of the completion a
/// write on another thread makes (the completion wakes only counted waiters; a missed wake
/// would show as the wait's 60 s deadline, not as a failure: no timing in tests).
#[test]
fn a_thread_waiting_for_a_query_is_woken_by_another_threads_write() {
    let (sim, file) = loaded();
    let reply = map(&sim, file);
    let pending = query(&sim, file, reply.consumer_offset);
    let (code, out) = std::thread::scope(|scope| {
        let waiter = scope.spawn(|| pending.wait());
        write(&sim, file, b"wakes the waiter");
        waiter.join().expect("the waiter panicked")
    });
    assert_eq!(code, STATUS_SUCCESS);
    let answer = QueryReply::read_exact(&out).expect("a QUERY reply");
    assert!(answer.producer_offset > reply.consumer_offset);
    sim.close(file);
    sim.assert_clean_unload();
}

#[test]
fn cleanup_completes_a_pending_query() {
    let (sim, file) = loaded();
    let reply = map(&sim, file);
    let pending = query(&sim, file, reply.consumer_offset);
    sim.cleanup(file);
    assert!(
        pending.result().is_some(),
        "cleanup completes the handle's QUERY"
    );
    sim.close_file(file);
    sim.assert_clean_unload();
}

/// The cancel routine runs on another thread right before the completing path's
/// WdfRequestUnmarkCancelable: the window between taking the QUERY out of the device and
/// unmarking it.
#[test]
fn a_cancel_just_before_the_completing_unmark_breaks_no_rule() {
    let (sim, file) = loaded();
    let reply = map(&sim, file);
    let pending = query(&sim, file, reply.consumer_offset);
    sim.cancel_before_unmark(&pending);
    write(&sim, file, b"wakes the query");
    let (code, _) = pending.wait();
    assert!(code == STATUS_SUCCESS || code == STATUS_CANCELLED);
    sim.close(file);
    sim.assert_clean_unload();
}

/// A producer's wake-up sets the mapping's event before it takes the QUERY back from its
/// cancel routine, so a cancel that wins the request still leaves the waiter woken: the
/// record it waits for is committed either way.
#[test]
fn a_wake_whose_query_a_cancel_wins_still_sets_the_event() {
    let (sim, file) = loaded();
    let reply = map(&sim, file);
    let (waiter, _) = given_an_event(&sim, file);
    let pending = query(&sim, file, reply.consumer_offset);
    assert!(pending.result().is_none());
    sim.cancel_before_unmark(&pending);
    write(&sim, file, b"wakes the waiter");
    assert_eq!(
        pending.wait().0,
        STATUS_CANCELLED,
        "the cancel routine owned the request when the wake-up unmarked it"
    );
    assert_eq!(take_count(&waiter), 1, "the wake-up set the event");
    let (code, _) = send(&sim, file, Request::Unmap, &EmptyRequest::new(), 0).wait();
    assert_eq!(code, STATUS_SUCCESS);
    close_view(&sim, &reply);
    sim.close(file);
    sim.assert_clean_unload();
}

#[test]
fn a_query_on_a_cleaned_up_handle_is_refused() {
    let (sim, file) = loaded();
    let reply = map(&sim, file);
    sim.cleanup(file);
    let late = query(&sim, file, reply.consumer_offset);
    let Some((code, _)) = late.result() else {
        panic!(
            "a QUERY that arrives after its handle's cleanup pends, with nothing left to cancel it"
        );
    };
    assert_ne!(code, STATUS_SUCCESS);
    sim.close_file(file);
    sim.assert_clean_unload();
}

#[test]
fn generate_starts_and_stops_its_threads() {
    let (sim, file) = loaded();
    assert!(!sim.system_threads_running());
    // Unbounded and paced, so that its threads still run when they are counted.
    let (code, _) = send(
        &sim,
        file,
        Request::Generate,
        &GenerateRequest::start(2, 16, 1000, 0),
        64,
    )
    .wait();
    assert_eq!(code, STATUS_SUCCESS);
    assert!(sim.system_threads_running(), "two generator threads run");
    let (code, _) = send(&sim, file, Request::Generate, &GenerateRequest::stop(), 64).wait();
    assert_eq!(code, STATUS_SUCCESS);
    // The stop joined them: their start routines have returned.
    assert!(!sim.system_threads_running());
    sim.close(file);
    sim.assert_clean_unload();
}

#[test]
fn starting_and_stopping_the_generator_again_and_again_keeps_no_record_of_old_threads() {
    let (sim, file) = loaded();
    for _ in 0..50 {
        let start = GenerateRequest::start(2, 16, 0, 1);
        let (code, _) = send(&sim, file, Request::Generate, &start, 64).wait();
        assert_eq!(code, STATUS_SUCCESS);
        let (code, _) = send(&sim, file, Request::Generate, &GenerateRequest::stop(), 64).wait();
        assert_eq!(code, STATUS_SUCCESS);
    }
    // The last run's two, at most: every earlier thread ended and was waited for.
    assert!(
        sim.system_thread_records() <= 2,
        "{}",
        sim.system_thread_records()
    );
    sim.close(file);
    sim.assert_clean_unload();
}

#[test]
fn no_generator_thread_escapes_when_referencing_it_fails() {
    let (sim, file) = loaded();
    sim.fail_thread_references(1);
    let (code, _) = send(
        &sim,
        file,
        Request::Generate,
        &GenerateRequest::start(2, 16, 0, 0),
        64,
    )
    .wait();
    assert_ne!(
        code, STATUS_SUCCESS,
        "GENERATE fails when its thread cannot be referenced"
    );
    sim.close(file);
    sim.assert_clean_unload();
}

#[test]
fn a_failed_map_leaves_nothing_behind() {
    let (sim, file) = loaded();
    let reply = map(&sim, file);
    let other = sim.open();
    let (code, _) = send(
        &sim,
        other,
        Request::Map,
        &EmptyRequest::new(),
        MapReply::SIZE as usize,
    )
    .wait();
    assert_ne!(code, STATUS_SUCCESS, "a second MAP while mapped is refused");
    close_view(&sim, &reply);
    sim.close(other);
    sim.close(file);
    sim.assert_clean_unload();
}

/// KMDF lets requests arrive on a file object after its EvtFileCleanup (another thread of the
/// process may have sent them while the handle was being closed). Nothing may pend or map
/// through it then: EvtFileClose, the only callback left, comes only once they completed.
#[test]
fn requests_on_a_cleaned_up_handle_are_refused() {
    let (sim, file) = loaded();
    sim.cleanup(file);
    let (code, _) = send(
        &sim,
        file,
        Request::Map,
        &EmptyRequest::new(),
        MapReply::SIZE as usize,
    )
    .wait();
    assert_ne!(
        code, STATUS_SUCCESS,
        "MAP through a cleaned-up handle is refused"
    );
    let late = query(&sim, file, 0);
    assert!(
        late.result().is_some(),
        "QUERY through a cleaned-up handle does not pend"
    );
    sim.close_file(file);
    sim.assert_clean_unload();
}

/// The cancel routine runs on another thread after a delay the test varies, racing the
/// completion by a WRITE: whichever wins, the request is completed once and no rule breaks.
#[test]
fn cancels_at_varied_times_race_completions_without_breaking_a_rule() {
    let (sim, file) = loaded();
    sim.jitter(true);
    map(&sim, file);
    for round in 0..200u64 {
        let offset = stats(&sim, file).producer_offset;
        let pending = query(&sim, file, offset);
        let cancel = sim.cancel_later(&pending, std::time::Duration::from_micros(round % 13 * 7));
        write(&sim, file, b"race");
        let (code, _) = pending.wait();
        assert!(code == STATUS_SUCCESS || code == STATUS_CANCELLED);
        cancel.join().expect("the cancel thread");
        assert!(
            sim.violations().is_empty(),
            "round {round}: {:?}",
            sim.violations()
        );
    }
    sim.close(file);
    sim.assert_clean_unload();
}

/// A QUERY cancelled before the driver makes it cancelable: MarkCancelableEx returns
/// STATUS_CANCELLED and the driver completes it itself (the leak report would list it).
#[test]
fn a_query_cancelled_before_it_pends_is_completed_cancelled() {
    let (sim, file) = loaded();
    let reply = map(&sim, file);
    let input = bytes(&QueryRequest::new(reply.consumer_offset));
    let irp = sim.ioctl_cancelled(
        file,
        Request::Query.ioctl(),
        &input,
        QueryReply::SIZE as usize,
    );
    assert_eq!(irp.result().map(|r| r.0), Some(STATUS_CANCELLED));
    write(&sim, file, b"after");
    sim.close(file);
    sim.assert_clean_unload();
}

#[test]
fn a_map_racing_the_cleanup_of_its_own_handle_leaves_nothing_behind() {
    // KMDF sends EvtFileCleanup when the last handle closes, even while another thread of the
    // process is inside DeviceIoControl on it (its IRP holds the file object, not a handle):
    // MAP in EvtIoInCallerContext and the cleanup race. Whichever wins, once EvtFileClose has
    // run the ring is unmapped, and nothing leaks or breaks a rule.
    for round in 0..24u64 {
        let (sim, file) = loaded();
        sim.jitter(true);
        let other = sim.open();
        let reply = std::thread::scope(|scope| {
            let mapper = scope.spawn(|| {
                send(
                    &sim,
                    file,
                    Request::Map,
                    &EmptyRequest::new(),
                    MapReply::SIZE as usize,
                )
                .wait()
            });
            let sim = &sim;
            scope.spawn(move || {
                std::thread::sleep(std::time::Duration::from_micros(round * 23 % 300));
                sim.cleanup(file);
            });
            mapper.join().expect("the mapping thread")
        });
        if reply.0 == STATUS_SUCCESS {
            close_view(&sim, &MapReply::read_exact(&reply.1).expect("a MAP reply"));
        }
        sim.close_file(file);
        assert_eq!(stats(&sim, other).mapped, 0, "round {round}");
        sim.close(other);
        sim.assert_clean_unload();
    }
}

fn set_event(sim: &Sim, file: File, handle: u64) -> i32 {
    send(
        sim,
        file,
        Request::SetEvent,
        &ringmap_core::abi::SetEventRequest::new(handle),
        0,
    )
    .wait()
    .0
}

/// How many times the eventfd was written since it was last read (0: not readable).
fn take_count(fd: &std::os::fd::OwnedFd) -> u64 {
    let mut buf = [0u8; 8];
    match rustix::io::read(fd, &mut buf) {
        Ok(8) => u64::from_ne_bytes(buf),
        _ => 0,
    }
}

fn eventfd() -> std::os::fd::OwnedFd {
    rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )
    .expect("an eventfd")
}

/// Gives the mapping of `file` an event of the test process (SET_EVENT): the eventfd behind
/// it, and the process's handle to it.
fn given_an_event(sim: &Sim, file: File) -> (std::os::fd::OwnedFd, u64) {
    let waiter = eventfd();
    let event = sim.insert_user_event(
        wdk_usersim::sim::TEST_PROCESS,
        waiter.try_clone().expect("a duplicate"),
    );
    assert_eq!(set_event(sim, file, event), STATUS_SUCCESS);
    (waiter, event)
}

#[test]
fn set_event_references_the_callers_event_which_a_completing_query_sets() {
    let (sim, file) = loaded();
    let reply = map(&sim, file);
    let (waiter, event) = given_an_event(&sim, file);
    // The process may close its handle: the driver holds its own reference.
    assert!(sim.close_user_handle(event));
    let pending = query(&sim, file, reply.consumer_offset);
    assert!(pending.result().is_none());
    assert_eq!(take_count(&waiter), 0, "not set while the QUERY pends");
    write(&sim, file, b"wake");
    assert_eq!(take_count(&waiter), 1, "the wake-up sets the event");
    assert_eq!(pending.wait().0, STATUS_SUCCESS);
    // The mapping's end sets it once more and lets go of it.
    let (code, _) = send(&sim, file, Request::Unmap, &EmptyRequest::new(), 0).wait();
    assert_eq!(code, STATUS_SUCCESS);
    assert_eq!(take_count(&waiter), 1);
    close_view(&sim, &reply);
    sim.close(file);
    sim.assert_clean_unload();
}

#[test]
fn set_event_refuses_what_is_no_event_of_the_caller() {
    let (sim, file) = loaded();
    let reply = map(&sim, file);
    // A section handle of the caller's is no event.
    assert_eq!(
        set_event(&sim, file, reply.data_handle) as u32,
        ringmap_core::abi::Status::InvalidParameter.ntstatus()
    );
    // An event handle of another process is no handle of the caller's.
    let other = sim.insert_user_event(4242, eventfd());
    assert_eq!(
        set_event(&sim, file, other) as u32,
        ringmap_core::abi::Status::InvalidParameter.ntstatus()
    );
    // A number that names nothing.
    assert_eq!(
        set_event(&sim, file, 77_777) as u32,
        ringmap_core::abi::Status::InvalidParameter.ntstatus()
    );
    assert!(sim.close_user_handle(other));
    close_view(&sim, &reply);
    sim.close(file);
    sim.assert_clean_unload();
}
