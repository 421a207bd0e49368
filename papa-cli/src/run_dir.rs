//! The one rule for what a run directory holds: one run's settings and results, never a mix.
//! A directory holding another run (other settings) is refused, or replaced where the user
//! said so (`--force`, or the default `runs/latest`, which is for the latest run only).

use crate::error::CliError;
use papa_train::config::{Method, TrainConfig};
use std::path::Path;

/// The settings file that says which run a directory holds.
pub const CONFIG_FILE: &str = "config.toml";

/// Makes `out` ready for a new run of `cfg`: nothing to do when it is new or holds the same
/// run (whose finished methods are then kept); otherwise, with `replace`, papa's files of the
/// other run are removed, else the run is refused. Nothing is written here.
pub fn claim(out: &Path, cfg: &TrainConfig, replace: bool) -> Result<(), CliError> {
    let file = out.join(CONFIG_FILE);
    if !file.exists() {
        return Ok(());
    }
    // A settings file that no longer reads belongs to no run this papa can continue.
    let same = TrainConfig::from_file(&file).is_ok_and(|old| {
        let old = TrainConfig {
            threads: cfg.threads,
            ..old
        };
        &old == cfg
    });
    if same {
        return Ok(());
    }
    if !replace {
        return Err(CliError::OtherRun { out: out.into() });
    }
    note!(
        "papa: {} held another run (other settings); replacing it",
        out.display()
    );
    let mut files = vec![
        CONFIG_FILE.to_string(),
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
