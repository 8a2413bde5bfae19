//! Gradient checks of the custom ops in `model::ops`: `grouped_conv3x3` (w.r.t. input, weight
//! and bias) and `upsample2x`, against central finite differences and against candle's own
//! (slow, per-group) convolution, forward and backward.
//!
//! The custom ops are f32 only, so the finite differences are taken in f32 on a loss
//! `L = sum(y * r)` (fixed random `r`) accumulated in f64. Both ops are linear in each
//! argument, so central differences are exact up to rounding: eps 1e-2, tolerance 2e-3.

use candle_core::{Device, Result, Tensor, Var};
use lightunet::model::ops::{grouped_conv3x3, upsample2x};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rand_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn rand_t(rng: &mut ChaCha8Rng, shape: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(rand_vec(rng, shape.iter().product()), shape, &Device::Cpu)
}

/// `sum(y * r)` in f64.
fn weighted_sum(y: &Tensor, r: &[f32]) -> Result<f64> {
    let y = y.flatten_all()?.to_vec1::<f32>()?;
    Ok(y.iter().zip(r).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum())
}

/// Central finite differences of `f` at every element of `at`.
fn finite_diff(at: &Tensor, f: &dyn Fn(&Tensor) -> Result<f64>) -> Result<Vec<f64>> {
    let eps = 1e-2f32;
    let base = at.flatten_all()?.to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(base.len());
    for i in 0..base.len() {
        let mut plus = base.clone();
        plus[i] += eps;
        let mut minus = base.clone();
        minus[i] -= eps;
        let fp = f(&Tensor::from_vec(plus, at.shape(), &Device::Cpu)?)?;
        let fm = f(&Tensor::from_vec(minus, at.shape(), &Device::Cpu)?)?;
        out.push((fp - fm) / (2.0 * f64::from(eps)));
    }
    Ok(out)
}

fn assert_close(what: &str, got: &Tensor, want: &[f64], tol: f64) -> Result<()> {
    let got = got.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(*g) - w).abs();
        assert!(err <= tol * (1.0 + w.abs()), "{what}[{i}]: analytic {g}, expected {w} (error {err:e})");
    }
    Ok(())
}

fn to_f64(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f64::from).collect())
}

/// One configuration: `n` images of `c` channels, `k` input channels per group, `h x w`.
fn check_grouped(n: usize, c: usize, k: usize, h: usize, w: usize, seed: u64) -> Result<()> {
    let what = format!("grouped_conv3x3 n{n} c{c} k{k} {h}x{w}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = rand_t(&mut rng, &[n, c, h, w])?;
    let wt = rand_t(&mut rng, &[c, k, 3, 3])?;
    let b = rand_t(&mut rng, &[c])?;
    let r = rand_vec(&mut rng, n * c * h * w);
    let rt = Tensor::from_vec(r.clone(), (n, c, h, w), &Device::Cpu)?;

    // Analytic gradients of the custom op.
    let (xv, wv, bv) = (Var::from_tensor(&x)?, Var::from_tensor(&wt)?, Var::from_tensor(&b)?);
    let y = grouped_conv3x3(xv.as_tensor(), wv.as_tensor(), bv.as_tensor())?;
    let grads = (&y * &rt)?.sum_all()?.backward()?;
    let gx = grads.get(xv.as_tensor()).expect("grad x");
    let gw = grads.get(wv.as_tensor()).expect("grad w");
    let gb = grads.get(bv.as_tensor()).expect("grad b");

    // Finite differences.
    let fx = finite_diff(&x, &|x| weighted_sum(&grouped_conv3x3(x, &wt, &b)?, &r))?;
    let fw = finite_diff(&wt, &|w| weighted_sum(&grouped_conv3x3(&x, w, &b)?, &r))?;
    let fb = finite_diff(&b, &|b| weighted_sum(&grouped_conv3x3(&x, &wt, b)?, &r))?;
    assert_close(&format!("{what} d/dx vs finite differences"), gx, &fx, 2e-3)?;
    assert_close(&format!("{what} d/dw vs finite differences"), gw, &fw, 2e-3)?;
    assert_close(&format!("{what} d/db vs finite differences"), gb, &fb, 2e-3)?;

    // candle's grouped convolution (one conv per group + concat), with candle's autograd.
    let (xr, wr, br) = (Var::from_tensor(&x)?, Var::from_tensor(&wt)?, Var::from_tensor(&b)?);
    let yr = xr.as_tensor().conv2d(wr.as_tensor(), 1, 1, 1, c / k)?.broadcast_add(&br.as_tensor().reshape((1, c, 1, 1))?)?;
    assert_close(&format!("{what} forward vs candle conv2d"), &y, &to_f64(&yr)?, 1e-5)?;
    let gr = (&yr * &rt)?.sum_all()?.backward()?;
    assert_close(&format!("{what} d/dx vs candle"), gx, &to_f64(gr.get(xr.as_tensor()).expect("x"))?, 1e-4)?;
    assert_close(&format!("{what} d/dw vs candle"), gw, &to_f64(gr.get(wr.as_tensor()).expect("w"))?, 1e-4)?;
    assert_close(&format!("{what} d/db vs candle"), gb, &to_f64(gr.get(br.as_tensor()).expect("b"))?, 1e-4)?;
    Ok(())
}

#[test]
fn grouped_conv_depthwise_k1() -> Result<()> {
    check_grouped(2, 4, 1, 5, 6, 1)
}

#[test]
fn grouped_conv_k2() -> Result<()> {
    check_grouped(2, 4, 2, 5, 4, 2)
}

/// The first layer of Lighter@C (C != 1): 3 input channels, one group of 3.
#[test]
fn grouped_conv_first_layer_k3() -> Result<()> {
    check_grouped(2, 3, 3, 6, 5, 3)
}

#[test]
fn grouped_conv_k4() -> Result<()> {
    check_grouped(1, 8, 4, 4, 7, 4)
}

/// Degenerate planes: one row, one column (every tap is at a border).
#[test]
fn grouped_conv_thin_planes() -> Result<()> {
    check_grouped(1, 2, 1, 1, 5, 5)?;
    check_grouped(1, 4, 2, 6, 1, 6)
}

fn check_upsample(n: usize, c: usize, h: usize, w: usize, seed: u64) -> Result<()> {
    let what = format!("upsample2x n{n} c{c} {h}x{w}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = rand_t(&mut rng, &[n, c, h, w])?;
    let r = rand_vec(&mut rng, n * c * 4 * h * w);
    let rt = Tensor::from_vec(r.clone(), (n, c, 2 * h, 2 * w), &Device::Cpu)?;
    let xv = Var::from_tensor(&x)?;
    let y = upsample2x(xv.as_tensor())?;
    assert_eq!(y.dims(), &[n, c, 2 * h, 2 * w]);
    let grads = (&y * &rt)?.sum_all()?.backward()?;
    let gx = grads.get(xv.as_tensor()).expect("grad x");
    let fx = finite_diff(&x, &|x| weighted_sum(&upsample2x(x)?, &r))?;
    assert_close(&format!("{what} d/dx vs finite differences"), gx, &fx, 2e-3)?;
    // Forward against candle's bilinear upsampling with align_corners=True.
    let yr = x.upsample_bilinear2d(2 * h, 2 * w, true)?;
    assert_close(&format!("{what} forward vs candle"), &y, &to_f64(&yr)?, 1e-5)
}

#[test]
fn upsample2x_gradients() -> Result<()> {
    check_upsample(2, 3, 4, 5, 10)?;
    check_upsample(1, 2, 3, 3, 11)?;
    check_upsample(1, 1, 1, 4, 12)
}

/// `lightunet check --grad` on a GPU compares each custom op and one whole Lighter U-net@1
/// training step with the CPU. Here, on the CPU against itself, it must cover every op the
/// training graph runs (BatchNorm, channel sums, max-pool, the convolution, upsampling, the
/// whole step), run without error on the odd shapes it uses, and agree exactly: any difference
/// would be nondeterminism in the CPU ops, which the GPU comparison could not tell from a
/// kernel fault.
#[test]
fn device_gradient_check_covers_the_training_graph() -> lightunet::error::Result<()> {
    let cases = lightunet::model::parity::grad_check(&Device::Cpu)?;
    for what in ["grad grouped_conv3x3", "grad upsample2x", "batch norm train", "channel sums", "maxpool2x2 train", "train step lighter@1 [2,3,64,64] logits", "train step lighter@1 gradients"] {
        assert!(cases.iter().any(|c| c.name.starts_with(what)), "no case for {what}");
    }
    let step = cases.iter().find(|c| c.name.starts_with("train step lighter@1 gradients")).expect("train step case");
    assert!(!step.name.contains("(0 compared"), "{}", step.name);
    for c in &cases {
        assert_eq!(c.max_abs_diff, 0.0, "{}", c.name);
    }
    Ok(())
}
