//! Where a shipped thing, or the file that replaces it, comes from: the step of the lookup
//! ([`Origin`]) and the thing itself ([`Source`]), as messages and `live --list` show them.

use std::fmt;
use std::path::PathBuf;

/// Which step of the lookup found a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A command-line option (its name).
    Option(&'static str),
    /// An environment variable (its name).
    Env(&'static str),
    /// `$XDG_CONFIG_HOME/lightunet`.
    User,
    /// [`SYSTEM_DIR`].
    System,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Option(name) => write!(f, "{name}"),
            Origin::Env(name) => write!(f, "${name}"),
            Origin::User => f.write_str("user folder"),
            Origin::System => f.write_str("system folder"),
        }
    }
}

/// Where a shipped thing, or the file that replaces it, comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Built into the binary.
    Embedded,
    /// A file, and the step of the lookup that found it.
    File { path: PathBuf, origin: Origin },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Embedded => f.write_str("embedded"),
            Source::File { path, origin } => write!(f, "{} ({origin})", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_say_where() {
        assert_eq!(Source::Embedded.to_string(), "embedded");
        let s = Source::File { path: PathBuf::from("/a/w.safetensors"), origin: Origin::Env("LIGHTUNET_WEIGHTS") };
        assert_eq!(s.to_string(), "/a/w.safetensors ($LIGHTUNET_WEIGHTS)");
    }
}
