//! The accuracy plot: one line per member and per average, drawn whatever the history holds.

use papa_cli::plot::plot_history;
use papa_train::report::{Accuracy, EpochRecord, MethodResult, RunReport};

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

fn report(results: Vec<MethodResult>) -> RunReport {
    RunReport {
        dataset: "fashion-mnist".into(),
        command: "papa train".into(),
        results,
        recipes: vec![],
    }
}

#[test]
fn svg_has_a_line_per_member_and_average() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("accuracy.svg");
    plot_history(
        &report(vec![method("papa", 3, 4), method("none", 3, 4)]),
        &path,
    )
    .unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
    // Data lines have one point per epoch (3 or 4 here); grid lines and legend samples have
    // two. Two methods x (3 thin member lines + 1 thick average line).
    let lines: Vec<&str> = svg
        .split("<polyline")
        .skip(1)
        .filter(|tag| {
            let points = tag.split("points=\"").nth(1).unwrap().split('"').next();
            points.unwrap().split_whitespace().count() >= 3
        })
        .collect();
    assert_eq!(lines.len(), 2 * (3 + 1), "{svg}");
    let thick = lines.iter().filter(|l| l.contains("stroke-width=\"3\""));
    assert_eq!(thick.count(), 2);
    assert!(svg.contains("<text"));
    assert!(svg.contains("epoch"));
    assert!(svg.contains("papa (cnn-s, P = 3)"));
}

#[test]
fn svg_of_empty_inputs_is_still_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.svg");
    plot_history(
        &report(vec![method("papa", 3, 0), method("none", 2, 1)]),
        &path,
    )
    .unwrap();
    assert!(std::fs::read_to_string(&path).unwrap().starts_with("<svg"));
    plot_history(&report(vec![]), &path).unwrap();
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("no results"));
}
