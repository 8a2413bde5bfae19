//! A 3x5 pixel font (digits, A-Z, a few signs) for the on-screen text and the latency plot, so
//! that neither needs a font file or a system font.

/// Rows top to bottom, 3 bits each (4 = left column).
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_uppercase() {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [7, 4, 4, 4, 7],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [7, 4, 5, 5, 7],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'J' => [1, 1, 1, 5, 7],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [7, 5, 5, 5, 7],
        'P' => [7, 5, 7, 4, 4],
        'Q' => [7, 5, 5, 7, 1],
        'R' => [6, 5, 6, 5, 5],
        'S' => [7, 4, 7, 1, 7],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        '.' => [0, 0, 0, 0, 2],
        ',' => [0, 0, 0, 2, 4],
        ':' => [0, 2, 0, 2, 0],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        '/' => [1, 1, 2, 4, 4],
        '(' => [2, 4, 4, 4, 2],
        ')' => [2, 1, 1, 1, 2],
        '=' => [0, 7, 0, 7, 0],
        '%' => [5, 1, 2, 4, 5],
        _ => [0; 5],
    }
}

/// Width in pixels of `text` at `scale`.
pub fn text_width(text: &str, scale: usize) -> usize {
    text.chars().count() * 4 * scale
}

/// Draws `text` at `(x0, y0)` on a 3-byte-per-pixel image (colour in the buffer's channel order),
/// optionally on a filled box; clipped to the image.
#[allow(clippy::too_many_arguments)]
pub fn draw_text_bgr(
    data: &mut [u8],
    w: usize,
    h: usize,
    stride: usize,
    (x0, y0): (usize, usize),
    scale: usize,
    text: &str,
    color: [u8; 3],
    background: Option<[u8; 3]>,
) {
    let mut put = |x: usize, y: usize, c: [u8; 3]| {
        if x < w && y < h {
            let i = y * stride + x * 3;
            if let Some(px) = data.get_mut(i..i + 3) {
                px.copy_from_slice(&c);
            }
        }
    };
    if let Some(bg) = background {
        let (bw, bh) = (text_width(text, scale) + scale, 7 * scale);
        for y in y0..y0 + bh {
            for x in x0..x0 + bw {
                put(x, y, bg);
            }
        }
    }
    for (k, c) in text.chars().enumerate() {
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    let (gx, gy) = (x0 + (1 + k * 4 + col) * scale, y0 + (1 + row) * scale);
                    for dy in 0..scale {
                        for dx in 0..scale {
                            put(gx + dx, gy + dy, color);
                        }
                    }
                }
            }
        }
    }
}
