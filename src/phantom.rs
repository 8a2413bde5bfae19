//! Built-in ultrasound phantom: a deterministic, seeded synthetic B-mode video with a
//! ground-truth lesion mask for every frame.
//!
//! It is the product's default demo input, its test input (tests check that the predicted
//! mask lands on the lesion) and its benchmark input, so it is std-only, cheap per frame and
//! a pure function of `(config, frame index)`: any frame can be rendered in any order, from
//! any thread. The picture imitates a scanner screen: black UI around a linear (rectangular)
//! or convex (fan) B-mode image with layered breast-like tissue, spatially correlated
//! Rayleigh speckle that decorrelates slowly over time, depth attenuation, bright specular
//! interfaces, one dark irregular lesion drifting along a Lissajous path with posterior
//! acoustic shadowing, optional calipers and optional scanner text. Everything that does not
//! depend on time (scan conversion table, log-compressed tissue echogenicity, speckle
//! keyframes) is built in [`Phantom::new`]; a frame only blends two speckle keyframes, darkens
//! the lesion and its shadow and multiplies by a tabulated speckle factor, which keeps a
//! 1280x720 frame at about 3 ms on one core.

use std::f32::consts::{FRAC_PI_2, PI, TAU};
use std::fmt::Write as _;

/// Smallest accepted frame side: below this the image region and text no longer fit.
pub const MIN_SIDE: usize = 64;
/// Largest accepted frame side (8K); bounds memory for the precomputed tables.
pub const MAX_SIDE: usize = 8192;

/// Transducer geometry, which decides the shape of the image region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Probe {
    /// Linear array: a rectangular image, as in breast imaging (BUSI) and the default.
    #[default]
    Linear,
    /// Convex (curvilinear) array: a fan-shaped sector with curved top and bottom edges.
    Convex,
}

/// Byte layout for [`Phantom::fill_into`]. The phantom is pure grey, so every colour
/// channel order (RGB/BGR, RGBx/BGRx/RGBA/BGRA) receives the same bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelLayout {
    /// One byte per pixel.
    Gray8,
    /// Three bytes per pixel (RGB or BGR).
    Rgb8,
    /// Four bytes per pixel, fourth byte 255 (RGBx, BGRx, RGBA, BGRA).
    Rgbx8,
}

impl PixelLayout {
    /// Bytes one pixel occupies in this layout.
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelLayout::Gray8 => 1,
            PixelLayout::Rgb8 => 3,
            PixelLayout::Rgbx8 => 4,
        }
    }
}

/// What to render. Construct with `PhantomConfig { width: 1280, height: 720, ..Default::default() }`.
#[derive(Clone, Debug, PartialEq)]
pub struct PhantomConfig {
    /// Frame width in pixels (the whole scanner screen), 64..=8192. Default 640.
    pub width: usize,
    /// Frame height in pixels, 64..=8192. Default 480.
    pub height: usize,
    /// Frames per second; frame `i` shows time `i / fps`, so motion is defined in seconds
    /// and looks the same at any rate. Default 25.
    pub fps: u32,
    /// Seed for anatomy, speckle, lesion shape and path. Same seed and index give the same
    /// bytes. Default 0.
    pub seed: u64,
    /// Whether there is a lesion (and so a non-empty mask). Default true.
    pub lesion: bool,
    /// Draw calipers ('+' marks and a dotted line) on the lesion's long axis, inside the
    /// image like a measurement on a real scanner. Off by default because they sit on the
    /// lesion and would disturb segmentation tests. Default false.
    pub calipers: bool,
    /// Draw scanner-style UI in the black border: title, probe, depth, gain, frame counter,
    /// depth scale and orientation marker. It never touches the image region. Default true.
    pub scanner_text: bool,
    /// Probe geometry. Default [`Probe::Linear`].
    pub probe: Probe,
    /// Displayed depth in cm: labels the depth scale and converts caliper lengths. Default 4.0.
    pub depth_cm: f32,
    /// Overall gain, 0..=100 (shown as "GAIN n%"); 60 is the calibrated default and each step
    /// is 0.3 dB.
    pub gain: u8,
    /// Mean lesion radius as a fraction of the image region's width, 0.02..=0.25. Default 0.09.
    pub lesion_radius: f32,
}

impl Default for PhantomConfig {
    fn default() -> Self {
        PhantomConfig {
            width: 640,
            height: 480,
            fps: 25,
            seed: 0,
            lesion: true,
            calipers: false,
            scanner_text: true,
            probe: Probe::Linear,
            depth_cm: 4.0,
            gain: 60,
            lesion_radius: 0.09,
        }
    }
}

/// One rendered frame with its ground truth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhantomFrame {
    /// Frame index this was rendered for.
    pub index: u64,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// RGB8, row-major, no padding (`width * height * 3` bytes); grey, so R == G == B.
    pub rgb: Vec<u8>,
    /// Ground-truth lesion mask, 0 or 255, `width * height` bytes, zero outside the image.
    pub mask: Vec<u8>,
    /// `(x, y, w, h)` of the ultrasound image inside the frame; the rest is scanner UI. For a
    /// convex probe this is the bounding box of the fan (its corners are black).
    pub image_rect: (usize, usize, usize, usize),
}

/// Where the lesion is in one frame, for tests, overlays and metrics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LesionInfo {
    /// Centre of the lesion's shape in pixel coordinates (not the mask centroid).
    pub center: (f32, f32),
    /// End points of the long axis (where the calipers go), pixel coordinates.
    pub axis: [(f32, f32); 2],
    /// Long axis length in cm according to `depth_cm`.
    pub axis_cm: f32,
    /// `(x0, y0, x1, y1)`, exclusive end: every mask pixel lies inside.
    pub bbox: (usize, usize, usize, usize),
}

/// A configured phantom. Immutable after construction and `Sync`: frames may be rendered
/// from several threads at once.
pub struct Phantom {
    cfg: PhantomConfig,
    rect: (usize, usize, usize, usize),
    geom: Geometry,
    /// Beam grid size: `nu` lateral samples (columns or beam angles) by `nv` depth samples.
    nu: usize,
    nv: usize,
    /// Static echogenicity including depth attenuation, in output grey levels, per grid sample.
    base: Vec<f32>,
    /// Complex speckle keyframes (quantised Gaussian components), per grid sample.
    speckle: Vec<Vec<[i8; 2]>>,
    /// Speckle display factor (mean 1) that multiplies the local grey level from the dB-domain
    /// tissue model: `(1 - SPK_MIX) + SPK_MIX * (p + floor)^SPK_GAMMA / norm` for speckle
    /// intensity `p`. A power near amplitude gives a right-skewed grain (bright flecks on a
    /// darker floor, as on the reference scanner) where a pure log gives dark worms on bright.
    /// Tabulated by the float's exponent and top 7 mantissa bits (`bits >> 16`, < 0.4% error
    /// in `p`), because a power per pixel would cost more than everything else together.
    spk_lut: Vec<f32>,
    /// `bits >> 16` of the smallest possible `p + floor`: offset into `spk_lut`.
    spk_lut_base: usize,
    /// Small floor (system noise) added to speckle intensity.
    spk_floor: f32,
    /// Grey level the lesion interior tends to (before speckle).
    lesion_g: f32,
    /// Peak brightening of the thin echogenic rim around the lesion, grey levels.
    rim_g: f32,
    /// Darkening at the centre of the posterior shadow, grey levels.
    shadow_g: f32,
    /// Depth samples over which the shadow reaches full strength.
    shadow_ramp: f32,
    /// Width of the soft lesion border, pixels.
    edge_px: f32,
    les: LesionParams,
    px_per_cm: f32,
    text_scale: usize,
}

// ---------------------------------------------------------------------------------------
// Constants

/// Sentinel scan-conversion entry: pixel outside the fan.
const OUT: u32 = u32::MAX;
/// Speckle keyframes. Consecutive time keys come from different halves of the set, so two
/// blended keys are always independent and the blend keeps Rayleigh statistics.
const KEYS: usize = 8;
/// Seconds per speckle key: the field fully decorrelates in this time, like tissue that moves
/// a little under a hand-held probe.
const KEY_PERIOD_S: f64 = 1.0;
/// Quantisation scale of the speckle components (std of each component in i8 units).
const SPK_Q: f32 = 36.0;
/// Upper bounds for the beam grid; larger frames sample the grid with nearest neighbour so
/// that memory stays bounded at 8K.
const MAX_GRID_DIM: usize = 2048;
const MAX_GRID_SAMPLES: usize = 2_500_000;
/// Upper bound for the convex scan-conversion table (entries).
const MAX_LUT: usize = 4_000_000;
/// Angular samples of the lesion radius function r(theta).
const RTAB_N: usize = 512;
/// Harmonics of the lesion border.
const HARMONICS: usize = 6;
/// Speckle noise floor relative to mean speckle intensity.
const SPK_FLOOR: f32 = 0.02;
/// Share of the speckle factor in the grey level; the rest is flat. Stands in for spatial and
/// frequency compounding, which real scanners use to lower speckle contrast (and which fills
/// the nulls) without making the grain less right-skewed.
const SPK_MIX: f32 = 0.5;
/// Power applied to speckle intensity (0.5 would be the envelope amplitude; with
/// SPK_MIX it keeps the grain right-skewed while the tissue layers stay legible).
const SPK_GAMMA: f32 = 0.4;
/// Displayed dynamic range in dB (log compression).
const DR_DB: f32 = 60.0;

// ---------------------------------------------------------------------------------------
// Small deterministic helpers

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Tiny seeded generator (SplitMix64): std has no RNG and the sequence must never change.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        Rng(splitmix(seed ^ splitmix(stream)))
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix(self.0)
    }
    /// Uniform in [0, 1).
    fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f32()
    }
}

/// Hash of a lattice point to [0, 1).
fn lattice(seed: u64, ix: i32, iy: i32) -> f32 {
    let h = splitmix(seed ^ ((ix as u32 as u64) << 32 | iy as u32 as u64));
    (h >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// Smooth value noise in [0, 1) with unit lattice spacing.
fn vnoise(seed: u64, x: f32, y: f32) -> f32 {
    let (fx, fy) = (x.floor(), y.floor());
    let (ix, iy) = (fx as i32, fy as i32);
    let (tx, ty) = (x - fx, y - fy);
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let a = lattice(seed, ix, iy);
    let b = lattice(seed, ix + 1, iy);
    let c = lattice(seed, ix, iy + 1);
    let d = lattice(seed, ix + 1, iy + 1);
    let top = a + (b - a) * sx;
    let bot = c + (d - c) * sx;
    top + (bot - top) * sy
}

/// Fractal value noise in [0, 1): `oct` octaves, each twice the frequency and half the weight.
fn fbm(seed: u64, x: f32, y: f32, oct: u32) -> f32 {
    let (mut sum, mut norm, mut amp, mut f) = (0.0, 0.0, 1.0, 1.0);
    for o in 0..oct {
        sum += amp * vnoise(seed.wrapping_add(o as u64 * 0x51ED), x * f, y * f);
        norm += amp;
        amp *= 0.5;
        f *= 2.03;
    }
    sum / norm
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// atan2 with ~1e-5 rad error; used per pixel near the lesion border.
#[inline(always)]
fn fast_atan2(y: f32, x: f32) -> f32 {
    let (ax, ay) = (x.abs(), y.abs());
    let mx = ax.max(ay);
    if mx == 0.0 {
        return 0.0;
    }
    let a = ax.min(ay) / mx;
    let s = a * a;
    let mut r = ((-0.046_496_475 * s + 0.159_314_22) * s - 0.327_622_76) * s * a + a;
    if ay > ax {
        r = FRAC_PI_2 - r;
    }
    if x < 0.0 {
        r = PI - r;
    }
    if y < 0.0 {
        -r
    } else {
        r
    }
}

/// A boundary depth that wanders laterally: `base + sum amp * sin(freq * x + phase)`.
struct Wave {
    base: f32,
    comps: [(f32, f32, f32); 3],
}

impl Wave {
    fn new(rng: &mut Rng, base: f32, amp: f32) -> Wave {
        let mut comps = [(0.0, 0.0, 0.0); 3];
        for (k, c) in comps.iter_mut().enumerate() {
            let f = TAU * rng.range(0.4, 1.0) * (k as f32 + 1.0);
            *c = (
                amp * rng.range(0.4, 1.0) / (k as f32 + 1.0),
                f,
                rng.range(0.0, TAU),
            );
        }
        Wave { base, comps }
    }
    fn at(&self, x: f32) -> f32 {
        self.base
            + self
                .comps
                .iter()
                .map(|&(a, f, p)| a * (f * x + p).sin())
                .sum::<f32>()
    }
}

// ---------------------------------------------------------------------------------------
// Geometry: frame pixels <-> beam grid (u lateral, v depth)

enum Geometry {
    /// Separable: a column maps to a lateral sample, a row to a depth sample.
    Linear { col_u: Vec<u16>, row_v: Vec<u16> },
    /// Scan-conversion table over the fan's bounding box (at `lut_k`-pixel cells for huge
    /// frames), entries `v << 16 | u` or [`OUT`].
    Convex {
        apex: (f32, f32),
        r_in: f32,
        depth_px: f32,
        half: f32,
        lut: Vec<u32>,
        lut_w: usize,
        lut_k: usize,
        lut_col: Vec<u32>,
    },
}

/// Screen layout shared by both probes: top and bottom margins hold UI like a real scanner.
fn margins(h: usize) -> (usize, usize) {
    let top = (h as f32 * 0.07).round() as usize;
    let bottom = (h as f32 * 0.09).round() as usize;
    (top, bottom)
}

/// Grid downscale so the grid stays within the caps; 1.0 for anything up to ~1080p.
fn grid_scale(nu0: f32, nv0: f32) -> f32 {
    let cap = MAX_GRID_DIM as f32;
    1.0f32
        .max(nu0 / cap)
        .max(nv0 / cap)
        .max((nu0 * nv0 / MAX_GRID_SAMPLES as f32).sqrt())
}

impl Phantom {
    /// Validates `cfg` and precomputes geometry, tissue and speckle keyframes: about 0.1 s at
    /// 640x480 and 0.3 s at 1280x720 on one core in release, spread over up to 8 threads.
    pub fn new(cfg: PhantomConfig) -> Result<Phantom, String> {
        let (w, h) = (cfg.width, cfg.height);
        if !(MIN_SIDE..=MAX_SIDE).contains(&w) || !(MIN_SIDE..=MAX_SIDE).contains(&h) {
            return Err(format!(
                "phantom size {w}x{h} out of range: each side must be {MIN_SIDE}..={MAX_SIDE}"
            ));
        }
        if cfg.fps == 0 {
            return Err("phantom fps must be at least 1".into());
        }
        if !(cfg.depth_cm >= 0.5 && cfg.depth_cm <= 40.0) {
            return Err(format!("phantom depth_cm {} not in 0.5..=40", cfg.depth_cm));
        }
        if cfg.gain > 100 {
            return Err(format!("phantom gain {} not in 0..=100", cfg.gain));
        }
        if !(cfg.lesion_radius >= 0.02 && cfg.lesion_radius <= 0.25) {
            return Err(format!(
                "phantom lesion_radius {} not in 0.02..=0.25",
                cfg.lesion_radius
            ));
        }

        let (top, bottom) = margins(h);
        let avail_h = (h - top - bottom) as f32;
        let (rect, geom, nu, nv, depth_px, aspect, fan_grain) = match cfg.probe {
            Probe::Linear => {
                // Slightly wider than tall at 4:3, like the BUSI crops; never wider than 62%
                // of the screen so the side panels keep room for text.
                let ih = avail_h.round() as usize;
                let iw = ((w as f32 * 0.62).min(avail_h * 1.3)).round() as usize;
                let rect = ((w - iw) / 2, top, iw, ih);
                let s = grid_scale(iw as f32, ih as f32);
                let nu = ((iw as f32 / s).ceil() as usize).max(1);
                let nv = ((ih as f32 / s).ceil() as usize).max(1);
                let col_u = (0..iw)
                    .map(|x| {
                        (((x as f32 + 0.5) * nu as f32 / iw as f32) as usize).min(nu - 1) as u16
                    })
                    .collect();
                let row_v = (0..ih)
                    .map(|y| {
                        (((y as f32 + 0.5) * nv as f32 / ih as f32) as usize).min(nv - 1) as u16
                    })
                    .collect();
                let geom = Geometry::Linear { col_u, row_v };
                (rect, geom, nu, nv, ih as f32, iw as f32 / ih as f32, 1.0)
            }
            Probe::Convex => {
                // Virtual apex above the screen; the probe face is an arc of radius r_in.
                let half = 0.5f32;
                let rho = 0.38f32;
                let avail_w = w as f32 * 0.75;
                let d = (avail_h / (1.0 + rho * (1.0 - half.cos())))
                    .min(avail_w / (2.0 * (1.0 + rho) * half.sin()));
                let r_in = rho * d;
                let fan_w = 2.0 * (r_in + d) * half.sin();
                let fan_h = d + r_in * (1.0 - half.cos());
                let (iw, ih) = (fan_w.ceil() as usize, fan_h.ceil() as usize);
                let rect = ((w - iw.min(w)) / 2, top, iw.min(w), ih.min(h - top));
                let apex = (rect.0 as f32 + fan_w * 0.5, top as f32 - r_in * half.cos());
                let arc = 2.0 * half * (r_in + d);
                let s = grid_scale(arc, d);
                let nu = ((arc / s).ceil() as usize).max(1);
                let nv = ((d / s).ceil() as usize).max(1);
                let lut_k = ((rect.2 * rect.3) as f32 / MAX_LUT as f32)
                    .sqrt()
                    .ceil()
                    .max(1.0) as usize;
                let lut_w = rect.2.div_ceil(lut_k);
                let lut_h = rect.3.div_ceil(lut_k);
                let mut lut = vec![OUT; lut_w * lut_h];
                for cy in 0..lut_h {
                    for cx in 0..lut_w {
                        let px = rect.0 as f32 + ((cx * lut_k) as f32 + 0.5 * lut_k as f32);
                        let py = rect.1 as f32 + ((cy * lut_k) as f32 + 0.5 * lut_k as f32);
                        let (dx, dy) = (px - apex.0, py - apex.1);
                        let r = (dx * dx + dy * dy).sqrt();
                        let phi = dx.atan2(dy);
                        if r >= r_in && r < r_in + d && phi.abs() < half {
                            let u = (((phi + half) / (2.0 * half)) * nu as f32) as usize;
                            let v = (((r - r_in) / d) * nv as f32) as usize;
                            lut[cy * lut_w + cx] =
                                ((v.min(nv - 1) as u32) << 16) | u.min(nu - 1) as u32;
                        }
                    }
                }
                let lut_col = (0..rect.2).map(|x| (x / lut_k) as u32).collect();
                let geom = Geometry::Convex {
                    apex,
                    r_in,
                    depth_px: d,
                    half,
                    lut,
                    lut_w,
                    lut_k,
                    lut_col,
                };
                let aspect = arc / d * (r_in + 0.5 * d) / (r_in + d);
                (rect, geom, nu, nv, d, aspect, (r_in + d) / (r_in + 0.3 * d))
            }
        };

        // Log compression: DR_DB dB of echo intensity spread over 0..255.
        let gain_k = 255.0 / DR_DB;
        let black_db = -30.0 - (cfg.gain as f32 - 60.0) * 0.3;
        let to_g = |db: f32| (db - black_db) * gain_k;

        // Tissue: a static echogenicity map in dB over the beam grid.
        let anat = Anatomy::new(cfg.seed);
        let convex = cfg.probe == Probe::Convex;
        // Construction is the only heavy part (a few hundred ms single-threaded at 720p), so
        // it uses the machine's cores; frames themselves stay single-threaded.
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8);
        let chunk = 32;
        let base: Vec<f32> = par_map(nv.div_ceil(chunk), threads, |c| {
            let mut rows = Vec::with_capacity(chunk * nu);
            for v in c * chunk..((c + 1) * chunk).min(nv) {
                let yf = (v as f32 + 0.5) / nv as f32;
                let att = attenuation_db(yf);
                for u in 0..nu {
                    let uf = (u as f32 + 0.5) / nu as f32;
                    let mut db = anat.tissue_db(uf * aspect, yf) + att;
                    if convex {
                        // Edge beams of a convex probe are weaker.
                        db -= 5.0 * smoothstep(0.8, 1.0, (uf - 0.5).abs() * 2.0);
                    }
                    rows.push(to_g(db));
                }
            }
            rows
        })
        .concat();

        // Speckle: grain size tied to the depth resolution so the texture looks the same at
        // any frame size; laterally elongated like a real point spread function.
        let sv = (0.003 * nv as f32).max(0.6);
        // In a fan the lateral samples are beam angles, so at shallow depth many of them share
        // a pixel; widening the angular grain keeps shallow speckle like the linear probe's and
        // lets it coarsen with depth as a real sector's does.
        let su = (0.0068 * nv as f32 * fan_grain).max(1.0);
        // At most 4 keys at a time bounds the temporaries (~8 bytes per grid sample each).
        let speckle: Vec<Vec<[i8; 2]>> = par_map(KEYS, threads.min(4), |k| {
            speckle_field(cfg.seed, k as u64, nu, nv, su, sv)
        });
        // Blended components stay within 127 * (cos + sin) <= 127 * sqrt(2) each.
        let spk_floor = SPK_FLOOR * 2.0 * SPK_Q * SPK_Q;
        let spk_lut_base = (spk_floor.to_bits() >> 16) as usize;
        let p_max = 2.0 * (127.0 * 2f32.sqrt()).powi(2) + spk_floor;
        let top = (p_max.to_bits() >> 16) as usize + 1;
        let mut spk_lut: Vec<f32> = (spk_lut_base..=top)
            .map(|k| f32::from_bits(((k as u32) << 16) | 0x8000).powf(SPK_GAMMA))
            .collect();
        // Normalise to mean 1 over a keyframe (the quantised field is not exactly Gaussian,
        // so measure rather than use Gamma(1 + gamma)).
        let mean_raw = speckle[0]
            .iter()
            .map(|z| {
                let p = z[0] as f32 * z[0] as f32 + z[1] as f32 * z[1] as f32 + spk_floor;
                spk_lut[(p.to_bits() >> 16) as usize - spk_lut_base] as f64
            })
            .sum::<f64>()
            / speckle[0].len() as f64;
        for t in spk_lut.iter_mut() {
            *t = (1.0 - SPK_MIX) + SPK_MIX * *t / mean_raw as f32;
        }

        let les = LesionParams::new(cfg.seed, &cfg, rect.2 as f32, rect.3 as f32, cfg.probe);
        let scale_px = (rect.3 as f32 / 400.0).max(0.5);
        let text_scale = ((h + 200) / 450).max(1);
        Ok(Phantom {
            rect,
            geom,
            nu,
            nv,
            base,
            speckle,
            spk_lut,
            spk_lut_base,
            spk_floor,
            lesion_g: to_g(-23.0),
            rim_g: 2.5 * gain_k,
            shadow_g: 8.0 * gain_k,
            shadow_ramp: 0.05 * nv as f32,
            edge_px: 1.8 * scale_px,
            les,
            px_per_cm: depth_px / cfg.depth_cm,
            text_scale,
            cfg,
        })
    }

    /// The configuration this phantom was built with.
    pub fn config(&self) -> &PhantomConfig {
        &self.cfg
    }

    /// Frame width in pixels.
    pub fn width(&self) -> usize {
        self.cfg.width
    }

    /// Frame height in pixels.
    pub fn height(&self) -> usize {
        self.cfg.height
    }

    /// `(x, y, w, h)` of the ultrasound image inside the frame (fan bounding box for convex).
    pub fn image_rect(&self) -> (usize, usize, usize, usize) {
        self.rect
    }

    /// Renders frame `index` with its mask. Allocates; use [`Phantom::fill_into`] to render
    /// into existing buffers.
    pub fn frame(&self, index: u64) -> PhantomFrame {
        let (w, h) = (self.cfg.width, self.cfg.height);
        let mut rgb = vec![0u8; w * h * 3];
        let mut mask = vec![0u8; w * h];
        self.fill_into(index, PixelLayout::Rgb8, &mut rgb, w * 3, Some(&mut mask))
            .expect("buffers sized for the frame");
        PhantomFrame {
            index,
            width: w,
            height: h,
            rgb,
            mask,
            image_rect: self.rect,
        }
    }

    /// Renders frame `index` as RGB8 into `buf` with `stride` bytes per row (padding bytes are
    /// left alone). Does not allocate.
    pub fn fill_rgb_into(&self, index: u64, buf: &mut [u8], stride: usize) -> Result<(), String> {
        self.fill_into(index, PixelLayout::Rgb8, buf, stride, None)
    }

    /// Renders frame `index` as 8-bit grey into `buf` with `stride` bytes per row.
    pub fn fill_gray_into(&self, index: u64, buf: &mut [u8], stride: usize) -> Result<(), String> {
        self.fill_into(index, PixelLayout::Gray8, buf, stride, None)
    }

    /// Writes only the ground-truth mask of frame `index` (0/255, `width * height` bytes,
    /// no padding) without rendering the image: cheap, for metrics against a live stream.
    pub fn fill_mask_into(&self, index: u64, mask: &mut [u8]) -> Result<(), String> {
        let (w, h) = (self.cfg.width, self.cfg.height);
        if mask.len() < w * h {
            return Err(format!("mask buffer {} bytes < {}", mask.len(), w * h));
        }
        let st = self.frame_state(index);
        self.write_mask(&st, &mut mask[..w * h]);
        Ok(())
    }

    /// Renders frame `index` into `buf` in `layout` with `stride` bytes per row and, when
    /// given, its mask into `mask` (`width * height` bytes). Does not allocate.
    pub fn fill_into(
        &self,
        index: u64,
        layout: PixelLayout,
        buf: &mut [u8],
        stride: usize,
        mask: Option<&mut [u8]>,
    ) -> Result<(), String> {
        let (w, h) = (self.cfg.width, self.cfg.height);
        let bpp = layout.bytes_per_pixel();
        if stride < w * bpp {
            return Err(format!("stride {stride} < width {w} x {bpp} bytes"));
        }
        let need = stride * (h - 1) + w * bpp;
        if buf.len() < need {
            return Err(format!("frame buffer {} bytes < {need}", buf.len()));
        }
        if let Some(m) = &mask {
            if m.len() < w * h {
                return Err(format!("mask buffer {} bytes < {}", m.len(), w * h));
            }
        }
        let st = self.frame_state(index);
        match layout {
            PixelLayout::Gray8 => self.render::<1>(&st, buf, stride),
            PixelLayout::Rgb8 => self.render::<3>(&st, buf, stride),
            PixelLayout::Rgbx8 => self.render::<4>(&st, buf, stride),
        }
        let mut canvas = Canvas {
            buf,
            stride,
            bpp,
            w,
            h,
            rect: self.rect,
            placed: [(0, 0, 0, 0); 16],
            n_placed: 0,
        };
        if self.cfg.calipers {
            if let Some(l) = &st.lesion {
                self.draw_calipers(&mut canvas, l);
            }
        }
        if self.cfg.scanner_text {
            self.draw_ui(&mut canvas, index, &st);
        }
        if let Some(m) = mask {
            self.write_mask(&st, &mut m[..w * h]);
        }
        Ok(())
    }

    /// Lesion position and size at frame `index`, or `None` when `lesion` is off.
    pub fn lesion_info(&self, index: u64) -> Option<LesionInfo> {
        let st = self.frame_state(index);
        st.lesion.as_ref().map(|l| LesionInfo {
            center: (l.cx, l.cy),
            axis: l.axis,
            axis_cm: l.axis_len / self.px_per_cm,
            bbox: (l.x0, l.y0, l.x1, l.y1),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Tissue

/// Breast-like layering (depths are fractions of the image depth): skin, subcutaneous fat
/// with Cooper's ligaments, fibroglandular tissue, a bright fascia, pectoral muscle with
/// striations, and a deep chest-wall interface.
struct Anatomy {
    seed: u64,
    skin: Wave,
    fat: Wave,
    fascia: Wave,
    deep: Wave,
    /// Muscle striation frequency across depth and lateral slope (fibres slant either way).
    stria: (f32, f32),
}

impl Anatomy {
    fn new(seed: u64) -> Anatomy {
        let mut rng = Rng::new(seed, 0xA7A7);
        Anatomy {
            seed: splitmix(seed ^ 0x7155),
            skin: Wave::new(&mut rng, 0.035, 0.004),
            fat: Wave::new(&mut rng, 0.2, 0.04),
            fascia: Wave::new(&mut rng, 0.66, 0.035),
            deep: Wave::new(&mut rng, 0.86, 0.025),
            stria: (rng.range(24.0, 34.0), rng.range(-6.0, 6.0)),
        }
    }

    /// Mean echogenicity in dB at lateral position `x` (in depth units) and depth `y` (0..1).
    fn tissue_db(&self, x: f32, y: f32) -> f32 {
        let s = self.seed;
        let (y_skin, y_fat) = (self.skin.at(x), self.fat.at(x));
        let (y_fascia, y_deep) = (self.fascia.at(x), self.deep.at(x));
        let line = |c: f32, width: f32| {
            let t = (y - c) / width;
            (-t * t).exp()
        };
        // Thin bright curves: isolines of a noise field, sharpened. They read as ligaments
        // and septa because they wander and branch like them.
        let ridge = |k: u64, fx: f32, fy: f32, p: i32| {
            let n = fbm(s ^ k, x * fx, y * fy + 0.25 * x * fx, 2);
            (1.0 - (2.0 * n - 1.0).abs()).powi(p)
        };

        // Each depth lies in one layer, or two near a boundary: blend weights first and
        // evaluate only the layers that contribute (the noise makes this the costly part of
        // construction).
        let edge = 0.012;
        let w1 = smoothstep(y_skin, y_skin + edge, y);
        let w2 = smoothstep(y_fat - edge, y_fat + edge, y);
        let w3 = smoothstep(y_fascia - edge, y_fascia + edge, y);
        let w4 = smoothstep(y_deep - edge, y_deep + edge, y);
        let e4 = w4;
        let e3 = w3 * (1.0 - w4);
        let e2 = w2 * (1.0 - w3) * (1.0 - w4);
        let e1 = w1 * (1.0 - w2) * (1.0 - w3) * (1.0 - w4);
        let e0 = (1.0 - w1) * (1.0 - w2) * (1.0 - w3) * (1.0 - w4);
        let lob = || fbm(s ^ 1, x * 5.0, y * 9.0, 3);
        let mut db = 0.0;

        if e0 > 0.0 {
            // Skin: bright entry echo and the dermis' lower boundary.
            db += e0 * (6.0 + 6.0 * line(0.004, 0.004) + 9.0 * line(y_skin, 0.006));
        }
        if e1 > 0.0 {
            // Subcutaneous fat: dark lobules separated by bright curved Cooper's ligaments.
            db += e1 * (-9.0 + 8.0 * (lob() - 0.5) + 15.0 * ridge(2, 4.0, 8.0, 14));
        }
        if e2 > 0.0 {
            // Fibroglandular tissue: bright and streaky (stretched laterally) with dark fat
            // islands whose edges are bright. Islands are elongated and only moderately dark
            // so they never pass for a lesion.
            let streak = fbm(s ^ 3, x * 2.2, y * 20.0, 4);
            let isl = fbm(s ^ 4, x * 2.0, y * 10.0, 3);
            let islands = smoothstep(0.57, 0.65, isl);
            let isl_rim = (-((isl - 0.57) / 0.02).powi(2)).exp();
            let gland = 3.0 + 36.0 * (streak - 0.5) - 6.0 * islands
                + 4.0 * isl_rim
                + 9.0 * ridge(5, 3.0, 14.0, 16);
            db += e2 * gland;
        }
        if e3 > 0.0 {
            // Pectoral muscle: medium-low with oblique bright striations.
            let warp = fbm(s ^ 6, x * 2.0, y * 4.0, 2);
            let stria = (TAU * (y * self.stria.0 + x * self.stria.1 + 3.0 * warp)).sin();
            db += e3 * (-4.0 + 9.0 * ((stria + 1.0) * 0.5).powi(8) + 4.0 * (lob() - 0.5));
        }
        if e4 > 0.0 {
            // Chest wall: darker, blotchy.
            db += e4 * (-6.0 + 8.0 * (fbm(s ^ 7, x * 3.0, y * 5.0, 2) - 0.5));
        }

        // Specular interfaces: fascia and chest wall, bright but broken along their length.
        let glint = |k: u64| 0.35 + 0.65 * vnoise(s ^ k, x * 7.0, 0.0);
        db += 14.0 * line(y_fascia, 0.006) * glint(8);
        db += 12.0 * line(y_deep, 0.007) * glint(9);
        db += 7.0 * line(y_fat, 0.005) * glint(10);

        // Large-scale heterogeneity so no two regions look identical.
        db += 4.0 * (fbm(s ^ 11, x * 1.5, y * 3.0, 2) - 0.5);
        // Overall contrast: the numbers above are set relative to each other; this scales
        // them so the anatomy reads through the speckle as strongly as in the BUSI scans.
        1.35 * db
    }
}

/// Net depth dependence after time-gain compensation: a bright near field, a slightly
/// brighter focal zone, and a darker far field where TGC no longer keeps up.
fn attenuation_db(y: f32) -> f32 {
    let focus = 0.45;
    let t = (y - focus) / 0.18;
    2.0 * (-y / 0.05).exp() + 1.5 * (-t * t).exp() - 10.0 * y.powf(1.6)
}

/// One complex Gaussian speckle field: white noise filtered by a separable Gaussian point
/// spread function, scaled to `SPK_Q` per component and quantised to i8. Noise rows are
/// generated as the lateral pass consumes them and output rows are quantised as soon as the
/// axial pass finishes them, so the only large temporary is the laterally filtered field.
fn speckle_field(seed: u64, key: u64, nu: usize, nv: usize, su: f32, sv: f32) -> Vec<[i8; 2]> {
    let kern = |sigma: f32| {
        let r = (3.0 * sigma).ceil().max(1.0) as usize;
        let mut k: Vec<f32> = (0..=2 * r)
            .map(|i| {
                let d = i as f32 - r as f32;
                (-d * d / (2.0 * sigma * sigma)).exp()
            })
            .collect();
        let n = k.iter().sum::<f32>();
        k.iter_mut().for_each(|x| *x /= n);
        k
    };
    let (ku, kv) = (kern(su), kern(sv));
    let (pw, ph) = (nu + ku.len() - 1, nv + kv.len() - 1);
    let mut rng = Rng::new(seed, 0x5BEC_0000 + key);
    // Irwin-Hall (sum of 4 uniforms, variance 1/3) is far cheaper than Box-Muller and the
    // filter sums many samples, so the result is Gaussian for all practical purposes. Its
    // variance after filtering is known exactly, so no pass over the field is needed.
    let var =
        (1.0 / 3.0) * ku.iter().map(|w| w * w).sum::<f32>() * kv.iter().map(|w| w * w).sum::<f32>();
    let scale = SPK_Q / var.sqrt();
    let mut noise = vec![[0f32; 2]; pw];
    let mut tmp = vec![[0f32; 2]; nu * ph];
    for y in 0..ph {
        for z in noise.iter_mut() {
            for c in z.iter_mut() {
                let r = rng.next_u64();
                let s = (r & 0xFFFF) + ((r >> 16) & 0xFFFF) + ((r >> 32) & 0xFFFF) + (r >> 48);
                *c = s as f32 * (1.0 / 65536.0) - 2.0;
            }
        }
        for (x, d) in tmp[y * nu..(y + 1) * nu].iter_mut().enumerate() {
            let (mut a, mut b) = (0.0, 0.0);
            for (k, &wk) in ku.iter().enumerate() {
                a += wk * noise[x + k][0];
                b += wk * noise[x + k][1];
            }
            *d = [a, b];
        }
    }
    let mut out = Vec::with_capacity(nu * nv);
    let mut acc = vec![[0f32; 2]; nu];
    for y in 0..nv {
        acc.fill([0.0; 2]);
        for (k, &wk) in kv.iter().enumerate() {
            for (d, s) in acc.iter_mut().zip(&tmp[(y + k) * nu..(y + k + 1) * nu]) {
                d[0] += wk * s[0];
                d[1] += wk * s[1];
            }
        }
        let q = |c: f32| (c * scale).round().clamp(-127.0, 127.0) as i8;
        out.extend(acc.iter().map(|z| [q(z[0]), q(z[1])]));
    }
    out
}

/// Runs `f(i)` for `i in 0..n` on up to `threads` scoped threads and returns the results in
/// order. Work items are independent, so the output does not depend on the thread count.
fn par_map<T: Send, F: Fn(usize) -> T + Sync>(n: usize, threads: usize, f: F) -> Vec<T> {
    let threads = threads.clamp(1, n.max(1));
    if threads == 1 {
        return (0..n).map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut parts: Vec<(usize, T)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                sc.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            break mine;
                        }
                        mine.push((i, f(i)));
                    }
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("phantom worker panicked"))
            .collect()
    });
    parts.sort_by_key(|p| p.0);
    parts.into_iter().map(|p| p.1).collect()
}

// ---------------------------------------------------------------------------------------
// Lesion

/// Seeded constants of the lesion: size, shape harmonics and motion.
struct LesionParams {
    r0: f32,
    ax: f32,
    ay: f32,
    psi: (f32, f32, f32, f32),
    /// (order, amplitude, phase, phase drift rad/s, amplitude wobble rad/s, wobble phase)
    harm: [(f32, f32, f32, f32, f32, f32); HARMONICS],
    /// Lissajous path in image fractions: (mid, amplitude, rad/s, phase) for u and v.
    pu: (f32, f32, f32, f32),
    pv: (f32, f32, f32, f32),
}

impl LesionParams {
    fn new(seed: u64, cfg: &PhantomConfig, iw: f32, ih: f32, probe: Probe) -> LesionParams {
        let mut rng = Rng::new(seed, 0x1E51);
        let r0 = cfg.lesion_radius * iw * rng.range(0.85, 1.15);
        let ax = rng.range(1.15, 1.5);
        let ay = 1.0;
        let psi = (
            rng.range(-0.25, 0.25),
            0.12,
            TAU / rng.range(9.0, 14.0),
            rng.range(0.0, TAU),
        );
        let mut harm = [(0.0, 0.0, 0.0, 0.0, 0.0, 0.0); HARMONICS];
        // Low orders make the lobulated outline, higher ones the fine irregularity; the total
        // stays below 0.32 so r(theta) is within [0.68, 1.32] * r0.
        let amps = [0.09, 0.07, 0.055, 0.04, 0.03, 0.025];
        for (k, hm) in harm.iter_mut().enumerate() {
            let order = (k + 2) as f32 + if k >= 4 { 2.0 } else { 0.0 };
            let drift = rng.range(0.08, 0.25) * if rng.f32() < 0.5 { -1.0 } else { 1.0 };
            *hm = (
                order,
                amps[k] * rng.range(0.6, 1.0),
                rng.range(0.0, TAU),
                drift,
                rng.range(0.2, 0.5),
                rng.range(0.0, TAU),
            );
        }
        // Keep the whole outline inside the image while it travels.
        let ext = r0 * 1.32 * ax;
        let (umin, umax) = match probe {
            Probe::Linear => (0.04 + ext / iw, 0.96 - ext / iw),
            Probe::Convex => (0.22 + ext / iw, 0.78 - ext / iw),
        };
        let (vmin, vmax) = (0.22f32.max(0.04 + ext / ih), 0.66f32.min(0.92 - ext / ih));
        let span = |lo: f32, hi: f32, want: f32| {
            let mid = 0.5 * (lo + hi);
            (mid, (0.5 * (hi - lo)).clamp(0.0, want))
        };
        let (um, ua) = span(umin.min(0.5), umax.max(0.5), 0.2);
        let (vm, va) = span(vmin.min(0.45), vmax.max(0.45), 0.1);
        let pu = (um, ua, TAU / rng.range(18.0, 26.0), rng.range(0.0, TAU));
        let pv = (vm, va, TAU / rng.range(11.0, 16.0), rng.range(0.0, TAU));
        LesionParams {
            r0,
            ax,
            ay,
            psi,
            harm,
            pu,
            pv,
        }
    }
}

/// The lesion at one instant, in pixel coordinates.
struct LesionState {
    cx: f32,
    cy: f32,
    cos_psi: f32,
    sin_psi: f32,
    inv_ax: f32,
    inv_ay: f32,
    ax: f32,
    ay: f32,
    /// r(theta) at RTAB_N angles over [-pi, pi), plus a wrap-around entry.
    rtab: [f32; RTAB_N + 1],
    rmin: f32,
    rmax: f32,
    /// Bounding box (exclusive end) that contains the border band, clipped to the image.
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
    axis: [(f32, f32); 2],
    axis_len: f32,
}

impl LesionState {
    /// Signed distance to the border in pixels (approximately), positive inside. The mask is
    /// exactly `signed_px > 0`, so image and mask share this one definition. Points more than
    /// `far` pixels from the border may return +-1e6 without the angle lookup; the test in
    /// shape units is conservative because the shape is only ever stretched (ax >= ay = 1).
    #[inline(always)]
    fn signed_px(&self, px: f32, py: f32, far: f32) -> f32 {
        let (dx, dy) = (px - self.cx, py - self.cy);
        let lx = self.cos_psi * dx + self.sin_psi * dy;
        let ly = -self.sin_psi * dx + self.cos_psi * dy;
        let (qx, qy) = (lx * self.inv_ax, ly * self.inv_ay);
        let rho2 = qx * qx + qy * qy;
        if rho2 > (self.rmax + far) * (self.rmax + far) {
            return -1e6;
        }
        if rho2 < (self.rmin - far).max(0.0).powi(2) {
            return 1e6;
        }
        let rho = rho2.sqrt();
        let t = (fast_atan2(qy, qx) + PI) * (RTAB_N as f32 / TAU);
        let i = (t as usize).min(RTAB_N - 1);
        let f = t - i as f32;
        let rb = self.rtab[i] + (self.rtab[i + 1] - self.rtab[i]) * f;
        // Local stretch of the ellipse along the radial direction converts to pixels.
        let stretch = if rho > 0.0 {
            (lx * lx + ly * ly).sqrt() / rho
        } else {
            self.ax
        };
        (rb - rho) * stretch
    }

    fn point(&self, theta: f32, r: f32) -> (f32, f32) {
        let (lx, ly) = (self.ax * r * theta.cos(), self.ay * r * theta.sin());
        (
            self.cx + self.cos_psi * lx - self.sin_psi * ly,
            self.cy + self.sin_psi * lx + self.cos_psi * ly,
        )
    }
}

/// Everything that depends on the frame index, computed once per frame (no heap).
struct FrameState {
    ka: usize,
    kb: usize,
    ca: f32,
    cb: f32,
    lesion: Option<LesionState>,
    /// Posterior shadow: lateral range [s_lo, s_hi), exit depth and strength per beam.
    s_lo: usize,
    s_hi: usize,
    vexit: [f32; MAX_GRID_DIM],
    sdark: [f32; MAX_GRID_DIM],
}

/// Speckle key for time segment `n`: even segments draw from the first half of the keys and
/// odd ones from the second, so neighbours always differ, yet the sequence never repeats.
fn speckle_key(seed: u64, n: u64) -> usize {
    let half = (KEYS / 2) as u64;
    ((n & 1) * half + splitmix(seed ^ 0x5EED_0000 ^ n.wrapping_mul(0x2545_F491)) % half) as usize
}

impl Phantom {
    fn frame_state(&self, index: u64) -> FrameState {
        let t = index as f64 / self.cfg.fps as f64;
        let tk = t / KEY_PERIOD_S;
        let seg = tk.floor();
        let frac = (tk - seg) as f32;
        let seg = seg as u64;
        // Blending with cos/sin weights keeps the sum a unit-variance complex Gaussian, so
        // speckle statistics do not pulse between keys.
        let mut st = FrameState {
            ka: speckle_key(self.cfg.seed, seg),
            kb: speckle_key(self.cfg.seed, seg + 1),
            ca: (frac * FRAC_PI_2).cos(),
            cb: (frac * FRAC_PI_2).sin(),
            lesion: None,
            s_lo: 0,
            s_hi: 0,
            vexit: [f32::INFINITY; MAX_GRID_DIM],
            sdark: [0.0; MAX_GRID_DIM],
        };
        if self.cfg.lesion {
            let l = self.lesion_state(t);
            self.shadow_table(&l, &mut st);
            st.lesion = Some(l);
        }
        st
    }

    fn lesion_state(&self, t: f64) -> LesionState {
        let p = &self.les;
        // Phases in f64 and reduced mod 2pi so that frame 10^9 is as smooth as frame 10.
        let ph = |w: f32, p0: f32| ((w as f64 * t + p0 as f64) % std::f64::consts::TAU) as f32;
        let uf = p.pu.0 + p.pu.1 * ph(p.pu.2, p.pu.3).sin();
        let vf = p.pv.0 + p.pv.1 * ph(p.pv.2, p.pv.3).sin();
        let (cx, cy) = self.uvf_to_px(uf, vf);
        let psi = p.psi.0 + p.psi.1 * ph(p.psi.2, p.psi.3).sin();
        let mut h = [(0f32, 0f32, 0f32); HARMONICS];
        for (o, &(order, amp, p0, drift, ww, wp)) in h.iter_mut().zip(&p.harm) {
            *o = (order, amp * (1.0 + 0.35 * ph(ww, wp).sin()), ph(drift, p0));
        }
        let mut rtab = [0f32; RTAB_N + 1];
        let (mut rmin, mut rmax) = (f32::MAX, 0f32);
        for (j, r) in rtab.iter_mut().take(RTAB_N).enumerate() {
            let th = -PI + TAU * j as f32 / RTAB_N as f32;
            let s: f32 = h.iter().map(|&(m, a, p)| a * (m * th + p).cos()).sum();
            *r = p.r0 * (1.0 + s);
            rmin = rmin.min(*r);
            rmax = rmax.max(*r);
        }
        rtab[RTAB_N] = rtab[0];
        let reach = rmax * p.ax.max(p.ay) + 4.0 * self.edge_px + 2.0;
        let (rx, ry, rw, rh) = self.rect;
        let clip = |v: f32, lo: usize, hi: usize| (v.max(lo as f32) as usize).clamp(lo, hi);
        let mut l = LesionState {
            cx,
            cy,
            cos_psi: psi.cos(),
            sin_psi: psi.sin(),
            inv_ax: 1.0 / p.ax,
            inv_ay: 1.0 / p.ay,
            ax: p.ax,
            ay: p.ay,
            rtab,
            rmin,
            rmax,
            x0: clip((cx - reach).floor(), rx, rx + rw),
            y0: clip((cy - reach).floor(), ry, ry + rh),
            x1: clip((cx + reach).ceil(), rx, rx + rw),
            y1: clip((cy + reach).ceil(), ry, ry + rh),
            axis: [(0.0, 0.0); 2],
            axis_len: 0.0,
        };
        // Long axis: the ellipse's major direction (theta = 0 and pi, table ends/middle).
        let a = l.point(0.0, l.rtab[RTAB_N / 2]);
        let b = l.point(PI, l.rtab[0]);
        l.axis = [b, a];
        l.axis_len = ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
        l
    }

    /// Traces the lesion outline in beam coordinates: per beam, the exit depth and the chord
    /// length through the lesion. A longer path through the attenuating mass casts a deeper
    /// shadow, which also gives the shadow soft lateral edges.
    // Several per-beam arrays are indexed by the same beam, so index loops read best here.
    #[allow(clippy::needless_range_loop)]
    fn shadow_table(&self, l: &LesionState, st: &mut FrameState) {
        let nu = self.nu;
        let mut vmin = [f32::INFINITY; MAX_GRID_DIM];
        let mut prev: Option<(f32, f32)> = None;
        let (mut lo, mut hi) = (usize::MAX, 0usize);
        for j in 0..=RTAB_N {
            let jj = j % RTAB_N;
            let th = -PI + TAU * jj as f32 / RTAB_N as f32;
            let (x, y) = l.point(th, l.rtab[jj]);
            let (u, v) = self.px_to_uv(x, y);
            if let Some((pu, pv)) = prev {
                let (ua, ub) = (pu.min(u), pu.max(u));
                let c0 = ua.ceil().max(0.0) as usize;
                let c1 = (ub.floor().max(-1.0) + 1.0) as usize;
                for c in c0..c1.min(nu) {
                    let f = if ub > ua {
                        (c as f32 - pu) / (u - pu)
                    } else {
                        0.0
                    };
                    let vv = pv + (v - pv) * f.clamp(0.0, 1.0);
                    vmin[c] = vmin[c].min(vv);
                    st.vexit[c] = if st.vexit[c].is_finite() {
                        st.vexit[c].max(vv)
                    } else {
                        vv
                    };
                    lo = lo.min(c);
                    hi = hi.max(c + 1);
                }
            }
            prev = Some((u, v));
        }
        if lo >= hi {
            return;
        }
        let mut maxc = 0f32;
        for c in lo..hi {
            if st.vexit[c].is_finite() {
                maxc = maxc.max(st.vexit[c] - vmin[c]);
            }
        }
        if maxc <= 0.0 {
            return;
        }
        let mut raw = [0f32; MAX_GRID_DIM];
        for c in lo..hi {
            if st.vexit[c].is_finite() {
                raw[c] = ((st.vexit[c] - vmin[c]) / maxc).max(0.0).powf(0.7);
            }
        }
        // Real shadows fade out sideways (the beam has width): blur the profile laterally
        // with two box passes over ~2% of the beams. Beams beside the lesion inherit the exit
        // depth of their nearest shadowed neighbour so the blurred part starts at the right
        // depth.
        let r = (nu / 100).max(1);
        let (lo2, hi2) = (lo.saturating_sub(2 * r), (hi + 2 * r).min(nu));
        for c in lo2..lo {
            st.vexit[c] = st.vexit[lo];
        }
        for c in hi..hi2 {
            st.vexit[c] = st.vexit[hi - 1];
        }
        let mut tmp = [0f32; MAX_GRID_DIM];
        for _ in 0..2 {
            for c in lo2..hi2 {
                let (a, b) = (c.saturating_sub(r).max(lo2), (c + r + 1).min(hi2));
                tmp[c] = raw[a..b].iter().sum::<f32>() / (2 * r + 1) as f32;
            }
            raw[lo2..hi2].copy_from_slice(&tmp[lo2..hi2]);
        }
        for c in lo2..hi2 {
            st.sdark[c] = self.shadow_g * raw[c];
        }
        st.s_lo = lo2;
        st.s_hi = hi2;
    }

    fn uvf_to_px(&self, uf: f32, vf: f32) -> (f32, f32) {
        match &self.geom {
            Geometry::Linear { .. } => (
                self.rect.0 as f32 + uf * self.rect.2 as f32,
                self.rect.1 as f32 + vf * self.rect.3 as f32,
            ),
            Geometry::Convex {
                apex,
                r_in,
                depth_px,
                half,
                ..
            } => {
                let phi = (uf - 0.5) * 2.0 * half;
                let r = r_in + vf * depth_px;
                (apex.0 + r * phi.sin(), apex.1 + r * phi.cos())
            }
        }
    }

    /// Continuous beam-grid coordinates of a pixel position.
    fn px_to_uv(&self, x: f32, y: f32) -> (f32, f32) {
        match &self.geom {
            Geometry::Linear { .. } => (
                (x - self.rect.0 as f32) * self.nu as f32 / self.rect.2 as f32,
                (y - self.rect.1 as f32) * self.nv as f32 / self.rect.3 as f32,
            ),
            Geometry::Convex {
                apex,
                r_in,
                depth_px,
                half,
                ..
            } => {
                let (dx, dy) = (x - apex.0, y - apex.1);
                let r = (dx * dx + dy * dy).sqrt();
                let phi = dx.atan2(dy);
                (
                    (phi + half) / (2.0 * half) * self.nu as f32,
                    (r - r_in) / depth_px * self.nv as f32,
                )
            }
        }
    }

    /// Grid entry of absolute pixel (x, y) inside the image rect, or OUT.
    #[inline(always)]
    fn entry(&self, x: usize, y: usize) -> u32 {
        let (rx, ry, _, _) = self.rect;
        match &self.geom {
            Geometry::Linear { col_u, row_v } => {
                ((row_v[y - ry] as u32) << 16) | col_u[x - rx] as u32
            }
            Geometry::Convex {
                lut,
                lut_w,
                lut_k,
                lut_col,
                ..
            } => lut[((y - ry) / lut_k) * lut_w + lut_col[x - rx] as usize],
        }
    }

    fn write_mask(&self, st: &FrameState, mask: &mut [u8]) {
        mask.fill(0);
        let Some(l) = &st.lesion else { return };
        let w = self.cfg.width;
        for y in l.y0..l.y1 {
            for x in l.x0..l.x1 {
                if self.entry(x, y) != OUT && l.signed_px(x as f32 + 0.5, y as f32 + 0.5, 0.0) > 0.0
                {
                    mask[y * w + x] = 255;
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Rendering

    fn render<const BPP: usize>(&self, st: &FrameState, buf: &mut [u8], stride: usize) {
        let (w, h) = (self.cfg.width, self.cfg.height);
        let (rx, ry, rw, rh) = self.rect;
        for y in 0..h {
            let row = &mut buf[y * stride..y * stride + w * BPP];
            if y < ry || y >= ry + rh {
                fill_black::<BPP>(row);
                continue;
            }
            fill_black::<BPP>(&mut row[..rx * BPP]);
            fill_black::<BPP>(&mut row[(rx + rw) * BPP..]);
            // Split the row so only the lesion's bounding box pays for the border test.
            let (lx0, lx1) = match &st.lesion {
                Some(l) if y >= l.y0 && y < l.y1 => (l.x0, l.x1),
                _ => (rx, rx),
            };
            let yy = y - ry;
            match &self.geom {
                Geometry::Linear { col_u, row_v } => {
                    let v = (row_v[yy] as u32) << 16;
                    let e = |x: usize| v | col_u[x - rx] as u32;
                    self.span::<BPP, false, _>(st, row, y, rx, lx0, &e);
                    self.span::<BPP, true, _>(st, row, y, lx0, lx1, &e);
                    self.span::<BPP, false, _>(st, row, y, lx1, rx + rw, &e);
                }
                Geometry::Convex {
                    lut,
                    lut_w,
                    lut_k,
                    lut_col,
                    ..
                } => {
                    let lrow = &lut[(yy / lut_k) * lut_w..(yy / lut_k + 1) * lut_w];
                    let e = |x: usize| lrow[lut_col[x - rx] as usize];
                    self.span::<BPP, false, _>(st, row, y, rx, lx0, &e);
                    self.span::<BPP, true, _>(st, row, y, lx0, lx1, &e);
                    self.span::<BPP, false, _>(st, row, y, lx1, rx + rw, &e);
                }
            }
        }
    }

    /// The per-pixel kernel: (static tissue - shadow, or lesion) in grey levels, times speckle.
    #[inline(always)]
    fn span<const BPP: usize, const LES: bool, F: Fn(usize) -> u32>(
        &self,
        st: &FrameState,
        row: &mut [u8],
        y: usize,
        x0: usize,
        x1: usize,
        entry: &F,
    ) {
        let (spa, spb) = (&self.speckle[st.ka], &self.speckle[st.kb]);
        let (ca, cb, nu) = (st.ca, st.cb, self.nu);
        let inv_ramp = 1.0 / self.shadow_ramp;
        let inv_2edge = 0.5 / self.edge_px;
        let rim_off = 1.2 * self.edge_px;
        let inv_rim = 1.0 / (1.5 * self.edge_px);
        let far = 3.0 * self.edge_px;
        let py = y as f32 + 0.5;
        for x in x0..x1 {
            let e = entry(x);
            let g = if e == OUT {
                0.0
            } else {
                let (u, v) = ((e & 0xFFFF) as usize, (e >> 16) as usize);
                let i = v * nu + u;
                let (za, zb) = (spa[i], spb[i]);
                let re = ca * za[0] as f32 + cb * zb[0] as f32;
                let im = ca * za[1] as f32 + cb * zb[1] as f32;
                let p = re * re + im * im + self.spk_floor;
                let spk = self.spk_lut[(p.to_bits() >> 16) as usize - self.spk_lut_base];
                let mut b = self.base[i];
                if u >= st.s_lo && u < st.s_hi {
                    let dv = v as f32 - st.vexit[u];
                    if dv > 0.0 {
                        b -= st.sdark[u] * (dv * inv_ramp).min(1.0);
                    }
                }
                if LES {
                    if let Some(l) = &st.lesion {
                        let d = l.signed_px(x as f32 + 0.5, py, far);
                        if d > -far {
                            // Dark interior mostly replaces the tissue (a faint ghost of the
                            // structure remains, like internal echoes), with a thin brighter
                            // capsule just outside the border.
                            let wgt = (0.5 + d * inv_2edge).clamp(0.0, 0.9);
                            b += wgt * (self.lesion_g - b);
                            b += self.rim_g * (1.0 - ((d + rim_off) * inv_rim).abs()).max(0.0);
                        }
                    }
                }
                b.max(0.0) * spk + 0.5
            };
            let gv = g as u8; // saturating cast clips to 0..=255
            let px = &mut row[x * BPP..x * BPP + BPP];
            px[..BPP.min(3)].fill(gv);
            if BPP == 4 {
                px[3] = 255;
            }
        }
    }
}

fn fill_black<const BPP: usize>(row: &mut [u8]) {
    if BPP == 4 {
        for px in row.chunks_exact_mut(4) {
            px.copy_from_slice(&[0, 0, 0, 255]);
        }
    } else {
        row.fill(0);
    }
}

// ---------------------------------------------------------------------------------------
// Overlays: calipers and scanner UI

/// Destination for overlays, any layout.
struct Canvas<'a> {
    buf: &'a mut [u8],
    stride: usize,
    bpp: usize,
    w: usize,
    h: usize,
    rect: (usize, usize, usize, usize),
    /// Boxes of text already placed (fixed capacity: no heap per frame).
    placed: [(i64, i64, i64, i64); 16],
    n_placed: usize,
}

impl Canvas<'_> {
    fn put(&mut self, x: i64, y: i64, g: u8) {
        if x < 0 || y < 0 || x >= self.w as i64 || y >= self.h as i64 {
            return;
        }
        let o = y as usize * self.stride + x as usize * self.bpp;
        self.buf[o..o + self.bpp.min(3)].fill(g);
    }

    fn rect_fill(&mut self, x: i64, y: i64, w: i64, h: i64, g: u8) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.put(xx, yy, g);
            }
        }
    }

    fn in_image(&self, x0: i64, y0: i64, x1: i64, y1: i64) -> bool {
        let (rx, ry, rw, rh) = self.rect;
        let (rx, ry, rw, rh) = (rx as i64, ry as i64, rw as i64, rh as i64);
        x1 > rx && x0 < rx + rw && y1 > ry && y0 < ry + rh
    }

    /// Draws `text` with the 8x8 font at scale `s` if the whole string fits: inside the
    /// frame, off the image (the UI never corrupts the ultrasound picture) and clear of text
    /// drawn before. On small frames lines are dropped rather than truncated or overlapped,
    /// which would show wrong values ("GAIN 6").
    fn text(&mut self, x: i64, y: i64, s: usize, text: &str, g: u8) {
        let s = s as i64;
        let (x1, y1) = (x + Self::text_width(text, s as usize), y + crate::raster::GLYPH as i64 * s);
        let overlaps = self.placed[..self.n_placed]
            .iter()
            .any(|&(a, b, c, d)| x1 + s > a && x < c + s && y1 + s > b && y < d + s);
        if x < 0
            || y < 0
            || x1 > self.w as i64
            || y1 > self.h as i64
            || self.in_image(x, y, x1, y1)
            || overlaps
        {
            return;
        }
        self.reserve((x, y, x1, y1));
        crate::raster::for_each_text_pixel(text, (x, y), s as usize, |px, py| self.put(px, py, g));
    }

    /// Whether a box is clear of everything placed so far.
    fn is_free(&self, b: (i64, i64, i64, i64)) -> bool {
        !self.placed[..self.n_placed]
            .iter()
            .any(|&(a0, b0, c0, d0)| b.2 > a0 && b.0 < c0 && b.3 > b0 && b.1 < d0)
    }

    /// Marks a box as taken so later text keeps clear of it.
    fn reserve(&mut self, b: (i64, i64, i64, i64)) {
        if self.n_placed < self.placed.len() {
            self.placed[self.n_placed] = b;
            self.n_placed += 1;
        }
    }

    fn text_width(text: &str, s: usize) -> i64 {
        crate::raster::text_width(text, s) as i64
    }
}

/// A fixed-capacity string so per-frame text needs no heap.
struct StackStr {
    buf: [u8; 40],
    len: usize,
}

impl StackStr {
    fn new() -> StackStr {
        StackStr {
            buf: [0; 40],
            len: 0,
        }
    }
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl Phantom {
    fn draw_calipers(&self, c: &mut Canvas, l: &LesionState) {
        let s = self.text_scale as i64;
        let [a, b] = l.axis;
        // Dotted line between the marks, like a scanner's distance measurement.
        let step = 4.0 * s as f32;
        let n = (l.axis_len / step) as i64;
        for k in 1..n {
            let f = k as f32 / n as f32;
            let (x, y) = (a.0 + (b.0 - a.0) * f, a.1 + (b.1 - a.1) * f);
            c.rect_fill(x as i64, y as i64, s, s, 225);
        }
        for p in [a, b] {
            let (x, y) = (p.0 as i64, p.1 as i64);
            let arm = 4 * s;
            c.rect_fill(x - arm, y, 2 * arm + 1, s, 240);
            c.rect_fill(x, y - arm, s, 2 * arm + 1, 240);
        }
    }

    fn draw_ui(&self, c: &mut Canvas, index: u64, st: &FrameState) {
        let s = self.text_scale;
        let si = s as i64;
        let (w, h) = (self.cfg.width as i64, self.cfg.height as i64);
        let (rx, ry, rw, rh) = self.rect;
        let (rx, ry, rw, rh) = (rx as i64, ry as i64, rw as i64, rh as i64);
        let m = 4 * si;
        let line = 10 * si;
        let fg = 220u8;

        // Depth scale right of the image: major tick per cm, minor per half cm, and the
        // focal-zone marker.
        let (top, depth_px) = match &self.geom {
            Geometry::Linear { .. } => (ry as f32, rh as f32),
            Geometry::Convex {
                apex,
                r_in,
                depth_px,
                ..
            } => (apex.1 + r_in, *depth_px),
        };
        let x0 = rx + rw + 3 * si;
        if x0 + 8 * si < w {
            let halves = (self.cfg.depth_cm * 2.0).floor() as i64;
            for k in 0..=halves {
                let y = (top + k as f32 * 0.5 * self.px_per_cm) as i64;
                let len = if k % 2 == 0 { 5 * si } else { 2 * si };
                c.rect_fill(x0, y.min(ry + rh - si), len, si, 200);
            }
            let fy = (top + 0.45 * depth_px) as i64;
            for k in 0..3 * si {
                c.rect_fill(
                    x0 + 6 * si + k,
                    fy - (3 * si - k),
                    1,
                    2 * (3 * si - k) + 1,
                    200,
                );
            }
            c.reserve((x0, ry - si, x0 + 9 * si, ry + rh + si));
        }
        // Bottom: measurement and acoustic output, as scanners show them.
        if self.cfg.calipers {
            if let Some(l) = &st.lesion {
                let mut t = StackStr::new();
                let _ = write!(t, "+ D1 {:.2} cm", l.axis_len / self.px_per_cm);
                c.text(m, h - m - 7 * si - line, s, t.as_str(), fg);
            }
        }
        c.text(m, h - m - 7 * si, s, "MI 0.7  TIS 0.1", 180);
        c.text(
            w - m - Canvas::text_width("2D", s),
            h - m - 7 * si,
            s,
            "2D",
            fg,
        );

        c.text(m, m, s, "LIGHTUNET PHANTOM", 235);
        let probe = match self.cfg.probe {
            Probe::Linear => "L12-5  BREAST",
            Probe::Convex => "C5-2  ABDOMEN",
        };
        c.text(m, m + line, s, probe, fg);
        let mut t = StackStr::new();
        let _ = write!(t, "DEPTH {:.1} cm", self.cfg.depth_cm);
        c.text(m, m + 3 * line, s, t.as_str(), fg);
        let mut t = StackStr::new();
        let _ = write!(t, "GAIN {}%", self.cfg.gain);
        c.text(m, m + 4 * line, s, t.as_str(), fg);
        let mut t = StackStr::new();
        let _ = write!(t, "DR {}", DR_DB as u32);
        c.text(m, m + 5 * line, s, t.as_str(), fg);
        let mut t = StackStr::new();
        let _ = write!(t, "{} FPS", self.cfg.fps);
        c.text(m, m + 6 * line, s, t.as_str(), fg);

        // Top right: frame counter and clock.
        let mut t = StackStr::new();
        let _ = write!(t, "FRAME {:06}", index % 1_000_000);
        c.text(
            w - m - Canvas::text_width(t.as_str(), s),
            m,
            s,
            t.as_str(),
            fg,
        );
        let secs = index as f64 / self.cfg.fps as f64;
        let mut t = StackStr::new();
        let _ = write!(t, "{:02}:{:05.2}", (secs / 60.0) as u64 % 100, secs % 60.0);
        c.text(
            w - m - Canvas::text_width(t.as_str(), s),
            m + line,
            s,
            t.as_str(),
            fg,
        );

        // Orientation marker above the image's top-left corner (the probe's marked side).
        let (mx, my) = (rx + 3 * si, ry - 5 * si);
        let r = 2 * si;
        if my - r >= 0 && c.is_free((mx - r, my - r, mx + r + 1, my + r + 1)) {
            for dy in -r..=r {
                for dx in -r..=r {
                    if dx * dx + dy * dy <= r * r + si {
                        c.put(mx + dx, my + dy, 230);
                    }
                }
            }
            c.reserve((mx - r, my - r, mx + r + 1, my + r + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ph(w: usize, h: usize, seed: u64) -> Phantom {
        Phantom::new(PhantomConfig {
            width: w,
            height: h,
            seed,
            ..Default::default()
        })
        .unwrap()
    }

    fn gray(f: &PhantomFrame) -> Vec<u8> {
        f.rgb.chunks_exact(3).map(|p| p[0]).collect()
    }

    fn centroid(f: &PhantomFrame) -> (f64, f64, usize) {
        let (mut sx, mut sy, mut n) = (0.0, 0.0, 0usize);
        for (i, &m) in f.mask.iter().enumerate() {
            if m != 0 {
                sx += (i % f.width) as f64;
                sy += (i / f.width) as f64;
                n += 1;
            }
        }
        (sx / n.max(1) as f64, sy / n.max(1) as f64, n)
    }

    /// Chebyshev dilation by `r` pixels (separable running max).
    fn dilate(m: &[u8], w: usize, h: usize, r: usize) -> Vec<u8> {
        let mut a = vec![0u8; w * h];
        for y in 0..h {
            for x in 0..w {
                let (lo, hi) = (x.saturating_sub(r), (x + r + 1).min(w));
                a[y * w + x] = *m[y * w + lo..y * w + hi].iter().max().unwrap();
            }
        }
        let mut b = vec![0u8; w * h];
        for y in 0..h {
            for x in 0..w {
                let (lo, hi) = (y.saturating_sub(r), (y + r + 1).min(h));
                b[y * w + x] = (lo..hi).map(|yy| a[yy * w + x]).max().unwrap();
            }
        }
        b
    }

    fn correlation(a: &[u8], b: &[u8], w: usize, rect: (usize, usize, usize, usize)) -> f64 {
        let (rx, ry, rw, rh) = rect;
        let (mut sa, mut sb, mut saa, mut sbb, mut sab, mut n) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for y in ry..ry + rh {
            for x in rx..rx + rw {
                let (p, q) = (a[y * w + x] as f64, b[y * w + x] as f64);
                sa += p;
                sb += q;
                saa += p * p;
                sbb += q * q;
                sab += p * q;
                n += 1.0;
            }
        }
        let cov = sab / n - sa / n * sb / n;
        cov / ((saa / n - (sa / n).powi(2)) * (sbb / n - (sb / n).powi(2))).sqrt()
    }

    #[test]
    fn deterministic_and_seeded() {
        let a = ph(320, 240, 7);
        let b = ph(320, 240, 7);
        let c = ph(320, 240, 8);
        for i in [0u64, 13, 250] {
            assert_eq!(
                a.frame(i),
                b.frame(i),
                "frame {i} differs for the same seed"
            );
        }
        assert_ne!(a.frame(5).rgb, c.frame(5).rgb);
        assert_ne!(a.frame(5).mask, c.frame(5).mask);
    }

    #[test]
    fn order_independent() {
        let p = ph(256, 192, 3);
        let forward: Vec<_> = (0..6).map(|i| p.frame(i * 37)).collect();
        for i in (0..6).rev() {
            assert_eq!(p.frame(i * 37), forward[i as usize]);
        }
        // A fresh instance asked for a late frame first gives the same bytes.
        assert_eq!(ph(256, 192, 3).frame(185), forward[5]);
    }

    #[test]
    fn mask_nonempty_inside_image() {
        for probe in [Probe::Linear, Probe::Convex] {
            let p = Phantom::new(PhantomConfig {
                probe,
                seed: 11,
                ..Default::default()
            })
            .unwrap();
            let (rx, ry, rw, rh) = p.image_rect();
            for i in [0u64, 60, 400, 2000] {
                let f = p.frame(i);
                let mut n = 0;
                for (k, &m) in f.mask.iter().enumerate() {
                    assert!(m == 0 || m == 255);
                    if m != 0 {
                        let (x, y) = (k % f.width, k / f.width);
                        assert!(x >= rx && x < rx + rw && y >= ry && y < ry + rh);
                        n += 1;
                    }
                }
                // At least half the nominal area: the lesion stays inside the image.
                let r = 0.09 * rw as f64 * 0.85 * 0.68;
                assert!(
                    n as f64 > 0.5 * PI as f64 * r * r,
                    "{probe:?} frame {i}: mask area {n}"
                );
                let mut m2 = vec![0u8; f.width * f.height];
                p.fill_mask_into(i, &mut m2).unwrap();
                assert_eq!(m2, f.mask, "mask-only path must match");
            }
        }
    }

    #[test]
    fn no_lesion_means_empty_mask() {
        let p = Phantom::new(PhantomConfig {
            lesion: false,
            ..Default::default()
        })
        .unwrap();
        assert!(p.frame(3).mask.iter().all(|&m| m == 0));
        assert!(p.lesion_info(3).is_none());
    }

    #[test]
    fn lesion_darker_than_surroundings() {
        for (seed, probe) in [(0, Probe::Linear), (1, Probe::Linear), (2, Probe::Convex)] {
            let p = Phantom::new(PhantomConfig {
                seed,
                probe,
                ..Default::default()
            })
            .unwrap();
            for i in [0u64, 77] {
                let f = p.frame(i);
                let (w, h) = (f.width, f.height);
                let g = gray(&f);
                let near = dilate(&f.mask, w, h, 3);
                let far = dilate(&f.mask, w, h, 12);
                let (rx, ry, rw, rh) = f.image_rect;
                let (mut si, mut ni, mut so, mut no) = (0.0, 0.0, 0.0, 0.0);
                for y in ry..ry + rh {
                    for x in rx..rx + rw {
                        let k = y * w + x;
                        if f.mask[k] != 0 {
                            si += g[k] as f64;
                            ni += 1.0;
                        } else if far[k] != 0 && near[k] == 0 && p.entry(x, y) != OUT {
                            so += g[k] as f64;
                            no += 1.0;
                        }
                    }
                }
                let (mi, mo) = (si / ni, so / no);
                assert!(
                    mi < 0.6 * mo,
                    "seed {seed} frame {i}: inside {mi:.1} ring {mo:.1}"
                );
            }
        }
    }

    #[test]
    fn lesion_moves_slowly() {
        for seed in [0u64, 5, 9] {
            let p = ph(640, 480, seed);
            let (x0, y0, _) = centroid(&p.frame(0));
            let (x1, y1, _) = centroid(&p.frame(100));
            let moved = ((x1 - x0).powi(2) + (y1 - y0).powi(2)).sqrt();
            assert!(
                moved > 2.0,
                "seed {seed}: lesion moved only {moved:.2} px in 100 frames"
            );
            let mut prev = (x0, y0);
            for i in 1..=20u64 {
                let (x, y, _) = centroid(&p.frame(i * 5));
                let step = ((x - prev.0).powi(2) + (y - prev.1).powi(2)).sqrt() / 5.0;
                assert!(step < 0.02 * 640.0, "seed {seed}: {step:.2} px/frame");
                prev = (x, y);
            }
        }
    }

    #[test]
    fn speckle_decorrelates_slowly() {
        let p = Phantom::new(PhantomConfig {
            lesion: false,
            ..Default::default()
        })
        .unwrap();
        let (w, rect) = (p.width(), p.image_rect());
        let g0 = gray(&p.frame(10));
        let g1 = gray(&p.frame(11));
        let g50 = gray(&p.frame(60));
        let c1 = correlation(&g0, &g1, w, rect);
        let c50 = correlation(&g0, &g50, w, rect);
        assert!(
            c1 > 0.9 && c1 < 0.9999,
            "consecutive-frame correlation {c1}"
        );
        assert!(
            c50 < c1 - 0.1,
            "speckle should change over 2 s: {c50} vs {c1}"
        );
    }

    #[test]
    fn odd_sizes_and_layouts() {
        for probe in [Probe::Linear, Probe::Convex] {
            let p = Phantom::new(PhantomConfig {
                width: 321,
                height: 241,
                probe,
                calipers: true,
                ..Default::default()
            })
            .unwrap();
            let f = p.frame(9);
            assert_eq!(f.rgb.len(), 321 * 241 * 3);
            assert!(f.mask.iter().any(|&m| m != 0));
            // Padded stride and the other layouts agree with frame().
            let stride = 321 * 4 + 12;
            let mut buf = vec![7u8; stride * 241];
            p.fill_into(9, PixelLayout::Rgbx8, &mut buf, stride, None)
                .unwrap();
            let mut gbuf = vec![0u8; 333 * 241];
            p.fill_gray_into(9, &mut gbuf, 333).unwrap();
            let mut rbuf = vec![0u8; 321 * 3 * 241];
            p.fill_rgb_into(9, &mut rbuf, 321 * 3).unwrap();
            assert_eq!(rbuf, f.rgb);
            for y in 0..241 {
                for x in 0..321 {
                    let g = f.rgb[(y * 321 + x) * 3];
                    assert_eq!(
                        &buf[y * stride + x * 4..y * stride + x * 4 + 4],
                        &[g, g, g, 255]
                    );
                    assert_eq!(gbuf[y * 333 + x], g);
                }
                assert!(buf[y * stride + 321 * 4..(y + 1) * stride]
                    .iter()
                    .all(|&b| b == 7));
            }
            assert!(p.fill_rgb_into(9, &mut rbuf, 321 * 3 - 1).is_err());
            assert!(p.fill_rgb_into(9, &mut rbuf[..100], 321 * 3).is_err());
        }
        // The smallest accepted size renders too.
        let f = ph(64, 64, 1).frame(0);
        assert!(f.mask.iter().any(|&m| m != 0));
    }

    #[test]
    fn rejects_bad_configs() {
        let bad = |c: PhantomConfig| Phantom::new(c).is_err();
        let d = PhantomConfig::default;
        assert!(bad(PhantomConfig { width: 63, ..d() }));
        assert!(bad(PhantomConfig { height: 10, ..d() }));
        assert!(bad(PhantomConfig {
            width: 0,
            height: 0,
            ..d()
        }));
        assert!(bad(PhantomConfig { width: 8193, ..d() }));
        assert!(bad(PhantomConfig { fps: 0, ..d() }));
        assert!(bad(PhantomConfig {
            lesion_radius: 0.5,
            ..d()
        }));
        assert!(bad(PhantomConfig {
            depth_cm: f32::NAN,
            ..d()
        }));
        assert!(!bad(PhantomConfig {
            width: 64,
            height: 64,
            ..d()
        }));
    }

    #[test]
    fn ui_stays_outside_image() {
        let mk = |scanner_text, calipers| {
            Phantom::new(PhantomConfig {
                width: 800,
                height: 600,
                scanner_text,
                calipers,
                seed: 4,
                ..Default::default()
            })
            .unwrap()
            .frame(30)
        };
        let (plain, ui, cal) = (mk(false, false), mk(true, false), mk(false, true));
        let (rx, ry, rw, rh) = plain.image_rect;
        let (mut outside_diff, mut inside_diff) = (0, 0);
        for y in 0..600 {
            for x in 0..800 {
                let k = (y * 800 + x) * 3;
                let inside = x >= rx && x < rx + rw && y >= ry && y < ry + rh;
                if plain.rgb[k] != ui.rgb[k] {
                    assert!(!inside, "UI text drew inside the image at ({x},{y})");
                    outside_diff += 1;
                }
                if plain.rgb[k] != cal.rgb[k] {
                    inside_diff += 1;
                }
            }
        }
        assert!(outside_diff > 500, "scanner text missing");
        assert!(inside_diff > 20, "calipers missing");
        assert_eq!(
            plain.mask, cal.mask,
            "calipers must not change the ground truth"
        );
        assert!(
            plain.rgb[..ry * 800 * 3].iter().all(|&b| b == 0),
            "plain UI should be black"
        );
    }

    #[test]
    fn late_frames_are_fine() {
        let p = ph(160, 120, 2);
        let f = p.frame(1 << 40);
        assert!(f.mask.iter().any(|&m| m != 0));
        assert!(p.lesion_info(1 << 40).unwrap().axis_cm > 0.1);
    }

    fn write_pnm(path: &str, magic: &str, w: usize, h: usize, data: &[u8]) {
        let mut out = format!("{magic}\n{w} {h}\n255\n").into_bytes();
        out.extend_from_slice(data);
        std::fs::write(path, out).unwrap();
    }

    /// Writes frames and masks to /tmp for eyeballing:
    /// `rustc --edition 2021 -O --test src/phantom.rs -o /tmp/ph && /tmp/ph --ignored dump`
    #[test]
    #[ignore]
    fn dump_frames() {
        for (name, probe, w, h, cal) in [
            ("linear", Probe::Linear, 640, 480, false),
            ("convex", Probe::Convex, 640, 480, true),
            ("hd", Probe::Linear, 1280, 720, true),
        ] {
            let p = Phantom::new(PhantomConfig {
                width: w,
                height: h,
                probe,
                calipers: cal,
                ..Default::default()
            })
            .unwrap();
            for i in [0u64, 100] {
                let f = p.frame(i);
                write_pnm(&format!("/tmp/phantom_{name}_{i}.ppm"), "P6", w, h, &f.rgb);
                write_pnm(
                    &format!("/tmp/phantom_{name}_{i}_mask.pgm"),
                    "P5",
                    w,
                    h,
                    &f.mask,
                );
            }
        }
    }

    /// Per-frame timing; meaningful only in release:
    /// `rustc --edition 2021 -O --test src/phantom.rs -o /tmp/ph && /tmp/ph --ignored --nocapture bench`
    #[test]
    #[ignore]
    fn bench_frames() {
        for (w, h, probe) in [
            (640, 480, Probe::Linear),
            (1280, 720, Probe::Linear),
            (1920, 1080, Probe::Linear),
            (1280, 720, Probe::Convex),
        ] {
            let t0 = std::time::Instant::now();
            let p = Phantom::new(PhantomConfig {
                width: w,
                height: h,
                probe,
                calipers: true,
                ..Default::default()
            })
            .unwrap();
            let built = t0.elapsed();
            let mut buf = vec![0u8; w * h * 3];
            let mut mask = vec![0u8; w * h];
            let n = 200u64;
            let t1 = std::time::Instant::now();
            for i in 0..n {
                p.fill_rgb_into(i, &mut buf, w * 3).unwrap();
            }
            let per = t1.elapsed().as_secs_f64() * 1e3 / n as f64;
            let t2 = std::time::Instant::now();
            for i in 0..n {
                p.fill_into(i, PixelLayout::Rgb8, &mut buf, w * 3, Some(&mut mask))
                    .unwrap();
            }
            let per_m = t2.elapsed().as_secs_f64() * 1e3 / n as f64;
            println!(
                "{w}x{h} {probe:?}: new {:.1} ms, rgb {per:.2} ms/frame, rgb+mask {per_m:.2} ms/frame",
                built.as_secs_f64() * 1e3
            );
        }
    }
}
