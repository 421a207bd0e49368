//! `accuracy.svg`: test accuracy per epoch of every member and of the averaged model.

use papa_train::checkpoint::{write_atomic, CheckpointError};
use papa_train::report::{MethodResult, RunReport};
use plotters::prelude::*;
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

/// Width of the plot in pixels, and height of one method's panel.
const PLOT_WIDTH: u32 = 900;
const PANEL_HEIGHT: u32 = 320;

/// Draws test accuracy per epoch into an SVG at `path`: one panel per method, each member a
/// thin line and the evaluated uniform average a thick line in the same colour family.
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
