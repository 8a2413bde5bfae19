//! Masks land where the lesion is: crop, resize, channel order and overlay mapping are checked
//! with fake segmenters whose right answer is known exactly (nothing flipped, transposed, shifted
//! or read in the wrong channel order).

mod pipeline_support;

use std::sync::Arc;

use lightunet::metrics::Mask;
use lightunet::phantom::{Phantom, PhantomConfig};
use lightunet::pipeline::{run, Job, OverlayStyle, Roi, SegmentInput, SinkSpec, SourceSpec};
use lightunet::postprocess::scale_mask_nearest;
use pipeline_support::*;

fn file(path: &std::path::Path) -> SinkSpec {
    SinkSpec::File { path: path.to_path_buf(), overwrite: false }
}

/// A red 64x48 square at (200, 30) on a black 320x240 frame; the "model" is the red channel
/// (channel 2 of BGR), so a wrong channel order finds nothing and a wrong mapping misplaces it.
#[test]
fn red_square_through_a_roi_lands_in_place_with_bgr_order() {
    let dir = scratch("geometry-square");
    let source = SourceSpec::Launch(
        "videotestsrc num-buffers=3 pattern=black ! video/x-raw,width=320,height=240 ! c.sink_0 \
         videotestsrc num-buffers=3 pattern=red ! video/x-raw,width=64,height=48 ! c.sink_1 \
         compositor name=c sink_1::xpos=200 sink_1::ypos=30 ! video/x-raw,width=320,height=240"
            .into(),
    );
    let mut job = Job::new(source, file(&dir.join("frame_%02d.png")));
    job.masks = Some(file(&dir.join("mask_%02d.png")));
    job.metadata = Some(dir.join("meta.jsonl"));
    job.config.roi = Some(Roi { x: 150, y: 20, w: 150, h: 100 });
    job.config.model_size = (64, 64);
    job.config.overlay.style = OverlayStyle::Contour;
    job.config.overlay.color_bgr = [0, 255, 0]; // green on the red square
    let seg = Box::new(|input: &SegmentInput| {
        let n = input.width * input.height;
        Ok(input.chw[2 * n..3 * n].to_vec())
    });
    let report = run(job, seg).unwrap();
    assert_eq!(report.counters.frames_out, 3);

    let mut expected = vec![0u8; 320 * 240];
    for y in 30..78 {
        for x in 200..264 {
            expected[y * 320 + x] = 255;
        }
    }
    let masks = files(&dir, "mask_");
    assert_eq!(masks.len(), 3);
    let (w, h, mask) = read_gray_png(&masks[1]);
    assert_eq!((w, h), (320, 240));
    let d = dice(&mask, &expected);
    assert!(d > 0.95, "dice {d}");
    // Nothing outside the ROI, ever.
    for y in 0..240 {
        for x in 0..320 {
            if !(150..300).contains(&x) || !(20..120).contains(&y) {
                assert_eq!(mask[y * 320 + x], 0, "mask pixel outside the ROI at ({x}, {y})");
            }
        }
    }

    let meta = read_jsonl(&dir.join("meta.jsonl")).swap_remove(1);
    assert_eq!(meta["lesion"], true);
    let c = [meta["centroid"][0].as_f64().unwrap(), meta["centroid"][1].as_f64().unwrap()];
    assert!((c[0] - 231.5).abs() < 1.5 && (c[1] - 53.5).abs() < 1.5, "centroid {c:?}");
    let bbox: Vec<u64> = meta["bbox"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(bbox[0].abs_diff(200) <= 1 && bbox[1].abs_diff(30) <= 1 && bbox[2].abs_diff(64) <= 2 && bbox[3].abs_diff(48) <= 2, "{bbox:?}");

    // The overlay: green outline on the square's left edge, the square's centre still red.
    let (_, _, rgb) = read_rgb_png(&files(&dir, "frame_")[1]);
    let px = |x: usize, y: usize| &rgb[(y * 320 + x) * 3..(y * 320 + x) * 3 + 3];
    assert_eq!(px(200, 54), [0, 255, 0], "outline at the left edge");
    assert_eq!(px(232, 30), [0, 255, 0], "outline at the top edge");
    assert_eq!(px(232, 54), [255, 0, 0], "inside stays red");
    assert_eq!(px(100, 200), [0, 0, 0], "background untouched");
}

/// The phantom with its own ground truth as the "model": the default ROI is the phantom's image
/// region, and the masks written must match the ground truth of the same frame.
#[test]
fn phantom_ground_truth_comes_back_in_place() {
    let dir = scratch("geometry-phantom");
    let cfg = PhantomConfig { width: 320, height: 240, ..Default::default() };
    let phantom = Arc::new(Phantom::new(cfg.clone()).unwrap());
    let gt = phantom.clone();
    let seg = Box::new(move |input: &SegmentInput| {
        let (w, h) = (gt.width(), gt.height());
        let mut full = vec![0u8; w * h];
        gt.fill_mask_into(input.seq, &mut full).unwrap();
        let r = input.roi;
        assert_eq!((r.x, r.y, r.w, r.h), gt.image_rect(), "default ROI is the image region");
        let mut crop = Mask::new(r.w, r.h);
        for y in 0..r.h {
            for x in 0..r.w {
                crop.set(x, y, full[(r.y + y) * w + r.x + x] > 0);
            }
        }
        let small = scale_mask_nearest(&crop, input.width, input.height);
        Ok(small.data.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect())
    });
    let mut job = Job::new(SourceSpec::Phantom { config: cfg, frames: Some(4) }, file(&dir.join("f_%02d.png")));
    job.masks = Some(file(&dir.join("mask_%02d.png")));
    let report = run(job, seg).unwrap();
    assert_eq!(report.counters.frames_out, 4);
    for (i, path) in files(&dir, "mask_").iter().enumerate() {
        let (_, _, got) = read_gray_png(path);
        let mut want = vec![0u8; 320 * 240];
        phantom.fill_mask_into(i as u64, &mut want).unwrap();
        assert!(want.iter().any(|&v| v > 0));
        let d = dice(&got, &want);
        assert!(d > 0.9, "frame {i}: dice {d}");
    }
}

/// The real trained Lighter@1 (reference BUSI weights, not shipped) on the phantom: its mask
/// overlaps the phantom's ground truth (Dice 0.96 measured at 640x480 in release builds).
#[test]
fn reference_model_finds_the_phantom_lesion() {
    let Some(weights) = shared("anchors/torch_lighter_at1_busi_f16.safetensors") else { return };
    let net = lightunet::model::InferenceNet::load(&weights, "lighter@1".parse().unwrap(), &candle_core::Device::Cpu).unwrap();
    let dir = scratch("geometry-reference");
    let cfg = PhantomConfig { width: 320, height: 240, ..Default::default() };
    let mut job = Job::new(SourceSpec::Phantom { config: cfg.clone(), frames: Some(1) }, file(&dir.join("f_%02d.png")));
    job.masks = Some(file(&dir.join("mask_%02d.png")));
    run(job, Box::new(lightunet::pipeline::UNetSegmenter::new(net))).unwrap();
    let (_, _, got) = read_gray_png(&dir.join("mask_00.png"));
    let mut want = vec![0u8; 320 * 240];
    Phantom::new(cfg).unwrap().fill_mask_into(0, &mut want).unwrap();
    let d = dice(&got, &want);
    assert!(d > 0.8, "dice {d}");
}
