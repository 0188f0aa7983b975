//! Bytes a client might send, cut into the pieces they arrive in, fed to a usersim
//! connection: the framing and the device behind it never panic, and the connection's end
//! leaves nothing mapped.
//!
//! The first byte picks the pieces' size (1 ..= 256); the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmap_core::Capacity;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece) + 1;
    let device = ringmap_usersim::server::new_device(Capacity::new(4 * 4096).unwrap())
        .expect("a usersim device");
    let chunks: Vec<&[u8]> = stream.chunks(piece).collect();
    ringmap_usersim::server::feed_connection(&device, &chunks).expect("a connection");
    device.stop_generator();
    assert_eq!(device.stats_reply().mapped, 0);
});
