//! Speckle: complex Gaussian keyframes (white noise through a separable point spread
//! function, quantised to i8) built once, the table that turns a blended speckle intensity into
//! a display factor, and the schedule of keys over time. A frame only blends two keys.

use super::noise::{splitmix, Rng};
use super::par::par_map;
use super::scan::Scan;

/// Speckle keyframes. Consecutive time keys come from different halves of the set, so two
/// blended keys are always independent and the blend keeps Rayleigh statistics.
const KEYS: usize = 8;
/// Seconds per speckle key: the field fully decorrelates in this time, like tissue that moves
/// a little under a hand-held probe.
pub(super) const KEY_PERIOD_S: f64 = 1.0;
/// Quantisation scale of the speckle components (std of each component in i8 units).
const SPK_Q: f32 = 36.0;
/// Speckle noise floor relative to mean speckle intensity.
const SPK_FLOOR: f32 = 0.02;
/// Share of the speckle factor in the grey level; the rest is flat. Stands in for spatial and
/// frequency compounding, which real scanners use to lower speckle contrast (and which fills
/// the nulls) without making the grain less right-skewed.
const SPK_MIX: f32 = 0.5;
/// Power applied to speckle intensity (0.5 would be the envelope amplitude; with
/// SPK_MIX it keeps the grain right-skewed while the tissue layers stay legible).
const SPK_GAMMA: f32 = 0.4;

/// The speckle of a phantom, built once (`Phantom` keeps these as `speckle`, `spk_lut`,
/// `spk_lut_base` and `spk_floor`, whose comments say why the table exists).
pub(super) struct Speckle {
    /// Complex speckle keyframes (quantised Gaussian components), per grid sample.
    pub(super) keys: Vec<Vec<[i8; 2]>>,
    /// Display factor by `bits >> 16` of the speckle intensity plus floor, from `lut_base` on.
    pub(super) lut: Vec<f32>,
    pub(super) lut_base: usize,
    /// Small floor (system noise) added to speckle intensity.
    pub(super) floor: f32,
}

impl Speckle {
    /// Keyframes for the grid of `scan`, spread over up to `threads` threads, and their table.
    pub(super) fn new(seed: u64, scan: &Scan, threads: usize) -> Speckle {
        let keys = keyframes(seed, scan, threads);
        let spk_floor = SPK_FLOOR * 2.0 * SPK_Q * SPK_Q;
        let (lut, lut_base) = display_lut(&keys[0], spk_floor);
        Speckle {
            keys,
            lut,
            lut_base,
            floor: spk_floor,
        }
    }
}

/// The [`KEYS`] speckle keyframes.
fn keyframes(seed: u64, scan: &Scan, threads: usize) -> Vec<Vec<[i8; 2]>> {
    let (nu, nv) = (scan.nu, scan.nv);
    // Speckle: grain size tied to the depth resolution so the texture looks the same at
    // any frame size; laterally elongated like a real point spread function.
    let sv = (0.003 * nv as f32).max(0.6);
    // In a fan the lateral samples are beam angles, so at shallow depth many of them share
    // a pixel; widening the angular grain keeps shallow speckle like the linear probe's and
    // lets it coarsen with depth as a real sector's does.
    let su = (0.0068 * nv as f32 * scan.fan_grain).max(1.0);
    // At most 4 keys at a time bounds the temporaries (~8 bytes per grid sample each).
    par_map(KEYS, threads.min(4), |k| {
        speckle_field(seed, k as u64, nu, nv, su, sv)
    })
}

/// The speckle display factor table and its offset (see `Phantom::spk_lut`), normalised on one
/// keyframe.
fn display_lut(speckle: &[[i8; 2]], spk_floor: f32) -> (Vec<f32>, usize) {
    let spk_lut_base = (spk_floor.to_bits() >> 16) as usize;
    // Blended components stay within 127 * (cos + sin) <= 127 * sqrt(2) each.
    let p_max = 2.0 * (127.0 * 2f32.sqrt()).powi(2) + spk_floor;
    let top = (p_max.to_bits() >> 16) as usize + 1;
    let mut spk_lut: Vec<f32> = (spk_lut_base..=top)
        .map(|k| f32::from_bits(((k as u32) << 16) | 0x8000).powf(SPK_GAMMA))
        .collect();
    // Normalise to mean 1 over a keyframe (the quantised field is not exactly Gaussian,
    // so measure rather than use Gamma(1 + gamma)).
    let mean_raw = speckle
        .iter()
        .map(|z| {
            let p = z[0] as f32 * z[0] as f32 + z[1] as f32 * z[1] as f32 + spk_floor;
            spk_lut[(p.to_bits() >> 16) as usize - spk_lut_base] as f64
        })
        .sum::<f64>()
        / speckle.len() as f64;
    for t in spk_lut.iter_mut() {
        *t = (1.0 - SPK_MIX) + SPK_MIX * *t / mean_raw as f32;
    }
    (spk_lut, spk_lut_base)
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

/// Speckle key for time segment `n`: even segments draw from the first half of the keys and
/// odd ones from the second, so neighbours always differ, yet the sequence never repeats.
pub(super) fn speckle_key(seed: u64, n: u64) -> usize {
    let half = (KEYS / 2) as u64;
    ((n & 1) * half + splitmix(seed ^ 0x5EED_0000 ^ n.wrapping_mul(0x2545_F491)) % half) as usize
}
