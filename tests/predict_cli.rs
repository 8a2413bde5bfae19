//! `lightunet predict` on a folder of mixed formats and bit depths with unmatched names and a
//! corrupt file: every readable image gets a mask at its own size and an overlay, metrics come
//! out as JSON, CSV and a table, and the problems are listed without failing the run.

mod train_util;

use std::process::Command;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use lightunet::model::{UNet, Variant};
use train_util::{disk, temp_dir};

fn random_weights(path: &std::path::Path) {
    let vm = VarMap::new();
    UNet::new(Variant::Lighter(1), VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    vm.save(path).unwrap();
}

#[test]
fn predict_mixed_folder() {
    let dir = temp_dir("predict-mixed");
    let (images, masks, out) = (dir.join("images"), dir.join("masks"), dir.join("out"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    let (g, m) = disk(1, 40, 30);
    g.save(images.join("grey8.png")).unwrap();
    m.save(masks.join("grey8.png")).unwrap();
    // 16-bit grey PNG, its mask saved as a BMP under the same name.
    let g16 = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(40, 30, |x, y| {
        image::Luma([u16::from(g.get_pixel(x, y)[0]) * 257])
    });
    g16.save(images.join("grey16.png")).unwrap();
    image::DynamicImage::ImageLuma8(m.clone()).to_rgb8().save(masks.join("grey16.bmp")).unwrap();
    // RGB JPEG with a mask of a different size (listed, no metrics).
    let (g2, _) = disk(2, 48, 36);
    image::DynamicImage::ImageLuma8(g2).to_rgb8().save(images.join("colour.jpg")).unwrap();
    m.save(masks.join("colour.png")).unwrap();
    // 16-bit RGB TIFF without a mask.
    let rgb16 = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(33, 20, |x, y| image::Rgb([x as u16 * 1000, y as u16 * 2000, 30000]));
    rgb16.save(images.join("tiff16.tif")).unwrap();
    // A mask without an image and a corrupt image.
    m.save(masks.join("orphan.png")).unwrap();
    std::fs::write(images.join("broken.png"), b"not a png").unwrap();
    // A label mask (0/1) for an RGBA image.
    let rgba = image::RgbaImage::from_pixel(24, 24, image::Rgba([90, 90, 90, 255]));
    rgba.save(images.join("rgba.png")).unwrap();
    let labels = image::GrayImage::from_fn(24, 24, |x, _| image::Luma([u8::from(x < 12)]));
    labels.save(masks.join("rgba.png")).unwrap();

    let weights = dir.join("w.safetensors");
    random_weights(&weights);
    let output = Command::new(env!("CARGO_BIN_EXE_lightunet"))
        .args(["predict", "--model", "lighter@1", "--size", "32", "--images"])
        .arg(&images)
        .arg("--masks")
        .arg(&masks)
        .arg("--weights")
        .arg(&weights)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("MEAN"), "{stdout}");
    assert!(stdout.contains("masks without an image") && stdout.contains("orphan.png"), "{stdout}");
    assert!(stdout.contains("images without a mask") && stdout.contains("tiff16.tif"), "{stdout}");

    // Masks at each image's own size.
    for (name, w, h) in [("grey8", 40, 30), ("grey16", 40, 30), ("colour", 48, 36), ("tiff16", 33, 20), ("rgba", 24, 24)] {
        let m = image::open(out.join("masks").join(format!("{name}.png"))).unwrap();
        assert_eq!((m.width(), m.height()), (w, h), "{name}");
        assert!(out.join("overlays").join(format!("{name}.png")).is_file(), "{name} overlay");
    }
    assert!(!out.join("masks/broken.png").exists());

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let rows = report["images"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    let row = |n: &str| rows.iter().find(|r| r["name"] == n).unwrap().clone();
    assert!(row("broken")["problem"].as_str().unwrap().contains("unreadable"));
    assert!(row("colour")["problem"].as_str().unwrap().contains("mask is 40x30"));
    assert!(row("grey8")["metrics"]["dice"].is_number());
    assert!(row("grey16")["metrics"]["specificity"].is_number());
    assert!(row("rgba")["metrics"]["dice"].is_number());
    assert!(row("tiff16")["metrics"].is_null());
    assert_eq!(report["summary"]["images"], 3);
    let skipped = report["summary"]["distances_skipped"].as_u64().unwrap();
    assert_eq!(report["summary"]["with_distances"].as_u64().unwrap() + skipped, 3);
    assert_eq!(report["masks_without_image"].as_array().unwrap().len(), 1);

    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("name,width,height,predicted_area_px,dice,jaccard,hd,hd95,asd,assd"));
    assert_eq!(lines.len(), 1 + 6 + 1, "{csv}");
    assert!(lines.last().unwrap().starts_with("mean,"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Clear errors for a missing variant, an empty folder and weights of another variant.
#[test]
fn predict_needs_a_model_and_images() {
    let dir = temp_dir("predict-errors");
    let weights = dir.join("w.safetensors");
    random_weights(&weights);
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_lightunet")).args(args).output().unwrap()
    };
    let w = weights.to_str().unwrap();
    let e = empty.to_str().unwrap();
    let o = dir.join("out");
    let o = o.to_str().unwrap();
    let out = run(&["predict", "--weights", w, "--images", e, "--out", o]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--model is required"));
    let out = run(&["predict", "--model", "lighter@1", "--weights", w, "--images", e, "--out", o]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no images"));
    let out = run(&["predict", "--model", "unet", "--weights", w, "--images", e, "--out", o]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("do not fit unet"), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
