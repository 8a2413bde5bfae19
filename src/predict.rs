//! Offline inference on image files, as the original `predict.py` did it, and the shared image
//! I/O that training uses too.
//!
//! Pre-processing (SPEC.md): any format and bit depth is read as 8-bit BGR (OpenCV's channel
//! order; grey replicated, alpha dropped, 16-bit scaled to 8), resized to `size x size`
//! bilinearly *in 8 bits* (like `cv2.resize` on a `uint8` image: the result is rounded back to
//! bytes) and scaled by 1/255. Post-processing: the probability map resized back to the image
//! size, thresholded (`> 0.5` by default), and by default reduced to its largest connected
//! component, filled ([`crate::postprocess`]).
//!
//! Ground-truth masks: read as grey; a mask whose values are all 0 or 1 is a label image (1 is
//! lesion), anything else is lesion where the value is > 127 (of 255). Values other than the two
//! extremes are counted ([`LoadedMask::non_binary`]) so callers can warn about them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::metrics::{Mask, Metrics, Summary};
use crate::model::InferenceNet;
use crate::postprocess::{largest_component, resize_bilinear_f32, threshold};

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

/// `img` resized to `size x size` (bilinear, rounded to bytes like `cv2.resize` on `uint8`), as
/// three planes B, G, R: `[3, size, size]`.
pub fn resize_planar_u8(img: &BgrImage, size: usize) -> Result<Vec<u8>> {
    let plane = img.width * img.height;
    let mut out = Vec::with_capacity(3 * size * size);
    for ch in 0..3 {
        let src: Vec<f32> = (0..plane).map(|i| f32::from(img.data[i * 3 + ch])).collect();
        let resized = resize_bilinear_f32(&src, img.width, img.height, size, size)
            .map_err(|e| Error::Input(e.to_string()))?;
        out.extend(resized.iter().map(|v| v.round().clamp(0.0, 255.0) as u8));
    }
    Ok(out)
}

/// Planar bytes to the network's input scale (`/255`).
pub fn to_unit_f32(planar: &[u8]) -> Vec<f32> {
    planar.iter().map(|&v| f32::from(v) / 255.0).collect()
}

/// What to do with the probability map.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PostOptions {
    /// Lesion where the probability (resized to the image) is above this.
    pub threshold: f32,
    /// Keep only the largest connected component, filled (the original's behaviour).
    pub largest_component: bool,
}

impl Default for PostOptions {
    fn default() -> Self {
        Self { threshold: 0.5, largest_component: true }
    }
}

/// A network and its pre/post-processing.
#[derive(Debug, Clone)]
pub struct Predictor {
    net: InferenceNet,
    size: usize,
    post: PostOptions,
}

/// The result for one image.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// Probabilities at the network's resolution, `size x size`, row-major.
    pub probs: Vec<f32>,
    /// The final mask at the image's size.
    pub mask: Mask,
}

impl Predictor {
    pub fn new(net: InferenceNet, size: usize, post: PostOptions) -> Result<Self> {
        if size < 16 {
            return Err(Error::Input(format!("network input size must be >= 16, got {size}")));
        }
        Ok(Self { net, size, post })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn device(&self) -> &Device {
        self.net.device()
    }

    /// Probability maps (`size x size` each) for pre-processed inputs (`[3, size, size]`, 0..1).
    pub fn probabilities(&self, inputs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let s = self.size;
        let flat: Vec<f32> = inputs.iter().flat_map(|v| v.iter().copied()).collect();
        if flat.len() != inputs.len() * 3 * s * s {
            return Err(Error::Input(format!("inputs must be [3, {s}, {s}] each")));
        }
        let x = Tensor::from_vec(flat, (inputs.len(), 3, s, s), &Device::Cpu)?.to_device(self.device())?;
        let y = self.net.forward(&x)?.to_device(&Device::Cpu)?; // [N, 1, s, s]
        let all = y.flatten_all()?.to_vec1::<f32>()?;
        Ok(all.chunks_exact(s * s).map(<[f32]>::to_vec).collect())
    }

    /// Runs a batch of images end to end.
    pub fn predict(&self, images: &[&BgrImage]) -> Result<Vec<Prediction>> {
        let inputs = images
            .iter()
            .map(|img| Ok(to_unit_f32(&resize_planar_u8(img, self.size)?)))
            .collect::<Result<Vec<_>>>()?;
        let probs = self.probabilities(&inputs)?;
        images
            .iter()
            .zip(probs)
            .map(|(img, p)| {
                let mask = self.finish(&p, img.width, img.height)?;
                Ok(Prediction { probs: p, mask })
            })
            .collect()
    }

    /// Probability map (`size x size`) to the final mask at `width x height`.
    pub fn finish(&self, probs: &[f32], width: usize, height: usize) -> Result<Mask> {
        let shape = |e: crate::metrics::ShapeError| Error::Input(e.to_string());
        let resized = resize_bilinear_f32(probs, self.size, self.size, width, height).map_err(shape)?;
        let mask = threshold(&resized, width, height, self.post.threshold).map_err(shape)?;
        Ok(if self.post.largest_component { largest_component(&mask) } else { mask })
    }
}

// ---------------------------------------------------------------------------------------------
// Listing and pairing files

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

// ---------------------------------------------------------------------------------------------
// Evaluation report

/// One image's row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    pub name: String,
    pub image: PathBuf,
    pub mask: Option<PathBuf>,
    pub width: usize,
    pub height: usize,
    /// Lesion pixels of the predicted mask.
    pub predicted_area_px: usize,
    /// Metrics against the ground truth, when there was a usable one.
    pub metrics: Option<MetricsRow>,
    /// Why the image or its mask could not be used, if so.
    pub problem: Option<String>,
}

/// [`Metrics`] in a serialisable form (`null` distances where a mask was empty).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MetricsRow {
    pub dice: f64,
    pub jaccard: f64,
    pub hd: Option<f64>,
    pub hd95: Option<f64>,
    pub asd: Option<f64>,
    pub assd: Option<f64>,
    pub precision: f64,
    pub recall: f64,
    pub sensitivity: f64,
    pub specificity: f64,
}

impl From<&Metrics> for MetricsRow {
    fn from(m: &Metrics) -> Self {
        Self {
            dice: m.dice,
            jaccard: m.jaccard,
            hd: m.hd,
            hd95: m.hd95,
            asd: m.asd,
            assd: m.assd,
            precision: m.precision,
            recall: m.recall,
            sensitivity: m.sensitivity,
            specificity: m.specificity,
        }
    }
}

/// Means over the images with metrics.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryRow {
    pub images: usize,
    pub with_distances: usize,
    pub distances_skipped: usize,
    pub mean: Option<MetricsRow>,
}

impl From<&[Metrics]> for SummaryRow {
    fn from(all: &[Metrics]) -> Self {
        let s = Summary::from(all);
        let mean = (s.images > 0).then_some(MetricsRow {
            dice: s.dice,
            jaccard: s.jaccard,
            hd: s.hd,
            hd95: s.hd95,
            asd: s.asd,
            assd: s.assd,
            precision: s.precision,
            recall: s.recall,
            sensitivity: s.sensitivity,
            specificity: s.specificity,
        });
        Self { images: s.images, with_distances: s.with_distances, distances_skipped: s.distances_skipped, mean }
    }
}

/// Everything `predict` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub weights: PathBuf,
    pub size: usize,
    pub post: PostOptions,
    pub images: Vec<ImageReport>,
    pub images_without_mask: Vec<PathBuf>,
    pub masks_without_image: Vec<PathBuf>,
    pub duplicates: Vec<PathBuf>,
    pub summary: SummaryRow,
}

/// CSV column names, in the order of [`csv_row`].
pub const CSV_HEADER: &str =
    "name,width,height,predicted_area_px,dice,jaccard,hd,hd95,asd,assd,precision,recall,sensitivity,specificity,problem";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One CSV line (no newline); empty cells where a value does not exist.
pub fn csv_row(r: &ImageReport) -> String {
    let f = |v: f64| format!("{v}");
    let o = |v: Option<f64>| v.map(f).unwrap_or_default();
    let m = r.metrics.as_ref();
    let mut cells = vec![csv_field(&r.name), r.width.to_string(), r.height.to_string(), r.predicted_area_px.to_string()];
    match m {
        Some(m) => cells.extend([
            f(m.dice),
            f(m.jaccard),
            o(m.hd),
            o(m.hd95),
            o(m.asd),
            o(m.assd),
            f(m.precision),
            f(m.recall),
            f(m.sensitivity),
            f(m.specificity),
        ]),
        None => cells.extend(std::iter::repeat_n(String::new(), 10)),
    }
    cells.push(csv_field(r.problem.as_deref().unwrap_or("")));
    cells.join(",")
}

/// The whole report as CSV, with a final `mean` row.
pub fn report_csv(report: &Report) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for r in &report.images {
        out.push_str(&csv_row(r));
        out.push('\n');
    }
    if let Some(m) = report.summary.mean {
        let mean = ImageReport {
            name: "mean".into(),
            image: PathBuf::new(),
            mask: None,
            width: 0,
            height: 0,
            predicted_area_px: 0,
            metrics: Some(m),
            problem: Some(format!(
                "{} images; distances over {} ({} skipped: empty mask)",
                report.summary.images, report.summary.with_distances, report.summary.distances_skipped
            )),
        };
        out.push_str(&csv_row(&mean));
        out.push('\n');
    }
    out
}

/// A fixed-width table for the terminal: one line per image, then the means.
pub fn report_table(report: &Report) -> String {
    let o = |v: Option<f64>| v.map(|v| format!("{v:>7.2}")).unwrap_or_else(|| format!("{:>7}", "-"));
    let mut s = format!(
        "{:<28} {:>6} {:>6} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6}\n",
        "image", "dice", "jacc", "hd", "hd95", "asd", "assd", "prec", "recall", "spec"
    );
    let line = |name: &str, m: &MetricsRow| {
        let mut n = name.to_string();
        if n.chars().count() > 28 {
            n = n.chars().take(27).collect::<String>() + "~";
        }
        format!(
            "{:<28} {:>6.4} {:>6.4} {} {} {} {} {:>6.4} {:>6.4} {:>6.4}\n",
            n,
            m.dice,
            m.jaccard,
            o(m.hd),
            o(m.hd95),
            o(m.asd),
            o(m.assd),
            m.precision,
            m.recall,
            m.specificity
        )
    };
    for r in &report.images {
        match (&r.metrics, &r.problem) {
            (Some(m), _) => s.push_str(&line(&r.name, m)),
            (None, Some(p)) => s.push_str(&format!("{:<28} {p}\n", r.name)),
            (None, None) => s.push_str(&format!("{:<28} (no mask) predicted {} px\n", r.name, r.predicted_area_px)),
        }
    }
    if let Some(m) = &report.summary.mean {
        s.push_str(&line("MEAN", m));
        s.push_str(&format!(
            "{} images with masks; distance metrics over {} ({} skipped because a mask was empty)\n",
            report.summary.images, report.summary.with_distances, report.summary.distances_skipped
        ));
    }
    s
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
    fn csv_quotes() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
    }
}
