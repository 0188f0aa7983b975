//! Ctrl-C (SIGINT) and SIGTERM as a flag that long-running subcommands check between records,
//! so that they stop cleanly: return exactly the space of what they handled, remove what they
//! created, print what they have.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::CliError;

/// Set once SIGINT or SIGTERM arrived (after [`install`]).
#[derive(Clone, Debug)]
pub struct Interrupted(Arc<AtomicBool>);

impl Interrupted {
    /// Whether a signal arrived.
    pub fn is_set(&self) -> bool {
        // Relaxed: a flag that orders no data; the handler only stores it.
        self.0.load(Ordering::Relaxed)
    }
}

/// Turns SIGINT and SIGTERM into the returned flag instead of ending the process. On
/// Windows, where the console's Ctrl-C handler is not hooked, the flag is never set.
pub fn install() -> Result<Interrupted, CliError> {
    let flag = Arc::new(AtomicBool::new(false));
    #[cfg(target_os = "linux")]
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, flag.clone())
            .map_err(|e| CliError::msg(format!("cannot catch Ctrl-C: {e}.")))?;
    }
    Ok(Interrupted(flag))
}
