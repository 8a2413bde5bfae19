//! Parity with PyTorch: the fixtures in tests/fixtures/parity were produced by the reference
//! PyTorch implementation (../shared/anchors/refnet.py) in eval mode:
//!
//! ```python
//! net = Net("lighter@1").eval(); load_state_dict(...)
//! with torch.no_grad(): out = net(inp)          # inputs torch.rand, outputs sigmoid probabilities
//! ```
//! Every case must agree to max |out - expected| <= 1e-4, on the reference (unfolded) path and on
//! the inference path with BatchNorm folded and fused ops.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use lightunet::model::ops::ConvInput;
use lightunet::model::{DoubleConv, InferenceNet, UNet, Up, Variant};

const TOL: f32 = 1e-4;

fn fixture(name: &str) -> HashMap<String, Tensor> {
    let path = format!("{}/tests/fixtures/parity/{name}", env!("CARGO_MANIFEST_DIR"));
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    a.sub(b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

fn check_network(weights: &str, io: &str, variant: &str, cases: &[(&str, &str)]) {
    let v: Variant = variant.parse().unwrap();
    let io = fixture(io);
    let path = format!("{}/tests/fixtures/parity/{weights}", env!("CARGO_MANIFEST_DIR"));
    let net = InferenceNet::load(&path, v, &Device::Cpu).unwrap();
    for (input, output) in cases {
        let got = net.forward(&io[*input]).unwrap();
        let d = max_diff(&got, &io[*output]);
        assert!(d <= TOL, "{variant} {input}: max diff {d}");
    }
}

#[test]
fn lighter_at1_256() {
    check_network("lighter_at1.weights.safetensors", "lighter_at1.io.safetensors", "lighter@1", &[("input0", "output0")]);
}

#[test]
fn lighter_at1_odd_size_batch2() {
    // 2x3x100x76: neither side a multiple of 16, so every Up pads.
    check_network("lighter_at1.weights.safetensors", "lighter_at1.io.safetensors", "lighter@1", &[("input1", "output1")]);
}

#[test]
fn lighter_at4() {
    check_network("lighter_at4.weights.safetensors", "lighter_at4.io.safetensors", "lighter@4", &[("input0", "output0")]);
}

/// The reference (unfolded, graph) path on the full network, to keep training's forward honest.
#[test]
fn lighter_at1_unfolded_path() {
    let io = fixture("lighter_at1.io.safetensors");
    let w = lightunet::model::check_weights(fixture("lighter_at1.weights.safetensors"), Variant::Lighter(1)).unwrap();
    let vb = VarBuilder::from_tensors(w, DType::F32, &Device::Cpu);
    let net = UNet::new(Variant::Lighter(1), vb).unwrap();
    let d = max_diff(&net.forward(&io["input1"]).unwrap(), &io["output1"]);
    assert!(d <= TOL, "max diff {d}");
}

fn block_vb<'a>(blocks: &'a HashMap<String, Tensor>, prefix: &str) -> VarBuilder<'a> {
    VarBuilder::from_tensors(blocks.clone(), DType::F32, &Device::Cpu).pp(prefix)
}

/// One DoubleConv from blocks.safetensors, both paths.
fn check_double_conv(prefix: &str, ci: usize, mid: usize, co: usize, variant: &str) {
    let blocks = fixture("blocks.safetensors");
    let v: Variant = variant.parse().unwrap();
    let dc = DoubleConv::new(ci, mid, co, v, block_vb(&blocks, prefix).pp("double_conv")).unwrap();
    let x = &blocks[&format!("{prefix}.input")];
    let want = &blocks[&format!("{prefix}.output")];
    let d = max_diff(&dc.forward_t(x, false).unwrap(), want);
    assert!(d <= TOL, "{prefix} reference path: {d}");
    let folded = dc.fold(&Device::Cpu, DType::F32).unwrap();
    let d = max_diff(&folded.forward(ConvInput::Map(x)).unwrap(), want);
    assert!(d <= TOL, "{prefix} folded path: {d}");
}

#[test]
fn block_unet_first() {
    check_double_conv("unet_first", 3, 8, 8, "unet");
}

#[test]
fn block_light_first() {
    check_double_conv("light_first", 3, 8, 8, "light");
}

#[test]
fn block_lighter1_first() {
    check_double_conv("lighter1_first", 3, 8, 8, "lighter@1");
}

#[test]
fn block_lighter2_first() {
    // C = 2 with a 3-channel input: the grouped conv takes all 3 channels per group.
    check_double_conv("lighter2_first", 3, 8, 8, "lighter@2");
}

#[test]
fn block_lighter4_mid() {
    check_double_conv("lighter4_mid", 8, 12, 16, "lighter@4");
}

#[test]
fn block_up_odd() {
    // x1 5x7 upsampled to 10x14, padded to the skip's 11x15.
    let blocks = fixture("blocks.safetensors");
    let up = Up::new(16, 8, Variant::Lighter(1), block_vb(&blocks, "up_odd")).unwrap();
    let (x1, x2) = (&blocks["up_odd.input_x1"], &blocks["up_odd.input_x2"]);
    let want = &blocks["up_odd.output"];
    let d = max_diff(&up.forward_t(x1, x2, false).unwrap(), want);
    assert!(d <= TOL, "reference path: {d}");
    let folded = up.fold(&Device::Cpu, DType::F32).unwrap();
    let d = max_diff(&folded.forward(ConvInput::Up { skip: x2, x: x1 }).unwrap(), want);
    assert!(d <= TOL, "folded path: {d}");
}
