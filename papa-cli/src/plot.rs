//! `accuracy.svg`: how each method of a run trained, epoch by epoch, on axes shared so that
//! the panels compare at a glance.
//!
//! One panel per method draws each member's test accuracy as a thin line and the evaluated
//! uniform average as a thick one. Every accuracy panel has the same epoch range and the same
//! accuracy range, fitted to all methods' values and to the reference lines. When independent
//! training (method `none`) is in the report, its ensemble's test accuracy and its best
//! member's (chosen on validation) cross every panel as dashed lines: the marks an averaging
//! method has to beat. A last panel draws each method's mean pairwise cosine of the members
//! per epoch, the population's diversity.
//!
//! Text is written as SVG `<text>` elements, so no font is needed at run time.

use papa_train::checkpoint::{write_atomic, CheckpointError};
use papa_train::report::{MethodResult, RunReport};
use plotters::coord::types::{RangedCoordf64, RangedCoordusize};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why the plot was not written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The plotting library failed.
    #[error("{}: cannot draw the plot: {reason}", path.display())]
    Draw {
        /// The SVG file that was to be written.
        path: PathBuf,
        /// The plotting library's message (its error types are generic over the backend).
        reason: String,
    },
    /// Writing the file failed.
    #[error(transparent)]
    Write(#[from] CheckpointError),
}

/// Width of the plot in pixels, and height of one panel.
const PLOT_WIDTH: u32 = 900;
const PANEL_HEIGHT: u32 = 320;

/// Title of the last panel.
const DIVERSITY_TITLE: &str = "diversity: mean pairwise cosine of the members";

/// Draws the run's training history into an SVG at `path`: one accuracy panel per method
/// (each member a thin line, the evaluated uniform average a thick line), all on one shared
/// pair of axes, with independent training's ensemble and best member (on validation) as
/// dashed reference lines when the report has a `none` result, and a last panel of each
/// method's mean pairwise cosine of the members.
///
/// Text is written as SVG `<text>` elements, so no font is needed at run time.
pub fn plot_history(report: &RunReport, path: &Path) -> Result<(), PlotError> {
    let svg = render_svg(report).map_err(|reason| PlotError::Draw {
        path: path.to_path_buf(),
        reason,
    })?;
    write_atomic(path, svg.as_bytes())?;
    Ok(())
}

/// Drawing errors of the SVG backend.
type DrawError = DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>;

/// A panel: epochs across, a percentage or a cosine up.
type Chart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordusize, RangedCoordf64>>;

/// A horizontal line drawn across every accuracy panel.
struct Reference {
    label: &'static str,
    value: f64,
    style: ShapeStyle,
    /// Dash length and gap, in pixels: the two lines differ in dash, not only in colour.
    dash: (u32, u32),
}

/// Renders the plot of [`plot_history`] to a string (plotters' errors as text).
fn render_svg(report: &RunReport) -> Result<String, String> {
    let results = &report.results;
    // The accuracy panels, then the diversity panel; a note alone when there is nothing.
    let panels = if results.is_empty() {
        1
    } else {
        results.len().saturating_add(1)
    };
    let height = u32::try_from(panels)
        .ok()
        .and_then(|p| p.checked_mul(PANEL_HEIGHT))
        .ok_or_else(|| format!("too many methods to plot ({})", results.len()))?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (PLOT_WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        if results.is_empty() {
            root.draw(&Text::new(
                "no results",
                (20, 20),
                ("sans-serif", 16).into_font(),
            ))
            .map_err(|e| e.to_string())?;
        } else {
            let references = references(report);
            let epochs = epoch_range(results);
            let accuracy = accuracy_range(results, &references);
            let areas = root.split_evenly((panels, 1));
            for (i, (area, result)) in areas.iter().zip(results).enumerate() {
                draw_accuracy_panel(
                    area,
                    result,
                    colour(i),
                    &references,
                    epochs.clone(),
                    accuracy.clone(),
                )
                .map_err(|e| e.to_string())?;
            }
            draw_diversity_panel(&areas[results.len()], results, epochs)
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// The colour of the `i`-th method, in its panel and in the diversity panel alike: Tableau's
/// ten less grey (the reference lines' colour), none of them too pale for thin lines.
fn colour(i: usize) -> RGBAColor {
    const COLOURS: [RGBColor; 9] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    COLOURS[i % COLOURS.len()].to_rgba()
}

/// Independent training's ensemble and best member (on validation), when the report has a
/// `none` result; values that are not finite are left out rather than drawn off the axes.
fn references(report: &RunReport) -> Vec<Reference> {
    let Some(none) = report.results.iter().find(|r| r.method == "none") else {
        return Vec::new();
    };
    [
        Reference {
            label: "independent ensemble",
            value: f64::from(none.ensemble),
            style: BLACK.stroke_width(2),
            dash: (10, 5),
        },
        Reference {
            label: "independent best member (val)",
            value: f64::from(none.best_member_on_val),
            style: RGBColor(120, 120, 120).stroke_width(2),
            dash: (3, 4),
        },
    ]
    .into_iter()
    .filter(|r| r.value.is_finite())
    .collect()
}

/// Epochs over every method's history. Integer epochs on the axis, so that ticks never fall
/// between epochs; a single epoch sits mid-axis, where its dots are seen.
fn epoch_range(results: &[MethodResult]) -> Range<usize> {
    let mut epochs = results.iter().flat_map(|r| &r.history).map(|h| h.epoch);
    let Some(first) = epochs.next() else {
        return 0..1;
    };
    let (lo, hi) = epochs.fold((first, first), |(lo, hi), e| (lo.min(e), hi.max(e)));
    if lo < hi {
        lo..hi
    } else {
        lo.saturating_sub(1)..lo.saturating_add(1)
    }
}

/// The accuracy range every panel shares: all members', averages' and reference values.
fn accuracy_range(results: &[MethodResult], references: &[Reference]) -> Range<f64> {
    let accuracies = results
        .iter()
        .flat_map(|r| &r.history)
        .flat_map(|h| h.member_test_acc.iter().chain(&h.average_test_acc))
        .map(|&v| f64::from(v));
    fit(
        accuracies.chain(references.iter().map(|r| r.value)),
        2.0,
        0.0..100.0,
    )
}

/// A range around the finite `values` with some headroom (at least `pad`), within `bounds`
/// where the values allow; `bounds` itself when there is nothing to fit.
fn fit(values: impl Iterator<Item = f64>, pad: f64, bounds: Range<f64>) -> Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return bounds;
    }
    let pad = pad.max((hi - lo) * 0.05);
    let (y0, y1) = ((lo - pad).max(bounds.start), (hi + pad).min(bounds.end));
    if y1 > y0 {
        y0..y1
    } else {
        bounds
    }
}

/// A panel with its caption, axes and grid.
fn chart<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: &str,
    epochs: Range<usize>,
    y: Range<f64>,
    y_desc: &str,
) -> Result<Chart<'a, 'b>, DrawError> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(epochs, y)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .draw()?;
    Ok(chart)
}

/// Draws a line through `points`, labelled `label` in the legend when given; a single point
/// gets a dot, since a line through one point shows nothing. False when there was no point.
fn draw_line(
    chart: &mut Chart<'_, '_>,
    points: Vec<(usize, f64)>,
    style: ShapeStyle,
    label: Option<&str>,
) -> Result<bool, DrawError> {
    if let [point] = points[..] {
        chart.draw_series(std::iter::once(Circle::new(point, 3, style.filled())))?;
    }
    if points.is_empty() {
        return Ok(false);
    }
    let series = chart.draw_series(LineSeries::new(points, style))?;
    if let Some(label) = label {
        series
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    Ok(true)
}

/// Draws the legend of the series labelled so far.
fn draw_legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> Result<(), DrawError> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
}

/// Draws one method's accuracy panel on the shared axes.
fn draw_accuracy_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    result: &MethodResult,
    colour: RGBAColor,
    references: &[Reference],
    epochs: Range<usize>,
    accuracy: Range<f64>,
) -> Result<(), DrawError> {
    let caption = format!(
        "{} ({}, P = {})",
        result.method, result.model, result.population
    );
    let mut chart = chart(
        area,
        &caption,
        epochs.clone(),
        accuracy,
        "test accuracy (%)",
    )?;
    let history = &result.history;
    let members = history
        .iter()
        .map(|r| r.member_test_acc.len())
        .max()
        .unwrap_or(0);
    let mut labelled = false;
    for j in 0..members {
        let points = history
            .iter()
            .filter_map(|r| {
                let v = *r.member_test_acc.get(j)?;
                v.is_finite().then_some((r.epoch, f64::from(v)))
            })
            .collect();
        // One legend entry stands for all members: ten identical entries would say nothing.
        let label = (!labelled).then_some("members");
        labelled |= draw_line(&mut chart, points, colour.mix(0.4).stroke_width(1), label)?;
    }
    let average = history
        .iter()
        .filter_map(|r| {
            let v = r.average_test_acc?;
            v.is_finite().then_some((r.epoch, f64::from(v)))
        })
        .collect();
    let label = Some("average of the members");
    labelled |= draw_line(&mut chart, average, colour.stroke_width(3), label)?;
    for r in references {
        let (dash, gap) = r.dash;
        let ends = [(epochs.start, r.value), (epochs.end, r.value)];
        chart
            .draw_series(DashedLineSeries::new(ends, dash, gap, r.style))?
            .label(r.label)
            .legend(move |(x, y)| {
                DashedPathElement::new(vec![(x, y), (x + 20, y)], dash, gap, r.style)
            });
        labelled = true;
    }
    if labelled {
        draw_legend(&mut chart)?;
    }
    Ok(())
}

/// Draws the diversity panel: each method's mean pairwise cosine per epoch, in its colour,
/// on the epochs of the accuracy panels and a cosine range fitted to the data.
fn draw_diversity_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    results: &[MethodResult],
    epochs: Range<usize>,
) -> Result<(), DrawError> {
    let lines: Vec<Vec<(usize, f64)>> = results
        .iter()
        .map(|r| {
            r.history
                .iter()
                .filter(|h| h.mean_pairwise_cosine.is_finite())
                .map(|h| (h.epoch, h.mean_pairwise_cosine))
                .collect()
        })
        .collect();
    // Cosines near 1 differ in the third decimal, so the headroom is small.
    let cosines = lines.iter().flatten().map(|&(_, c)| c);
    let y = fit(cosines, 0.005, -1.0..1.0);
    let mut chart = chart(
        area,
        DIVERSITY_TITLE,
        epochs.clone(),
        y.clone(),
        "mean pairwise cosine",
    )?;
    let mut labelled = false;
    for (i, (result, points)) in results.iter().zip(lines).enumerate() {
        let style = colour(i).stroke_width(2);
        labelled |= draw_line(&mut chart, points, style, Some(&result.method))?;
    }
    if labelled {
        draw_legend(&mut chart)?;
    } else {
        chart.plotting_area().draw(&Text::new(
            "no pairwise cosine measured",
            (epochs.start, (y.start + y.end) / 2.0),
            ("sans-serif", 16).into_font(),
        ))?;
    }
    Ok(())
}
