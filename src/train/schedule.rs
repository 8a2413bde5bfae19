//! The learning-rate schedule and the stopping rule of the original recipe, as plain state that
//! serialises into the resumable checkpoint.
//!
//! - [`Plateau`]: `torch.optim.lr_scheduler.ReduceLROnPlateau(mode="min", factor=0.5,
//!   patience=5)` with PyTorch's defaults otherwise (relative threshold 1e-4, no cooldown,
//!   min_lr 0).
//! - [`EarlyStop`]: keep the best validation loss; stop once `min_epochs` are done and
//!   `patience` epochs in a row brought no improvement, or after `max_epochs`.
//! - [`StepSchedule`] (`--schedule cosine` or `one-cycle`, with `--warmup-epochs`): a learning
//!   rate per optimizer step, laid over `max_epochs` when the run starts.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plateau {
    pub factor: f64,
    pub patience: usize,
    pub threshold: f64,
    pub best: Option<f64>,
    pub bad_epochs: usize,
}

impl Plateau {
    pub fn new(factor: f64, patience: usize) -> Self {
        Self { factor, patience, threshold: 1e-4, best: None, bad_epochs: 0 }
    }

    /// Feeds one epoch's validation loss; returns the new learning rate.
    pub fn step(&mut self, val_loss: f64, lr: f64) -> f64 {
        let better = match self.best {
            None => true,
            Some(b) => val_loss < b * (1.0 - self.threshold),
        };
        if better {
            self.best = Some(val_loss);
            self.bad_epochs = 0;
        } else {
            self.bad_epochs += 1;
        }
        if self.bad_epochs > self.patience {
            self.bad_epochs = 0;
            return lr * self.factor;
        }
        lr
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStop {
    pub patience: usize,
    pub min_epochs: usize,
    pub max_epochs: usize,
    pub best: Option<f64>,
    /// 1-based epoch that gave `best`.
    pub best_epoch: usize,
    pub since_best: usize,
}

impl EarlyStop {
    pub fn new(patience: usize, min_epochs: usize, max_epochs: usize) -> Self {
        Self { patience, min_epochs, max_epochs, best: None, best_epoch: 0, since_best: 0 }
    }

    /// Feeds the validation loss of 1-based `epoch`; returns whether it is the best so far.
    pub fn update(&mut self, epoch: usize, val_loss: f64) -> bool {
        let improved = val_loss.is_finite() && self.best.is_none_or(|b| val_loss < b);
        if improved {
            self.best = Some(val_loss);
            self.best_epoch = epoch;
            self.since_best = 0;
        } else {
            self.since_best += 1;
        }
        improved
    }

    /// Whether training should stop after 1-based `epoch`.
    pub fn should_stop(&self, epoch: usize) -> bool {
        epoch >= self.max_epochs || (epoch >= self.min_epochs && self.since_best >= self.patience)
    }
}

/// How the learning rate changes over a run (`train --schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// The original: [`Plateau`] on the validation loss, once per epoch.
    #[default]
    Plateau,
    /// Step by step: optional linear warm-up to the learning rate, then cosine decay towards 0
    /// at the last step of the last epoch ([`StepSchedule`]).
    Cosine,
    /// Step by step: one cycle ([`StepSchedule`]).
    OneCycle,
}

/// One-cycle: the first learning rate is the peak divided by this (PyTorch's `div_factor`).
pub const ONE_CYCLE_DIV: f64 = 25.0;
/// One-cycle: the last learning rate is the first divided by this (`final_div_factor`).
pub const ONE_CYCLE_FINAL_DIV: f64 = 1e4;
/// One-cycle: the share of the steps spent rising when no warm-up is given (`pct_start`).
pub const ONE_CYCLE_RISE: f64 = 0.3;

/// A learning rate for every optimizer step, laid over the whole run when it starts
/// (`max_epochs` x steps per epoch) and kept in the run state, so a resumed run continues on the
/// same curve from its step count. `lr(step)` is the rate of update number `step` (0-based).
///
/// - cosine: `peak (step + 1) / W` during the `W` warm-up steps, then
///   `peak (1 + cos(pi (step - W) / (T - W))) / 2` (PyTorch's `CosineAnnealingLR` after the
///   warm-up; the last of the `T` steps gets a small positive rate, never 0);
/// - one-cycle: from `peak / 25` up linearly to `peak` at step `W - 1` (`W` the warm-up steps,
///   30 % of the run when none is given), then cosine down to `peak / 25 / 1e4` at step `T - 1`:
///   PyTorch's `OneCycleLR` with a linear rise, as the issue asked for a linear warm-up. The
///   momentum (Adam's beta1) is not cycled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepSchedule {
    pub kind: ScheduleKind,
    pub peak_lr: f64,
    pub total_steps: u64,
    pub warmup_steps: u64,
}

impl StepSchedule {
    /// The schedule of a run, `None` for the plateau schedule (it changes the rate per epoch).
    pub fn new(kind: ScheduleKind, peak_lr: f64, steps_per_epoch: usize, epochs: usize, warmup_epochs: usize) -> Option<Self> {
        let total_steps = (steps_per_epoch.max(1) * epochs.max(1)) as u64;
        let given = (steps_per_epoch * warmup_epochs) as u64;
        let warmup_steps = match kind {
            ScheduleKind::Plateau => return None,
            ScheduleKind::Cosine => given.min(total_steps.saturating_sub(1)),
            ScheduleKind::OneCycle => {
                let w = if given > 0 { given } else { (ONE_CYCLE_RISE * total_steps as f64).round() as u64 };
                w.clamp(1, total_steps.saturating_sub(1).max(1))
            }
        };
        Some(Self { kind, peak_lr, total_steps, warmup_steps })
    }

    pub fn lr(&self, step: u64) -> f64 {
        let last = self.total_steps.saturating_sub(1);
        let t = step.min(last);
        let w = self.warmup_steps;
        let half_cos = |p: f64| 0.5 * (1.0 + (std::f64::consts::PI * p.clamp(0.0, 1.0)).cos());
        match self.kind {
            ScheduleKind::Plateau => self.peak_lr,
            ScheduleKind::Cosine => {
                if t < w {
                    self.peak_lr * (t + 1) as f64 / w as f64
                } else {
                    let span = (self.total_steps - w).max(1);
                    self.peak_lr * half_cos((t - w) as f64 / span as f64)
                }
            }
            ScheduleKind::OneCycle => {
                let first = self.peak_lr / ONE_CYCLE_DIV;
                let end = first / ONE_CYCLE_FINAL_DIV;
                let top = w.saturating_sub(1);
                if t < top {
                    first + (self.peak_lr - first) * t as f64 / top as f64
                } else {
                    let span = last.saturating_sub(top).max(1);
                    end + (self.peak_lr - end) * half_cos((t - top) as f64 / span as f64)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1e-300)
    }

    /// 10 steps per epoch, 10 epochs, 2 warm-up epochs: 20 linear warm-up steps to the peak,
    /// then half a cosine over the other 80.
    #[test]
    fn cosine_warms_up_linearly_then_decays() {
        let s = StepSchedule::new(ScheduleKind::Cosine, 1e-3, 10, 10, 2).unwrap();
        assert_eq!((s.total_steps, s.warmup_steps), (100, 20));
        assert!(close(s.lr(0), 1e-3 / 20.0));
        assert!(close(s.lr(9), 1e-3 * 10.0 / 20.0));
        assert!(close(s.lr(19), 1e-3));
        assert!(close(s.lr(20), 1e-3));
        // Half-way through the decay: peak / 2; a quarter: peak (1 + cos(pi/4)) / 2.
        assert!(close(s.lr(60), 0.5e-3));
        assert!(close(s.lr(40), 1e-3 * (1.0 + std::f64::consts::FRAC_1_SQRT_2) / 2.0));
        // The last step gets a small rate, never 0; steps past the plan keep it.
        let last = 1e-3 * 0.5 * (1.0 + (std::f64::consts::PI * 79.0 / 80.0).cos());
        assert!(close(s.lr(99), last) && s.lr(99) > 0.0);
        assert_eq!(s.lr(150), s.lr(99));
        for t in 20..99 {
            assert!(s.lr(t + 1) < s.lr(t), "not decreasing at {t}");
        }
        // Without warm-up, PyTorch's CosineAnnealingLR(T_max=100) from the first step:
        // lr_t = 1e-3 (1 + cos(pi t / 100)) / 2.
        let plain = StepSchedule::new(ScheduleKind::Cosine, 1e-3, 10, 10, 0).unwrap();
        for t in [0u64, 1, 37, 99] {
            let want = 1e-3 * 0.5 * (1.0 + (std::f64::consts::PI * t as f64 / 100.0).cos());
            assert!(close(plain.lr(t), want), "step {t}: {} vs {want}", plain.lr(t));
        }
    }

    /// PyTorch `OneCycleLR(max_lr=1e-3, total_steps=100, pct_start=0.3, anneal_strategy=..)`
    /// endpoints: starts at max_lr / 25, peaks at step 29, ends at max_lr / 25 / 1e4 at step 99;
    /// the rise is linear, the fall a half cosine.
    #[test]
    fn one_cycle_rises_linearly_and_falls_to_the_final_rate() {
        let s = StepSchedule::new(ScheduleKind::OneCycle, 1e-3, 10, 10, 0).unwrap();
        assert_eq!(s.warmup_steps, 30);
        let first = 1e-3 / 25.0;
        assert!(close(s.lr(0), first));
        assert!(close(s.lr(29), 1e-3));
        assert!(close(s.lr(10), first + (1e-3 - first) * 10.0 / 29.0));
        assert!(close(s.lr(99), first / 1e4));
        let mid = first / 1e4 + (1e-3 - first / 1e4) * 0.5 * (1.0 + (std::f64::consts::PI * 35.0 / 70.0).cos());
        assert!(close(s.lr(64), mid));
        // --warmup-epochs sets the rise: 1 epoch = 10 steps, peak at step 9.
        let w = StepSchedule::new(ScheduleKind::OneCycle, 1e-3, 10, 10, 1).unwrap();
        assert_eq!(w.warmup_steps, 10);
        assert!(close(w.lr(9), 1e-3) && w.lr(8) < 1e-3 && w.lr(10) < 1e-3);
        // Plateau has no step schedule: it changes the rate per epoch.
        assert!(StepSchedule::new(ScheduleKind::Plateau, 1e-3, 10, 10, 0).is_none());
    }

    /// A run of one step, or warm-up as long as the run, stays finite and positive.
    #[test]
    fn degenerate_schedules_stay_finite() {
        for kind in [ScheduleKind::Cosine, ScheduleKind::OneCycle] {
            for (spe, epochs, warmup) in [(1, 1, 0), (1, 1, 1), (3, 2, 2), (1, 5, 4)] {
                let s = StepSchedule::new(kind, 1e-2, spe, epochs, warmup).unwrap();
                for t in 0..s.total_steps + 2 {
                    let lr = s.lr(t);
                    assert!(lr.is_finite() && lr > 0.0 && lr <= 1e-2, "{kind:?} {spe} {epochs} {warmup} step {t}: {lr}");
                }
            }
        }
    }

    #[test]
    fn plateau_halves_after_patience_plus_one_bad_epochs() {
        let mut p = Plateau::new(0.5, 2);
        let mut lr = 1.0;
        for loss in [1.0, 1.0, 1.0] {
            lr = p.step(loss, lr);
        }
        assert_eq!(lr, 1.0);
        lr = p.step(1.0, lr);
        assert_eq!(lr, 0.5);
        lr = p.step(0.5, lr);
        assert_eq!(lr, 0.5);
    }

    #[test]
    fn early_stop_waits_for_min_epochs() {
        let mut e = EarlyStop::new(2, 5, 100);
        assert!(e.update(1, 1.0));
        for ep in 2..=4 {
            assert!(!e.update(ep, 2.0));
            assert!(!e.should_stop(ep));
        }
        e.update(5, 2.0);
        assert!(e.should_stop(5));
        assert!(EarlyStop::new(2, 5, 3).should_stop(3));
    }
}
