//! The original's clean-up: the largest 8-connected component of a mask, with its holes filled
//! (OpenCV's `findContours(RETR_EXTERNAL)`, `max(contours, key=contourArea)` and
//! `drawContours(..., thickness=-1)`), with scratch buffers a video pipeline reuses.

use crate::metrics::Mask;

/// One 8-connected component: its label and bounding box (inclusive corners).
struct Component {
    label: usize,
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

/// Labels the 8-connected components (OpenCV's `findContours` treats lesion pixels as
/// 8-connected) into `labels`/`comps`; label 0 is background, components are numbered in raster
/// order of their first pixel. Reads pixels through [`Mask::get`], so a mask whose `data` is
/// shorter than `width * height` cannot make it index out of bounds.
fn label_components(
    mask: &Mask,
    labels: &mut Vec<usize>,
    comps: &mut Vec<Component>,
    stack: &mut Vec<(usize, usize)>,
) {
    let (w, h) = (mask.width, mask.height);
    labels.clear();
    labels.resize(w.saturating_mul(h), 0);
    comps.clear();
    stack.clear();
    for sy in 0..h {
        for sx in 0..w {
            if !mask.get(sx, sy) || labels[sy * w + sx] != 0 {
                continue;
            }
            let label = comps.len() + 1;
            let mut c = Component {
                label,
                x0: sx,
                y0: sy,
                x1: sx,
                y1: sy,
            };
            labels[sy * w + sx] = label;
            stack.push((sx, sy));
            while let Some((x, y)) = stack.pop() {
                c.x0 = c.x0.min(x);
                c.x1 = c.x1.max(x);
                c.y0 = c.y0.min(y);
                c.y1 = c.y1.max(y);
                for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                    for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                        let i = ny * w + nx;
                        if mask.get(nx, ny) && labels[i] == 0 {
                            labels[i] = label;
                            stack.push((nx, ny));
                        }
                    }
                }
            }
            comps.push(c);
        }
    }
}

/// The component `c` with its holes filled, as a mask over its bounding box (into `inside`,
/// returning the filled area): cell `(x, y)` of the box is set unless it is outside `c` and
/// 4-connected, through pixels outside `c`, to the box's surroundings. Pixels outside the box are
/// never inside `c`'s outline and all connect around the box, so flooding a one-pixel frame
/// around the box is the same as flooding from the image border (the image edge itself counts as
/// outside, like OpenCV's zero frame).
fn filled_in_box(
    labels: &[usize],
    width: usize,
    c: &Component,
    outside: &mut Vec<bool>,
    stack: &mut Vec<(usize, usize)>,
    inside: &mut Vec<bool>,
) -> usize {
    let (bw, bh) = (c.x1 - c.x0 + 1, c.y1 - c.y0 + 1);
    let (fw, fh) = (bw + 2, bh + 2);
    // Frame coordinates: (fx, fy) = (x - x0 + 1, y - y0 + 1).
    let wall = |fx: usize, fy: usize| -> bool {
        fx >= 1
            && fy >= 1
            && fx <= bw
            && fy <= bh
            && labels[(c.y0 + fy - 1) * width + c.x0 + fx - 1] == c.label
    };
    outside.clear();
    outside.resize(fw * fh, false);
    stack.clear();
    for fy in 0..fh {
        for fx in 0..fw {
            if fx == 0 || fy == 0 || fx == fw - 1 || fy == fh - 1 {
                outside[fy * fw + fx] = true;
                stack.push((fx, fy));
            }
        }
    }
    while let Some((fx, fy)) = stack.pop() {
        let mut visit = |nx: usize, ny: usize| {
            let i = ny * fw + nx;
            if !outside[i] && !wall(nx, ny) {
                outside[i] = true;
                stack.push((nx, ny));
            }
        };
        if fx > 0 {
            visit(fx - 1, fy);
        }
        if fx + 1 < fw {
            visit(fx + 1, fy);
        }
        if fy > 0 {
            visit(fx, fy - 1);
        }
        if fy + 1 < fh {
            visit(fx, fy + 1);
        }
    }
    inside.clear();
    inside.reserve(bw * bh);
    let mut area = 0;
    for y in 0..bh {
        for x in 0..bw {
            let filled = !outside[(y + 1) * fw + x + 1];
            inside.push(filled);
            area += usize::from(filled);
        }
    }
    area
}

/// Buffers of [`largest_component_into`], kept between calls so that a video pipeline does not
/// allocate per frame.
#[derive(Default)]
pub struct ComponentScratch {
    labels: Vec<usize>,
    comps: Vec<Component>,
    stack: Vec<(usize, usize)>,
    outside: Vec<bool>,
    inside: Vec<bool>,
    best_inside: Vec<bool>,
}

/// The original's clean-up: keep the largest 8-connected component and fill it, like
/// `findContours(RETR_EXTERNAL)`, `max(contours, key=contourArea)` and
/// `drawContours(..., thickness=-1)`.
///
/// "Largest" is by filled pixel area (component plus its holes), which ranks like OpenCV's
/// polygon `contourArea` of the outer contour except between near-equal shapes of different
/// perimeter (the polygon through boundary-pixel centres is about half a perimeter smaller).
/// Ties go to the component met first in raster order. Filling covers every pixel not
/// 4-connected to the image border outside the component, so anything inside its holes
/// (including other components) becomes lesion, as the filled outer contour does.
pub fn largest_component(mask: &Mask) -> Mask {
    let mut out = Mask::new(mask.width, mask.height);
    largest_component_into(mask, &mut ComponentScratch::default(), &mut out);
    out
}

/// [`largest_component`] into `out` (reshaped to the mask's size), reusing `scratch`.
pub fn largest_component_into(mask: &Mask, scratch: &mut ComponentScratch, out: &mut Mask) {
    let ComponentScratch {
        labels,
        comps,
        stack,
        outside,
        inside,
        best_inside,
    } = scratch;
    label_components(mask, labels, comps, stack);
    out.width = mask.width;
    out.height = mask.height;
    out.data.clear();
    out.data
        .resize(mask.width.saturating_mul(mask.height), false);
    let mut best: Option<(usize, usize)> = None; // (filled area, index into comps)
    for (k, c) in comps.iter().enumerate() {
        let box_area = (c.x1 - c.x0 + 1) * (c.y1 - c.y0 + 1);
        // The filled area never exceeds the bounding box: skip boxes that cannot win.
        if best.is_some_and(|(a, _)| box_area <= a) {
            continue;
        }
        let area = filled_in_box(labels, mask.width, c, outside, stack, inside);
        if best.is_none_or(|(a, _)| area > a) {
            best = Some((area, k));
            std::mem::swap(inside, best_inside);
        }
    }
    if let Some((_, k)) = best {
        let c = &comps[k];
        let bw = c.x1 - c.x0 + 1;
        for (i, &v) in best_inside.iter().enumerate() {
            if v {
                out.set(c.x0 + i % bw, c.y0 + i / bw, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postprocess::test_masks::{art, show};

    #[test]
    fn largest_of_two_blobs_is_kept() {
        let m = art(&[
            "##......", //
            "##..###.", //
            "....###.", //
            "....###.", //
            "#.......", //
        ]);
        let kept = largest_component(&m);
        assert_eq!(
            show(&kept),
            vec!["........", "....###.", "....###.", "....###.", "........"]
        );
        assert!(largest_component(&Mask::new(4, 3)).is_empty());
    }

    #[test]
    fn diagonal_pixels_are_one_component() {
        // 8-connectivity: the diagonal chain (4 px) beats the 3-px bar.
        let m = art(&[
            "#.......", //
            ".#......", //
            "..#..###", //
            "...#....", //
        ]);
        assert_eq!(largest_component(&m).count(), 4);
    }

    #[test]
    fn ring_becomes_filled_disc() {
        let ring = art(&[
            ".......", //
            "..###..", //
            ".#...#.", //
            ".#...#.", //
            ".#...#.", //
            "..###..", //
            ".......", //
        ]);
        let filled = largest_component(&ring);
        assert_eq!(
            show(&filled),
            vec![".......", "..###..", ".#####.", ".#####.", ".#####.", "..###..", "......."]
        );
        // A ring with a speck inside: the speck is covered by the fill, as drawContours(-1)
        // would; a hole open to the image edge (a bay) is not a hole.
        let m = art(&[
            "#####...", //
            "#...#...", //
            "#.#.#...", //
            "#...#...", //
            "#####...", //
            "........", //
            "##.##...", //
            "#...#...", //
        ]);
        let kept = largest_component(&m);
        assert_eq!(kept.count(), 25);
        let bay = art(&[
            "#.#", //
            "#.#", //
            "###", //
        ]);
        assert_eq!(largest_component(&bay).count(), 7);
    }

    #[test]
    fn ranking_uses_filled_area() {
        // The ring (16 px, 25 filled) outranks the solid 4x5 block (20 px), like contourArea.
        let m = art(&[
            "#####........", //
            "#...#...####.", //
            "#...#...####.", //
            "#...#...####.", //
            "#####...####.", //
            "........####.", //
        ]);
        let kept = largest_component(&m);
        assert_eq!(kept.count(), 25);
        assert!(kept.get(2, 2));
    }

    #[test]
    fn largest_component_reuses_scratch() {
        let mut scratch = ComponentScratch::default();
        let mut out = Mask::new(0, 0);
        let a = art(&["##......", "##..###.", "....###.", "....###.", "#......."]);
        largest_component_into(&a, &mut scratch, &mut out);
        assert_eq!(out, largest_component(&a));
        let b = art(&["#.#", "#.#", "###"]);
        largest_component_into(&b, &mut scratch, &mut out);
        assert_eq!((out.width, out.count()), (3, 7));
    }
}
