//! The clean-up rules of `predict` (and `process`/`live`): which connected component of the
//! thresholded map is kept. The probability maps are made by hand, so the rules are checked
//! without a trained network.

mod train_util;

use std::process::Command;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use lightunet::model::{InferenceNet, UNet, Variant};
use lightunet::postprocess::Cleanup;
use lightunet::predict::{PostOptions, Predictor};
use train_util::temp_dir;

/// Predictors with random weights (`finish` does not run the network) and each rule.
fn predictors() -> impl Fn(Cleanup) -> Predictor {
    let dir = temp_dir("cleanup-rules");
    let weights = dir.join("w.safetensors");
    let vm = VarMap::new();
    UNet::new(Variant::Lighter(1), VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    vm.save(&weights).unwrap();
    let net = InferenceNet::load(&weights, Variant::Lighter(1), &Device::Cpu).unwrap();
    move |cleanup| Predictor::new(net.clone(), 32, PostOptions { threshold: 0.5, cleanup }).unwrap()
}

/// A 32x32 map: a large faint blob (0.6, 10x10 at (2, 2)) and a small sure one (0.95, 4x4 at
/// (24, 24)); background 0.
fn two_blobs() -> Vec<f32> {
    (0..32 * 32)
        .map(|i| {
            let (x, y) = (i % 32, i / 32);
            if (2..12).contains(&x) && (2..12).contains(&y) {
                0.6
            } else if (24..28).contains(&x) && (24..28).contains(&y) {
                0.95
            } else {
                0.0
            }
        })
        .collect()
}

#[test]
fn each_rule_keeps_its_component() {
    let probs = two_blobs();
    let predictor = predictors();
    // At the network's size, so the map is not resampled: the masks are exact.
    let confident = predictor(Cleanup::Confident).finish(&probs, 32, 32).unwrap();
    assert_eq!(confident.count(), 16);
    assert!(confident.get(25, 25) && !confident.get(5, 5));
    let largest = predictor(Cleanup::Largest).finish(&probs, 32, 32).unwrap();
    assert_eq!(largest.count(), 100);
    assert!(largest.get(5, 5) && !largest.get(25, 25));
    let all = predictor(Cleanup::None).finish(&probs, 32, 32).unwrap();
    assert_eq!(all.count(), 116);
    // The default is the confident rule.
    assert_eq!(PostOptions::default().cleanup, Cleanup::Confident);
    // Resized to a larger image, the rule is applied to the resized map: still the small blob,
    // about 4x its pixels.
    let big = predictor(Cleanup::Confident).finish(&probs, 64, 64).unwrap();
    assert!(big.get(51, 51) && !big.get(10, 10), "{}", big.count());
}

#[test]
fn cli_names_the_rules_and_refuses_contradictions() {
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_lightunet")).arg("predict").args(args).output().unwrap();
    let help = String::from_utf8_lossy(&run(&["--help"]).stdout).into_owned();
    for name in Cleanup::NAMES {
        assert!(help.contains(name), "predict --help lacks `{name}`:\n{help}");
    }
    let base = ["--images", "nowhere", "--out", "nowhere-out"];
    let o = run(&[&base[..], &["--cleanup", "biggest"]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("biggest") && err.contains("confident"), "{err}");
    let o = run(&[&base[..], &["--cleanup", "largest", "--no-cleanup"]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--no-cleanup"), "{err}");
    for cmd in ["process", "live"] {
        let o = Command::new(env!("CARGO_BIN_EXE_lightunet")).args([cmd, "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(help.contains("--cleanup") && help.contains("largest"), "{cmd} --help:\n{help}");
    }
}

/// The video path (`process`, `live`, the element): [`MaskStage`] applies the rule at the model's
/// size, and the lesion statistics follow the kept component.
#[test]
fn video_mask_stage_follows_the_rule() {
    use lightunet::pipeline::{MaskStage, ProcessConfig, Roi};
    // The 32x32 map above, scaled up 8 times to the model's 256x256.
    let small = two_blobs();
    let map: Vec<f32> = (0..256 * 256).map(|i| small[(i / 256 / 8) * 32 + (i % 256) / 8]).collect();
    let frame = (512, 512);
    let run = |cleanup: Cleanup| {
        let cfg = ProcessConfig { cleanup, ..ProcessConfig::default() };
        assert_eq!(cfg.model_size, (256, 256));
        let mut stage = MaskStage::new(&cfg);
        let stats = stage.run(0, &mut map.clone(), frame, Roi::full(frame.0, frame.1)).unwrap().expect("a lesion");
        (stage.mask().count(), stats.area_px, stats.mean_probability)
    };
    // Default (confident): the small sure blob, 4x4 * 8^2 model pixels, 4x that in the frame.
    assert_eq!(ProcessConfig::default().cleanup, Cleanup::Confident);
    let (kept, area, p) = run(Cleanup::default());
    assert_eq!((kept, area), (16 * 64, 16 * 64 * 4));
    assert!((p - 0.95).abs() < 1e-6, "{p}");
    let (kept, area, p) = run(Cleanup::Largest);
    assert_eq!((kept, area), (100 * 64, 100 * 64 * 4));
    assert!((p - 0.6).abs() < 1e-6, "{p}");
    let (kept, _, _) = run(Cleanup::None);
    assert_eq!(kept, 116 * 64);
}
