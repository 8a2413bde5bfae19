//! Time per kind of op in a forward pass, to see where GPU time goes on a machine without a
//! profiler (`lightunet bench model --profile`).
//!
//! GPU work is asynchronous, so timing an op means waiting for the device after it. While
//! [`profile`] runs a closure on this thread, every [`mark`] synchronises the tensor's device and
//! charges the time since the previous mark to its label; the sum over labels is the whole
//! pass. Outside [`profile`] a mark costs one thread-local lookup. The synchronisation itself
//! slows the pass (the GPU idles while the host launches the next op), so compare the shares,
//! and the total against the same run's unprofiled time, not the absolute times with `bench
//! model`'s.

use std::cell::RefCell;
use std::time::Instant;

use candle_core::Tensor;

/// Accumulated time per label, in the order labels first appeared.
#[derive(Debug, Default, Clone)]
pub struct OpTimes {
    /// `(label, seconds, calls)`.
    pub entries: Vec<(&'static str, f64, usize)>,
}

impl OpTimes {
    fn add(&mut self, label: &'static str, s: f64) {
        self.merge(&OpTimes { entries: vec![(label, s, 1)] });
    }

    /// Adds `other`'s times and calls into these.
    pub fn merge(&mut self, other: &OpTimes) {
        for &(label, s, calls) in &other.entries {
            match self.entries.iter_mut().find(|e| e.0 == label) {
                Some(e) => {
                    e.1 += s;
                    e.2 += calls;
                }
                None => self.entries.push((label, s, calls)),
            }
        }
    }

    /// Times and calls multiplied by `k` (calls rounded): totals over `n` passes -> per pass.
    pub fn scaled(&self, k: f64) -> OpTimes {
        OpTimes { entries: self.entries.iter().map(|&(l, s, c)| (l, s * k, (c as f64 * k).round() as usize)).collect() }
    }

    /// Sum over all labels, in seconds.
    pub fn total(&self) -> f64 {
        self.entries.iter().map(|e| e.1).sum()
    }
}

struct Active {
    times: OpTimes,
    last: Instant,
}

thread_local! {
    static ACTIVE: RefCell<Option<Active>> = const { RefCell::new(None) };
}

/// Runs `f` with marks recording on this thread; returns its result and the times. `sync`
/// must leave the device idle first (the time before the first mark counts towards it).
pub fn profile<T, E>(sync: impl Fn() -> Result<(), E>, f: impl FnOnce() -> Result<T, E>) -> Result<(T, OpTimes), E> {
    sync()?;
    ACTIVE.with(|a| *a.borrow_mut() = Some(Active { times: OpTimes::default(), last: Instant::now() }));
    let out = f();
    let times = ACTIVE.with(|a| a.borrow_mut().take()).map(|a| a.times).unwrap_or_default();
    Ok((out?, times))
}

/// Passes `t` through; while profiling, first waits for its device and charges the time since
/// the previous mark to `label`.
pub(crate) fn mark(label: &'static str, t: Tensor) -> candle_core::Result<Tensor> {
    if ACTIVE.with(|a| a.borrow().is_none()) {
        return Ok(t);
    }
    t.device().synchronize()?;
    let now = Instant::now();
    ACTIVE.with(|a| {
        if let Some(a) = a.borrow_mut().as_mut() {
            let s = now.duration_since(a.last).as_secs_f64();
            a.times.add(label, s);
            a.last = now;
        }
    });
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn marks_count_only_inside_profile() -> candle_core::Result<()> {
        let t = Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu)?;
        mark("outside", t.clone())?;
        let ((), times) = profile(
            || Ok::<(), candle_core::Error>(()),
            || {
                mark("a", t.clone())?;
                std::thread::sleep(std::time::Duration::from_millis(5));
                mark("b", t.clone())?;
                mark("a", t.clone())?;
                Ok(())
            },
        )?;
        let labels: Vec<_> = times.entries.iter().map(|e| (e.0, e.2)).collect();
        assert_eq!(labels, [("a", 2), ("b", 1)]);
        let b = times.entries[1].1;
        assert!(b >= 0.005, "the sleep is charged to the mark after it: {b}");
        assert!((times.total() - times.entries.iter().map(|e| e.1).sum::<f64>()).abs() < 1e-12);
        // Recording stopped with the closure.
        mark("after", t)?;
        Ok(())
    }
}
