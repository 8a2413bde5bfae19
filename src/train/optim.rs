//! Optimizers with PyTorch's update rules, as tensor ops on the parameters' own device:
//! - Adam (`torch.optim.Adam`): the L2 weight decay is added to the gradient *before* the
//!   moments (not AdamW's decoupled decay); eps outside the square root, after bias correction.
//! - SGD (`torch.optim.SGD`): weight decay added to the gradient, momentum buffer initialised to
//!   the first gradient, no dampening, no Nesterov.
//!
//! The state (step count and per-parameter moments) is exported as named tensors for resumable
//! checkpoints and loads back bit for bit.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adam,
    Sgd,
}

/// Hyper-parameters (serialised into config.json).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// SGD momentum.
    pub momentum: f64,
}

/// One optimizer over a fixed, named list of parameters.
pub struct Optimizer {
    cfg: OptimizerConfig,
    params: Vec<(String, Var)>,
    /// Adam: `(exp_avg, exp_avg_sq)`; SGD: `(momentum_buffer, unused)`. `None` before the first
    /// update of that parameter, as in PyTorch.
    state: Vec<Option<(Tensor, Tensor)>>,
    step: u64,
}

impl Optimizer {
    /// `params` in a fixed order (the order of the state in checkpoints does not depend on it:
    /// state is keyed by name).
    pub fn new(cfg: OptimizerConfig, params: Vec<(String, Var)>) -> Self {
        let state = vec![None; params.len()];
        Self { cfg, params, state, step: 0 }
    }

    pub fn lr(&self) -> f64 {
        self.cfg.lr
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// Updates taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    pub fn config(&self) -> &OptimizerConfig {
        &self.cfg
    }

    /// One update from `grads` (parameters without a gradient are left alone).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let c = self.cfg;
        let t = self.step as i32;
        for ((_, var), state) in self.params.iter().zip(self.state.iter_mut()) {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            // Detached: the parameter is a variable, so ops on it would be recorded, and the
            // moments would chain every step's graph to the previous one (unbounded memory).
            let p = var.as_tensor().detach();
            let g = g.detach();
            let g = if c.weight_decay != 0.0 { (g + p.affine(c.weight_decay, 0.0)?)? } else { g };
            match c.kind {
                OptimizerKind::Adam => {
                    let (m, v) = match state.take() {
                        Some((m, v)) => (m, v),
                        None => (g.zeros_like()?, g.zeros_like()?),
                    };
                    let m = (m.affine(c.beta1, 0.0)? + g.affine(1.0 - c.beta1, 0.0)?)?;
                    let v = (v.affine(c.beta2, 0.0)? + g.sqr()?.affine(1.0 - c.beta2, 0.0)?)?;
                    let bc1 = 1.0 - c.beta1.powi(t);
                    let bc2 = 1.0 - c.beta2.powi(t);
                    let denom = v.sqrt()?.affine(1.0 / bc2.sqrt(), c.eps)?;
                    let update = (m.affine(c.lr / bc1, 0.0)? / denom)?;
                    var.set(&(&p - update)?)?;
                    *state = Some((m, v));
                }
                OptimizerKind::Sgd => {
                    let buf = match state.take() {
                        Some((b, _)) if c.momentum != 0.0 => (b.affine(c.momentum, 0.0)? + &g)?,
                        _ => g,
                    };
                    var.set(&(&p - buf.affine(c.lr, 0.0)?)?)?;
                    let unused = buf.zeros_like()?;
                    *state = Some((buf, unused));
                }
            }
        }
        Ok(())
    }

    /// The name of the first parameter whose gradient holds NaN or an infinity, if any. One sum
    /// per gradient (NaN and infinities survive a sum), gathered into one transfer from the
    /// device; run before [`Optimizer::step`], so that a bad gradient never reaches the weights.
    pub fn first_non_finite_gradient(&self, grads: &GradStore) -> Result<Option<String>> {
        let mut names = Vec::new();
        let mut sums = Vec::new();
        for (name, var) in &self.params {
            if let Some(g) = grads.get(var.as_tensor()) {
                names.push(name);
                sums.push(g.sum_all()?.to_dtype(candle_core::DType::F32)?);
            }
        }
        if sums.is_empty() {
            return Ok(None);
        }
        let sums = Tensor::stack(&sums, 0)?.to_vec1::<f32>()?;
        Ok(sums.iter().position(|s| !s.is_finite()).map(|i| names[i].clone()))
    }

    /// The moments as named tensors: `exp_avg.<param>` / `exp_avg_sq.<param>` (Adam) or
    /// `momentum_buffer.<param>` (SGD).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for ((name, _), s) in self.params.iter().zip(&self.state) {
            if let Some((a, b)) = s {
                match self.cfg.kind {
                    OptimizerKind::Adam => {
                        out.push((format!("exp_avg.{name}"), a.clone()));
                        out.push((format!("exp_avg_sq.{name}"), b.clone()));
                    }
                    OptimizerKind::Sgd => out.push((format!("momentum_buffer.{name}"), a.clone())),
                }
            }
        }
        out
    }

    /// Restores what [`Optimizer::state_tensors`] exported, after `step` updates. Tensors are
    /// moved to each parameter's device; a shape mismatch is an error.
    pub fn load_state(&mut self, step: u64, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.step = step;
        for ((name, var), s) in self.params.iter().zip(self.state.iter_mut()) {
            let get = |prefix: &str| -> Result<Option<Tensor>> {
                match tensors.get(&format!("{prefix}.{name}")) {
                    None => Ok(None),
                    Some(t) if t.dims() != var.dims() => Err(Error::TensorShape {
                        what: format!("optimizer state {prefix}.{name}"),
                        expected: var.dims().to_vec(),
                        got: t.dims().to_vec(),
                    }),
                    Some(t) => Ok(Some(t.to_device(var.device())?.to_dtype(var.dtype())?)),
                }
            };
            *s = match self.cfg.kind {
                OptimizerKind::Adam => match (get("exp_avg")?, get("exp_avg_sq")?) {
                    (Some(m), Some(v)) => Some((m, v)),
                    _ => None,
                },
                OptimizerKind::Sgd => match get("momentum_buffer")? {
                    Some(b) => {
                        let z = b.zeros_like()?;
                        Some((b, z))
                    }
                    None => None,
                },
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn cfg(kind: OptimizerKind) -> OptimizerConfig {
        OptimizerConfig { kind, lr: 0.1, weight_decay: 0.5, beta1: 0.9, beta2: 0.999, eps: 1e-8, momentum: 0.9 }
    }

    /// torch.optim.Adam(lr=0.1, weight_decay=0.5) on (p**2).sum(), written out in f64 as
    /// PyTorch's single-tensor Adam computes it (L2 added to the gradient, eps after the
    /// bias-corrected square root).
    #[test]
    fn adam_matches_pytorch_rule() -> Result<()> {
        let p = Var::new(&[1f32, -2.0], &Device::Cpu)?;
        let mut opt = Optimizer::new(cfg(OptimizerKind::Adam), vec![("p".into(), p.clone())]);
        let mut want = [1f64, -2.0];
        let (mut m, mut v) = ([0f64; 2], [0f64; 2]);
        for t in 1..=3 {
            let loss = p.as_tensor().sqr()?.sum_all()?;
            opt.step(&loss.backward()?)?;
            for i in 0..2 {
                let g = 2.0 * want[i] + 0.5 * want[i];
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                let denom = v[i].sqrt() / (1.0 - 0.999f64.powi(t)).sqrt() + 1e-8;
                want[i] -= 0.1 / (1.0 - 0.9f64.powi(t)) * m[i] / denom;
            }
        }
        let got = p.as_tensor().to_vec1::<f32>()?;
        for i in 0..2 {
            assert!((f64::from(got[i]) - want[i]).abs() < 1e-5, "{got:?} vs {want:?}");
        }
        Ok(())
    }

    /// torch SGD(lr=0.1, momentum=0.9, weight_decay=0.5) on (p**2).sum() from p = 1:
    /// g1 = 2 + 0.5 = 2.5, p = 0.75; g2 = 1.5 + 0.375 = 1.875, buf = 2.25 + 1.875 = 4.125,
    /// p = 0.75 - 0.4125 = 0.3375.
    #[test]
    fn sgd_matches_pytorch_rule() -> Result<()> {
        let p = Var::new(&[1f32], &Device::Cpu)?;
        let mut opt = Optimizer::new(cfg(OptimizerKind::Sgd), vec![("p".into(), p.clone())]);
        for _ in 0..2 {
            let loss = p.as_tensor().sqr()?.sum_all()?;
            opt.step(&loss.backward()?)?;
        }
        let v = p.as_tensor().to_vec1::<f32>()?;
        assert!((v[0] - 0.3375).abs() < 1e-6, "{v:?}");
        Ok(())
    }
}
