//! The fuzzing harness of papa's loaders: a deterministic, seeded byte [`Mutator`] and the
//! [`fuzz`] driver, which feeds mutated valid files to a loader for a bounded time, catches
//! panics, and saves the input of any panic under `target/fuzz-failures/`.
//!
//! Plain `cargo test` runs it (no nightly, no cargo-fuzz, no coverage instrumentation): each
//! loader's target is an integration test, so CI fuzzes every loader on every run for a few
//! seconds, and a longer run is one environment variable away (see [`Budget::from_env`]).
//!
//! A target gets the mutated bytes and returns `Ok` (the loader accepted them) or `Err`
//! (it refused them); it checks its own properties with `assert!`, whose panic the driver
//! reports like any other.
//!
//! ```
//! use papa_fuzz::{fuzz, Budget};
//! use std::time::Duration;
//!
//! /// A loader of "N:bytes" records: the count must match what follows.
//! fn parse(bytes: &[u8]) -> Result<&[u8], String> {
//!     let colon = bytes.iter().position(|&b| b == b':').ok_or("no `:`")?;
//!     let count: usize = std::str::from_utf8(&bytes[..colon])
//!         .map_err(|e| e.to_string())?
//!         .parse()
//!         .map_err(|e| format!("count: {e}"))?;
//!     let body = &bytes[colon + 1..];
//!     if body.len() != count {
//!         return Err(format!("{count} bytes declared, {} found", body.len()));
//!     }
//!     Ok(body)
//! }
//!
//! let budget = Budget {
//!     time: Duration::from_millis(200),
//!     cases: 2_000,
//!     seed: 0,
//!     save_each: false,
//! };
//! let report = fuzz("doc-records", &[b"3:abc".to_vec()], &budget, |input| {
//!     let body = parse(input)?;
//!     assert!(input.ends_with(body), "the body is the input's tail");
//!     Ok::<(), String>(())
//! })?;
//! assert_eq!(report.inputs, report.ok + report.errors);
//! println!("{report}");
//! # Ok::<(), papa_fuzz::Failure>(())
//! ```

mod mutate;

pub use mutate::Mutator;

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Seconds per target when `PAPA_FUZZ_SECONDS` is unset: small, because every target runs
/// in `cargo test --workspace`, in the debug profile.
pub const DEFAULT_SECONDS: f64 = 2.0;

/// Distinct error messages a [`Report`] keeps (a sample of what the loader said).
pub const MESSAGES_KEPT: usize = 8;

/// Accepted mutants kept as further bases for mutation: an input the loader accepted got
/// past its checks, so edits of it reach deeper than edits of the seeds alone.
const CORPUS_CAP: usize = 256;

/// Outputs are at most this much longer than the longest seed.
const GROWTH: usize = 256;

/// How long a target runs, and from which seed.
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    /// Stop after this long.
    pub time: Duration,
    /// Stop after this many mutated inputs (whichever comes first).
    pub cases: u64,
    /// Seed of the mutations; each target mixes in its name, so targets differ.
    pub seed: u64,
    /// Write each input to `target/fuzz-failures/<name>-last.bin` before running it: an
    /// abort (a failed allocation, a stack overflow) ends the process where no
    /// `catch_unwind` reaches, and this leaves its input behind. Slow; for finding one.
    pub save_each: bool,
}

/// An environment variable of the budget that does not parse.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetError {
    /// The variable.
    pub var: &'static str,
    /// Its value.
    pub value: String,
}

impl fmt::Display for BudgetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={:?}: expected a non-negative number",
            self.var, self.value
        )
    }
}

impl std::error::Error for BudgetError {}

impl Budget {
    /// The budget from `PAPA_FUZZ_SECONDS` (default [`DEFAULT_SECONDS`]), `PAPA_FUZZ_CASES`
    /// (default unlimited), `PAPA_FUZZ_SEED` (default 0) and `PAPA_FUZZ_SAVE_EACH` (1 sets
    /// [`Budget::save_each`]). A run is reproducible: the same seed gives the same inputs in
    /// the same order, the time only decides how many.
    pub fn from_env() -> Result<Self, BudgetError> {
        fn var<T: std::str::FromStr>(var: &'static str, default: T) -> Result<T, BudgetError> {
            match std::env::var(var) {
                Ok(value) => value.trim().parse().map_err(|_| BudgetError { var, value }),
                Err(_) => Ok(default),
            }
        }
        let seconds: f64 = var("PAPA_FUZZ_SECONDS", DEFAULT_SECONDS)?;
        let time = Duration::try_from_secs_f64(seconds).map_err(|_| BudgetError {
            var: "PAPA_FUZZ_SECONDS",
            value: seconds.to_string(),
        })?;
        Ok(Budget {
            time,
            cases: var("PAPA_FUZZ_CASES", u64::MAX)?,
            seed: var("PAPA_FUZZ_SEED", 0)?,
            save_each: var("PAPA_FUZZ_SAVE_EACH", 0u8)? == 1,
        })
    }
}

/// What one target's run did.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The target's name.
    pub name: String,
    /// Inputs run: earlier failures replayed, the seeds, then the mutants.
    pub inputs: u64,
    /// Inputs the loader accepted.
    pub ok: u64,
    /// Inputs the loader refused with an error.
    pub errors: u64,
    /// Time taken.
    pub elapsed: Duration,
    /// The first [`MESSAGES_KEPT`] distinct error messages.
    pub messages: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fuzz {}: {} inputs ({} errors, {} ok), {:.1} s",
            self.name,
            self.inputs,
            self.errors,
            self.ok,
            self.elapsed.as_secs_f64()
        )
    }
}

/// A target panicked: the loader itself, or one of the target's property checks.
pub struct Failure {
    /// The target's name.
    pub name: String,
    /// Which input (0-based, in the order the run fed them).
    pub case: u64,
    /// The panic's message.
    pub message: String,
    /// Where the input was saved, or why it could not be.
    pub saved: Result<PathBuf, String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fuzz {}: input {} panicked: {}; ",
            self.name, self.case, self.message
        )?;
        match &self.saved {
            Ok(path) => write!(
                f,
                "input saved to {} (every later run replays it first)",
                path.display()
            ),
            Err(why) => write!(f, "the input could not be saved: {why}"),
        }
    }
}

// Debug is what a test returning `Err` prints, so it says what Display says.
impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Failure {}

/// `target/fuzz-failures` of the workspace (papa-fuzz sits at its root).
fn failures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join("target")
        .join("fuzz-failures")
}

/// The inputs saved by earlier failures of target `name`, with their files, in name order.
fn saved_failures(dir: &Path, name: &str) -> Vec<(Option<PathBuf>, Vec<u8>)> {
    let prefix = format!("{name}-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "bin")
                && p.file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.strip_prefix(&prefix))
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (Some(p), b)))
        .collect()
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic without a message)".into())
}

/// FNV-1a, so each target's mutations differ under one `PAPA_FUZZ_SEED`.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs `target` on the inputs saved by this target's earlier failures, on each seed, then
/// on mutants of the seeds (and of mutants it accepted) until `budget` is spent.
///
/// `name` names the target in the report and the saved inputs (`[A-Za-z0-9_-]`, so that
/// it makes a file name). The first panic stops the run: its input is written to
/// `target/fuzz-failures/<name>-<case>.bin` and returned in the [`Failure`].
pub fn fuzz<E: fmt::Display>(
    name: &str,
    seeds: &[Vec<u8>],
    budget: &Budget,
    target: impl Fn(&[u8]) -> Result<(), E>,
) -> Result<Report, Failure> {
    let start = Instant::now();
    let dir = failures_dir();
    let max_len = seeds.iter().map(Vec::len).max().unwrap_or(0) * 2 + GROWTH;
    let mut mutator = Mutator::new(budget.seed ^ name_hash(name), max_len);
    // Its own stream, so that which base is picked does not shift the edits.
    let mut pick = mutate::Rng(!(budget.seed ^ name_hash(name)));
    let mut report = Report {
        name: name.into(),
        inputs: 0,
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        messages: Vec::new(),
    };
    let mut corpus: Vec<Vec<u8>> = seeds.to_vec();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    // Replayed failures name their own file; the seeds have none.
    let fixed: Vec<(Option<PathBuf>, Vec<u8>)> = saved_failures(&dir, name)
        .into_iter()
        .chain(seeds.iter().map(|s| (None, s.clone())))
        .collect();
    let mut mutants = 0u64;
    let mut fixed = fixed.into_iter();
    loop {
        let (input, mutant, file) = match fixed.next() {
            Some((file, input)) => (input, false, file),
            None if mutants >= budget.cases || start.elapsed() >= budget.time => break,
            None => {
                mutants += 1;
                let base = pick.below(corpus.len());
                let other = pick.below(corpus.len());
                (mutator.mutate(&corpus[base], &corpus[other]), true, None)
            }
        };
        let case = report.inputs;
        report.inputs += 1;
        if budget.save_each {
            // Best effort: a failure to save must not change what the run tests.
            let _ = std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(dir.join(format!("{name}-last.bin")), &input));
        }
        match panic::catch_unwind(AssertUnwindSafe(|| target(&input))) {
            Ok(Ok(())) => {
                report.ok += 1;
                if mutant && corpus.len() < CORPUS_CAP {
                    corpus.push(input);
                }
            }
            Ok(Err(e)) => {
                report.errors += 1;
                if report.messages.len() < MESSAGES_KEPT {
                    let message = e.to_string();
                    if !report.messages.contains(&message) {
                        report.messages.push(message);
                    }
                }
            }
            Err(payload) => {
                let saved = match file {
                    Some(path) => Ok(path),
                    None => {
                        let path = dir.join(format!("{name}-{case}.bin"));
                        std::fs::create_dir_all(&dir)
                            .and_then(|()| std::fs::write(&path, &input))
                            .map(|()| path)
                            .map_err(|e| format!("{}: {e}", dir.display()))
                    }
                };
                return Err(Failure {
                    name: name.into(),
                    case,
                    message: panic_message(payload.as_ref()),
                    saved,
                });
            }
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &[u8] = b"\x00\x00\x08\x03\x00\x00\x00\x02label,x\n1,2\n";

    fn budget(cases: u64) -> Budget {
        Budget {
            time: Duration::from_secs(60),
            cases,
            seed: 11,
            save_each: false,
        }
    }

    #[test]
    fn one_seed_gives_one_sequence() {
        let run = |seed| {
            let mut m = Mutator::new(seed, 256);
            (0..200)
                .map(|_| m.mutate(SEED, b"a,b\n"))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn every_mutant_differs_from_its_input_and_respects_the_cap() {
        let mut m = Mutator::new(3, 40);
        for input in [SEED, b"", b"x"] {
            let mutants: Vec<Vec<u8>> = (0..2_000).map(|_| m.mutate(input, SEED)).collect();
            assert!(mutants.iter().all(|o| o != input && o.len() <= 40));
            // Not one edit over and over: shorter, longer and same-length mutants all occur.
            let lengths = |keep: fn(usize, usize) -> bool| {
                mutants
                    .iter()
                    .filter(|o| keep(o.len(), input.len()))
                    .count()
            };
            assert!(lengths(|a, b| a > b) > 100, "{input:?}: too few grow");
            if !input.is_empty() {
                assert!(lengths(|a, b| a < b) > 100, "{input:?}: too few shrink");
                assert!(
                    lengths(|a, b| a == b) > 100,
                    "{input:?}: too few keep length"
                );
            }
        }
    }

    #[test]
    fn boundary_integers_are_written() {
        let mut m = Mutator::new(5, 64);
        let input = [0x55u8; 16];
        let found = |needle: &[u8], m: &mut Mutator| {
            (0..20_000).any(|_| {
                m.mutate(&input, b"")
                    .windows(needle.len())
                    .any(|w| w == needle)
            })
        };
        assert!(found(&u32::MAX.to_be_bytes(), &mut m));
        assert!(found(&0x8000_0000u32.to_le_bytes(), &mut m));
        assert!(found(&u64::MAX.to_le_bytes(), &mut m));
    }

    #[test]
    fn a_run_is_reproducible_and_counts_every_input() {
        let target = |b: &[u8]| -> Result<(), String> {
            match b.first() {
                Some(0) => Ok(()),
                _ => Err(format!("first byte {:?}", b.first())),
            }
        };
        let a = fuzz("selftest-count", &[SEED.to_vec()], &budget(500), target).unwrap();
        let b = fuzz("selftest-count", &[SEED.to_vec()], &budget(500), target).unwrap();
        assert_eq!(a.inputs, 501, "the seed, then 500 mutants");
        assert_eq!(a.ok + a.errors, a.inputs);
        assert!(a.ok > 0 && a.errors > 0);
        assert!(!a.messages.is_empty() && a.messages.len() <= MESSAGES_KEPT);
        assert_eq!((a.ok, a.errors, &a.messages), (b.ok, b.errors, &b.messages));
        assert!(a
            .to_string()
            .starts_with("fuzz selftest-count: 501 inputs ("));
    }

    #[test]
    fn a_panic_is_reported_with_its_input_saved_and_replayed() {
        let name = "selftest-panic";
        let target = |b: &[u8]| -> Result<(), String> {
            assert!(b.len() <= SEED.len(), "grew to {} bytes", b.len());
            Ok(())
        };
        let failure = fuzz(name, &[SEED.to_vec()], &budget(10_000), target).unwrap_err();
        let path = failure.saved.clone().unwrap();
        let saved = std::fs::read(&path).unwrap();
        assert!(saved.len() > SEED.len());
        assert!(
            failure.message.starts_with("grew to "),
            "{}",
            failure.message
        );
        assert!(failure.to_string().contains(&path.display().to_string()));
        assert_eq!(
            path.file_name().unwrap().to_str().unwrap(),
            format!("{name}-{}.bin", failure.case)
        );
        // The next run fails on the saved input first, before any mutant, and names it.
        let again = fuzz(name, &[SEED.to_vec()], &budget(10_000), target).unwrap_err();
        assert_eq!((again.case, again.saved), (0, Ok(path.clone())));
        std::fs::remove_file(&path).unwrap();
    }
}
