//! The accuracy plot: one line per member and per average on axes shared by every method,
//! independent training's reference lines, a diversity panel, drawn whatever the history
//! holds. Checked by reading the SVG's text.

use papa_cli::plot::plot_history;
use papa_train::report::{Accuracy, EpochRecord, MethodResult, RunReport};

const DIVERSITY: &str = "diversity: mean pairwise cosine of the members";
const ENSEMBLE: &str = "independent ensemble";
const BEST: &str = "independent best member (val)";

/// A method of `members` members over `epochs` epochs, the average measured on every epoch
/// but the first.
fn method(name: &str, members: usize, epochs: usize) -> MethodResult {
    let history = (1..=epochs)
        .map(|epoch| EpochRecord {
            epoch,
            train_loss: 2.0 / epoch as f32,
            member_test_acc: (0..members).map(|j| 80.0 + (epoch + j) as f32).collect(),
            average_test_acc: (epoch > 1).then_some(83.0 + epoch as f32),
            distance_to_mean: vec![0.5; members],
            mean_pairwise_cosine: 0.9,
            seconds: 1.0,
        })
        .collect();
    let plain = Accuracy {
        plain: 90.0,
        repaired: None,
    };
    MethodResult {
        method: name.into(),
        seed: 7,
        population: members,
        epochs,
        model: "cnn-s".into(),
        members: vec![90.0; members],
        members_mean: 90.0,
        members_min: 90.0,
        members_max: 90.0,
        best_member_on_val: 90.0,
        ensemble: 91.0,
        uniform_soup: plain.clone(),
        greedy_soup: plain,
        greedy_soup_size: 1,
        final_model: 90.0,
        final_model_is: "greedy soup".into(),
        validation: Default::default(),
        wall_seconds: 1.0,
        cpu_path: "avx512".into(),
        history,
    }
}

/// `method`, with every accuracy `by` points lower.
fn lowered(mut result: MethodResult, by: f32) -> MethodResult {
    for h in &mut result.history {
        h.member_test_acc.iter_mut().for_each(|v| *v -= by);
        h.average_test_acc = h.average_test_acc.map(|v| v - by);
    }
    result
}

fn report(results: Vec<MethodResult>) -> RunReport {
    RunReport {
        dataset: "fashion-mnist".into(),
        command: "papa train".into(),
        results,
        recipes: vec![],
    }
}

/// The SVG plotted for `results`.
fn plot(results: Vec<MethodResult>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("accuracy.svg");
    plot_history(&report(results), &path).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
    assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
    svg
}

/// An attribute of a tag.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    tag.split(&format!(" {name}=\"")).nth(1)?.split('"').next()
}

/// Each `<text>` element's `text-anchor` and content, in document order.
fn texts(svg: &str) -> Vec<(String, String)> {
    svg.split("<text")
        .skip(1)
        .map(|t| {
            let (tag, rest) = t.split_once('>').unwrap();
            let content = rest.split("</text>").next().unwrap().trim();
            let anchor = attr(tag, "text-anchor").unwrap_or("").to_string();
            (anchor, content.to_string())
        })
        .collect()
}

/// How many `<text>` elements say exactly `label`.
fn count_text(svg: &str, label: &str) -> usize {
    texts(svg).iter().filter(|(_, c)| c == label).count()
}

/// The numeric labels of each panel, in order of the panels' `captions`: y ticks (right
/// aligned) and x ticks (centred). Panels are drawn one after another, so a panel's texts
/// follow its caption.
fn ticks(svg: &str, captions: &[&str]) -> Vec<(Vec<String>, Vec<String>)> {
    let all = texts(svg);
    let starts: Vec<usize> = captions
        .iter()
        .map(|c| all.iter().position(|(_, t)| t == c).unwrap())
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let end = starts.get(i + 1).copied().unwrap_or(all.len());
            let numbers = |anchor: &str| {
                all[s..end]
                    .iter()
                    .filter(|(a, t)| a == anchor && t.parse::<f64>().is_ok())
                    .map(|(_, t)| t.clone())
                    .collect::<Vec<_>>()
            };
            (numbers("end"), numbers("middle"))
        })
        .collect()
}

/// Polylines with at least `points` points.
fn polylines(svg: &str, points: usize) -> Vec<&str> {
    svg.split("<polyline")
        .skip(1)
        .filter(|tag| attr(tag, "points").unwrap().split_whitespace().count() >= points)
        .collect()
}

#[test]
fn svg_has_a_line_per_member_and_average() {
    let svg = plot(vec![method("papa", 3, 4), method("none", 3, 4)]);
    // Data lines have one point per epoch (3 or 4 here); grid lines, legend samples and
    // dashes have two. Two methods x (3 thin member lines + 1 thick average line), and one
    // diversity line per method.
    let lines = polylines(&svg, 3);
    assert_eq!(lines.len(), 2 * (3 + 1) + 2, "{svg}");
    let width = |w: &str| {
        let tag = format!("stroke-width=\"{w}\"");
        lines.iter().filter(|l| l.contains(&tag)).count()
    };
    assert_eq!(width("3"), 2);
    assert_eq!(width("2"), 2);
    assert_eq!(width("1"), 2 * 3);
    assert!(svg.contains("epoch"));
    assert_eq!(count_text(&svg, "papa (cnn-s, P = 3)"), 1);
    assert_eq!(count_text(&svg, "members"), 2);
    assert_eq!(count_text(&svg, "average of the members"), 2);
}

#[test]
fn independent_training_gives_reference_lines_and_shared_axes() {
    // Far apart accuracies: panels fitted each to their own data would share no tick.
    let svg = plot(vec![
        method("papa", 3, 4),
        lowered(method("none", 2, 4), 40.0),
    ]);
    // Labelled in both accuracy panels' legends.
    assert_eq!(count_text(&svg, ENSEMBLE), 2, "{svg}");
    assert_eq!(count_text(&svg, BEST), 2);
    // Dashed: many short segments in the reference greys.
    let grey = polylines(&svg, 2)
        .iter()
        .filter(|l| l.contains("stroke=\"#787878\""))
        .count();
    assert!(grey > 10, "{grey} grey segments");

    let captions = ["papa (cnn-s, P = 3)", "none (cnn-s, P = 2)", DIVERSITY];
    let panels = ticks(&svg, &captions);
    let (papa_y, papa_x) = &panels[0];
    let (none_y, none_x) = &panels[1];
    let (cosine_y, cosine_x) = &panels[2];
    assert!(papa_y.len() >= 3, "{papa_y:?}");
    assert_eq!(papa_y, none_y, "accuracy panels share the y axis");
    let number = |t: &String| t.parse::<f64>().unwrap();
    let (lo, hi) = (number(&papa_y[0]), number(&papa_y[papa_y.len() - 1]));
    // The lowest "none" member (41%) and the ensemble line (91%) lie within the axis.
    assert!(lo.min(hi) <= 42.0 && lo.max(hi) >= 90.0, "{papa_y:?}");
    assert_eq!(papa_x, none_x, "and the epochs");
    assert_eq!(papa_x, cosine_x);
    // The cosine axis is fitted to the cosines (all 0.9), not to the accuracies.
    assert_ne!(cosine_y, papa_y);
    assert!(
        cosine_y.iter().all(|t| (number(t) - 0.9).abs() < 0.1),
        "{cosine_y:?}"
    );
    // The diversity legend names each method.
    assert_eq!(count_text(&svg, "papa"), 1);
    assert_eq!(count_text(&svg, "none"), 1);
}

#[test]
fn without_independent_training_there_are_no_reference_lines() {
    let svg = plot(vec![method("papa", 3, 4), method("papa-all", 3, 4)]);
    assert_eq!(count_text(&svg, ENSEMBLE), 0);
    assert_eq!(count_text(&svg, BEST), 0);
    assert!(!svg.contains("independent"));
    assert_eq!(count_text(&svg, DIVERSITY), 1);
    let captions = ["papa (cnn-s, P = 3)", "papa-all (cnn-s, P = 3)", DIVERSITY];
    let panels = ticks(&svg, &captions);
    assert_eq!(panels[0], panels[1]);
}

#[test]
fn cosines_anywhere_in_minus_one_to_one_are_fitted() {
    let mut papa = method("papa", 3, 4);
    for (h, c) in papa.history.iter_mut().zip([-0.8, -0.2, f64::NAN, 0.3]) {
        h.mean_pairwise_cosine = c;
    }
    let mut none = method("none", 3, 4);
    none.history[0].mean_pairwise_cosine = f64::INFINITY;
    let svg = plot(vec![papa, none]);
    let panels = ticks(&svg, &[DIVERSITY]);
    let ys: Vec<f64> = panels[0].0.iter().map(|t| t.parse().unwrap()).collect();
    let (lo, hi) = ys
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    assert!(
        (-1.0..=-0.7).contains(&lo) && (0.3..=1.0).contains(&hi),
        "{ys:?}"
    );
}

#[test]
fn svg_of_degenerate_inputs_is_still_drawn() {
    // No epochs, one epoch.
    let svg = plot(vec![method("papa", 3, 0), method("none", 2, 1)]);
    assert_eq!(count_text(&svg, DIVERSITY), 1);
    // One epoch is a dot per member, since a line through one point shows nothing.
    assert!(svg.matches("<circle").count() >= 2, "{svg}");

    // NaN and infinite accuracies and cosines, NaN reference values, one member.
    let mut papa = method("papa", 3, 3);
    for h in &mut papa.history {
        h.member_test_acc[1] = f32::NAN;
        h.average_test_acc = Some(f32::INFINITY);
        h.mean_pairwise_cosine = f64::NAN;
    }
    let mut none = method("none", 1, 3);
    for h in &mut none.history {
        h.mean_pairwise_cosine = f64::NAN;
    }
    none.ensemble = f32::NAN;
    none.best_member_on_val = f32::NAN;
    let svg = plot(vec![papa, none]);
    assert_eq!(count_text(&svg, ENSEMBLE), 0);
    assert_eq!(count_text(&svg, "no pairwise cosine measured"), 1);
    assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");

    // Only empty histories, and a reference line alone on the axes.
    let svg = plot(vec![method("none", 3, 0)]);
    assert_eq!(count_text(&svg, ENSEMBLE), 1);

    let svg = plot(vec![]);
    assert_eq!(count_text(&svg, "no results"), 1);
}
