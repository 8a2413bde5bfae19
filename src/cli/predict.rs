//! `predict`: masks, contour overlays and (with `--masks`) metrics for a folder of images.
//!
//! ```text
//! OUT/masks/NAME.png      final mask at the image's size (0/255)
//! OUT/overlays/NAME.png   the image with the mask's outline in red, 2 px
//! OUT/metrics.json        per-image metrics, means, unmatched files, problems
//! OUT/metrics.csv         the same, one row per image and a final `mean` row
//! ```
//! Unreadable images, images without a mask and masks without an image are listed, not fatal.
//! OUT may not be, contain or lie inside the images or masks folders; everything is written into
//! a temporary folder and moved into OUT at the end (an earlier run's results there only with
//! --overwrite), so a failed run leaves OUT as it was.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use lightunet::atomic_write::write_atomic;
use lightunet::device::parse_device;
use lightunet::image_io::{load_bgr, load_mask, pair_files, save_png, BgrImage, PngColor};
use lightunet::metrics::{Metrics, Summary};
use lightunet::model::Variant;
use lightunet::output::{discard_pending, OutputPlan, PendingDir, Staged};
use lightunet::postprocess::{draw_contour_rgb, Cleanup};
use lightunet::predict::{report_csv, report_table, ImageReport, PostOptions, Predictor, Report, Tta};
use rayon::prelude::*;

use super::weights::Chosen;

/// What predict writes into --out.
const WRITES: [&str; 4] = ["masks", "overlays", "metrics.json", "metrics.csv"];

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Variant (unet, light, lighter@C); read from the config.json beside the weights
    /// (`<name>.config.json` or `config.json`) when absent.
    #[arg(long)]
    model: Option<Variant>,
    /// Weights (safetensors, PyTorch key names), e.g. RUN/best.safetensors. Default:
    /// $LIGHTUNET_WEIGHTS, else weights.safetensors in $XDG_CONFIG_HOME/lightunet
    /// (~/.config/lightunet), else in /usr/share/lightunet, else the embedded Lighter U-net@1
    /// trained on BUSI.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Folder of images (PNG, JPEG, BMP, TIFF; grey or colour; 8 or 16 bit).
    #[arg(long)]
    images: PathBuf,
    /// Folder of ground-truth masks with the same names: adds metrics.
    #[arg(long)]
    masks: Option<PathBuf>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Which connected component is the lesion: confident (highest mean probability), largest
    /// (the original's), none (keep every component). The kept one is filled.
    #[arg(long, default_value = "confident", value_parser = super::cleanup_parser(), conflicts_with = "no_cleanup")]
    cleanup: Cleanup,
    /// Same as --cleanup none.
    #[arg(long)]
    no_cleanup: bool,
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// Network input size (default: config.json's, else 256).
    #[arg(long)]
    size: Option<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Do not write overlays.
    #[arg(long)]
    no_overlays: bool,
    /// Replace an earlier run's results in --out (masks, overlays, metrics).
    #[arg(long)]
    overwrite: bool,
    /// Test-time augmentation: hflip averages the probabilities of each image and of its mirror
    /// image (mirrored back); twice the network's work.
    #[arg(long, value_enum, default_value = "none")]
    tta: Tta,
}

pub fn run(args: PredictArgs) -> anyhow::Result<()> {
    let chosen = Chosen::new(args.weights.as_deref(), args.model, None)?;
    let variant = chosen.variant;
    let size = match args.size {
        Some(size) => size,
        None => chosen.input_size()?.unwrap_or(256),
    };
    lightunet::model::check_input(args.batch, size, size).context("--size and --batch")?;
    if !(0.0..1.0).contains(&args.threshold) {
        bail!("--threshold must be in [0, 1), got {}", args.threshold);
    }
    if !args.images.is_dir() {
        bail!("--images {} is not a folder", args.images.display());
    }
    if let Some(m) = &args.masks {
        if !m.is_dir() {
            bail!("--masks {} is not a folder", m.display());
        }
    }
    let mut plan = OutputPlan::new();
    if let Some(w) = chosen.weights.as_ref().and_then(|w| w.path()) {
        plan.input("--weights", w);
    }
    plan.input_folder("--images", &args.images);
    if let Some(m) = &args.masks {
        plan.input_folder("--masks", m);
    }
    plan.folder("--out", &args.out, &WRITES, args.overwrite);
    plan.check()?;
    // Ctrl-C: remove the half-written temporary folder (the default would leave it).
    ctrlc::set_handler(|| {
        eprintln!("interrupted: nothing was written");
        discard_pending();
        std::process::exit(i32::from(super::exit::INTERRUPTED));
    })
    .context("installing the Ctrl-C handler")?;
    let device = parse_device(&args.device)?;
    let net = chosen.load(&device)?;
    tracing::info!("model {variant}, weights: {}", chosen.describe());
    let post = PostOptions { threshold: args.threshold, cleanup: if args.no_cleanup { Cleanup::None } else { args.cleanup } };
    let predictor = Predictor::new(net, size, post)?.with_tta(args.tta);
    let pairing = pair_files(&args.images, args.masks.as_deref())?;
    if pairing.pairs.is_empty() {
        bail!("no images in {} (expected .png, .jpg, .bmp or .tif files)", args.images.display());
    }
    let staging = PendingDir::folder("--out", &args.out, args.overwrite)?;
    let mask_dir = staging.path().join("masks");
    let overlay_dir = staging.path().join("overlays");
    for d in [&mask_dir, &overlay_dir].into_iter().take(if args.no_overlays { 1 } else { 2 }) {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut written = 0usize;

    let mut rows = Vec::new();
    let mut all_metrics = Vec::new();
    for chunk in pairing.pairs.chunks(args.batch) {
        let loaded: Vec<Result<BgrImage, String>> =
            chunk.par_iter().map(|(_, p, _)| load_bgr(p).map_err(|e| e.to_string())).collect();
        let ok: Vec<&BgrImage> = loaded.iter().filter_map(|r| r.as_ref().ok()).collect();
        let mut preds = predictor.predict(&ok)?.into_iter();
        for ((key, img_path, mask_path), img) in chunk.iter().zip(&loaded) {
            let mut row = ImageReport {
                name: key.clone(),
                image: img_path.clone(),
                mask: mask_path.clone(),
                width: 0,
                height: 0,
                predicted_area_px: 0,
                metrics: None,
                problem: None,
            };
            let img = match img {
                Ok(img) => img,
                Err(e) => {
                    tracing::warn!("skipped: {e}");
                    row.problem = Some(format!("unreadable image: {e}"));
                    rows.push(row);
                    continue;
                }
            };
            let pred = preds.next().context("prediction count mismatch")?;
            row.width = img.width;
            row.height = img.height;
            row.predicted_area_px = pred.mask.count();
            save_png(&mask_dir.join(format!("{key}.png")), &pred.mask.to_u8(), img.width, img.height, PngColor::Grey)?;
            written += 1;
            if !args.no_overlays {
                let mut bgr = img.data.clone();
                draw_contour_rgb(&mut bgr, img.width, img.height, img.stride(), &pred.mask, [0, 0, 255], 2)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                for px in bgr.chunks_exact_mut(3) {
                    px.swap(0, 2);
                }
                save_png(&overlay_dir.join(format!("{key}.png")), &bgr, img.width, img.height, PngColor::Rgb)?;
            }
            if let Some(mp) = mask_path {
                match load_mask(mp) {
                    Err(e) => row.problem = Some(format!("unreadable mask: {e}")),
                    Ok(m) if (m.mask.width, m.mask.height) != (img.width, img.height) => {
                        row.problem = Some(format!(
                            "mask is {}x{}, image {}x{}: no metrics",
                            m.mask.width, m.mask.height, img.width, img.height
                        ))
                    }
                    Ok(m) => {
                        if m.non_binary > 0 {
                            tracing::warn!("{}: {} non-binary mask pixels (binarised at > 127)", mp.display(), m.non_binary);
                        }
                        let metrics = Metrics::compute(&pred.mask, &m.mask).map_err(|e| anyhow::anyhow!("{e}"))?;
                        row.metrics = Some(metrics);
                        all_metrics.push(metrics);
                    }
                }
            }
            rows.push(row);
        }
    }

    let report = Report {
        model: variant.to_string(),
        weights: chosen.describe(),
        size,
        post,
        tta: args.tta,
        images: rows,
        images_without_mask: pairing.images_without_mask.clone(),
        masks_without_image: pairing.masks_without_image.clone(),
        duplicates: pairing.duplicates.clone(),
        summary: Summary::from(all_metrics.as_slice()),
    };
    let json = serde_json::to_string_pretty(&report)?;
    write_atomic(&staging.path().join("metrics.json"), json.as_bytes())?;
    write_atomic(&staging.path().join("metrics.csv"), report_csv(&report).as_bytes())?;
    let mut staged = Staged::new();
    staged.push(staging);
    staged.commit()?;
    print!("{}", report_table(&report));
    let list = |what: &str, v: &[PathBuf]| {
        if !v.is_empty() {
            println!("{} {what}:", v.len());
            for p in v {
                println!("  {}", p.display());
            }
        }
    };
    list("images without a mask", &report.images_without_mask);
    list("masks without an image", &report.masks_without_image);
    list("files ignored (same name as another)", &report.duplicates);
    let skipped = report.images.len() - written;
    let skipped = if skipped > 0 { format!("; {skipped} unreadable images skipped") } else { String::new() };
    println!("wrote {written} masks to {} (metrics.json, metrics.csv){skipped}", args.out.display());
    Ok(())
}
