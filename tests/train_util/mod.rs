//! Synthetic data for the training and predict tests: dark disks (lesions) on speckle-like
//! noise, written in the original layout, plus a few deliberately bad files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A fresh, empty temporary folder for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lightunet-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Grey image with a dark disk and its 0/255 mask, `w x h`.
pub fn disk(seed: u64, w: u32, h: u32) -> (image::GrayImage, image::GrayImage) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = rng.random_range(w.min(h) as f32 * 0.15..w.min(h) as f32 * 0.3);
    let cx = rng.random_range(r..w as f32 - r);
    let cy = rng.random_range(r..h as f32 - r);
    let mut img = image::GrayImage::new(w, h);
    let mut mask = image::GrayImage::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let inside = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) <= r * r;
            let base: f32 = if inside { 40.0 } else { 150.0 };
            let v = (base + rng.random_range(-30.0..30.0)).clamp(0.0, 255.0);
            img.put_pixel(x, y, image::Luma([v as u8]));
            mask.put_pixel(x, y, image::Luma([if inside { 255 } else { 0 }]));
        }
    }
    (img, mask)
}

/// `root/<split>/{images,mask}/s<i>.png` with `n` disks of `size x size`.
pub fn write_split(root: &Path, split: &str, n: usize, size: u32, seed: u64) {
    let (images, masks) = (root.join(split).join("images"), root.join(split).join("mask"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    for i in 0..n {
        let (img, mask) = disk(seed * 1000 + i as u64, size, size);
        img.save(images.join(format!("s{i}.png"))).unwrap();
        mask.save(masks.join(format!("s{i}.png"))).unwrap();
    }
}

/// A data root with `train/` and `val/`.
pub fn write_dataset(root: &Path, n_train: usize, n_val: usize, size: u32) {
    write_split(root, "train", n_train, size, 1);
    write_split(root, "val", n_val, size, 2);
}
