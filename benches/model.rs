//! Criterion benches: the grouped/depthwise 3x3 op against candle's per-group convolution, the
//! pointwise op, and the full networks at 256x256, batch 1. CPU by default; with the `cuda`
//! feature and a GPU, the same on `cuda:0` (the device is synchronised inside each timing).
//! Run: `cargo bench --bench model` (speed is checked here and by `lightunet bench`, not by tests).

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use criterion::{criterion_group, criterion_main, Criterion};
use lightunet::model::{ops, UNet, Variant};

fn devices() -> Vec<(&'static str, Device)> {
    let mut d = vec![("cpu", Device::Cpu)];
    if cfg!(feature = "cuda") {
        if let Ok(c) = Device::new_cuda(0) {
            d.push(("cuda", c));
        }
    }
    d
}

fn timed(dev: &Device, iters: u64, mut f: impl FnMut()) -> Duration {
    let _ = dev.synchronize();
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    let _ = dev.synchronize();
    t.elapsed()
}

fn grouped_conv(c: &mut Criterion) {
    let mut g = c.benchmark_group("grouped_conv3x3");
    g.sample_size(20);
    for (name, dev) in devices() {
        for (ch, s) in [(64usize, 256usize), (256, 64)] {
            let x = Tensor::rand(0f32, 1., (1, ch, s, s), &dev).unwrap();
            let w = Tensor::rand(0f32, 1., (ch, 1, 3, 3), &dev).unwrap();
            let b = Tensor::rand(0f32, 1., ch, &dev).unwrap();
            g.bench_function(format!("{name}/ours/depthwise {ch}x{s}x{s}"), |bn| {
                bn.iter_custom(|n| timed(&dev, n, || drop(ops::grouped_conv3x3(&x, &w, &b).unwrap())))
            });
            // candle's own grouped convolution: one convolution per group, then a concat.
            g.bench_function(format!("{name}/candle/depthwise {ch}x{s}x{s}"), |bn| {
                bn.iter_custom(|n| timed(&dev, n, || drop(x.conv2d(&w, 1, 1, 1, ch).unwrap())))
            });
        }
    }
    g.finish();
}

fn networks(c: &mut Criterion) {
    let mut g = c.benchmark_group("network_256_batch1");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for (name, dev) in devices() {
        for v in [Variant::Lighter(1), Variant::Light, Variant::Lighter(128), Variant::UNet] {
            let map = candle_nn::VarMap::new();
            let net = UNet::new(v, VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu)).unwrap();
            let net = net.fold(&dev, DType::F32).unwrap();
            let x = Tensor::rand(0f32, 1., (1, 3, 256, 256), &dev).unwrap();
            g.bench_function(format!("{name}/{v}"), |bn| {
                bn.iter_custom(|n| timed(&dev, n, || drop(net.forward(&x).unwrap())))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, grouped_conv, networks);
criterion_main!(benches);
