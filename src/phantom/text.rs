//! Overlays drawn over a rendered frame: calipers on the lesion's long axis, and scanner-style
//! text around the image (title, probe, depth, gain, frame counter and clock, depth scale,
//! orientation marker), placed so it never touches the image nor other text.

use std::fmt::Write as _;

use super::config::{PhantomConfig, Probe, DR_DB};
use super::lesion::{FrameState, LesionState};
use super::scan::{Geometry, Scan};

/// Destination for overlays, any layout.
pub(super) struct Canvas<'a> {
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

impl<'a> Canvas<'a> {
    /// A canvas over a frame of `w` x `h` pixels of `bpp` bytes, `stride` bytes per row, whose
    /// image region is `rect`.
    pub(super) fn new(
        buf: &'a mut [u8],
        stride: usize,
        bpp: usize,
        w: usize,
        h: usize,
        rect: (usize, usize, usize, usize),
    ) -> Canvas<'a> {
        Canvas {
            buf,
            stride,
            bpp,
            w,
            h,
            rect,
            placed: [(0, 0, 0, 0); 16],
            n_placed: 0,
        }
    }

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
        let (x1, y1) = (
            x + Self::text_width(text, s as usize),
            y + crate::raster::GLYPH as i64 * s,
        );
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

/// What the overlays need to know about a phantom.
pub(super) struct Overlay<'a> {
    pub(super) cfg: &'a PhantomConfig,
    pub(super) scan: &'a Scan,
    pub(super) px_per_cm: f32,
    pub(super) text_scale: usize,
}

impl Overlay<'_> {
    pub(super) fn draw_calipers(&self, c: &mut Canvas, l: &LesionState) {
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

    pub(super) fn draw_ui(&self, c: &mut Canvas, index: u64, st: &FrameState) {
        let s = self.text_scale;
        let si = s as i64;
        let (w, h) = (self.cfg.width as i64, self.cfg.height as i64);
        let (rx, ry, rw, rh) = self.scan.rect;
        let (rx, ry, rw, rh) = (rx as i64, ry as i64, rw as i64, rh as i64);
        let m = 4 * si;
        let line = 10 * si;
        let fg = 220u8;

        // Depth scale right of the image: major tick per cm, minor per half cm, and the
        // focal-zone marker.
        let (top, depth_px) = match &self.scan.geom {
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
