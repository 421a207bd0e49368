//! Datasets: IDX and CSV loaders, validation split, normalisation, per-member batching.
//!
//! Everything here returns a [`DataError`] on bad input instead of panicking, because the
//! input is files that users bring.

pub mod csv;
pub mod idx;

use std::ops::Range;
use std::path::{Path, PathBuf};

use papa_core::rng::Rng;
use papa_core::LengthMismatch;
use papa_model::card::Normalization;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use csv::{CsvOptions, Header, LabelColumn};

/// Stream of the validation split, so that it never shares draws with other uses of a seed.
const VAL_STREAM: u64 = 0x7661_6c5f_7370_6c74;
/// Stream of the per-member epoch orders.
const ORDER_STREAM: u64 = 0x6f72_6465_725f_6570;

/// Why a dataset could not be loaded or used. Messages name the file and what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read (or decompressed).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not what its name says (bad IDX magic, truncation, counts that disagree).
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A CSV field is wrong.
    #[error("{}: line {line}, column {column}: {message}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What was wrong.
        message: String,
    },
    /// The file holds no data rows.
    #[error("{}: empty file (no data rows)", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The source is neither a bundled dataset nor a directory with a known layout.
    #[error("{source_name}: {message}")]
    Source {
        /// The source as given.
        source_name: String,
        /// What was looked for.
        message: String,
    },
    /// A buffer had the wrong length.
    #[error(transparent)]
    Length(#[from] LengthMismatch),
    /// A sample index beyond the dataset.
    #[error("sample {index} is out of range for {len} samples")]
    Index {
        /// The index given.
        index: usize,
        /// Samples in the dataset.
        len: usize,
    },
    /// A validation fraction outside `[0, 1)`, or one that leaves no training sample.
    #[error("validation fraction {fraction} leaves no training data out of {samples} samples (it must lie in [0, 1))")]
    ValFraction {
        /// The fraction given.
        fraction: f64,
        /// Samples in the training file.
        samples: usize,
    },
    /// Train and test samples differ in shape.
    #[error("train samples are {train:?} (c, h, w) but test samples are {test:?}")]
    Shapes {
        /// Train sample shape.
        train: [usize; 3],
        /// Test sample shape.
        test: [usize; 3],
    },
    /// More samples than 32-bit indices address.
    #[error("{0} samples exceed 2^32")]
    TooMany(usize),
    /// Every label is the same: there is nothing to classify.
    #[error("{source_name}: every label is 0; classification needs at least two classes")]
    OneClass {
        /// The source as given.
        source_name: String,
    },
    /// Classes inferred from the labels leave one without any training sample: the largest
    /// label is likely a stray one.
    #[error("{}: label {label} (sample {sample}) makes {classes} classes, but no training sample has class {missing}{}: a stray label? Every class needs training samples", path.display(), if *more > 0 { format!(" (nor {more} more)") } else { String::new() })]
    ClassWithoutSamples {
        /// The file holding the largest label.
        path: PathBuf,
        /// That label.
        label: usize,
        /// Its 0-based sample index in that file.
        sample: usize,
        /// Classes it implies (largest label + 1).
        classes: usize,
        /// The first class no training sample has.
        missing: usize,
        /// How many other classes have none.
        more: usize,
    },
    /// A batch size of zero.
    #[error("the batch size must be at least 1")]
    ZeroBatch,
    /// A validation index given in memory is out of range or repeated, or the indices leave
    /// no training sample; [`load_with`] names the file and line instead.
    #[error("validation index at position {position} (0-based) of the list given: {problem}")]
    ValIndex {
        /// Its position in the list.
        position: usize,
        /// What was wrong.
        problem: ValIndexProblem,
    },
    /// A validation-indices file is wrong.
    #[error("{}: line {line}: {message}", path.display())]
    ValIndicesFile {
        /// The file.
        path: PathBuf,
        /// 1-based line (0: the file as a whole).
        line: usize,
        /// What was wrong.
        message: String,
    },
}

/// What is wrong with a validation index ([`DataError::ValIndex`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValIndexProblem {
    /// Beyond the training file.
    #[error("{index} is out of range for {samples} training samples")]
    OutOfRange {
        /// The index.
        index: u32,
        /// Samples in the training file.
        samples: usize,
    },
    /// Given twice.
    #[error("{index} was given before, at position {first}")]
    Repeated {
        /// The index.
        index: u32,
        /// The position of its first occurrence.
        first: usize,
    },
    /// Every sample is held out.
    #[error("the indices hold all {samples} samples: no training data is left")]
    NoTrainingLeft {
        /// Samples in the training file.
        samples: usize,
    },
}

/// A labelled set of images, `n x channels x height x width`, row-major (NCHW).
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// `n * channels * height * width` values.
    pub images: Vec<f32>,
    /// `n` labels in `[0, classes)`.
    pub labels: Vec<u8>,
    /// Channels per image.
    pub channels: usize,
    /// Rows per image.
    pub height: usize,
    /// Columns per image.
    pub width: usize,
    /// Number of classes.
    pub classes: usize,
    /// Whether a horizontal flip keeps an image in its class (clothes: yes; digits and
    /// tabular features: no).
    pub hflip_ok: bool,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per sample (`channels * height * width`).
    pub fn sample_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The values of sample `i`, or `None` when `i` is out of range.
    pub fn sample(&self, i: usize) -> Option<&[f32]> {
        let len = self.sample_len();
        self.images.get(i * len..(i + 1) * len)
    }

    /// Applies `normalization` (one mean and std per channel) to every sample, in parallel
    /// over samples (the same bits on any thread count).
    pub fn normalize_with(&mut self, normalization: &Normalization) -> Result<(), DataError> {
        let channels = normalization.mean.len();
        LengthMismatch::check(
            "normalisation (one mean per channel)",
            self.channels,
            channels,
        )?;
        let (plane, sample) = (self.height * self.width, self.sample_len().max(1));
        self.images
            .par_chunks_mut(sample * 256)
            .try_for_each(|block| normalization.apply(block, plane))?;
        Ok(())
    }

    /// Copies the samples at `indices` into a batch: `images_out` must hold
    /// `indices.len() * sample_len()` values and `labels_out` `indices.len()` labels.
    pub fn gather(
        &self,
        indices: &[u32],
        images_out: &mut [f32],
        labels_out: &mut [u8],
    ) -> Result<(), DataError> {
        let len = self.sample_len();
        LengthMismatch::check("gathered images", indices.len() * len, images_out.len())?;
        LengthMismatch::check("gathered labels", indices.len(), labels_out.len())?;
        for ((&i, out), label) in indices
            .iter()
            .zip(images_out.chunks_exact_mut(len.max(1)))
            .zip(labels_out.iter_mut())
        {
            let sample = self.sample(i as usize).ok_or(DataError::Index {
                index: i as usize,
                len: self.len(),
            })?;
            out.copy_from_slice(sample);
            *label = self.labels[i as usize];
        }
        Ok(())
    }

    /// The samples at `indices` (in that order) as a new dataset.
    fn subset(&self, indices: &[u32]) -> Dataset {
        let len = self.sample_len();
        let mut images = Vec::with_capacity(indices.len() * len);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let i = i as usize;
            images.extend_from_slice(&self.images[i * len..(i + 1) * len]);
            labels.push(self.labels[i]);
        }
        Dataset {
            images,
            labels,
            ..self.shape_only()
        }
    }

    fn shape_only(&self) -> Dataset {
        Dataset {
            images: Vec::new(),
            labels: Vec::new(),
            ..*self
        }
    }

    /// Checks that the buffers agree with the shape and the labels with the class count.
    fn validate(&self, what: &str) -> Result<(), DataError> {
        let bad = |message: String| DataError::Source {
            source_name: what.to_string(),
            message,
        };
        if self.images.len() != self.len() * self.sample_len() {
            return Err(bad(format!(
                "{} labels but {} image values ({} per sample)",
                self.len(),
                self.images.len(),
                self.sample_len()
            )));
        }
        if let Some(l) = self
            .labels
            .iter()
            .find(|&&l| usize::from(l) >= self.classes)
        {
            return Err(bad(format!("label {l} out of range [0, {})", self.classes)));
        }
        Ok(())
    }
}

/// The three splits of a run and the normalisation applied to them.
#[derive(Clone, Debug, PartialEq)]
pub struct Splits {
    /// Training data (the validation samples removed).
    pub train: Dataset,
    /// Validation data: held out of the training file, never taken from the test set.
    pub val: Dataset,
    /// Test data.
    pub test: Dataset,
    /// Per-channel mean and std mapping raw values to the current ones (mean 0, std 1 until
    /// [`Splits::normalize`]); the model card records it.
    pub normalization: Normalization,
    /// Raw values are the stored ones divided by this: 255 for 8-bit IDX pixels, 1 for CSV
    /// features (the model card records it).
    pub pixel_scale: f32,
    /// Class names in label order, where the dataset is known to have them (else empty).
    pub class_names: Vec<String>,
    /// The files the splits were read from (empty for splits built in memory).
    pub identity: DataIdentity,
}

/// What a run's data is: every file it was read from, with its size and SHA-256, in load
/// order. Runs record it so that a run directory or a checkpoint is never continued on other
/// data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataIdentity {
    /// The files.
    pub files: Vec<DataFile>,
}

/// One file of a [`DataIdentity`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// Its name (without the directory, which may move).
    pub name: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its SHA-256, in lower-case hex.
    pub sha256: String,
}

impl DataIdentity {
    /// Reads and hashes `paths`, in order.
    pub fn of_files(paths: &[PathBuf]) -> Result<DataIdentity, DataError> {
        let files = paths
            .iter()
            .map(|path| {
                let io = |source| DataError::Io {
                    path: path.clone(),
                    source,
                };
                let mut file = std::fs::File::open(path).map_err(io)?;
                let mut hasher = Sha256::new();
                let bytes = std::io::copy(&mut file, &mut hasher).map_err(io)?;
                let sha256 = hasher
                    .finalize()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let name = path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                Ok(DataFile {
                    name,
                    bytes,
                    sha256,
                })
            })
            .collect::<Result<_, DataError>>()?;
        Ok(DataIdentity { files })
    }

    /// What this recorded data has that `now` has not, in words (`None`: the same data).
    pub fn difference(&self, now: &DataIdentity) -> Option<String> {
        if self == now {
            return None;
        }
        let names = |d: &DataIdentity| d.files.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
        if names(self) != names(now) {
            return Some(format!(
                "data files {:?} (now {:?})",
                names(self),
                names(now)
            ));
        }
        let changed: Vec<&str> = self
            .files
            .iter()
            .zip(&now.files)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.name.as_str())
            .collect();
        Some(format!("data whose {} changed since", changed.join(", ")))
    }
}

impl Splits {
    /// Builds the splits: `val_count = round(val_fraction * train.len())` samples drawn with
    /// `seed` are moved from `train` to `val`; both parts keep their original relative
    /// order, so the split does not also act as a shuffle.
    pub fn new(
        train: Dataset,
        test: Dataset,
        val_fraction: f64,
        seed: u64,
    ) -> Result<Splits, DataError> {
        let bad_fraction = DataError::ValFraction {
            fraction: val_fraction,
            samples: train.len(),
        };
        if !(0.0..1.0).contains(&val_fraction) {
            return Err(bad_fraction);
        }
        let n = u32::try_from(train.len()).map_err(|_| DataError::TooMany(train.len()))?;
        let val_count = (val_fraction * f64::from(n)).round() as usize;
        if val_count >= n as usize {
            return Err(bad_fraction);
        }
        let mut order: Vec<u32> = (0..n).collect();
        Rng::new(seed).fork(VAL_STREAM).shuffle(&mut order);
        let val_idx = &mut order[..val_count];
        val_idx.sort_unstable();
        Splits::with_val_indices(train, test, val_idx)
    }

    /// Builds the splits with the samples at `val` (0-based indices into `train`, in that
    /// order) as the validation split and the others, in their original order, as the
    /// training split. Out-of-range or repeated indices, or indices that leave no training
    /// sample, are an error naming the position in `val`.
    pub fn with_val_indices(
        train: Dataset,
        test: Dataset,
        val: &[u32],
    ) -> Result<Splits, DataError> {
        let shape = |d: &Dataset| [d.channels, d.height, d.width];
        if shape(&train) != shape(&test) {
            return Err(DataError::Shapes {
                train: shape(&train),
                test: shape(&test),
            });
        }
        let n = u32::try_from(train.len()).map_err(|_| DataError::TooMany(train.len()))?;
        // Where each sample went in `val`, to name both places of a repeated index.
        let mut held: Vec<Option<usize>> = vec![None; n as usize];
        for (position, &index) in val.iter().enumerate() {
            let bad = |problem| DataError::ValIndex { position, problem };
            let samples = n as usize;
            let slot = held
                .get_mut(index as usize)
                .ok_or_else(|| bad(ValIndexProblem::OutOfRange { index, samples }))?;
            if let Some(first) = *slot {
                return Err(bad(ValIndexProblem::Repeated { index, first }));
            }
            *slot = Some(position);
        }
        let train_idx: Vec<u32> = (0..n).filter(|&i| held[i as usize].is_none()).collect();
        if train_idx.is_empty() {
            return Err(DataError::ValIndex {
                position: val.len().saturating_sub(1),
                problem: ValIndexProblem::NoTrainingLeft {
                    samples: n as usize,
                },
            });
        }
        let channels = train.channels;
        Ok(Splits {
            val: train.subset(val),
            train: train.subset(&train_idx),
            test,
            normalization: Normalization::identity(channels),
            pixel_scale: 1.0,
            class_names: Vec::new(),
            identity: DataIdentity::default(),
        })
    }

    /// Computes the per-channel mean and (population) std of the training split in f64 and
    /// applies `(x - mean) / std` to all three splits. Calling it again composes: the stored
    /// `mean`/`std` always map raw values to the current ones. A constant channel gets
    /// std 1 so that it maps to 0 instead of NaN.
    pub fn normalize(&mut self) -> Result<(), DataError> {
        self.normalize_over(NormalizeOver::TrainSplit)
    }

    /// [`Splits::normalize`] with the mean and std computed over the samples `over` names:
    /// the training split, or the whole training file (training and validation splits).
    pub fn normalize_over(&mut self, over: NormalizeOver) -> Result<(), DataError> {
        let (mean, std) = match over {
            NormalizeOver::TrainSplit => channel_stats(&[&self.train]),
            NormalizeOver::TrainFile => channel_stats(&[&self.train, &self.val]),
        };
        let step = Normalization {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std: std.iter().map(|&s| s as f32).collect(),
        };
        for d in [&mut self.train, &mut self.val, &mut self.test] {
            d.normalize_with(&step)?;
        }
        let Normalization { mean: m, std: s } = &mut self.normalization;
        for c in 0..m.len() {
            // (((x - m1) / s1) - m2) / s2 = (x - (m1 + m2 s1)) / (s1 s2)
            let (m1, s1) = (f64::from(m[c]), f64::from(s[c]));
            m[c] = (m1 + mean[c] * s1) as f32;
            s[c] = (s1 * std[c]) as f32;
        }
        Ok(())
    }

    /// The value a black (raw 0) pixel of `channel` has after normalisation: the padding
    /// value of random crops.
    pub fn pad_value(&self, channel: usize) -> f32 {
        let Normalization { mean, std } = &self.normalization;
        match (mean.get(channel), std.get(channel)) {
            (Some(m), Some(s)) => -m / s,
            _ => 0.0,
        }
    }
}

/// Which samples the normalisation's mean and std are computed over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormalizeOver {
    /// The training split: the training file less the validation split (papa's default).
    #[default]
    TrainSplit,
    /// The whole training file, validation split included (the PyTorch replica's).
    TrainFile,
}

/// Per-channel mean and std over the samples of `parts` (all of one shape), summed in f64
/// over fixed chunks of each part and combined in a fixed order, so that the result has the
/// same bits on any thread count.
fn channel_stats(parts: &[&Dataset]) -> (Vec<f64>, Vec<f64>) {
    let Some(d) = parts.first() else {
        return (Vec::new(), Vec::new());
    };
    let plane = d.height * d.width;
    let samples: usize = parts.iter().map(|p| p.len()).sum();
    let count = (samples * plane).max(1) as f64;
    let sums = |f: &(dyn Fn(usize, f32) -> f64 + Sync)| -> Vec<f64> {
        let partial: Vec<Vec<f64>> = parts
            .iter()
            .flat_map(|part| {
                part.images
                    .par_chunks(d.sample_len().max(1) * 256)
                    .map(|block| {
                        let mut acc = vec![0.0f64; d.channels];
                        for (k, values) in block.chunks(plane.max(1)).enumerate() {
                            let c = k % d.channels;
                            acc[c] += values.iter().map(|&v| f(c, v)).sum::<f64>();
                        }
                        acc
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        (0..d.channels)
            .map(|c| partial.iter().map(|p| p[c]).sum::<f64>())
            .collect()
    };
    let mean: Vec<f64> = sums(&|_, v| f64::from(v))
        .into_iter()
        .map(|s| s / count)
        .collect();
    let std = sums(&|c, v| (f64::from(v) - mean[c]).powi(2))
        .into_iter()
        .map(|s| {
            let s = (s / count).sqrt();
            if s > 0.0 && s.is_finite() {
                s
            } else {
                1.0
            }
        })
        .collect();
    (mean, std)
}

/// Where the bundled datasets live: `$PAPA_DATA_DIR`, else the workspace's `data/` (found
/// from this crate's source directory), else `./data`.
pub fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PAPA_DATA_DIR") {
        return PathBuf::from(dir);
    }
    let bundled = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../data"));
    if bundled.is_dir() {
        bundled.to_path_buf()
    } else {
        PathBuf::from("data")
    }
}

/// How [`load_with`] reads a source.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadOptions {
    /// Fraction of the training file held out for validation.
    pub val_fraction: f64,
    /// Seed of the validation split.
    pub seed: u64,
    /// A file of 0-based indices into the training file (whitespace-separated, any number
    /// per line), the validation split in that order, in place of `val_fraction` and
    /// `seed`'s random one. Its size and SHA-256 join the data's identity.
    pub val_indices: Option<PathBuf>,
    /// How CSV tables are read (ignored for IDX sources).
    pub csv: CsvOptions,
}

impl Default for LoadOptions {
    /// 10% validation (6000 samples of Fashion-MNIST), seed 0, CSV label in the last column.
    fn default() -> Self {
        LoadOptions {
            val_fraction: 0.1,
            seed: 0,
            val_indices: None,
            csv: CsvOptions::default(),
        }
    }
}

/// Loads a source into train/val/test splits (not normalised; see [`Splits::normalize`]).
///
/// `source` is a bundled name (one of [`BUNDLED`]), a directory with the four IDX
/// files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
/// `t10k-labels-idx1-ubyte`, each optionally `.gz`), or a directory with `train.csv` and
/// `test.csv` (label in the last column).
pub fn load(source: &str, val_fraction: f64, seed: u64) -> Result<Splits, DataError> {
    load_with(
        source,
        &LoadOptions {
            val_fraction,
            seed,
            ..LoadOptions::default()
        },
    )
}

/// The datasets shipped in `data/` (data/README.md: sources and licences): two of images
/// (IDX) and two tables (CSV).
pub const BUNDLED: [&str; 4] = ["fashion-mnist", "mnist", "digits", "spam"];

/// [`load`] with all options.
pub fn load_with(source: &str, options: &LoadOptions) -> Result<Splits, DataError> {
    let bundled = BUNDLED.contains(&source);
    let dir = if bundled {
        data_dir().join(source)
    } else {
        PathBuf::from(source)
    };
    if !dir.is_dir() {
        return Err(DataError::Source {
            source_name: source.to_string(),
            message: if bundled {
                format!(
                    "bundled data not found in {} (set PAPA_DATA_DIR)",
                    dir.display()
                )
            } else {
                format!(
                    "not a bundled dataset ({}) nor a directory",
                    BUNDLED.join(", ")
                )
            },
        });
    }
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let (mut pixel_scale, mut class_names) = (1.0, Vec::new());
    // The label files, and whether the class count is inferred from their labels.
    let (label_files, inferred): ([PathBuf; 2], bool);
    let mut data_files: Vec<PathBuf>;
    let (train, test) = if let Some(files) = idx_files(&dir) {
        // Flips keep clothes in their class; only Fashion-MNIST is known to be such data.
        let hflip_ok = dir_name.contains("fashion");
        pixel_scale = idx::PIXEL_SCALE;
        class_names = match dir_name.as_str() {
            "fashion-mnist" => FASHION_MNIST_CLASSES.map(String::from).to_vec(),
            "mnist" => (0..10).map(|d| d.to_string()).collect(),
            _ => Vec::new(),
        };
        data_files = files.to_vec();
        let [tr_img, tr_lab, te_img, te_lab] = files;
        let mut train = idx_dataset(&tr_img, &tr_lab, hflip_ok)?;
        let mut test = idx_dataset(&te_img, &te_lab, hflip_ok)?;
        (label_files, inferred) = ([tr_lab, te_lab], true);
        let classes = train.classes.max(test.classes);
        train.classes = classes;
        test.classes = classes;
        (train, test)
    } else if dir.join("train.csv").is_file() && dir.join("test.csv").is_file() {
        let files = [dir.join("train.csv"), dir.join("test.csv")];
        data_files = files.to_vec();
        let mut train = csv::read(&files[0], &options.csv)?;
        let mut test = csv::read(&files[1], &options.csv)?;
        (label_files, inferred) = (files, options.csv.classes.is_none());
        if options.csv.classes.is_none() {
            let classes = train.classes.max(test.classes);
            train.classes = classes;
            test.classes = classes;
        }
        (train, test)
    } else {
        return Err(DataError::Source {
            source_name: source.to_string(),
            message: "directory holds neither the four IDX files \
                      (train-images-idx3-ubyte[.gz], ...) nor train.csv and test.csv"
                .to_string(),
        });
    };
    train.validate(&format!("{source} (train)"))?;
    test.validate(&format!("{source} (test)"))?;
    if train.classes < 2 {
        return Err(DataError::OneClass {
            source_name: source.to_string(),
        });
    }
    if inferred {
        every_class_has_training_samples(&train, &test, &label_files)?;
    }
    let mut splits = match &options.val_indices {
        None => Splits::new(train, test, options.val_fraction, options.seed)?,
        Some(path) => {
            let (indices, lines) = read_val_indices(path)?;
            data_files.push(path.clone());
            Splits::with_val_indices(train, test, &indices).map_err(|e| match e {
                DataError::ValIndex { position, problem } => {
                    let line = |at: usize| lines.get(at).copied().unwrap_or(0);
                    let message = match problem {
                        ValIndexProblem::Repeated { index, first } => {
                            format!("index {index} repeats the one on line {}", line(first))
                        }
                        other => other.to_string(),
                    };
                    DataError::ValIndicesFile {
                        path: path.clone(),
                        line: line(position),
                        message,
                    }
                }
                other => other,
            })?
        }
    };
    splits.pixel_scale = pixel_scale;
    splits.identity = DataIdentity::of_files(&data_files)?;
    if class_names.len() == splits.train.classes {
        splits.class_names = class_names;
    }
    Ok(splits)
}

/// The indices of a validation-indices file, in order, and the 1-based line of each.
fn read_val_indices(path: &Path) -> Result<(Vec<u32>, Vec<usize>), DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.into(),
        source,
    })?;
    let (mut indices, mut lines) = (Vec::new(), Vec::new());
    for (l, row) in text.lines().enumerate() {
        for token in row.split_whitespace() {
            let index = token
                .parse::<u32>()
                .map_err(|_| DataError::ValIndicesFile {
                    path: path.into(),
                    line: l + 1,
                    message: format!("`{token}` is not a sample index (a whole number >= 0)"),
                })?;
            indices.push(index);
            lines.push(l + 1);
        }
    }
    if indices.is_empty() {
        return Err(DataError::ValIndicesFile {
            path: path.into(),
            line: 0,
            message: "no indices (the validation split would be empty)".into(),
        });
    }
    Ok((indices, lines))
}

/// Refuses inferred classes that some class has no training sample of: one stray label
/// (200 among digits) would otherwise silently make a 201-output model.
fn every_class_has_training_samples(
    train: &Dataset,
    test: &Dataset,
    label_files: &[PathBuf; 2],
) -> Result<(), DataError> {
    let mut seen = vec![false; train.classes];
    for &l in &train.labels {
        seen[usize::from(l)] = true;
    }
    let mut missing = seen.iter().enumerate().filter(|(_, &s)| !s).map(|(c, _)| c);
    let Some(first) = missing.next() else {
        return Ok(());
    };
    // The largest label made the class count: name the first sample holding it.
    let largest = train.classes - 1;
    let at = |d: &Dataset| d.labels.iter().position(|&l| usize::from(l) == largest);
    let (path, sample) = match (at(train), at(test)) {
        (Some(i), _) => (&label_files[0], i),
        (None, Some(i)) => (&label_files[1], i),
        (None, None) => (&label_files[0], 0),
    };
    Err(DataError::ClassWithoutSamples {
        path: path.clone(),
        label: largest,
        sample,
        classes: train.classes,
        missing: first,
        more: missing.count(),
    })
}

/// Fashion-MNIST's class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The four IDX files in `dir` (each raw or `.gz`), or `None` when any is missing.
fn idx_files(dir: &Path) -> Option<[PathBuf; 4]> {
    let find = |stem: &str| {
        [stem.to_string(), format!("{stem}.gz")]
            .into_iter()
            .map(|name| dir.join(name))
            .find(|p| p.is_file())
    };
    Some([
        find("train-images-idx3-ubyte")?,
        find("train-labels-idx1-ubyte")?,
        find("t10k-images-idx3-ubyte")?,
        find("t10k-labels-idx1-ubyte")?,
    ])
}

/// One IDX image file and its label file as a dataset; classes = largest label + 1.
fn idx_dataset(images: &Path, labels: &Path, hflip_ok: bool) -> Result<Dataset, DataError> {
    let img = idx::read_images(images)?;
    let labels_vec = idx::read_labels(labels)?;
    if labels_vec.len() != img.count {
        return Err(DataError::Format {
            path: labels.to_path_buf(),
            message: format!(
                "{} labels but {} holds {} images",
                labels_vec.len(),
                images.display(),
                img.count
            ),
        });
    }
    let classes = labels_vec.iter().max().map_or(1, |&m| usize::from(m) + 1);
    Ok(Dataset {
        images: img.pixels,
        labels: labels_vec,
        channels: 1,
        height: img.rows,
        width: img.cols,
        classes,
        hflip_ok,
    })
}

/// The order in which `member` visits `n` samples in `epoch`: a permutation of `0..n`
/// drawn from forks of `seed`, so that each member and epoch has its own independent order
/// and no order depends on how many members or threads there are.
pub fn epoch_order(seed: u64, member: u64, epoch: u64, n: u32) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n).collect();
    Rng::new(seed)
        .fork(ORDER_STREAM)
        .fork(member)
        .fork(epoch)
        .shuffle(&mut order);
    order
}

/// The full batches of an epoch order, in order; the last partial batch is dropped so that
/// every step uses the same batch size.
pub fn batches(
    order: &[u32],
    batch_size: usize,
) -> Result<std::slice::ChunksExact<'_, u32>, DataError> {
    if batch_size == 0 {
        return Err(DataError::ZeroBatch);
    }
    Ok(order.chunks_exact(batch_size))
}

/// Number of full batches of `batch_size` in `n` samples (0 for batch size 0).
pub fn batches_per_epoch(n: usize, batch_size: usize) -> usize {
    n.checked_div(batch_size).unwrap_or(0)
}

/// Index ranges of evaluation batches over `n` samples: like [`batches`] but keeping the
/// last partial batch, since evaluation must see every sample.
pub fn eval_ranges(n: usize, batch_size: usize) -> impl Iterator<Item = Range<usize>> {
    let step = batch_size.max(1);
    (0..n).step_by(step).map(move |s| s..(s + step).min(n))
}
