//! Requests of any bytes, from three handles, through `Device::request` on a usersim device:
//! nothing panics, replies fit their buffers, and closing every handle leaves nothing mapped.
//!
//! The input is a sequence of requests, each `[handle, code, output_len, len_lo, len_hi,
//! input bytes...]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmap_core::Capacity;
use ringmap_core::abi::{Request, Status};
use ringmap_core::device::{HandleId, Outcome};

fuzz_target!(|data: &[u8]| {
    let device = ringmap_usersim::server::new_device(Capacity::new(4 * 4096).unwrap())
        .expect("a usersim device");
    let mut rest = data;
    let mut output = [0u8; 256];
    while rest.len() >= 5 {
        let handle = HandleId(u64::from(rest[0] % 3));
        let code = u32::from(rest[1] % 8);
        let output_len = usize::from(rest[2]).min(output.len());
        let len = usize::from(u16::from_le_bytes([rest[3], rest[4]])).min(rest.len() - 5);
        let input = &rest[5..5 + len];
        rest = &rest[5 + len..];
        let Some(request) = Request::from_code(code) else {
            continue;
        };
        let outcome = device.request(handle, request, input, &mut output[..output_len], || {
            Err(Status::DeviceBusy)
        });
        if let Ok(Outcome::Done(n)) = outcome {
            assert!(
                n <= output_len,
                "a {n}-byte reply in a {output_len}-byte buffer"
            );
        }
        if request == Request::Generate {
            // Its producers would outlive the input.
            device.stop_generator();
        }
    }
    for handle in 0..3 {
        device.close(HandleId(handle));
    }
    device.stop_generator();
    assert_eq!(device.stats_reply().mapped, 0);
});
