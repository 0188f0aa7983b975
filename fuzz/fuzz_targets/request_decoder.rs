//! Requests of any bytes, from three handles, through the driver's own code (its
//! EvtIoInCallerContext, queue and the core's decoder) on the simulated kernel: nothing panics,
//! no kernel rule is broken, replies fit their buffers, and when every handle is closed and the
//! driver unloaded nothing is left behind.
//!
//! The input is a sequence of requests, each `[handle, code, output_len, len_lo, len_hi,
//! input bytes...]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmap_core::Capacity;
use ringmap_core::abi::Request;
use ringmap_usersim::server::LoadedDriver;

fuzz_target!(|data: &[u8]| {
    let driver = LoadedDriver::load(Capacity::new(4 * 4096).unwrap()).expect("the driver loads");
    let sim = driver.sim();
    let files = [sim.open(), sim.open(), sim.open()];
    let mut rest = data;
    while rest.len() >= 5 {
        let file = files[usize::from(rest[0] % 3)];
        let code = u32::from(rest[1] % 8);
        let output_len = usize::from(rest[2]);
        let len = usize::from(u16::from_le_bytes([rest[3], rest[4]])).min(rest.len() - 5);
        let input = &rest[5..5 + len];
        rest = &rest[5 + len..];
        let Some(request) = Request::from_code(code) else {
            continue;
        };
        let irp = sim.ioctl(file, request.ioctl(), input, output_len);
        if let Some((_, output)) = irp.result() {
            assert!(
                output.len() <= output_len,
                "a {}-byte reply in a {output_len}-byte buffer",
                output.len()
            );
        }
        // A QUERY may pend: the handle's cleanup below cancels it.
    }
    for file in files {
        sim.close(file);
    }
    let report = driver.unload();
    assert!(report.is_clean(), "{report}");
});
