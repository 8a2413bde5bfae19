//! The lesion: its seeded size, lobulated outline and Lissajous path ([`LesionParams`]), its
//! state at one instant (border as a signed distance, bounding box, long axis), its posterior
//! acoustic shadow per beam, and the per-frame state a frame is rendered from.

use std::f32::consts::{FRAC_PI_2, PI, TAU};

use super::config::{PhantomConfig, Probe};
use super::noise::Rng;
use super::scan::{Scan, MAX_GRID_DIM};

/// Angular samples of the lesion radius function r(theta).
const RTAB_N: usize = 512;
/// Harmonics of the lesion border.
const HARMONICS: usize = 6;

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

/// Seeded constants of the lesion: size, shape harmonics and motion.
pub(super) struct LesionParams {
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
    pub(super) fn new(
        seed: u64,
        cfg: &PhantomConfig,
        iw: f32,
        ih: f32,
        probe: Probe,
    ) -> LesionParams {
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

    /// The lesion at time `t` (seconds) in the image of `scan`; `edge_px` widens its bounding
    /// box to hold the soft border.
    pub(super) fn state(&self, t: f64, scan: &Scan, edge_px: f32) -> LesionState {
        let p = self;
        // Phases in f64 and reduced mod 2pi so that frame 10^9 is as smooth as frame 10.
        let ph = |w: f32, p0: f32| ((w as f64 * t + p0 as f64) % std::f64::consts::TAU) as f32;
        let uf = p.pu.0 + p.pu.1 * ph(p.pu.2, p.pu.3).sin();
        let vf = p.pv.0 + p.pv.1 * ph(p.pv.2, p.pv.3).sin();
        let (cx, cy) = scan.uvf_to_px(uf, vf);
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
        let reach = rmax * p.ax.max(p.ay) + 4.0 * edge_px + 2.0;
        let (rx, ry, rw, rh) = scan.rect;
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
}

/// The lesion at one instant, in pixel coordinates.
pub(super) struct LesionState {
    pub(super) cx: f32,
    pub(super) cy: f32,
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
    pub(super) x0: usize,
    pub(super) y0: usize,
    pub(super) x1: usize,
    pub(super) y1: usize,
    pub(super) axis: [(f32, f32); 2],
    pub(super) axis_len: f32,
}

impl LesionState {
    /// Signed distance to the border in pixels (approximately), positive inside. The mask is
    /// exactly `signed_px > 0`, so image and mask share this one definition. Points more than
    /// `far` pixels from the border may return +-1e6 without the angle lookup; the test in
    /// shape units is conservative because the shape is only ever stretched (ax >= ay = 1).
    #[inline(always)]
    pub(super) fn signed_px(&self, px: f32, py: f32, far: f32) -> f32 {
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

/// Everything that depends on the frame index, computed once per frame (no heap): the two
/// speckle keys `ka`, `kb` blended with weights `ca`, `cb`, the lesion and its shadow.
pub(super) struct FrameState {
    pub(super) ka: usize,
    pub(super) kb: usize,
    pub(super) ca: f32,
    pub(super) cb: f32,
    pub(super) lesion: Option<LesionState>,
    /// Posterior shadow: lateral range [s_lo, s_hi), exit depth and strength per beam.
    pub(super) s_lo: usize,
    pub(super) s_hi: usize,
    pub(super) vexit: [f32; MAX_GRID_DIM],
    pub(super) sdark: [f32; MAX_GRID_DIM],
}

/// Traces the lesion outline in beam coordinates: per beam, the exit depth and the chord
/// length through the lesion. A longer path through the attenuating mass casts a deeper
/// shadow, which also gives the shadow soft lateral edges.
// Several per-beam arrays are indexed by the same beam, so index loops read best here.
#[allow(clippy::needless_range_loop)]
pub(super) fn shadow_table(l: &LesionState, scan: &Scan, shadow_g: f32, st: &mut FrameState) {
    let nu = scan.nu;
    let mut vmin = [f32::INFINITY; MAX_GRID_DIM];
    let mut prev: Option<(f32, f32)> = None;
    let (mut lo, mut hi) = (usize::MAX, 0usize);
    for j in 0..=RTAB_N {
        let jj = j % RTAB_N;
        let th = -PI + TAU * jj as f32 / RTAB_N as f32;
        let (x, y) = l.point(th, l.rtab[jj]);
        let (u, v) = scan.px_to_uv(x, y);
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
        st.sdark[c] = shadow_g * raw[c];
    }
    st.s_lo = lo2;
    st.s_hi = hi2;
}
