//! The bench's Linux-only peers: the BPF ringbuf through raw `bpf()` (no libbpf, no clang),
//! and a plain cross-process eventfd wake.

use std::sync::OnceLock;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Instant;

use super::{Backoff, Run, cpu_since, thread_cpu, timed};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
const BPF_FUNC_RINGBUF_RESERVE: i32 = 131;
const BPF_FUNC_RINGBUF_SUBMIT: i32 = 132;
const BPF_RB_NO_WAKEUP: i32 = 1;
const BPF_RINGBUF_BUSY_BIT: u32 = 1 << 31;
const BPF_RINGBUF_DISCARD_BIT: u32 = 1 << 30;
const BPF_RINGBUF_HDR_SZ: u64 = 8;
/// What the BPF program writes into each record.
const BPF_PAYLOAD: u64 = 0x5eed;
/// Records per `BPF_PROG_TEST_RUN` (its `repeat`): the producer waits for room for this many
/// before each run, since a BPF program cannot wait for the consumer.
const BPF_CHUNK: u64 = 1024;
const PAGE: usize = 4096;

/// `bpf(cmd, attr)`: the file descriptor or 0 it returns, or the errno.
fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> Result<i32, std::io::Error> {
    // SAFETY: `attr` is a zeroed-then-filled `union bpf_attr` of 128 bytes, which the kernel
    // reads (and, for test runs, writes) within that size.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(result as i32)
    }
}

/// One `struct bpf_insn`: opcode, registers, offset, immediate.
const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    code as u64
        | ((dst | src << 4) as u64) << 8
        | (off as u16 as u64) << 16
        | (imm as u32 as u64) << 32
}

/// A 1 MiB ringbuf map and the program that writes one 8-byte record into it per run.
struct BpfRing {
    map: i32,
    prog: i32,
}

impl BpfRing {
    fn new() -> Result<BpfRing, String> {
        let mut attr = [0u64; 16];
        // map_type, key_size, value_size, max_entries.
        attr[0] = u64::from(BPF_MAP_TYPE_RINGBUF);
        attr[1] = (super::RING_BYTES as u64) << 32;
        let map = bpf(BPF_MAP_CREATE, &mut attr).map_err(|e| format!("ringbuf map: {e}"))?;
        let program = [
            // r1 = the map (ld_imm64 with BPF_PSEUDO_MAP_FD), r2 = 8, r3 = 0.
            insn(0x18, 1, 1, 0, map),
            insn(0, 0, 0, 0, 0),
            insn(0xb7, 2, 0, 0, 8),
            insn(0xb7, 3, 0, 0, 0),
            // r0 = bpf_ringbuf_reserve(map, 8, 0); if r0 == 0 goto out.
            insn(0x85, 0, 0, 0, BPF_FUNC_RINGBUF_RESERVE),
            insn(0x15, 0, 0, 4, 0),
            // *(u64 *)r0 = BPF_PAYLOAD; bpf_ringbuf_submit(r0, BPF_RB_NO_WAKEUP).
            insn(0x7a, 0, 0, 0, BPF_PAYLOAD as i32),
            insn(0xbf, 1, 0, 0, 0),
            insn(0xb7, 2, 0, 0, BPF_RB_NO_WAKEUP),
            insn(0x85, 0, 0, 0, BPF_FUNC_RINGBUF_SUBMIT),
            // out: return 0.
            insn(0xb7, 0, 0, 0, 0),
            insn(0x95, 0, 0, 0, 0),
        ];
        let license = c"GPL";
        let mut attr = [0u64; 16];
        // prog_type, insn_cnt, insns, license.
        attr[0] = u64::from(BPF_PROG_TYPE_SOCKET_FILTER) | (program.len() as u64) << 32;
        attr[1] = program.as_ptr() as u64;
        attr[2] = license.as_ptr() as u64;
        let prog = match bpf(BPF_PROG_LOAD, &mut attr) {
            Ok(prog) => prog,
            Err(e) => {
                // SAFETY: our own descriptor, closed once.
                unsafe { libc::close(map) };
                return Err(format!("program load: {e}"));
            }
        };
        Ok(BpfRing { map, prog })
    }

    /// Runs the program `repeat` times in the kernel: `repeat` records (or drops, if full).
    fn run(&self, repeat: u64) -> Result<(), std::io::Error> {
        let packet = [0u8; 64];
        let mut attr = [0u64; 16];
        // prog_fd, retval, data_size_in, data_size_out, data_in, data_out, repeat.
        attr[0] = self.prog as u64;
        attr[1] = packet.len() as u64;
        attr[2] = packet.as_ptr() as u64;
        attr[4] = repeat;
        bpf(BPF_PROG_TEST_RUN, &mut attr).map(drop)
    }
}

impl Drop for BpfRing {
    fn drop(&mut self) {
        // SAFETY: our own descriptors, closed once.
        unsafe {
            libc::close(self.prog);
            libc::close(self.map);
        }
    }
}

/// The map's pages as libbpf maps them: the consumer page read-write, the producer page and
/// the data (mapped twice by the kernel) read-only.
struct BpfView {
    consumer: *mut libc::c_void,
    producer: *mut libc::c_void,
}

impl BpfView {
    fn new(map: i32) -> Result<BpfView, std::io::Error> {
        let data = 2 * super::RING_BYTES;
        // SAFETY: mmaps of the ringbuf map's descriptor, at the offsets and sizes the kernel
        // offers (libbpf's `ringbuf_map_mmap`); unmapped in `drop`.
        unsafe {
            let consumer = libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map,
                0,
            );
            if consumer == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            let producer = libc::mmap(
                std::ptr::null_mut(),
                PAGE + data,
                libc::PROT_READ,
                libc::MAP_SHARED,
                map,
                PAGE as libc::off_t,
            );
            if producer == libc::MAP_FAILED {
                let error = std::io::Error::last_os_error();
                libc::munmap(consumer, PAGE);
                return Err(error);
            }
            Ok(BpfView { consumer, producer })
        }
    }

    fn consumer_pos(&self) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: the first word of the mapped, 8-aligned consumer page, shared with the kernel.
        unsafe { &*self.consumer.cast() }
    }

    fn producer_pos(&self) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: as for `consumer_pos`.
        unsafe { &*self.producer.cast() }
    }

    /// The `len` word of the record at `pos`.
    fn header(&self, pos: u64) -> &std::sync::atomic::AtomicU32 {
        let index = (pos & (super::RING_BYTES as u64 - 1)) as usize;
        // SAFETY: an 8-aligned index inside the first copy of the data, after the page.
        unsafe { &*self.producer.cast::<u8>().add(PAGE + index).cast() }
    }

    /// libbpf's `ringbuf_process_ring`: every committed record up to the producer position,
    /// stopping at a busy one; the consumer position is released after each record. Returns
    /// the records handled and how many carried something else than the program writes.
    fn consume(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::{Acquire, Release};
        let (mut handled, mut wrong) = (0, 0);
        let mut cons = self.consumer_pos().load(Acquire);
        loop {
            let mut got_new = false;
            let prod = self.producer_pos().load(Acquire);
            while cons < prod {
                let len = self.header(cons).load(Acquire);
                if len & BPF_RINGBUF_BUSY_BIT != 0 {
                    return (handled, wrong);
                }
                got_new = true;
                let size = u64::from(len & !(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT));
                if len & BPF_RINGBUF_DISCARD_BIT == 0 {
                    let index = (cons & (super::RING_BYTES as u64 - 1)) as usize;
                    // SAFETY: the committed record's 8 payload bytes, after its header.
                    let value = unsafe {
                        self.producer
                            .cast::<u8>()
                            .add(PAGE + index + BPF_RINGBUF_HDR_SZ as usize)
                            .cast::<u64>()
                            .read_volatile()
                    };
                    wrong += u64::from(value != BPF_PAYLOAD);
                    handled += 1;
                }
                cons += (size + BPF_RINGBUF_HDR_SZ + 7) & !7;
                self.consumer_pos().store(cons, Release);
            }
            if !got_new {
                return (handled, wrong);
            }
        }
    }
}

impl Drop for BpfView {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with these sizes, unmapped once.
        unsafe {
            libc::munmap(self.consumer, PAGE);
            libc::munmap(self.producer, PAGE + 2 * super::RING_BYTES);
        }
    }
}

// SAFETY: the view is addresses of shared pages, accessed atomically or read-only.
unsafe impl Sync for BpfView {}

/// Why the BPF ringbuf cannot run here, if it cannot (tried once).
pub(super) fn bpf_unavailable() -> Option<&'static str> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| {
        let ring = match BpfRing::new() {
            Ok(ring) => ring,
            Err(e) => return Some(format!("skipped: needs root / bpf() ({e})")),
        };
        let view = match BpfView::new(ring.map) {
            Ok(view) => view,
            Err(e) => return Some(format!("skipped: ringbuf mmap: {e}")),
        };
        if let Err(e) = ring.run(1) {
            return Some(format!("skipped: BPF_PROG_TEST_RUN: {e}"));
        }
        if view.consume() != (1, 0) {
            return Some("skipped: the BPF program's record did not arrive".to_owned());
        }
        None
    })
    .as_deref()
}

/// The BPF ringbuf: `producers` threads each running the program in chunks (waiting for room
/// for every producer's chunk first, as ringmap's producers wait on a full ring), this one
/// consuming as libbpf does.
pub(super) fn run_bpf(producers: usize, records: u64) -> Option<Run> {
    let ring = BpfRing::new().ok()?;
    let view = BpfView::new(ring.map).ok()?;
    let (ring, view) = (&ring, &view);
    let chunks = (records / producers as u64).div_ceil(BPF_CHUNK);
    let total = chunks * BPF_CHUNK * producers as u64;
    // Bytes a chunk of every producer can take at most.
    let room = producers as u64 * BPF_CHUNK * 16;
    // The program drops a record when its reserve fails (a handful in millions, even with
    // room: the kernel's reserve is not the producer's to retry), so the consumer stops
    // once every producer is done and the ring is drained, and the rate counts the records
    // that arrived.
    let finished = AtomicUsize::new(0);
    let arrived = AtomicU64::new(0);
    let run = timed(
        producers,
        |_| {
            let mut full = Backoff::default();
            for _ in 0..chunks {
                loop {
                    let used =
                        view.producer_pos().load(Acquire) - view.consumer_pos().load(Acquire);
                    if used + room <= super::RING_BYTES as u64 {
                        break;
                    }
                    full.wait();
                }
                full.reset();
                if ring.run(BPF_CHUNK).is_err() {
                    break;
                }
            }
            // Release: the consumer's acquire of the count sees every run's records.
            finished.fetch_add(1, Release);
            full.total
        },
        || {
            let mut seen = 0;
            let mut wrong = 0;
            let mut empty = Backoff::default();
            loop {
                // Acquire: pairs with the producers' release; loaded before the drain.
                let done = finished.load(Acquire) == producers;
                let (handled, bad) = view.consume();
                wrong += bad;
                seen += handled;
                if handled == 0 {
                    if done {
                        break;
                    }
                    empty.wait();
                } else {
                    empty.reset();
                }
            }
            arrived.store(seen, Relaxed);
            (wrong, empty.total)
        },
    );
    let arrived = arrived.load(Relaxed);
    if arrived < total / 2 {
        return None;
    }
    // `timed`'s caller divides `records` by the time: scale it to the records that arrived.
    Some(Run {
        elapsed: run.elapsed.mul_f64(records as f64 / arrived as f64),
        ..run
    })
}

/// A plain cross-process wake: this process and a forked child ping-pong `records / 2`
/// times over two eventfds, each side blocked in `read` until the other writes. Each record
/// is one wake (a write, then the blocked reader on the other side returns).
pub(super) fn run_eventfd_wake(records: u64) -> Option<Run> {
    let round_trips = (records / 2).max(1);
    // SAFETY: plain system calls; the child runs only async-signal-safe calls (read, write,
    // _exit) after the fork, as a multi-threaded parent requires.
    unsafe {
        let ping = libc::eventfd(0, 0);
        let pong = libc::eventfd(0, 0);
        if ping < 0 || pong < 0 {
            return None;
        }
        let one = 1u64.to_ne_bytes();
        let mut got = [0u8; 8];
        let child = libc::fork();
        if child < 0 {
            return None;
        }
        if child == 0 {
            for _ in 0..round_trips {
                if libc::read(ping, got.as_mut_ptr().cast(), 8) != 8
                    || libc::write(pong, one.as_ptr().cast(), 8) != 8
                {
                    libc::_exit(1);
                }
            }
            libc::_exit(0);
        }
        let cpu = thread_cpu();
        let start = Instant::now();
        let mut ok = true;
        for _ in 0..round_trips {
            if libc::write(ping, one.as_ptr().cast(), 8) != 8
                || libc::read(pong, got.as_mut_ptr().cast(), 8) != 8
            {
                ok = false;
                break;
            }
        }
        let elapsed = start.elapsed();
        let cpu = cpu_since(cpu);
        let mut status = 0;
        libc::waitpid(child, &mut status, 0);
        libc::close(ping);
        libc::close(pong);
        if !ok || status != 0 {
            return None;
        }
        Some(Run {
            elapsed: elapsed.mul_f64(records as f64 / (2 * round_trips) as f64),
            full_retries: 0,
            cpu,
            empty_polls: None,
        })
    }
}
