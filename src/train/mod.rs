//! Training the Light U-net family with the original recipe (SPEC.md): data loading and
//! augmentation ([`data`], and the ultrasound set in [`ultrasound`]), losses ([`loss`]),
//! PyTorch-exact optimizers ([`optim`]), plateau, cosine and one-cycle schedules and early
//! stopping ([`schedule`]), the weight average ([`ema`]), atomic checkpoints ([`checkpoint`]),
//! the per-epoch history ([`history`]), the training-curve plot ([`plot`]) and the loop tying
//! them together ([`trainer`]). Every option beyond the original recipe is off by default.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod ema;
pub mod history;
pub mod loss;
pub mod optim;
pub mod plot;
pub mod schedule;
pub mod trainer;
pub mod ultrasound;

pub use config::{DataLayout, TrainConfig};
pub use history::EpochRecord;
pub use trainer::{Outcome, Trainer};
