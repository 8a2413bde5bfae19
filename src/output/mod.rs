//! Output safety: no choice of input and output names destroys data.
//!
//! Every subcommand that writes builds an [`OutputPlan`] of the run's inputs and outputs, with
//! their roles, and [`OutputPlan::check`]s it before anything is opened:
//! - an output may not be an input or another output: existing files are compared by device and
//!   inode (so symbolic and hard links are caught), new ones by their canonical folder and name;
//!   `--overwrite` never allows it;
//! - an output folder may not be, contain or lie inside an input folder;
//! - every output's folder exists and takes files, the name is not a folder, and an existing
//!   output is only replaced with `--overwrite`.
//!
//! Outputs are then written under a temporary name in their own folder ([`PendingFile`],
//! [`PendingDir`], created exclusively) and moved into place together when the run has finished
//! them ([`Staged::commit`]); a failed run drops them, so it leaves nothing behind. Without
//! `--overwrite` the final rename never replaces a file that appeared meanwhile (another run):
//! `renameat2(RENAME_NOREPLACE)`, or link and unlink where the file system lacks it, both through
//! `tempfile`'s `persist_noclobber`; the outputs this run had already moved are taken back.
//!
//! Policies:
//! - A `%d` pattern (a PNG sequence) is written into a temporary folder beside its files; at the
//!   end each file is moved into place in frame order, each without replacing an existing one
//!   unless `--overwrite`. With `--overwrite`, files of an earlier, longer sequence beyond the
//!   new last frame are left as they were.
//! - A whole output folder (`predict --out`, `train --write-resized`) is staged next to it and
//!   renamed into place when it does not exist yet, else merged file by file as above.
//! - An existing special file (a FIFO, `/dev/stdout`, `/dev/null`) is written in place: it is a
//!   stream, not stored data, so it needs no `--overwrite` and is never renamed over.
//! - A live recording (`live --record`, [`crate::pipeline::sink::Recording`]) is checked by the
//!   same plan but not staged: it must survive a crash where the user looks for it, so it is
//!   created under its own name before the first frame (exclusively without `--overwrite`, so a
//!   file that appeared since the check is kept; with `--overwrite` an existing file is
//!   truncated then, not replaced at the end), synced every second, and left in place when the
//!   run fails. A recording that got no frame is removed (one this run created, never a special
//!   file).
//! - A process killed outright (SIGKILL, a second Ctrl-C) can leave a hidden temporary
//!   `.NAME.lightunet-XXXXXX.part` file or folder; [`discard_pending`] removes the ones this
//!   process made and is called on a second Ctrl-C.

mod error;
mod pending;
mod plan;

pub use error::{OutputError, Result};
pub use pending::{discard_pending, Pending, PendingDir, PendingFile, Staged};
pub use plan::{pattern_matches, OutputPlan};
