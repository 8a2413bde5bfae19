//! Ctrl-C and SIGTERM. The first asks the work to finish cleanly (the caller polls the flag: EOS
//! and finalised outputs, or a checkpoint); a second exits at once; and if the work has not ended
//! within its grace period after the first, the process exits anyway, so that a stuck thread can
//! never keep it alive (a panicked inference thread once left `process` deaf even to SIGTERM).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Installs the handler and returns the flag it sets. `finishing` is printed on the first
/// interrupt; `grace` is how long the work may take to end after it.
pub fn install(finishing: &'static str, grace: Duration) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let res = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("second interrupt: exiting at once (the unfinished outputs are removed)");
            exit_now();
        }
        eprintln!("interrupt: {finishing} (Ctrl-C again to exit at once)");
        // Detached on purpose: it ends the process if nothing else does first.
        let _ = std::thread::Builder::new().name("lightunet-interrupt-watchdog".into()).spawn(move || {
            std::thread::sleep(grace);
            eprintln!("still running {} s after the interrupt: exiting (the unfinished outputs are removed)", grace.as_secs());
            exit_now();
        });
    });
    if let Err(e) = res {
        tracing::warn!("cannot install the Ctrl-C handler: {e}");
    }
    stop
}

/// Ends the process at once, removing the temporary files of outputs not yet moved into place
/// (a half-written output never appears under its name, nor lingers under a temporary one).
pub fn exit_now() -> ! {
    lightunet::output::discard_pending();
    std::process::exit(i32::from(super::exit::INTERRUPTED))
}
