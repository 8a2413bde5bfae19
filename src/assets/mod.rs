//! What the program ships, built into the binary, and the folders that override it: the default
//! weights (Lighter U-net@1 trained on BUSI, with its `config.json`) and the named pipelines
//! (`pipelines/*.toml`). An installed binary needs no file of the checkout it was built from.
//!
//! One lookup order for every subcommand, and for anything else built on the library (the
//! GStreamer element): the first step that has the thing wins.
//! 1. the command-line option (`--weights FILE`, `--pipelines-dir DIR`);
//! 2. else the environment variable of the same meaning (`LIGHTUNET_WEIGHTS`,
//!    `LIGHTUNET_PIPELINES`);
//! 3. the user folder, `$XDG_CONFIG_HOME/lightunet` (default `~/.config/lightunet`);
//! 4. the system folder, `/usr/share/lightunet` (the Debian package puts the pipelines there);
//! 5. the copies embedded in the binary.
//!
//! The user and system folders have the same layout: `weights.safetensors` (with, optionally,
//! `weights.config.json` or `config.json` beside it: variant and input size) and
//! `pipelines/<name>.toml`. Weights are taken whole from the first step that has a file.
//! Pipelines are looked up by name: a file in a folder higher in the order hides the pipeline of
//! the same name below it (an embedded one included), and the others stay visible. An option or
//! a variable that names a missing file or folder is an error, not a step skipped: it was asked
//! for.
//!
//! - `lookup`: [`Lookup`], the order itself; `source`: [`Origin`] and [`Source`], where a thing
//!   was found.
//! - [`weights`]: the embedded weights, [`Weights`] (where a set of weights is), loading them.
//! - [`pipelines`]: the embedded pipelines and the [`Catalog`] over them and the folders.

mod lookup;
pub mod pipelines;
mod source;
pub mod weights;

pub use lookup::{Lookup, PIPELINES_ENV, PIPELINES_SUBDIR, SYSTEM_DIR, WEIGHTS_ENV, WEIGHTS_FILE};
pub use pipelines::{Catalog, FoundPipeline};
pub use source::{Origin, Source};
pub use weights::{Weights, WeightsConfig, EMBEDDED_WEIGHTS_NAME};
