//! What the subcommands read and write, checked before any work starts: each builds a
//! [`lightunet::output::OutputPlan`] from its arguments (refused with a message naming both paths
//! and why), and its JSON outputs are staged with the run's others so that they all move into
//! place together.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use lightunet::output::{PendingFile, Staged};

/// An input that must be a file (weights, a checkpoint): says when it is a folder or missing.
pub fn input_file(role: &str, path: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => bail!("{role} {} is a folder, not a file (give the file inside it, e.g. {})", path.display(), path.join("best.safetensors").display()),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => bail!("{role} {} does not exist", path.display()),
        Err(e) => Err(e).with_context(|| format!("{role} {}", path.display())),
    }
}

/// The temporary file of a JSON output written at the end (`--report`), created now so that a
/// folder that cannot take it fails before the run.
pub fn pending(role: &str, path: &Option<PathBuf>, overwrite: bool) -> anyhow::Result<Option<PendingFile>> {
    Ok(path.as_ref().map(|p| PendingFile::create(role, p, overwrite)).transpose()?)
}

/// Writes `value` into its pending file and adds it to the outputs committed together.
pub fn stage_json(file: Option<PendingFile>, value: &serde_json::Value, staged: &mut Staged) -> anyhow::Result<()> {
    if let Some(mut f) = file {
        f.write_all(serde_json::to_string_pretty(value)?.as_bytes())?;
        staged.push(f);
    }
    Ok(())
}
