//! `lightunet convert` and the checkpoint importer end to end: the original PyTorch fixtures
//! convert, load, and reproduce PyTorch's output; damaged inputs fail cleanly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device, Tensor};
use lightunet::checkpoint::{self, detect_variant};
use lightunet::model::{InferenceNet, Variant};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(rel: &str) -> PathBuf {
    Path::new(FIXTURES).join(rel)
}

/// A fresh scratch directory per test (tests run in parallel).
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lightunet-convert-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn lightunet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lightunet"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    a.sub(b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Runs `input0` of the parity fixture through converted weights and compares with `output0`.
///
/// The fixture came from the original repository's model in eval mode:
/// ```python
/// model = torch.load("lighter_at1.whole-model.pth", weights_only=False).eval()
/// with torch.no_grad():
///     output0 = torch.sigmoid(model(input0))   # input0: [1, 3, 256, 256] in 0..1
/// ```
fn assert_reproduces_pytorch(weights: &Path) {
    let io =
        candle_core::safetensors::load(fixture("parity/lighter_at1.io.safetensors"), &Device::Cpu)
            .unwrap();
    let net = InferenceNet::load(weights, Variant::Lighter(1), &Device::Cpu).unwrap();
    let out = net.forward(&io["input0"]).unwrap();
    assert_eq!(out.dims(), io["output0"].dims());
    let diff = max_abs_diff(&out, &io["output0"]);
    assert!(diff <= 1e-4, "{}: max |diff| {diff}", weights.display());
}

#[test]
fn whole_model_converts_and_matches_pytorch() {
    let dir = scratch("whole");
    let out = dir.join("lighter_at1.safetensors");
    let run = lightunet(&[
        "convert",
        fixture("torch/lighter_at1.whole-model.pth")
            .to_str()
            .unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let stdout = text(&run.stdout);
    assert!(
        stdout.contains("detected lighter@1 (Lighter U-net@1), 1,983,583 parameters"),
        "{stdout}"
    );

    let written = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    assert_eq!(written.len(), 164);
    assert_eq!(
        written["inc.double_conv.0.conv.0.weight"].dtype(),
        DType::F32
    );
    assert_eq!(
        written["inc.double_conv.1.num_batches_tracked"].dtype(),
        DType::I64
    );
    assert_reproduces_pytorch(&out);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn f16_state_dict_converts_and_matches_pytorch() {
    let dir = scratch("f16");
    let input = fixture("torch/lighter_at1.state-dict-f16.pth");
    // As stored (f16), and widened to f32: both must load and agree with PyTorch.
    for (dtype, want) in [("keep", DType::F16), ("f32", DType::F32)] {
        let out = dir.join(format!("{dtype}.safetensors"));
        let run = lightunet(&[
            "convert",
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            "--model",
            "lighter@1",
            "--dtype",
            dtype,
        ]);
        assert!(run.status.success(), "{}", text(&run.stderr));
        assert!(text(&run.stdout).contains("detected lighter@1"));
        let written = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
        assert_eq!(written["outc.conv.weight"].dtype(), want);
        assert_reproduces_pytorch(&out);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn library_import_detects_both_fixtures() {
    for file in [
        "torch/lighter_at1.whole-model.pth",
        "torch/lighter_at1.state-dict-f16.pth",
    ] {
        let tensors = checkpoint::read_pth(&fixture(file)).unwrap();
        let shapes = checkpoint::shapes(&tensors);
        assert_eq!(
            detect_variant(&shapes).unwrap(),
            Variant::Lighter(1),
            "{file}"
        );
        // Every key the model expects, with its shape, and nothing else.
        let mut got = shapes.clone();
        let mut want = lightunet::model::expected_shapes(Variant::Lighter(1));
        got.sort();
        want.sort();
        assert_eq!(got, want, "{file}");
    }
}

#[test]
fn wrong_model_flag_names_both_variants() {
    let dir = scratch("wrong");
    let out = dir.join("x.safetensors");
    let run = lightunet(&[
        "convert",
        fixture("torch/lighter_at1.whole-model.pth")
            .to_str()
            .unwrap(),
        out.to_str().unwrap(),
        "--model",
        "unet",
    ]);
    assert!(!run.status.success());
    let stderr = text(&run.stderr);
    assert!(
        stderr.contains("lighter@1") && stderr.contains("unet"),
        "{stderr}"
    );
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn refuses_to_overwrite_without_flag() {
    let dir = scratch("overwrite");
    let out = dir.join("x.safetensors");
    std::fs::write(&out, b"keep me").unwrap();
    let input = fixture("torch/lighter_at1.state-dict-f16.pth");
    let run = lightunet(&["convert", input.to_str().unwrap(), out.to_str().unwrap()]);
    assert!(!run.status.success());
    assert!(
        text(&run.stderr).contains("--overwrite"),
        "{}",
        text(&run.stderr)
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");

    let run = lightunet(&[
        "convert",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        "--overwrite",
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(
        candle_core::safetensors::load(&out, &Device::Cpu)
            .unwrap()
            .len(),
        164
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damaged_inputs_fail_cleanly() {
    let dir = scratch("damaged");
    let whole = std::fs::read(fixture("torch/lighter_at1.whole-model.pth")).unwrap();
    let mut random = Vec::with_capacity(100_000);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        random.push((x >> 32) as u8);
    }
    let cases: [(&str, &[u8], &str); 5] = [
        ("truncated.pth", &whole[..whole.len() / 2], "zip archive"),
        ("random.pth", &random, "no zip archive"),
        ("empty.pth", b"", "empty file"),
        ("text.pth", b"this is not a checkpoint\n", "no zip archive"),
        ("cut-tail.pth", &whole[..whole.len() - 10], "zip archive"),
    ];
    for (name, bytes, reason) in cases {
        let input = dir.join(name);
        std::fs::write(&input, bytes).unwrap();
        let out = dir.join("out.safetensors");
        let run = lightunet(&["convert", input.to_str().unwrap(), out.to_str().unwrap()]);
        let stderr = text(&run.stderr);
        assert!(!run.status.success(), "{name}");
        assert!(
            stderr.contains("error:") && stderr.contains(name) && stderr.contains(reason),
            "{name}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(!out.exists(), "{name}");

        let err = checkpoint::read_pth(&input).unwrap_err();
        assert!(
            matches!(err, lightunet::Error::Checkpoint { .. }),
            "{name}: {err}"
        );
    }
    let missing = checkpoint::read_pth(&dir.join("does-not-exist.pth")).unwrap_err();
    assert!(matches!(missing, lightunet::Error::Checkpoint { .. }));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn detect_variant_on_model_layouts() {
    for variant in Variant::all() {
        let shapes = lightunet::model::expected_shapes(variant);
        assert_eq!(detect_variant(&shapes).unwrap(), variant);
        // num_batches_tracked may be absent from older checkpoints.
        let without: Vec<_> = shapes
            .into_iter()
            .filter(|(n, _)| !n.ends_with("num_batches_tracked"))
            .collect();
        assert_eq!(detect_variant(&without).unwrap(), variant);
    }
}

#[test]
fn detect_variant_parameter_counts_match_the_table() {
    for (variant, count) in [
        (Variant::UNet, 17_267_393),
        (Variant::Light, 11_000_257),
        (Variant::Lighter(128), 7_944_661),
        (Variant::Lighter(1), 1_983_583),
        (Variant::Lighter(16), 2_700_757),
    ] {
        let shapes = lightunet::model::expected_shapes(variant);
        assert_eq!(checkpoint::parameter_count(&shapes), count, "{variant}");
    }
}
