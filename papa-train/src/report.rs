//! Results of a run, for people (a Markdown table, an SVG plot) and for machines (JSON).
//!
//! [`write_report`] writes all three into a directory through [`write_atomic`];
//! [`markdown_table`] is also what the command line prints, so it pads its columns to read
//! well as plain text.

use crate::augment::Recipe;
use crate::checkpoint::{write_atomic, CheckpointError};
use plotters::prelude::*;
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
    /// Wall time of the epoch.
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
    /// Wall time of the whole method, in seconds.
    pub wall_seconds: f64,
    /// Per-epoch measurements.
    pub history: Vec<EpochRecord>,
}

/// The results of one invocation of the command line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The dataset's name.
    pub dataset: String,
    /// The command line that produced the results (to rerun them).
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
    /// The plotting library failed.
    #[error("{}: cannot draw the plot: {reason}", path.display())]
    Plot {
        /// The SVG file that was to be written.
        path: PathBuf,
        /// The plotting library's message.
        reason: String,
    },
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

/// Width of the plot in pixels, and height of one method's panel.
const PLOT_WIDTH: u32 = 900;
const PANEL_HEIGHT: u32 = 320;

/// Draws test accuracy per epoch into an SVG at `path`: one panel per method, each member a
/// thin line and the evaluated uniform average a thick line in the same colour family.
///
/// Text is written as SVG `<text>` elements, so no font is needed at run time.
pub fn plot_history(report: &RunReport, path: &Path) -> Result<(), ReportError> {
    let svg = render_svg(report).map_err(|reason| ReportError::Plot {
        path: path.to_path_buf(),
        reason,
    })?;
    write_atomic(path, svg.as_bytes())?;
    Ok(())
}

/// Renders the plot of [`plot_history`] to a string (plotters' errors as text).
fn render_svg(report: &RunReport) -> Result<String, String> {
    let panels = report.results.len().max(1);
    let height = u32::try_from(panels)
        .ok()
        .and_then(|p| p.checked_mul(PANEL_HEIGHT))
        .ok_or_else(|| format!("too many methods to plot ({panels})"))?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (PLOT_WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        if report.results.is_empty() {
            root.draw(&Text::new(
                "no results",
                (20, 20),
                ("sans-serif", 16).into_font(),
            ))
            .map_err(|e| e.to_string())?;
        }
        for (i, (area, result)) in root
            .split_evenly((panels, 1))
            .iter()
            .zip(&report.results)
            .enumerate()
        {
            draw_panel(area, result, Palette99::pick(i).to_rgba()).map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Drawing errors of the SVG backend.
type DrawError = DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>;

/// Draws one method's panel.
fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    result: &MethodResult,
    colour: RGBAColor,
) -> Result<(), DrawError> {
    let history = &result.history;
    let values = history
        .iter()
        .flat_map(|r| r.member_test_acc.iter().chain(&r.average_test_acc))
        .copied()
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    // A little headroom around the data, within the 0..100 an accuracy can take.
    let (y0, y1) = if lo <= hi {
        let (y0, y1) = ((lo - 2.0).max(0.0), (hi + 2.0).min(100.0));
        if y1 > y0 {
            (y0, y1)
        } else {
            (0.0, 100.0)
        }
    } else {
        (0.0, 100.0)
    };
    // Integer epochs on the axis, so that ticks never fall between epochs; a single epoch
    // still needs a non-empty range.
    let first = history.iter().map(|r| r.epoch).min().unwrap_or(0);
    let last = history.iter().map(|r| r.epoch).max().unwrap_or(0);
    let (x0, x1) = (first, last.max(first.saturating_add(1)));

    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "{} ({}, P = {})",
                result.method, result.model, result.population
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(x0..x1, f64::from(y0)..f64::from(y1))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("test accuracy (%)")
        .draw()?;

    let members = history
        .iter()
        .map(|r| r.member_test_acc.len())
        .max()
        .unwrap_or(0);
    let thin = colour.mix(0.4).stroke_width(1);
    for j in 0..members {
        let points = history.iter().filter_map(|r| {
            let v = *r.member_test_acc.get(j)?;
            v.is_finite().then_some((r.epoch, f64::from(v)))
        });
        let series = chart.draw_series(LineSeries::new(points, thin))?;
        // One legend entry stands for all members: ten identical entries would say nothing.
        if j == 0 {
            series
                .label("members")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], thin));
        }
    }
    let average: Vec<(usize, f64)> = history
        .iter()
        .filter_map(|r| {
            let v = r.average_test_acc?;
            v.is_finite().then_some((r.epoch, f64::from(v)))
        })
        .collect();
    let thick = colour.stroke_width(3);
    if !average.is_empty() {
        chart
            .draw_series(LineSeries::new(average, thick))?
            .label("average of the members")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], thick));
    }
    if members > 0 {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

/// A code fence longer than any run of backticks in `text`, so the text cannot close it.
fn fence_for(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

/// Writes `results.json` (the report, pretty-printed), `results.md` (the table, one line of
/// settings per method, and the command) and `accuracy.svg` ([`plot_history`]) into `dir`,
/// creating it if needed; every file is written atomically.
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

    plot_history(report, &dir.join("accuracy.svg"))
}
