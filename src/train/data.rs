//! Training data: listing and checking a split, decoding it once (in parallel) into a cache at
//! the training size, seeded augmentation, and a loader thread that assembles batches ahead of
//! the training step.
//!
//! Bad data policy (checked before any training starts, all problems listed at once):
//! - an empty folder, an image without a mask or a mask without an image: error;
//! - an unreadable (undecodable) image or mask: error naming every such file;
//! - a mask whose size differs from its image: error (usually a pairing mistake; resizing it
//!   would hide that), naming both sizes;
//! - a non-binary mask (grey levels other than 0/255, e.g. JPEG artefacts): warning, binarised
//!   at > 127 (a 0/1 label image is read as is), see [`crate::image_io::load_mask`].
//!
//! Augmentation: the original set ([`AugmentParams`]) or the ultrasound one
//! ([`super::ultrasound`]), drawn per sample from a stream keyed by (seed, epoch, position).
//!
//! Geometry: every image is resized to `size x size` (bilinear, bytes) as in inference
//! ([`crate::preprocess`]); its mask is resized with the same bilinear weights and re-binarised
//! at 0.5.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::ultrasound::{bilinear_taps, AugmentSet, Intensity, UsParams};
use crate::error::{Error, Result};
use crate::image_io::{load_bgr, load_mask, pair_files, save_png, PngColor};
use crate::preprocess::resize_planar_u8;
use crate::resize::resize_bilinear_f32;

/// One decoded sample at the training size.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    /// `[3, size, size]`, B G R planes.
    pub image: Vec<u8>,
    /// `[size, size]`, 0 or 1.
    pub mask: Vec<u8>,
}

/// A decoded split (the cache: decoded once, used every epoch).
#[derive(Debug, Clone)]
pub struct Dataset {
    pub size: usize,
    pub samples: Vec<Sample>,
    /// FNV-1a 64 of every file name and file content, in order: identifies the data in config.json.
    pub fingerprint: String,
    /// Human-readable warnings (non-binary masks).
    pub warnings: Vec<String>,
}

fn fnv1a(hash: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *hash ^= u64::from(b);
        *hash = hash.wrapping_mul(0x100_0000_01b3);
    }
}

fn list_problem(what: &str, items: &[String]) -> String {
    let shown: Vec<_> = items.iter().take(10).map(String::as_str).collect();
    let more = if items.len() > 10 { format!(" (and {} more)", items.len() - 10) } else { String::new() };
    format!("{} {what}: {}{more}", items.len(), shown.join(", "))
}

impl Dataset {
    /// Lists, checks and decodes `images`/`masks`. Every problem is collected first, so one
    /// error message lists them all.
    pub fn load(images: &Path, masks: &Path, size: usize) -> Result<Dataset> {
        for dir in [images, masks] {
            if !dir.is_dir() {
                return Err(Error::Dataset(format!("{} is not a folder", dir.display())));
            }
        }
        let pairing = pair_files(images, Some(masks))?;
        if pairing.pairs.is_empty() {
            return Err(Error::Dataset(format!(
                "no images in {} (expected .png, .jpg, .bmp or .tif files)",
                images.display()
            )));
        }
        let mut problems = Vec::new();
        let names = |v: &[PathBuf]| v.iter().map(|p| p.display().to_string()).collect::<Vec<_>>();
        if !pairing.images_without_mask.is_empty() {
            problems.push(list_problem(
                &format!("images without a mask in {}", masks.display()),
                &names(&pairing.images_without_mask),
            ));
        }
        if !pairing.masks_without_image.is_empty() {
            problems.push(list_problem(
                &format!("masks without an image in {}", images.display()),
                &names(&pairing.masks_without_image),
            ));
        }
        if !pairing.duplicates.is_empty() {
            problems.push(list_problem("files with the same name as another", &names(&pairing.duplicates)));
        }
        if !problems.is_empty() {
            return Err(Error::Dataset(problems.join("; ")));
        }

        type Decoded = std::result::Result<(Sample, usize, Vec<u8>), String>;
        let decoded: Vec<Decoded> = pairing
            .pairs
            .par_iter()
            .map(|(key, img_path, mask_path)| {
                let mask_path = mask_path.as_ref().ok_or_else(|| format!("{key}: no mask"))?;
                let img = load_bgr(img_path).map_err(|e| e.to_string())?;
                let m = load_mask(mask_path).map_err(|e| e.to_string())?;
                if (m.mask.width, m.mask.height) != (img.width, img.height) {
                    return Err(format!(
                        "{}: mask is {}x{} but the image {} is {}x{}",
                        mask_path.display(),
                        m.mask.width,
                        m.mask.height,
                        img_path.display(),
                        img.width,
                        img.height
                    ));
                }
                let image = resize_planar_u8(&img, size).map_err(|e| e.to_string())?;
                let mask = resize_mask(&m.mask.data, img.width, img.height, size)?;
                let mut bytes = Vec::new();
                for p in [img_path, mask_path] {
                    bytes.extend(p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().bytes());
                    bytes.extend(std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?);
                }
                let mut h = 0xcbf2_9ce4_8422_2325u64;
                fnv1a(&mut h, &bytes);
                Ok((Sample { name: key.clone(), image, mask }, m.non_binary, h.to_le_bytes().to_vec()))
            })
            .collect();
        let mut samples = Vec::with_capacity(decoded.len());
        let mut bad = Vec::new();
        let mut non_binary = Vec::new();
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for d in decoded {
            match d {
                Ok((s, nb, h)) => {
                    if nb > 0 {
                        non_binary.push(format!("{} ({nb} px)", s.name));
                    }
                    fnv1a(&mut hash, &h);
                    samples.push(s);
                }
                Err(e) => bad.push(e),
            }
        }
        if !bad.is_empty() {
            return Err(Error::Dataset(list_problem("unusable image/mask pairs", &bad)));
        }
        let mut warnings = Vec::new();
        if !non_binary.is_empty() {
            warnings.push(list_problem("masks are not strictly binary (binarised at > 127)", &non_binary));
        }
        Ok(Dataset { size, samples, fingerprint: format!("{hash:016x}"), warnings })
    }

    /// Writes every sample as `<name>.png` into `images` (the BGR planes as an RGB PNG) and
    /// `masks` (0/255 grey), creating the folders. [`Dataset::load`] at the same size reads them
    /// back unchanged (resizing to the size a file already has is the identity), so a copy
    /// written this way trains exactly like its source: a small copy of a large data set, e.g. to
    /// carry to a GPU machine. (Resizing with another tool would not: PIL's bilinear, for one,
    /// filters when it shrinks and the loader does not, so the network would train on smoother
    /// images than it sees in `predict`, `process` and `live`.)
    pub fn write_png(&self, images: &Path, masks: &Path) -> Result<()> {
        for dir in [images, masks] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let s = self.size;
        let plane = s * s;
        self.samples.par_iter().try_for_each(|smp| {
            let (b, rest) = smp.image.split_at(plane);
            let (g, r) = rest.split_at(plane);
            let save = |dir: &Path, buf: &[u8], color: PngColor| {
                save_png(&dir.join(format!("{}.png", smp.name)), buf, s, s, color)
            };
            // Grey images (ultrasound mostly is) as grey PNGs, a third of the size; they decode
            // to three equal channels again.
            if b == g && g == r {
                save(images, b, PngColor::Grey)?;
            } else {
                let rgb: Vec<u8> = (0..plane).flat_map(|i| [r[i], g[i], b[i]]).collect();
                save(images, &rgb, PngColor::Rgb)?;
            }
            let mask: Vec<u8> = smp.mask.iter().map(|&m| m * 255).collect();
            save(masks, &mask, PngColor::Grey)
        })
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// A `w x h` binary mask to `size x size`: bilinear, then re-binarised at 0.5.
fn resize_mask(data: &[bool], w: usize, h: usize, size: usize) -> std::result::Result<Vec<u8>, String> {
    let f: Vec<f32> = data.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
    let r = resize_bilinear_f32(&f, w, h, size, size).map_err(|e| e.to_string())?;
    Ok(r.iter().map(|&v| u8::from(v > 0.5)).collect())
}

// ---------------------------------------------------------------------------------------------
// Augmentation

/// How the affine transform fills pixels that come from outside the image (imgaug's `mode=ALL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Border {
    Constant,
    Edge,
    Symmetric,
    Reflect,
    Wrap,
}

impl Border {
    const ALL: [Border; 5] = [Border::Constant, Border::Edge, Border::Symmetric, Border::Reflect, Border::Wrap];

    /// Index `i` mapped into `0..n`, or `None` for the constant (zero) border.
    fn index(self, i: i64, n: usize) -> Option<usize> {
        let n = n as i64;
        if (0..n).contains(&i) {
            return Some(i as usize);
        }
        let r = match self {
            Border::Constant => return None,
            Border::Edge => i.clamp(0, n - 1),
            Border::Symmetric => {
                let m = i.rem_euclid(2 * n);
                if m >= n {
                    2 * n - 1 - m
                } else {
                    m
                }
            }
            Border::Reflect => {
                if n == 1 {
                    0
                } else {
                    let m = i.rem_euclid(2 * n - 2);
                    if m >= n {
                        2 * n - 2 - m
                    } else {
                        m
                    }
                }
            }
            Border::Wrap => i.rem_euclid(n),
        };
        Some(r as usize)
    }
}

/// The random draws for one sample (kept separate so tests can drive the geometry).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AugmentParams {
    pub hflip: bool,
    pub vflip: bool,
    /// `(scale_x, scale_y, tx, ty (fractions of the size), rotate_deg, shear_deg, border)`.
    pub affine: Option<(f64, f64, f64, f64, f64, f64, Border)>,
}

impl AugmentParams {
    /// The original's list: flips p 0.5 each; with p 0.5 an affine transform with scale 0.8-1.2
    /// per axis, translation +-20 %, rotation +-45 deg, shear +-16 deg and a random border mode.
    pub fn draw(rng: &mut impl Rng) -> Self {
        let hflip = rng.random_bool(0.5);
        let vflip = rng.random_bool(0.5);
        let affine = rng.random_bool(0.5).then(|| {
            (
                rng.random_range(0.8..=1.2),
                rng.random_range(0.8..=1.2),
                rng.random_range(-0.2..=0.2),
                rng.random_range(-0.2..=0.2),
                rng.random_range(-45.0..=45.0),
                rng.random_range(-16.0..=16.0),
                Border::ALL[rng.random_range(0..Border::ALL.len())],
            )
        });
        Self { hflip, vflip, affine }
    }

    pub const IDENTITY: AugmentParams = AugmentParams { hflip: false, vflip: false, affine: None };
}

/// Applies `p` to a cached sample: image to 0..1 floats `[3, s, s]` (bilinear), mask to 0/1
/// floats `[s, s]` (nearest, so it stays binary).
pub fn augment(sample: &Sample, s: usize, p: &AugmentParams) -> (Vec<f32>, Vec<f32>) {
    let plane = s * s;
    let mut img = vec![0f32; 3 * plane];
    let mut mask = vec![0f32; plane];
    // Inverse map: output pixel centre -> source coordinates, flips applied last (after affine).
    let c = (s as f64 - 1.0) / 2.0;
    let inv = p.affine.map(|(sx, sy, tx, ty, rot, shear, border)| {
        let (r, sh) = (rot.to_radians(), shear.to_radians());
        // Forward linear part: R * Shear * Scale, with shear x' = x + tan(sh) * y.
        let (cr, sr, t) = (r.cos(), r.sin(), sh.tan());
        let a = [[cr * sx, (cr * t - sr) * sy], [sr * sx, (sr * t + cr) * sy]];
        let det = a[0][0] * a[1][1] - a[0][1] * a[1][0];
        let ai = [[a[1][1] / det, -a[0][1] / det], [-a[1][0] / det, a[0][0] / det]];
        (ai, tx * s as f64, ty * s as f64, border)
    });
    for y in 0..s {
        for x in 0..s {
            let ox = if p.hflip { s - 1 - x } else { x };
            let oy = if p.vflip { s - 1 - y } else { y };
            let o = oy * s + ox;
            let Some((ai, tx, ty, border)) = inv else {
                let i = y * s + x;
                for ch in 0..3 {
                    img[ch * plane + o] = f32::from(sample.image[ch * plane + i]) / 255.0;
                }
                mask[o] = f32::from(sample.mask[i]);
                continue;
            };
            let (dx, dy) = (x as f64 - c - tx, y as f64 - c - ty);
            let fx = c + ai[0][0] * dx + ai[0][1] * dy;
            let fy = c + ai[1][0] * dx + ai[1][1] * dy;
            // Nearest for the mask.
            let (nx, ny) = (fx.round() as i64, fy.round() as i64);
            mask[o] = match (border.index(nx, s), border.index(ny, s)) {
                (Some(ix), Some(iy)) => f32::from(sample.mask[iy * s + ix]),
                _ => 0.0,
            };
            // Bilinear for the image.
            let taps = bilinear_taps(fx, fy);
            for ch in 0..3 {
                let src = &sample.image[ch * plane..(ch + 1) * plane];
                let mut v = 0f32;
                for &(tx, ty, w) in &taps {
                    if let (Some(ix), Some(iy)) = (border.index(tx, s), border.index(ty, s)) {
                        v += w * f32::from(src[iy * s + ix]);
                    }
                }
                img[ch * plane + o] = v / 255.0;
            }
        }
    }
    (img, mask)
}

/// A 64-bit mix of the run seed with stream numbers (splitmix64): independent, reproducible
/// random streams per epoch and sample, whatever thread computes them.
pub fn stream_seed(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    for _ in 0..2 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
    }
    z
}

/// The order of the training samples in `epoch` (0-based).
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    use rand::seq::SliceRandom;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(stream_seed(seed, epoch as u64, u64::MAX)));
    order
}

// ---------------------------------------------------------------------------------------------
// Loader

/// One batch, ready for `Tensor::from_vec`.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[n, 3, s, s]`, 0..1, BGR.
    pub images: Vec<f32>,
    /// `[n, 1, s, s]`, 0 or 1.
    pub masks: Vec<f32>,
    pub n: usize,
}

/// Assembles batches on its own thread (samples of a batch augmented in parallel on rayon),
/// at most `prefetch` batches ahead. Dropping the loader stops and joins the thread.
pub struct Loader {
    rx: Receiver<Batch>,
    handle: Option<JoinHandle<()>>,
}

/// Where augmentation randomness comes from, and which set is drawn; `None` in
/// [`Loader::spawn`] means no augmentation.
#[derive(Debug, Clone, Copy)]
pub struct AugmentSeed {
    pub seed: u64,
    pub epoch: usize,
    pub set: AugmentSet,
}

/// One sample through the augmentation `set`, every draw from `rng`. The original set is the
/// original's path exactly (the same draws in the same order): seeded runs of the original
/// recipe are unchanged by the other sets' existence.
pub fn augment_with(sample: &Sample, s: usize, set: AugmentSet, rng: &mut impl Rng) -> (Vec<f32>, Vec<f32>) {
    match set {
        AugmentSet::Original => augment(sample, s, &AugmentParams::draw(rng)),
        AugmentSet::Us => {
            let p = UsParams::draw(rng);
            let (img, mask) = augment(sample, s, &AugmentParams::IDENTITY);
            p.apply(&img, &mask, s)
        }
        AugmentSet::OriginalUs => {
            let (mut img, mask) = augment(sample, s, &AugmentParams::draw(rng));
            Intensity::draw(rng).apply(&mut img, s);
            (img, mask)
        }
    }
}

impl Loader {
    /// Batches of `order` (indices into `data`) from batch number `first_batch` on.
    pub fn spawn(
        data: Arc<Dataset>,
        order: Vec<usize>,
        batch: usize,
        first_batch: usize,
        augment_seed: Option<AugmentSeed>,
        prefetch: usize,
    ) -> Loader {
        let (tx, rx) = bounded(prefetch.max(1));
        let handle = std::thread::Builder::new()
            .name("lightunet-loader".into())
            .spawn(move || {
                let s = data.size;
                for (bi, chunk) in order.chunks(batch.max(1)).enumerate().skip(first_batch) {
                    let items: Vec<(Vec<f32>, Vec<f32>)> = chunk
                        .par_iter()
                        .enumerate()
                        .map(|(j, &idx)| {
                            match augment_seed {
                                Some(a) => {
                                    let pos = (bi * batch + j) as u64;
                                    let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(a.seed, a.epoch as u64, pos));
                                    augment_with(&data.samples[idx], s, a.set, &mut rng)
                                }
                                None => augment(&data.samples[idx], s, &AugmentParams::IDENTITY),
                            }
                        })
                        .collect();
                    let n = items.len();
                    let mut images = Vec::with_capacity(n * 3 * s * s);
                    let mut masks = Vec::with_capacity(n * s * s);
                    for (i, m) in items {
                        images.extend(i);
                        masks.extend(m);
                    }
                    if tx.send(Batch { images, masks, n }).is_err() {
                        return; // the consumer stopped early
                    }
                }
            })
            .ok();
        Loader { rx, handle }
    }

    /// The next batch, `None` at the end of the epoch.
    pub fn next_batch(&self) -> Option<Batch> {
        self.rx.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Dropping the receiver wakes a blocked sender, which then returns.
        self.rx = crossbeam_channel::never();
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                tracing::error!("the data loader thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(s: usize) -> Sample {
        let image = (0..3 * s * s).map(|i| (i % 251) as u8).collect();
        let mask = (0..s * s).map(|i| u8::from((i / s) < s / 2)).collect();
        Sample { name: "a".into(), image, mask }
    }

    #[test]
    fn written_copy_loads_back_identically() {
        let dir = std::env::temp_dir().join(format!("lightunet-write-png-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (images, masks) = (dir.join("src/images"), dir.join("src/mask"));
        std::fs::create_dir_all(&images).unwrap();
        std::fs::create_dir_all(&masks).unwrap();
        // Odd sizes, non-grey pixels and JPEG-like names: nothing may change on the way through.
        for (k, (w, h)) in [(37usize, 29usize), (20, 45)].into_iter().enumerate() {
            // The first in colour, the second grey (written back as a grey PNG).
            let rgb: Vec<u8> = (0..w * h * 3).map(|i| if k == 0 { ((i * 7) % 256) as u8 } else { ((i / 3 * 5) % 256) as u8 }).collect();
            image::save_buffer(images.join(format!("img{k}.png")), &rgb, w as u32, h as u32, image::ExtendedColorType::Rgb8).unwrap();
            let m: Vec<u8> = (0..w * h).map(|i| if (i % w) > w / 3 && (i / w) < 2 * h / 3 { 255 } else { 0 }).collect();
            image::save_buffer(masks.join(format!("img{k}_mask.png")), &m, w as u32, h as u32, image::ExtendedColorType::L8).unwrap();
        }
        let a = Dataset::load(&images, &masks, 16).unwrap();
        a.write_png(&dir.join("copy/images"), &dir.join("copy/mask")).unwrap();
        let b = Dataset::load(&dir.join("copy/images"), &dir.join("copy/mask"), 16).unwrap();
        assert_eq!(a.len(), 2);
        let grey = image::open(dir.join("copy/images/img1.png")).unwrap();
        assert_eq!(grey.color(), image::ColorType::L8, "grey images are written grey");
        for (x, y) in a.samples.iter().zip(&b.samples) {
            assert_eq!(x.name, y.name);
            assert!(x.image == y.image, "{}: image changed", x.name);
            assert!(x.mask == y.mask, "{}: mask changed", x.name);
            assert!(x.mask.contains(&1) && x.mask.contains(&0));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn identity_and_flips() {
        let s = 8;
        let smp = sample(s);
        let (img, m) = augment(&smp, s, &AugmentParams::IDENTITY);
        assert_eq!(img[5], 5.0 / 255.0);
        assert_eq!(m[0], 1.0);
        let p = AugmentParams { vflip: true, ..AugmentParams::IDENTITY };
        let (_, m) = augment(&smp, s, &p);
        assert_eq!(m[0], 0.0);
        assert_eq!(m[s * s - 1], 1.0);
    }

    #[test]
    fn affine_identity_is_identity() {
        let s = 9;
        let smp = sample(s);
        let p = AugmentParams { affine: Some((1.0, 1.0, 0.0, 0.0, 0.0, 0.0, Border::Constant)), ..AugmentParams::IDENTITY };
        let (a, ma) = augment(&smp, s, &p);
        let (b, mb) = augment(&smp, s, &AugmentParams::IDENTITY);
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6));
        assert_eq!(ma, mb);
    }

    #[test]
    fn borders() {
        assert_eq!(Border::Symmetric.index(-1, 4), Some(0));
        assert_eq!(Border::Reflect.index(-1, 4), Some(1));
        assert_eq!(Border::Reflect.index(4, 4), Some(2));
        assert_eq!(Border::Wrap.index(-1, 4), Some(3));
        assert_eq!(Border::Edge.index(9, 4), Some(3));
        assert_eq!(Border::Constant.index(-1, 4), None);
    }

    /// The loader's batches are [`augment_with`] on the stream of (seed, epoch, position), for
    /// every set: for the original set that is `augment(AugmentParams::draw(..))`, the
    /// original's path. A resumed epoch (first_batch 1) gets the same samples.
    #[test]
    fn loader_draws_each_set_from_the_sample_stream() {
        let s = 16;
        let samples: Vec<Sample> = (0..5)
            .map(|k| {
                let mut smp = sample(s);
                smp.image.iter_mut().for_each(|v| *v = v.wrapping_add(k * 37));
                smp
            })
            .collect();
        let data = Arc::new(Dataset { size: s, samples, fingerprint: String::new(), warnings: Vec::new() });
        let order = epoch_order(5, 11, 3);
        for set in [AugmentSet::Original, AugmentSet::Us, AugmentSet::OriginalUs] {
            let seed = AugmentSeed { seed: 11, epoch: 3, set };
            let loader = Loader::spawn(data.clone(), order.clone(), 2, 0, Some(seed), 1);
            let mut got = Vec::new();
            while let Some(b) = loader.next_batch() {
                got.push(b);
            }
            assert_eq!(got.iter().map(|b| b.n).collect::<Vec<_>>(), [2, 2, 1]);
            for (pos, &idx) in order.iter().enumerate() {
                let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(11, 3, pos as u64));
                let (img, mask) = augment_with(&data.samples[idx], s, set, &mut rng);
                let b = &got[pos / 2];
                let j = pos % 2;
                assert!(b.images[j * 3 * s * s..(j + 1) * 3 * s * s] == img[..], "{set:?} sample {pos}");
                assert!(b.masks[j * s * s..(j + 1) * s * s] == mask[..], "{set:?} mask {pos}");
                if set == AugmentSet::Original {
                    let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(11, 3, pos as u64));
                    assert!(augment(&data.samples[idx], s, &AugmentParams::draw(&mut rng)).0 == img);
                }
            }
            let resumed = Loader::spawn(data.clone(), order.clone(), 2, 1, Some(seed), 1);
            let first = resumed.next_batch().unwrap();
            assert!(first.images == got[1].images && first.masks == got[1].masks);
        }
    }

    #[test]
    fn masks_stay_binary_and_orders_are_seeded() {
        let s = 16;
        let smp = sample(s);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..20 {
            let p = AugmentParams::draw(&mut rng);
            let (_, m) = augment(&smp, s, &p);
            assert!(m.iter().all(|&v| v == 0.0 || v == 1.0));
        }
        assert_eq!(epoch_order(10, 3, 1), epoch_order(10, 3, 1));
        assert_ne!(epoch_order(10, 3, 1), epoch_order(10, 3, 2));
    }
}
