//! The Light U-net family as data (SPEC.md): the nine DoubleConv blocks with their PyTorch names,
//! levels and widths, the final 1x1, and each variant's conv sets. Everything that knows the
//! architecture derives from this table: building the network (`UNet::new`), the state-dict keys
//! and shapes a checkpoint must have ([`expected_shapes`], [`check_weights`]), telling the variant
//! from a checkpoint's shapes ([`detect_variant`]), parameter and GFLOP counts, the bottleneck's
//! shape.

use std::collections::HashMap;

use candle_core::{DType, Tensor};

use super::variant::{channels_per_group, ConvSetKind, Variant};
use crate::error::{Error, Result};

/// Where a block's input comes from, which also fixes where its DoubleConv sits in PyTorch's
/// module tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// The network's input (`inc`; the DoubleConv at `inc.double_conv`).
    Input,
    /// The block above, max-pooled 2x2 (`downN`; `MaxPool2d` then the DoubleConv at
    /// `downN.maxpool_conv.1.double_conv`).
    Down,
    /// The block below, upsampled x2, padded to the skip connection of the same level and
    /// concatenated after it (`upN`; the DoubleConv at `upN.conv.double_conv`).
    Up,
}

/// One DoubleConv block: conv set 1 (`c_in -> mid`), BatchNorm, ReLU, conv set 2
/// (`mid -> c_out`), BatchNorm, ReLU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockConfig {
    /// The PyTorch attribute (`inc`, `down1`, ..., `up4`): the first part of its keys.
    pub name: &'static str,
    pub kind: BlockKind,
    /// The block's maps are `H / 2^level x W / 2^level` (floor at each pooling).
    pub level: usize,
    pub c_in: usize,
    pub mid: usize,
    pub c_out: usize,
}

impl BlockConfig {
    /// The state-dict prefix of the block's DoubleConv (`down1.maxpool_conv.1.double_conv`).
    pub fn prefix(&self) -> String {
        let name = self.name;
        match self.kind {
            BlockKind::Input => format!("{name}.double_conv"),
            BlockKind::Down => format!("{name}.maxpool_conv.1.double_conv"),
            BlockKind::Up => format!("{name}.conv.double_conv"),
        }
    }
}

/// Indices of conv set 1 and conv set 2 in a DoubleConv's `nn.Sequential`; each one's BatchNorm
/// follows at the next index (the ReLUs at 2 and 5 have no weights).
pub const CONV_SET_INDEX: [usize; 2] = [0, 3];

/// The network's blocks in PyTorch's order (the order of the state dict). Down blocks use
/// `mid = c_out`, Up blocks `mid = c_in / 2`; down4 keeps 512 channels because up1 concatenates
/// it with down3's 512.
pub const BLOCKS: [BlockConfig; 9] = [
    block("inc", BlockKind::Input, 0, 3, 64, 64),
    block("down1", BlockKind::Down, 1, 64, 128, 128),
    block("down2", BlockKind::Down, 2, 128, 256, 256),
    block("down3", BlockKind::Down, 3, 256, 512, 512),
    block("down4", BlockKind::Down, 4, 512, 512, 512),
    block("up1", BlockKind::Up, 3, 1024, 512, 256),
    block("up2", BlockKind::Up, 2, 512, 256, 128),
    block("up3", BlockKind::Up, 1, 256, 128, 64),
    block("up4", BlockKind::Up, 0, 128, 64, 64),
];

/// Index in [`BLOCKS`] of the deepest Down block, whose output is the bottleneck.
const BOTTLENECK: usize = {
    let mut i = BLOCKS.len();
    loop {
        i -= 1;
        if matches!(BLOCKS[i].kind, BlockKind::Down) {
            break i;
        }
    }
};

const fn block(name: &'static str, kind: BlockKind, level: usize, c_in: usize, mid: usize, c_out: usize) -> BlockConfig {
    BlockConfig { name, kind, level, c_in, mid, c_out }
}

/// The final 1x1 convolution (with bias, no activation): PyTorch `outc.conv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadConfig {
    pub name: &'static str,
    pub c_in: usize,
    pub c_out: usize,
}

impl HeadConfig {
    /// The state-dict prefix of the convolution (`outc.conv`).
    pub fn prefix(&self) -> String {
        format!("{}.conv", self.name)
    }
}

pub const HEAD: HeadConfig = HeadConfig { name: "outc", c_in: 64, c_out: 1 };

/// Smallest model input side: every max-pool must leave a row and a column (four poolings).
pub const MIN_INPUT_SIDE: usize = 16;

/// Largest model input side accepted from a user. The networks were trained at 256, and the
/// memory of a pass grows with the square of the side: peak resident memory of one CPU pass
/// (`bench model --runs 1`, 2026-11-30) was 0.49 GB at 256 and 1.7 GB at 512 for U-net, 0.19 GB
/// at 512 and 0.69 GB at 1024 for Lighter U-net@1, so U-net needs about 7 GB at 1024 and 27 GB at
/// 2048.
pub const MAX_INPUT_SIDE: usize = 1024;

/// Most input pixels one pass may take (batch x height x width): 64 frames at 256x256, 4 at
/// 1024x1024, the most the side limit allows for one frame, four times over. Beyond it a typo
/// (`--batch 100000`) asks for more memory than a machine has and aborts the process.
pub const MAX_PASS_PIXELS: usize = 64 * 256 * 256;

/// Checks a network input of `batch` images of `height x width` against [`MIN_INPUT_SIDE`],
/// [`MAX_INPUT_SIDE`] and [`MAX_PASS_PIXELS`], with checked arithmetic (the numbers are a user's).
pub fn check_input(batch: usize, height: usize, width: usize) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidSetting(m));
    if batch == 0 {
        return bad("the batch must be at least 1".into());
    }
    for side in [height, width] {
        if side < MIN_INPUT_SIDE {
            return bad(format!("the model input must be at least {MIN_INPUT_SIDE}x{MIN_INPUT_SIDE}, got {width}x{height}"));
        }
        if side > MAX_INPUT_SIDE {
            return bad(format!(
                "the model input {width}x{height} is above the limit of {MAX_INPUT_SIDE} per side: the networks were \
                 trained at 256, and memory grows with the square of the side (U-net needs about 7 GB at 1024)"
            ));
        }
    }
    let pixels = batch.checked_mul(height).and_then(|n| n.checked_mul(width));
    if pixels.is_none_or(|p| p > MAX_PASS_PIXELS) {
        return bad(format!(
            "a batch of {batch} at {width}x{height} is above the limit of {MAX_PASS_PIXELS} input pixels per pass \
             (64 images at 256x256, 4 at 1024x1024): memory grows with it (U-net needs about 0.4 GB per 256x256 image)"
        ));
    }
    Ok(())
}

/// One member of the family: the shared topology and the variant's conv sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arch {
    pub variant: Variant,
    /// Conv set 1 and conv set 2 of every DoubleConv.
    pub conv_sets: [ConvSetKind; 2],
}

impl Arch {
    pub fn new(variant: Variant) -> Arch {
        let (set1, set2) = variant.conv_sets();
        Arch { variant, conv_sets: [set1, set2] }
    }

    pub fn blocks(&self) -> impl Iterator<Item = &'static BlockConfig> {
        BLOCKS.iter()
    }

    /// The blocks of one kind, in network order.
    pub fn blocks_of(&self, kind: BlockKind) -> impl Iterator<Item = &'static BlockConfig> {
        BLOCKS.iter().filter(move |b| b.kind == kind)
    }

    /// The first block, which reads the network's input.
    pub fn input_block(&self) -> &'static BlockConfig {
        &BLOCKS[0]
    }

    /// The deepest Down block: its output is the bottleneck, where dropout applies.
    pub fn bottleneck(&self) -> &'static BlockConfig {
        &BLOCKS[BOTTLENECK]
    }

    pub fn head(&self) -> HeadConfig {
        HEAD
    }

    /// Input channels (3: BGR).
    pub fn in_channels(&self) -> usize {
        self.input_block().c_in
    }

    /// The smallest input height and width: every max-pool must leave at least one row and
    /// column (16 for four poolings).
    pub fn min_side(&self) -> usize {
        1 << self.bottleneck().level
    }

    /// The shape of the bottleneck for an input `[n, 3, h, w]`: `[n, 512, h/16, w/16]` (four
    /// floor-halving max-pools).
    pub fn bottleneck_dims(&self, n: usize, h: usize, w: usize) -> [usize; 4] {
        let b = self.bottleneck();
        [n, b.c_out, h >> b.level, w >> b.level]
    }

    /// Every state-dict key with its shape, in PyTorch's order (BatchNorm running statistics and
    /// `num_batches_tracked` included; the latter is a scalar, shape `[]`).
    pub fn expected_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        for b in self.blocks() {
            let p = b.prefix();
            let widths = [(b.c_in, b.mid), (b.mid, b.c_out)];
            for ((index, kind), (ci, co)) in CONV_SET_INDEX.into_iter().zip(self.conv_sets).zip(widths) {
                conv_set_shapes(&mut out, &format!("{p}.{index}"), kind, ci, co);
                batch_norm_shapes(&mut out, &format!("{p}.{}", index + 1), co);
            }
        }
        let head = self.head();
        out.push((format!("{}.weight", head.prefix()), vec![head.c_out, head.c_in, 1, 1]));
        out.push((format!("{}.bias", head.prefix()), vec![head.c_out]));
        out
    }

    /// Trainable parameters (conv weights and biases, BatchNorm gamma and beta), as PyTorch
    /// counts them.
    pub fn parameter_count(&self) -> usize {
        self.expected_shapes()
            .iter()
            .filter(|(n, _)| !is_buffer(n))
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// Multiply-adds x 2 of every convolution for one `h x w` frame (pooling, upsampling,
    /// BatchNorm and activations are not counted).
    pub fn gflops(&self, h: usize, w: usize) -> f64 {
        let conv = |kind, ci: usize, co: usize, px: usize| -> f64 {
            let macs = match kind {
                ConvSetKind::Regular => ci * co * 9,
                ConvSetKind::Separable { c } => ci * channels_per_group(c, ci) * 9 + ci * co,
            };
            2.0 * (macs * px) as f64
        };
        let [set1, set2] = self.conv_sets;
        let mut total = 0.0;
        for b in self.blocks() {
            let px = (h >> b.level) * (w >> b.level);
            total += conv(set1, b.c_in, b.mid, px) + conv(set2, b.mid, b.c_out, px);
        }
        let head = self.head();
        total += 2.0 * (head.c_in * head.c_out * h * w) as f64;
        total / 1e9
    }
}

/// The key of a conv set's first weight: the regular conv's, or a separable set's grouped 3x3.
/// `set` is the set's prefix (`inc.double_conv.0`).
fn first_weight_key(set: &str, kind: ConvSetKind) -> String {
    match kind {
        ConvSetKind::Regular => format!("{set}.weight"),
        ConvSetKind::Separable { .. } => format!("{set}.conv.0.weight"),
    }
}

fn conv_set_shapes(out: &mut Vec<(String, Vec<usize>)>, p: &str, kind: ConvSetKind, ci: usize, co: usize) {
    match kind {
        ConvSetKind::Regular => {
            out.push((format!("{p}.weight"), vec![co, ci, 3, 3]));
            out.push((format!("{p}.bias"), vec![co]));
        }
        ConvSetKind::Separable { c } => {
            let k = channels_per_group(c, ci);
            out.push((format!("{p}.conv.0.weight"), vec![ci, k, 3, 3]));
            out.push((format!("{p}.conv.0.bias"), vec![ci]));
            out.push((format!("{p}.conv.1.weight"), vec![co, ci, 1, 1]));
            out.push((format!("{p}.conv.1.bias"), vec![co]));
        }
    }
}

fn batch_norm_shapes(out: &mut Vec<(String, Vec<usize>)>, p: &str, c: usize) {
    for s in ["weight", "bias", "running_mean", "running_var"] {
        out.push((format!("{p}.{s}"), vec![c]));
    }
    out.push((format!("{p}.num_batches_tracked"), vec![]));
}

/// Every state-dict key of `variant` with its shape, in PyTorch's order ([`Arch::expected_shapes`]).
pub fn expected_shapes(variant: Variant) -> Vec<(String, Vec<usize>)> {
    Arch::new(variant).expected_shapes()
}

/// Trainable parameters of `variant` ([`Arch::parameter_count`]).
pub fn parameter_count(variant: Variant) -> usize {
    Arch::new(variant).parameter_count()
}

/// GFLOP of `variant` for one `h x w` frame ([`Arch::gflops`]).
pub fn gflops(variant: Variant, h: usize, w: usize) -> f64 {
    Arch::new(variant).gflops(h, w)
}

/// BatchNorm running statistics and counters: state, not parameters.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with(".running_mean")
        || name.ends_with(".running_var")
        || name.ends_with(".num_batches_tracked")
}

/// Tells which member of the family a set of PyTorch weights belongs to, from names and shapes.
///
/// Conv set 1 of the first block decides: a regular conv (`inc.double_conv.0.weight`) means
/// U-net when conv set 2 is regular too, else Light U-net; a separable one
/// (`inc.double_conv.0.conv.0.weight`) means Lighter U-net@C, C being the channels per group of
/// down4's grouped 3x3 (`[512, C, 3, 3]`, where min(C, 512) = C).
pub fn detect_variant(shapes: &[(String, Vec<usize>)]) -> Result<Variant> {
    let by_name: HashMap<&str, &[usize]> = shapes
        .iter()
        .map(|(name, shape)| (name.as_str(), shape.as_slice()))
        .collect();
    let has = |name: &str| by_name.contains_key(name);
    let fail = Error::UnknownLayout;
    let (regular, separable) = (ConvSetKind::Regular, ConvSetKind::Separable { c: 1 });
    let first = BLOCKS[0].prefix();
    let [set1, set2] = CONV_SET_INDEX.map(|i| format!("{first}.{i}"));

    if has(&first_weight_key(&set1, regular)) {
        if has(&first_weight_key(&set2, regular)) {
            return Ok(Variant::UNet);
        }
        if has(&first_weight_key(&set2, separable)) {
            return Ok(Variant::Light);
        }
        return Err(fail(format!(
            "conv set 1 is regular (`{}`) but conv set 2 is neither regular (`{}`) nor separable \
             (`{}`); {}",
            first_weight_key(&set1, regular),
            first_weight_key(&set2, regular),
            first_weight_key(&set2, separable),
            summary(shapes)
        )));
    }
    if has(&first_weight_key(&set1, separable)) {
        // The widest block input before any concatenation: there min(C, c_in) = C for every C.
        let deepest = &BLOCKS[BOTTLENECK];
        let width = deepest.c_in;
        let key = first_weight_key(&format!("{}.{}", deepest.prefix(), CONV_SET_INDEX[0]), separable);
        let shape = by_name
            .get(key.as_str())
            .ok_or_else(|| fail(format!("separable conv sets but no `{key}`; {}", summary(shapes))))?;
        let per_group = match shape {
            [w, c, 3, 3] if *w == width => *c,
            other => return Err(fail(format!("`{key}` has shape {other:?}, expected [{width}, C, 3, 3]"))),
        };
        return u32::try_from(per_group)
            .ok()
            .map(Variant::Lighter)
            .filter(|v| Variant::all().contains(v))
            .ok_or_else(|| {
                fail(format!(
                    "separable conv sets with {per_group} channels per group (`{key}`), but \
                     Lighter U-net@C exists only for C in 1, 2, 4, ..., 128"
                ))
            });
    }
    Err(fail(format!(
        "no `{}` (U-net, Light U-net) or `{}` (Lighter U-net); {}",
        first_weight_key(&set1, regular),
        first_weight_key(&set1, separable),
        summary(shapes)
    )))
}

/// "164 tensors, e.g. `a`, `b`, `c`" for messages about unexpected weights.
fn summary(shapes: &[(String, Vec<usize>)]) -> String {
    if shapes.is_empty() {
        return "no tensors at all".into();
    }
    let first: Vec<String> = shapes.iter().take(3).map(|(name, _)| format!("`{name}`")).collect();
    format!("found {} tensors, e.g. {}", shapes.len(), first.join(", "))
}

/// Checks names and shapes against `variant`, and values: weights are floating point, every value
/// is finite and running variances are not negative. Converts them to f32. A missing, extra,
/// mis-shaped, integer or non-finite tensor is an error naming it (and its expected and found
/// shape, or the bad value), and the variant. The value check is one pass over the weights at
/// load: without it, a NaN anywhere made every frame come out "no lesion" without a word.
pub fn check_weights(mut tensors: HashMap<String, Tensor>, variant: Variant) -> Result<HashMap<String, Tensor>> {
    let expected = expected_shapes(variant);
    // Same rules as `convert`'s detection, so both name the same variant for the same file.
    let shapes: Vec<(String, Vec<usize>)> = tensors.iter().map(|(n, t)| (n.clone(), t.dims().to_vec())).collect();
    let hint = detect_variant(&shapes)
        .ok()
        .filter(|v| *v != variant)
        .map(|v| format!(" (these weights look like {v})"))
        .unwrap_or_default();
    let err = |name: &str, problem: String| Error::Weights {
        variant: variant.to_string(),
        name: name.to_string(),
        problem: format!("{problem}{hint}"),
    };
    let mut out = HashMap::with_capacity(expected.len());
    for (name, shape) in &expected {
        let optional = name.ends_with(".num_batches_tracked");
        match tensors.get(name) {
            None if optional => continue,
            None => return Err(err(name, format!("missing, expected shape {shape:?}"))),
            Some(t) if !optional && t.dims() != shape.as_slice() => {
                return Err(err(name, format!("expected shape {shape:?}, found {:?}", t.dims())))
            }
            Some(_) => {}
        }
        if let Some(t) = tensors.remove(name) {
            if !optional {
                if !t.dtype().is_float() {
                    return Err(err(name, format!("holds {:?} values; weights are floating point (f32, f16, bf16)", t.dtype())));
                }
                let t = t.to_dtype(DType::F32)?;
                if let Some(problem) = bad_value(name, &t)? {
                    return Err(err(name, problem));
                }
                out.insert(name.clone(), t);
            }
        }
    }
    if let Some(name) = tensors.keys().min() {
        let found = tensors[name].dims().to_vec();
        return Err(err(name, format!("unexpected tensor of shape {found:?}")));
    }
    Ok(out)
}

/// What is wrong with the values of an f32 weight, if anything: a NaN or infinity anywhere, or a
/// negative BatchNorm running variance (its square root divides the input).
fn bad_value(name: &str, t: &Tensor) -> Result<Option<String>> {
    let values = t.flatten_all()?.to_vec1::<f32>()?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Ok(Some(format!(
            "value {i} of {} is {} (the file is damaged, or was saved from a run that diverged)",
            values.len(),
            values[i]
        )));
    }
    if name.ends_with(".running_var") {
        if let Some(i) = values.iter().position(|&v| v < 0.0) {
            return Ok(Some(format!("running variance {i} of {} is negative ({})", values.len(), values[i])));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn parameter_counts_match_seed_table() {
        let table = [
            ("unet", 17_267_393),
            ("light", 11_000_257),
            ("lighter@128", 7_944_661),
            ("lighter@64", 4_995_541),
            ("lighter@32", 3_465_685),
            ("lighter@16", 2_700_757),
            ("lighter@8", 2_318_293),
            ("lighter@4", 2_127_061),
            ("lighter@2", 2_031_445),
            ("lighter@1", 1_983_583),
        ];
        for (name, n) in table {
            let v: Variant = name.parse().unwrap();
            assert_eq!(parameter_count(v), n, "{name}");
        }
    }

    #[test]
    fn gflops_match_spec() {
        for (name, g) in [("unet", 80.0), ("light", 51.3), ("lighter@128", 75.3), ("lighter@1", 9.5)] {
            let v: Variant = name.parse().unwrap();
            let got = gflops(v, 256, 256);
            assert!((got - g).abs() < 0.06, "{name}: {got}");
        }
    }

    /// FNV-1a of `"{name} {shape:?}\n"` over every key, in order.
    fn fingerprint(shapes: &[(String, Vec<usize>)]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in shapes.iter().flat_map(|(n, s)| format!("{n} {s:?}\n").into_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    /// The keys, shapes and their order are exactly those of the table this module replaced
    /// (one hand-written list of the nine blocks), fingerprinted before it was removed.
    #[test]
    fn expected_shapes_are_unchanged() {
        let before = [
            ("unet", 128, 0x9639_f375_7dc2_950d_u64),
            ("light", 146, 0x8c21_a527_e1e0_de99),
            ("lighter@1", 164, 0x487d_9a36_bcea_71c1),
            ("lighter@2", 164, 0x423c_7c37_a383_1b14),
            ("lighter@4", 164, 0xfc3a_5965_d3d5_e672),
            ("lighter@8", 164, 0x55f1_8a05_05b1_ad56),
            ("lighter@16", 164, 0x0e7c_a9da_c38b_4e55),
            ("lighter@32", 164, 0x79ef_71c1_b26d_333f),
            ("lighter@64", 164, 0x931c_d8eb_a6ea_53e6),
            ("lighter@128", 164, 0x0ce6_f580_97f0_612e),
        ];
        assert_eq!(before.len(), Variant::all().len());
        for (name, count, hash) in before {
            let shapes = expected_shapes(name.parse().unwrap());
            assert_eq!(shapes.len(), count, "{name}");
            assert_eq!(fingerprint(&shapes), hash, "{name}");
        }
    }

    #[test]
    fn detection_round_trips_every_variant() {
        for v in Variant::all() {
            let shapes = expected_shapes(v);
            assert_eq!(detect_variant(&shapes).unwrap(), v);
            let without: Vec<_> = shapes.into_iter().filter(|(n, _)| !n.ends_with("num_batches_tracked")).collect();
            assert_eq!(detect_variant(&without).unwrap(), v);
        }
    }

    /// Detection failures are their own kind and say what was found.
    #[test]
    fn detection_failures_name_the_keys() {
        let shapes = |e: &[(&str, &[usize])]| -> Vec<(String, Vec<usize>)> {
            e.iter().map(|(n, s)| (n.to_string(), s.to_vec())).collect()
        };
        let err = detect_variant(&shapes(&[("fc.weight", &[10, 20])])).unwrap_err();
        assert!(matches!(err, Error::UnknownLayout(_)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("cannot tell the model variant: no `inc.double_conv.0.weight`"), "{msg}");
        assert!(msg.contains("`inc.double_conv.0.conv.0.weight` (Lighter U-net)") && msg.contains("found 1 tensors"), "{msg}");
        let msg = detect_variant(&shapes(&[("inc.double_conv.0.weight", &[64, 3, 3, 3])])).unwrap_err().to_string();
        assert!(
            msg.contains("conv set 1 is regular (`inc.double_conv.0.weight`) but conv set 2 is neither regular \
                 (`inc.double_conv.3.weight`) nor separable (`inc.double_conv.3.conv.0.weight`)"),
            "{msg}"
        );
        let key = "down4.maxpool_conv.1.double_conv.0.conv.0.weight";
        let msg = detect_variant(&shapes(&[("inc.double_conv.0.conv.0.weight", &[3, 1, 3, 3]), (key, &[256, 1, 3, 3])]))
            .unwrap_err()
            .to_string();
        assert!(msg.contains(&format!("`{key}` has shape [256, 1, 3, 3], expected [512, C, 3, 3]")), "{msg}");
    }

    #[test]
    fn weights_of_another_variant_are_named() {
        let tensors: HashMap<String, Tensor> = expected_shapes(Variant::Lighter(4))
            .into_iter()
            .map(|(n, s)| (n, Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap()))
            .collect();
        let err = check_weights(tensors, Variant::Lighter(1)).unwrap_err().to_string();
        assert!(err.contains("weights do not fit lighter@1") && err.contains("[3, 1, 3, 3]"), "{err}");
        assert!(err.contains("(these weights look like lighter@4)"), "{err}");
    }

    #[test]
    fn bottleneck_is_down4() {
        let arch = Arch::new(Variant::Light);
        assert_eq!(arch.bottleneck().name, "down4");
        assert_eq!(arch.bottleneck_dims(2, 100, 76), [2, 512, 6, 4]);
        assert_eq!((arch.in_channels(), arch.min_side()), (3, 16));
    }

    /// Weights of the right names and shapes but wrong values are refused, naming the tensor:
    /// NaN, infinity, a negative running variance, and integers posing as weights.
    #[test]
    fn bad_values_are_named() {
        let good = || -> HashMap<String, Tensor> {
            expected_shapes(Variant::Lighter(1))
                .into_iter()
                .map(|(n, s)| {
                    let t = if n.ends_with("num_batches_tracked") {
                        Tensor::zeros(s, DType::I64, &Device::Cpu)
                    } else {
                        Tensor::ones(s, DType::F32, &Device::Cpu)
                    };
                    (n, t.unwrap())
                })
                .collect()
        };
        assert!(check_weights(good(), Variant::Lighter(1)).is_ok());
        let with = |name: &str, values: Vec<f32>| {
            let mut t = good();
            let shape = t[name].dims().to_vec();
            t.insert(name.to_string(), Tensor::from_vec(values, shape, &Device::Cpu).unwrap());
            check_weights(t, Variant::Lighter(1)).unwrap_err().to_string()
        };
        let w = "down2.maxpool_conv.1.double_conv.0.conv.1.weight";
        let n = good()[w].elem_count();
        let mut v = vec![0.5f32; n];
        v[7] = f32::NAN;
        let e = with(w, v.clone());
        assert!(e.contains(w) && e.contains(&format!("value 7 of {n} is NaN")), "{e}");
        v[7] = f32::INFINITY;
        assert!(with(w, v).contains("is inf"));
        let rv = "up3.conv.double_conv.1.running_var";
        let mut v = vec![1f32; good()[rv].elem_count()];
        v[2] = -0.25;
        let e = with(rv, v);
        assert!(e.contains(rv) && e.contains("running variance 2") && e.contains("negative"), "{e}");

        let mut t = good();
        let b = "outc.conv.bias";
        t.insert(b.to_string(), Tensor::zeros(1, DType::U32, &Device::Cpu).unwrap());
        let e = check_weights(t, Variant::Lighter(1)).unwrap_err().to_string();
        assert!(e.contains(b) && e.contains("U32") && e.contains("floating point"), "{e}");
    }
}
