//! Running the `lightunet` binary from a test under a time limit: a hang fails the test instead
//! of hanging CI, and both output pipes are read as the child runs.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A finished run of the binary.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub seconds: f64,
}

impl Run {
    /// Failed with exit status `code`, cleanly (no panic), saying `needle`.
    pub fn assert_fails_with(&self, code: i32, needle: &str) {
        assert_eq!(self.code, Some(code), "exit status: {}", self.stderr);
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        assert!(self.stderr.contains(needle), "expected `{needle}` in: {}", self.stderr);
    }

    /// Failed with some exit status (not a signal), cleanly, saying `needle`.
    pub fn assert_clean_failure(&self, needle: &str) {
        assert!(self.code.is_some_and(|c| c != 0), "should fail with a status: {:?}\n{}", self.code, self.stderr);
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        assert!(self.stderr.contains(needle), "expected `{needle}` in: {}", self.stderr);
    }
}

pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lightunet"));
    cmd.args(args).env("RUST_LOG", "warn").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("runs")
}

/// Waits for `child` at most `limit`; a child still running then is killed and fails the test.
pub fn finish(mut child: Child, limit: Duration, what: &str) -> Run {
    let start = Instant::now();
    // Read both pipes on threads, so that a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {} s (hang)\n{}", limit.as_secs(), err.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run { code: status.code(), stdout: out.join().unwrap(), stderr: err.join().unwrap(), seconds: start.elapsed().as_secs_f64() }
}

pub fn lightunet(args: &[&str]) -> Run {
    finish(spawn(args, &[]), Duration::from_secs(120), &args.join(" "))
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
