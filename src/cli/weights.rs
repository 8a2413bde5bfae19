//! Which weights and variant a subcommand runs: `--weights`, else the lookup of
//! [`lightunet::assets`] (`LIGHTUNET_WEIGHTS`, the user folder, the system folder, the embedded
//! Lighter U-net@1); the variant from `--model`, else the weights' config.json. Every message
//! says where the weights came from.

use std::path::Path;

use anyhow::Context;
use candle_core::Device;
use lightunet::assets::{Lookup, Weights};
use lightunet::model::{InferenceNet, Variant};

use super::model_cmds::load_or_random;
use super::outputs::input_file;

/// The weights (`None`: random, for plumbing and timing) and the variant to build.
#[derive(Clone, Debug)]
pub struct Chosen {
    pub weights: Option<Weights>,
    pub variant: Variant,
}

impl Chosen {
    /// Random weights of `variant`, for plumbing and timing.
    pub fn random(variant: Variant) -> Chosen {
        tracing::warn!("random weights: the masks are meaningless (plumbing and timing only)");
        Chosen { weights: None, variant }
    }

    /// `weights`: a file, or `None` for the lookup. `model`: the variant asked for; without it,
    /// the weights' config.json says, else `fallback` (`None`: the caller requires one, as
    /// `predict` does for files without a config.json).
    pub fn new(weights: Option<&Path>, model: Option<Variant>, fallback: Option<Variant>) -> anyhow::Result<Chosen> {
        if let Some(p) = weights {
            // A folder or a missing file, said as such (the lookup would only say "missing").
            input_file("--weights", p)?;
        }
        let w = Lookup::from_env().weights(weights)?;
        let variant = match model {
            Some(v) => v,
            None => {
                let config = w.config().with_context(|| format!("reading the config.json of the weights {w}"))?;
                match config.variant.or(fallback) {
                    Some(v) => v,
                    None => {
                        let looked = match w.path() {
                            Some(p) => {
                                let stem = p.file_stem().unwrap_or_default().to_string_lossy();
                                format!(": looked for {} and {}", p.with_file_name(format!("{stem}.config.json")).display(), p.with_file_name("config.json").display())
                            }
                            None => String::new(),
                        };
                        anyhow::bail!("--model is required (no config.json with a variant next to {w}{looked})")
                    }
                }
            }
        };
        Ok(Chosen { weights: Some(w), variant })
    }

    /// What the weights' config.json says about the input size, if anything.
    pub fn input_size(&self) -> anyhow::Result<Option<usize>> {
        match &self.weights {
            Some(w) => Ok(w.config().with_context(|| format!("reading the config.json of the weights {w}"))?.input_size),
            None => Ok(None),
        }
    }

    /// `embedded lighter_at1_busi.safetensors`, a path and the step that found it, or `random`.
    pub fn describe(&self) -> String {
        self.weights.as_ref().map_or_else(|| "random".to_string(), Weights::to_string)
    }

    /// The folded network on `device` (f32).
    pub fn load(&self, device: &Device) -> anyhow::Result<InferenceNet> {
        match &self.weights {
            Some(w) => w.load(self.variant, device).with_context(|| format!("loading the weights {w}")),
            None => load_or_random(self.variant, None, device),
        }
    }
}
