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

/// `bench model --profile` splits a pass into kinds of op (the GPU session's map of where the
/// time goes): on the CPU, Light U-net's regular 3x3 sets, its separable sets, the Up blocks'
/// upsampling and concatenation and the Down blocks' pooling each get their share, with the
/// calls a pass makes, and the shares add up to the profiled total.
#[test]
fn bench_model_profile_splits_a_pass_by_op() {
    let out = Command::new(env!("CARGO_BIN_EXE_lightunet"))
        .args(["bench", "model", "--model", "light", "--size", "32", "--runs", "2", "--warmup", "0", "--profile", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ops = v["profile"].as_array().expect("profile entries");
    let calls = |op: &str| ops.iter().find(|e| e["op"] == op).and_then(|e| e["calls"].as_u64());
    assert_eq!(calls("3x3 conv + bias + ReLU (CPU)"), Some(9), "{ops:?}");
    assert_eq!(calls("upsample x2"), Some(4), "{ops:?}");
    assert_eq!(calls("concat"), Some(4), "{ops:?}");
    assert_eq!(calls("max-pool 2x2"), Some(4), "{ops:?}");
    assert_eq!(calls("sigmoid"), Some(1), "{ops:?}");
    let sum: f64 = ops.iter().map(|e| e["ms_batch"].as_f64().unwrap()).sum();
    let total = v["profiled_ms_batch"].as_f64().unwrap();
    assert!(total > 0.0 && (sum - total).abs() <= 1e-9 * total.max(1.0), "{sum} vs {total}");
}
