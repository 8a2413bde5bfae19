//! The weights the element loads when its `weights` property is not set.
//!
//! TEMPORARY, for the merge: the library does not embed its default weights yet, so this looks
//! for the project's `pretrained_models/lighter_at1_busi.safetensors` the way `lightunet
//! process`/`live` do today (the current folder, then the source tree the plugin was built from).
//! When the library's embedded Lighter@1 weights land, this function is to return those instead,
//! and nothing here may point at the build machine any more.

use std::path::PathBuf;

/// The shipped weights' path inside the project.
pub const SHIPPED_WEIGHTS: &str = "pretrained_models/lighter_at1_busi.safetensors";

/// Where the default weights are, if anywhere.
pub fn default_weights() -> Option<PathBuf> {
    // The plugin crate sits one folder below the library's root.
    let roots = [PathBuf::from("."), PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))];
    roots.iter().map(|r| r.join(SHIPPED_WEIGHTS)).find(|p| p.is_file())
}
