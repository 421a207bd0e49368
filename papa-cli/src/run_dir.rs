//! The one rule for what a run directory holds: one run's settings and results, never a mix.
//! A run is its settings (`config.toml`) and its record (`run.json`: data files and hashes,
//! numerics version, CPU path). A directory holding another run is refused, or replaced where
//! the user said so (`--force`, or the default `runs/latest`, which is for the latest run
//! only); `--resume` continues only a run whose record matches.

use crate::error::CliError;
use papa_cpu::Isa;
use papa_train::checkpoint::write_atomic;
use papa_train::config::{Method, TrainConfig};
use papa_train::report::RunRecord;
use std::collections::BTreeMap;
use std::path::Path;

/// The settings file that says which run a directory holds.
pub const CONFIG_FILE: &str = "config.toml";

/// What produced the run besides its settings (data, numerics version, CPU path).
pub const RECORD_FILE: &str = "run.json";

/// Each finished method's wall time in seconds: kept apart from the results, whose bytes
/// do not depend on how fast the machine was.
pub const TIMINGS_FILE: &str = "timings.json";

/// Makes `out` ready for a new run of `cfg` and `record`: nothing to do when it is new or
/// holds the same run (whose finished methods are then kept); otherwise, with `replace`,
/// papa's files of the other run are removed, else the run is refused. Nothing is written
/// here.
pub fn claim(
    out: &Path,
    cfg: &TrainConfig,
    record: &RunRecord,
    replace: bool,
) -> Result<(), CliError> {
    if !out.join(CONFIG_FILE).exists() {
        return Ok(());
    }
    let Some(differs) = difference(out, cfg, record) else {
        return Ok(());
    };
    if !replace {
        return Err(CliError::OtherRun {
            out: out.into(),
            differs,
        });
    }
    note!(
        "papa: {} held another run ({differs}); replacing it",
        out.display()
    );
    let mut files = vec![
        CONFIG_FILE.to_string(),
        RECORD_FILE.into(),
        TIMINGS_FILE.into(),
        "results.json".into(),
        "results.md".into(),
        "accuracy.svg".into(),
    ];
    files.extend(Method::ALL.map(|m| format!("{}.safetensors", m.name())));
    for name in files {
        remove(&out.join(name), |p| std::fs::remove_file(p))?;
    }
    remove(&out.join("checkpoints"), |p| std::fs::remove_dir_all(p))
}

/// Checks that `dir`, to be resumed, holds a run that `record` continues.
pub fn check_resume(dir: &Path, record: &RunRecord) -> Result<(), CliError> {
    match recorded(dir).map(|r| r.difference(record)) {
        Some(None) => Ok(()),
        Some(Some(differs)) => Err(CliError::ResumeElsewhere {
            dir: dir.into(),
            differs,
        }),
        None => Err(CliError::ResumeElsewhere {
            dir: dir.into(),
            differs: format!("no readable {RECORD_FILE} (written by an older papa)"),
        }),
    }
}

/// Writes what makes `out` this run's: the record first, then the settings, so that a kill
/// in between leaves no settings file (no run) rather than settings without their record.
pub fn mark(out: &Path, cfg: &TrainConfig, record: &RunRecord) -> Result<(), CliError> {
    write_atomic(
        &out.join(RECORD_FILE),
        serde_json::to_string_pretty(record)?.as_bytes(),
    )?;
    write_atomic(&out.join(CONFIG_FILE), cfg.to_toml()?.as_bytes())?;
    Ok(())
}

/// The wall times recorded in `out` (none when the file is missing or unreadable: they are
/// shown, never used).
pub fn timings(out: &Path) -> BTreeMap<String, f64> {
    std::fs::read_to_string(out.join(TIMINGS_FILE))
        .ok()
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_default()
}

/// Writes the wall times of `out`'s finished methods.
pub fn write_timings(out: &Path, timings: &BTreeMap<String, f64>) -> Result<(), CliError> {
    let json = serde_json::to_string_pretty(timings)?;
    Ok(write_atomic(&out.join(TIMINGS_FILE), json.as_bytes())?)
}

/// How the run in `out` differs from one of `cfg` and `record` (`None`: the same run).
fn difference(out: &Path, cfg: &TrainConfig, record: &RunRecord) -> Option<String> {
    // A settings file that no longer reads belongs to no run this papa can continue.
    let same_settings = TrainConfig::from_file(&out.join(CONFIG_FILE)).is_ok_and(|old| {
        let old = TrainConfig {
            threads: cfg.threads,
            ..old
        };
        &old == cfg
    });
    if !same_settings {
        return Some("other settings".into());
    }
    match recorded(out) {
        Some(old) => old.difference(record),
        None => Some(format!("no readable {RECORD_FILE}: an older papa's")),
    }
}

/// The CPU path the run in `dir` was recorded with (`None`: no readable record, or a path
/// this papa does not know).
pub fn recorded_cpu_path(dir: &Path) -> Option<Isa> {
    recorded(dir)?.cpu_path.parse().ok()
}

/// The record in `dir`, if it reads.
fn recorded(dir: &Path) -> Option<RunRecord> {
    let json = std::fs::read_to_string(dir.join(RECORD_FILE)).ok()?;
    serde_json::from_str(&json).ok()
}

/// Removes `path` if it is there.
fn remove(path: &Path, how: fn(&Path) -> std::io::Result<()>) -> Result<(), CliError> {
    match how(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CliError::Remove {
            path: path.into(),
            source: e,
        }),
        _ => Ok(()),
    }
}
