//! Thread priorities for live video: what may wait (the model on the latest-mask worker, the
//! recording's encoder) runs at a higher nice value than what may not (capture, drawing, pushing
//! to the display), so that on a machine with fewer cores than busy threads the display path is
//! scheduled first and the model takes the time that is left.
//!
//! Linux keeps a nice value per thread (`setpriority(PRIO_PROCESS, tid, ..)`), and a thread
//! inherits it from the thread that creates it: lowering a worker's priority before it starts
//! its helpers (a rayon pool, x264's threads) lowers theirs too. Raising a nice value needs no
//! privilege; lowering it below where it was would, so only increases are asked for.

/// Highest nice value (the lowest priority) Linux has.
pub const MAX_NICE: i32 = 19;

/// Sets the calling thread's nice value to `nice` (0 to [`MAX_NICE`]) when that lowers its
/// priority; a value at or below the current one leaves it as it is. Elsewhere than on Linux,
/// nothing happens.
pub fn lower_this_thread(nice: i32) -> std::io::Result<()> {
    imp::lower_this_thread(nice.clamp(0, MAX_NICE))
}

/// The calling thread's nice value (Linux; `None` elsewhere or when it cannot be read).
pub fn this_thread_nice() -> Option<i32> {
    imp::this_thread_nice()
}

#[cfg(target_os = "linux")]
mod imp {
    fn tid() -> libc::id_t {
        // SAFETY: gettid has no preconditions and cannot fail.
        unsafe { libc::gettid() as libc::id_t }
    }

    pub fn this_thread_nice() -> Option<i32> {
        // getpriority returns -1 both as a value and as an error: errno tells them apart.
        // SAFETY: errno is thread-local; the calls take plain integers.
        unsafe {
            *libc::__errno_location() = 0;
            let v = libc::getpriority(libc::PRIO_PROCESS, tid());
            (v != -1 || *libc::__errno_location() == 0).then_some(v)
        }
    }

    pub fn lower_this_thread(nice: i32) -> std::io::Result<()> {
        if this_thread_nice().is_some_and(|now| now >= nice) {
            return Ok(());
        }
        // SAFETY: PRIO_PROCESS with a thread id changes only that thread on Linux.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid(), nice) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub fn this_thread_nice() -> Option<i32> {
        None
    }

    pub fn lower_this_thread(_nice: i32) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the thread that asks is lowered; the threads it starts afterwards inherit it; a
    /// lower value than the current one is not an error and changes nothing.
    #[test]
    #[cfg(target_os = "linux")]
    fn lowers_only_this_thread_and_its_children() {
        let before = this_thread_nice().unwrap();
        let target = (before + 5).min(MAX_NICE);
        let (mine, child) = std::thread::spawn(move || {
            lower_this_thread(target).unwrap();
            lower_this_thread(0).unwrap();
            let child = std::thread::spawn(this_thread_nice).join().unwrap();
            (this_thread_nice(), child)
        })
        .join()
        .unwrap();
        assert_eq!((mine, child), (Some(target), Some(target)));
        assert_eq!(this_thread_nice(), Some(before), "the caller's own thread is untouched");
    }
}
