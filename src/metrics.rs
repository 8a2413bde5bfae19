//! Per-image segmentation metrics with medpy's definitions (`medpy.metric.binary`), the binary
//! [`Mask`] they work on, and the per-image averages the original reported.
//!
//! A leaf of the crate: it uses only [`crate::percentile`] (std only), and serde to put
//! [`Metrics`] and [`Summary`] into reports.
//!
//! What is reproduced, and from where:
//! - overlap metrics (`dc`, `jc`, `precision`, `recall`, `sensitivity`, `specificity`) count
//!   pixels exactly as medpy does, with medpy 0.4.0's answers for a zero denominator (see
//!   [`Confusion`]);
//! - surface distances (`hd`, `hd95`, `asd`, `assd`) follow medpy's `__surface_distances`: the
//!   border of a mask is `mask ^ binary_erosion(mask, generate_binary_structure(2, 1))` (scipy
//!   erodes with `border_value=0`, so pixels on the image edge are border), and each border pixel
//!   of one mask is measured to the nearest border pixel of the other with an exact Euclidean
//!   distance transform at unit pixel spacing (scipy's `distance_transform_edt`);
//! - `hd95` is `numpy.percentile(hstack(d_pred_to_truth, d_truth_to_pred), 95)` with numpy's
//!   default linear interpolation ([`crate::percentile`]).
//!
//! medpy raises `RuntimeError` when either mask is empty; here the distance metrics are `None`
//! instead and [`Summary`] counts how many images were skipped.

use std::fmt;

use serde::Serialize;

use crate::percentile::percentile;

/// Inputs whose sizes disagree (a buffer too short, two masks of different sizes, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapeError {
    /// A buffer holds `got` values where `expected` were needed.
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// Two images that must be the same size are not (`(width, height)`).
    Size {
        what: &'static str,
        expected: (usize, usize),
        got: (usize, usize),
    },
    /// `width * height` (or a stride computation) does not fit in `usize`.
    Overflow { what: &'static str },
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShapeError::Length {
                what,
                expected,
                got,
            } => write!(f, "{what}: expected {expected} values, got {got}"),
            ShapeError::Size {
                what,
                expected,
                got,
            } => write!(
                f,
                "{what}: expected {}x{}, got {}x{}",
                expected.0, expected.1, got.0, got.1
            ),
            ShapeError::Overflow { what } => write!(f, "{what}: size overflows usize"),
        }
    }
}

impl std::error::Error for ShapeError {}

/// `width * height`, refusing sizes that overflow rather than wrapping into a short buffer.
pub fn pixel_count(width: usize, height: usize, what: &'static str) -> Result<usize, ShapeError> {
    width
        .checked_mul(height)
        .ok_or(ShapeError::Overflow { what })
}

/// A binary image, row-major: pixel `(x, y)` is `data[y * width + x]`, `true` = lesion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    pub width: usize,
    pub height: usize,
    pub data: Vec<bool>,
}

impl Mask {
    /// An all-background mask. Panics only if `width * height` overflows (as `vec!` would).
    pub fn new(width: usize, height: usize) -> Mask {
        Mask {
            width,
            height,
            data: vec![false; width.saturating_mul(height)],
        }
    }

    /// Wraps row-major `data`, checking that it holds exactly `width * height` pixels.
    pub fn from_vec(width: usize, height: usize, data: Vec<bool>) -> Result<Mask, ShapeError> {
        let n = pixel_count(width, height, "mask")?;
        if data.len() != n {
            return Err(ShapeError::Length {
                what: "mask",
                expected: n,
                got: data.len(),
            });
        }
        Ok(Mask {
            width,
            height,
            data,
        })
    }

    /// Lesion where `value > threshold` (strictly, like the `> 0.5` on probabilities): an 8-bit
    /// mask saved as 0/255 reads back with `threshold = 127`. Extra trailing values are an error
    /// too, so a mask of the wrong size is never silently cropped.
    pub fn from_threshold(
        values: &[u8],
        width: usize,
        height: usize,
        threshold: u8,
    ) -> Result<Mask, ShapeError> {
        let n = pixel_count(width, height, "u8 mask")?;
        if values.len() != n {
            return Err(ShapeError::Length {
                what: "u8 mask",
                expected: n,
                got: values.len(),
            });
        }
        Ok(Mask {
            width,
            height,
            data: values.iter().map(|&v| v > threshold).collect(),
        })
    }

    /// Lesion where the probability is `> 0.5`, the original's decision rule (NaN is background).
    pub fn from_probabilities(
        probs: &[f32],
        width: usize,
        height: usize,
    ) -> Result<Mask, ShapeError> {
        Self::above(probs, width, height, 0.5)
    }

    /// Lesion where the probability is `> thr` (strictly; NaN is background).
    pub fn above(probs: &[f32], width: usize, height: usize, thr: f32) -> Result<Mask, ShapeError> {
        let n = pixel_count(width, height, "probability map")?;
        if probs.len() != n {
            return Err(ShapeError::Length {
                what: "probability map",
                expected: n,
                got: probs.len(),
            });
        }
        Ok(Mask {
            width,
            height,
            data: probs.iter().map(|&p| p > thr).collect(),
        })
    }

    /// Number of lesion pixels.
    pub fn count(&self) -> usize {
        self.data.iter().filter(|&&v| v).count()
    }

    /// True when no pixel is lesion (medpy: "does not contain any binary object").
    pub fn is_empty(&self) -> bool {
        !self.data.iter().any(|&v| v)
    }

    /// The pixel at `(x, y)`; outside the image is background, as for scipy's `border_value=0`.
    pub fn get(&self, x: usize, y: usize) -> bool {
        x < self.width && y < self.height && self.data.get(y * self.width + x) == Some(&true)
    }

    /// Sets the pixel at `(x, y)`; coordinates outside the image are ignored.
    pub fn set(&mut self, x: usize, y: usize, value: bool) {
        if x < self.width && y < self.height {
            if let Some(p) = self.data.get_mut(y * self.width + x) {
                *p = value;
            }
        }
    }

    /// Pixels as 0/255 bytes, the form the original wrote with `cv2.imwrite`.
    pub fn to_u8(&self) -> Vec<u8> {
        self.data.iter().map(|&v| if v { 255 } else { 0 }).collect()
    }

    /// `Err` unless `other` has this mask's size (and both buffers are consistent).
    pub fn check_same_size(&self, other: &Mask, what: &'static str) -> Result<(), ShapeError> {
        if self.width != other.width || self.height != other.height {
            return Err(ShapeError::Size {
                what,
                expected: (self.width, self.height),
                got: (other.width, other.height),
            });
        }
        for m in [self, other] {
            let n = pixel_count(m.width, m.height, what)?;
            if m.data.len() != n {
                return Err(ShapeError::Length {
                    what,
                    expected: n,
                    got: m.data.len(),
                });
            }
        }
        Ok(())
    }
}

/// scipy's `binary_erosion(mask, structure=generate_binary_structure(2, 1), iterations=1)`:
/// a pixel survives when it and its four edge neighbours are set, outside the image counting as
/// background (`border_value=0`).
pub fn erode(mask: &Mask) -> Mask {
    let (w, h) = (mask.width, mask.height);
    let mut out = Mask::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let keep = mask.get(x, y)
                && x > 0
                && y > 0
                && mask.get(x - 1, y)
                && mask.get(x + 1, y)
                && mask.get(x, y - 1)
                && mask.get(x, y + 1);
            out.set(x, y, keep);
        }
    }
    out
}

/// medpy's surface: `mask ^ erode(mask)`, the lesion pixels with a background (or out-of-image)
/// pixel among their four edge neighbours. This is also the pixel set of an OpenCV
/// `findContours(..., CHAIN_APPROX_NONE)` outline of a hole-free blob.
pub fn border(mask: &Mask) -> Mask {
    let eroded = erode(mask);
    let data = mask
        .data
        .iter()
        .zip(&eroded.data)
        .map(|(&m, &e)| m && !e)
        .collect();
    Mask {
        width: mask.width,
        height: mask.height,
        data,
    }
}

/// Exact squared Euclidean distance from every pixel to the nearest `true` pixel of `sites`
/// (row-major, like the mask); `None` when there is no site.
///
/// Felzenszwalb & Huttenlocher's separable lower-envelope algorithm: one 1-D pass down each
/// column, one along each row, O(width * height). Squared distances are integers, so they are
/// kept in `u64` and equal scipy's `distance_transform_edt(~sites) ** 2` exactly.
pub fn squared_distance_transform(sites: &Mask) -> Option<Vec<u64>> {
    let (w, h) = (sites.width, sites.height);
    if sites.is_empty() {
        return None;
    }
    let mut grid = vec![NO_SITE; w.saturating_mul(h)];
    let mut column = vec![NO_SITE; h];
    let mut out = vec![NO_SITE; h.max(w)];
    let mut scratch = Envelope::default();
    for x in 0..w {
        for (y, c) in column.iter_mut().enumerate() {
            *c = if sites.get(x, y) { 0 } else { NO_SITE };
        }
        envelope_1d(&column, &mut out[..h], &mut scratch);
        for y in 0..h {
            grid[y * w + x] = out[y];
        }
    }
    for y in 0..h {
        let row = &mut grid[y * w..(y + 1) * w];
        envelope_1d(row, &mut out[..w], &mut scratch);
        row.copy_from_slice(&out[..w]);
    }
    Some(grid)
}

/// Marks "no site in this column" in the first pass; never a real squared distance.
const NO_SITE: u64 = u64::MAX;

#[derive(Default)]
struct Envelope {
    /// Positions of the parabolas in the lower envelope.
    v: Vec<usize>,
    /// `z[k]`: where parabola `v[k]` starts to be the lowest.
    z: Vec<f64>,
}

/// `out[q] = min_i (q - i)^2 + f[i]` over the finite `f[i]`, or `NO_SITE` if there are none.
/// Skipping the infinite entries (instead of the usual large sentinel) keeps every intersection
/// computed from small exact integers.
fn envelope_1d(f: &[u64], out: &mut [u64], env: &mut Envelope) {
    env.v.clear();
    env.z.clear();
    let key = |i: usize| f[i] as f64 + (i * i) as f64;
    for (q, &fq) in f.iter().enumerate() {
        if fq == NO_SITE {
            continue;
        }
        loop {
            let Some(&p) = env.v.last() else {
                env.v.push(q);
                env.z.push(f64::NEG_INFINITY);
                break;
            };
            // Where the parabolas of p and q (p < q) cross.
            let s = (key(q) - key(p)) / (2.0 * (q - p) as f64);
            if env.z.last().is_some_and(|&zk| s <= zk) {
                env.v.pop();
                env.z.pop();
            } else {
                env.v.push(q);
                env.z.push(s);
                break;
            }
        }
    }
    if env.v.is_empty() {
        out.fill(NO_SITE);
        return;
    }
    let mut k = 0;
    for (q, o) in out.iter_mut().enumerate() {
        while k + 1 < env.v.len() && env.z[k + 1] < q as f64 {
            k += 1;
        }
        let p = env.v[k];
        let d = q.abs_diff(p) as u64;
        *o = d * d + f[p];
    }
}

/// Pixel counts of the confusion matrix of `pred` against `truth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Confusion {
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
    pub tn: usize,
}

/// `num / den`, or `if_zero` where medpy catches `ZeroDivisionError`.
fn ratio(num: f64, den: usize, if_zero: f64) -> f64 {
    if den == 0 {
        if_zero
    } else {
        num / den as f64
    }
}

impl Confusion {
    pub fn compute(pred: &Mask, truth: &Mask) -> Result<Confusion, ShapeError> {
        pred.check_same_size(truth, "prediction vs ground truth")?;
        let mut c = Confusion::default();
        for (&p, &t) in pred.data.iter().zip(&truth.data) {
            match (p, t) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, true) => c.fn_ += 1,
                (false, false) => c.tn += 1,
            }
        }
        Ok(c)
    }

    /// medpy `dc`: `2|P∩G| / (|P| + |G|)`. Both masks empty gives 0.0, as medpy 0.4.0 (the
    /// original's version) does on numpy 1.x by catching `ZeroDivisionError`; medpy >= 0.5
    /// returns 1.0 there instead.
    pub fn dice(&self) -> f64 {
        ratio(2.0 * self.tp as f64, 2 * self.tp + self.fp + self.fn_, 0.0)
    }

    /// medpy `jc`: `|P∩G| / |P∪G|`. Both masks empty gives 0.0: medpy 0.4.0 has no guard and
    /// raises `ZeroDivisionError`, so we follow its `dc` (and keep `jc = dc / (2 - dc)`).
    pub fn jaccard(&self) -> f64 {
        ratio(self.tp as f64, self.tp + self.fp + self.fn_, 0.0)
    }

    /// medpy `precision`: `TP / (TP + FP)`, 0.0 when the prediction is empty.
    pub fn precision(&self) -> f64 {
        ratio(self.tp as f64, self.tp + self.fp, 0.0)
    }

    /// medpy `recall`: `TP / (TP + FN)`, 0.0 when the ground truth is empty.
    pub fn recall(&self) -> f64 {
        ratio(self.tp as f64, self.tp + self.fn_, 0.0)
    }

    /// medpy `sensitivity`, an alias of `recall`.
    pub fn sensitivity(&self) -> f64 {
        self.recall()
    }

    /// medpy `specificity`: `TN / (TN + FP)`, 0.0 when the ground truth covers the image.
    pub fn specificity(&self) -> f64 {
        ratio(self.tn as f64, self.tn + self.fp, 0.0)
    }
}

/// medpy's two directed surface-distance arrays, in raster order of the border pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct SurfaceDistances {
    /// `__surface_distances(pred, truth)`: each border pixel of `pred` to the nearest border
    /// pixel of `truth`.
    pub pred_to_truth: Vec<f64>,
    /// `__surface_distances(truth, pred)`.
    pub truth_to_pred: Vec<f64>,
}

impl SurfaceDistances {
    /// `Ok(None)` when either mask is empty (where medpy raises `RuntimeError`).
    pub fn compute(pred: &Mask, truth: &Mask) -> Result<Option<SurfaceDistances>, ShapeError> {
        pred.check_same_size(truth, "prediction vs ground truth")?;
        if pred.is_empty() || truth.is_empty() {
            return Ok(None);
        }
        let pred_border = border(pred);
        let truth_border = border(truth);
        let (Some(dt_pred), Some(dt_truth)) = (
            squared_distance_transform(&pred_border),
            squared_distance_transform(&truth_border),
        ) else {
            // Unreachable: a non-empty mask always has a border pixel.
            return Ok(None);
        };
        let directed = |from: &Mask, dt: &[u64]| -> Vec<f64> {
            from.data
                .iter()
                .zip(dt)
                .filter(|(&b, _)| b)
                .map(|(_, &d2)| (d2 as f64).sqrt())
                .collect()
        };
        Ok(Some(SurfaceDistances {
            pred_to_truth: directed(&pred_border, &dt_truth),
            truth_to_pred: directed(&truth_border, &dt_pred),
        }))
    }

    /// medpy `hd(pred, truth)`: the larger of the two directed maxima.
    pub fn hd(&self) -> f64 {
        self.pred_to_truth
            .iter()
            .chain(&self.truth_to_pred)
            .fold(0.0, |m, &d| if d > m { d } else { m })
    }

    /// medpy `hd95(pred, truth)`: 95th percentile of both directed arrays together.
    pub fn hd95(&self) -> f64 {
        let all: Vec<f64> = self
            .pred_to_truth
            .iter()
            .chain(&self.truth_to_pred)
            .copied()
            .collect();
        percentile(&all, 95.0).unwrap_or(0.0)
    }

    /// medpy `asd(pred, truth)`: mean distance from the prediction's border to the truth's.
    pub fn asd(&self) -> f64 {
        mean(&self.pred_to_truth)
    }

    /// medpy 0.4.0 `assd(pred, truth)`: `mean((asd(pred, truth), asd(truth, pred)))`. (medpy's
    /// development branch averages the two raw arrays instead, which numpy >= 1.24 rejects
    /// when their lengths differ.)
    pub fn assd(&self) -> f64 {
        (mean(&self.pred_to_truth) + mean(&self.truth_to_pred)) / 2.0
    }
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// All metrics of one image, `pred` (medpy's `result`) against `truth` (`reference`). Serialised
/// as it is into `predict`'s report (fields in this order, `null` distances).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    pub dice: f64,
    pub jaccard: f64,
    /// Hausdorff distance in pixels; `None` when either mask is empty.
    pub hd: Option<f64>,
    /// 95th-percentile Hausdorff distance in pixels; `None` when either mask is empty.
    pub hd95: Option<f64>,
    /// Average surface distance pred -> truth in pixels; `None` when either mask is empty.
    pub asd: Option<f64>,
    /// Average symmetric surface distance in pixels; `None` when either mask is empty.
    pub assd: Option<f64>,
    pub precision: f64,
    pub recall: f64,
    pub sensitivity: f64,
    pub specificity: f64,
}

impl Metrics {
    /// Computes everything in one pass over the masks and two distance transforms.
    pub fn compute(pred: &Mask, truth: &Mask) -> Result<Metrics, ShapeError> {
        let c = Confusion::compute(pred, truth)?;
        let sd = SurfaceDistances::compute(pred, truth)?;
        Ok(Metrics {
            dice: c.dice(),
            jaccard: c.jaccard(),
            precision: c.precision(),
            recall: c.recall(),
            sensitivity: c.sensitivity(),
            specificity: c.specificity(),
            hd: sd.as_ref().map(SurfaceDistances::hd),
            hd95: sd.as_ref().map(SurfaceDistances::hd95),
            asd: sd.as_ref().map(SurfaceDistances::asd),
            assd: sd.as_ref().map(SurfaceDistances::assd),
        })
    }
}

/// Means over images, as the original reported them ("per image, then averaged"). Serialised
/// as it is into `predict`'s report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Images averaged for the overlap metrics.
    pub images: usize,
    /// Images that had distance metrics (both masks non-empty).
    pub with_distances: usize,
    /// Images left out of the distance means because a mask was empty.
    pub distances_skipped: usize,
    /// The means: overlap metrics over all `images`, distances over the `with_distances` images
    /// (`None` when there are none); `None` when there are no images.
    pub mean: Option<Metrics>,
}

impl From<&[Metrics]> for Summary {
    fn from(all: &[Metrics]) -> Summary {
        let over = |f: fn(&Metrics) -> f64| -> f64 { mean(&all.iter().map(f).collect::<Vec<_>>()) };
        let over_some = |f: fn(&Metrics) -> Option<f64>| -> Option<f64> {
            let v: Vec<f64> = all.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| mean(&v))
        };
        let with_distances = all.iter().filter(|m| m.hd.is_some()).count();
        let mean = (!all.is_empty()).then(|| Metrics {
            dice: over(|m| m.dice),
            jaccard: over(|m| m.jaccard),
            hd: over_some(|m| m.hd),
            hd95: over_some(|m| m.hd95),
            asd: over_some(|m| m.asd),
            assd: over_some(|m| m.assd),
            precision: over(|m| m.precision),
            recall: over(|m| m.recall),
            sensitivity: over(|m| m.sensitivity),
            specificity: over(|m| m.specificity),
        });
        Summary { images: all.len(), with_distances, distances_skipped: all.len() - with_distances, mean }
    }
}

impl From<&Vec<Metrics>> for Summary {
    fn from(all: &Vec<Metrics>) -> Summary {
        Summary::from(all.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `w x h` mask with the pixels of the rectangles `(x, y, w, h)` set.
    fn rects(w: usize, h: usize, rs: &[(usize, usize, usize, usize)]) -> Mask {
        let mut m = Mask::new(w, h);
        for &(rx, ry, rw, rh) in rs {
            for y in ry..ry + rh {
                for x in rx..rx + rw {
                    m.set(x, y, true);
                }
            }
        }
        m
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * (1.0 + a.abs().max(b.abs()))
    }

    /// Small deterministic generator so the property tests need no crate.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_mask(rng: &mut Lcg, w: usize, h: usize, density_pct: u64) -> Mask {
        let mut m = Mask::new(w, h);
        for v in m.data.iter_mut() {
            *v = rng.below(100) < density_pct;
        }
        m
    }

    #[test]
    fn constructors_check_sizes() {
        assert!(Mask::from_threshold(&[0, 255, 128, 127], 2, 2, 127).is_ok());
        let m = Mask::from_threshold(&[0, 255, 128, 127], 2, 2, 127).unwrap();
        assert_eq!(m.data, vec![false, true, true, false]);
        assert!(matches!(
            Mask::from_threshold(&[0; 5], 2, 2, 127),
            Err(ShapeError::Length {
                expected: 4,
                got: 5,
                ..
            })
        ));
        let p = Mask::from_probabilities(&[0.5, 0.50001, f32::NAN, 1.0], 2, 2).unwrap();
        assert_eq!(p.data, vec![false, true, false, true]);
        assert_eq!(p.count(), 2);
        assert!(p.get(1, 0) && !p.get(0, 0) && !p.get(5, 0));
        assert!(Mask::from_vec(3, 1, vec![true; 2]).is_err());
        assert!(matches!(
            Mask::from_vec(usize::MAX, 2, vec![]),
            Err(ShapeError::Overflow { .. })
        ));
        let a = Mask::new(3, 2);
        let b = Mask::new(2, 3);
        assert!(Metrics::compute(&a, &b).is_err());
        assert_eq!(
            Mask::from_vec(2, 1, vec![true, false]).unwrap().to_u8(),
            vec![255, 0]
        );
    }

    #[test]
    fn border_matches_scipy_erosion() {
        // medpy docstring: the 3x3 cross's border with connectivity 1 is the cross minus its
        // centre, and a full 3x3 block loses only its centre.
        let cross = Mask::from_vec(
            3,
            3,
            [0, 1, 0, 1, 1, 1, 0, 1, 0]
                .iter()
                .map(|&v| v == 1)
                .collect(),
        )
        .unwrap();
        let b = border(&cross);
        assert_eq!(b.count(), 4);
        assert!(!b.get(1, 1));
        // Pixels on the image edge are border (border_value=0): a full image is all border
        // except its interior.
        let full = rects(5, 4, &[(0, 0, 5, 4)]);
        assert_eq!(border(&full).count(), 5 * 4 - 3 * 2);
        // A 4x4 square inside a larger image: 12 border pixels.
        assert_eq!(border(&rects(8, 8, &[(2, 2, 4, 4)])).count(), 12);
    }

    #[test]
    fn shifted_square_overlap() {
        // 3x3 square at x=1..3 vs the same square shifted right by one: |P|=|G|=9, |P∩G|=6.
        let pred = rects(8, 6, &[(1, 1, 3, 3)]);
        let truth = rects(8, 6, &[(2, 1, 3, 3)]);
        let m = Metrics::compute(&pred, &truth).unwrap();
        assert!(close(m.dice, 2.0 * 6.0 / 18.0));
        assert!(close(m.jaccard, 6.0 / 12.0));
        assert!(close(m.precision, 6.0 / 9.0));
        assert!(close(m.recall, 6.0 / 9.0));
        assert_eq!(m.recall, m.sensitivity);
        // 48 pixels: TN = 48 - 12 = 36, FP = 3.
        assert!(close(m.specificity, 36.0 / 39.0));
        // Both borders are 8-pixel rings (the square minus its centre). pred's ring -> truth's
        // ring: the column x=1 (3 px) is 1 away, (3,2) is 1 away (truth's ring lacks its own
        // centre (3,2) but has (2,2)), the other 4 pixels lie on truth's ring: sum 4. Mirror image
        // the other way. medpy: hd 1.0, hd95 1.0, asd 0.5, assd 0.5, specificity 0.923...
        let sd = SurfaceDistances::compute(&pred, &truth).unwrap().unwrap();
        assert_eq!(sd.pred_to_truth.len(), 8);
        assert_eq!(sd.pred_to_truth.iter().sum::<f64>(), 4.0);
        assert_eq!(sd.truth_to_pred.iter().sum::<f64>(), 4.0);
        assert_eq!(m.hd, Some(1.0));
        assert_eq!(m.asd, Some(0.5));
        assert_eq!(m.assd, Some(0.5));
        // 16 values, eight 0s and eight 1s: index 0.95 * 15 = 14.25 -> 1.0.
        assert_eq!(m.hd95, Some(1.0));
    }

    #[test]
    fn single_pixels_three_apart() {
        let pred = rects(10, 5, &[(2, 2, 1, 1)]);
        let truth = rects(10, 5, &[(5, 2, 1, 1)]);
        let m = Metrics::compute(&pred, &truth).unwrap();
        assert_eq!(m.hd, Some(3.0));
        assert_eq!(m.hd95, Some(3.0));
        assert_eq!(m.asd, Some(3.0));
        assert_eq!(m.assd, Some(3.0));
        assert_eq!(m.dice, 0.0);
        assert_eq!(m.precision, 0.0);
        // A diagonal offset (3, 4) gives exactly 5.
        let truth = rects(10, 8, &[(5, 6, 1, 1)]);
        let pred = rects(10, 8, &[(2, 2, 1, 1)]);
        assert_eq!(Metrics::compute(&pred, &truth).unwrap().hd, Some(5.0));
    }

    #[test]
    fn two_squares_at_known_distance() {
        // pred: 2x2 at x=0..1, truth: 2x2 at x=5..6, same rows. Every border pixel is its whole
        // square. pred -> truth: x=0 pixels are 5 away, x=1 pixels 4; symmetric the other way.
        // Python (medpy 0.4.0 on numpy/scipy) gives the same numbers:
        //   a = zeros((4, 8), bool); a[1:3, 0:2] = 1; b = zeros_like(a); b[1:3, 5:7] = 1
        //   hd(a, b) = 5.0, hd95(a, b) = 5.0, asd(a, b) = 4.5, assd(a, b) = 4.5
        let pred = rects(8, 4, &[(0, 1, 2, 2)]);
        let truth = rects(8, 4, &[(5, 1, 2, 2)]);
        let m = Metrics::compute(&pred, &truth).unwrap();
        assert_eq!(m.hd, Some(5.0));
        assert_eq!(m.hd95, Some(5.0));
        assert_eq!(m.asd, Some(4.5));
        assert_eq!(m.assd, Some(4.5));
    }

    #[test]
    fn asymmetric_distances_match_medpy() {
        // Values from medpy 0.4.0 (scipy 1.17, numpy 2.4):
        //   a = zeros((12, 12), bool); a[2:9, 2:9] = 1      # 7x7 square
        //   b = zeros_like(a); b[4:6, 4:11] = 1; b[0, 0] = 1  # bar + stray pixel
        //   hd(a, b), hd95(a, b), asd(a, b), assd(a, b)
        //   -> 3.605551275463989, 3.016227766016838, 2.1722036299010052, 1.880382719108709
        let pred = rects(12, 12, &[(2, 2, 7, 7)]);
        let truth = rects(12, 12, &[(4, 4, 7, 2), (0, 0, 1, 1)]);
        let m = Metrics::compute(&pred, &truth).unwrap();
        assert!(close(m.hd.unwrap(), 3.605551275463989), "{m:?}");
        assert!(close(m.hd95.unwrap(), 3.016227766016838), "{m:?}");
        assert!(close(m.asd.unwrap(), 2.1722036299010052), "{m:?}");
        assert!(close(m.assd.unwrap(), 1.880382719108709), "{m:?}");
    }

    #[test]
    fn specificity_on_known_confusion() {
        let c = Confusion {
            tp: 30,
            fp: 10,
            fn_: 20,
            tn: 940,
        };
        assert!(close(c.specificity(), 940.0 / 950.0));
        assert!(close(c.precision(), 0.75));
        assert!(close(c.recall(), 0.6));
        assert!(close(c.dice(), 60.0 / 90.0));
        assert!(close(c.jaccard(), 0.5));
        // Counting from masks gives the same matrix.
        let pred = rects(10, 10, &[(0, 0, 4, 1)]); // 4 px
        let truth = rects(10, 10, &[(2, 0, 4, 1)]); // 4 px, overlap 2
        let c = Confusion::compute(&pred, &truth).unwrap();
        assert_eq!(
            c,
            Confusion {
                tp: 2,
                fp: 2,
                fn_: 2,
                tn: 94
            }
        );
        assert!(close(c.specificity(), 94.0 / 96.0));
    }

    #[test]
    fn empty_masks() {
        let empty = Mask::new(6, 6);
        let some = rects(6, 6, &[(1, 1, 2, 2)]);
        let both = Metrics::compute(&empty, &empty).unwrap();
        // medpy 0.4.0: dc -> 0.0 (ZeroDivisionError caught); jc follows dc.
        assert_eq!(both.dice, 0.0);
        assert_eq!(both.jaccard, 0.0);
        assert_eq!(both.precision, 0.0);
        assert_eq!(both.recall, 0.0);
        assert_eq!(both.specificity, 1.0);
        assert_eq!(both.hd, None);
        let missed = Metrics::compute(&empty, &some).unwrap();
        assert_eq!(missed.dice, 0.0);
        assert_eq!(missed.precision, 0.0);
        assert_eq!(missed.recall, 0.0);
        assert_eq!(missed.specificity, 1.0);
        assert_eq!(
            (missed.hd, missed.hd95, missed.asd, missed.assd),
            (None, None, None, None)
        );
        let false_alarm = Metrics::compute(&some, &empty).unwrap();
        assert_eq!(false_alarm.recall, 0.0);
        assert!(close(false_alarm.specificity, 32.0 / 36.0));
        assert_eq!(false_alarm.hd, None);
        // Ground truth covering the whole image: TN + FP = 0 -> specificity 0.0 (medpy).
        let all = rects(6, 6, &[(0, 0, 6, 6)]);
        assert_eq!(Metrics::compute(&all, &all).unwrap().specificity, 0.0);
        assert_eq!(Metrics::compute(&all, &all).unwrap().hd, Some(0.0));
        assert_eq!(squared_distance_transform(&empty), None);
    }

    #[test]
    fn summary_skips_missing_distances() {
        let a = rects(8, 8, &[(1, 1, 3, 3)]);
        let b = rects(8, 8, &[(2, 1, 3, 3)]);
        let empty = Mask::new(8, 8);
        let ms = vec![
            Metrics::compute(&a, &a).unwrap(),
            Metrics::compute(&a, &b).unwrap(),
            Metrics::compute(&empty, &b).unwrap(),
        ];
        let s = Summary::from(&ms);
        assert_eq!((s.images, s.with_distances, s.distances_skipped), (3, 2, 1));
        let mean = s.mean.unwrap();
        assert!(close(mean.dice, (1.0 + 2.0 / 3.0 + 0.0) / 3.0));
        assert_eq!(mean.hd, Some(0.5));
        assert_eq!(mean.asd, Some(0.25));
        let none = Summary::from(&ms[2..]);
        assert_eq!(none.mean.unwrap().hd, None);
        assert_eq!(none.distances_skipped, 1);
        assert_eq!(Summary::from(&[][..]).mean, None);
    }

    fn brute_force_sq(sites: &Mask) -> Vec<u64> {
        let pts: Vec<(usize, usize)> = (0..sites.height)
            .flat_map(|y| (0..sites.width).map(move |x| (x, y)))
            .filter(|&(x, y)| sites.get(x, y))
            .collect();
        (0..sites.height)
            .flat_map(|y| (0..sites.width).map(move |x| (x, y)))
            .map(|(x, y)| {
                pts.iter()
                    .map(|&(px, py)| {
                        let (dx, dy) = (x.abs_diff(px) as u64, y.abs_diff(py) as u64);
                        dx * dx + dy * dy
                    })
                    .min()
                    .unwrap_or(NO_SITE)
            })
            .collect()
    }

    #[test]
    fn edt_matches_brute_force() {
        let mut rng = Lcg(7);
        for trial in 0..400 {
            let w = 1 + rng.below(24) as usize;
            let h = 1 + rng.below(24) as usize;
            let density = [1, 3, 10, 40, 90][trial % 5];
            let m = random_mask(&mut rng, w, h, density);
            match squared_distance_transform(&m) {
                None => assert!(m.is_empty()),
                Some(dt) => assert_eq!(dt, brute_force_sq(&m), "{w}x{h} trial {trial}"),
            }
        }
    }

    #[test]
    fn surface_distances_match_brute_force() {
        let mut rng = Lcg(11);
        for _ in 0..100 {
            let w = 2 + rng.below(20) as usize;
            let h = 2 + rng.below(20) as usize;
            let a = random_mask(&mut rng, w, h, 30);
            let b = random_mask(&mut rng, w, h, 30);
            let Some(sd) = SurfaceDistances::compute(&a, &b).unwrap() else {
                continue;
            };
            let (ba, bb) = (border(&a), border(&b));
            let directed = |from: &Mask, to: &Mask| -> Vec<f64> {
                let to_sq = brute_force_sq(to);
                from.data
                    .iter()
                    .zip(&to_sq)
                    .filter(|(&f, _)| f)
                    .map(|(_, &d)| (d as f64).sqrt())
                    .collect()
            };
            assert_eq!(sd.pred_to_truth, directed(&ba, &bb));
            assert_eq!(sd.truth_to_pred, directed(&bb, &ba));
        }
    }

    #[test]
    fn large_masks_are_fast() {
        // Two overlapping discs on 1000x1000: must finish in well under a second (release).
        let (w, h) = (1000, 1000);
        let mut a = Mask::new(w, h);
        let mut b = Mask::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let (fx, fy) = (x as f64, y as f64);
                a.set(
                    x,
                    y,
                    (fx - 480.0).powi(2) + (fy - 500.0).powi(2) < 300.0f64.powi(2),
                );
                b.set(
                    x,
                    y,
                    (fx - 520.0).powi(2) + (fy - 500.0).powi(2) < 300.0f64.powi(2),
                );
            }
        }
        let m = Metrics::compute(&a, &b).unwrap();
        // The discs are 40 px apart horizontally: the farthest border points differ by 40.
        let hd = m.hd.unwrap();
        assert!((39.0..=41.0).contains(&hd), "{hd}");
        assert!(m.dice > 0.9);
    }
}
