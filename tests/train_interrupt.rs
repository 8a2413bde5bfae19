//! Ctrl-C (SIGINT) during `lightunet train` finishes the current step, writes a resumable
//! checkpoint and exits successfully; the run then resumes from it.

mod train_util;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use train_util::{temp_dir, write_dataset};

#[test]
fn sigint_writes_a_resumable_checkpoint() {
    let root = temp_dir("interrupt");
    write_dataset(&root, 8, 2, 32);
    let run = root.join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lightunet"))
        .args(["train", "--model", "lighter@1", "--size", "32", "--batch", "2", "--epochs", "100", "--quiet"])
        .arg("--data")
        .arg(&root)
        .arg("--out")
        .arg(&run)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training has started, then interrupt.
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("steps per epoch") {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", rest.join("\n"));
    assert!(stdout.contains("interrupted at step"), "{stdout}");
    let ckpt = run.join("checkpoint.safetensors");
    assert!(ckpt.is_file());
    let (_, meta) = lightunet::train::checkpoint::load_tensors(&ckpt).unwrap();
    let state: serde_json::Value = serde_json::from_str(&meta["state"]).unwrap();
    let step = state["global_step"].as_u64().unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_lightunet"))
        .args(["train", "--quiet", "--max-steps", &(step + 1).to_string(), "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("stopped at step {}", step + 1)));
    let leftovers: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let _ = std::fs::remove_dir_all(&root);
}
