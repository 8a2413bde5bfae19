//! The named pipelines: those embedded in the binary (every `pipelines/*.toml` at build time,
//! listed by build.rs) and the folders of the lookup ([`super::Lookup::pipelines`]), merged by
//! name. Parsing stays with [`NamedPipeline`]; this module only finds the text.

use std::path::PathBuf;

use super::source::{Origin, Source};
use crate::pipeline::config::InvalidPipeline;
use crate::pipeline::{NamedPipeline, PipelineError, Result};

// `EMBEDDED: &[(&str, &str)]`: (name, TOML text) for each pipelines/*.toml, sorted by name.
include!(concat!(env!("OUT_DIR"), "/embedded_pipelines.rs"));

/// The text of the embedded pipeline `name`.
fn embedded(name: &str) -> Option<&'static str> {
    EMBEDDED.iter().find(|(n, _)| *n == name).map(|(_, text)| *text)
}

/// One named pipeline, where it comes from, and what it hides.
#[derive(Clone, Debug)]
pub struct FoundPipeline {
    pub pipeline: NamedPipeline,
    pub source: Source,
    /// Pipelines of the same name further down the lookup, hidden by this one (nearest first;
    /// [`Source::Embedded`] last when there is an embedded one).
    pub hides: Vec<Source>,
    /// Whether this is a file whose text is the embedded pipeline's, byte for byte (the Debian
    /// package installs copies of them).
    pub same_as_embedded: bool,
}

/// What [`Catalog::list`] found: the pipelines that load, and the files that do not.
#[derive(Clone, Debug, Default)]
pub struct CatalogListing {
    pub valid: Vec<FoundPipeline>,
    pub invalid: Vec<InvalidPipeline>,
}

/// The folders of named pipelines, in lookup order, above the embedded ones.
#[derive(Clone, Debug)]
pub struct Catalog {
    dirs: Vec<(PathBuf, Origin)>,
}

impl Catalog {
    /// Folders first to last; the embedded pipelines come after them.
    pub fn new(dirs: Vec<(PathBuf, Origin)>) -> Catalog {
        Catalog { dirs }
    }

    /// The folders searched, in order.
    pub fn folders(&self) -> &[(PathBuf, Origin)] {
        &self.dirs
    }

    /// The names of the embedded pipelines, sorted.
    pub fn embedded_names() -> impl Iterator<Item = &'static str> {
        EMBEDDED.iter().map(|(n, _)| *n)
    }

    /// The `.toml` files of each folder as (name, path), sorted; a folder named by an option or
    /// a variable must exist, the user and system folders may not.
    fn entries(&self) -> Result<Vec<Vec<(String, PathBuf)>>> {
        let mut all = Vec::with_capacity(self.dirs.len());
        for (dir, origin) in &self.dirs {
            let read = match std::fs::read_dir(dir) {
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && matches!(origin, Origin::User | Origin::System) => {
                    all.push(Vec::new());
                    continue;
                }
                Err(e) => {
                    return Err(PipelineError::Config(format!("pipelines folder {} (from {origin}): {e}", dir.display())))
                }
            };
            let mut files: Vec<(String, PathBuf)> = read
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
                .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p)))
                .collect();
            files.sort();
            all.push(files);
        }
        Ok(all)
    }

    /// Where `name` is, highest in the order first.
    fn sources(&self, name: &str, entries: &[Vec<(String, PathBuf)>]) -> Vec<Source> {
        let mut found: Vec<Source> = self
            .dirs
            .iter()
            .zip(entries)
            .filter_map(|((_, origin), files)| {
                files.iter().find(|(n, _)| n == name).map(|(_, path)| Source::File { path: path.clone(), origin: *origin })
            })
            .collect();
        if embedded(name).is_some() {
            found.push(Source::Embedded);
        }
        found
    }

    fn read(name: &str, mut sources: Vec<Source>) -> Result<FoundPipeline> {
        let source = sources.remove(0);
        let (pipeline, same_as_embedded) = match &source {
            Source::Embedded => {
                let text = embedded(name).unwrap_or_default();
                (NamedPipeline::from_toml(name, &format!("embedded {name}.toml"), text)?, false)
            }
            Source::File { path, .. } => {
                let text = std::fs::read_to_string(path).map_err(|e| PipelineError::Io { path: path.clone(), source: e })?;
                let pipeline = NamedPipeline::from_toml(name, &path.display().to_string(), &text)?;
                (pipeline, embedded(name) == Some(text.as_str()))
            }
        };
        Ok(FoundPipeline { pipeline, source, hides: sources, same_as_embedded })
    }

    /// Every pipeline, sorted by name: from the first folder that has it, else embedded. A file
    /// that does not load is listed apart with its error: one bad file hides nothing else.
    pub fn list(&self) -> Result<CatalogListing> {
        let entries = self.entries()?;
        let mut names: Vec<String> = entries.iter().flatten().map(|(n, _)| n.clone()).collect();
        names.extend(Self::embedded_names().map(String::from));
        names.sort();
        names.dedup();
        let mut listing = CatalogListing::default();
        for name in &names {
            let sources = self.sources(name, &entries);
            let path = match sources.first() {
                Some(Source::File { path, .. }) => Some(path.clone()),
                _ => None,
            };
            match Self::read(name, sources) {
                Ok(found) => listing.valid.push(found),
                Err(e) => listing.invalid.push(InvalidPipeline { name: name.clone(), path: path.unwrap_or_default(), error: e.to_string() }),
            }
        }
        Ok(listing)
    }

    /// The pipeline `name` from the first folder that has `<name>.toml`, else the embedded one.
    /// A name is a name, never a path ([`NamedPipeline::check_name`]): `../Cargo` would read a
    /// file outside every pipelines folder.
    pub fn get(&self, name: &str) -> Result<FoundPipeline> {
        let name = NamedPipeline::check_name(name)?;
        let entries = self.entries()?;
        let sources = self.sources(name, &entries);
        if sources.is_empty() {
            let mut known: Vec<String> = entries.iter().flatten().map(|(n, _)| n.clone()).chain(Self::embedded_names().map(String::from)).collect();
            known.sort_unstable();
            known.dedup();
            let folders: Vec<String> = self.dirs.iter().map(|(d, o)| format!("{} ({o})", d.display())).collect();
            return Err(PipelineError::Config(format!(
                "no pipeline named `{name}` (known: {}; looked in {}{}the embedded ones)",
                known.join(", "),
                folders.join(", "),
                if folders.is_empty() { "" } else { " and " }
            )));
        }
        Self::read(name, sources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lightunet-catalog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn pipeline(description: &str) -> String {
        format!("description = \"{description}\"\nsource = \"phantom\"\nsink = \"fakesink\"\n")
    }

    /// Every pipelines/*.toml of the checkout is embedded, with the same text.
    #[test]
    fn every_shipped_pipeline_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        let mut on_disk: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
            .collect();
        on_disk.sort();
        let embedded: Vec<(String, String)> = EMBEDDED.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
        assert_eq!(embedded, on_disk);
        assert!(embedded.len() >= 6);
        // Users run the installed binary: no shipped pipeline points into a checkout or at this
        // build machine (a default `input` of ../shared/... once did).
        for (name, text) in &embedded {
            for bad in ["../", "shared/", "/work/", env!("CARGO_MANIFEST_DIR")] {
                assert!(!text.contains(bad), "pipeline {name} mentions `{bad}`");
            }
        }
    }

    /// With no folder, the embedded pipelines; a folder higher in the order hides the same name
    /// below it and says so; new names are added.
    #[test]
    fn folders_override_by_name() {
        let root = scratch("override");
        let (env, user, system) = (root.join("env"), root.join("user"), root.join("system"));
        for d in [&env, &user, &system] {
            std::fs::create_dir_all(d).unwrap();
        }
        let embedded_only = Catalog::new(vec![(user.join("missing"), Origin::User)]).list().unwrap().valid;
        assert_eq!(embedded_only.len(), EMBEDDED.len());
        assert!(embedded_only.iter().all(|p| p.source == Source::Embedded && p.hides.is_empty()));

        let (name, text) = EMBEDDED[0];
        std::fs::write(system.join(format!("{name}.toml")), text).unwrap();
        std::fs::write(user.join(format!("{name}.toml")), pipeline("user's")).unwrap();
        std::fs::write(env.join(format!("{name}.toml")), pipeline("env's")).unwrap();
        std::fs::write(user.join("mine.toml"), pipeline("mine")).unwrap();
        std::fs::write(user.join("notes.txt"), "not a pipeline").unwrap();

        let file = |dir: &Path, n: &str, origin| Source::File { path: dir.join(format!("{n}.toml")), origin };
        let sys_only = Catalog::new(vec![(system.clone(), Origin::System)]);
        let got = sys_only.get(name).unwrap();
        assert_eq!(got.source, file(&system, name, Origin::System));
        assert!(got.same_as_embedded, "a copy of the embedded file is recognised");
        assert_eq!(got.hides, vec![Source::Embedded]);

        let full = Catalog::new(vec![
            (env.clone(), Origin::Env("LIGHTUNET_PIPELINES")),
            (user.clone(), Origin::User),
            (system.clone(), Origin::System),
        ]);
        let got = full.get(name).unwrap();
        assert_eq!(got.pipeline.description, "env's");
        assert_eq!(got.pipeline.name, name);
        assert!(!got.same_as_embedded);
        assert_eq!(
            got.hides,
            vec![file(&user, name, Origin::User), file(&system, name, Origin::System), Source::Embedded]
        );
        let list = full.list().unwrap().valid;
        assert_eq!(list.len(), EMBEDDED.len() + 1);
        let mine = list.iter().find(|p| p.pipeline.name == "mine").unwrap();
        assert_eq!((mine.source.clone(), mine.hides.len()), (file(&user, "mine", Origin::User), 0));
        assert!(list.windows(2).all(|w| w[0].pipeline.name < w[1].pipeline.name), "sorted by name");

        let err = full.get("nope").unwrap_err().to_string();
        assert!(err.contains("no pipeline named `nope`") && err.contains("mine") && err.contains(name), "{err}");
    }

    /// A name is never read as a path: `--pipeline some/file.toml` or `../Cargo` is refused.
    #[test]
    fn a_path_is_not_a_name() {
        let root = scratch("path");
        let file = root.join("my-scanner.toml");
        std::fs::write(&file, pipeline("by path")).unwrap();
        let catalog = Catalog::new(vec![(root.clone(), Origin::User)]);
        for name in [file.to_str().unwrap(), "../Cargo", "../Cargo.toml"] {
            let err = catalog.get(name).unwrap_err().to_string();
            assert!(err.contains("is not a pipeline name"), "{name}: {err}");
        }
        // By its name, from its folder, it loads.
        assert_eq!(catalog.get("my-scanner").unwrap().pipeline.description, "by path");
    }

    /// A folder asked for by option or variable must exist; a broken file is an error naming it.
    #[test]
    fn missing_folder_and_broken_file() {
        let root = scratch("broken");
        let err = Catalog::new(vec![(root.join("nope"), Origin::Option("--pipelines-dir"))]).list().unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("--pipelines-dir"), "{err}");
        std::fs::write(root.join("bad.toml"), "description = 1\n").unwrap();
        let err = Catalog::new(vec![(root.clone(), Origin::User)]).get("bad").unwrap_err().to_string();
        assert!(err.contains("bad.toml"), "{err}");
        // Listed apart, with its error; the embedded ones are still listed.
        std::fs::write(root.join("fine.toml"), pipeline("fine")).unwrap();
        let listing = Catalog::new(vec![(root.clone(), Origin::User)]).list().unwrap();
        assert_eq!(listing.invalid.len(), 1);
        assert!(listing.invalid[0].name == "bad" && listing.invalid[0].error.contains("bad.toml"), "{:?}", listing.invalid);
        assert_eq!(listing.valid.len(), EMBEDDED.len() + 1);
    }
}
