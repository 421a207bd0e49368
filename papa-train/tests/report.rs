//! Checks of the run report: JSON round trip, the table shows the numbers given, and the
//! files land in the directory (the plot is the CLI's: papa-cli/tests/plot.rs).

use papa_train::augment::Recipe;
use papa_train::report::{
    markdown_table, verdicts, write_report, Accuracy, EpochRecord, MethodResult, RunReport,
    Validation,
};

/// A hand-made history: `members` members over `epochs` epochs, the average measured on
/// every epoch but the first.
fn history(members: usize, epochs: usize, base: f32) -> Vec<EpochRecord> {
    (1..=epochs)
        .map(|epoch| EpochRecord {
            epoch,
            train_loss: 2.0 / epoch as f32,
            member_test_acc: (0..members)
                .map(|j| base + epoch as f32 + j as f32 * 0.5)
                .collect(),
            average_test_acc: (epoch > 1).then_some(base + epoch as f32 + 2.0),
            distance_to_mean: (0..members).map(|j| 0.1 * j as f64).collect(),
            mean_pairwise_cosine: 0.9,
            seconds: 1.25,
        })
        .collect()
}

fn report() -> RunReport {
    RunReport {
        dataset: "fashion-mnist".into(),
        command: "papa train --method papa,none --population 3".into(),
        results: vec![
            MethodResult {
                method: "papa".into(),
                seed: 7,
                population: 3,
                epochs: 4,
                model: "cnn-s".into(),
                members: vec![91.1, 91.25, 90.8],
                members_mean: 91.05,
                members_min: 90.8,
                members_max: 91.25,
                best_member_on_val: 91.25,
                ensemble: 92.5,
                uniform_soup: Accuracy {
                    plain: 92.12,
                    repaired: Some(92.37),
                },
                greedy_soup: Accuracy {
                    plain: 92.0,
                    repaired: None,
                },
                greedy_soup_size: 2,
                final_model: 92.37,
                final_model_is: "uniform soup + REPAIR".into(),
                validation: Default::default(),
                wall_seconds: 754.0,
                cpu_path: "avx512".into(),
                history: history(3, 4, 80.0),
            },
            MethodResult {
                method: "none".into(),
                seed: 7,
                population: 3,
                epochs: 4,
                model: "cnn-s".into(),
                members: vec![89.5, 90.0, 89.75],
                members_mean: 89.75,
                members_min: 89.5,
                members_max: 90.0,
                best_member_on_val: 90.0,
                ensemble: 91.0,
                uniform_soup: Accuracy {
                    plain: 10.0,
                    repaired: Some(45.5),
                },
                greedy_soup: Accuracy {
                    plain: 90.0,
                    repaired: None,
                },
                greedy_soup_size: 1,
                final_model: 90.0,
                final_model_is: "greedy soup".into(),
                validation: Default::default(),
                wall_seconds: 42.25,
                cpu_path: "portable".into(),
                history: history(3, 4, 78.0),
            },
        ],
        recipes: vec![
            Recipe {
                mixup: 0.5,
                ..Recipe::standard(4, true)
            },
            Recipe::plain(),
        ],
    }
}

/// `report` as its JSON keeps it: without the timings and the command line, which differ
/// between identical runs.
fn as_stored(mut report: RunReport) -> RunReport {
    report.command.clear();
    for r in &mut report.results {
        r.wall_seconds = 0.0;
        r.history.iter_mut().for_each(|e| e.seconds = 0.0);
    }
    report
}

#[test]
fn json_round_trip() {
    let report = report();
    let json = serde_json::to_string_pretty(&report).unwrap();
    let back: papa_train::report::RunReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, as_stored(report));
}

#[test]
fn json_has_the_same_bytes_for_runs_that_differ_only_in_time_and_place() {
    let first = report();
    let mut second = report();
    second.command = "papa train --out elsewhere".into();
    second.results[0].wall_seconds += 1.5;
    second.results[1].history[0].seconds *= 3.0;
    assert_eq!(
        serde_json::to_string_pretty(&first).unwrap(),
        serde_json::to_string_pretty(&second).unwrap()
    );
}

#[test]
fn json_of_a_diverged_run_reads_back() {
    // serde_json writes NaN as null; reading it back must not fail.
    let mut report = report();
    report.results[0].history[0].train_loss = f32::NAN;
    report.results[0].history[0].mean_pairwise_cosine = f64::NAN;
    report.results[0].history[0].distance_to_mean[1] = f64::INFINITY;
    let json = serde_json::to_string(&report).unwrap();
    let back: RunReport = serde_json::from_str(&json).unwrap();
    let first = &back.results[0].history[0];
    assert!(first.train_loss.is_nan());
    assert!(first.mean_pairwise_cosine.is_nan());
    assert!(first.distance_to_mean[1].is_nan());
    assert_eq!(back.results[1], as_stored(report).results[1]);
}

#[test]
fn table_shows_the_numbers_given() {
    let table = markdown_table(&report());
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    // Every line has the same width, so the table reads as plain text too.
    assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{table}");
    assert!(lines[1].starts_with("| ---"), "{table}");
    let cells = |line: &str| -> Vec<String> {
        let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
        inner.split(" | ").map(|c| c.trim().to_string()).collect()
    };
    assert_eq!(cells(lines[0])[0], "method");
    let papa = cells(lines[2]);
    assert_eq!(papa[0], "papa");
    for needle in [
        "91.05 [90.80, 91.25]",
        "91.25",
        "92.50",
        "92.12",
        "92.37",
        "92.00 (2)",
        "n/a",
        "92.37 (uniform soup + REPAIR)",
        "12m 34s",
    ] {
        assert!(
            papa.iter().any(|c| c == needle),
            "`{needle}` missing in {papa:?}"
        );
    }
    let none = cells(lines[3]);
    for needle in [
        "89.75 [89.50, 90.00]",
        "91.00",
        "10.00",
        "45.50",
        "90.00 (1)",
        "90.00 (greedy soup)",
        "42.2 s",
    ] {
        assert!(
            none.iter().any(|c| c == needle),
            "`{needle}` missing in {none:?}"
        );
    }
}

#[test]
fn table_escapes_pipes_and_handles_no_results() {
    let mut report = report();
    report.results[0].method = "a|b".into();
    assert!(markdown_table(&report).contains("a\\|b"));
    report.results.clear();
    assert_eq!(markdown_table(&report).lines().count(), 2);
}

#[test]
fn write_report_writes_the_two_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run").join("results");
    let report = report();
    write_report(&report, &out).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["results.json", "results.md"]);
    let json = std::fs::read_to_string(out.join("results.json")).unwrap();
    assert_eq!(
        serde_json::from_str::<RunReport>(&json).unwrap(),
        as_stored(report.clone())
    );
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains(&markdown_table(&report)));
    assert!(md.contains(&report.command));
    assert!(md.contains(
        "- member 0: mixup 0.5, label smoothing 0, cutmix 0, erasing 0, crop padding 4, flip on"
    ));
    assert!(md.contains("- member 1: mixup 0, label smoothing 0"));
    assert!(md.contains("fashion-mnist"));
}

#[test]
fn the_report_says_when_papa_is_below_independent_training_on_validation() {
    let with_val = |papa: f32, none: f32| {
        let mut r = report();
        for (result, final_model) in r.results.iter_mut().zip([papa, none]) {
            result.validation = Validation {
                members: vec![final_model - 1.0; 3],
                final_model,
            };
        }
        r
    };
    let below = verdicts(&with_val(90.0, 90.5));
    assert_eq!(below.len(), 1, "{below:?}");
    assert!(below[0].starts_with("papa: ") && below[0].contains("did not help"));
    assert!(below[0].contains("90.00%") && below[0].contains("90.50%"));
    let above = verdicts(&with_val(90.5, 90.5));
    assert!(above[0].contains("at or above") && !above[0].contains("did not help"));

    // Without independent training nothing can be claimed either way.
    let mut alone = with_val(90.0, 90.5);
    alone.results.truncate(1);
    let said = &verdicts(&alone)[0];
    assert!(said.contains("not known") && !said.contains("  "), "{said}");

    // Members that ended as one model are named as such; results without validation figures
    // (older files) get no verdict.
    let mut collapsed = with_val(90.0, 90.5);
    collapsed.results[0]
        .history
        .last_mut()
        .unwrap()
        .mean_pairwise_cosine = 0.9998;
    assert!(verdicts(&collapsed)[0].contains("cosine 0.9998"));
    assert!(!below[0].contains("cosine"));
    assert!(verdicts(&report()).is_empty());

    // results.md carries the same lines.
    let dir = tempfile::tempdir().unwrap();
    write_report(&with_val(90.0, 90.5), dir.path()).unwrap();
    let md = std::fs::read_to_string(dir.path().join("results.md")).unwrap();
    assert!(md.contains(&below[0]), "{md}");
}
