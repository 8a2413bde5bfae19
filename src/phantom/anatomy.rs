//! Tissue: a breast-like layered anatomy in dB (skin, fat with Cooper's ligaments, glandular
//! tissue, fascia, muscle, chest wall), the depth dependence left after time-gain compensation,
//! and the static echogenicity map over the beam grid that `Phantom::new` builds from them once.

use std::f32::consts::TAU;

use super::noise::{fbm, smoothstep, splitmix, vnoise, Rng};
use super::par::par_map;
use super::scan::{Geometry, Scan};

/// Static echogenicity including depth attenuation, in output grey levels (`to_g` is the log
/// compression of dB), per beam-grid sample; edge beams of a convex probe are weaker.
pub(super) fn tissue_map(
    seed: u64,
    scan: &Scan,
    to_g: impl Fn(f32) -> f32 + Sync,
    threads: usize,
) -> Vec<f32> {
    let (nu, nv, aspect) = (scan.nu, scan.nv, scan.aspect);
    // Tissue: a static echogenicity map in dB over the beam grid.
    let anat = Anatomy::new(seed);
    let convex = matches!(scan.geom, Geometry::Convex { .. });
    let chunk = 32;
    par_map(nv.div_ceil(chunk), threads, |c| {
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
    .concat()
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
