//! Shared by the element's tests: the shipped weights, phantom frames and their ground truth, the
//! mask read back from a buffer's region-of-interest meta, Dice.
#![allow(dead_code)]

use std::path::PathBuf;

use lightunet::phantom::{Phantom, PhantomConfig, PixelLayout};
use lightunet::pipeline::PixelFormat;
use lightunet::postprocess::nearest_centred;

/// The project's trained Lighter@1 weights (tracked in the repository).
pub fn shipped_weights() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../pretrained_models/lighter_at1_busi.safetensors").display().to_string()
}

/// A scratch folder of this test's own.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gstlightunet-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Phantom frame `i` packed in `format` (rows padded to 4 bytes like GStreamer's default
/// strides), its stride, and the ground-truth mask (0/255, `width * height`).
pub fn phantom_frame(cfg: &PhantomConfig, i: u64, format: PixelFormat) -> (Vec<u8>, usize, Vec<u8>) {
    let p = Phantom::new(cfg.clone()).unwrap();
    let (w, h) = (cfg.width, cfg.height);
    let mut rgb = vec![0u8; w * h * 3];
    let mut mask = vec![0u8; w * h];
    p.fill_into(i, PixelLayout::Rgb8, &mut rgb, w * 3, Some(&mut mask)).unwrap();
    let bpp = format.bytes_per_pixel();
    let stride = (w * bpp).div_ceil(4) * 4;
    let mut out = vec![0u8; stride * h];
    for y in 0..h {
        for x in 0..w {
            // Phantom bytes are in RGB order: [r, g, b].
            let px = &rgb[(y * w + x) * 3..(y * w + x) * 3 + 3];
            let [ob, og, or] = format.bgr_offsets();
            let d = &mut out[y * stride + x * bpp..];
            (d[ob], d[og], d[or]) = (px[2], px[1], px[0]);
        }
    }
    (out, stride, mask)
}

/// The lesion mask a buffer carries, at frame size (0/255), from its `lesion`
/// region-of-interest meta; `None` without one.
pub fn mask_from_meta(buffer: &gst::BufferRef, width: usize, height: usize) -> Option<Vec<u8>> {
    let meta = buffer.iter_meta::<gst_video::VideoRegionOfInterestMeta>().find(|m| m.roi_type() == gstlightunet::ROI_TYPE)?;
    let p = meta.param(gstlightunet::MASK_PARAMS)?;
    let get = |k: &str| p.get::<u32>(k).unwrap() as usize;
    let (mw, mh) = (get("mask-width"), get("mask-height"));
    let (rx, ry, rw, rh) = (get("roi-x"), get("roi-y"), get("roi-width"), get("roi-height"));
    let mask = p.get::<gst::Buffer>("mask").unwrap();
    let map = mask.map_readable().unwrap();
    assert_eq!(map.len(), mw * mh);
    let mut out = vec![0u8; width * height];
    for dy in 0..rh {
        let sy = nearest_centred(mh, rh, dy);
        for dx in 0..rw {
            out[(ry + dy) * width + rx + dx] = map[sy * mw + nearest_centred(mw, rw, dx)];
        }
    }
    Some(out)
}

pub fn dice(a: &[u8], b: &[u8]) -> f64 {
    let (mut inter, mut na, mut nb) = (0usize, 0usize, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x > 0, y > 0);
        inter += usize::from(x && y);
        na += usize::from(x);
        nb += usize::from(y);
    }
    if na + nb == 0 {
        1.0
    } else {
        2.0 * inter as f64 / (na + nb) as f64
    }
}
