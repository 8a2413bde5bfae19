//! Runs the PyTorch parity fixtures (tests/fixtures/parity) on any device and dtype, for
//! `lightunet check` on a GPU machine and for the tests.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::inference::InferenceNet;
use super::ops::{self, batchnorm, maxpool};
use super::unet::{DoubleConv, Dropout, UNet, Up};
use super::variant::Variant;
use crate::error::{Error, Result};

/// One fixture case: its name and the largest absolute difference from PyTorch's output (for
/// the gradient checks: the largest difference relative to the CPU's largest value).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ParityCase {
    pub name: String,
    pub max_abs_diff: f32,
    /// The case's own bound where it has one (a whole training step adds up more rounding than
    /// one op); `None`: the caller's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f32>,
}

impl ParityCase {
    fn new(name: impl Into<String>, max_abs_diff: f32) -> Self {
        Self { name: name.into(), max_abs_diff, tolerance: None }
    }
}

fn load(dir: &Path, file: &str) -> Result<HashMap<String, Tensor>> {
    let path = dir.join(file);
    candle_core::safetensors::load(&path, &Device::Cpu)
        .map_err(|e| Error::Checkpoint { path, reason: e.to_string() })
}

fn max_diff(got: &Tensor, want: &Tensor) -> Result<f32> {
    if got.dims() != want.dims() {
        return Err(Error::TensorShape { what: "output".into(), got: got.dims().to_vec(), expected: want.dims().to_vec() });
    }
    let got = got.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    Ok(got.sub(want)?.abs()?.flatten_all()?.max(0)?.to_scalar()?)
}

/// Every case of the fixture folder, on `device` in `dtype`: the full networks (lighter@1 at
/// 256x256 and at 2x3x100x76, lighter@4) and each block of blocks.safetensors, BatchNorm folded.
pub fn run_fixtures(dir: &Path, device: &Device, dtype: DType) -> Result<Vec<ParityCase>> {
    let mut out = Vec::new();
    let nets = [
        ("lighter_at1", Variant::Lighter(1), &["0", "1"][..]),
        ("lighter_at4", Variant::Lighter(4), &["0"][..]),
    ];
    for (stem, variant, cases) in nets {
        let net = InferenceNet::load(dir.join(format!("{stem}.weights.safetensors")), variant, &Device::Cpu)?
            .to_device_dtype(device, dtype)?;
        let io = load(dir, &format!("{stem}.io.safetensors"))?;
        for c in cases {
            let (x, y) = (&io[&format!("input{c}")], &io[&format!("output{c}")]);
            let got = net.forward(&x.to_device(device)?.to_dtype(dtype)?)?;
            out.push(ParityCase::new(format!("{variant} {:?}", x.dims()), max_diff(&got, y)?));
        }
    }
    let blocks = load(dir, "blocks.safetensors")?;
    let vb = VarBuilder::from_tensors(blocks.clone(), DType::F32, &Device::Cpu);
    let dcs: [(&str, usize, usize, usize, Variant); 5] = [
        ("unet_first", 3, 8, 8, Variant::UNet),
        ("light_first", 3, 8, 8, Variant::Light),
        ("lighter1_first", 3, 8, 8, Variant::Lighter(1)),
        ("lighter2_first", 3, 8, 8, Variant::Lighter(2)),
        ("lighter4_mid", 8, 12, 16, Variant::Lighter(4)),
    ];
    let dev = |t: &Tensor| -> Result<Tensor> { Ok(t.to_device(device)?.to_dtype(dtype)?) };
    for (p, ci, mid, co, v) in dcs {
        let dc = DoubleConv::new(ci, mid, co, v, vb.pp(p).pp("double_conv"))?.fold(device, dtype)?;
        let got = dc.forward(ops::ConvInput::Map(&dev(&blocks[&format!("{p}.input")])?))?;
        out.push(ParityCase::new(format!("block {p}"), max_diff(&got, &blocks[&format!("{p}.output")])?));
    }
    let up = Up::new(16, 8, Variant::Lighter(1), vb.pp("up_odd"))?.fold(device, dtype)?;
    let (x, skip) = (dev(&blocks["up_odd.input_x1"])?, dev(&blocks["up_odd.input_x2"])?);
    let got = up.forward(ops::ConvInput::Up { skip: &skip, x: &x })?;
    out.push(ParityCase::new("block up_odd", max_diff(&got, &blocks["up_odd.output"])?));
    Ok(out)
}

/// Gradients of the custom ops on `device` against the CPU (whose backward the tests check by
/// finite differences): grouped 3x3 convolution for k = 1, 2, 3, 4 input channels per group and
/// bilinear x2 upsampling. Returns the largest relative difference per op and parameter.
pub fn grad_check(device: &Device) -> Result<Vec<ParityCase>> {
    use candle_core::Var;
    let mut out = Vec::new();
    for (c, k, h, w) in [(8usize, 1usize, 13usize, 17usize), (8, 2, 9, 12), (6, 3, 16, 16), (8, 4, 7, 31)] {
        let x = Tensor::randn(0f32, 1.0, (2, c, h, w), &Device::Cpu)?;
        let wt = Tensor::randn(0f32, 0.5, (c, k, 3, 3), &Device::Cpu)?;
        let b = Tensor::randn(0f32, 0.5, c, &Device::Cpu)?;
        let r = Tensor::randn(0f32, 1.0, (2, c, h, w), &Device::Cpu)?;
        let grads = |dev: &Device| -> Result<[Tensor; 3]> {
            let (x, wt, b) = (Var::from_tensor(&x.to_device(dev)?)?, Var::from_tensor(&wt.to_device(dev)?)?, Var::from_tensor(&b.to_device(dev)?)?);
            let y = ops::grouped_conv3x3(&x, &wt, &b)?;
            let g = y.mul(&r.to_device(dev)?)?.sum_all()?.backward()?;
            let get = |v: &Var| g.get(v).cloned().ok_or_else(|| Error::NoGradient(format!("grouped_conv3x3 k={k}")));
            Ok([get(&x)?, get(&wt)?, get(&b)?])
        };
        let (on_dev, on_cpu) = (grads(device)?, grads(&Device::Cpu)?);
        for (name, a, b) in [("x", &on_dev[0], &on_cpu[0]), ("w", &on_dev[1], &on_cpu[1]), ("b", &on_dev[2], &on_cpu[2])] {
            out.push(ParityCase::new(format!("grad grouped_conv3x3 k={k} d{name}"), rel(a, b)?));
        }
    }
    let x = Tensor::randn(0f32, 1.0, (2, 3, 5, 7), &Device::Cpu)?;
    let r = Tensor::randn(0f32, 1.0, (2, 3, 10, 14), &Device::Cpu)?;
    let grad = |dev: &Device| -> Result<Tensor> {
        let xv = Var::from_tensor(&x.to_device(dev)?)?;
        let g = ops::upsample2x(&xv)?.mul(&r.to_device(dev)?)?.sum_all()?.backward()?;
        g.get(&xv).cloned().ok_or_else(|| Error::NoGradient("upsample2x input".into()))
    };
    out.push(ParityCase::new("grad upsample2x dx", rel(&grad(device)?, &grad(&Device::Cpu)?)?));
    train_ops_check(device, &mut out)?;
    train_step_check(device, &mut out)?;
    Ok(out)
}

/// max |t|.
fn max_abs(t: &Tensor) -> Result<f32> {
    Ok(t.abs()?.flatten_all()?.max(0)?.to_scalar()?)
}

/// Relative difference of `a` (any device) from `b` (CPU): max |a - b| / max |b|.
fn rel(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok(max_diff(&a.to_device(&Device::Cpu)?, b)? / max_abs(b)?.max(1e-6))
}

/// The training graph's own ops (BatchNorm with bias and ReLU, per-channel sums, 2x2 max-pool)
/// on `device` against the CPU, values and gradients. Shapes are chosen so that a channel spans
/// several reduction blocks on the GPU, and odd sizes drop a row and a column in the pooling.
fn train_ops_check(device: &Device, out: &mut Vec<ParityCase>) -> Result<()> {
    use batchnorm::{batch_norm_relu_train, channel_sums};
    use super::capabilities::Capabilities;
    use candle_core::Var;
    let cpu = Device::Cpu;
    // Off on this device (LIGHTUNET_CUDA_TRAIN_OPS=graph, or a device without the kernels):
    // training runs the compositions, which the whole-step check below still covers.
    if !Capabilities::detect().own_train_ops(&Tensor::zeros(1, DType::F32, device)?) {
        return Ok(());
    }
    for (n, c, h, w, relu) in [(2usize, 5usize, 70usize, 130usize, true), (3, 4, 9, 11, false), (8, 3, 128, 128, true)] {
        // A channel offset, as after a convolution with a bias: the one-pass variance must not
        // cancel.
        let offset = Tensor::arange(0f32, c as f32, &cpu)?.affine(3.0, -4.0)?.reshape((1, c, 1, 1))?;
        let x = Tensor::randn(0f32, 2.0, (n, c, h, w), &cpu)?.broadcast_add(&offset)?;
        let params = [Tensor::randn(0f32, 1.0, c, &cpu)?, Tensor::rand(0.5f32, 1.5, c, &cpu)?, Tensor::randn(0f32, 1.0, c, &cpu)?];
        let r = Tensor::randn(0f32, 1.0, (n, c, h, w), &cpu)?;
        let run = |dev: &Device| -> Result<Vec<Tensor>> {
            let x = Var::from_tensor(&x.to_device(dev)?)?;
            let [b, g, be] = [&params[0], &params[1], &params[2]].map(|t| t.to_device(dev).and_then(|t| Var::from_tensor(&t)));
            let (b, g, be) = (b?, g?, be?);
            let o = batch_norm_relu_train(&x, &b, &g, &be, 1e-5, relu)?;
            let grads = o.y.mul(&r.to_device(dev)?)?.sum_all()?.backward()?;
            let get = |v: &Var| grads.get(v).cloned().ok_or_else(|| Error::NoGradient("batch norm train".into()));
            // The bias gradient is zero up to rounding (batch statistics remove the bias), so
            // it has no scale to compare against and is left out.
            Ok(vec![o.y, o.mean, o.var, get(&x)?, get(&g)?, get(&be)?])
        };
        let (on_dev, on_cpu) = (run(device)?, run(&cpu)?);
        for (i, what) in ["y", "mean", "var", "dx", "dgamma", "dbeta"].iter().enumerate() {
            out.push(ParityCase::new(format!("batch norm train [{n},{c},{h},{w}] relu={relu} {what}"), rel(&on_dev[i], &on_cpu[i])?));
        }
        let sums = channel_sums(&x.to_device(device)?)?;
        out.push(ParityCase::new(format!("channel sums [{n},{c},{h},{w}]"), rel(&sums, &channel_sums(&x)?)?));
    }
    for (n, c, h, w) in [(2usize, 3usize, 9usize, 14usize), (8, 4, 64, 64)] {
        // Rounded values: many windows hold ties, which must go to the same (first) element.
        let x = Tensor::randn(0f32, 2.0, (n, c, h, w), &cpu)?.round()?;
        let r = Tensor::randn(0f32, 1.0, (n, c, h / 2, w / 2), &cpu)?;
        let run = |dev: &Device| -> Result<[Tensor; 2]> {
            let xv = Var::from_tensor(&x.to_device(dev)?)?;
            let y = maxpool::maxpool2x2_train(&xv)?;
            let g = y.mul(&r.to_device(dev)?)?.sum_all()?.backward()?;
            Ok([y, g.get(&xv).cloned().ok_or_else(|| Error::NoGradient("maxpool2x2 train input".into()))?])
        };
        let (on_dev, on_cpu) = (run(device)?, run(&cpu)?);
        out.push(ParityCase::new(format!("maxpool2x2 train [{n},{c},{h},{w}] y"), rel(&on_dev[0], &on_cpu[0])?));
        out.push(ParityCase::new(format!("maxpool2x2 train [{n},{c},{h},{w}] dx"), rel(&on_dev[1], &on_cpu[1])?));
    }
    Ok(())
}

/// One training forward and backward of Lighter U-net@1 (batch 2, 64x64, a fixed dropout mask)
/// on `device` against the CPU: the logits, and every parameter's gradient (the worst one is
/// named). Conv biases right before a BatchNorm have a zero gradient up to rounding and are
/// left out. Bound 1e-3: a whole network adds up the rounding of every op.
fn train_step_check(device: &Device, out: &mut Vec<ParityCase>) -> Result<()> {
    use candle_core::Var;
    use candle_nn::VarMap;
    let cpu = Device::Cpu;
    let vm = VarMap::new();
    let variant = Variant::Lighter(1);
    UNet::new(variant, VarBuilder::from_varmap(&vm, DType::F32, &cpu))?;
    let init: Vec<(String, Tensor)> = {
        let data = vm.data().lock().map_err(|_| Error::Poisoned("variable map"))?;
        data.iter().map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?))).collect::<Result<_>>()?
    };
    let x = Tensor::rand(0f32, 1.0, (2, 3, 64, 64), &cpu)?;
    let keep = Tensor::rand(0f32, 1.0, UNet::bottleneck_dims(2, 64, 64).to_vec(), &cpu)?.ge(0.5)?.to_dtype(DType::F32)?.affine(2.0, 0.0)?;
    let r = Tensor::randn(0f32, 1.0, (2, 1, 64, 64), &cpu)?;
    let run = |dev: &Device| -> Result<(Tensor, Vec<(String, Tensor)>)> {
        let vars: Vec<(String, Var)> =
            init.iter().map(|(k, t)| Ok((k.clone(), Var::from_tensor(&t.to_device(dev)?)?))).collect::<Result<_>>()?;
        let map: HashMap<String, Tensor> = vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
        let net = UNet::new(variant, VarBuilder::from_tensors(map, DType::F32, dev))?;
        let logits = net.logits_t_with(&x.to_device(dev)?, true, Dropout::Mask(&keep))?;
        let grads = logits.mul(&r.to_device(dev)?)?.sum_all()?.backward()?;
        let g = vars.iter().filter_map(|(k, v)| grads.get(v).map(|g| (k.clone(), g.clone()))).collect();
        Ok((logits, g))
    };
    let ((l_dev, g_dev), (l_cpu, g_cpu)) = (run(device)?, run(&cpu)?);
    let bound = Some(1e-3);
    out.push(ParityCase { name: "train step lighter@1 [2,3,64,64] logits".into(), max_abs_diff: rel(&l_dev, &l_cpu)?, tolerance: bound });
    let mut global = 0f32;
    for (_, g) in &g_cpu {
        global = global.max(max_abs(g)?);
    }
    let (mut worst, mut worst_name, mut compared) = (0f32, String::new(), 0usize);
    for (name, want) in &g_cpu {
        let got = g_dev.iter().find(|(k, _)| k == name).map(|(_, g)| g);
        let got = got.ok_or_else(|| Error::NoGradient(format!("{name} on the device")))?;
        if max_abs(want)? <= 1e-5 * global {
            continue;
        }
        compared += 1;
        let d = rel(got, want)?;
        if d >= worst {
            (worst, worst_name) = (d, name.clone());
        }
    }
    out.push(ParityCase {
        name: format!("train step lighter@1 gradients ({compared} compared; worst {worst_name})"),
        max_abs_diff: worst,
        tolerance: bound,
    });
    Ok(())
}
