//! Results of a run, for people (a Markdown table, an SVG plot) and for machines (JSON).
//!
//! [`write_report`] writes all three into a directory through [`write_atomic`];
//! [`markdown_table`] is also what the command line prints, so it pads its columns to read
//! well as plain text.

use crate::augment::Recipe;
use crate::checkpoint::{write_atomic, CheckpointError};
use serde::{Deserialize, Deserializer, Serialize};
use std::path::{Path, PathBuf};

/// Measurements of one epoch of one method's run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, as the caller counts it (the x axis of the plot).
    pub epoch: usize,
    /// Mean training loss over the population (NaN when training diverged; `null` in JSON).
    #[serde(deserialize_with = "scalar_or_nan")]
    pub train_loss: f32,
    /// Test accuracy of each member, in %.
    pub member_test_acc: Vec<f32>,
    /// Test accuracy (%) of the uniform average of the members, evaluated (`None` when not
    /// measured this epoch).
    pub average_test_acc: Option<f32>,
    /// Euclidean distance of each member to the population mean.
    #[serde(deserialize_with = "vec_or_nan")]
    pub distance_to_mean: Vec<f64>,
    /// Mean cosine similarity over pairs of members (NaN when undefined; `null` in JSON).
    #[serde(deserialize_with = "scalar_or_nan")]
    pub mean_pairwise_cosine: f64,
    /// Wall time of the epoch. Not written to results or checkpoints: it differs from run
    /// to run, and those files have the same bytes for the same seed.
    #[serde(skip)]
    pub seconds: f64,
}

/// A test accuracy in %, and the same model's accuracy after REPAIR when REPAIR applies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// Accuracy of the model as averaged.
    pub plain: f32,
    /// Accuracy after REPAIR (`None` when REPAIR does not apply or was not run).
    pub repaired: Option<f32>,
}

/// Everything one method (e.g. PAPA, PAPA-all, independent training) produced in a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodResult {
    /// The method's name, e.g. `"papa"` or `"none"`.
    pub method: String,
    /// The run seed.
    pub seed: u64,
    /// Number of members P.
    pub population: usize,
    /// Epochs trained.
    pub epochs: usize,
    /// The model's name, e.g. `"cnn-s"`.
    pub model: String,
    /// Final test accuracy of each member, in %.
    pub members: Vec<f32>,
    /// Mean of `members`.
    pub members_mean: f32,
    /// Minimum of `members`.
    pub members_min: f32,
    /// Maximum of `members`.
    pub members_max: f32,
    /// Test accuracy of the member with the best validation accuracy (an honest "best
    /// member": choosing by test accuracy would leak the test set).
    pub best_member_on_val: f32,
    /// Test accuracy of the ensemble (averaged predictions of all members).
    pub ensemble: f32,
    /// The uniform soup (mean of all members).
    pub uniform_soup: Accuracy,
    /// The greedy soup (members added best-first while validation accuracy improves).
    pub greedy_soup: Accuracy,
    /// Members in the greedy soup.
    pub greedy_soup_size: usize,
    /// Test accuracy of the single model the run ships.
    pub final_model: f32,
    /// Which model that is, e.g. `"greedy soup + REPAIR"`.
    pub final_model_is: String,
    /// The same models' validation accuracies: what the run's choices were made on, and
    /// what defaults are tuned on (results written before: empty).
    #[serde(default)]
    pub validation: Validation,
    /// Wall time of the whole method, in seconds (results.md shows it; results.json leaves
    /// it out so that identical runs write identical bytes; 0 when read back from one).
    #[serde(skip)]
    pub wall_seconds: f64,
    /// The CPU path the engine's kernels ran on (`portable`, `avx2`, `avx512`): runs with
    /// the same seed and path have the same bits (results written before paths: empty).
    #[serde(default)]
    pub cpu_path: String,
    /// Per-epoch measurements.
    pub history: Vec<EpochRecord>,
}

/// Validation accuracies (%) of a method's members and of the model it ships.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// Each member's.
    pub members: Vec<f32>,
    /// The final model's.
    pub final_model: f32,
}

/// What produced a run, beside its settings: the data, the numerics version and the CPU
/// path. A run directory holds one; a run is continued only where all of it is the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// [`crate::train::NUMERICS`] of the papa that ran it.
    pub numerics: u32,
    /// The CPU path the engine ran on.
    pub cpu_path: String,
    /// The data's files.
    pub data: crate::data::DataIdentity,
}

impl RunRecord {
    /// What this recorded run has that a run of `other` would not, in words (`None`: that
    /// run continues this one).
    pub fn difference(&self, other: &RunRecord) -> Option<String> {
        if self.numerics != other.numerics {
            return Some(format!(
                "numerics version {} (this papa: {})",
                self.numerics, other.numerics
            ));
        }
        if self.cpu_path != other.cpu_path {
            return Some(format!(
                "the {} CPU path (this machine: {})",
                self.cpu_path, other.cpu_path
            ));
        }
        self.data.difference(&other.data)
    }
}

/// The results of one invocation of the command line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The dataset's name.
    pub dataset: String,
    /// The command line that produced the results, to rerun them (results.md shows it;
    /// results.json leaves it out: the same run from another directory has the same bytes).
    #[serde(skip)]
    pub command: String,
    /// One entry per method compared.
    pub results: Vec<MethodResult>,
    /// Each member's augmentation and regularisation (the same in every method).
    pub recipes: Vec<Recipe>,
}

/// What went wrong while writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Writing a file failed.
    #[error(transparent)]
    Write(#[from] CheckpointError),
    /// The output directory could not be created.
    #[error("{}: cannot create the directory: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The report could not be encoded as JSON.
    #[error("cannot encode the results as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Floats that may be non-finite: serde_json writes NaN and infinities as `null`, so reading
/// a report back must accept `null` (as NaN) or a diverged run's report could not be loaded.
trait NanDefault: Sized {
    const NAN: Self;
}

impl NanDefault for f32 {
    const NAN: Self = f32::NAN;
}

impl NanDefault for f64 {
    const NAN: Self = f64::NAN;
}

fn scalar_or_nan<'de, D: Deserializer<'de>, T: NanDefault + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or(T::NAN))
}

fn vec_or_nan<'de, D: Deserializer<'de>, T: NanDefault + Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(Vec::<Option<T>>::deserialize(d)?
        .into_iter()
        .map(|v| v.unwrap_or(T::NAN))
        .collect())
}

/// An accuracy with two decimals (`n/a` when not finite).
fn pct(v: f32) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "n/a".into()
    }
}

/// A wall time a person can read at a glance.
fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "n/a".into();
    }
    if seconds < 60.0 {
        return format!("{seconds:.1} s");
    }
    let s = seconds.round() as u64;
    if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// A cell's text, with the Markdown column separator escaped.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// One Markdown row per method: members mean [min, max], best member (chosen on validation),
/// ensemble, uniform soup (and with REPAIR), greedy soup (size) (and with REPAIR), the final
/// model, wall time. Accuracies in % with two decimals; `n/a` where not measured.
///
/// Columns are padded to equal widths so that the table reads well in a terminal too.
pub fn markdown_table(report: &RunReport) -> String {
    let header = [
        "method",
        "members mean [min, max]",
        "best member (val)",
        "ensemble",
        "uniform soup",
        "uniform + REPAIR",
        "greedy soup (size)",
        "greedy + REPAIR",
        "final model",
        "wall time",
    ];
    let repaired = |a: &Accuracy| a.repaired.map_or_else(|| "n/a".to_string(), pct);
    let rows: Vec<[String; 10]> = report
        .results
        .iter()
        .map(|r| {
            [
                cell(&r.method),
                format!(
                    "{} [{}, {}]",
                    pct(r.members_mean),
                    pct(r.members_min),
                    pct(r.members_max)
                ),
                pct(r.best_member_on_val),
                pct(r.ensemble),
                pct(r.uniform_soup.plain),
                repaired(&r.uniform_soup),
                format!("{} ({})", pct(r.greedy_soup.plain), r.greedy_soup_size),
                repaired(&r.greedy_soup),
                format!("{} ({})", pct(r.final_model), cell(&r.final_model_is)),
                duration(r.wall_seconds),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = String>| {
        let padded: Vec<String> = cells
            .zip(widths)
            .enumerate()
            // The method name reads best left-aligned, numbers right-aligned.
            .map(|(i, (c, w))| match i {
                0 => format!("{c:<w$}"),
                _ => format!("{c:>w$}"),
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&mut header.iter().map(|h| h.to_string()));
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, &w)| match i {
            0 => "-".repeat(w),
            _ => format!("{}:", "-".repeat(w.saturating_sub(1))),
        })
        .collect();
    out.push_str(&format!("| {} |\n", rule.join(" | ")));
    for row in rows {
        out.push_str(&line(&mut row.into_iter()));
    }
    out
}

/// Pairwise cosine above which members count as collapsed into one model.
pub const COLLAPSED_COSINE: f64 = 0.999;

/// What the validation split says of each averaging method, in words: whether its final
/// model is below independent training's (then PAPA did not help on this run, and the report
/// says so rather than leaving the worse model unremarked), and whether its members
/// collapsed into one model. Nothing is said of `none`, or of results without validation
/// figures (read from before they were recorded).
///
/// ```
/// # use papa_train::report::{verdicts, RunReport};
/// let empty = RunReport { dataset: "d".into(), command: String::new(), results: vec![], recipes: vec![] };
/// assert!(verdicts(&empty).is_empty());
/// ```
pub fn verdicts(report: &RunReport) -> Vec<String> {
    let independent = report
        .results
        .iter()
        .find(|r| r.method == "none" && !r.validation.members.is_empty());
    let mut out = Vec::new();
    for r in &report.results {
        if r.method == "none" || r.validation.members.is_empty() {
            continue;
        }
        let own = r.validation.final_model;
        let mut said = match independent {
            Some(i) if own < i.validation.final_model => format!(
                "{}: on validation its final model ({}%) is below independent training's ({}%): \
                 PAPA did not help on this run, and none.safetensors is the better model to ship",
                r.method,
                pct(own),
                pct(i.validation.final_model)
            ),
            Some(i) => format!(
                "{}: on validation its final model ({}%) is at or above independent training's ({}%)",
                r.method,
                pct(own),
                pct(i.validation.final_model)
            ),
            None => format!(
                "{}: on validation its final model reaches {}%; independent training was not run \
                 beside it (--compare runs it), so whether PAPA helped here is not known",
                r.method,
                pct(own)
            ),
        };
        if let Some(cosine) = r.history.last().map(|h| h.mean_pairwise_cosine) {
            if cosine > COLLAPSED_COSINE {
                said.push_str(&format!(
                    "; its members ended at pairwise cosine {cosine:.4}, nearly one model, \
                     which leaves the average little diversity to use"
                ));
                if r.method == "papa" {
                    said.push_str(" (a weaker pull, papa_alpha closer to 1, keeps more)");
                }
            }
        }
        out.push(said);
    }
    out
}

/// A code fence longer than any run of backticks in `text`, so the text cannot close it.
fn fence_for(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

/// Writes `results.json` (the report, pretty-printed) and `results.md` (the table, one line
/// of settings per method, and the command) into `dir`, creating it if needed; every file
/// is written atomically.
pub fn write_report(report: &RunReport, dir: &Path) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let json = serde_json::to_string_pretty(report)?;
    write_atomic(&dir.join("results.json"), json.as_bytes())?;

    let mut md = format!("# Results on {}\n\n", report.dataset);
    md.push_str(&markdown_table(report));
    md.push_str(
        "\nTest accuracy in %. The best member is chosen on validation accuracy; \
         greedy soup shows its number of members.\n\n",
    );
    let said = verdicts(report);
    if !said.is_empty() {
        md.push_str("What the validation split says:\n\n");
        for line in said {
            md.push_str(&format!("- {line}\n"));
        }
        md.push('\n');
    }
    for r in &report.results {
        md.push_str(&format!(
            "- {}: model {}, {} members, {} epochs, seed {}\n",
            r.method, r.model, r.population, r.epochs, r.seed
        ));
    }
    md.push_str("\nMembers' augmentation and regularisation (every method):\n\n");
    for (j, recipe) in report.recipes.iter().enumerate() {
        md.push_str(&format!("- member {j}: {recipe}\n"));
    }
    let fence = fence_for(&report.command);
    md.push_str(&format!(
        "\nCommand:\n\n{fence}text\n{}\n{fence}\n",
        report.command
    ));
    write_atomic(&dir.join("results.md"), md.as_bytes())?;
    Ok(())
}
