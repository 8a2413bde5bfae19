//! The plan of a run's inputs and outputs, checked before anything is opened (see the module
//! header of [`crate::output`] for the rules).

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use super::error::{OutputError, Result};

#[derive(Clone, Debug)]
enum Kind {
    /// One file, replaced by a rename.
    File,
    /// A `%d` pattern: the file name of the path is the pattern.
    Sequence,
    /// A folder; the entries it writes inside (empty: anything, for an input folder).
    Folder(Vec<PathBuf>),
}

#[derive(Clone, Debug)]
struct Entry {
    role: String,
    path: PathBuf,
    kind: Kind,
    overwrite: bool,
    input: bool,
}

/// The inputs and outputs of one run, by role (`input`, `video output`, `--report`, ...): the
/// roles name them in messages.
#[derive(Clone, Debug, Default)]
pub struct OutputPlan {
    entries: Vec<Entry>,
}

/// Where a path of the plan is, once resolved.
#[derive(Clone, Debug)]
struct Location {
    /// Canonical path; for a file that does not exist yet, the canonical folder and its name
    /// (a dangling symbolic link resolved to where it points).
    canon: PathBuf,
    /// Device and inode of an existing file.
    id: Option<(u64, u64)>,
    /// An existing FIFO, device or socket: a stream, not stored data.
    special: bool,
}

impl OutputPlan {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, role: &str, path: &Path, kind: Kind, overwrite: bool, input: bool) -> &mut Self {
        self.entries.push(Entry { role: role.to_string(), path: path.to_path_buf(), kind, overwrite, input });
        self
    }

    /// A file the run reads. One that does not exist is left to the command to report.
    pub fn input(&mut self, role: &str, path: impl AsRef<Path>) -> &mut Self {
        self.push(role, path.as_ref(), Kind::File, false, true)
    }

    /// A folder the run reads: no output folder may be, contain or lie inside it.
    pub fn input_folder(&mut self, role: &str, path: impl AsRef<Path>) -> &mut Self {
        self.push(role, path.as_ref(), Kind::Folder(Vec::new()), false, true)
    }

    /// A file the run writes (replaced only with `overwrite`).
    pub fn file(&mut self, role: &str, path: impl AsRef<Path>, overwrite: bool) -> &mut Self {
        self.push(role, path.as_ref(), Kind::File, overwrite, false)
    }

    /// A `%d` sequence (`frames_%05d.png`): one file per frame in the pattern's folder.
    pub fn sequence(&mut self, role: &str, pattern: impl AsRef<Path>, overwrite: bool) -> &mut Self {
        self.push(role, pattern.as_ref(), Kind::Sequence, overwrite, false)
    }

    /// A folder the run writes `writes` into (files or subfolders, relative names); created
    /// when missing. Without `overwrite`, any of them already there is an error.
    pub fn folder(&mut self, role: &str, path: impl AsRef<Path>, writes: &[&str], overwrite: bool) -> &mut Self {
        let writes = writes.iter().map(PathBuf::from).collect();
        self.push(role, path.as_ref(), Kind::Folder(writes), overwrite, false)
    }

    /// Checks every rule. A clash (an output that is an input or another output) is reported
    /// before an output that merely exists, so that the message names the real danger; else the
    /// first problem in the order the entries were added. Reads only metadata (and creates and
    /// removes one probe file per output folder to learn that it takes files).
    pub fn check(&self) -> Result<()> {
        let mut seen: Vec<(&Entry, Location)> = Vec::new();
        let mut exists: Option<OutputError> = None;
        for e in &self.entries {
            let at = if e.input {
                locate_input(e)
            } else {
                let (at, existing) = locate_output(e)?;
                if exists.is_none() {
                    exists = existing;
                }
                Some(at)
            };
            let Some(at) = at else { continue };
            for (other, other_at) in &seen {
                let clash = if e.input {
                    // An input after an output: the same checks with the output first.
                    if other.input { None } else { conflict(other, other_at, e, &at) }
                } else {
                    conflict(e, &at, other, other_at)
                };
                if let Some(err) = clash {
                    return Err(err);
                }
            }
            seen.push((e, at));
        }
        exists.map_or(Ok(()), Err)
    }
}

/// The first of two outputs (`a`) against an input or an earlier output (`b`).
fn conflict(a: &Entry, at: &Location, b: &Entry, bt: &Location) -> Option<OutputError> {
    let name = |l: &Location| l.canon.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let folder = |l: &Location| l.canon.parent().map(Path::to_path_buf).unwrap_or_default();
    let nested = |relation: &'static str| OutputError::Nested {
        role: a.role.clone(),
        path: a.path.clone(),
        relation,
        other_role: b.role.clone(),
        other: b.path.clone(),
    };
    match (&a.kind, &b.kind) {
        (Kind::File, Kind::File) => {
            if at.special || bt.special || !same_file(at, bt) {
                return None;
            }
            let how = if at.canon != bt.canon {
                " (a hard link)"
            } else if lexical_absolute(&a.path) != lexical_absolute(&b.path) && (is_link(&a.path) || is_link(&b.path)) {
                " (through a symbolic link)"
            } else {
                ""
            };
            Some(OutputError::SameFile {
                role: a.role.clone(),
                path: a.path.clone(),
                other_role: b.role.clone(),
                other: b.path.clone(),
                how,
                other_is_input: b.input,
            })
        }
        (Kind::Sequence, Kind::File) | (Kind::File, Kind::Sequence) => {
            let (seq, st, file, ft) = if matches!(a.kind, Kind::Sequence) { (a, at, b, bt) } else { (b, bt, a, at) };
            let hit = folder(st) == folder(ft) && pattern_matches(&name(st), &name(ft));
            hit.then(|| OutputError::InSequence {
                role: seq.role.clone(),
                pattern: seq.path.clone(),
                other_role: file.role.clone(),
                other: file.path.clone(),
                other_is_input: file.input,
            })
        }
        (Kind::Sequence, Kind::Sequence) => (folder(at) == folder(bt) && patterns_overlap(&name(at), &name(bt))).then(|| {
            OutputError::SequencesOverlap { role: a.role.clone(), pattern: a.path.clone(), other_role: b.role.clone(), other: b.path.clone() }
        }),
        (Kind::Folder(_), Kind::Folder(_)) => relation(&at.canon, &bt.canon).map(nested),
        // An output folder and a file or sequence: a clash only where the folder writes.
        (Kind::Folder(writes), Kind::File | Kind::Sequence) => {
            let target = if matches!(b.kind, Kind::Sequence) { folder(bt) } else { bt.canon.clone() };
            writes_over(&at.canon, writes, &target).then(|| nested("would write over"))
        }
        (Kind::File | Kind::Sequence, Kind::Folder(writes)) => {
            if b.input {
                return None; // writing a file into a folder that is read is harmless
            }
            let target = if matches!(a.kind, Kind::Sequence) { folder(at) } else { at.canon.clone() };
            writes_over(&bt.canon, writes, &target).then(|| nested("lies among the files written by"))
        }
    }
}

fn same_file(a: &Location, b: &Location) -> bool {
    match (a.id, b.id) {
        (Some(x), Some(y)) => x == y,
        (None, None) => a.canon == b.canon,
        _ => false,
    }
}

/// `a` is, lies inside or contains `b`.
fn relation(a: &Path, b: &Path) -> Option<&'static str> {
    if a == b {
        Some("is")
    } else if a.starts_with(b) {
        Some("lies inside")
    } else if b.starts_with(a) {
        Some("contains")
    } else {
        None
    }
}

/// Whether `target` is, or lies inside, one of the entries `writes` of `folder` (any entry when
/// `writes` is empty).
fn writes_over(folder: &Path, writes: &[PathBuf], target: &Path) -> bool {
    if writes.is_empty() {
        return target.starts_with(folder);
    }
    writes.iter().any(|w| target.starts_with(folder.join(w)))
}

fn is_link(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

#[cfg(unix)]
fn file_id(m: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// `path` made absolute, `.` and `..` resolved by the text alone.
fn lexical_absolute(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The canonical form of a path that may not exist yet: its nearest existing ancestor made
/// canonical, and the rest appended.
fn canonical_lenient(path: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
    let abs = lexical_absolute(path);
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(c) => {
                let ancestor = existing.to_path_buf();
                return Ok((rest.iter().rev().fold(c, |p: PathBuf, n| p.join(n)), ancestor));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let (Some(name), Some(parent)) = (existing.file_name(), existing.parent()) else { return Err(e) };
                rest.push(name.to_os_string());
                existing = parent;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A path through a chain of dangling symbolic links to the name a write would create.
fn through_dangling_links(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::read_link(&p) {
            Ok(target) => p = if target.is_absolute() { target } else { p.parent().unwrap_or(Path::new("")).join(target) },
            Err(_) => break,
        }
    }
    p
}

fn locate_input(e: &Entry) -> Option<Location> {
    let m = std::fs::metadata(&e.path).ok()?;
    let canon = std::fs::canonicalize(&e.path).ok()?;
    Some(Location { canon, id: file_id(&m), special: !m.is_file() && !m.is_dir() })
}

fn parent_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

fn probe_writable(e: &Entry, folder: &Path) -> Result<()> {
    tempfile::Builder::new().prefix(".lightunet-probe-").tempfile_in(folder).map(drop).map_err(|error| {
        OutputError::NotWritable { role: e.role.clone(), path: e.path.clone(), folder: folder.to_path_buf(), error }
    })
}

/// The folder a file or sequence goes into: it exists, is a folder and takes files.
fn output_folder(e: &Entry, target: &Path) -> Result<PathBuf> {
    let folder = parent_of(target);
    match std::fs::metadata(folder) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(OutputError::ParentNotFolder { role: e.role.clone(), path: e.path.clone(), folder: folder.to_path_buf() }),
        Err(err) if err.kind() == ErrorKind::NotFound => {
            return Err(OutputError::FolderMissing { role: e.role.clone(), path: e.path.clone(), folder: folder.to_path_buf() })
        }
        Err(err) if err.kind() == ErrorKind::NotADirectory => {
            return Err(OutputError::ParentNotFolder { role: e.role.clone(), path: e.path.clone(), folder: folder.to_path_buf() })
        }
        Err(err) => return Err(OutputError::io(&e.role, folder, err)),
    }
    probe_writable(e, folder)?;
    std::fs::canonicalize(folder).map_err(|err| OutputError::io(&e.role, folder, err))
}

/// Where an output goes, and whether it would replace something without `--overwrite` (that
/// error is held back until the clashes are checked).
fn locate_output(e: &Entry) -> Result<(Location, Option<OutputError>)> {
    let not_a_name = || OutputError::NotAFileName { role: e.role.clone(), path: e.path.clone() };
    match &e.kind {
        Kind::File => {
            let text = e.path.to_string_lossy();
            let name = e.path.file_name().ok_or_else(not_a_name)?;
            match std::fs::metadata(&e.path) {
                Ok(m) if m.is_dir() => Err(OutputError::IsFolder { role: e.role.clone(), path: e.path.clone() }),
                Ok(m) if !m.is_file() => {
                    // `/dev/stdout` on a pipe resolves to no path at all: keep it as given.
                    let canon = std::fs::canonicalize(&e.path).unwrap_or_else(|_| e.path.clone());
                    Ok((Location { canon, id: file_id(&m), special: true }, None))
                }
                Ok(m) => {
                    let exists = (!e.overwrite).then(|| OutputError::Exists { role: e.role.clone(), path: e.path.clone() });
                    let canon = std::fs::canonicalize(&e.path).map_err(|err| OutputError::io(&e.role, &e.path, err))?;
                    output_folder(e, &canon)?;
                    Ok((Location { canon, id: file_id(&m), special: false }, exists))
                }
                Err(_) if text.ends_with('/') => Err(not_a_name()),
                Err(err) if err.kind() == ErrorKind::NotFound => {
                    let target = through_dangling_links(&e.path);
                    let name = target.file_name().unwrap_or(name).to_os_string();
                    let folder = output_folder(e, &target)?;
                    Ok((Location { canon: folder.join(name), id: None, special: false }, None))
                }
                Err(err) if err.kind() == ErrorKind::NotADirectory => Err(OutputError::ParentNotFolder {
                    role: e.role.clone(),
                    path: e.path.clone(),
                    folder: parent_of(&e.path).to_path_buf(),
                }),
                Err(err) => Err(OutputError::io(&e.role, &e.path, err)),
            }
        }
        Kind::Sequence => {
            let pattern = e.path.file_name().ok_or_else(not_a_name)?.to_string_lossy().into_owned();
            let folder = output_folder(e, &e.path)?;
            let mut exists = None;
            if !e.overwrite {
                let rd = std::fs::read_dir(&folder).map_err(|err| OutputError::io(&e.role, &folder, err))?;
                let mut found: Vec<PathBuf> = rd
                    .filter_map(|d| d.ok())
                    .filter(|d| pattern_matches(&pattern, &d.file_name().to_string_lossy()))
                    .map(|d| d.path())
                    .collect();
                found.sort();
                exists = found.into_iter().next().map(|first| OutputError::Exists {
                    role: e.role.clone(),
                    path: parent_of(&e.path).join(first.file_name().unwrap_or_default()),
                });
            }
            Ok((Location { canon: folder.join(pattern), id: None, special: false }, exists))
        }
        Kind::Folder(writes) => match std::fs::metadata(&e.path) {
            Ok(m) if m.is_dir() => {
                let mut exists = None;
                if !e.overwrite {
                    for w in writes {
                        let p = e.path.join(w);
                        let holds = match std::fs::metadata(&p) {
                            Ok(m) if m.is_dir() => std::fs::read_dir(&p).map(|mut d| d.next().is_some()).unwrap_or(true),
                            Ok(_) => true,
                            Err(_) => false,
                        };
                        if holds {
                            exists = Some(OutputError::FolderHolds { role: e.role.clone(), path: e.path.clone(), found: p });
                            break;
                        }
                    }
                }
                probe_writable(e, &e.path)?;
                let canon = std::fs::canonicalize(&e.path).map_err(|err| OutputError::io(&e.role, &e.path, err))?;
                Ok((Location { canon, id: file_id(&m), special: false }, exists))
            }
            Ok(_) => Err(OutputError::NotFolder { role: e.role.clone(), path: e.path.clone() }),
            Err(err) if err.kind() == ErrorKind::NotFound => {
                let (canon, ancestor) = canonical_lenient(&e.path).map_err(|err| OutputError::io(&e.role, &e.path, err))?;
                if !ancestor.is_dir() {
                    return Err(OutputError::ParentNotFolder { role: e.role.clone(), path: e.path.clone(), folder: ancestor });
                }
                probe_writable(e, &ancestor)?;
                Ok((Location { canon, id: None, special: false }, None))
            }
            Err(err) if err.kind() == ErrorKind::NotADirectory => Err(OutputError::NotFolder { role: e.role.clone(), path: e.path.clone() }),
            Err(err) => Err(OutputError::io(&e.role, &e.path, err)),
        },
    }
}

/// A `%d`-style pattern split around its one conversion: prefix, minimum digits, suffix
/// (`%%` is a literal `%`). `None` when there is no conversion.
fn split_pattern(pattern: &str) -> Option<(String, usize, String)> {
    let mut prefix = String::new();
    let mut chars = pattern.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '%' {
            prefix.push(c);
            continue;
        }
        if chars.peek().is_some_and(|&(_, n)| n == '%') {
            chars.next();
            prefix.push('%');
            continue;
        }
        let rest = &pattern[i + 1..];
        let spec_len = rest.find(|ch: char| !ch.is_ascii_digit())?;
        let conv = rest[spec_len..].chars().next()?;
        if !matches!(conv, 'd' | 'i' | 'u') {
            return None;
        }
        let spec = &rest[..spec_len];
        let digits = if spec.starts_with('0') { spec.parse().unwrap_or(0) } else { 0 };
        let suffix = rest[spec_len + 1..].replace("%%", "%");
        return Some((prefix, digits, suffix));
    }
    None
}

/// Whether `name` is one of the file names the pattern produces (`frames_%05d.png` and
/// `frames_00012.png`); a pattern without a conversion matches only itself.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let Some((prefix, digits, suffix)) = split_pattern(pattern) else { return pattern == name };
    let Some(middle) = name.strip_prefix(prefix.as_str()).and_then(|m| m.strip_suffix(suffix.as_str())) else { return false };
    !middle.is_empty() && middle.len() >= digits.max(1) && middle.bytes().all(|b| b.is_ascii_digit())
}

/// Whether two patterns in one folder can produce the same name (a cautious over-estimate: the
/// longer prefix and suffix may only add digits).
fn patterns_overlap(a: &str, b: &str) -> bool {
    let (Some((pa, _, sa)), Some((pb, _, sb))) = (split_pattern(a), split_pattern(b)) else { return a == b };
    let digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    let prefix_ok = pa.strip_prefix(pb.as_str()).or_else(|| pb.strip_prefix(pa.as_str())).is_some_and(digits);
    let suffix_ok = sa.strip_suffix(sb.as_str()).or_else(|| sb.strip_suffix(sa.as_str())).is_some_and(digits);
    prefix_ok && suffix_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lightunet-plan-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("f_%05d.png", "f_00012.png"));
        assert!(pattern_matches("f_%05d.png", "f_123456.png"));
        assert!(!pattern_matches("f_%05d.png", "f_12.png"));
        assert!(!pattern_matches("f_%05d.png", "f_0001a.png"));
        assert!(pattern_matches("f%d.png", "f7.png"));
        assert!(pattern_matches("100%%_%d.png", "100%_3.png"));
        assert!(pattern_matches("plain.png", "plain.png"));
        assert!(patterns_overlap("f%d.png", "f%05d.png"));
        assert!(patterns_overlap("f%d.png", "f1%d.png"));
        assert!(!patterns_overlap("f%d.png", "f_%d.png"));
        assert!(!patterns_overlap("f_%05d.png", "m_%05d.png"));
    }

    #[test]
    fn same_file_by_path_link_and_inode() {
        let d = scratch("same");
        let input = d.join("in.mp4");
        std::fs::write(&input, b"x").unwrap();
        let check = |out: &Path, overwrite: bool| OutputPlan::new().input("input", &input).file("-o", out, overwrite).check();
        let e = check(&input, true).unwrap_err().to_string();
        assert!(e.contains("same file as the input") && e.contains("in.mp4") && !e.contains("link"), "{e}");
        #[cfg(unix)]
        {
            let link = d.join("link.mp4");
            std::os::unix::fs::symlink(&input, &link).unwrap();
            let e = check(&link, true).unwrap_err().to_string();
            assert!(e.contains("symbolic link"), "{e}");
        }
        let hard = d.join("hard.mp4");
        std::fs::hard_link(&input, &hard).unwrap();
        let e = check(&hard, true).unwrap_err().to_string();
        assert!(e.contains("hard link"), "{e}");
        // Without --overwrite the clash is still what is reported (not "already exists").
        assert!(matches!(check(&hard, false).unwrap_err(), OutputError::SameFile { .. }));
        // Another name is fine.
        check(&d.join("other.mp4"), false).unwrap();
    }

    #[test]
    fn two_outputs_one_name_and_sequences() {
        let d = scratch("two");
        let o = d.join("o.mp4");
        let e = OutputPlan::new().file("-o", &o, false).file("--masks", d.join(".").join("o.mp4"), false).check().unwrap_err();
        assert!(matches!(e, OutputError::SameFile { other_is_input: false, .. }), "{e}");
        let e = OutputPlan::new().sequence("-o", d.join("f_%05d.png"), false).file("--report", d.join("f_00003.png"), false).check().unwrap_err();
        assert!(matches!(e, OutputError::InSequence { .. }), "{e}");
        let e = OutputPlan::new().sequence("-o", d.join("f_%05d.png"), false).sequence("--masks", d.join("f_%d.png"), false).check().unwrap_err();
        assert!(matches!(e, OutputError::SequencesOverlap { .. }), "{e}");
        OutputPlan::new().sequence("-o", d.join("f_%05d.png"), false).sequence("--masks", d.join("m_%05d.png"), false).check().unwrap();
        std::fs::write(d.join("f_00000.png"), b"x").unwrap();
        let e = OutputPlan::new().sequence("-o", d.join("f_%05d.png"), false).check().unwrap_err();
        assert!(matches!(e, OutputError::Exists { .. }), "{e}");
    }

    #[test]
    fn folders_apart_from_inputs() {
        let d = scratch("folders");
        let (images, masks) = (d.join("images"), d.join("masks"));
        std::fs::create_dir_all(&images).unwrap();
        std::fs::create_dir_all(&masks).unwrap();
        let plan = |out: &Path| {
            let mut p = OutputPlan::new();
            p.input_folder("--images", &images).input_folder("--masks", &masks).folder("--out", out, &["masks", "overlays"], false);
            p.check()
        };
        for (out, relation) in [(d.clone(), "contains"), (masks.clone(), "is"), (masks.join("new"), "lies inside")] {
            let e = plan(&out).unwrap_err();
            assert!(matches!(e, OutputError::Nested { relation: r, .. } if r == relation), "{}: {e}", out.display());
        }
        plan(&d.join("out/deeper")).unwrap();
        let out = d.join("out");
        std::fs::create_dir_all(out.join("masks")).unwrap();
        plan(&out).unwrap(); // an empty masks folder holds nothing
        std::fs::write(out.join("masks/a.png"), b"x").unwrap();
        assert!(matches!(plan(&out).unwrap_err(), OutputError::FolderHolds { .. }));
    }

    #[test]
    fn locations() {
        let d = scratch("where");
        let e = OutputPlan::new().file("--report", d.join("missing/r.json"), false).check().unwrap_err();
        assert!(matches!(e, OutputError::FolderMissing { .. }), "{e}");
        let e = OutputPlan::new().file("--report", &d, true).check().unwrap_err();
        assert!(matches!(e, OutputError::IsFolder { .. }), "{e}");
        std::fs::write(d.join("f"), b"x").unwrap();
        let e = OutputPlan::new().file("--report", d.join("f/r.json"), false).check().unwrap_err();
        assert!(matches!(e, OutputError::ParentNotFolder { .. }), "{e}");
        // Special files are streams: no --overwrite needed, never "the same file".
        #[cfg(unix)]
        OutputPlan::new().file("--metadata", "/dev/null", false).file("--report", "/dev/null", false).check().unwrap();
    }
}
