//! Measurements of one lesion mask ([`MaskStats`]): area, bounding box, centroid, longest
//! diameter (convex hull and calipers), mean probability.

use super::contour::contour;
use crate::metrics::{pixel_count, Mask, ShapeError};

/// Measurements of one lesion mask, in pixels of that mask.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskStats {
    /// Lesion pixels.
    pub area_px: usize,
    /// `(x, y, w, h)` of the smallest box holding every lesion pixel (`cv2.boundingRect`).
    pub bbox: (usize, usize, usize, usize),
    /// Mean `(x, y)` of the lesion pixel centres (image moments m10/m00, m01/m00 of the mask).
    pub centroid: (f64, f64),
    /// Largest distance between two outline pixel centres (calipers on the convex hull of the
    /// [`contour`] points). Centre to centre: a 4x5-pixel rectangle, whose corner centres are
    /// 3 and 4 apart, measures 5; a single pixel measures 0.
    pub longest_diameter_px: f64,
    /// Mean of `probs` over the lesion pixels.
    pub mean_probability: f64,
}

impl MaskStats {
    /// `Ok(None)` for an empty mask; `probs` must be the probability map at the mask's size.
    pub fn compute(mask: &Mask, probs: &[f32]) -> Result<Option<MaskStats>, ShapeError> {
        let n = pixel_count(mask.width, mask.height, "mask")?;
        if mask.data.len() != n || probs.len() != n {
            return Err(ShapeError::Length {
                what: "probabilities vs mask",
                expected: n,
                got: if mask.data.len() != n {
                    mask.data.len()
                } else {
                    probs.len()
                },
            });
        }
        let mut area = 0usize;
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        let (mut sum_x, mut sum_y, mut sum_p) = (0f64, 0f64, 0f64);
        for y in 0..mask.height {
            for x in 0..mask.width {
                let i = y * mask.width + x;
                if !mask.data[i] {
                    continue;
                }
                area += 1;
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x);
                y1 = y1.max(y);
                sum_x += x as f64;
                sum_y += y as f64;
                sum_p += f64::from(probs[i]);
            }
        }
        if area == 0 {
            return Ok(None);
        }
        let a = area as f64;
        Ok(Some(MaskStats {
            area_px: area,
            bbox: (x0, y0, x1 - x0 + 1, y1 - y0 + 1),
            centroid: (sum_x / a, sum_y / a),
            longest_diameter_px: longest_diameter(&contour(mask)),
            mean_probability: sum_p / a,
        }))
    }
}

/// Andrew's monotone chain into `hull`; collinear points are dropped. Exact in `i64`. Sorts
/// `pts` in place.
fn convex_hull_into(pts: &mut Vec<(i64, i64)>, hull: &mut Vec<(i64, i64)>) {
    pts.sort_unstable();
    pts.dedup();
    hull.clear();
    if pts.len() < 3 {
        hull.extend_from_slice(pts);
        return;
    }
    let cross = |o: (i64, i64), a: (i64, i64), b: (i64, i64)| -> i64 {
        (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
    };
    for pass in 0..2 {
        let start = hull.len();
        for k in 0..pts.len() {
            let p = if pass == 0 {
                pts[k]
            } else {
                pts[pts.len() - 1 - k]
            };
            while hull.len() >= start + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0
            {
                hull.pop();
            }
            hull.push(p);
        }
        // The last point of each chain is the first of the other.
        hull.pop();
    }
}

/// Largest distance between two of `pts`, via their convex hull (a lattice hull in an
/// `N x N` image has O(N^(2/3)) vertices, so all hull pairs are cheap).
pub(super) fn longest_diameter_with(pts: &mut Vec<(i64, i64)>, hull: &mut Vec<(i64, i64)>) -> f64 {
    convex_hull_into(pts, hull);
    let mut best = 0i64;
    for (i, a) in hull.iter().enumerate() {
        for b in &hull[i + 1..] {
            let (dx, dy) = (a.0 - b.0, a.1 - b.1);
            best = best.max(dx * dx + dy * dy);
        }
    }
    (best as f64).sqrt()
}

fn longest_diameter(points: &[(usize, usize)]) -> f64 {
    let mut pts: Vec<(i64, i64)> = points.iter().map(|&(x, y)| (x as i64, y as i64)).collect();
    longest_diameter_with(&mut pts, &mut Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postprocess::test_masks::art;

    #[test]
    fn stats_of_rectangle() {
        // A 4x5-pixel rectangle at (2, 1): corner centres are 3 and 4 apart -> diameter 5.
        let mut m = Mask::new(8, 8);
        for y in 1..6 {
            for x in 2..6 {
                m.set(x, y, true);
            }
        }
        let probs: Vec<f32> = (0..64)
            .map(|i| if i % 2 == 0 { 0.6 } else { 1.0 })
            .collect();
        let s = MaskStats::compute(&m, &probs).unwrap().unwrap();
        assert_eq!(s.area_px, 20);
        assert_eq!(s.bbox, (2, 1, 4, 5));
        assert_eq!(s.centroid, (3.5, 3.0));
        assert_eq!(s.longest_diameter_px, 5.0);
        assert!((s.mean_probability - 0.8).abs() < 1e-6);
        assert_eq!(
            MaskStats::compute(&Mask::new(3, 3), &[0.0; 9]).unwrap(),
            None
        );
        assert!(MaskStats::compute(&m, &probs[..10]).is_err());
        let dot = art(&["...", ".#.", "..."]);
        let s = MaskStats::compute(&dot, &[1.0; 9]).unwrap().unwrap();
        assert_eq!((s.longest_diameter_px, s.bbox), (0.0, (1, 1, 1, 1)));
    }

    #[test]
    fn hull_diameter_matches_brute_force() {
        let mut seed = 5u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for _ in 0..200 {
            let n = 1 + next() % 40;
            let pts: Vec<(usize, usize)> = (0..n).map(|_| (next() % 30, next() % 30)).collect();
            let mut brute = 0usize;
            for a in &pts {
                for b in &pts {
                    let (dx, dy) = (a.0.abs_diff(b.0), a.1.abs_diff(b.1));
                    brute = brute.max(dx * dx + dy * dy);
                }
            }
            assert_eq!(longest_diameter(&pts), (brute as f64).sqrt());
        }
    }
}
