//! `lightunet bench train` runs real training steps on random data and reports them as JSON
//! (the timing itself is not checked: these machines are shared).

use std::process::Command;

#[test]
fn bench_train_reports_steps_as_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_lightunet"))
        .args(["bench", "train", "--model", "lighter@1", "--batch", "2", "--size", "32", "--steps", "2", "--warmup", "0", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["variant"], "lighter@1");
    assert_eq!(v["batch"], 2);
    assert_eq!(v["step_seconds"].as_array().map(Vec::len), Some(2));
    let step = v["median_s_step"].as_f64().unwrap();
    assert!(step > 0.0);
    let phases: Vec<f64> = ["forward_loss", "backward", "optimizer"].iter().map(|k| v["median_phase_s"][k].as_f64().unwrap()).collect();
    assert!(phases.iter().all(|&p| p > 0.0), "{phases:?}");
    // Medians of parts need not add up exactly, but cannot exceed the slowest step by far.
    let max = v["max_s_step"].as_f64().unwrap();
    assert!(phases.iter().sum::<f64>() <= max * 1.5, "{phases:?} vs max step {max}");
}

#[test]
fn bench_train_rejects_bad_sizes() {
    let out = Command::new(env!("CARGO_BIN_EXE_lightunet"))
        .args(["bench", "train", "--size", "8"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--size"));
}
