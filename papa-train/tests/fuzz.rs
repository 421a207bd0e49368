//! Fuzz targets of every file papa-train reads: IDX images and labels (raw and gzip), CSV
//! tables, model files, training-state checkpoints and config TOML. Each is seeded with small
//! valid files built here and checks, beyond "no panic", that an error names the file and
//! that what is accepted is consistent. Budget and reproduction: docs/FUZZING.md.

use papa_fuzz::{fuzz, Budget, Report};
use papa_model::card::{ModelCard, Normalization};
use papa_train::checkpoint::{load_model, load_state, save_model, save_state};
use papa_train::config::{build_model, ConfigError, Method, TrainConfig};
use papa_train::data::csv::{self, CsvOptions, LabelColumn};
use papa_train::data::{idx, Dataset};
use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};

type TestResult = Result<(), Box<dyn Error>>;

/// One temp file that every input of a target overwrites (the path-based loaders read from
/// disk; a fresh file per input would only slow the run).
struct Scratch {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Self {
        // In memory where the system has it: rewriting a file on disk costs most of a
        // millisecond, twenty times what the loaders take.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        };
        let dir = dir.unwrap();
        let path = dir.path().join(name);
        Scratch { _dir: dir, path }
    }

    fn write(&self, bytes: &[u8]) -> &Path {
        std::fs::write(&self.path, bytes).unwrap();
        &self.path
    }
}

/// Every loader error is meant to name its file.
fn names_file(err: &dyn std::fmt::Display, path: &Path) {
    let message = err.to_string();
    let shown = path.display().to_string();
    assert!(
        message.contains(&shown),
        "error without the file: {message}"
    );
}

/// Checks an accepted value with `check`, a refusal with [`names_file`], and hands the
/// refusal on so the report counts it.
fn checked<T, E: Error + 'static>(
    result: Result<T, E>,
    path: &Path,
    check: impl FnOnce(T),
) -> TestResult {
    match result {
        Ok(value) => {
            check(value);
            Ok(())
        }
        Err(e) => {
            names_file(&e, path);
            Err(Box::new(e))
        }
    }
}

fn run(name: &str, seeds: &[Vec<u8>], target: impl Fn(&[u8]) -> TestResult) -> TestResult {
    let report: Report = fuzz(name, seeds, &Budget::from_env()?, target)?;
    println!("{report}");
    Ok(())
}

fn idx_file(magic: u32, dims: &[u32]) -> Vec<u8> {
    let mut bytes = magic.to_be_bytes().to_vec();
    dims.iter().for_each(|d| bytes.extend(d.to_be_bytes()));
    let n: u32 = dims.iter().product();
    bytes.extend((0..n).map(|i| (i * 37 % 256) as u8));
    bytes
}

fn image_seeds() -> Vec<Vec<u8>> {
    vec![
        idx_file(idx::IMAGES_MAGIC, &[3, 2, 4]),
        idx_file(idx::IMAGES_MAGIC, &[1, 1, 1]),
        idx_file(idx::IMAGES_MAGIC, &[0, 28, 28]),
    ]
}

fn label_seeds() -> Vec<Vec<u8>> {
    vec![
        idx_file(idx::LABELS_MAGIC, &[5]),
        idx_file(idx::LABELS_MAGIC, &[0]),
    ]
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn check_images(images: &idx::IdxImages) {
    assert_eq!(
        images.pixels.len(),
        images.count * images.rows * images.cols
    );
    assert!(images.rows > 0 && images.cols > 0);
    assert!(images.pixels.iter().all(|p| (0.0..=1.0).contains(p)));
}

/// The count the header declares (bytes 4..8, big-endian).
fn declared_count(bytes: &[u8]) -> usize {
    u32::from_be_bytes(bytes[4..8].try_into().unwrap()) as usize
}

#[test]
fn fuzz_idx_images() -> TestResult {
    let path = Path::new("fuzz/train-images-idx3-ubyte");
    run("idx-images", &image_seeds(), |bytes| {
        checked(idx::parse_images(bytes, path), path, |i| check_images(&i))
    })
}

#[test]
fn fuzz_idx_labels() -> TestResult {
    let path = Path::new("fuzz/train-labels-idx1-ubyte");
    run("idx-labels", &label_seeds(), |bytes| {
        checked(idx::parse_labels(bytes, path), path, |labels| {
            assert_eq!(labels.len(), declared_count(bytes))
        })
    })
}

/// Gzipped files through the path-based readers (which decompress), images and labels
/// alike: each input is read both ways, as the file's name is no guide to its content.
#[test]
fn fuzz_idx_gzip() -> TestResult {
    let scratch = Scratch::new("train-images-idx3-ubyte.gz");
    let seeds: Vec<Vec<u8>> = image_seeds()
        .iter()
        .chain(&label_seeds())
        .map(|s| gz(s))
        .collect();
    run("idx-gzip", &seeds, |bytes| {
        let path = scratch.write(bytes);
        let images = checked(idx::read_images(path), path, |i| check_images(&i));
        let labels = checked(idx::read_labels(path), path, |labels| {
            let raw = idx::read_maybe_gz(path).expect("read once already");
            assert_eq!(labels.len(), declared_count(&raw));
        });
        images.or(labels)
    })
}

fn csv_seeds() -> Vec<Vec<u8>> {
    [
        "f1,f2,label\n0.5,1,0\n-2,3e-2,1\n7,8,2\n",
        "1,2,3\n4,5,6\n",
        "a , b ,c\r\n1,2,0\r\n\r\n3,4,1\r\n",
        "x,y\n0.25,1\n",
    ]
    .map(|s| s.as_bytes().to_vec())
    .to_vec()
}

/// A table accepted is one rectangular block of finite features with labels in range.
fn check_dataset(d: &Dataset, options: &CsvOptions) {
    // Each feature is a channel of one value (F x 1 x 1).
    assert!(!d.labels.is_empty() && d.channels >= 1);
    assert_eq!((d.height, d.width), (1, 1));
    assert_eq!(d.images.len(), d.labels.len() * d.channels);
    assert!(d.images.iter().all(|v| v.is_finite()));
    assert!((1..=256).contains(&d.classes), "{} classes", d.classes);
    assert!(d.labels.iter().all(|&l| usize::from(l) < d.classes));
    if let Some(classes) = options.classes {
        assert_eq!(d.classes, classes);
    }
}

/// The parser takes text: the mutated bytes as UTF-8 (invalid sequences replaced).
#[test]
fn fuzz_csv_text() -> TestResult {
    let path = Path::new("fuzz/table.csv");
    let options = CsvOptions::default();
    run("csv-text", &csv_seeds(), |bytes| {
        let text = String::from_utf8_lossy(bytes);
        checked(csv::parse(&text, path, &options), path, |d| {
            check_dataset(&d, &options)
        })
    })
}

/// The raw bytes through the file reader (invalid UTF-8 included), with the label first
/// and a fixed class count.
#[test]
fn fuzz_csv_file() -> TestResult {
    let scratch = Scratch::new("table.csv");
    let options = CsvOptions {
        label_column: LabelColumn::Index(0),
        classes: Some(4),
        ..Default::default()
    };
    let seeds = [
        "label,a,b\n0,0.5,1\n3,-2,3e-2\n",
        "1,2,3\n2,5,6\n",
        "\u{e9}t\u{e9},x\n1,2\n",
    ]
    .map(|s| s.as_bytes().to_vec());
    run("csv-file", &seeds, |bytes| {
        let path = scratch.write(bytes);
        checked(csv::read(path, &options), path, |d| {
            check_dataset(&d, &options)
        })
    })
}

#[test]
fn fuzz_model_load() -> TestResult {
    let scratch = Scratch::new("model.safetensors");
    let mut seeds = Vec::new();
    for (name, shape, classes) in [("mlp:8", [1, 2, 2], 3), ("mlp:4,3", [1, 1, 5], 2)] {
        let spec = build_model(name, shape, classes)?;
        let card = ModelCard::new(name, &spec, 1.0, Normalization::identity(1), vec![]);
        let params: Vec<f32> = (0..spec.len()).map(|i| i as f32 / 8.0).collect();
        save_model(&scratch.path, &card, &params)?;
        seeds.push(std::fs::read(&scratch.path)?);
    }
    run("model-load", &seeds, |bytes| {
        let path = scratch.write(bytes);
        checked(load_model(path), path, |model| {
            assert_eq!(model.params.len(), model.card.spec().unwrap().len())
        })
    })
}

fn state_seeds(scratch: &Scratch) -> Result<Vec<Vec<u8>>, Box<dyn Error>> {
    let population: Vec<f32> = (0..12).map(|i| i as f32 - 6.0).collect();
    let velocity = vec![0.125f32; 12];
    save_state(
        &scratch.path,
        &[
            ("population", &population, &[2, 6]),
            ("velocity", &velocity, &[2, 6]),
            ("step", &[3.0], &[]),
        ],
        r#"{"epoch":1,"history":[0.5,0.25],"method":"papa"}"#,
    )?;
    let first = std::fs::read(&scratch.path)?;
    save_state(&scratch.path, &[], "{}")?;
    Ok(vec![first, std::fs::read(&scratch.path)?])
}

/// What every accepted state must be: each buffer holds exactly its shape's values.
fn check_state(path: &Path) -> TestResult {
    checked(load_state(path), path, |state| {
        for (name, (shape, values)) in &state.buffers {
            let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            assert_eq!(numel, Some(values.len()), "buffer {name}");
        }
    })
}

#[test]
fn fuzz_state_load() -> TestResult {
    let scratch = Scratch::new("state.safetensors");
    let seeds = state_seeds(&scratch)?;
    run("state-load", &seeds, |bytes| {
        check_state(scratch.write(bytes))
    })
}

/// Only the safetensors header (tensor table and metadata) mutated, its length kept right,
/// so that the edits reach the shapes and offsets rather than stop at the length field.
/// The first input byte picks which seed's data follows.
#[test]
fn fuzz_state_header() -> TestResult {
    let scratch = Scratch::new("state.safetensors");
    let files = state_seeds(&scratch)?;
    let split = |f: &[u8]| -> (Vec<u8>, Vec<u8>) {
        let n = u64::from_le_bytes(f[..8].try_into().unwrap()) as usize;
        let (header, data) = f[8..].split_at(n);
        (header.to_vec(), data.to_vec())
    };
    let parts: Vec<(Vec<u8>, Vec<u8>)> = files.iter().map(|f| split(f)).collect();
    let seeds: Vec<Vec<u8>> = parts
        .iter()
        .enumerate()
        .map(|(i, (h, _))| [&[i as u8][..], h].concat())
        .collect();
    run("state-header", &seeds, |input| {
        let (&pick, header) = input.split_first().unwrap_or((&0, &[]));
        let data = &parts[usize::from(pick) % parts.len()].1;
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header);
        file.extend_from_slice(data);
        check_state(scratch.write(&file))
    })
}

fn config_seeds() -> Result<Vec<Vec<u8>>, Box<dyn Error>> {
    let default = TrainConfig::default();
    let small = TrainConfig {
        data: "data/iris".into(),
        model: "mlp:16,8".into(),
        methods: Method::ALL.to_vec(),
        population: 2,
        papa_alpha: Some(0.9),
        val_fraction: 0.25,
        ..TrainConfig::default()
    };
    let mut seeds = vec![default.to_toml()?, small.to_toml()?];
    seeds.push("population = 8\nepochs = 1\nmethods = [\"papa-all\"]\n".into());
    Ok(seeds.into_iter().map(String::into_bytes).collect())
}

#[test]
fn fuzz_config_toml() -> TestResult {
    let scratch = Scratch::new("run.toml");
    run("config-toml", &config_seeds()?, |bytes| {
        let path = scratch.write(bytes);
        let mut config = None;
        checked(TrainConfig::from_file(path), path, |c| config = Some(c))?;
        let config = config.expect("set when read");
        // What was read is written back as TOML that reads back the same.
        let toml = config
            .to_toml()
            .expect("a config read from TOML writes as TOML");
        let again: TrainConfig = toml::from_str(&toml).expect("its TOML reads back");
        assert_eq!(again.to_toml().unwrap(), toml);
        match config.validate() {
            Ok(()) => Ok(()),
            Err(
                e @ (ConfigError::Value { .. }
                | ConfigError::UnknownModel(_)
                | ConfigError::Model(_)),
            ) => {
                assert!(e.to_string().starts_with("config key `"), "{e}");
                Err(e.into())
            }
            Err(e) => panic!("validate failed without naming a key: {e}"),
        }
    })
}
