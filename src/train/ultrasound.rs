//! Ultrasound-specific augmentation (`train --augment us` and `--augment original+us`): the
//! changes between two scans of the same lesion, rather than the original's generic set (its
//! vertical flips, 45-degree rotations and wrapped borders make images no scanner produces).
//!
//! Geometry, one resampling (image bilinear, mask nearest: the mask moves with the image):
//! - horizontal flip (p 0.5): the probe turned round. Never vertical: depth is not symmetric
//!   (near field at the top, shadowing and enhancement below a lesion, gain curves with depth);
//! - small rotation (+-10 deg), scale (0.9-1.1) and shift (+-5 %) about the centre (p 0.5), zero
//!   outside the image, like the dark outside a scanner's field of view;
//! - elastic deformation (p 0.5): a smooth random displacement field, up to 3 % of the size at
//!   5 x 5 control points, interpolated with smoothstep weights (tissue pressed by the probe).
//!
//! Intensity, on the image only (the mask is never changed by these):
//! - overall gain +-3 dB (p 0.5);
//! - time-gain compensation: a depth-dependent gain curve, +-3 dB at 4 depths (top, 1/3, 2/3,
//!   bottom) and linear in dB between them (p 0.5);
//! - multiplicative speckle noise `v (1 + sigma n)`, `n` standard normal per pixel, `sigma`
//!   0.05-0.2 (p 0.5), the same in the three channels (a grey image stays grey);
//! - gamma 0.7-1.5 (p 0.5): another log-compression or dynamic-range setting;
//!
//! then clamped to 0..1. Every draw comes from the caller's generator, which the loader seeds per
//! (run seed, epoch, sample position) as for the original set: runs stay reproducible and
//! resumable. This file works on plain planes (`[3, s, s]` images, `[s, s]` masks, 0..1 floats),
//! so it stands alone; `data` chooses the set and calls it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Which augmentation a run uses (`--augment`); `TrainConfig::augment = false` turns any off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
pub enum AugmentSet {
    /// The original's: flips, and with p 0.5 a large affine transform (`data::AugmentParams`).
    #[default]
    #[serde(rename = "original")]
    #[value(name = "original")]
    Original,
    /// Ultrasound geometry and intensity ([`UsParams`]), in place of the original set.
    #[serde(rename = "us")]
    #[value(name = "us")]
    Us,
    /// The original set, then the ultrasound intensity changes ([`Intensity`]).
    #[serde(rename = "original+us")]
    #[value(name = "original+us")]
    OriginalUs,
}

/// Control points per side of the elastic displacement grid.
pub const ELASTIC_GRID: usize = 5;

/// The geometric draws of one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Geometry {
    pub hflip: bool,
    /// `(rotation_deg, scale, tx, ty)`, shifts as fractions of the size.
    pub affine: Option<(f64, f64, f64, f64)>,
    /// Displacements `(dx, dy)` in fractions of the size at the [`ELASTIC_GRID`]^2 control
    /// points, row-major.
    pub elastic: Option<Vec<(f64, f64)>>,
}

/// The intensity draws of one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intensity {
    pub gain_db: Option<f64>,
    /// Gain in dB at depths 0, 1/3, 2/3 and 1 of the height.
    pub tgc_db: Option<[f64; 4]>,
    /// `(sigma, seed of the per-pixel noise)`.
    pub speckle: Option<(f64, u64)>,
    pub gamma: Option<f64>,
}

/// Everything `--augment us` draws for one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct UsParams {
    pub geometry: Geometry,
    pub intensity: Intensity,
}

impl Geometry {
    pub const IDENTITY: Geometry = Geometry { hflip: false, affine: None, elastic: None };

    pub fn draw(rng: &mut impl Rng) -> Self {
        let hflip = rng.random_bool(0.5);
        let affine = rng.random_bool(0.5).then(|| {
            (
                rng.random_range(-10.0..=10.0),
                rng.random_range(0.9..=1.1),
                rng.random_range(-0.05..=0.05),
                rng.random_range(-0.05..=0.05),
            )
        });
        let elastic = rng.random_bool(0.5).then(|| {
            (0..ELASTIC_GRID * ELASTIC_GRID)
                .map(|_| (rng.random_range(-0.03..=0.03), rng.random_range(-0.03..=0.03)))
                .collect()
        });
        Self { hflip, affine, elastic }
    }

    pub fn is_identity(&self) -> bool {
        !self.hflip && self.affine.is_none() && self.elastic.is_none()
    }

    /// The source point (in pixels) that output pixel `(x, y)` of an `s x s` image comes from:
    /// flip undone first, then the elastic displacement, then the affine transform.
    fn source(&self, x: f64, y: f64, s: usize) -> (f64, f64) {
        let last = s as f64 - 1.0;
        let (mut x, mut y) = (if self.hflip { last - x } else { x }, y);
        if let Some(grid) = &self.elastic {
            let (dx, dy) = elastic_at(grid, x / last.max(1.0), y / last.max(1.0));
            x += dx * s as f64;
            y += dy * s as f64;
        }
        if let Some((rot, scale, tx, ty)) = self.affine {
            // Forward: o = c + scale R (p - c) + t; inverse: p = c + R^-1 (o - c - t) / scale.
            let c = last / 2.0;
            let (sn, cs) = rot.to_radians().sin_cos();
            let (ux, uy) = (x - c - tx * s as f64, y - c - ty * s as f64);
            x = c + (cs * ux + sn * uy) / scale;
            y = c + (-sn * ux + cs * uy) / scale;
        }
        (x, y)
    }

    /// Resamples `image` (`[3, s, s]`, bilinear) and `mask` (`[s, s]`, nearest) through the
    /// transform; zero where the source lies outside the image.
    pub fn apply(&self, image: &[f32], mask: &[f32], s: usize) -> (Vec<f32>, Vec<f32>) {
        if self.is_identity() {
            return (image.to_vec(), mask.to_vec());
        }
        let plane = s * s;
        let mut img = vec![0f32; 3 * plane];
        let mut out_mask = vec![0f32; plane];
        let inside = |i: i64| (0..s as i64).contains(&i);
        for y in 0..s {
            for x in 0..s {
                let o = y * s + x;
                let (fx, fy) = self.source(x as f64, y as f64, s);
                let (nx, ny) = (fx.round() as i64, fy.round() as i64);
                if inside(nx) && inside(ny) {
                    out_mask[o] = mask[ny as usize * s + nx as usize];
                }
                let taps = bilinear_taps(fx, fy);
                for ch in 0..3 {
                    let src = &image[ch * plane..(ch + 1) * plane];
                    let mut v = 0f32;
                    for &(tx, ty, w) in &taps {
                        if inside(tx) && inside(ty) {
                            v += w * src[ty as usize * s + tx as usize];
                        }
                    }
                    img[ch * plane + o] = v;
                }
            }
        }
        (img, out_mask)
    }
}

/// The four source pixels of a bilinear sample at `(fx, fy)` and their weights (which sum to 1),
/// for the augmentations' resampling; the caller skips taps outside the image (zero there) or
/// maps them by its border rule.
pub(crate) fn bilinear_taps(fx: f64, fy: f64) -> [(i64, i64, f32); 4] {
    let (x0, y0) = (fx.floor(), fy.floor());
    let (wx, wy) = ((fx - x0) as f32, (fy - y0) as f32);
    let (x0, y0) = (x0 as i64, y0 as i64);
    [
        (x0, y0, (1.0 - wx) * (1.0 - wy)),
        (x0 + 1, y0, wx * (1.0 - wy)),
        (x0, y0 + 1, (1.0 - wx) * wy),
        (x0 + 1, y0 + 1, wx * wy),
    ]
}

/// The displacement at `(u, v)` (fractions of the size, 0..1) between the control points:
/// bilinear with smoothstep weights, so the field has no kinks at the grid lines.
fn elastic_at(grid: &[(f64, f64)], u: f64, v: f64) -> (f64, f64) {
    let cells = (ELASTIC_GRID - 1) as f64;
    let (gx, gy) = ((u * cells).clamp(0.0, cells), (v * cells).clamp(0.0, cells));
    let (i, j) = ((gx.floor() as usize).min(ELASTIC_GRID - 2), (gy.floor() as usize).min(ELASTIC_GRID - 2));
    let smooth = |t: f64| t * t * (3.0 - 2.0 * t);
    let (a, b) = (smooth(gx - i as f64), smooth(gy - j as f64));
    let at = |i: usize, j: usize| grid[j * ELASTIC_GRID + i];
    let mix = |f: fn((f64, f64)) -> f64| {
        let top = f(at(i, j)) * (1.0 - a) + f(at(i + 1, j)) * a;
        let bottom = f(at(i, j + 1)) * (1.0 - a) + f(at(i + 1, j + 1)) * a;
        top * (1.0 - b) + bottom * b
    };
    (mix(|d| d.0), mix(|d| d.1))
}

/// A standard normal draw (Box-Muller; one of the pair is used).
fn normal(rng: &mut impl Rng) -> f64 {
    let u1 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn db(gain: f64) -> f64 {
    10f64.powf(gain / 20.0)
}

impl Intensity {
    pub const IDENTITY: Intensity = Intensity { gain_db: None, tgc_db: None, speckle: None, gamma: None };

    pub fn draw(rng: &mut impl Rng) -> Self {
        let gain_db = rng.random_bool(0.5).then(|| rng.random_range(-3.0..=3.0));
        let tgc_db = rng.random_bool(0.5).then(|| std::array::from_fn(|_| rng.random_range(-3.0..=3.0)));
        let speckle = rng.random_bool(0.5).then(|| (rng.random_range(0.05..=0.2), rng.random::<u64>()));
        let gamma = rng.random_bool(0.5).then(|| rng.random_range(0.7..=1.5));
        Self { gain_db, tgc_db, speckle, gamma }
    }

    /// The gain factor of row `y` of `s` (overall gain and the depth curve together).
    pub fn row_gain(&self, y: usize, s: usize) -> f64 {
        let mut g = self.gain_db.map_or(1.0, db);
        if let Some(curve) = self.tgc_db {
            let t = 3.0 * y as f64 / (s as f64 - 1.0).max(1.0);
            let k = (t.floor() as usize).min(2);
            let f = t - k as f64;
            g *= db(curve[k] * (1.0 - f) + curve[k + 1] * f);
        }
        g
    }

    pub fn is_identity(&self) -> bool {
        *self == Self::IDENTITY
    }

    /// Applies the changes to `image` (`[3, s, s]`, 0..1) in place; the result stays in 0..1.
    pub fn apply(&self, image: &mut [f32], s: usize) {
        if self.is_identity() {
            return;
        }
        let plane = s * s;
        let mut noise = self.speckle.map(|(sigma, seed)| (sigma, ChaCha8Rng::seed_from_u64(seed)));
        for y in 0..s {
            let g = self.row_gain(y, s);
            for x in 0..s {
                let i = y * s + x;
                let f = match noise.as_mut() {
                    Some((sigma, rng)) => g * (1.0 + *sigma * normal(rng)),
                    None => g,
                };
                for ch in 0..3 {
                    let v = &mut image[ch * plane + i];
                    let mut w = (f64::from(*v) * f).clamp(0.0, 1.0);
                    if let Some(gamma) = self.gamma {
                        w = w.powf(gamma);
                    }
                    *v = w as f32;
                }
            }
        }
    }
}

impl UsParams {
    pub fn draw(rng: &mut impl Rng) -> Self {
        let geometry = Geometry::draw(rng);
        let intensity = Intensity::draw(rng);
        Self { geometry, intensity }
    }

    /// Geometry on image and mask, then intensity on the image.
    pub fn apply(&self, image: &[f32], mask: &[f32], s: usize) -> (Vec<f32>, Vec<f32>) {
        let (mut img, mask) = self.geometry.apply(image, mask, s);
        self.intensity.apply(&mut img, s);
        (img, mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3-plane image with a bright square where the mask is, a gradient elsewhere.
    fn sample(s: usize) -> (Vec<f32>, Vec<f32>) {
        let plane = s * s;
        let mask: Vec<f32> = (0..plane).map(|i| f32::from(u8::from((s / 4..s / 2).contains(&(i / s)) && (s / 5..s / 2).contains(&(i % s))))).collect();
        let mut img = vec![0f32; 3 * plane];
        for ch in 0..3 {
            for i in 0..plane {
                img[ch * plane + i] = if mask[i] > 0.0 { 0.9 } else { 0.1 + 0.3 * (i % s) as f32 / s as f32 };
            }
        }
        (img, mask)
    }

    fn drawn(seed: u64) -> UsParams {
        UsParams::draw(&mut ChaCha8Rng::seed_from_u64(seed))
    }

    /// Shape, range, binary masks and determinism over many draws; different seeds differ.
    #[test]
    fn shapes_ranges_and_seeds() {
        let s = 40;
        let (img, mask) = sample(s);
        let mut some_changed = 0;
        for seed in 0..40 {
            let p = drawn(seed);
            let (a, ma) = p.apply(&img, &mask, s);
            assert_eq!((a.len(), ma.len()), (3 * s * s, s * s));
            assert!(a.iter().all(|v| (0.0..=1.0).contains(v)), "seed {seed}: image out of 0..1");
            assert!(ma.iter().all(|&v| v == 0.0 || v == 1.0), "seed {seed}: mask not binary");
            let (b, mb) = drawn(seed).apply(&img, &mask, s);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
            assert!(bits(&a) == bits(&b) && ma == mb, "seed {seed}: not deterministic");
            some_changed += usize::from(a != img);
        }
        assert!(some_changed > 30, "only {some_changed} of 40 draws changed the image");
        assert_ne!(drawn(1), drawn(2));
    }

    /// Intensity changes never touch the mask; geometry moves image and mask together: where
    /// the image is bright (the square), the mask is set, up to the bilinear/nearest seam.
    #[test]
    fn masks_follow_geometry_not_intensity() {
        let s = 48;
        let (img, mask) = sample(s);
        for seed in 0..30 {
            let p = drawn(seed);
            let geometry_only = UsParams { geometry: p.geometry.clone(), intensity: Intensity::IDENTITY };
            let (_, m_all) = p.apply(&img, &mask, s);
            let (g_img, m_geo) = geometry_only.apply(&img, &mask, s);
            assert_eq!(m_all, m_geo, "seed {seed}: intensity changed the mask");
            let (agree, total) = g_img
                .iter()
                .take(s * s)
                .zip(&m_geo)
                .fold((0, 0), |(a, n), (&v, &m)| (a + usize::from((v > 0.6) == (m > 0.5)), n + 1));
            assert!(agree as f64 > 0.97 * total as f64, "seed {seed}: image and mask moved apart ({agree}/{total})");
            if p.geometry.is_identity() {
                assert_eq!(m_geo, mask);
            }
        }
        // A flip alone mirrors both exactly.
        let flip = Geometry { hflip: true, ..Geometry::IDENTITY };
        let (fi, fm) = flip.apply(&img, &mask, s);
        for y in 0..s {
            for x in 0..s {
                assert_eq!(fm[y * s + x], mask[y * s + s - 1 - x]);
                assert_eq!(fi[y * s + x], img[y * s + s - 1 - x]);
            }
        }
        // Elastic with zero displacement and affine identity change nothing.
        let still = Geometry { hflip: false, affine: Some((0.0, 1.0, 0.0, 0.0)), elastic: Some(vec![(0.0, 0.0); ELASTIC_GRID * ELASTIC_GRID]) };
        let (si, sm) = still.apply(&img, &mask, s);
        assert!(si.iter().zip(&img).all(|(a, b)| (a - b).abs() < 1e-6));
        assert_eq!(sm, mask);
    }

    /// The field interpolates its control points and is smooth between them; a uniform shift
    /// moves the square by that many pixels.
    #[test]
    fn elastic_field_interpolates_control_points() {
        let grid: Vec<(f64, f64)> = (0..ELASTIC_GRID * ELASTIC_GRID).map(|i| (i as f64 * 0.001, -(i as f64) * 0.002)).collect();
        let cells = (ELASTIC_GRID - 1) as f64;
        for j in 0..ELASTIC_GRID {
            for i in 0..ELASTIC_GRID {
                let d = elastic_at(&grid, i as f64 / cells, j as f64 / cells);
                let want = grid[j * ELASTIC_GRID + i];
                assert!((d.0 - want.0).abs() < 1e-12 && (d.1 - want.1).abs() < 1e-12);
            }
        }
        let s = 40;
        let (img, mask) = sample(s);
        // Every control point shifts the source by 0.05 s = 2 px to the right: content moves 2 px left.
        let shift = Geometry { elastic: Some(vec![(0.05, 0.0); ELASTIC_GRID * ELASTIC_GRID]), ..Geometry::IDENTITY };
        let (_, m) = shift.apply(&img, &mask, s);
        for y in 0..s {
            for x in 0..s - 2 {
                assert_eq!(m[y * s + x], mask[y * s + x + 2], "({x}, {y})");
            }
        }
    }

    /// Gain and TGC scale each row by the curve's factor; gamma is a power; speckle keeps the
    /// mean and leaves black black; all channels stay equal.
    #[test]
    fn intensity_changes_do_what_they_say() {
        let s = 64;
        let plane = s * s;
        let flat = vec![0.25f32; 3 * plane];
        let tgc = Intensity { gain_db: Some(2.0), tgc_db: Some([-3.0, 0.0, 3.0, 1.5]), ..Intensity::IDENTITY };
        let mut a = flat.clone();
        tgc.apply(&mut a, s);
        for y in [0, 21, s / 2, 42, s - 1] {
            let t = 3.0 * y as f64 / (s - 1) as f64;
            let k = (t.floor() as usize).min(2);
            let curve = [-3.0, 0.0, 3.0, 1.5];
            let gain = curve[k] + (curve[k + 1] - curve[k]) * (t - k as f64) + 2.0;
            let want = 0.25 * 10f64.powf(gain / 20.0);
            for ch in 0..3 {
                assert!((f64::from(a[ch * plane + y * s + 7]) - want).abs() < 1e-6, "row {y}");
            }
        }
        let mut g = flat.clone();
        Intensity { gamma: Some(1.5), ..Intensity::IDENTITY }.apply(&mut g, s);
        assert!(g.iter().all(|&v| (v - 0.25f32.powf(1.5)).abs() < 1e-6));

        let mut n = flat.clone();
        for ch in 0..3 {
            n[ch * plane..ch * plane + s].fill(0.0); // the first row black
        }
        Intensity { speckle: Some((0.15, 9)), ..Intensity::IDENTITY }.apply(&mut n, s);
        assert!(n[..s].iter().all(|&v| v == 0.0), "black must stay black");
        let body = &n[s..plane];
        let mean = body.iter().map(|&v| f64::from(v)).sum::<f64>() / body.len() as f64;
        let sd = (body.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / body.len() as f64).sqrt();
        assert!((mean - 0.25).abs() < 0.005, "mean {mean}");
        assert!((sd - 0.25 * 0.15).abs() < 0.004, "sd {sd}");
        assert!((0..plane).all(|i| n[i] == n[plane + i] && n[i] == n[2 * plane + i]), "channels differ");
        // Bright pixels saturate at 1, never beyond.
        let mut hot = vec![0.95f32; 3 * plane];
        Intensity { gain_db: Some(3.0), ..Intensity::IDENTITY }.apply(&mut hot, s);
        assert!(hot.iter().all(|&v| v == 1.0));
    }

    #[test]
    fn augment_set_names() {
        use clap::ValueEnum;
        for (set, name) in [(AugmentSet::Original, "original"), (AugmentSet::Us, "us"), (AugmentSet::OriginalUs, "original+us")] {
            assert_eq!(AugmentSet::from_str(name, false).unwrap(), set);
            assert_eq!(serde_json::to_string(&set).unwrap(), format!("\"{name}\""));
        }
    }
}
