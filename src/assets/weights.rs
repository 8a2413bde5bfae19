//! The default weights: Lighter U-net@1 trained on BUSI (`pretrained_models/`, see its model
//! card), embedded with its `config.json`, or a file found by the lookup ([`super::Lookup`]).
//! Embedded weights load from memory through the same name and shape checks as a file
//! ([`InferenceNet::load_buffer`]).

use std::path::{Path, PathBuf};

use candle_core::Device;

use super::source::{Origin, Source};
use crate::model::{InferenceNet, Variant};
use crate::{Error, Result};

/// The name of the embedded weights in messages and reports (the file they were built from).
pub const EMBEDDED_WEIGHTS_NAME: &str = "lighter_at1_busi.safetensors";

/// The shipped weights, built in (8 MB, f32).
static EMBEDDED_WEIGHTS: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/pretrained_models/lighter_at1_busi.safetensors"));
/// Their `config.json`: the variant, the input size and the training run that made them.
static EMBEDDED_CONFIG: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/pretrained_models/lighter_at1_busi.config.json"));

/// What a weights file's `config.json` says about how to run it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WeightsConfig {
    pub variant: Option<Variant>,
    /// The network input side it was trained at (`preprocessing.size`).
    pub input_size: Option<usize>,
}

impl WeightsConfig {
    /// Reads `variant` and `preprocessing.size`; other keys are the training record, not needed
    /// to run the weights. `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<WeightsConfig> {
        let bad = |reason: String| Error::Checkpoint { path: origin.to_path_buf(), reason };
        let json: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let variant = match &json["variant"] {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.parse::<Variant>()?),
            other => return Err(bad(format!("`variant` is {other}, not a name like \"lighter@1\""))),
        };
        let input_size = match &json["preprocessing"]["size"] {
            serde_json::Value::Null => None,
            v => Some(v.as_u64().and_then(|s| usize::try_from(s).ok()).ok_or_else(|| bad(format!("`preprocessing.size` is {v}, not a size")))?),
        };
        Ok(WeightsConfig { variant, input_size })
    }
}

/// A set of weights and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Weights {
    pub source: Source,
}

impl Weights {
    /// The weights built into the binary.
    pub fn embedded() -> Weights {
        Weights { source: Source::Embedded }
    }

    pub fn file(path: impl Into<PathBuf>, origin: Origin) -> Weights {
        Weights { source: Source::File { path: path.into(), origin } }
    }

    /// The file, or `None` for the embedded weights.
    pub fn path(&self) -> Option<&Path> {
        match &self.source {
            Source::Embedded => None,
            Source::File { path, .. } => Some(path),
        }
    }

    /// The `config.json` beside the weights: `<stem>.config.json` (as shipped in
    /// `pretrained_models/`), else `config.json` in the same folder (as `lightunet train` writes
    /// it); `None` when there is neither. The embedded weights have theirs built in.
    pub fn config_path(&self) -> Option<PathBuf> {
        let path = self.path()?;
        let stem = path.file_stem()?.to_string_lossy();
        [path.with_file_name(format!("{stem}.config.json")), path.with_file_name("config.json")].into_iter().find(|p| p.is_file())
    }

    /// What the weights' `config.json` says; all `None` when there is none.
    pub fn config(&self) -> Result<WeightsConfig> {
        match &self.source {
            Source::Embedded => WeightsConfig::parse(EMBEDDED_CONFIG, Path::new(&self.to_string())),
            Source::File { .. } => match self.config_path() {
                Some(p) => {
                    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
                    WeightsConfig::parse(&text, &p)
                }
                None => Ok(WeightsConfig::default()),
            },
        }
    }

    /// The folded network on `device`, in f32, after every name and shape is checked against
    /// `variant`.
    pub fn load(&self, variant: Variant, device: &Device) -> Result<InferenceNet> {
        match &self.source {
            Source::Embedded => InferenceNet::load_buffer(EMBEDDED_WEIGHTS, Path::new(&self.to_string()), variant, device),
            Source::File { path, .. } => InferenceNet::load(path, variant, device),
        }
    }
}

/// `embedded lighter_at1_busi.safetensors`, or the path and the step that found it.
impl std::fmt::Display for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Embedded => write!(f, "embedded {EMBEDDED_WEIGHTS_NAME}"),
            file => write!(f, "{file}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_config_names_the_variant() {
        let c = Weights::embedded().config().unwrap();
        assert_eq!(c, WeightsConfig { variant: Some(Variant::Lighter(1)), input_size: Some(256) });
    }

    /// The embedded weights go through the same checks as a file: they fit Lighter@1, and a
    /// variant they do not fit is refused with the tensor named.
    #[test]
    fn embedded_weights_load_and_are_checked() {
        let net = Weights::embedded().load(Variant::Lighter(1), &Device::Cpu).unwrap();
        let x = candle_core::Tensor::zeros((1, 3, 32, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(net.forward(&x).unwrap().dims(), &[1, 1, 32, 32]);
        let err = Weights::embedded().load(Variant::Light, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("light") && err.contains("tensor"), "{err}");
    }

    #[test]
    fn config_beside_a_file() {
        let dir = std::env::temp_dir().join(format!("lightunet-weights-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let w = Weights::file(dir.join("best.safetensors"), Origin::Option("--weights"));
        assert_eq!(w.config().unwrap(), WeightsConfig::default());
        std::fs::write(dir.join("config.json"), r#"{"variant": "light", "preprocessing": {"size": 128}}"#).unwrap();
        assert_eq!(w.config().unwrap(), WeightsConfig { variant: Some(Variant::Light), input_size: Some(128) });
        // `<stem>.config.json` comes first.
        std::fs::write(dir.join("best.config.json"), r#"{"variant": "unet"}"#).unwrap();
        assert_eq!(w.config().unwrap(), WeightsConfig { variant: Some(Variant::UNet), input_size: None });
        std::fs::write(dir.join("best.config.json"), r#"{"variant": "lighter@3"}"#).unwrap();
        assert!(w.config().is_err());
        std::fs::write(dir.join("best.config.json"), "{").unwrap();
        let err = w.config().unwrap_err().to_string();
        assert!(err.contains("best.config.json") && err.contains("JSON"), "{err}");
    }
}
