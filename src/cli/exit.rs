//! The exit statuses of `lightunet` (listed in `--help` and the README), and the errors that
//! carry one other than 1. 0 is success and 2 a usage error (clap's own).

use std::process::ExitCode;

/// The command failed: the message says why; a failed run writes no output (`live` keeps what
/// it recorded before its source failed).
pub const FAILURE: u8 = 1;
/// `process` finished and finalised its outputs, but input frames were lost on the way.
pub const FRAMES_LOST: u8 = 3;
/// Interrupted (Ctrl-C or SIGTERM; 128 + SIGINT, as shells report): `process` finalised its
/// outputs with the frames so far, `predict` wrote nothing; a second interrupt exits at once and
/// leaves no output. `live` and `train` end on Ctrl-C as their normal stop (0).
pub const INTERRUPTED: u8 = 130;

/// The text of `--help`'s exit status section (the README has the same list).
pub const HELP: &str = "Exit status:
  0    success: every input frame was processed
  1    error: the message says why; a run that fails writes no output (but live, whose
       source failed part-way, keeps what it recorded)
  2    usage error: wrong arguments
  3    process: finished and finalised the outputs, but input frames were lost (decode errors,
       timestamp gaps, a truncated file, an input that failed or stalled part-way); the loss is
       in the summary and in --report; --accept-loss exits 0 instead
  130  interrupted (Ctrl-C or SIGTERM): process finalised its outputs with the frames so far,
       predict and train's --write-resized wrote nothing; a second interrupt exits at once and
       leaves no output. live and train end on Ctrl-C as their normal stop: 0 (train keeps a
       checkpoint to resume from)";

/// An error whose exit status is not [`FAILURE`].
#[derive(Debug)]
pub struct WithStatus {
    pub status: u8,
    pub message: String,
}

impl std::fmt::Display for WithStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WithStatus {}

/// The exit status for an error: its own when it carries one, else [`FAILURE`].
pub fn status_of(err: &anyhow::Error) -> ExitCode {
    ExitCode::from(err.downcast_ref::<WithStatus>().map_or(FAILURE, |e| e.status))
}
