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
