//! Reading images and ground-truth masks, finding them in folders, and writing PNGs: the image
//! files `predict` and `train` read and write.
//!
//! Images: any supported format (PNG, JPEG, BMP, TIFF) and bit depth is read as 8-bit BGR
//! (OpenCV's channel order, as the original's `cv2.imread`; grey replicated, alpha dropped,
//! 16-bit scaled to 8).
//!
//! Ground-truth masks: read as grey; a mask whose values are all 0 or 1 is a label image (1 is
//! lesion), anything else is lesion where the value is > 127 (of 255). Values other than the two
//! extremes are counted ([`LoadedMask::non_binary`]) so callers can warn about them.
//!
//! Folders: images and masks are matched by name ([`pair_key`]), not by position.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image::ImageEncoder;
use serde::Serialize;

use crate::atomic_write::write_atomic;
use crate::error::{Error, Result};
use crate::metrics::{pixel_count, Mask, ShapeError};

/// File extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

/// An 8-bit, 3-channel image in BGR order, rows packed (`stride == width * 3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgrImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl BgrImage {
    pub fn stride(&self) -> usize {
        self.width * 3
    }
}

fn decode(path: &Path) -> Result<image::DynamicImage> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    reader
        .decode()
        .map_err(|e| Error::Input(format!("{}: cannot decode image: {e}", path.display())))
}

/// Reads any supported image as 8-bit BGR (grey replicated, 16 bit scaled, alpha dropped).
pub fn load_bgr(path: &Path) -> Result<BgrImage> {
    let rgb = decode(path)?.to_rgb8();
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    let mut data = rgb.into_raw();
    for px in data.chunks_exact_mut(3) {
        px.swap(0, 2);
    }
    Ok(BgrImage { width, height, data })
}

/// A ground-truth mask and how clean it was.
#[derive(Debug, Clone)]
pub struct LoadedMask {
    pub mask: Mask,
    /// Pixels that were neither background nor full-scale lesion (JPEG artefacts, soft edges).
    pub non_binary: usize,
}

/// Reads a mask: see the module documentation for the binarisation rule.
pub fn load_mask(path: &Path) -> Result<LoadedMask> {
    let grey = decode(path)?.to_luma8();
    let (w, h) = (grey.width() as usize, grey.height() as usize);
    let values = grey.into_raw();
    Ok(binarize_mask(&values, w, h))
}

/// The binarisation rule of [`load_mask`] on 8-bit grey values.
pub fn binarize_mask(values: &[u8], width: usize, height: usize) -> LoadedMask {
    let labels = values.iter().all(|&v| v <= 1);
    let (data, non_binary) = if labels {
        (values.iter().map(|&v| v == 1).collect::<Vec<_>>(), 0)
    } else {
        let odd = values.iter().filter(|&&v| v != 0 && v != 255).count();
        (values.iter().map(|&v| v > 127).collect(), odd)
    };
    LoadedMask { mask: Mask { width, height, data }, non_binary }
}

/// Image files directly in `dir` (not recursive), sorted by file name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if path.is_file() && ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str())) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// The name images and masks are matched by: the file stem, without a trailing `_mask` (BUSI's
/// raw naming) so `a.png` matches `a.png`, `a.bmp` and `a_mask.png`.
pub fn pair_key(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    stem.strip_suffix("_mask").map(str::to_string).unwrap_or(stem)
}

/// Images matched with masks by [`pair_key`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pairing {
    /// `(key, image, mask)`, sorted by key.
    pub pairs: Vec<(String, PathBuf, Option<PathBuf>)>,
    /// Images for which no mask was found (only when masks were given).
    pub images_without_mask: Vec<PathBuf>,
    /// Masks for which no image was found.
    pub masks_without_image: Vec<PathBuf>,
    /// Files sharing a key with another file of the same folder (the first one is used).
    pub duplicates: Vec<PathBuf>,
}

/// Lists `images` and (optionally) `masks` and pairs them by [`pair_key`].
pub fn pair_files(images: &Path, masks: Option<&Path>) -> Result<Pairing> {
    let mut pairing = Pairing::default();
    let by_key = |files: Vec<PathBuf>, dups: &mut Vec<PathBuf>| {
        let mut map = BTreeMap::new();
        for f in files {
            match map.entry(pair_key(&f)) {
                std::collections::btree_map::Entry::Occupied(_) => dups.push(f),
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(f);
                }
            }
        }
        map
    };
    let imgs = by_key(list_images(images)?, &mut pairing.duplicates);
    let mut msks = match masks {
        Some(m) => by_key(list_images(m)?, &mut pairing.duplicates),
        None => BTreeMap::new(),
    };
    for (key, img) in imgs {
        let mask = msks.remove(&key);
        if masks.is_some() && mask.is_none() {
            pairing.images_without_mask.push(img.clone());
        }
        pairing.pairs.push((key, img, mask));
    }
    pairing.masks_without_image = msks.into_values().collect();
    Ok(pairing)
}

/// Pixel layouts that [`save_png`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PngColor {
    /// One byte per pixel.
    Grey,
    /// Three bytes per pixel, in R, G, B order.
    Rgb,
}

/// Writes packed 8-bit pixels (`width * height` of them, rows without padding) as a PNG,
/// atomically.
pub fn save_png(path: &Path, pixels: &[u8], width: usize, height: usize, color: PngColor) -> Result<()> {
    let (channels, color_type) = match color {
        PngColor::Grey => (1, image::ExtendedColorType::L8),
        PngColor::Rgb => (3, image::ExtendedColorType::Rgb8),
    };
    let n = pixel_count(width, height, "PNG pixels")?
        .checked_mul(channels)
        .ok_or(ShapeError::Overflow { what: "PNG pixels" })?;
    if pixels.len() != n {
        return Err(ShapeError::Length { what: "PNG pixels", expected: n, got: pixels.len() }.into());
    }
    let encode_error = |reason: String| Error::Encode { path: path.to_path_buf(), reason };
    let (w, h) = (u32::try_from(width), u32::try_from(height));
    let (Ok(w), Ok(h)) = (w, h) else { return Err(encode_error(format!("{width}x{height} is too large for a PNG"))) };
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(pixels, w, h, color_type)
        .map_err(|e| encode_error(e.to_string()))?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_rules() {
        let m = binarize_mask(&[0, 1, 1, 0], 2, 2);
        assert_eq!(m.mask.data, vec![false, true, true, false]);
        let m = binarize_mask(&[0, 255, 128, 127], 2, 2);
        assert_eq!(m.mask.data, vec![false, true, true, false]);
        assert_eq!(m.non_binary, 2);
    }

    #[test]
    fn keys() {
        assert_eq!(pair_key(Path::new("/a/benign (1)_mask.png")), "benign (1)");
        assert_eq!(pair_key(Path::new("x.tiff")), "x");
    }

    #[test]
    fn png_round_trip_and_size_check() {
        let dir = std::env::temp_dir().join(format!("lightunet-image-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.png");
        let rgb: Vec<u8> = (0..5 * 3 * 3).map(|i| (i * 17 % 256) as u8).collect();
        save_png(&path, &rgb, 5, 3, PngColor::Rgb).unwrap();
        let back = load_bgr(&path).unwrap();
        assert_eq!((back.width, back.height), (5, 3));
        assert!(back.data.chunks_exact(3).zip(rgb.chunks_exact(3)).all(|(b, r)| b == [r[2], r[1], r[0]]));
        assert!(matches!(save_png(&path, &rgb[1..], 5, 3, PngColor::Rgb), Err(Error::Shape(_))));
        save_png(&path, &[0, 255, 255, 0], 2, 2, PngColor::Grey).unwrap();
        assert_eq!(load_mask(&path).unwrap().mask.data, vec![false, true, true, false]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
