//! Training losses on the network's logits, all as candle graph ops (so they run and
//! differentiate on any device), and the hard Dice used for monitoring.

use candle_core::{Result, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::metrics::Confusion;

/// The original's three losses, and BCE + Dice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// `1 - mean_i 2|P_i G_i| / (|P_i| + |G_i|)` on probabilities, no smoothing term.
    Dice,
    /// Binary cross-entropy, mean over pixels.
    Bce,
    /// `0.995 * BCE + 0.005 * TV(P)`.
    Smooth,
    /// `BCE + Dice`, weights 1 and 1 as nnU-Net's `DC_and_CE_loss`: BCE on the logits, the soft
    /// Dice of [`LossKind::Dice`] on their sigmoid. BCE gives every pixel a gradient from the
    /// first step (Dice's is small while the prediction overlaps nothing); Dice keeps the
    /// small-lesion images from being outweighed by background pixels. The sum is about twice
    /// the scale of either loss, so the coupled L2 decay of the recipe weighs about half as much
    /// against it.
    #[serde(rename = "bce-dice")]
    BceDice,
}

/// The loss of a batch: `logits`, `target` `[N, 1, H, W]` (target 0/1) -> scalar.
pub fn loss(kind: LossKind, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    match kind {
        LossKind::Dice => dice_loss(&candle_nn::ops::sigmoid(logits)?, target),
        LossKind::Bce => bce_with_logits(logits, target),
        LossKind::Smooth => {
            let bce = bce_with_logits(logits, target)?;
            let tv = total_variation(&candle_nn::ops::sigmoid(logits)?)?;
            bce.affine(0.995, 0.0)? + tv.affine(0.005, 0.0)?
        }
        LossKind::BceDice => bce_with_logits(logits, target)? + dice_loss(&candle_nn::ops::sigmoid(logits)?, target)?,
    }
}

/// Soft Dice loss per image, averaged. The denominator is kept >= 1e-6 only so that an
/// all-background image with an all-zero prediction (impossible through a sigmoid in practice)
/// cannot produce NaN.
pub fn dice_loss(probs: &Tensor, target: &Tensor) -> Result<Tensor> {
    let n = probs.dim(0)?;
    let p = probs.reshape((n, ()))?;
    let g = target.reshape((n, ()))?;
    let inter = (&p * &g)?.sum(D::Minus1)?;
    let den = (p.sum(D::Minus1)? + g.sum(D::Minus1)?)?.clamp(1e-6f32, f32::MAX)?;
    let dice = (inter.affine(2.0, 0.0)? / den)?;
    dice.mean_all()?.affine(-1.0, 1.0)
}

/// `mean(max(x, 0) - x * y + log(1 + exp(-|x|)))`: BCE on logits without overflow.
pub fn bce_with_logits(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let softplus = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (logits.relu()? - (logits * target)?)?.add(&softplus)?.mean_all()
}

/// Anisotropic total variation: mean |vertical difference| + mean |horizontal difference|.
pub fn total_variation(probs: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = probs.dims4()?;
    let dv = (probs.narrow(2, 1, h - 1)? - probs.narrow(2, 0, h - 1)?)?.abs()?.mean_all()?;
    let dh = (probs.narrow(3, 1, w - 1)? - probs.narrow(3, 0, w - 1)?)?.abs()?.mean_all()?;
    dv + dh
}

/// Per-image confusion counts of `logits > 0` (probability > 0.5) against `target`: only
/// `3 N` numbers leave the device.
pub fn hard_confusions(logits: &Tensor, target: &Tensor) -> Result<Vec<Confusion>> {
    let n = logits.dim(0)?;
    let pixels = logits.elem_count() / n.max(1);
    let p = logits.gt(0f32)?.to_dtype(target.dtype())?.reshape((n, ()))?;
    let g = target.reshape((n, ()))?;
    let tp = (&p * &g)?.sum(D::Minus1)?;
    let ps = p.sum(D::Minus1)?;
    let gs = g.sum(D::Minus1)?;
    let all = Tensor::stack(&[tp, ps, gs], 0)?.to_device(&candle_core::Device::Cpu)?.to_vec2::<f32>()?;
    Ok((0..n)
        .map(|i| {
            let (tp, ps, gs) = (all[0][i] as usize, all[1][i] as usize, all[2][i] as usize);
            let (fp, fn_) = (ps.saturating_sub(tp), gs.saturating_sub(tp));
            Confusion { tp, fp, fn_, tn: pixels.saturating_sub(tp + fp + fn_) }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn bce_matches_direct_formula() -> Result<()> {
        let x = Tensor::new(&[[[[-3f32, 0.5], [2.0, 40.0]]]], &Device::Cpu)?;
        let y = Tensor::new(&[[[[0f32, 1.0], [1.0, 0.0]]]], &Device::Cpu)?;
        let got = bce_with_logits(&x, &y)?.to_scalar::<f32>()?;
        // -(t ln s(v) + (1 - t) ln(1 - s(v))) with ln s(v) = -ln(1 + e^-v) and
        // ln(1 - s(v)) = -v - ln(1 + e^-v), in f64.
        let want = [(-3f64, 0f64), (0.5, 1.0), (2.0, 1.0), (40.0, 0.0)]
            .iter()
            .map(|&(v, t)| {
                let l1p = (-v).exp().ln_1p();
                -(t * -l1p + (1.0 - t) * (-v - l1p))
            })
            .sum::<f64>()
            / 4.0;
        let want = want as f32;
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
        Ok(())
    }

    /// BCE + Dice on two 2x2 images, against the terms written out in f64: image 0 logits
    /// (2, -1, 0, 3) target (1, 0, 0, 1); image 1 logits (-2, -2, 1, -4) target (0, 0, 1, 0).
    /// torch: `F.binary_cross_entropy_with_logits(x, y) + (1 - (2 (p y).sum((1,2,3)) /
    /// (p.sum((1,2,3)) + y.sum((1,2,3)))).mean())` with `p = x.sigmoid()`.
    #[test]
    fn bce_dice_is_the_sum_of_both_terms() -> Result<()> {
        let logits = [[2f64, -1.0, 0.0, 3.0], [-2.0, -2.0, 1.0, -4.0]];
        let target = [[1f64, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]];
        let flat = |a: &[[f64; 4]; 2]| a.iter().flatten().map(|&v| v as f32).collect::<Vec<f32>>();
        let x = Tensor::from_vec(flat(&logits), (2, 1, 2, 2), &Device::Cpu)?;
        let y = Tensor::from_vec(flat(&target), (2, 1, 2, 2), &Device::Cpu)?;
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let mut bce = 0.0;
        let mut dice = 0.0;
        for (xs, ys) in logits.iter().zip(&target) {
            let (mut inter, mut sum) = (0.0, 0.0);
            for (&v, &t) in xs.iter().zip(ys) {
                bce += -(t * sig(v).ln() + (1.0 - t) * (1.0 - sig(v)).ln());
                inter += sig(v) * t;
                sum += sig(v) + t;
            }
            dice += 2.0 * inter / sum;
        }
        let want = bce / 8.0 + (1.0 - dice / 2.0);
        let got = f64::from(loss(LossKind::BceDice, &x, &y)?.to_scalar::<f32>()?);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // And it is exactly the sum of the two losses the trainer already uses.
        let parts = f64::from(loss(LossKind::Bce, &x, &y)?.to_scalar::<f32>()?) + f64::from(loss(LossKind::Dice, &x, &y)?.to_scalar::<f32>()?);
        assert!((got - parts).abs() < 1e-6, "{got} vs {parts}");
        // Finite for confident logits far beyond exp's f32 range (BCE on logits, not on p).
        let big = Tensor::from_vec(vec![200f32, -200.0, 200.0, -200.0], (1, 1, 2, 2), &Device::Cpu)?;
        let t = Tensor::from_vec(vec![0f32, 1.0, 1.0, 0.0], (1, 1, 2, 2), &Device::Cpu)?;
        let v = loss(LossKind::BceDice, &big, &t)?.to_scalar::<f32>()?;
        assert!(v.is_finite() && (v - 100.5).abs() < 1e-3, "{v}");
        Ok(())
    }

    #[test]
    fn loss_names_read_as_written() {
        assert_eq!(serde_json::to_string(&LossKind::BceDice).unwrap(), "\"bce-dice\"");
        assert_eq!(serde_json::from_str::<LossKind>("\"dice\"").unwrap(), LossKind::Dice);
        use clap::ValueEnum;
        assert_eq!(LossKind::from_str("bce-dice", false).unwrap(), LossKind::BceDice);
    }

    #[test]
    fn dice_loss_perfect_and_disjoint() -> Result<()> {
        let g = Tensor::new(&[[[[1f32, 0.0], [0.0, 0.0]]]], &Device::Cpu)?;
        assert!(dice_loss(&g, &g)?.to_scalar::<f32>()?.abs() < 1e-6);
        let p = Tensor::new(&[[[[0f32, 1.0], [0.0, 0.0]]]], &Device::Cpu)?;
        assert!((dice_loss(&p, &g)?.to_scalar::<f32>()? - 1.0).abs() < 1e-6);
        Ok(())
    }
}
