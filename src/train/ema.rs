//! An exponential moving average of the weights (`train --ema DECAY`): a second network whose
//! every variable follows the trained one, `ema <- d ema + (1 - d) w` after each optimizer step.
//! The BatchNorm running statistics are averaged too (timm's `ModelEmaV2` does the same), so the
//! averaged network is a complete model: it is evaluated on val each epoch beside the trained
//! one, and its weights become `best.safetensors` when they win.
//!
//! The decay ramps up as TensorFlow's `ExponentialMovingAverage(num_updates=..)` does:
//! `d_t = min(decay, (1 + t) / (10 + t))` for update `t` (0-based). With a plain 0.999 the
//! average of a screening run (15 epochs of BUSI are about 850 steps) would still carry a third
//! of the random initialisation (0.999^850 = 0.43); the ramp lets it follow early training.
//! The update count is the optimizer's step count, so the checkpoint needs only the averages.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::error::{Error, Result};
use crate::model::{UNet, Variant};

/// Checkpoint names of the averages: `ema.<PyTorch name>`.
pub const EMA_PREFIX: &str = "ema.";

pub struct Ema {
    decay: f64,
    net: UNet,
    /// `(name, trained variable, its average)`, sorted by name.
    pairs: Vec<(String, Var, Var)>,
    /// Keeps the averages' variables alive with `net`.
    _varmap: VarMap,
}

/// The decay of update `t` (0-based) for a target `decay`.
pub fn decay_at(decay: f64, t: u64) -> f64 {
    decay.min((1.0 + t as f64) / (10.0 + t as f64))
}

impl Ema {
    /// An average of the variables of `model` (a network of `variant`), starting equal to them.
    pub fn new(decay: f64, model: &VarMap, variant: Variant, device: &Device) -> Result<Self> {
        let varmap = VarMap::new();
        let net = UNet::new(variant, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        let pairs = {
            let trained = model.data().lock().map_err(|_| Error::Poisoned("variable map"))?;
            let averages = varmap.data().lock().map_err(|_| Error::Poisoned("variable map"))?;
            let mut names: Vec<&String> = trained.keys().collect();
            names.sort();
            let mut pairs = Vec::with_capacity(names.len());
            for name in names {
                let w = &trained[name];
                let e = averages.get(name).ok_or_else(|| Error::Input(format!("the averaged network has no variable {name}")))?;
                e.set(&w.as_tensor().detach())?;
                pairs.push((name.clone(), w.clone(), e.clone()));
            }
            pairs
        };
        Ok(Self { decay, net, pairs, _varmap: varmap })
    }

    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// The averaged network (evaluate it with `train = false`).
    pub fn net(&self) -> &UNet {
        &self.net
    }

    /// One update, after optimizer step `t` (0-based).
    pub fn update(&self, t: u64) -> Result<()> {
        let d = decay_at(self.decay, t);
        for (name, w, e) in &self.pairs {
            let w = w.as_tensor().detach();
            if name.ends_with("num_batches_tracked") {
                e.set(&w)?; // a count, not a weight
                continue;
            }
            let next = (e.as_tensor().detach().affine(d, 0.0)? + w.affine(1.0 - d, 0.0)?)?;
            e.set(&next)?;
        }
        Ok(())
    }

    /// The averages under their PyTorch names, sorted (what `best.safetensors` holds).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.pairs.iter().map(|(n, _, e)| (n.clone(), e.as_tensor().clone())).collect()
    }

    /// Restores the averages from a checkpoint's tensors (`ema.<name>`); each must be there with
    /// its variable's shape.
    pub fn load(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (name, _, e) in &self.pairs {
            let key = format!("{EMA_PREFIX}{name}");
            let t = tensors.get(&key).ok_or_else(|| Error::Input(format!("no {key} in the checkpoint (the run was started without --ema?)")))?;
            if t.dims() != e.dims() {
                return Err(Error::TensorShape { what: key, expected: e.dims().to_vec(), got: t.dims().to_vec() });
            }
            e.set(&t.to_device(e.device())?.to_dtype(e.dtype())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_ramps_up_to_the_target() {
        assert_eq!(decay_at(0.999, 0), 0.1);
        assert_eq!(decay_at(0.999, 90), 91.0 / 100.0);
        assert_eq!(decay_at(0.999, 100_000), 0.999);
        assert_eq!(decay_at(0.5, 5), 0.4);
        assert_eq!(decay_at(0.5, 20), 0.5);
    }

    /// The average starts at the weights and follows `e <- d e + (1 - d) w` with the ramped `d`,
    /// against the rule written out in f64 on one weight and one running statistic; it saves
    /// and loads back bit for bit, and a missing tensor is refused.
    #[test]
    fn update_rule_and_round_trip() -> Result<()> {
        let v = Variant::Lighter(1);
        let model = VarMap::new();
        UNet::new(v, VarBuilder::from_varmap(&model, DType::F32, &Device::Cpu))?;
        let ema = Ema::new(0.9, &model, v, &Device::Cpu)?;
        // A convolution weight and a running statistic.
        let names: Vec<String> = {
            let vars = model.data().lock().unwrap();
            let mut all: Vec<&String> = vars.keys().collect();
            all.sort();
            let weight = all.iter().find(|n| n.ends_with(".weight") && vars[**n].dims().len() == 4).unwrap();
            let stat = all.iter().find(|n| n.ends_with(".running_var")).unwrap();
            vec![weight.to_string(), stat.to_string()]
        };
        let get = |m: &VarMap, n: &str| m.data().lock().unwrap()[n].clone();
        let start: Vec<Vec<f32>> = names.iter().map(|n| get(&model, n).as_tensor().flatten_all().unwrap().to_vec1().unwrap()).collect();
        let mut want: Vec<Vec<f64>> = start.iter().map(|v| v.iter().map(|&x| f64::from(x)).collect()).collect();
        for t in 0..4u64 {
            // New "trained" values: w_k = sin(k + t).
            let mut w_now = Vec::new();
            for (n, start) in names.iter().zip(&start) {
                let var = get(&model, n);
                let vals: Vec<f32> = (0..start.len()).map(|k| ((k as f64 + t as f64).sin()) as f32).collect();
                var.set(&Tensor::from_vec(vals.clone(), var.shape(), &Device::Cpu)?)?;
                w_now.push(vals);
            }
            ema.update(t)?;
            let d = decay_at(0.9, t);
            for (w, vals) in want.iter_mut().zip(&w_now) {
                for (e, &x) in w.iter_mut().zip(vals) {
                    *e = d * *e + (1.0 - d) * f64::from(x);
                }
            }
        }
        let got: HashMap<String, Tensor> = ema.named_tensors().into_iter().collect();
        for (n, w) in names.iter().zip(&want) {
            let g = got[n].flatten_all()?.to_vec1::<f32>()?;
            for (a, b) in g.iter().zip(w) {
                assert!((f64::from(*a) - b).abs() < 1e-6, "{n}: {a} vs {b}");
            }
        }
        // Round trip through checkpoint names.
        let saved: HashMap<String, Tensor> = ema.named_tensors().into_iter().map(|(n, t)| (format!("{EMA_PREFIX}{n}"), t.copy().unwrap())).collect();
        let other = Ema::new(0.9, &model, v, &Device::Cpu)?;
        other.load(&saved)?;
        for ((n, a), (_, b)) in ema.named_tensors().iter().zip(other.named_tensors()) {
            assert_eq!(a.flatten_all()?.to_vec1::<f32>()?, b.flatten_all()?.to_vec1::<f32>()?, "{n}");
        }
        let mut missing = saved.clone();
        missing.remove(&format!("{EMA_PREFIX}{}", names[0]));
        assert!(other.load(&missing).unwrap_err().to_string().contains(&names[0]));
        Ok(())
    }
}
