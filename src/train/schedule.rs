//! The learning-rate schedule and the stopping rule of the original recipe, as plain state that
//! serialises into the resumable checkpoint.
//!
//! - [`Plateau`]: `torch.optim.lr_scheduler.ReduceLROnPlateau(mode="min", factor=0.5,
//!   patience=5)` with PyTorch's defaults otherwise (relative threshold 1e-4, no cooldown,
//!   min_lr 0).
//! - [`EarlyStop`]: keep the best validation loss; stop once `min_epochs` are done and
//!   `patience` epochs in a row brought no improvement, or after `max_epochs`.

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

#[cfg(test)]
mod tests {
    use super::*;

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
