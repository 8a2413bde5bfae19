//! Raster drawing shared by the PNG plots (`bench pipeline --plot`, the training curves), the
//! on-screen text of `process`/`live` and the phantom's scanner text: text in the public-domain
//! 8x8 bitmap font of `font8x8` (no font file or system font needed; it renders the same
//! everywhere), Bresenham lines, filled boxes, and plot panels with round-numbered ticks.

/// Side of a glyph cell in pixels at scale 1.
pub const GLYPH: usize = 8;

/// Width in pixels of `text` at `scale`.
pub fn text_width(text: &str, scale: usize) -> usize {
    text.chars().count() * GLYPH * scale
}

/// Calls `put` for every set pixel of `text` with its top-left corner at `(x, y)`; each glyph
/// pixel is a `scale x scale` block. Characters outside ASCII are left blank.
pub fn for_each_text_pixel(text: &str, (x, y): (i64, i64), scale: usize, mut put: impl FnMut(i64, i64)) {
    let s = scale as i64;
    for (k, ch) in text.chars().enumerate() {
        let glyph = font8x8::legacy::BASIC_LEGACY.get(ch as usize).copied().unwrap_or([0; 8]);
        let gx = x + (k * GLYPH) as i64 * s;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..GLYPH as i64 {
                if bits >> col & 1 == 1 {
                    for dy in 0..s {
                        for dx in 0..s {
                            put(gx + col * s + dx, y + row as i64 * s + dy);
                        }
                    }
                }
            }
        }
    }
}

/// Calls `put` for the points of the line from `a` to `b` (Bresenham), both ends included.
pub fn for_each_line_point((x0, y0): (i64, i64), (x1, y1): (i64, i64), mut put: impl FnMut(i64, i64)) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        put(x, y);
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// Draws `text` on a packed 3-byte-per-pixel image of `w x h` with `stride` bytes per row (the
/// colours are in the buffer's own channel order), optionally on a filled box one glyph pixel
/// larger all round; clipped to the image.
#[allow(clippy::too_many_arguments)]
pub fn draw_text(
    data: &mut [u8],
    size: (usize, usize, usize),
    at: (usize, usize),
    scale: usize,
    text: &str,
    color: [u8; 3],
    background: Option<[u8; 3]>,
) {
    draw_text_px(data, size, 3, at, scale, text, color, background)
}

/// [`draw_text`] on pixels of `bytes_per_pixel` bytes (3 or 4): the colour goes into each
/// pixel's first three bytes, a fourth is left as it is.
#[allow(clippy::too_many_arguments)]
pub fn draw_text_px(
    data: &mut [u8],
    (w, h, stride): (usize, usize, usize),
    bytes_per_pixel: usize,
    (x, y): (usize, usize),
    scale: usize,
    text: &str,
    color: [u8; 3],
    background: Option<[u8; 3]>,
) {
    let mut put = |px: i64, py: i64, c: [u8; 3]| {
        if px >= 0 && py >= 0 && (px as usize) < w && (py as usize) < h {
            let i = py as usize * stride + px as usize * bytes_per_pixel;
            if let Some(p) = data.get_mut(i..i + 3) {
                p.copy_from_slice(&c);
            }
        }
    };
    let (x, y) = (x as i64, y as i64);
    if let Some(bg) = background {
        let (bw, bh) = ((text_width(text, scale) + 2 * scale) as i64, ((GLYPH + 2) * scale) as i64);
        for py in y..y + bh {
            for px in x..x + bw {
                put(px, py, bg);
            }
        }
    }
    let s = scale as i64;
    for_each_text_pixel(text, (x + s, y + s), scale, |px, py| put(px, py, color));
}

/// A white RGB image to draw plots on.
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    px: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize) -> Canvas {
        Canvas { width, height, px: vec![255; width * height * 3] }
    }

    pub fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    /// A line `thickness` pixels wide (stacked vertically, which reads well on curves).
    pub fn line(&mut self, a: (i64, i64), b: (i64, i64), c: [u8; 3], thickness: i64) {
        for_each_line_point(a, b, |x, y| {
            for t in 0..thickness.max(1) {
                self.put(x, y + t, c);
            }
        });
    }

    /// The box `[x0, x1) x [y0, y1)`, clipped.
    pub fn rect(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3]) {
        for y in y0.max(0)..y1.min(self.height as i64) {
            for x in x0.max(0)..x1.min(self.width as i64) {
                self.put(x, y, c);
            }
        }
    }

    pub fn text(&mut self, (x, y): (i64, i64), scale: usize, text: &str, c: [u8; 3]) {
        for_each_text_pixel(text, (x, y), scale, |px, py| self.put(px, py, c));
    }

    /// The picture as PNG bytes.
    pub fn png(self) -> Result<Vec<u8>, String> {
        let img = image::RgbImage::from_raw(self.width as u32, self.height as u32, self.px).ok_or("plot buffer size")?;
        let mut bytes = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).map_err(|e| e.to_string())?;
        Ok(bytes)
    }
}

/// A round step (1, 2 or 5 times a power of ten) giving about `n` ticks over `span`.
pub fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(1e-12);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw * (1.0 - 1e-9)).unwrap_or(10.0 * mag)
}

/// A plot area: its pixel box on the canvas and the value ranges it shows.
#[derive(Clone, Copy, Debug)]
pub struct Panel {
    pub left: i64,
    pub right: i64,
    pub top: i64,
    pub bottom: i64,
    pub x: (f64, f64),
    pub y: (f64, f64),
    /// Ticks on x at whole numbers only (epochs).
    pub whole_x: bool,
}

const GRID: [u8; 3] = [220, 220, 220];
pub const INK: [u8; 3] = [30, 30, 30];

impl Panel {
    /// Pixel position of a value pair (y clamped to the panel).
    pub fn map(&self, x: f64, y: f64) -> (i64, i64) {
        let fx = (x - self.x.0) / (self.x.1 - self.x.0).max(1e-12);
        let fy = ((y - self.y.0) / (self.y.1 - self.y.0).max(1e-12)).clamp(0.0, 1.0);
        (
            self.left + (fx * (self.right - self.left) as f64).round() as i64,
            self.bottom - (fy * (self.bottom - self.top) as f64).round() as i64,
        )
    }

    /// Grid lines with labels at round values, the two axis lines and their titles (`scale`:
    /// text size).
    pub fn axes(&self, c: &mut Canvas, xlabel: &str, ylabel: &str, scale: usize) {
        let gh = (GLYPH * scale) as i64;
        for (lo, hi, n, vertical) in [(self.y.0, self.y.1, 5.0, false), (self.x.0, self.x.1, 8.0, true)] {
            let step = if vertical && self.whole_x { nice_step(hi - lo, n).max(1.0) } else { nice_step(hi - lo, n) };
            let decimals = (-step.log10().floor()).max(0.0) as usize;
            let mut v = (lo / step).ceil() * step;
            while v <= hi + step * 1e-9 {
                // No "-0.00" for a tick that is zero but for rounding.
                let shown = if v.abs() < step * 1e-6 { 0.0 } else { v };
                let label = format!("{shown:.decimals$}");
                let w = text_width(&label, scale) as i64;
                if vertical {
                    let (x, _) = self.map(v, self.y.0);
                    c.line((x, self.top), (x, self.bottom), GRID, 1);
                    c.text((x - w / 2, self.bottom + gh / 2), scale, &label, INK);
                } else {
                    let (_, y) = self.map(self.x.0, v);
                    c.line((self.left, y), (self.right, y), GRID, 1);
                    c.text((self.left - w - gh / 2, y - gh / 2), scale, &label, INK);
                }
                v += step;
            }
        }
        c.line((self.left, self.bottom), (self.right, self.bottom), INK, 1);
        c.line((self.left, self.top), (self.left, self.bottom), INK, 1);
        let xw = text_width(xlabel, scale) as i64;
        c.text(((self.left + self.right - xw) / 2, self.bottom + 2 * gh), scale, xlabel, INK);
        c.text((self.left, self.top - 2 * gh), scale, ylabel, INK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_lines_land_where_asked() {
        let mut n = 0;
        let mut within = true;
        for_each_text_pixel("Hi", (10, 20), 2, |x, y| {
            n += 1;
            within &= (10..10 + 32).contains(&x) && (20..20 + 16).contains(&y);
        });
        assert!(n > 0 && within);
        for_each_text_pixel("\u{e9}", (0, 0), 1, |_, _| panic!("non-ASCII is blank"));
        let mut pts = Vec::new();
        for_each_line_point((0, 0), (3, 1), |x, y| pts.push((x, y)));
        assert_eq!(pts.first(), Some(&(0, 0)));
        assert_eq!(pts.last(), Some(&(3, 1)));
        assert_eq!(pts.len(), 4);
    }

    #[test]
    fn draw_text_clips_and_keeps_channel_order() {
        let (w, h, stride) = (20, 12, 64);
        let mut data = vec![7u8; stride * h];
        draw_text(&mut data, (w, h, stride), (15, 5), 1, "MM", [1, 2, 3], Some([9, 9, 9]));
        // Nothing beyond the row's last pixel (the stride padding) was touched.
        assert!((0..h).all(|y| data[y * stride + w * 3..(y + 1) * stride].iter().all(|&v| v == 7)));
        assert!(data.chunks_exact(3).any(|p| p == [1, 2, 3]));
        assert!(data.chunks_exact(3).any(|p| p == [9, 9, 9]));
    }

    #[test]
    fn nice_steps_and_panel_mapping() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(1.0, 4.0), 0.5);
        assert!((nice_step(0.03, 5.0) - 0.01).abs() < 1e-12);
        let p = Panel { left: 10, right: 110, top: 0, bottom: 50, x: (0.0, 10.0), y: (0.0, 1.0), whole_x: false };
        assert_eq!(p.map(0.0, 0.0), (10, 50));
        assert_eq!(p.map(10.0, 1.0), (110, 0));
        assert_eq!(p.map(5.0, 9.0), (60, 0), "y is clamped to the panel");
        let mut c = Canvas::new(140, 90);
        p.axes(&mut c, "x", "y", 1);
        assert!(c.png().unwrap().starts_with(b"\x89PNG"));
    }
}
