//! An event-loop consumer (Linux): the mapping's descriptor goes into `poll(2)` (it could as
//! well go into epoll, mio or tokio's `AsyncFd`) next to whatever else the loop waits for,
//! and becomes readable when the record at the consumer's position is committed, like
//! libbpf's `ring_buffer__epoll_fd`. Reads the number of records given as the first
//! argument (default 10), then stops; gives up after five seconds with nothing new.
//!
//! ```sh
//! ringmap serve &
//! cargo run -p ringmap-client --example event_loop -- 3 &
//! cargo run -p ringmap-client --example producer -- a b c
//! ```

#[cfg(target_os = "linux")]
fn main() -> Result<(), ringmap_client::Error> {
    use std::ops::ControlFlow;

    use rustix::event::{PollFd, PollFlags, Timespec, poll};

    let wanted: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("the number of records to read"))
        .unwrap_or(10);
    let device = ringmap_client::Device::open()?;
    let mut mapping = device.map()?;
    mapping.notify()?;
    let mut seen = 0;
    while seen < wanted {
        let timeout = Timespec {
            tv_sec: 5,
            tv_nsec: 0,
        };
        let mut fds = [PollFd::new(&mapping, PollFlags::IN)];
        let ready = match poll(&mut fds, Some(&timeout)) {
            Ok(ready) => ready,
            Err(rustix::io::Errno::INTR) => continue,
            Err(errno) => return Err(ringmap_client::Error::Io(errno.into())),
        };
        if ready == 0 {
            eprintln!("nothing new for five seconds");
            break;
        }
        mapping.consume(|record| {
            if seen == wanted {
                return ControlFlow::Break(());
            }
            println!("{}", String::from_utf8_lossy(&record));
            seen += 1;
            ControlFlow::Continue(())
        })?;
    }
    eprintln!("read {seen} records");
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("this example uses the Linux descriptor; on Windows use Mapping::poll");
}
