//! Offline inference on image files, as the original `predict.py` did it, and its report.
//!
//! Images are read by [`crate::image_io`] (any format and bit depth as 8-bit BGR) and made into
//! the model input by [`crate::preprocess`] (resized to `size x size` in 8 bits, /255).
//! Post-processing: the probability map resized back to the image size, thresholded (`> 0.5` by
//! default), and by default reduced to its largest connected component, filled
//! ([`crate::postprocess`]). With [`Tta::Hflip`] the probability map is the mean of the image's
//! and of its mirror image's (mirrored back): twice the network's work, so `predict` only, never
//! the live pipeline. The report ([`Report`]) holds [`crate::metrics`]' values per image
//! and their means, as JSON, CSV and a terminal table.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::metrics::{Mask, Metrics, ShapeError, Summary};
use crate::model::InferenceNet;
use crate::image_io::BgrImage;
use crate::postprocess::{clean_up_into, threshold, Cleanup, ComponentScratch};
use crate::preprocess::model_input;
use crate::resize::resize_bilinear_f32;

/// What to do with the probability map.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PostOptions {
    /// Lesion where the probability (resized to the image) is above this.
    pub threshold: f32,
    /// Which connected component is the lesion (the original kept the largest).
    #[serde(serialize_with = "serialize_name")]
    pub cleanup: Cleanup,
}

impl Default for PostOptions {
    fn default() -> Self {
        Self { threshold: 0.5, cleanup: Cleanup::default() }
    }
}

fn serialize_name<S: serde::Serializer>(c: &Cleanup, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(c.name())
}

/// Test-time augmentation (`predict --tta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Tta {
    /// The image alone.
    #[default]
    None,
    /// The image and its horizontal mirror: probabilities averaged, the mirror's mirrored back.
    /// Left and right are interchangeable in a B-mode image (the probe can be held either way
    /// round); up and down are not (depth), so there is no vertical flip.
    Hflip,
}

/// A network and its pre/post-processing.
#[derive(Debug, Clone)]
pub struct Predictor {
    net: InferenceNet,
    size: usize,
    post: PostOptions,
    tta: Tta,
}

/// Reverses every row of `w` values in place: a horizontal mirror of `[.., h, w]` planes.
fn mirror_rows(v: &mut [f32], w: usize) {
    for row in v.chunks_exact_mut(w) {
        row.reverse();
    }
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
            return Err(Error::InvalidSetting(format!("network input size must be >= 16, got {size}")));
        }
        Ok(Self { net, size, post, tta: Tta::None })
    }

    /// The same predictor with test-time augmentation `tta`.
    pub fn with_tta(mut self, tta: Tta) -> Self {
        self.tta = tta;
        self
    }

    pub fn tta(&self) -> Tta {
        self.tta
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
            let (what, expected, got) = ("network inputs ([3, size, size] each)", inputs.len() * 3 * s * s, flat.len());
            return Err(ShapeError::Length { what, expected, got }.into());
        }
        let n = inputs.len();
        let forward = |flat: Vec<f32>| -> Result<Vec<f32>> {
            let x = Tensor::from_vec(flat, (n, 3, s, s), &Device::Cpu)?.to_device(self.device())?;
            let y = self.net.forward(&x)?.to_device(&Device::Cpu)?; // [N, 1, s, s]
            Ok(y.flatten_all()?.to_vec1::<f32>()?)
        };
        let all = match self.tta {
            Tta::None => forward(flat)?,
            Tta::Hflip => {
                let mut mirrored = flat.clone();
                mirror_rows(&mut mirrored, s);
                let a = forward(flat)?;
                let mut b = forward(mirrored)?;
                mirror_rows(&mut b, s);
                // (a + b) / 2 in either order: mirroring the input only swaps the two terms.
                a.iter().zip(&b).map(|(p, q)| 0.5 * (p + q)).collect()
            }
        };
        Ok(all.chunks_exact(s * s).map(<[f32]>::to_vec).collect())
    }

    /// Runs a batch of images end to end.
    pub fn predict(&self, images: &[&BgrImage]) -> Result<Vec<Prediction>> {
        let inputs = images
            .iter()
            .map(|img| model_input(img, self.size))
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
        let resized = resize_bilinear_f32(probs, self.size, self.size, width, height)?;
        let mask = threshold(&resized, width, height, self.post.threshold)?;
        let mut kept = Mask::new(width, height);
        clean_up_into(&mask, &resized, self.post.cleanup, &mut ComponentScratch::default(), &mut kept)?;
        Ok(kept)
    }
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
    /// Metrics against the ground truth, when there was a usable one (`null` distances where a
    /// mask was empty).
    pub metrics: Option<Metrics>,
    /// Why the image or its mask could not be used, if so.
    pub problem: Option<String>,
}

/// Everything `predict` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    /// Where the weights came from: a path and the step of the lookup that found it, or
    /// `embedded lighter_at1_busi.safetensors`.
    pub weights: String,
    pub size: usize,
    pub post: PostOptions,
    /// Test-time augmentation used.
    pub tta: Tta,
    pub images: Vec<ImageReport>,
    pub images_without_mask: Vec<PathBuf>,
    pub masks_without_image: Vec<PathBuf>,
    pub duplicates: Vec<PathBuf>,
    /// Means over the images with metrics.
    pub summary: Summary,
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
    let line = |name: &str, m: &Metrics| {
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
    fn mirror_rows_reverses_each_row() {
        let mut v: Vec<f32> = (0..6).map(|i| i as f32).collect();
        mirror_rows(&mut v, 3);
        assert_eq!(v, [2.0, 1.0, 0.0, 5.0, 4.0, 3.0]);
    }

    #[test]
    fn csv_quotes() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
    }
}
