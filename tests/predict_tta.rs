//! `predict --tta hflip`: the probability map is the mean of the image's and its mirror image's
//! (mirrored back), so mirroring the input mirrors the output exactly, which a plain forward
//! pass of a network does not.

mod train_util;

use std::process::Command;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use lightunet::model::{InferenceNet, UNet, Variant};
use lightunet::predict::{PostOptions, Predictor, Tta};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use train_util::{disk, temp_dir};

fn random_weights(path: &std::path::Path) {
    let vm = VarMap::new();
    UNet::new(Variant::Lighter(1), VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    vm.save(path).unwrap();
}

fn mirror(v: &[f32], w: usize) -> Vec<f32> {
    v.chunks_exact(w).flat_map(|row| row.iter().rev().copied()).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn hflip_tta_is_mirror_symmetric() {
    let dir = temp_dir("tta-symmetry");
    let weights = dir.join("w.safetensors");
    random_weights(&weights);
    let s = 32;
    let net = InferenceNet::load(&weights, Variant::Lighter(1), &Device::Cpu).unwrap();
    let plain = Predictor::new(net, s, PostOptions::default()).unwrap();
    let tta = plain.clone().with_tta(Tta::Hflip);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x: Vec<f32> = (0..3 * s * s).map(|_| rng.random::<f32>()).collect();
    let mx = mirror(&x, s);
    let p = plain.probabilities(&[x.clone(), mx.clone()]).unwrap();
    // A network alone is not mirror-symmetric (else this test would prove nothing).
    assert!(max_diff(&p[1], &mirror(&p[0], s)) > 1e-4, "the random network happens to be symmetric");
    let t = tta.probabilities(&[x, mx]).unwrap();
    assert!(max_diff(&t[1], &mirror(&t[0], s)) < 1e-6, "TTA of the mirror image is not the mirrored TTA");
    // And TTA is the mean of the image's map and the mirror's map mirrored back.
    let mean: Vec<f32> = p[0].iter().zip(mirror(&p[1], s)).map(|(a, b)| 0.5 * (a + b)).collect();
    assert!(max_diff(&t[0], &mean) < 1e-6);
    assert_eq!(tta.tta(), Tta::Hflip);
    let _ = std::fs::remove_dir_all(&dir);
}

/// End to end: an image and its mirror image in one folder; with --tta hflip their masks are
/// mirror images of each other (image size = network size and --no-cleanup, so nothing but
/// TTA stands between the maps and the masks), and the report says which TTA ran.
#[test]
fn predict_cli_tta_mirrors_masks() {
    let dir = temp_dir("tta-cli");
    let (images, masks) = (dir.join("images"), dir.join("masks"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    let (img, mask) = disk(3, 32, 32);
    img.save(images.join("a.png")).unwrap();
    mask.save(masks.join("a.png")).unwrap();
    image::imageops::flip_horizontal(&img).save(images.join("b.png")).unwrap();
    image::imageops::flip_horizontal(&mask).save(masks.join("b.png")).unwrap();
    let weights = dir.join("w.safetensors");
    random_weights(&weights);
    // The threshold: the median of image a's TTA map, so that half its mask is on (random
    // weights put every probability on one side of 0.5).
    let net = InferenceNet::load(&weights, Variant::Lighter(1), &Device::Cpu).unwrap();
    let predictor = Predictor::new(net, 32, PostOptions::default()).unwrap().with_tta(Tta::Hflip);
    let input = lightunet::preprocess::model_input(&lightunet::image_io::load_bgr(&images.join("a.png")).unwrap(), 32).unwrap();
    let mut probs = predictor.probabilities(&[input]).unwrap().remove(0);
    probs.sort_by(f32::total_cmp);
    let threshold = probs[probs.len() / 2].to_string();
    let predict = |out: &str, tta: &[&str]| -> serde_json::Value {
        let out = dir.join(out);
        let o = Command::new(env!("CARGO_BIN_EXE_lightunet"))
            .args(["predict", "--model", "lighter@1", "--size", "32", "--no-cleanup", "--threshold", &threshold])
            .args(tta)
            .arg("--weights")
            .arg(&weights)
            .arg("--images")
            .arg(&images)
            .arg("--masks")
            .arg(&masks)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let a = image::open(out.join("masks/a.png")).unwrap().to_luma8();
        let b = image::open(out.join("masks/b.png")).unwrap().to_luma8();
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
        if tta.is_empty() {
            assert_eq!(report["tta"], "none");
        } else {
            let on = a.pixels().filter(|p| p[0] > 0).count();
            assert!(on > 0 && on < 32 * 32, "a uniform mask ({on} px on) would make the check empty");
            assert_eq!(image::imageops::flip_horizontal(&a), b, "masks of mirror images are not mirrored");
            assert_eq!(report["tta"], "hflip");
        }
        report
    };
    predict("plain", &[]);
    let r = predict("tta", &["--tta", "hflip"]);
    let rows = r["images"].as_array().unwrap();
    assert_eq!(rows[0]["metrics"]["dice"], rows[1]["metrics"]["dice"], "mirror images score alike with TTA");
    let _ = std::fs::remove_dir_all(&dir);
}
