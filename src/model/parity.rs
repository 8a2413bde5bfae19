//! Runs the PyTorch parity fixtures (tests/fixtures/parity) on any device and dtype, for
//! `lightunet check` on a GPU machine and for the tests.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::{DoubleConv, UNet, Up, Variant};
use crate::error::{Error, Result};

/// One fixture case: its name and the largest absolute difference from PyTorch's output.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ParityCase {
    pub name: String,
    pub max_abs_diff: f32,
}

fn load(dir: &Path, file: &str) -> Result<HashMap<String, Tensor>> {
    let path = dir.join(file);
    candle_core::safetensors::load(&path, &Device::Cpu)
        .map_err(|e| Error::Checkpoint { path, reason: e.to_string() })
}

fn max_diff(got: &Tensor, want: &Tensor) -> Result<f32> {
    if got.dims() != want.dims() {
        return Err(Error::Msg(format!("shape {:?} != expected {:?}", got.dims(), want.dims())));
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
        let net = UNet::load(dir.join(format!("{stem}.weights.safetensors")), variant, &Device::Cpu)?
            .to_device_dtype(device, dtype)?;
        let io = load(dir, &format!("{stem}.io.safetensors"))?;
        for c in cases {
            let (x, y) = (&io[&format!("input{c}")], &io[&format!("output{c}")]);
            let got = net.forward(&x.to_device(device)?.to_dtype(dtype)?)?;
            out.push(ParityCase { name: format!("{variant} {:?}", x.dims()), max_abs_diff: max_diff(&got, y)? });
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
        let mut dc = DoubleConv::new(ci, mid, co, v, vb.pp(p).pp("double_conv"))?;
        dc.fold_bn()?;
        let dc = dc.to_device_dtype(device, dtype)?;
        let got = dc.forward_t(&dev(&blocks[&format!("{p}.input")])?, false)?;
        out.push(ParityCase { name: format!("block {p}"), max_abs_diff: max_diff(&got, &blocks[&format!("{p}.output")])? });
    }
    let mut up = Up::new(16, 8, Variant::Lighter(1), vb.pp("up_odd"))?;
    up.fold_bn()?;
    let up = up.to_device_dtype(device, dtype)?;
    let got = up.forward_t(&dev(&blocks["up_odd.input_x1"])?, &dev(&blocks["up_odd.input_x2"])?, false)?;
    out.push(ParityCase { name: "block up_odd".into(), max_abs_diff: max_diff(&got, &blocks["up_odd.output"])? });
    Ok(out)
}

/// Gradients of the custom ops on `device` against the CPU (whose backward the tests check by
/// finite differences): grouped 3x3 convolution for k = 1, 2, 3, 4 input channels per group and
/// bilinear x2 upsampling. Returns the largest relative difference per op and parameter.
pub fn grad_check(device: &Device) -> Result<Vec<ParityCase>> {
    use candle_core::Var;
    let mut out = Vec::new();
    let rel = |a: &Tensor, b: &Tensor| -> Result<f32> {
        let a = a.to_device(&Device::Cpu)?;
        let scale: f32 = b.abs()?.flatten_all()?.max(0)?.to_scalar()?;
        Ok(max_diff(&a, b)? / scale.max(1e-6))
    };
    for (c, k, h, w) in [(8usize, 1usize, 13usize, 17usize), (8, 2, 9, 12), (6, 3, 16, 16), (8, 4, 7, 31)] {
        let x = Tensor::randn(0f32, 1.0, (2, c, h, w), &Device::Cpu)?;
        let wt = Tensor::randn(0f32, 0.5, (c, k, 3, 3), &Device::Cpu)?;
        let b = Tensor::randn(0f32, 0.5, c, &Device::Cpu)?;
        let r = Tensor::randn(0f32, 1.0, (2, c, h, w), &Device::Cpu)?;
        let grads = |dev: &Device| -> Result<[Tensor; 3]> {
            let (x, wt, b) = (Var::from_tensor(&x.to_device(dev)?)?, Var::from_tensor(&wt.to_device(dev)?)?, Var::from_tensor(&b.to_device(dev)?)?);
            let y = super::ops::grouped_conv3x3(&x, &wt, &b)?;
            let g = y.mul(&r.to_device(dev)?)?.sum_all()?.backward()?;
            let get = |v: &Var| g.get(v).cloned().ok_or_else(|| Error::Msg("missing gradient".into()));
            Ok([get(&x)?, get(&wt)?, get(&b)?])
        };
        let (on_dev, on_cpu) = (grads(device)?, grads(&Device::Cpu)?);
        for (name, a, b) in [("x", &on_dev[0], &on_cpu[0]), ("w", &on_dev[1], &on_cpu[1]), ("b", &on_dev[2], &on_cpu[2])] {
            out.push(ParityCase { name: format!("grad grouped_conv3x3 k={k} d{name}"), max_abs_diff: rel(a, b)? });
        }
    }
    let x = Tensor::randn(0f32, 1.0, (2, 3, 5, 7), &Device::Cpu)?;
    let r = Tensor::randn(0f32, 1.0, (2, 3, 10, 14), &Device::Cpu)?;
    let grad = |dev: &Device| -> Result<Tensor> {
        let xv = Var::from_tensor(&x.to_device(dev)?)?;
        let g = super::ops::upsample2x(&xv)?.mul(&r.to_device(dev)?)?.sum_all()?.backward()?;
        g.get(&xv).cloned().ok_or_else(|| Error::Msg("missing gradient".into()))
    };
    out.push(ParityCase { name: "grad upsample2x dx".into(), max_abs_diff: rel(&grad(device)?, &grad(&Device::Cpu)?)? });
    Ok(out)
}
