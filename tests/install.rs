//! The binary as a user has it: copied out of the checkout, run from another folder, with an
//! empty home and no LIGHTUNET_* variables. It must run on its embedded weights and list its
//! embedded pipelines, and take the user's folders in the documented order (src/assets):
//! option, environment variable, $XDG_CONFIG_HOME/lightunet, /usr/share/lightunet, embedded.

mod pipeline_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pipeline_support::{decode, scratch};

/// A copy of the binary in `<dir>/bin`, an empty home and config folder, and a working folder
/// of its own (holding a `pipelines/` folder that must be ignored: nothing is looked up
/// relative to the working directory).
struct Installed {
    bin: PathBuf,
    home: PathBuf,
    config: PathBuf,
    work: PathBuf,
}

impl Installed {
    fn new(name: &str) -> Installed {
        let root = scratch(&format!("install-{name}"));
        let (bin_dir, home, config, work) = (root.join("bin"), root.join("home"), root.join("config"), root.join("work"));
        for d in [&bin_dir, &home, &config, &work.join("pipelines")] {
            std::fs::create_dir_all(d).unwrap();
        }
        let bin = bin_dir.join("lightunet");
        std::fs::copy(env!("CARGO_BIN_EXE_lightunet"), &bin).unwrap();
        std::fs::write(work.join("pipelines").join("phantom-window.toml"), pipeline("from the working directory")).unwrap();
        Installed { bin, home, config, work }
    }

    /// Runs the copy with a clean environment: PATH, HOME, XDG_CONFIG_HOME, RUST_LOG=info, and
    /// `env`.
    fn run(&self, args: &[&str], env: &[(&str, &Path)]) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .current_dir(&self.work)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", &self.config)
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        // A binary just copied can be "busy" (ETXTBSY) for a moment: another test thread that
        // forked while the copy's write handle was open holds it until that child execs.
        for _ in 0..50 {
            match cmd.output() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => std::thread::sleep(std::time::Duration::from_millis(100)),
                r => return r.expect("the copied binary runs"),
            }
        }
        cmd.output().expect("the copied binary runs")
    }

    /// `$XDG_CONFIG_HOME/lightunet`, created.
    fn user_dir(&self) -> PathBuf {
        let d = self.config.join("lightunet");
        std::fs::create_dir_all(d.join("pipelines")).unwrap();
        d
    }
}

fn pipeline(description: &str) -> String {
    format!("description = \"{description}\"\nsource = \"phantom:96x72@30\"\nsink = \"fakesink\"\n")
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "status {:?}: {err}", o.status);
    err
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The names of pipelines/*.toml in the checkout (what the binary embeds).
fn shipped_pipelines() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The system folder is part of the lookup: where the package is installed on this machine, its
/// pipelines show up instead of the embedded ones.
fn system_pipelines_installed() -> bool {
    let installed = Path::new("/usr/share/lightunet").exists();
    if installed {
        eprintln!("NOTE: /usr/share/lightunet exists here: not checking that every pipeline is the embedded one");
    }
    installed
}

/// The lines of `live --list` for `name`: its description line and its `from ...` line.
fn listed<'a>(list: &'a str, name: &str) -> (&'a str, &'a str) {
    let lines: Vec<&str> = list.lines().collect();
    let i = lines.iter().position(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("`{name}` not listed:\n{list}"));
    (lines[i], lines.get(i + 1).copied().unwrap_or(""))
}

#[test]
fn runs_on_embedded_weights_and_pipelines_from_anywhere() {
    let inst = Installed::new("embedded");
    let out = inst.work.join("out.mp4");
    let o = inst.run(&["process", "phantom:160x120@10", "--frames", "3", "--device", "cpu", "-o", out.to_str().unwrap()], &[]);
    let err = ok(&o);
    assert!(err.contains("weights: embedded lighter_at1_busi.safetensors"), "{err}");
    assert!(err.contains("model lighter@1"), "the variant comes from the embedded config.json: {err}");
    assert_eq!(decode(&out).unwrap().frames.len(), 3);

    let o = inst.run(&["live", "--list"], &[]);
    ok(&o);
    let list = stdout(&o);
    let names = shipped_pipelines();
    assert!(names.len() >= 6);
    let system = system_pipelines_installed();
    for name in &names {
        let (_, from) = listed(&list, name);
        if !system {
            assert_eq!(from.trim(), "from embedded", "{name}:\n{list}");
        }
    }
    assert!(!list.contains("from the working directory"), "./pipelines is not looked in:\n{list}");
    assert!(list.contains(&inst.config.join("lightunet").join("pipelines").display().to_string()), "the folders looked in are named:\n{list}");

    let o = inst.run(&["process", "--help"], &[]);
    let help = stdout(&o);
    assert!(help.contains("LIGHTUNET_WEIGHTS") && help.contains("embedded"), "{help}");
}

/// `predict` without --weights runs the embedded weights, its variant and input size from their
/// built-in config.json, and its report says so.
#[test]
fn predict_defaults_to_the_embedded_weights() {
    let inst = Installed::new("predict");
    let images = inst.work.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let disk: Vec<u8> = (0..48 * 40).map(|i: i32| if (i % 48 - 24).pow(2) + (i / 48 - 20).pow(2) < 100 { 40 } else { 160 }).collect();
    lightunet::image_io::save_png(&images.join("a.png"), &disk, 48, 40, lightunet::image_io::PngColor::Grey).unwrap();
    let o = inst.run(&["predict", "--images", "images", "--out", "out"], &[]);
    let err = ok(&o);
    assert!(err.contains("model lighter@1, weights: embedded lighter_at1_busi.safetensors"), "{err}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(inst.work.join("out/metrics.json")).unwrap()).unwrap();
    assert_eq!(report["weights"], "embedded lighter_at1_busi.safetensors");
    assert_eq!((report["model"].as_str(), report["size"].as_u64()), (Some("lighter@1"), Some(256)));
    assert!(inst.work.join("out/masks/a.png").is_file());
}

/// --weights, then LIGHTUNET_WEIGHTS, then the user folder, each hiding the ones after it; a
/// variable naming a missing file is an error, not a step skipped.
#[test]
fn user_weights_override_in_order() {
    let inst = Installed::new("weights");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("pretrained_models/lighter_at1_busi.safetensors");
    let user = inst.user_dir().join("weights.safetensors");
    std::fs::copy(&shipped, &user).unwrap();
    let env_file = inst.work.join("env.safetensors");
    std::fs::copy(&shipped, &env_file).unwrap();
    let opt_file = inst.work.join("opt.safetensors");
    std::fs::copy(&shipped, &opt_file).unwrap();
    // One frame at a small model input: the run only has to load the weights it reports.
    let process = |extra: &[&str], env: &[(&str, &Path)], out: &str| {
        let args = [&["process", "phantom:96x72@10", "--frames", "1", "--input-size", "32", "--device", "cpu", "-o", out][..], extra].concat();
        inst.run(&args, env)
    };

    let err = ok(&process(&[], &[], "user.mp4"));
    assert!(err.contains(&format!("weights: {} (user folder)", user.display())), "{err}");

    let err = ok(&process(&[], &[("LIGHTUNET_WEIGHTS", &env_file)], "env.mp4"));
    assert!(err.contains(&format!("weights: {} ($LIGHTUNET_WEIGHTS)", env_file.display())), "{err}");

    let opt = opt_file.to_str().unwrap();
    let err = ok(&process(&["--weights", opt], &[("LIGHTUNET_WEIGHTS", &env_file)], "opt.mp4"));
    assert!(err.contains(&format!("weights: {opt} (--weights)")), "{err}");

    let missing = inst.work.join("missing.safetensors");
    let o = process(&[], &[("LIGHTUNET_WEIGHTS", &missing)], "missing.mp4");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("missing.safetensors") && err.contains("$LIGHTUNET_WEIGHTS"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// --pipelines-dir, then LIGHTUNET_PIPELINES, then the user folder, then the embedded ones, by
/// name; `--list` says which file hides which, and a pipeline from the user folder runs.
#[test]
fn user_pipelines_override_in_order() {
    let inst = Installed::new("pipelines");
    let user = inst.user_dir().join("pipelines");
    let env_dir = inst.work.join("env-pipelines");
    let opt_dir = inst.work.join("opt-pipelines");
    for d in [&env_dir, &opt_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(user.join("phantom-window.toml"), pipeline("user's phantom")).unwrap();
    std::fs::write(user.join("mine.toml"), pipeline("my own")).unwrap();
    std::fs::write(env_dir.join("phantom-window.toml"), pipeline("env's phantom")).unwrap();
    std::fs::write(opt_dir.join("phantom-window.toml"), pipeline("option's phantom")).unwrap();
    let list = |args: &[&str], env: &[(&str, &Path)]| {
        let o = inst.run(&[&["live", "--list"][..], args].concat(), env);
        ok(&o);
        stdout(&o)
    };

    let l = list(&[], &[]);
    let (line, from) = listed(&l, "phantom-window");
    assert!(line.contains("user's phantom"), "{l}");
    assert!(from.contains("(user folder), overrides") && from.ends_with("the embedded one"), "{from}");
    let (line, from) = listed(&l, "mine");
    assert!(line.contains("my own") && !from.contains("overrides"), "{l}");
    // The other shipped pipelines are still there.
    assert!(l.contains("to-file"), "{l}");

    let l = list(&[], &[("LIGHTUNET_PIPELINES", &env_dir)]);
    let (line, from) = listed(&l, "phantom-window");
    assert!(line.contains("env's phantom"), "{l}");
    let user_file = format!("{} (user folder)", user.join("phantom-window.toml").display());
    assert!(from.contains("($LIGHTUNET_PIPELINES), overrides") && from.contains(&user_file), "{from}");

    let opt = opt_dir.to_str().unwrap();
    let l = list(&["--pipelines-dir", opt], &[("LIGHTUNET_PIPELINES", &env_dir)]);
    let (line, _) = listed(&l, "phantom-window");
    assert!(line.contains("option's phantom"), "{l}");
    assert!(!l.contains("env's phantom") && !l.contains(&env_dir.display().to_string()), "the option takes the variable's place:\n{l}");

    // A user pipeline runs by name.
    let o = inst.run(&["live", "--pipeline", "mine", "--frames", "2", "--weights", "random", "--input-size", "32", "--device", "cpu"], &[]);
    let err = ok(&o);
    assert!(err.contains(&format!("pipeline `mine` from {}", user.join("mine.toml").display())), "{err}");

    // A folder asked for that does not exist is an error.
    let o = inst.run(&["live", "--list", "--pipelines-dir", "/nonexistent/lightunet"], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("/nonexistent/lightunet") && err.contains("--pipelines-dir"), "{err}");
}
