//! What can be wrong with an output, each with the paths and roles involved, so that the message
//! says which two arguments clash and why.

use std::path::PathBuf;

// The I/O errors are fields named `error`, not `source`: they are part of the message, and a
// `source` would print twice in an anyhow chain.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// An output that is an input or another output (the same path, a symbolic or a hard link).
    #[error("the {role} {} is the same file as the {other_role} {}{how}: refusing to write it ({})", path.display(), other.display(), if *other_is_input { "it would destroy the input; --overwrite never allows that" } else { "two outputs cannot share a file; give each its own name" })]
    SameFile { role: String, path: PathBuf, other_role: String, other: PathBuf, how: &'static str, other_is_input: bool },

    /// A file of a `%d` sequence is an input or another output.
    #[error("the {role} {} would write {}, which is the {other_role}: refusing ({})", pattern.display(), other.display(), if *other_is_input { "--overwrite never replaces an input" } else { "give each output its own name" })]
    InSequence { role: String, pattern: PathBuf, other_role: String, other: PathBuf, other_is_input: bool },

    /// Two `%d` sequences in one folder whose file names can coincide.
    #[error("the {role} {} and the {other_role} {} can produce the same file names: give them different names", pattern.display(), other.display())]
    SequencesOverlap { role: String, pattern: PathBuf, other_role: String, other: PathBuf },

    /// An output folder that is, contains or lies inside an input folder (or another output).
    #[error("the {role} {} {relation} the {other_role} {}: choose a folder apart from it (--overwrite never allows this)", path.display(), other.display())]
    Nested { role: String, path: PathBuf, relation: &'static str, other_role: String, other: PathBuf },

    #[error("the {role} {} already exists (pass --overwrite to replace it)", path.display())]
    Exists { role: String, path: PathBuf },

    /// An output folder that already holds results of an earlier run.
    #[error("the {role} {} already holds {} (pass --overwrite to replace what this run writes)", path.display(), found.display())]
    FolderHolds { role: String, path: PathBuf, found: PathBuf },

    #[error("the {role} {}: its folder {} does not exist", path.display(), folder.display())]
    FolderMissing { role: String, path: PathBuf, folder: PathBuf },

    #[error("the {role} {}: {} is not a folder", path.display(), folder.display())]
    ParentNotFolder { role: String, path: PathBuf, folder: PathBuf },

    #[error("the {role} {} is a folder: give a file name", path.display())]
    IsFolder { role: String, path: PathBuf },

    #[error("the {role} {} is not a folder", path.display())]
    NotFolder { role: String, path: PathBuf },

    #[error("the {role} {} does not name a file", path.display())]
    NotAFileName { role: String, path: PathBuf },

    #[error("the {role} {}: cannot write in the folder {}: {error}", path.display(), folder.display())]
    NotWritable { role: String, path: PathBuf, folder: PathBuf, error: std::io::Error },

    /// GStreamer takes file names as UTF-8 strings.
    #[error("the {role} {} is not valid UTF-8, which GStreamer needs for file names: rename it", path.display())]
    NotUtf8 { role: String, path: PathBuf },

    /// Without `--overwrite`, a file that appeared at an output's name while the run was writing
    /// it (another run) is kept, and this run's outputs are discarded.
    #[error("the {role} {} appeared while this run was writing it (another run?): it was left as it was and this run's outputs were discarded", path.display())]
    AppearedMeanwhile { role: String, path: PathBuf },

    #[error("the {role} {}: {error}", path.display())]
    Io { role: String, path: PathBuf, error: std::io::Error },
}

impl OutputError {
    pub(crate) fn io(role: &str, path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        OutputError::Io { role: role.to_string(), path: path.into(), error }
    }
}

pub type Result<T, E = OutputError> = std::result::Result<T, E>;
