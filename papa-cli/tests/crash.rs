//! The `papa` binary through crashes, resumes and full disks: kill -9 at seeded moments and
//! half-way through a file write (write_atomic's `PAPA_CRASH_WRITE` hook), `--resume` until
//! the run finishes, stdout on `/dev/full`, a run directory on a tiny tmpfs, and bad files in
//! a run directory. What resumes has the bits of an uninterrupted run, nothing half-written
//! is left, and every failure names its file, line or key.
#![cfg(unix)]

use papa_cpu::Isa;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const PAPA: &str = env!("CARGO_BIN_EXE_papa");

/// The methods of a `--compare` run, in the order it trains them.
const METHODS: [&str; 4] = ["none", "papa", "papa-all", "papa-2"];

/// splitmix64: the data and the kill points are the same on every run of the suite.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A table small enough for debug builds (8 features, 3 classes whose means differ) as
/// `dir/data/train.csv` and `test.csv`, with run settings of many small steps (so that PAPA
/// averages within a few epochs) in `dir/run.toml`.
fn synthetic_run(dir: &Path) {
    let data = dir.join("data");
    fs::create_dir(&data).unwrap();
    let mut rng = Rng(7);
    for (name, rows) in [("train.csv", 800), ("test.csv", 200)] {
        let mut text = String::new();
        for _ in 0..rows {
            let label = rng.below(3);
            for k in 0..8 {
                let x = rng.unit() * 2.0 - 1.0 + if k % 3 == label { 1.0 } else { 0.0 };
                text.push_str(&format!("{x:.3},"));
            }
            text.push_str(&format!("{label}\n"));
        }
        fs::write(data.join(name), text).unwrap();
    }
    fs::write(dir.join("run.toml"), "batch = 32\nrepair_batches = 2\n").unwrap();
}

/// `papa train` of the synthetic run into `out`: two members of the MLP, `epochs` epochs,
/// `methods` (e.g. `--compare`), `threads` workers.
fn train_args(
    dir: &Path,
    out: &Path,
    methods: &[&str],
    epochs: &str,
    threads: &str,
) -> Vec<String> {
    let (data, config) = (dir.join("data"), dir.join("run.toml"));
    let mut args: Vec<String> = ["train", "--population", "2", "--model", "mlp"]
        .map(String::from)
        .into();
    args.extend(methods.iter().map(|m| m.to_string()));
    for (flag, value) in [
        ("--epochs", epochs),
        ("--threads", threads),
        ("--data", data.to_str().unwrap()),
        ("--config", config.to_str().unwrap()),
        ("--out", out.to_str().unwrap()),
    ] {
        args.extend([flag.to_string(), value.to_string()]);
    }
    args
}

fn resume_args(out: &Path, threads: &str) -> Vec<String> {
    [
        "train",
        "--resume",
        out.to_str().unwrap(),
        "--threads",
        threads,
    ]
    .map(String::from)
    .into()
}

/// The binary with `args`; `crash` is the `PAPA_CRASH_WRITE` hook's setting, if any (never
/// inherited from the suite's environment).
fn command(args: &[impl AsRef<std::ffi::OsStr>], crash: Option<&str>) -> Command {
    let mut command = Command::new(PAPA);
    command.args(args).env_remove("PAPA_CRASH_WRITE");
    if let Some(hook) = crash {
        command.env("PAPA_CRASH_WRITE", hook);
    }
    command
}

fn papa(args: &[impl AsRef<std::ffi::OsStr>], crash: Option<&str>) -> Output {
    command(args, crash).output().expect("papa runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Files of `dir` and `dir/checkpoints` (whichever exist), by path.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for d in [dir.to_path_buf(), dir.join("checkpoints")] {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

fn name_of(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// write_atomic's temp files (`.<name>.tmp-<pid>-<n>`) in a run directory.
fn temps(dir: &Path) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|p| name_of(p).starts_with('.') && name_of(p).contains(".tmp-"))
        .collect()
}

/// Asserts that every file in place in a run directory (temp files aside) is whole: models
/// and checkpoints parse as safetensors, results as JSON, the plot is closed.
fn assert_whole(dir: &Path) {
    for path in files(dir) {
        let name = name_of(&path);
        if name.starts_with('.') {
            continue;
        }
        let bytes = fs::read(&path).unwrap();
        let whole = if name.ends_with(".safetensors") {
            safetensors::SafeTensors::deserialize(&bytes).is_ok()
        } else if name.ends_with(".json") {
            serde_json::from_slice::<serde_json::Value>(&bytes).is_ok()
        } else if name.ends_with(".svg") {
            String::from_utf8_lossy(&bytes)
                .trim_end()
                .ends_with("</svg>")
        } else {
            !bytes.is_empty()
        };
        assert!(whole, "{} is half-written", path.display());
    }
}

/// A training checkpoint's run state (the JSON under its `state` metadata).
fn state_of(checkpoint: &Path) -> serde_json::Value {
    let bytes = fs::read(checkpoint).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let state = &meta.metadata().as_ref().unwrap()["state"];
    serde_json::from_str(state).unwrap()
}

/// Epochs checkpointed plus methods finished: a resume that continues never lowers it.
fn progress(dir: &Path) -> u64 {
    METHODS
        .iter()
        .map(|m| {
            let checkpoint = dir.join(format!("checkpoints/{m}.safetensors"));
            let epochs = match checkpoint.exists() {
                true => state_of(&checkpoint)["epochs_done"].as_u64().unwrap(),
                false => 0,
            };
            epochs + u64::from(dir.join(format!("checkpoints/{m}.result.json")).exists())
        })
        .sum()
}

/// `text` without its `threads = ` line: the last `--threads` given, which results do not
/// depend on.
fn without_threads(text: &str) -> String {
    let lines = text.lines().filter(|l| !l.starts_with("threads = "));
    lines.collect::<Vec<_>>().join("\n")
}

/// Asserts that run directory `b` holds the bits of `a`: models, results, result files and
/// the plot byte for byte; each checkpoint's tensors byte for byte, and its state and the
/// settings but for the worker threads. The files that keep wall times (results.md, which
/// also shows the command line, and timings.json) are not compared. Returns how many files
/// were.
fn assert_same_run(a: &Path, b: &Path) -> usize {
    let mut compared = 0;
    for path in files(a) {
        let name = name_of(&path);
        let other = b.join(path.strip_prefix(a).unwrap());
        let what = other.display();
        let in_checkpoints = path.parent().unwrap().ends_with("checkpoints");
        if name == "results.md" || name == "timings.json" {
            continue;
        } else if name.ends_with(".safetensors") && in_checkpoints {
            let (x, y) = (fs::read(&path).unwrap(), fs::read(&other).unwrap());
            let (x, y) = (
                safetensors::SafeTensors::deserialize(&x).unwrap(),
                safetensors::SafeTensors::deserialize(&y).unwrap(),
            );
            for buffer in ["population", "velocity"] {
                let (x, y) = (x.tensor(buffer).unwrap(), y.tensor(buffer).unwrap());
                assert!(x.data() == y.data(), "{what}: `{buffer}` differs");
            }
            // A checkpoint keeps the wall time so far (for the method's total): not compared.
            let states = [&path, &other].map(|p| {
                let mut state = state_of(p);
                state.as_object_mut().unwrap().remove("seconds");
                state["config"].as_object_mut().unwrap().remove("threads");
                state
            });
            assert_eq!(states[0], states[1], "{what}: the run state differs");
        } else if name == "config.toml" {
            let settings =
                [&path, &other].map(|p| without_threads(&fs::read_to_string(p).unwrap()));
            assert_eq!(settings[0], settings[1], "{what} differs");
        } else {
            assert!(
                fs::read(&path).unwrap() == fs::read(&other).unwrap(),
                "{what} differs"
            );
        }
        compared += 1;
    }
    compared
}

/// Runs `args` with the hook set to stop the k-th write of files named `name`, and asserts
/// that it died there: killed, its half-written temp file left beside `name`, every file in
/// place whole.
fn crash_in_write(args: &[String], dir: &Path, name: &str, k: u64) {
    let child = command(args, Some(&format!("{name}:{k}")))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.signal().is_some(),
        "the hook did not stop write {k} of {name}: {}, {}",
        out.status,
        stderr(&out)
    );
    let prefix = format!(".{name}.tmp-{pid}-");
    assert!(
        temps(dir).iter().any(|t| name_of(t).starts_with(&prefix)),
        "no half-written {prefix}* in {}: {:?}",
        dir.display(),
        files(dir)
    );
    assert_whole(dir);
}

/// The next write of the first unfinished method of run `dir` (`epochs` epochs), as the
/// hook counts it: a file name and k. None when every method has finished.
fn next_method_write(dir: &Path, epochs: u64, rng: &mut Rng) -> Option<(String, u64)> {
    let method = METHODS.iter().find(|m| {
        !dir.join(format!("checkpoints/{m}.result.json")).exists()
            || !dir.join(format!("{m}.safetensors")).exists()
    })?;
    let checkpoint = dir.join(format!("checkpoints/{method}.safetensors"));
    let done = match checkpoint.exists() {
        true => state_of(&checkpoint)["epochs_done"].as_u64().unwrap(),
        false => 0,
    };
    // The epochs' checkpoints and then the model share the file name; the result file last.
    let writes = epochs - done + 1;
    Some(match rng.below(writes + 1) {
        0 => (format!("{method}.result.json"), 1),
        k => (format!("{method}.safetensors"), k),
    })
}

#[test]
fn kill_9_and_resume_give_the_bits_of_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_run(dir.path());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let epochs = 6;
    let run = |out: &Path, threads| train_args(dir.path(), out, &["--compare"], "6", threads);
    let started = Instant::now();
    let reference = papa(&run(&a, "1"), None);
    assert!(reference.status.success(), "{}", stderr(&reference));
    let full = started.elapsed();

    let mut rng = Rng(0x5eed);
    // Another thread count than the reference's from the start: results do not depend on it.
    let fresh = run(&b, "2");
    // Half-way through the second checkpoint of the first method.
    crash_in_write(&fresh, &b, "none.safetensors", 2);
    // Half-way through its model file (after the checkpoints of the epochs left), whose temp
    // file lies beside the models.
    crash_in_write(&resume_args(&b, "1"), &b, "none.safetensors", epochs);
    let beside_models = |t: &PathBuf| t.parent() == Some(b.as_path());
    assert!(temps(&b)
        .iter()
        .any(|t| beside_models(t) && name_of(t).starts_with(".none.safetensors.tmp-")));
    let (mut killed, mut in_writes, mut finished) = (0, 2, 0);
    let mut reached = progress(&b);
    let total = METHODS.len() as u64 * (epochs + 1);
    for cycle in 0..16 {
        let threads = ["1", "2"][rng.below(2) as usize];
        // A kill before the settings were written leaves nothing to resume (as --resume
        // says): start again.
        let args = match b.join("config.toml").exists() {
            true => resume_args(&b, threads),
            false => {
                let out = papa(&resume_args(&b, threads), None);
                assert!(
                    stderr(&out).contains("holds no run to resume"),
                    "{}",
                    stderr(&out)
                );
                fresh.clone()
            }
        };
        let hook = match rng.below(3) {
            0 if cycle % 3 == 2 => Some(("config.toml".to_string(), 1)),
            _ if cycle % 3 == 2 => next_method_write(&b, epochs, &mut rng),
            _ => None,
        };
        if let Some((name, k)) = hook {
            crash_in_write(&args, &b, &name, k);
            in_writes += 1;
        } else {
            let mut child = command(&args, None)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // A seeded moment within what is left of the run (as long as the reference took
            // for it), so that most kills land in training rather than after it.
            let left = 1.0 - reached as f64 / total as f64;
            std::thread::sleep(full.mul_f64(left * rng.unit()) + Duration::from_millis(5));
            // Already exited (a run that finished in time) is no error.
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            match out.status.signal() {
                Some(9) => killed += 1,
                None if out.status.success() => finished += 1,
                _ => panic!(
                    "a resume after a kill failed: {}: {}",
                    out.status,
                    stderr(&out)
                ),
            }
            assert_whole(&b);
        }
        let now = progress(&b);
        assert!(
            now >= reached,
            "cycle {cycle}: the run went back from {reached} to {now}"
        );
        reached = now;
    }
    // The end of a run: half-way through each file written after training.
    let mut last_files = vec!["results.json", "results.md"];
    if a.join("accuracy.svg").exists() {
        last_files.push("accuracy.svg");
    }
    for name in last_files {
        crash_in_write(&resume_args(&b, "1"), &b, name, 1);
        in_writes += 1;
    }
    let out = papa(&resume_args(&b, "1"), None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("none: already finished"),
        "{}",
        stderr(&out)
    );
    assert_eq!(temps(&b), Vec::<PathBuf>::new(), "temp files left behind");
    let compared = assert_same_run(&a, &b);
    assert!(compared >= 15, "only {compared} files compared");
    eprintln!(
        "{} cycles: {killed} kill -9 at seeded moments, {in_writes} inside a write, {finished} finished before the kill; reference run {:.1} s",
        killed + in_writes + finished,
        full.as_secs_f64()
    );
}

/// The CPU path a run directory records (run.json) and its results report.
fn recorded_paths(dir: &Path) -> [String; 2] {
    let json = |file: &str| -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(dir.join(file)).unwrap()).unwrap()
    };
    let name = |path: &serde_json::Value| path.as_str().unwrap().to_string();
    [
        name(&json("run.json")["cpu_path"]),
        name(&json("results.json")["results"][0]["cpu_path"]),
    ]
}

#[test]
fn a_run_on_another_cpu_path_resumes_on_its_own_to_the_same_bits() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_run(dir.path());
    // Every path this CPU runs below its fastest: what a run recorded on an older machine is.
    let others: Vec<Isa> = Isa::supported()
        .filter(|isa| *isa != Isa::detect())
        .collect();
    if others.is_empty() {
        println!(
            "SKIP: this CPU has no path below its fastest ({})",
            Isa::detect()
        );
    }
    for isa in others {
        let path = isa.name();
        let (a, b) = (dir.path().join(path), dir.path().join(format!("{path}-b")));
        let run = |out: &Path| {
            let mut args = train_args(dir.path(), out, &["--method", "papa-all"], "4", "2");
            args.extend(["--cpu-path".to_string(), path.to_string()]);
            args
        };
        let reference = papa(&run(&a), None);
        assert!(reference.status.success(), "{}", stderr(&reference));
        assert_eq!(recorded_paths(&a), [path, path]);
        // Killed half-way through its second checkpoint, then resumed with no path given.
        crash_in_write(&run(&b), &b, "papa-all.safetensors", 2);
        let out = papa(&resume_args(&b, "1"), None);
        assert!(out.status.success(), "{path}: {}", stderr(&out));
        assert_eq!(recorded_paths(&b), [path, path]);
        let compared = assert_same_run(&a, &b);
        assert!(compared >= 5, "{path}: only {compared} files compared");
    }
}

#[test]
fn a_kill_during_the_first_settings_write_leaves_no_run() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_run(dir.path());
    let out_dir = dir.path().join("out");
    let args = train_args(dir.path(), &out_dir, &["--method", "none"], "1", "1");
    crash_in_write(&args, &out_dir, "config.toml", 1);
    assert!(!out_dir.join("config.toml").exists());

    let resume = papa(&resume_args(&out_dir, "1"), None);
    assert_eq!(resume.status.code(), Some(1), "{}", stderr(&resume));
    let message = stderr(&resume);
    assert!(
        message.contains("holds no run to resume") && message.contains(out_dir.to_str().unwrap()),
        "{message}"
    );
    // Starting it again with the same --out works and clears the killed writer's temp file.
    let again = papa(&args, None);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(temps(&out_dir), Vec::<PathBuf>::new());
    assert!(out_dir.join("none.safetensors").exists());
}

/// Asserts that `out`, a command whose stdout was `/dev/full`, failed with a message
/// rather than a panic.
fn assert_full_stdout_is_an_error(what: &str, out: &Output) {
    let message = stderr(out);
    assert!(
        !message.contains("panicked") && out.status.code() == Some(1),
        "{what} on a full stdout: {}, {message}",
        out.status
    );
    assert!(
        message.contains("No space left on device"),
        "{what}: {message}"
    );
}

#[test]
fn a_full_stdout_is_an_error_not_a_panic() {
    let full = || {
        fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let bench = [
        "bench",
        "--populations",
        "1",
        "--batch",
        "8",
        "--steps",
        "1",
    ];
    let out = command(&bench, None).stdout(full()).output().unwrap();
    assert_full_stdout_is_an_error("papa bench", &out);

    let dir = tempfile::tempdir().unwrap();
    synthetic_run(dir.path());
    let out_dir = dir.path().join("out");
    let args = train_args(dir.path(), &out_dir, &["--method", "none"], "1", "1");
    let out = command(&args, None).stdout(full()).output().unwrap();
    assert_full_stdout_is_an_error("papa train", &out);
    // The table is printed last: the files were all written, and whole.
    assert!(out_dir.join("results.json").exists());
    assert_whole(&out_dir);
    assert_eq!(temps(&out_dir), Vec::<PathBuf>::new());

    // A full stderr loses the progress lines, not the run.
    let out_dir = dir.path().join("quiet");
    let args = train_args(dir.path(), &out_dir, &["--method", "none"], "1", "1");
    let out = command(&args, None).stderr(full()).output().unwrap();
    assert!(
        out.status.success(),
        "papa train on a full stderr: {}",
        out.status
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("| none"));
    assert_whole(&out_dir);
}

/// A step's exit code and stderr, as the tmpfs script left them outside its namespace.
fn read_step(dir: &Path, step: &str) -> (String, String) {
    let code = fs::read_to_string(dir.join(format!("{step}.code"))).unwrap();
    let err = fs::read_to_string(dir.join(format!("{step}.err"))).unwrap();
    (code.trim().to_string(), err)
}

#[test]
fn a_full_disk_names_the_file_keeps_the_last_checkpoint_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_run(dir.path());
    let mount = dir.path().join("disk");
    let saved = dir.path().join("saved");
    fs::create_dir_all(&mount).unwrap();
    fs::create_dir_all(&saved).unwrap();
    let run = mount.join("run");
    let args = train_args(dir.path(), &run, &["--method", "papa"], "3", "1");
    // 100 KiB holds the settings and one checkpoint (two members, two buffers: 50 KB) but not
    // the temp file of the next one beside it. Afterwards the disk grows and the run resumes.
    let script = r#"
        mount -t tmpfs -o size=100k none "$DISK" || exit 77
        "$PAPA" "$@" > /dev/null 2> "$SAVED/full.err"; echo $? > "$SAVED/full.code"
        cp -a "$DISK/run" "$SAVED/full"
        mount -o remount,size=64m "$DISK" || exit 78
        "$PAPA" train --resume "$DISK/run" > /dev/null 2> "$SAVED/resume.err"
        echo $? > "$SAVED/resume.code"
        cp -a "$DISK/run" "$SAVED/resumed"
    "#;
    let script_run = Command::new("unshare")
        .args(["-rm", "sh", "-c", script, "sh"])
        .args(&args)
        .env("DISK", &mount)
        .env("SAVED", &saved)
        .env("PAPA", PAPA)
        .env_remove("PAPA_CRASH_WRITE")
        .output();
    match script_run {
        Err(e) => return eprintln!("SKIP: no tmpfs of our own (cannot run unshare: {e})"),
        // The script never got to run papa: unshare or the mount was refused.
        Ok(out) if !saved.join("full.code").exists() => {
            let why = stderr(&out).trim().to_string();
            return eprintln!("SKIP: no tmpfs of our own (unshare -rm or mount refused: {why})");
        }
        Ok(out) => assert!(out.status.success(), "the tmpfs script: {}", stderr(&out)),
    }

    let (code, message) = read_step(&saved, "full");
    assert_eq!(code, "1", "{message}");
    assert!(!message.contains("panicked"), "{message}");
    let checkpoint = run.join("checkpoints/papa.safetensors");
    assert!(
        message.contains(checkpoint.to_str().unwrap())
            && message.contains("No space left on device"),
        "{message}"
    );
    let full = saved.join("full");
    assert_eq!(
        temps(&full),
        Vec::<PathBuf>::new(),
        "temp files left on the full disk"
    );
    assert_whole(&full);
    assert_eq!(
        state_of(&full.join("checkpoints/papa.safetensors"))["epochs_done"],
        1
    );

    let (code, message) = read_step(&saved, "resume");
    assert_eq!(code, "0", "{message}");
    let reference = dir.path().join("reference");
    let out = papa(
        &train_args(dir.path(), &reference, &["--method", "papa"], "3", "1"),
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let resumed = saved.join("resumed");
    assert_eq!(temps(&resumed), Vec::<PathBuf>::new());
    assert!(assert_same_run(&reference, &resumed) >= 6);
}

/// A finished one-method run in `dir/<name>` whose method is then made unfinished again
/// (model and result file removed), so that `--resume` loads its checkpoint.
fn unfinished_run(dir: &Path, name: &str) -> PathBuf {
    let out_dir = dir.join(name);
    let out = papa(
        &train_args(dir, &out_dir, &["--method", "papa"], "2", "1"),
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    fs::remove_file(out_dir.join("papa.safetensors")).unwrap();
    fs::remove_file(out_dir.join("checkpoints/papa.result.json")).unwrap();
    out_dir
}

/// Resumes `out_dir` and asserts that it fails (exit code 1, no panic) with a message holding
/// every one of `needles`, writes no model and leaves no temp file.
fn resume_fails(out_dir: &Path, needles: &[&str]) {
    let out = papa(&resume_args(out_dir, "1"), None);
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{message}");
    for needle in needles {
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    assert!(
        !out_dir.join("papa.safetensors").exists(),
        "a model from a broken run"
    );
    assert_eq!(temps(out_dir), Vec::<PathBuf>::new());
}

#[test]
fn resume_names_the_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_run(dir.path());
    let path_of = |out: &Path, file: &str| out.join(file).to_str().unwrap().to_string();

    // A truncated checkpoint is refused by name, and kept as it was.
    let out_dir = unfinished_run(dir.path(), "truncated");
    let checkpoint = out_dir.join("checkpoints/papa.safetensors");
    let bytes = fs::read(&checkpoint).unwrap();
    fs::write(&checkpoint, &bytes[..bytes.len() / 2]).unwrap();
    let checkpoint_name = path_of(&out_dir, "checkpoints/papa.safetensors");
    resume_fails(&out_dir, &[&checkpoint_name, "not a valid safetensors"]);
    assert_eq!(fs::read(&checkpoint).unwrap(), &bytes[..bytes.len() / 2]);

    // A model file where the checkpoint belongs: safetensors, but no training state.
    let out_dir = unfinished_run(dir.path(), "model-as-checkpoint");
    let reference = dir.path().join("finished");
    let out = papa(
        &train_args(dir.path(), &reference, &["--method", "papa"], "2", "1"),
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    fs::copy(
        reference.join("papa.safetensors"),
        out_dir.join("checkpoints/papa.safetensors"),
    )
    .unwrap();
    let checkpoint_name = path_of(&out_dir, "checkpoints/papa.safetensors");
    resume_fails(
        &out_dir,
        &[&checkpoint_name, "not a training state checkpoint"],
    );

    // Settings cut off inside a string: the file and its line.
    let out_dir = unfinished_run(dir.path(), "truncated-settings");
    let config = out_dir.join("config.toml");
    let text = fs::read_to_string(&config).unwrap();
    let cut = text.find("methods = [\"pa").unwrap() + "methods = [\"pa".len();
    fs::write(&config, &text[..cut]).unwrap();
    let line = format!("line {}", text[..cut].lines().count());
    resume_fails(&out_dir, &[&path_of(&out_dir, "config.toml"), &line]);
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        &text[..cut],
        "settings rewritten"
    );

    // A setting of the wrong type: the file and the key.
    let out_dir = unfinished_run(dir.path(), "mistyped-settings");
    let config = out_dir.join("config.toml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        text.replace("population = 2", "population = \"two\""),
    )
    .unwrap();
    resume_fails(&out_dir, &[&path_of(&out_dir, "config.toml"), "population"]);

    // A finished method's result file that is garbage: the file, line and column.
    let out_dir = unfinished_run(dir.path(), "garbage-result");
    fs::copy(
        reference.join("papa.safetensors"),
        out_dir.join("papa.safetensors"),
    )
    .unwrap();
    let results = fs::read(out_dir.join("results.json")).unwrap();
    fs::write(
        out_dir.join("checkpoints/papa.result.json"),
        "{\"method\": \"papa\",\n  oops",
    )
    .unwrap();
    let out = papa(&resume_args(&out_dir, "1"), None);
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{message}");
    let result_name = path_of(&out_dir, "checkpoints/papa.result.json");
    assert!(
        message.contains(&result_name) && message.contains("line 2 column 3"),
        "{message}"
    );
    assert_eq!(
        fs::read(out_dir.join("results.json")).unwrap(),
        results,
        "results rewritten"
    );
    assert_eq!(temps(&out_dir), Vec::<PathBuf>::new());
}

#[test]
fn bad_data_flags_and_models_are_named() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_run(dir.path());
    let out_dir = dir.path().join("out");
    let fails = |args: &[String], needles: &[&str]| {
        let out = papa(args, None);
        let message = stderr(&out);
        assert!(
            !out.status.success() && !message.contains("panicked"),
            "{args:?}: {message}"
        );
        for needle in needles {
            assert!(
                message.contains(needle),
                "{args:?}: {message:?} lacks {needle:?}"
            );
        }
        assert!(!out_dir.exists(), "{args:?} left output behind");
    };

    // A CSV field that is no number: the file, line and column.
    let data = dir.path().join("data/train.csv");
    let text = fs::read_to_string(&data).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "0.1,0.2,zero,0.4,0.5,0.6,0.7,0.8,1";
    fs::write(&data, lines.join("\n") + "\n").unwrap();
    let args = train_args(dir.path(), &out_dir, &["--method", "none"], "1", "1");
    fails(&args, &[data.to_str().unwrap(), "line 3, column 3"]);
    fs::write(&data, &text).unwrap();

    let with = |flags: &[&str]| {
        let mut args = vec![
            "train".to_string(),
            "--out".into(),
            out_dir.to_str().unwrap().into(),
        ];
        args.extend(flags.iter().map(|f| f.to_string()));
        args
    };
    fails(&with(&["--threads", "lots"]), &["--threads", "lots"]);
    fails(
        &with(&["--cpu-path", "neon"]),
        &["--cpu-path", "unknown CPU path `neon`", "avx2"],
    );
    fails(
        &with(&["--device", "cuda", "--cpu-path", "avx2"]),
        &["--cpu-path", "the GPU engine has none"],
    );
    fails(
        &with(&["--compare", "--method", "papa"]),
        &["--compare", "--method"],
    );
    fails(&with(&["--resume", "elsewhere"]), &["--resume", "--out"]);
    fails(&with(&["--epochs=-1"]), &["--epochs", "-1"]);

    // A model file cut short, or not safetensors at all: `papa eval` names it.
    let out = papa(
        &train_args(dir.path(), &out_dir, &["--method", "none"], "1", "1"),
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let model = fs::read(out_dir.join("none.safetensors")).unwrap();
    for (name, bytes) in [
        ("cut.safetensors", &model[..model.len() - 7]),
        ("text.safetensors", b"papa".as_slice()),
    ] {
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        let out = papa(&["eval", path.to_str().unwrap()], None);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(path.to_str().unwrap()),
            "{}",
            stderr(&out)
        );
    }
}
