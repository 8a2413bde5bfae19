//! Scan conversion: where the image region sits on the screen for each probe, the beam grid
//! (lateral samples by depth samples) behind it, and the maps between frame pixels and grid
//! samples (per-column and per-row tables for a linear probe, a lookup table over the fan for a
//! convex one).

use super::config::Probe;

/// Sentinel scan-conversion entry: pixel outside the fan.
pub(super) const OUT: u32 = u32::MAX;
/// Upper bounds for the beam grid; larger frames sample the grid with nearest neighbour so
/// that memory stays bounded at 8K.
pub(super) const MAX_GRID_DIM: usize = 2048;
const MAX_GRID_SAMPLES: usize = 2_500_000;
/// Upper bound for the convex scan-conversion table (entries).
const MAX_LUT: usize = 4_000_000;

/// Frame pixels <-> beam grid (u lateral, v depth).
pub(super) enum Geometry {
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

/// The image region and its beam grid.
pub(super) struct Scan {
    /// `(x, y, w, h)` of the image inside the frame (the fan's bounding box for a convex probe).
    pub(super) rect: (usize, usize, usize, usize),
    pub(super) geom: Geometry,
    /// Beam grid size: `nu` lateral samples (columns or beam angles) by `nv` depth samples.
    pub(super) nu: usize,
    pub(super) nv: usize,
    /// Imaged depth in pixels (what `depth_cm` spans).
    pub(super) depth_px: f32,
    /// Width of the image in depth units (for a fan, at mid-depth): the tissue model's lateral
    /// scale, so anatomy keeps its proportions.
    pub(super) aspect: f32,
    /// Beam spacing at the deepest row over that at 30% depth (1 for a linear probe): scales the
    /// lateral speckle grain of a fan.
    pub(super) fan_grain: f32,
}

impl Scan {
    /// The layout of a `w` x `h` screen for `probe`.
    pub(super) fn new(w: usize, h: usize, probe: Probe) -> Scan {
        let (top, bottom) = margins(h);
        let avail_h = (h - top - bottom) as f32;
        match probe {
            Probe::Linear => Scan::linear(w, top, avail_h),
            Probe::Convex => Scan::convex(w, h, top, avail_h),
        }
    }

    fn linear(w: usize, top: usize, avail_h: f32) -> Scan {
        // Slightly wider than tall at 4:3, like the BUSI crops; never wider than 62%
        // of the screen so the side panels keep room for text.
        let ih = avail_h.round() as usize;
        let iw = ((w as f32 * 0.62).min(avail_h * 1.3)).round() as usize;
        let rect = ((w - iw) / 2, top, iw, ih);
        let s = grid_scale(iw as f32, ih as f32);
        let nu = ((iw as f32 / s).ceil() as usize).max(1);
        let nv = ((ih as f32 / s).ceil() as usize).max(1);
        let col_u = (0..iw)
            .map(|x| (((x as f32 + 0.5) * nu as f32 / iw as f32) as usize).min(nu - 1) as u16)
            .collect();
        let row_v = (0..ih)
            .map(|y| (((y as f32 + 0.5) * nv as f32 / ih as f32) as usize).min(nv - 1) as u16)
            .collect();
        Scan {
            rect,
            geom: Geometry::Linear { col_u, row_v },
            nu,
            nv,
            depth_px: ih as f32,
            aspect: iw as f32 / ih as f32,
            fan_grain: 1.0,
        }
    }

    fn convex(w: usize, h: usize, top: usize, avail_h: f32) -> Scan {
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
                    lut[cy * lut_w + cx] = ((v.min(nv - 1) as u32) << 16) | u.min(nu - 1) as u32;
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
        Scan {
            rect,
            geom,
            nu,
            nv,
            depth_px: d,
            aspect,
            fan_grain: (r_in + d) / (r_in + 0.3 * d),
        }
    }

    /// Pixel position of a point given as fractions of the grid (lateral `uf`, depth `vf`).
    pub(super) fn uvf_to_px(&self, uf: f32, vf: f32) -> (f32, f32) {
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
    pub(super) fn px_to_uv(&self, x: f32, y: f32) -> (f32, f32) {
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
    pub(super) fn entry(&self, x: usize, y: usize) -> u32 {
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
