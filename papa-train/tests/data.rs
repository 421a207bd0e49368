//! Data loading: IDX and CSV readers, their errors, splits, normalisation, epoch orders.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use papa_train::data::{
    batches, batches_per_epoch, csv, epoch_order, eval_ranges, idx, load, load_with, CsvOptions,
    DataError, Header, LabelColumn, LoadOptions, Splits,
};

/// Raw IDX bytes of `n` images of `rows x cols` (pixel = index mod 256) or of labels.
fn idx_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut out = vec![0, 0, 8, 3];
    for d in [n, rows, cols] {
        out.extend(d.to_be_bytes());
    }
    out.extend((0..n * rows * cols).map(|i| i as u8));
    out
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, 1];
    out.extend((labels.len() as u32).to_be_bytes());
    out.extend(labels);
    out
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// A directory with a small IDX dataset: 20 train and 6 test images of 3x2, mixing raw and
/// gzipped files; train label i is i mod 4.
fn idx_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let train_labels: Vec<u8> = (0..20).map(|i| i % 4).collect();
    write(
        dir.path(),
        "train-images-idx3-ubyte.gz",
        &gz(&idx_images(20, 3, 2)),
    );
    write(
        dir.path(),
        "train-labels-idx1-ubyte",
        &idx_labels(&train_labels),
    );
    write(dir.path(), "t10k-images-idx3-ubyte", &idx_images(6, 3, 2));
    write(
        dir.path(),
        "t10k-labels-idx1-ubyte.gz",
        &gz(&idx_labels(&[0, 1, 2, 3, 3, 0])),
    );
    dir
}

#[test]
fn idx_reads_raw_and_gzip_alike() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a", &idx_images(2, 3, 4));
    write(dir.path(), "a.gz", &gz(&idx_images(2, 3, 4)));
    let raw = idx::read_images(&dir.path().join("a")).unwrap();
    assert_eq!(raw, idx::read_images(&dir.path().join("a.gz")).unwrap());
    assert_eq!((raw.count, raw.rows, raw.cols), (2, 3, 4));
    let expected: Vec<f32> = (0..24).map(|i| i as f32 / 255.0).collect();
    assert_eq!(raw.pixels, expected);
}

#[test]
fn idx_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, bytes: &[u8], labels: bool, needle: &str| {
        write(dir.path(), name, bytes);
        let path = dir.path().join(name);
        let err = if labels {
            idx::read_labels(&path).unwrap_err()
        } else {
            idx::read_images(&path).unwrap_err()
        };
        let msg = err.to_string();
        assert!(msg.contains(name) && msg.contains(needle), "{msg}");
    };
    let full = idx_images(2, 3, 4);
    check("truncated", &full[..full.len() - 1], false, "truncated");
    check(
        "trailing",
        &[full.as_slice(), &[0]].concat(),
        false,
        "trailing",
    );
    check("short-header", &full[..10], false, "truncated header");
    check("labels-as-images", &idx_labels(&[1, 2]), false, "magic");
    check("images-as-labels", &full, true, "magic");
    check("tiny", &[0, 0], true, "truncated header");
    write(dir.path(), "bad.gz", &[0x1f, 0x8b, 1, 2, 3]);
    let corrupt = idx::read_labels(&dir.path().join("bad.gz")).unwrap_err();
    assert!(matches!(corrupt, DataError::Io { .. }) && corrupt.to_string().contains("bad.gz"));
    let missing = idx::read_labels(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(missing, DataError::Io { .. }));
    assert!(missing.to_string().contains("missing"));
}

#[test]
fn idx_directory_split_partitions_training_in_order() {
    let dir = idx_dir();
    let source = dir.path().to_str().unwrap();
    let s = load(source, 0.25, 3).unwrap();
    assert_eq!((s.train.len(), s.val.len(), s.test.len()), (15, 5, 6));
    assert_eq!((s.train.channels, s.train.height, s.train.width), (1, 3, 2));
    // Classes come from the largest label (3).
    assert_eq!(s.train.classes, 4);
    assert!(
        !s.train.hflip_ok,
        "an unnamed directory is not known to be flip-safe"
    );
    // Sample i of the file starts with pixel 6 i (mod 256): recover each split's indices.
    let ids = |d: &papa_train::data::Dataset| -> Vec<usize> {
        (0..d.len())
            .map(|i| (d.sample(i).unwrap()[0] * 255.0).round() as usize / 6)
            .collect()
    };
    let (train, val) = (ids(&s.train), ids(&s.val));
    assert!(train.windows(2).all(|w| w[0] < w[1]), "train order kept");
    assert!(val.windows(2).all(|w| w[0] < w[1]), "val order kept");
    let all: HashSet<usize> = train.iter().chain(&val).copied().collect();
    assert_eq!(all, (0..20).collect());
    for (i, &id) in train.iter().enumerate() {
        assert_eq!(
            usize::from(s.train.labels[i]),
            id % 4,
            "labels follow samples"
        );
    }
    // The test set is untouched; the split is a function of the seed.
    assert_eq!(s.test.labels, vec![0, 1, 2, 3, 3, 0]);
    assert_eq!(load(source, 0.25, 3).unwrap(), s);
    assert_ne!(ids(&load(source, 0.25, 4).unwrap().val), val);
    assert_eq!(load(source, 0.0, 3).unwrap().val.len(), 0);
}

#[test]
fn idx_directory_count_mismatch_and_bad_sources() {
    let dir = idx_dir();
    write(
        dir.path(),
        "t10k-labels-idx1-ubyte.gz",
        &gz(&idx_labels(&[0, 1])),
    );
    let err = load(dir.path().to_str().unwrap(), 0.1, 0).unwrap_err();
    assert!(
        err.to_string().contains("t10k-labels-idx1-ubyte.gz"),
        "{err}"
    );
    assert!(err.to_string().contains("2 labels"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        load(empty.path().to_str().unwrap(), 0.1, 0),
        Err(DataError::Source { .. })
    ));
    assert!(load("/no/such/place", 0.1, 0).is_err());
    let good = idx_dir();
    for fraction in [1.0, -0.1, f64::NAN] {
        assert!(matches!(
            load(good.path().to_str().unwrap(), fraction, 0),
            Err(DataError::ValFraction { .. })
        ));
    }
}

#[test]
fn csv_header_label_column_and_blank_lines() {
    let text = "f1,f2,label\n1.5,2,1\n\n-3,4e1,0\r\n0,0,2\n";
    let d = csv::parse(text, Path::new("t.csv"), &CsvOptions::default()).unwrap();
    assert_eq!((d.channels, d.height, d.width, d.classes), (2, 1, 1, 3));
    assert_eq!(d.images, vec![1.5, 2.0, -3.0, 40.0, 0.0, 0.0]);
    assert_eq!(d.labels, vec![1, 0, 2]);
    assert!(!d.hflip_ok);

    let opts = CsvOptions {
        label_column: LabelColumn::Index(0),
        classes: Some(10),
        ..CsvOptions::default()
    };
    let d = csv::parse("7,0.5,0.25\n2,1,1\n", Path::new("t.csv"), &opts).unwrap();
    assert_eq!(d.labels, vec![7, 2]);
    assert_eq!(d.images, vec![0.5, 0.25, 1.0, 1.0]);
    assert_eq!(d.classes, 10);
}

#[test]
fn csv_header_is_found_behind_a_bom_and_when_it_numbers_the_columns() {
    let parse = |text: &str, header| {
        let options = CsvOptions {
            header,
            ..CsvOptions::default()
        };
        csv::parse(text, Path::new("t.csv"), &options).unwrap()
    };
    // A byte-order mark on a header-less file: the first row is still data.
    let d = parse("\u{feff}1,2,0\n3,4,1\n", Header::Auto);
    assert_eq!(
        (d.labels.clone(), d.images.clone()),
        (vec![0, 1], vec![1.0, 2.0, 3.0, 4.0])
    );
    // ... and a named header behind one is still a header.
    let d = parse("\u{feff}a,b,label\n3,4,1\n5,6,0\n", Header::Auto);
    assert_eq!(d.labels, vec![1, 0]);
    // Columns numbered from 0 (pandas' unnamed columns) are a header, not a sample of class
    // 4 that would add classes.
    let d = parse("0,1,2,3,4\n1,2,3,4,0\n5,6,7,8,1\n", Header::Auto);
    assert_eq!((d.len(), d.classes), (2, 2));
    // Numeric rows that do not number the columns from 0 are data.
    for first in ["0,1,2,4,1", "1,2,3,4,1", "0,1"] {
        let width = first.split(',').count();
        let second = vec!["0"; width].join(",");
        let d = parse(&format!("{first}\n{second}\n"), Header::Auto);
        assert_eq!(d.len(), 2, "{first}");
    }
    // The caller decides where the guess would be wrong.
    assert_eq!(parse("0,1,2\n3,4,1\n", Header::Absent).len(), 2);
    assert_eq!(parse("7,8,1\n3,4,0\n", Header::Present).len(), 1);
}

#[test]
fn csv_errors_name_file_line_and_column() {
    let cases: [(&str, CsvOptions, (usize, usize), &str); 7] = [
        (
            "a,b,c\n1,2,0\n1,2\n",
            CsvOptions::default(),
            (3, 3),
            "ragged",
        ),
        (
            "1,2,0\n1,x,1\n",
            CsvOptions::default(),
            (2, 2),
            "not a finite number",
        ),
        ("1,2,0\n1,2,1.5\n", CsvOptions::default(), (2, 3), "integer"),
        (
            "1,2,0\n-1e39,2,1\n",
            CsvOptions::default(),
            (2, 1),
            "beyond the range of f32",
        ),
        ("1,2,0\n1,2,-1\n", CsvOptions::default(), (2, 3), "integer"),
        (
            "1,2,0\n\n1,2,3\n",
            CsvOptions {
                classes: Some(3),
                ..CsvOptions::default()
            },
            (3, 3),
            "out of range",
        ),
        (
            "1,2,0\n",
            CsvOptions {
                label_column: LabelColumn::Index(5),
                ..CsvOptions::default()
            },
            (1, 6),
            "label column",
        ),
    ];
    for (text, opts, (line, column), needle) in cases {
        let err = csv::parse(text, Path::new("dir/my.csv"), &opts).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, DataError::Csv { line: l, column: c, .. } if (l, c) == (line, column)),
            "{text:?}: {msg}"
        );
        assert!(msg.contains("dir/my.csv") && msg.contains(needle), "{msg}");
        assert!(
            msg.contains(&format!("line {line}, column {column}")),
            "{msg}"
        );
    }
    for text in ["", "\n\n", "a,b,label\n"] {
        let err = csv::parse(text, Path::new("e.csv"), &CsvOptions::default()).unwrap_err();
        assert!(matches!(err, DataError::Empty { .. }), "{text:?}");
        assert!(err.to_string().contains("e.csv"));
    }
}

#[test]
fn csv_features_are_standardised_each_on_its_own() {
    // Two features a million times apart in scale: one mean and std for both would leave the
    // small one at a constant.
    let dir = tempfile::tempdir().unwrap();
    let rows = |n: usize| -> String {
        (0..n)
            .map(|i| {
                format!(
                    "{},{},{}\n",
                    1e6 * (i % 7) as f64,
                    1e-3 * (i % 5) as f64,
                    i % 2
                )
            })
            .collect()
    };
    write(dir.path(), "train.csv", rows(50).as_bytes());
    write(dir.path(), "test.csv", rows(10).as_bytes());
    let mut s = load(dir.path().to_str().unwrap(), 0.0, 0).unwrap();
    let raw = s.train.clone();
    s.normalize().unwrap();
    assert_eq!(s.normalization.mean.len(), 2);
    for f in 0..2 {
        let column = |d: &papa_train::data::Dataset| -> Vec<f64> {
            (0..d.len())
                .map(|i| f64::from(d.sample(i).unwrap()[f]))
                .collect()
        };
        let (mean, std) = {
            let v = column(&raw);
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64;
            (m, var.sqrt())
        };
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-30);
        assert!(
            rel(f64::from(s.normalization.mean[f]), mean) < 1e-6,
            "feature {f}"
        );
        assert!(
            rel(f64::from(s.normalization.std[f]), std) < 1e-6,
            "feature {f}"
        );
        let after = column(&s.train);
        let m = after.iter().sum::<f64>() / after.len() as f64;
        let sd = (after.iter().map(|x| (x - m).powi(2)).sum::<f64>() / after.len() as f64).sqrt();
        assert!(
            m.abs() < 1e-5 && (sd - 1.0).abs() < 1e-5,
            "feature {f}: {m} {sd}"
        );
    }
}

#[test]
fn csv_labels_beyond_usize_are_out_of_range_not_an_overflow() {
    // Found by the fuzzer: the class count was largest label + 1 in usize.
    let text = "1,184467464646464407370\n";
    let err = csv::parse(text, Path::new("big.csv"), &CsvOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Csv {
                line: 1,
                column: 2,
                ..
            }
        ) && err.to_string().contains("out of range"),
        "{err}"
    );
    let options = CsvOptions {
        label_column: LabelColumn::Index(0),
        classes: Some(4),
        ..CsvOptions::default()
    };
    let text = "labek,a,b\n018446744073709551615,0.5,1\n0,-2,3e-2\n";
    let err = csv::parse(text, Path::new("big.csv"), &options).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Csv {
                line: 2,
                column: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn csv_directory_loads_with_shared_classes() {
    let dir = tempfile::tempdir().unwrap();
    let train: String = (0..30)
        .map(|i| format!("{i},{},{}\n", i * 2, i % 4))
        .collect();
    write(
        dir.path(),
        "train.csv",
        format!("x,y,label\n{train}").as_bytes(),
    );
    write(dir.path(), "test.csv", b"1,2,3\n4,5,0\n");
    let s = load(dir.path().to_str().unwrap(), 0.1, 1).unwrap();
    assert_eq!((s.train.len(), s.val.len(), s.test.len()), (27, 3, 2));
    assert_eq!((s.train.classes, s.test.classes), (4, 4));
    assert_eq!(s.train.channels, 2);

    // Declared classes hold in the test file too.
    write(dir.path(), "test.csv", b"1,2,3\n4,5,9\n");
    let opts = LoadOptions {
        csv: CsvOptions {
            label_column: LabelColumn::Last,
            classes: Some(4),
            ..CsvOptions::default()
        },
        ..LoadOptions::default()
    };
    let err = load_with(dir.path().to_str().unwrap(), &opts).unwrap_err();
    assert!(err.to_string().contains("test.csv"), "{err}");
}

#[test]
fn gather_copies_samples_and_checks_lengths() {
    let s = load(idx_dir().path().to_str().unwrap(), 0.0, 0).unwrap();
    let d = &s.train;
    let (mut imgs, mut labels) = (vec![0.0; 3 * 6], vec![0u8; 3]);
    d.gather(&[5, 0, 5], &mut imgs, &mut labels).unwrap();
    assert_eq!(&imgs[..6], d.sample(5).unwrap());
    assert_eq!(&imgs[6..12], d.sample(0).unwrap());
    assert_eq!(labels, vec![1, 0, 1]);
    assert!(d.gather(&[0, 1], &mut imgs, &mut labels).is_err());
    assert!(d.gather(&[0, 1, 20], &mut imgs, &mut labels).is_err());
    assert!(d.sample(20).is_none());
}

fn mean_std(values: &[f32]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

#[test]
fn bundled_fashion_mnist_splits_and_normalises() {
    let mut s = load("fashion-mnist", 0.1, 0).unwrap();
    assert_eq!(
        (s.train.len(), s.val.len(), s.test.len()),
        (54_000, 6_000, 10_000)
    );
    assert_eq!(
        (s.train.channels, s.train.height, s.train.width),
        (1, 28, 28)
    );
    assert_eq!(s.train.classes, 10);
    assert!(s.train.hflip_ok && s.test.hflip_ok);
    // Fashion-MNIST's test set has 1000 images per class and starts with an ankle boot (9).
    let mut counts = [0; 10];
    s.test
        .labels
        .iter()
        .for_each(|&l| counts[usize::from(l)] += 1);
    assert_eq!(counts, [1000; 10]);
    assert_eq!(s.test.labels[0], 9);
    assert!(s.train.images.iter().all(|v| (0.0..=1.0).contains(v)));

    // Published statistics of the full training set: mean 0.2860, std 0.3530.
    let (raw_mean, raw_std) = mean_std(&s.train.images);
    assert!((raw_mean - 0.2860).abs() < 0.002 && (raw_std - 0.3530).abs() < 0.002);
    let raw_val = s.val.images.clone();
    s.normalize().unwrap();
    assert!((f64::from(s.normalization.mean[0]) - raw_mean).abs() < 1e-6);
    assert!((f64::from(s.normalization.std[0]) - raw_std).abs() < 1e-6);
    let (m, sd) = mean_std(&s.train.images);
    assert!(m.abs() < 1e-5 && (sd - 1.0).abs() < 1e-5, "{m} {sd}");
    for (n, r) in s.val.images.iter().zip(&raw_val).step_by(997) {
        assert!((n - (r - s.normalization.mean[0]) / s.normalization.std[0]).abs() < 1e-6);
    }
    let black = s.pad_value(0);
    assert!((black - (-raw_mean / raw_std) as f32).abs() < 1e-5);

    // Normalising again changes nothing: stored stats still map raw values to current ones.
    let before = s.clone();
    s.normalize().unwrap();
    assert!(
        (s.normalization.mean[0] - before.normalization.mean[0]).abs() < 1e-6
            && (s.normalization.std[0] - before.normalization.std[0]).abs() < 1e-6
    );
    for (a, b) in s.test.images.iter().zip(&before.test.images).step_by(101) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn bundled_mnist_is_not_flip_safe() {
    let s = load("mnist", 0.1, 0).unwrap();
    assert!(!s.train.hflip_ok);
    // MNIST's test set starts with a 7.
    assert_eq!(s.test.labels[0], 7);
    let (mean, std) = mean_std(&s.train.images);
    assert!((mean - 0.1307).abs() < 0.002 && (std - 0.3081).abs() < 0.002);
}

#[test]
fn splits_reject_mismatched_shapes() {
    let s = load(idx_dir().path().to_str().unwrap(), 0.0, 0).unwrap();
    assert!(Splits::new(s.train.clone(), s.test.clone(), 0.1, 0).is_ok());
    let mut test = s.test.clone();
    (test.width, test.height) = (3, 2);
    assert!(Splits::new(s.train.clone(), test, 0.1, 0).is_err());
    let mut test = s.test.clone();
    test.channels = 2;
    assert!(Splits::new(s.train, test, 0.1, 0).is_err());
}

#[test]
fn epoch_orders_are_independent_permutations() {
    let n = 1000;
    let base = epoch_order(1, 0, 0, n);
    let mut sorted = base.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..n).collect::<Vec<_>>());
    assert_eq!(base, epoch_order(1, 0, 0, n));
    for other in [
        epoch_order(1, 1, 0, n),
        epoch_order(1, 0, 1, n),
        epoch_order(2, 0, 0, n),
    ] {
        // Independent permutations agree in about one place (expected 1).
        let same = base.iter().zip(&other).filter(|(a, b)| a == b).count();
        assert!(same < 10, "{same} fixed points");
    }
    assert!(epoch_order(1, 0, 0, 0).is_empty());
}

#[test]
fn batches_drop_the_partial_tail() {
    let order = epoch_order(0, 0, 0, 10);
    let got: Vec<&[u32]> = batches(&order, 3).unwrap().collect();
    assert_eq!(got.len(), 3);
    assert_eq!(got.concat(), order[..9]);
    assert_eq!(batches_per_epoch(10, 3), 3);
    assert_eq!(batches_per_epoch(10, 0), 0);
    assert!(batches(&order, 0).is_err());
    let ranges: Vec<_> = eval_ranges(10, 4).collect();
    assert_eq!(ranges, vec![0..4, 4..8, 8..10]);
}

#[test]
fn single_class_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "train.csv", b"1,2,0\n3,4,0\n5,6,0\n");
    write(dir.path(), "test.csv", b"1,2,0\n");
    let err = load(dir.path().to_str().unwrap(), 0.0, 1).unwrap_err();
    assert!(matches!(err, DataError::OneClass { .. }), "{err}");
    assert!(err.to_string().contains("two classes"), "{err}");
}

#[test]
fn a_stray_label_is_refused_not_made_a_class() {
    // IDX: one label 200 among 0..3 would make a 201-output model.
    let dir = idx_dir();
    let mut labels: Vec<u8> = (0..20).map(|i| i % 4).collect();
    labels[13] = 200;
    write(dir.path(), "train-labels-idx1-ubyte", &idx_labels(&labels));
    let err = load(dir.path().to_str().unwrap(), 0.0, 0).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            DataError::ClassWithoutSamples {
                label: 200,
                sample: 13,
                classes: 201,
                missing: 4,
                more: 195,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("train-labels-idx1-ubyte") && msg.contains("stray"),
        "{msg}"
    );

    // CSV: a stray label in the test file names that file.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "train.csv", b"1,0\n2,1\n3,0\n");
    write(dir.path(), "test.csv", b"1,0\n2,7\n");
    let err = load(dir.path().to_str().unwrap(), 0.0, 0).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::ClassWithoutSamples {
                label: 7,
                sample: 1,
                missing: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("test.csv"), "{err}");
    // Declared classes are the caller's word: absent ones are allowed.
    let options = LoadOptions {
        val_fraction: 0.0,
        csv: CsvOptions {
            classes: Some(8),
            ..CsvOptions::default()
        },
        ..LoadOptions::default()
    };
    assert_eq!(
        load_with(dir.path().to_str().unwrap(), &options)
            .unwrap()
            .train
            .classes,
        8
    );
}

#[test]
fn bundled_tables_load_with_every_feature_standardised() {
    // data/README.md: digits 1,438 + 359 rows of 64 features in 10 classes; spam 3,680 + 921
    // rows of 57 features in 2 classes.
    for (name, train, test, features, classes) in
        [("digits", 1438, 359, 64, 10), ("spam", 3680, 921, 57, 2)]
    {
        let mut s = load(name, 0.0, 0).unwrap();
        assert_eq!((s.train.len(), s.test.len()), (train, test), "{name}");
        assert_eq!(
            (s.train.channels, s.train.height, s.train.width),
            (features, 1, 1)
        );
        assert_eq!(s.train.classes, classes, "{name}");
        assert_eq!(s.identity.files.len(), 2, "{name}");
        s.normalize().unwrap();
        assert_eq!(s.normalization.std.len(), features, "{name}");
    }
}
