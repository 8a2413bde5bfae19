//! From the network's probability map to what the original saved: the map resized back to the
//! image (OpenCV bilinear, [`crate::resize`]), thresholded at 0.5, reduced to one connected
//! component with holes filled (`components.rs`: the largest, or by default the most confident),
//! then drawn as a red outline
//! (`contour.rs`); plus per-mask measurements (`stats.rs`). For video, [`MaskScaling`]
//! (`scaling.rs`) gives the same measurements and drawings for a model-size mask shown at a
//! larger size, without building the large mask.
//!
//! This file is the facade: the children's public items are re-exported here, and the children
//! never use this file, only each other. Std only, apart from the crate's leaves
//! [`crate::metrics`] (whose [`Mask`] it uses), [`crate::resize`] and [`crate::pixel`].
//!
//! Image buffers have a row `stride` in bytes (never assumed to be `width * 3`). The `*_rgb`
//! functions take 3-byte pixels and colours in the buffer's own channel order, so the original's
//! red is `[0, 0, 255]` on a BGR buffer and `[255, 0, 0]` on an RGB one; [`MaskScaling`]'s
//! `draw_contour` and `fill_translucent` take any [`crate::pixel::PixelFormat`] (3 or 4 bytes)
//! and a BGR colour.

mod components;
mod contour;
mod scaling;
mod stats;
#[cfg(test)]
mod test_masks;

pub use crate::resize::resize_bilinear_f32;
pub use components::{clean_up_into, largest_component, largest_component_into, Cleanup, ComponentScratch};
pub use contour::{contour, contour_band, contour_reach, draw_contour_rgb, fill_translucent_rgb};
pub use scaling::{nearest_centred, scale_mask_nearest, MaskScaling};
pub use stats::MaskStats;

use crate::metrics::{Mask, ShapeError};

/// Lesion where `prob > thr` (strictly; the original used `> 0.5`). NaN is background.
pub fn threshold(probs: &[f32], width: usize, height: usize, thr: f32) -> Result<Mask, ShapeError> {
    Mask::above(probs, width, height, thr)
}

/// The original's saved mask: the probability map (`pw x ph`, usually 256x256) resized to the
/// image (`width x height`), thresholded at 0.5, then [`largest_component`].
pub fn final_mask(
    probs: &[f32],
    pw: usize,
    ph: usize,
    width: usize,
    height: usize,
) -> Result<Mask, ShapeError> {
    let resized = resize_bilinear_f32(probs, pw, ph, width, height)?;
    let mask = threshold(&resized, width, height, 0.5)?;
    Ok(largest_component(&mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_is_strict() {
        let m = threshold(&[0.5, 0.51, 0.49, 1.0], 2, 2, 0.5).unwrap();
        assert_eq!(m.data, vec![false, true, false, true]);
        assert!(threshold(&[0.5; 3], 2, 2, 0.5).is_err());
    }

    #[test]
    fn final_mask_chain() {
        // A 5x5 map with a bright 2x2 block and a lone bright corner pixel, upscaled to 10x10:
        // both survive the threshold (the corner as a 2x2 patch: 0.25 * 0 + 0.75 * 0.9 > 0.5
        // at its inner edge), and only the block, the larger component, is kept.
        #[rustfmt::skip]
        let probs = [
            0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.9, 0.9, 0.0, 0.0,
            0.0, 0.9, 0.9, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.9,
        ];
        let resized = resize_bilinear_f32(&probs, 5, 5, 10, 10).unwrap();
        assert!(threshold(&resized, 10, 10, 0.5).unwrap().get(9, 9));
        let m = final_mask(&probs, 5, 5, 10, 10).unwrap();
        assert!(m.get(3, 3) && m.get(4, 4));
        assert!(!m.get(9, 9) && !m.get(0, 0));
        assert!(final_mask(&probs, 5, 4, 10, 10).is_err());
    }

    /// Timing of the video post-processing on a noisy 256x256 mask shown at 1920x1080:
    /// `cargo test --release --lib postprocess_1080p_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn postprocess_1080p_timing() {
        let mut seed = 3u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        let (mw, mh, w, h) = (256, 256, 1920, 1080);
        let probs: Vec<f32> = (0..mw * mh)
            .map(|i| {
                let (x, y) = ((i % mw) as f32 - 128.0, (i / mw) as f32 - 128.0);
                let blob = 1.0 - (x * x + y * y).sqrt() / 100.0;
                blob + ((next() % 1000) as f32 / 1000.0 - 0.5) * 0.8
            })
            .collect();
        let raw = threshold(&probs, mw, mh, 0.5).unwrap();
        let mut scratch = ComponentScratch::default();
        let mut mask = Mask::new(0, 0);
        let mut sc = MaskScaling::new(mw, mh, w, h);
        let stride = w * 3;
        let mut img = vec![0u8; stride * h];
        let n = 50;
        let (mut t_cc, mut t_stats, mut t_draw, mut t_conf) = (0.0, 0.0, 0.0, 0.0);
        for _ in 0..n {
            // The default rule first (its result is discarded), then the original's, which the
            // rest of the timing draws.
            let t = std::time::Instant::now();
            clean_up_into(&raw, &probs, Cleanup::Confident, &mut scratch, &mut mask).unwrap();
            t_conf += t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            largest_component_into(&raw, &mut scratch, &mut mask);
            let t1 = std::time::Instant::now();
            let s = sc.stats(&mask, &probs).unwrap();
            let t2 = std::time::Instant::now();
            sc.draw_contour_rgb(&mut img, stride, &mask, [0, 0, 255], 2)
                .unwrap();
            let t3 = std::time::Instant::now();
            assert!(s.is_some());
            t_cc += (t1 - t).as_secs_f64();
            t_stats += (t2 - t1).as_secs_f64();
            t_draw += (t3 - t2).as_secs_f64();
        }
        let ms = |t: f64| t * 1e3 / n as f64;
        println!(
            "raw {} px, kept {} px: components {:.3} ms (confident rule {:.3} ms), stats {:.3} ms, contour {:.3} ms",
            raw.count(),
            mask.count(),
            ms(t_cc),
            ms(t_conf),
            ms(t_stats),
            ms(t_draw)
        );
    }
}
