//! The per-epoch history of a run: one [`EpochRecord`] per finished epoch (a line of
//! `log.jsonl`, a point of the curves, part of the resumable state) and the running sums
//! ([`EpochAccum`]) of the epoch in progress.

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// One finished epoch (a line of log.jsonl).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub steps: u64,
    pub train_loss: f64,
    pub train_dice: f64,
    pub val_loss: f64,
    pub val_dice: f64,
    pub lr: f64,
    pub seconds: f64,
    pub best: bool,
    /// With `--ema`: the weight average's validation loss and Dice, and which weights were the
    /// epoch's candidate for best (`"ema"` or `"model"`, the lower loss). Absent otherwise, so
    /// the original recipe's log has the original's fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_val_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_val_dice: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected: Option<String>,
}

/// Running sums over the batches of the current epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochAccum {
    pub loss_sum: f64,
    pub dice_sum: f64,
    pub images: usize,
    pub seconds: f64,
}

/// `log.jsonl`: one JSON object per finished epoch, in order, each line ending in a newline.
pub fn history_jsonl(history: &[EpochRecord]) -> Result<String> {
    let mut s = String::new();
    for r in history {
        s.push_str(&serde_json::to_string(r)?);
        s.push('\n');
    }
    Ok(s)
}
