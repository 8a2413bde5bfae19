//! The training configuration: the original recipe as defaults, every knob overridable, and the
//! whole thing serialised into config.json and the resumable checkpoint. The options added after
//! the original recipe (schedule, warm-up, weight average, augmentation set) default to the
//! original's behaviour, also when read from a checkpoint written before they existed.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::loss::LossKind;
use super::optim::{OptimizerConfig, OptimizerKind};
use super::schedule::ScheduleKind;
use super::ultrasound::AugmentSet;
use crate::error::{Error, Result};
use crate::model::Variant;

/// Folder names inside the data root (the original layout by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataLayout {
    pub root: PathBuf,
    pub train: String,
    pub val: String,
    pub images: String,
    pub masks: String,
}

impl DataLayout {
    pub fn new(root: PathBuf) -> Self {
        Self { root, train: "train".into(), val: "val".into(), images: "images".into(), masks: "mask".into() }
    }

    /// `(images, masks)` folders of `split`.
    pub fn dirs(&self, split: &str) -> (PathBuf, PathBuf) {
        let base = self.root.join(split);
        (base.join(&self.images), base.join(&self.masks))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// `unet`, `light` or `lighter@C`.
    pub variant: String,
    pub data: DataLayout,
    pub loss: LossKind,
    pub optimizer: OptimizerConfig,
    pub batch: usize,
    /// Images are resized to `size x size`.
    pub size: usize,
    pub max_epochs: usize,
    /// Early stopping is considered only from this epoch on.
    pub min_epochs: usize,
    /// Epochs without a better validation loss before stopping.
    pub early_stop_patience: usize,
    pub plateau_patience: usize,
    pub plateau_factor: f64,
    pub augment: bool,
    pub seed: u64,
    /// Stop (with a resumable checkpoint) after this many optimizer steps in total.
    pub max_steps: Option<u64>,
    /// Weights the run started from (fine-tuning) instead of a seeded initialisation.
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// The learning-rate schedule (the original: plateau).
    #[serde(default)]
    pub schedule: ScheduleKind,
    /// Linear warm-up of a cosine or one-cycle schedule, in epochs (0: none; one-cycle then
    /// rises over 30 % of the run).
    #[serde(default)]
    pub warmup_epochs: usize,
    /// Decay of the weight average evaluated beside the trained weights each epoch (`None`:
    /// none, the original).
    #[serde(default)]
    pub ema: Option<f64>,
    /// Which augmentation, when `augment` is on (the original's set by default).
    #[serde(default)]
    pub augment_set: AugmentSet,
}

/// The original's weight decay: 1e-4 for U-net and Lighter@128, 1e-3 for Light U-net, 1e-2 for
/// Lighter@1. Other Lighter@C were not published; they get 1e-4 like the @128 model.
pub fn default_weight_decay(v: Variant) -> f64 {
    match v {
        Variant::UNet => 1e-4,
        Variant::Light => 1e-3,
        Variant::Lighter(1) => 1e-2,
        Variant::Lighter(_) => 1e-4,
    }
}

impl TrainConfig {
    /// The original recipe for `variant` on the data in `root`.
    pub fn recipe(variant: Variant, root: PathBuf) -> Self {
        Self {
            variant: variant.to_string(),
            data: DataLayout::new(root),
            loss: LossKind::Dice,
            optimizer: OptimizerConfig {
                kind: OptimizerKind::Adam,
                lr: 1e-4,
                weight_decay: default_weight_decay(variant),
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                momentum: 0.9,
            },
            batch: 8,
            size: 256,
            max_epochs: 200,
            min_epochs: 50,
            early_stop_patience: 15,
            plateau_patience: 5,
            plateau_factor: 0.5,
            augment: true,
            seed: 0,
            max_steps: None,
            init: None,
            schedule: ScheduleKind::Plateau,
            warmup_epochs: 0,
            ema: None,
            augment_set: AugmentSet::Original,
        }
    }

    pub fn variant(&self) -> Result<Variant> {
        self.variant.parse()
    }

    /// Rejects values no run could use, before any data is read. Every number is checked to be
    /// finite and in its range here, so that `--momentum NaN` is refused up front instead of
    /// surfacing later as a diverged loss.
    pub fn validate(&self) -> Result<()> {
        self.variant()?;
        let bad = |m: String| Err(Error::InvalidSetting(m));
        crate::model::check_input(self.batch, self.size, self.size)?;
        let o = &self.optimizer;
        let check = |name: &str, v: f64, in_range: bool, range: &str| {
            if v.is_finite() && in_range {
                Ok(())
            } else {
                bad(format!("{name} must be a finite number in {range}, got {v}"))
            }
        };
        check("learning rate", o.lr, o.lr > 0.0 && o.lr <= 1.0, "(0, 1]")?;
        check("weight decay", o.weight_decay, (0.0..=1.0).contains(&o.weight_decay), "[0, 1]")?;
        check("momentum", o.momentum, (0.0..1.0).contains(&o.momentum), "[0, 1)")?;
        check("Adam beta1", o.beta1, (0.0..1.0).contains(&o.beta1), "[0, 1)")?;
        check("Adam beta2", o.beta2, (0.0..1.0).contains(&o.beta2), "[0, 1)")?;
        check("Adam eps", o.eps, o.eps > 0.0 && o.eps <= 1.0, "(0, 1]")?;
        check("plateau factor", self.plateau_factor, self.plateau_factor > 0.0 && self.plateau_factor < 1.0, "(0, 1)")?;
        if self.max_epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if let Some(d) = self.ema {
            check("EMA decay", d, d > 0.0 && d < 1.0, "(0, 1)")?;
        }
        if self.warmup_epochs > 0 {
            if self.schedule == ScheduleKind::Plateau {
                return bad("a warm-up needs a step-wise schedule (--schedule cosine or one-cycle)".into());
            }
            if self.warmup_epochs >= self.max_epochs {
                return bad(format!("the warm-up ({} epochs) must be shorter than the run ({} epochs)", self.warmup_epochs, self.max_epochs));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config of a checkpoint written before the new options existed (copied from one such
    /// checkpoint, the data root shortened) reads back as the original recipe: plateau, no
    /// warm-up, no average, the original augmentation.
    #[test]
    fn old_checkpoint_config_reads_as_the_original_recipe() {
        let old = r#"{"variant":"lighter@1","data":{"root":"/data","train":"train","val":"val","images":"images","masks":"mask"},"loss":"dice","optimizer":{"kind":"adam","lr":0.0001,"weight_decay":0.01,"beta1":0.9,"beta2":0.999,"eps":1e-8,"momentum":0.9},"batch":8,"size":256,"max_epochs":200,"min_epochs":50,"early_stop_patience":15,"plateau_patience":5,"plateau_factor":0.5,"augment":true,"seed":0,"max_steps":null,"init":null}"#;
        let cfg: TrainConfig = serde_json::from_str(old).unwrap();
        assert_eq!(cfg, TrainConfig::recipe(Variant::Lighter(1), PathBuf::from("/data")));
        assert_eq!((cfg.schedule, cfg.warmup_epochs, cfg.ema, cfg.augment_set), (ScheduleKind::Plateau, 0, None, AugmentSet::Original));
    }

    #[test]
    fn new_options_are_checked() {
        let base = TrainConfig::recipe(Variant::Lighter(1), PathBuf::from("/data"));
        let err = |f: &dyn Fn(&mut TrainConfig)| {
            let mut c = base.clone();
            f(&mut c);
            c.validate().err().map(|e| e.to_string())
        };
        assert_eq!(err(&|_| {}), None);
        assert!(err(&|c| c.ema = Some(1.0)).unwrap().contains("EMA decay"));
        assert!(err(&|c| c.ema = Some(f64::NAN)).unwrap().contains("EMA decay"));
        assert_eq!(err(&|c| c.ema = Some(0.999)), None);
        assert!(err(&|c| c.warmup_epochs = 2).unwrap().contains("--schedule cosine"));
        assert_eq!(err(&|c| { c.schedule = ScheduleKind::Cosine; c.warmup_epochs = 2 }), None);
        assert!(err(&|c| { c.schedule = ScheduleKind::OneCycle; c.warmup_epochs = 200 }).unwrap().contains("shorter than the run"));
    }
}
