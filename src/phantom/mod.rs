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
//!
//! The parts, leaves first: `config` (what to render), `noise` (the seeded generator and value
//! noise), `par` (construction's threads), `scan` (image region, beam grid, scan conversion),
//! `anatomy` (tissue echogenicity), `speckle` (keyframes and display table), `lesion` (shape,
//! motion, shadow, per-frame state) and `text` (calipers and scanner text). This file puts them
//! together: construction in steps, and the per-frame rendering.

mod anatomy;
mod config;
mod lesion;
mod noise;
mod par;
mod scan;
mod speckle;
mod text;

use std::f32::consts::FRAC_PI_2;

pub use config::{PhantomConfig, PixelLayout, Probe, MAX_FPS, MAX_SIDE, MIN_SIDE};

use anatomy::tissue_map;
use config::DR_DB;
use lesion::{shadow_table, FrameState, LesionParams};
use scan::{Geometry, Scan, MAX_GRID_DIM, OUT};
use speckle::{speckle_key, Speckle, KEY_PERIOD_S};
use text::{Canvas, Overlay};

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
    /// Image region, beam grid and scan conversion.
    scan: Scan,
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

impl Phantom {
    /// Validates `cfg` and precomputes geometry, tissue and speckle keyframes: about 0.1 s at
    /// 640x480 and 0.3 s at 1280x720 on one core in release, spread over up to 8 threads.
    pub fn new(cfg: PhantomConfig) -> Result<Phantom, String> {
        cfg.validate()?;
        let scan = Scan::new(cfg.width, cfg.height, cfg.probe);

        // Log compression: DR_DB dB of echo intensity spread over 0..255.
        let gain_k = 255.0 / DR_DB;
        let black_db = -30.0 - (cfg.gain as f32 - 60.0) * 0.3;
        let to_g = |db: f32| (db - black_db) * gain_k;

        // Construction is the only heavy part (a few hundred ms single-threaded at 720p), so
        // it uses the machine's cores; frames themselves stay single-threaded.
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8);
        let base = tissue_map(cfg.seed, &scan, to_g, threads);
        let Speckle {
            keys: speckle,
            lut: spk_lut,
            lut_base: spk_lut_base,
            floor: spk_floor,
        } = Speckle::new(cfg.seed, &scan, threads);

        let rect = scan.rect;
        let les = LesionParams::new(cfg.seed, &cfg, rect.2 as f32, rect.3 as f32, cfg.probe);
        let scale_px = (rect.3 as f32 / 400.0).max(0.5);
        let text_scale = ((cfg.height + 200) / 450).max(1);
        Ok(Phantom {
            base,
            speckle,
            spk_lut,
            spk_lut_base,
            spk_floor,
            lesion_g: to_g(-23.0),
            rim_g: 2.5 * gain_k,
            shadow_g: 8.0 * gain_k,
            shadow_ramp: 0.05 * scan.nv as f32,
            edge_px: 1.8 * scale_px,
            les,
            px_per_cm: scan.depth_px / cfg.depth_cm,
            text_scale,
            scan,
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
        self.scan.rect
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
            image_rect: self.scan.rect,
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
        let mut canvas = Canvas::new(buf, stride, bpp, w, h, self.scan.rect);
        let overlay = Overlay {
            cfg: &self.cfg,
            scan: &self.scan,
            px_per_cm: self.px_per_cm,
            text_scale: self.text_scale,
        };
        if self.cfg.calipers {
            if let Some(l) = &st.lesion {
                overlay.draw_calipers(&mut canvas, l);
            }
        }
        if self.cfg.scanner_text {
            overlay.draw_ui(&mut canvas, index, &st);
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
// Per frame

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
            let l = self.les.state(t, &self.scan, self.edge_px);
            shadow_table(&l, &self.scan, self.shadow_g, &mut st);
            st.lesion = Some(l);
        }
        st
    }

    fn write_mask(&self, st: &FrameState, mask: &mut [u8]) {
        mask.fill(0);
        let Some(l) = &st.lesion else { return };
        let w = self.cfg.width;
        for y in l.y0..l.y1 {
            for x in l.x0..l.x1 {
                if self.scan.entry(x, y) != OUT
                    && l.signed_px(x as f32 + 0.5, y as f32 + 0.5, 0.0) > 0.0
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
        let (rx, ry, rw, rh) = self.scan.rect;
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
            match &self.scan.geom {
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
        let (ca, cb, nu) = (st.ca, st.cb, self.scan.nu);
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

#[cfg(test)]
mod tests {
    use std::f32::consts::PI;

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
                        } else if far[k] != 0 && near[k] == 0 && p.scan.entry(x, y) != OUT {
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
    /// `cargo test --release --lib phantom::tests::dump_frames -- --ignored`
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
    /// `cargo test --release --lib phantom::tests::bench_frames -- --ignored --nocapture`
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
