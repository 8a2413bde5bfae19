//! The lookup order (see the module header of `assets`): the environment variables and folders
//! read once into a [`Lookup`], which finds the [`Weights`] and builds the pipelines' [`Catalog`].

use std::path::{Path, PathBuf};

use super::pipelines::Catalog;
use super::source::Origin;
use super::weights::Weights;

/// The environment variable naming a weights file (like `--weights`).
pub const WEIGHTS_ENV: &str = "LIGHTUNET_WEIGHTS";
/// The environment variable naming a folder of named pipelines (like `--pipelines-dir`).
pub const PIPELINES_ENV: &str = "LIGHTUNET_PIPELINES";
/// The system-wide data folder (where the Debian package installs the pipelines).
pub const SYSTEM_DIR: &str = "/usr/share/lightunet";
/// The weights file in the user and system folders.
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// The pipelines folder in the user and system folders.
pub const PIPELINES_SUBDIR: &str = "pipelines";

/// The places the lookup reads, gathered once: the environment variables and the two folders.
/// [`Lookup::from_env`] reads them from the process; tests build one by hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// [`WEIGHTS_ENV`], when set and not empty.
    pub weights_env: Option<PathBuf>,
    /// [`PIPELINES_ENV`], when set and not empty.
    pub pipelines_env: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME/lightunet`, else `$HOME/.config/lightunet`; `None` when neither
    /// variable gives an absolute path.
    pub user_dir: Option<PathBuf>,
    /// [`SYSTEM_DIR`].
    pub system_dir: PathBuf,
}

impl Lookup {
    pub fn from_env() -> Lookup {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        Lookup {
            weights_env: var(WEIGHTS_ENV),
            pipelines_env: var(PIPELINES_ENV),
            user_dir: user_dir(var("XDG_CONFIG_HOME"), var("HOME")),
            system_dir: PathBuf::from(SYSTEM_DIR),
        }
    }

    /// The two folders of steps 3 and 4, in order, with their origins.
    fn data_dirs(&self) -> impl Iterator<Item = (&Path, Origin)> {
        self.user_dir.as_deref().map(|d| (d, Origin::User)).into_iter().chain([(self.system_dir.as_path(), Origin::System)])
    }

    /// The weights to use: `option` (`--weights`), else [`WEIGHTS_ENV`], else
    /// `weights.safetensors` in the user then the system folder, else the embedded ones.
    pub fn weights(&self, option: Option<&Path>) -> crate::Result<Weights> {
        let explicit = match (option, &self.weights_env) {
            (Some(p), _) => Some((p.to_path_buf(), Origin::Option("--weights"))),
            (None, Some(p)) => Some((p.clone(), Origin::Env(WEIGHTS_ENV))),
            (None, None) => None,
        };
        if let Some((path, origin)) = explicit {
            if !path.is_file() {
                return Err(crate::Error::MissingWeights { path, origin: origin.to_string() });
            }
            return Ok(Weights::file(path, origin));
        }
        for (dir, origin) in self.data_dirs() {
            let path = dir.join(WEIGHTS_FILE);
            if path.is_file() {
                return Ok(Weights::file(path, origin));
            }
        }
        Ok(Weights::embedded())
    }

    /// The named pipelines: `option` (`--pipelines-dir`), else [`PIPELINES_ENV`], then
    /// `pipelines/` in the user and the system folder, then the embedded ones.
    pub fn pipelines(&self, option: Option<&Path>) -> Catalog {
        let explicit = match (option, &self.pipelines_env) {
            (Some(p), _) => Some((p.to_path_buf(), Origin::Option("--pipelines-dir"))),
            (None, Some(p)) => Some((p.clone(), Origin::Env(PIPELINES_ENV))),
            (None, None) => None,
        };
        let dirs = explicit.into_iter().chain(self.data_dirs().map(|(d, o)| (d.join(PIPELINES_SUBDIR), o))).collect();
        Catalog::new(dirs)
    }
}

/// `$XDG_CONFIG_HOME/lightunet`, else `$HOME/.config/lightunet`. The XDG base directory
/// specification says a relative `XDG_CONFIG_HOME` is to be ignored; a relative `HOME` would
/// make the folder depend on the working directory, so it is ignored too.
fn user_dir(xdg_config_home: Option<PathBuf>, home: Option<PathBuf>) -> Option<PathBuf> {
    match xdg_config_home.filter(|p| p.is_absolute()) {
        Some(config) => Some(config.join("lightunet")),
        None => home.filter(|p| p.is_absolute()).map(|h| h.join(".config").join("lightunet")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::Source;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lightunet-assets-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn user_folder_follows_xdg() {
        let abs = |s: &str| Some(PathBuf::from(s));
        assert_eq!(user_dir(abs("/x/cfg"), abs("/home/u")), abs("/x/cfg/lightunet"));
        assert_eq!(user_dir(None, abs("/home/u")), abs("/home/u/.config/lightunet"));
        // A relative XDG_CONFIG_HOME is ignored (the spec), HOME is used instead.
        assert_eq!(user_dir(abs("rel/cfg"), abs("/home/u")), abs("/home/u/.config/lightunet"));
        assert_eq!(user_dir(None, abs("rel")), None);
        assert_eq!(user_dir(None, None), None);
    }

    /// Each step hides the ones after it; a named file that is missing is an error.
    #[test]
    fn weights_lookup_order() {
        let root = scratch("weights-order");
        let (user, system) = (root.join("user"), root.join("system"));
        for d in [&user, &system] {
            std::fs::create_dir_all(d).unwrap();
        }
        let mut lookup = Lookup { weights_env: None, pipelines_env: None, user_dir: Some(user.clone()), system_dir: system.clone() };
        assert_eq!(lookup.weights(None).unwrap().source, Source::Embedded);

        std::fs::write(system.join(WEIGHTS_FILE), b"s").unwrap();
        assert_eq!(lookup.weights(None).unwrap().source, Source::File { path: system.join(WEIGHTS_FILE), origin: Origin::System });

        std::fs::write(user.join(WEIGHTS_FILE), b"u").unwrap();
        assert_eq!(lookup.weights(None).unwrap().source, Source::File { path: user.join(WEIGHTS_FILE), origin: Origin::User });

        let env = root.join("env.safetensors");
        lookup.weights_env = Some(env.clone());
        let err = lookup.weights(None).unwrap_err().to_string();
        assert!(err.contains("env.safetensors") && err.contains(WEIGHTS_ENV), "{err}");
        std::fs::write(&env, b"e").unwrap();
        assert_eq!(lookup.weights(None).unwrap().source, Source::File { path: env, origin: Origin::Env(WEIGHTS_ENV) });

        let opt = root.join("opt.safetensors");
        std::fs::write(&opt, b"o").unwrap();
        assert_eq!(lookup.weights(Some(&opt)).unwrap().source, Source::File { path: opt, origin: Origin::Option("--weights") });
        let err = lookup.weights(Some(&root.join("nope.safetensors"))).unwrap_err().to_string();
        assert!(err.contains("nope.safetensors") && err.contains("--weights"), "{err}");
    }
}
