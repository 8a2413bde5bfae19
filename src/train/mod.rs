//! Training the Light U-net family with the original recipe (SPEC.md): data loading and
//! augmentation ([`data`]), losses ([`loss`]), PyTorch-exact optimizers ([`optim`]), plateau
//! schedule and early stopping ([`schedule`]), atomic checkpoints ([`checkpoint`]), the per-epoch
//! history ([`history`]), the training-curve plot ([`plot`]) and the loop tying them together
//! ([`trainer`]).

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod history;
pub mod loss;
pub mod optim;
pub mod plot;
pub mod schedule;
pub mod trainer;

pub use config::{DataLayout, TrainConfig};
pub use history::EpochRecord;
pub use trainer::{Outcome, Trainer};
