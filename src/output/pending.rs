//! Outputs written under a temporary name in their own folder and moved into place together at
//! the end of a run (see the module header of [`crate::output`] for the policies).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tempfile::{NamedTempFile, TempDir, TempPath};

use super::error::{OutputError, Result};

/// Temporary files and folders of this process not yet moved into place or removed, for
/// [`discard_pending`].
static PENDING: Mutex<BTreeMap<u64, PathBuf>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
/// Held while a [`Staged::commit`] moves outputs into place, and by [`discard_pending`]: an exit
/// during a commit waits for it, so that a run's outputs are all in place or none are.
static COMMITTING: Mutex<()> = Mutex::new(());

fn pending() -> std::sync::MutexGuard<'static, BTreeMap<u64, PathBuf>> {
    // A poisoned registry only means a thread panicked while holding it; the map is still whole.
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// A temporary path in [`PENDING`] for as long as this lives.
#[derive(Debug)]
struct Registered(u64);

impl Registered {
    fn new(path: &Path) -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        pending().insert(id, path.to_path_buf());
        Registered(id)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        pending().remove(&self.0);
    }
}

/// Removes every temporary output of this process that is not yet in place: for an exit that
/// skips destructors (a second Ctrl-C calls it before `exit`). A commit under way is waited for
/// (it moves outputs, it does not encode: short).
pub fn discard_pending() {
    let _committing = COMMITTING.lock().unwrap_or_else(|e| e.into_inner());
    for path in pending().values() {
        if !path.is_dir() {
            let _ = std::fs::remove_file(path);
            continue;
        }
        // A writer (multifilesink) may still be adding files: moved aside first, the folder
        // takes no new ones (they are opened by path), so the removal cannot race a new file.
        let mut aside = path.clone().into_os_string();
        aside.push(".discard");
        let aside = PathBuf::from(aside);
        let target = if std::fs::rename(path, &aside).is_ok() { aside } else { path.clone() };
        for _ in 0..10 {
            if std::fs::remove_dir_all(&target).is_ok() || !target.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// `.NAME.lightunet-XXXXXX.part`, with NAME cut to 64 bytes so that a long final name still
/// leaves room within the 255 bytes a file name may have.
fn temp_builder<'a>(name: &OsStr, prefix: &'a mut String) -> tempfile::Builder<'a, 'static> {
    let full = name.to_string_lossy();
    let mut end = full.len().min(64);
    while !full.is_char_boundary(end) {
        end -= 1;
    }
    *prefix = format!(".{}.lightunet-", &full[..end]);
    let mut b = tempfile::Builder::new();
    b.prefix(prefix.as_str()).suffix(".part").rand_bytes(6);
    b
}

fn parent_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// A symbolic link followed to the name it points at, existing or not: an output written
/// through a link replaces the link's target, as writing to it always did. The kernel resolves
/// links that lead somewhere (`/dev/stdout` goes through `/proc` links that only it can follow);
/// a dangling chain is followed by hand.
fn follow_links(path: &Path) -> PathBuf {
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return path.to_path_buf();
    }
    if let Ok(target) = std::fs::canonicalize(path) {
        return target;
    }
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::read_link(&p) {
            Ok(target) => p = if target.is_absolute() { target } else { parent_of(&p).join(target) },
            Err(_) => break,
        }
    }
    p
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// What a failed commit takes back: only what this run created, checked by inode, and only
/// when it replaced nothing (without `--overwrite`).
#[derive(Default)]
struct Undo {
    files: Vec<(PathBuf, Option<(u64, u64)>)>,
    trees: Vec<(PathBuf, Option<(u64, u64)>)>,
    dirs: Vec<PathBuf>,
}

impl Undo {
    fn run(self) {
        for (path, id) in self.files.into_iter().rev() {
            if id.is_some() && file_id(&path) == id {
                let _ = std::fs::remove_file(&path);
            }
        }
        for (path, id) in self.trees.into_iter().rev() {
            if id.is_some() && file_id(&path) == id {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
        for dir in self.dirs.into_iter().rev() {
            let _ = std::fs::remove_dir(&dir); // only when empty
        }
    }
}

fn sync_folder(dir: &Path) {
    // Makes the renames durable; not supported everywhere: best effort.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A file that a writer makes beside a temporary output for its own use (mp4mux's
/// `faststart-file`): in [`PENDING`] (a second Ctrl-C removes it with the output) and removed
/// when dropped, if the writer left it behind.
struct SideFile {
    path: PathBuf,
    _registered: Registered,
}

impl Drop for SideFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

enum Inner {
    Temp(NamedTempFile),
    /// An existing FIFO or device, written in place.
    Direct(File),
}

/// One output file, written under a temporary name beside its final one (created exclusively)
/// until [`Staged::commit`] renames it into place; dropped, it is removed.
pub struct PendingFile {
    role: String,
    dest: PathBuf,
    overwrite: bool,
    inner: Inner,
    _registered: Option<Registered>,
    side: Vec<SideFile>,
}

impl PendingFile {
    /// Creates the temporary file for `dest` (in `dest`'s folder). An existing special file (a
    /// FIFO, `/dev/stdout`) is opened for writing instead and written in place.
    pub fn create(role: &str, dest: impl AsRef<Path>, overwrite: bool) -> Result<Self> {
        let given = dest.as_ref();
        if let Ok(m) = std::fs::metadata(given) {
            if !m.is_file() && !m.is_dir() {
                let f = std::fs::OpenOptions::new().write(true).open(given).map_err(|e| OutputError::io(role, given, e))?;
                return Ok(PendingFile { role: role.into(), dest: given.to_path_buf(), overwrite, inner: Inner::Direct(f), _registered: None, side: Vec::new() });
            }
        }
        let dest = follow_links(given);
        let name = dest.file_name().ok_or_else(|| OutputError::NotAFileName { role: role.into(), path: dest.clone() })?;
        let folder = parent_of(&dest);
        let mut prefix = String::new();
        let tmp = temp_builder(name, &mut prefix)
            .permissions(std::fs::Permissions::from_mode(0o666)) // then the umask, as File::create
            .tempfile_in(folder)
            .map_err(|error| OutputError::NotWritable { role: role.into(), path: dest.clone(), folder: folder.to_path_buf(), error })?;
        let registered = Registered::new(tmp.path());
        Ok(PendingFile { role: role.into(), dest, overwrite, inner: Inner::Temp(tmp), _registered: Some(registered), side: Vec::new() })
    }

    /// Where the run writes: the temporary file (or the special file itself).
    pub fn path(&self) -> &Path {
        match &self.inner {
            Inner::Temp(t) => t.path(),
            Inner::Direct(_) => &self.dest,
        }
    }

    /// A name beside the temporary file (`suffix` appended) for a writer's side file, removed
    /// with the output: when this is committed or dropped, and by [`discard_pending`]. `None`
    /// for a special file written in place (no folder of ours to put it in).
    pub fn side_file(&mut self, suffix: &str) -> Option<PathBuf> {
        let Inner::Temp(t) = &self.inner else { return None };
        let mut path = t.path().as_os_str().to_owned();
        path.push(suffix);
        let path = PathBuf::from(path);
        self.side.push(SideFile { _registered: Registered::new(&path), path: path.clone() });
        Some(path)
    }

    /// Where the file goes at the end.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Another handle on the file, for a writer of its own (`--metadata` lines).
    pub fn handle(&self) -> Result<File> {
        match &self.inner {
            Inner::Temp(t) => t.as_file().try_clone(),
            Inner::Direct(f) => f.try_clone(),
        }
        .map_err(|e| OutputError::io(&self.role, &self.dest, e))
    }

    /// Writes all of `bytes` (for outputs written in one piece: reports).
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.inner {
            Inner::Temp(t) => t.as_file_mut().write_all(bytes),
            Inner::Direct(f) => f.write_all(bytes),
        }
        .map_err(|e| OutputError::io(&self.role, &self.dest, e))
    }

    fn commit(self, undo: &mut Undo) -> Result<()> {
        let PendingFile { role, dest, overwrite, inner, _registered, side } = self;
        drop(side); // the writer is done with them
        let tmp = match inner {
            Inner::Direct(mut f) => return f.flush().map_err(|e| OutputError::io(&role, &dest, e)),
            Inner::Temp(t) => t,
        };
        tmp.as_file().sync_all().map_err(|e| OutputError::io(&role, &dest, e))?;
        let id = file_id(tmp.path());
        let moved = if overwrite { tmp.persist(&dest) } else { tmp.persist_noclobber(&dest) };
        match moved {
            Ok(_) => {
                if !overwrite {
                    undo.files.push((dest.clone(), id));
                }
                sync_folder(parent_of(&dest));
                Ok(())
            }
            Err(e) if e.error.kind() == ErrorKind::AlreadyExists => Err(OutputError::AppearedMeanwhile { role, path: dest }),
            Err(e) => Err(OutputError::io(&role, &dest, e.error)),
        }
    }
}

/// A temporary folder whose contents go into place at the end: the files of a `%d` sequence
/// ([`PendingDir::files_into`]) or a whole output folder ([`PendingDir::folder`]).
pub struct PendingDir {
    role: String,
    dest: PathBuf,
    overwrite: bool,
    tmp: TempDir,
    /// `dest` did not exist: the temporary folder is beside it and is renamed to it.
    whole: bool,
    _registered: Registered,
}

impl PendingDir {
    fn make(role: &str, dest: &Path, overwrite: bool, inside: &Path, whole: bool) -> Result<Self> {
        let name = dest.file_name().unwrap_or(OsStr::new("output"));
        let mut prefix = String::new();
        let tmp = temp_builder(name, &mut prefix)
            .permissions(std::fs::Permissions::from_mode(0o777))
            .tempdir_in(inside)
            .map_err(|error| OutputError::NotWritable { role: role.into(), path: dest.to_path_buf(), folder: inside.to_path_buf(), error })?;
        let registered = Registered::new(tmp.path());
        Ok(PendingDir { role: role.into(), dest: dest.to_path_buf(), overwrite, tmp, whole, _registered: registered })
    }

    /// A temporary folder inside the existing `folder`; at the end each file in it is moved into
    /// `folder`, in name order.
    pub fn files_into(role: &str, folder: impl AsRef<Path>, overwrite: bool) -> Result<Self> {
        let folder = folder.as_ref();
        Self::make(role, folder, overwrite, folder, false)
    }

    /// A whole output folder: staged beside `dest` (its missing parents are created) and renamed
    /// into place when `dest` does not exist, else staged inside it and merged file by file.
    pub fn folder(role: &str, dest: impl AsRef<Path>, overwrite: bool) -> Result<Self> {
        let dest = follow_links(dest.as_ref());
        if dest.is_dir() {
            return Self::make(role, &dest, overwrite, &dest, false);
        }
        let parent = parent_of(&dest);
        std::fs::create_dir_all(parent).map_err(|e| OutputError::io(role, parent, e))?;
        Self::make(role, &dest, overwrite, parent, true)
    }

    /// Where the run writes.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Where the contents go at the end.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    fn commit(self, undo: &mut Undo) -> Result<()> {
        let PendingDir { role, dest, overwrite, mut tmp, whole, _registered } = self;
        let io = |path: &Path, e: std::io::Error| OutputError::io(&role, path, e);
        sync_files(tmp.path()).map_err(|e| io(&dest, e))?;
        if whole && std::fs::symlink_metadata(&dest).is_err() {
            let id = file_id(tmp.path());
            let path = TempPath::try_from_path(tmp.path()).map_err(|e| io(&dest, e))?;
            match path.persist_noclobber(&dest) {
                Ok(()) => {
                    tmp.disable_cleanup(true);
                    undo.trees.push((dest.clone(), id));
                    sync_folder(parent_of(&dest));
                    return Ok(());
                }
                Err(e) => {
                    // Not moved (a folder cannot be hard-linked where renameat2 is missing, or
                    // one appeared meanwhile): merge below. Keep the temporary folder's own
                    // cleanup, not TempPath's.
                    let _ = e.path.keep();
                    match std::fs::create_dir(&dest) {
                        Ok(()) => undo.dirs.push(dest.clone()),
                        Err(e) if e.kind() == ErrorKind::AlreadyExists && dest.is_dir() => {}
                        Err(e) => return Err(io(&dest, e)),
                    }
                }
            }
        }
        merge(&role, tmp.path(), &dest, overwrite, undo)?;
        sync_folder(&dest);
        Ok(())
    }
}

/// Flushes every file under `dir` to disk before the renames make them visible.
fn sync_files(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_files(&entry.path())?;
        } else {
            File::open(entry.path())?.sync_all()?;
        }
    }
    Ok(())
}

/// Moves everything in `from` into `to` (which exists), in name order, subfolders created as
/// needed; without `overwrite`, an existing name is an error and nothing is replaced.
fn merge(role: &str, from: &Path, to: &Path, overwrite: bool, undo: &mut Undo) -> Result<()> {
    let io = |path: &Path, e: std::io::Error| OutputError::io(role, path, e);
    let mut entries: Vec<_> = std::fs::read_dir(from).map_err(|e| io(from, e))?.collect::<std::io::Result<_>>().map_err(|e| io(from, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().map_err(|e| io(&src, e))?.is_dir() {
            match std::fs::create_dir(&dst) {
                Ok(()) => undo.dirs.push(dst.clone()),
                Err(e) if e.kind() == ErrorKind::AlreadyExists && dst.is_dir() => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(OutputError::AppearedMeanwhile { role: role.into(), path: dst }),
                Err(e) => return Err(io(&dst, e)),
            }
            merge(role, &src, &dst, overwrite, undo)?;
            continue;
        }
        let id = file_id(&src);
        if overwrite {
            std::fs::rename(&src, &dst).map_err(|e| io(&dst, e))?;
            continue;
        }
        match TempPath::try_from_path(&src).map_err(|e| io(&src, e))?.persist_noclobber(&dst) {
            Ok(()) => undo.files.push((dst, id)),
            Err(e) if e.error.kind() == ErrorKind::AlreadyExists => {
                return Err(OutputError::AppearedMeanwhile { role: role.into(), path: dst })
            }
            Err(e) => return Err(io(&dst, e.error)),
        }
    }
    Ok(())
}

/// One pending output.
pub enum Pending {
    File(PendingFile),
    Dir(PendingDir),
}

impl From<PendingFile> for Pending {
    fn from(f: PendingFile) -> Self {
        Pending::File(f)
    }
}

impl From<PendingDir> for Pending {
    fn from(d: PendingDir) -> Self {
        Pending::Dir(d)
    }
}

/// The pending outputs of a run, moved into place together by [`Staged::commit`]; dropped, they
/// are removed.
#[derive(Default)]
pub struct Staged {
    items: Vec<Pending>,
}

impl Staged {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, p: impl Into<Pending>) {
        self.items.push(p.into());
    }

    pub fn append(&mut self, other: Staged) {
        self.items.extend(other.items);
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Moves every output into place, in the order they were added. When one fails, those
    /// already moved that replaced nothing are taken back and the rest are removed, so the
    /// error leaves the folders as they were (with `--overwrite`, replaced files stay replaced).
    pub fn commit(self) -> Result<()> {
        let _committing = COMMITTING.lock().unwrap_or_else(|e| e.into_inner());
        let mut undo = Undo::default();
        for item in self.items {
            let done = match item {
                Pending::File(f) => f.commit(&mut undo),
                Pending::Dir(d) => d.commit(&mut undo),
            };
            if let Err(e) = done {
                undo.run();
                return Err(e);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lightunet-pending-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn file_appears_only_at_commit_and_never_clobbers() {
        let d = scratch("file");
        let dest = d.join("r.json");
        let mut p = PendingFile::create("--report", &dest, false).unwrap();
        p.write_all(b"new").unwrap();
        assert!(!dest.exists());
        assert_eq!(pending().values().filter(|v| v.starts_with(&d)).count(), 1);
        // Another run got there first: its file stays, ours is discarded.
        std::fs::write(&dest, b"theirs").unwrap();
        let mut s = Staged::new();
        s.push(p);
        let e = s.commit().unwrap_err();
        assert!(matches!(e, OutputError::AppearedMeanwhile { .. }), "{e}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"theirs");
        assert_eq!(names(&d), ["r.json"]);
        // With --overwrite, a plain rename.
        let mut p = PendingFile::create("--report", &dest, true).unwrap();
        p.write_all(b"new").unwrap();
        let mut s = Staged::new();
        s.push(p);
        s.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert_eq!(names(&d), ["r.json"]);
    }

    /// mp4mux's faststart file beside an output: a second Ctrl-C (which stops no muxer) left it
    /// behind. Registered, it goes with the output: at commit, on drop, and in discard_pending.
    #[test]
    fn side_files_go_with_their_output() {
        let d = scratch("side");
        let mut p = PendingFile::create("-o", d.join("v.mp4"), false).unwrap();
        let side = p.side_file(".faststart").unwrap();
        assert!(side.starts_with(&d) && side.to_string_lossy().ends_with(".part.faststart"), "{}", side.display());
        assert!(pending().values().any(|v| v == &side), "discard_pending removes it");
        std::fs::write(&side, b"mdat").unwrap();
        drop(p);
        assert!(names(&d).is_empty(), "{:?}", names(&d));
        assert!(!pending().values().any(|v| v == &side));

        let mut p = PendingFile::create("-o", d.join("v.mp4"), false).unwrap();
        let side = p.side_file(".faststart").unwrap();
        std::fs::write(&side, b"mdat").unwrap();
        let mut s = Staged::new();
        s.push(p);
        s.commit().unwrap();
        assert_eq!(names(&d), ["v.mp4"]);
    }

    #[test]
    fn failed_commit_takes_back_what_it_moved() {
        let d = scratch("undo");
        let mut s = Staged::new();
        let mut a = PendingFile::create("a", d.join("a"), false).unwrap();
        a.write_all(b"a").unwrap();
        let seq = PendingDir::files_into("seq", &d, false).unwrap();
        std::fs::write(seq.path().join("f_0.png"), b"0").unwrap();
        std::fs::write(seq.path().join("f_1.png"), b"1").unwrap();
        let b = PendingFile::create("b", d.join("b"), false).unwrap();
        s.push(a);
        s.push(seq);
        s.push(b);
        std::fs::write(d.join("b"), b"theirs").unwrap();
        assert!(s.commit().is_err());
        assert_eq!(names(&d), ["b"], "a and the sequence were taken back, the temporaries removed");
    }

    #[test]
    fn whole_folder_renamed_into_place_or_merged() {
        let d = scratch("folder");
        let out = d.join("deep/out");
        let p = PendingDir::folder("--out", &out, false).unwrap();
        std::fs::create_dir(p.path().join("masks")).unwrap();
        std::fs::write(p.path().join("masks/x.png"), b"x").unwrap();
        let mut s = Staged::new();
        s.push(p);
        s.commit().unwrap();
        assert_eq!(names(&out), ["masks"]);
        assert_eq!(names(&d.join("deep")), ["out"]);
        // Again into the existing folder: merged; a clash without --overwrite is refused.
        let p = PendingDir::folder("--out", &out, false).unwrap();
        std::fs::create_dir(p.path().join("masks")).unwrap();
        std::fs::write(p.path().join("masks/y.png"), b"y").unwrap();
        std::fs::write(p.path().join("metrics.json"), b"{}").unwrap();
        let mut s = Staged::new();
        s.push(p);
        s.commit().unwrap();
        assert_eq!(names(&out), ["masks", "metrics.json"]);
        assert_eq!(names(&out.join("masks")), ["x.png", "y.png"]);
        let p = PendingDir::folder("--out", &out, false).unwrap();
        std::fs::write(p.path().join("metrics.json"), b"new").unwrap();
        let mut s = Staged::new();
        s.push(p);
        assert!(s.commit().is_err());
        assert_eq!(std::fs::read(out.join("metrics.json")).unwrap(), b"{}");
        assert_eq!(names(&out), ["masks", "metrics.json"]);
    }

    #[test]
    fn dropped_outputs_leave_nothing_and_long_names_work() {
        let d = scratch("drop");
        let long = "é".repeat(120) + ".json"; // 245 bytes
        {
            let mut p = PendingFile::create("--report", d.join(&long), false).unwrap();
            p.write_all(b"x").unwrap();
            let _dir = PendingDir::folder("--out", d.join("out"), false).unwrap();
        }
        assert!(names(&d).is_empty());
        let mut p = PendingFile::create("--report", d.join(&long), false).unwrap();
        p.write_all(b"x").unwrap();
        let mut s = Staged::new();
        s.push(p);
        s.commit().unwrap();
        assert_eq!(names(&d), [long]);
    }

    #[test]
    fn written_through_a_link_to_its_target() {
        let d = scratch("link");
        let (target, link, dangling) = (d.join("target.json"), d.join("link.json"), d.join("dangling.json"));
        std::fs::write(&target, b"old").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        std::os::unix::fs::symlink(d.join("new.json"), &dangling).unwrap();
        let mut s = Staged::new();
        for (p, bytes) in [(&link, b"via link"), (&dangling, b"via dang")] {
            let mut f = PendingFile::create("--report", p, true).unwrap();
            f.write_all(bytes).unwrap();
            s.push(f);
        }
        s.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"via link");
        assert_eq!(std::fs::read(d.join("new.json")).unwrap(), b"via dang");
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert!(std::fs::symlink_metadata(&dangling).unwrap().file_type().is_symlink());
    }

    #[test]
    fn special_files_are_written_in_place() {
        let mut p = PendingFile::create("--metadata", "/dev/null", false).unwrap();
        p.write_all(b"line\n").unwrap();
        assert_eq!(p.path(), Path::new("/dev/null"));
        let mut s = Staged::new();
        s.push(p);
        s.commit().unwrap();
        assert!(Path::new("/dev/null").exists());
    }
}
