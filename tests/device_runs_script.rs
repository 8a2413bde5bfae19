//! `scripts/device-runs.sh` (the GPU machine's side-by-side training runs) with `DEVICE=cpu` on
//! generated data: two runs stopped at the time limit come back resumable, a second call
//! continues them from the parts it brought back, and a third from whole run folders.

mod train_util;

use std::path::Path;
use std::process::Command;

use train_util::{temp_dir, write_dataset};

fn call(root: &Path, out: &str, limit: &str, resume: Option<&Path>) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/device-runs.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .arg(root.join("runs.txt"))
        .env("BIN", env!("CARGO_BIN_EXE_lightunet"))
        .env("DATA", root)
        .env("OUT", root.join(out))
        .env("DEVICE", "cpu")
        .env("LIMIT", limit)
        .env("WORK", root.join(format!("work-{out}")));
    if let Some(r) = resume {
        cmd.env("RESUME", r);
    }
    let o = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{text}");
    text
}

fn epochs(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"].as_u64().unwrap())
        .collect()
}

/// Both runs of call `next` resumed and extended the logs call `prev` brought back.
fn continues(root: &Path, prev: &str, next: &str, text: &str) {
    assert!(text.contains("--resume"), "{text}");
    for name in ["a", "b"] {
        let (before, after) = (epochs(&root.join(prev).join("runs").join(name)), epochs(&root.join(next).join("runs").join(name)));
        assert!(after.len() > before.len(), "{name}: {} epochs, then {}\n{text}", before.len(), after.len());
        assert_eq!(after[..before.len()], before[..], "{name}: the log of {next} does not continue {prev}'s");
    }
}

#[test]
fn runs_side_by_side_stop_at_the_limit_and_resume() {
    let root = temp_dir("device-runs");
    write_dataset(&root, 6, 3, 32);
    // Early stopping out of reach: only the time limit ends these runs.
    let flags = "--size 32 --batch 2 --patience 100000 --epochs 100000";
    std::fs::write(root.join("runs.txt"), format!("# two seeds\na --seed 1 {flags}\n\nb --seed 2 {flags} --loss bce-dice\n")).unwrap();
    let first = call(&root, "out1", "6", None);
    for name in ["a", "b"] {
        assert!(first.contains(&format!("== {name}: exit 124")), "{first}");
        let run = root.join("out1/runs").join(name);
        for f in ["log.jsonl", "config.json", "best.safetensors", "train.log", "checkpoint.part-aa"] {
            assert!(run.join(f).is_file(), "{name}: no {f}\n{first}");
        }
        assert!(!epochs(&run).is_empty(), "{name}: no epoch in 6 s\n{first}");
    }
    // The second call continues both from the parts the first brought back.
    let second = call(&root, "out2", "4", Some(&root.join("out1/runs")));
    continues(&root, "out1", "out2", &second);
    // A third call continues from run folders of `lightunet train` (a whole checkpoint, no
    // parts): the second call's own work folders; `device-check.sh`'s step `train` resumes so.
    let third = call(&root, "out3", "4", Some(&root.join("work-out2")));
    continues(&root, "out2", "out3", &third);
}
