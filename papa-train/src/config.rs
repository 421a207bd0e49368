//! A run's settings: defaults that finish in minutes on two cores, overridable from a TOML
//! file and the command line.

use crate::augment::{ErasingBox, MixPartner};
use crate::data::{LoadOptions, NormalizeOver, Splits};
use crate::model::ModelSpec;
use crate::optim::{Sgd, DEFAULT_MIN_LR};
use papa_model::zoo::{UnknownModel, Zoo};
use papa_model::ModelError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How the members are combined during training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Independent training: the baseline.
    None,
    /// PAPA gradual: every k steps, w_j <- a w_j + (1 - a) mean.
    Papa,
    /// PAPA-all: every E epochs, every member becomes the mean, then REPAIR.
    PapaAll,
    /// PAPA-2: every E epochs, each member becomes the mean of a random pair, then REPAIR.
    #[serde(rename = "papa-2")]
    Papa2,
}

impl Method {
    /// All four, in the order of the paper's tables.
    pub const ALL: [Method; 4] = [Method::None, Method::Papa, Method::PapaAll, Method::Papa2];

    /// The command-line spelling.
    pub fn name(self) -> &'static str {
        match self {
            Method::None => "none",
            Method::Papa => "papa",
            Method::PapaAll => "papa-all",
            Method::Papa2 => "papa-2",
        }
    }
}

/// A method name that is none of [`Method::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown method `{0}` (expected none, papa, papa-all or papa-2)")]
pub struct UnknownMethod(pub String);

impl std::str::FromStr for Method {
    type Err = UnknownMethod;

    /// The command-line spelling of [`Method::name`].
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| UnknownMethod(name.into()))
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the members' training data is augmented and regularised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Augmentation {
    /// Crop and flip, plus each member's own entry of the 81-entry grid of the paper's code (mixup,
    /// label smoothing, CutMix, random erasing).
    Grid,
    /// Crop and flip only.
    Standard,
    /// Nothing.
    None,
}

/// What the random crop's padding is filled with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CropFill {
    /// A black pixel: raw 0, i.e. `-mean / std` after normalisation (papa's default).
    #[default]
    Black,
    /// 0.0 in normalised space, the mean pixel (the PyTorch replica pads the normalised
    /// tensor).
    Zero,
}

impl CropFill {
    /// The padding value on `splits` (normalised or not: black follows its normalisation).
    pub fn pad_value(self, splits: &Splits) -> f32 {
        match self {
            CropFill::Black => splits.pad_value(0),
            CropFill::Zero => 0.0,
        }
    }
}

/// Which steps PAPA gradual follows, every `papa_every_steps` = k of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepPhase {
    /// After every k-th step of the run (1-based count: steps k, 2k, ...; papa's default).
    #[default]
    Run,
    /// After the steps whose 0-based index within their epoch is a multiple of k (0, k,
    /// 2k, ... of each epoch: the PyTorch replica's `if i % k == 0` in its epoch loop).
    Epoch,
}

impl StepPhase {
    /// Whether PAPA gradual is due after run-wide step `step` (0-based) of a run of
    /// `steps_per_epoch` steps per epoch, every `every` steps (`every` >= 1, as validated).
    pub fn due(self, step: u64, every: u32, steps_per_epoch: u64) -> bool {
        let every = u64::from(every.max(1));
        match self {
            StepPhase::Run => (step + 1).is_multiple_of(every),
            StepPhase::Epoch => (step % steps_per_epoch.max(1)).is_multiple_of(every),
        }
    }
}

/// What follows PAPA-all's and PAPA-2's averaging of the population.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AfterAveraging {
    /// REPAIR: BatchNorm statistics re-estimated, and the layers without a BatchNorm
    /// corrected to the parents' statistics (papa's default).
    #[default]
    Repair,
    /// BatchNorm statistics re-estimated only (the PyTorch replica's).
    ResetBatchnorm,
}

/// Which of PAPA-all and PAPA-2 take their first averaging after the first epoch (the
/// paper's code, `mix_from_start`: after epochs 1, 4, 7, 10 of 12 for every 3) rather than
/// after `papa_every_epochs` epochs (3, 6, 9). In TOML: `true` (both), `false` (neither) or
/// a list of methods.
///
/// ```
/// use papa_train::config::{FromFirstEpoch, Method, TrainConfig};
/// let both: TrainConfig = toml::from_str("papa_from_first_epoch = true")?;
/// assert!(both.papa_from_first_epoch.applies_to(Method::PapaAll));
/// assert!(both.papa_from_first_epoch.applies_to(Method::Papa2));
/// let listed: TrainConfig = toml::from_str(r#"papa_from_first_epoch = ["papa-all"]"#)?;
/// assert!(!listed.papa_from_first_epoch.applies_to(Method::Papa2));
/// let chosen = FromFirstEpoch::default();
/// assert!(!chosen.applies_to(Method::PapaAll) && chosen.applies_to(Method::Papa2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FromFirstEpoch {
    /// `true`: both methods; `false`: neither.
    Both(bool),
    /// The methods listed (only `papa-all` and `papa-2` are valid).
    Methods(Vec<Method>),
}

impl Default for FromFirstEpoch {
    /// Each method's variant chosen on validation (docs/RESULTS.md, issue 12): PAPA-2 on the
    /// paper's schedule, PAPA-all on papa's.
    fn default() -> Self {
        FromFirstEpoch::Methods(vec![Method::Papa2])
    }
}

impl FromFirstEpoch {
    /// Whether `method`'s first averaging comes after the first epoch.
    pub fn applies_to(&self, method: Method) -> bool {
        match self {
            FromFirstEpoch::Both(both) => *both,
            FromFirstEpoch::Methods(methods) => methods.contains(&method),
        }
    }
}

/// Where the cosine learning-rate schedule reaches `min_lr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MinLrAt {
    /// At the last step: `lr(t) = min + (peak - min) (1 + cos(pi t / (T - 1))) / 2` over
    /// the T steps after the warm-up (papa's default).
    #[default]
    LastStep,
    /// One step after the last: `cos(pi t / T)`, the last step still a little above
    /// `min_lr` (the PyTorch replica's).
    AfterLastStep,
}

/// Every setting of a training run. Unknown keys in a TOML file are an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// A bundled dataset name (`fashion-mnist`, `mnist`) or a directory of IDX or CSV files.
    pub data: String,
    /// `cnn-s`, `mlp` (one hidden layer of 256) or `mlp:W1,W2,...`.
    pub model: String,
    /// The methods to run, one after the other on the same seeds.
    pub methods: Vec<Method>,
    /// Members P.
    pub population: usize,
    /// Epochs.
    pub epochs: usize,
    /// Samples per member per step.
    pub batch: usize,
    /// Use only the first `train_limit` training samples (0 = all): for quick runs.
    pub train_limit: usize,
    /// Fraction of the training file held out for validation (greedy soups, final choice).
    pub val_fraction: f64,
    /// A text file of 0-based indices into the training file (whitespace-separated), the
    /// validation split in place of `val_fraction`'s random one; absent = `val_fraction`.
    pub val_indices: Option<PathBuf>,
    /// The samples the normalisation's mean and std are computed over: `train-split` (the
    /// training file less the validation split) or `train-file` (all of it).
    pub normalize_over: NormalizeOver,
    /// Seed of everything: initialisation, data orders, augmentation, pairs, split.
    pub seed: u64,
    /// Worker threads (0 = all cores). Results do not depend on it.
    pub threads: usize,
    /// Peak learning rate of the cosine schedule.
    pub lr: f32,
    /// Final learning rate of the cosine schedule.
    pub min_lr: f32,
    /// Linear warmup, in steps.
    pub warmup_steps: usize,
    /// SGD momentum.
    pub momentum: f32,
    /// L2 weight decay.
    pub weight_decay: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Each member's augmentation and regularisation.
    pub augmentation: Augmentation,
    /// Under `grid`: every member's mixup, label smoothing, CutMix and erasing strengths
    /// multiplied by this, in `[0, 1]` (1 = the paper's grid, set for 300-epoch runs).
    pub grid_strength: f32,
    /// Zero padding of the random crop under `grid` and `standard` (0 = no crop). The default
    /// is 2 (docs/RESULTS.md compares 0, 2 and 4 on Fashion-MNIST).
    pub crop_padding: usize,
    /// Random horizontal flips under `grid` and `standard` (only where the dataset allows).
    pub hflip: bool,
    /// The crop's padding: `black` (raw 0) or `zero` (0.0 after normalisation).
    pub crop_fill: CropFill,
    /// Mixup and CutMix partners: `shuffled` (a random permutation of the batch) or
    /// `reversed` (the batch in reversed order).
    pub mix_partner: MixPartner,
    /// Random-erasing boxes: `torchvision` (up to 10 tries) or `one-clamped` (one try, its
    /// sides clamped to the image).
    pub erasing_box: ErasingBox,
    /// Where the cosine schedule reaches `min_lr`: `last-step` or `after-last-step`.
    pub min_lr_at: MinLrAt,
    /// PAPA gradual: apply every this many optimizer steps.
    pub papa_every_steps: u32,
    /// PAPA gradual coefficient; absent = the paper's 0.99 per 10 steps rescaled to this run's
    /// length (see [`TrainConfig::papa_alpha`]).
    pub papa_alpha: Option<f32>,
    /// PAPA gradual: multiply the pull (1 - a) by lr_now / lr_peak.
    pub papa_lr_scaling: bool,
    /// PAPA gradual: every `papa_every_steps`-th step of the `run` (steps k, 2k, ...) or of
    /// each `epoch` (its steps 0, k, 2k, ...).
    pub papa_step_phase: StepPhase,
    /// PAPA-all and PAPA-2: apply after every this many epochs (never after the last).
    pub papa_every_epochs: u32,
    /// PAPA-all and PAPA-2: which of them average first after the first epoch, then every
    /// `papa_every_epochs` from it, instead of after epochs 3, 6, 9 (see
    /// [`FromFirstEpoch`]). By default PAPA-2 only: with `same_init`, each method's variant
    /// chosen on validation over 3 seeds (docs/RESULTS.md).
    pub papa_from_first_epoch: FromFirstEpoch,
    /// Every member starts from one initialisation (member 0's), for every method, the
    /// independent baseline included; the members still differ in data order and recipe.
    pub same_init: bool,
    /// PAPA-all and PAPA-2: what follows each averaging, `repair` or `reset-batchnorm`.
    pub after_averaging: AfterAveraging,
    /// Average (or pair) the momentum buffers with the weights.
    pub average_momentum: bool,
    /// Calibration batches for REPAIR and BatchNorm re-estimation.
    pub repair_batches: usize,
    /// Samples per calibration batch (0 = `batch`); the engine is sized for the larger of
    /// the two.
    pub calibration_batch: usize,
}

/// Applications of PAPA gradual in the runs the paper tuned a = 0.99 for (about 200k
/// optimizer steps, every 10 steps).
pub const PAPER_APPLICATIONS: f64 = 20_000.0;
/// The paper's gradual coefficient.
pub const PAPER_ALPHA: f64 = 0.99;
/// The strongest default pull: a member moves at most halfway to the mean per application.
/// Rescaled to a run of a few hundred steps the paper's pull is a ~ 0 (a full average every
/// 10 steps), which averages independently initialised members before they share a basin
/// and trains no better than one member (docs/RESULTS.md, the main job).
pub const MIN_DEFAULT_ALPHA: f64 = 0.5;

impl Default for TrainConfig {
    /// The main job's defaults: PAPA against independent training, 4 members of the MLP
    /// (one hidden layer of 256) from one initialisation, 20 epochs on all 54,000 Fashion-MNIST
    /// training images, no augmentation; about 2 minutes on two cores (docs/RESULTS.md, "The
    /// main job", has how it was chosen on validation). The paper's setting (the small CNN,
    /// the regularisation grid, different initialisations) is `configs/paper.toml`.
    fn default() -> Self {
        let sgd = Sgd::default();
        TrainConfig {
            data: "fashion-mnist".into(),
            model: "mlp".into(),
            methods: vec![Method::None, Method::Papa],
            population: 4,
            epochs: 20,
            batch: 128,
            train_limit: 0,
            val_fraction: 0.1,
            val_indices: None,
            normalize_over: NormalizeOver::TrainSplit,
            seed: 0,
            threads: 0,
            lr: 0.1,
            min_lr: DEFAULT_MIN_LR,
            warmup_steps: 0,
            momentum: sgd.momentum,
            weight_decay: sgd.weight_decay,
            nesterov: sgd.nesterov,
            augmentation: Augmentation::None,
            grid_strength: 1.0,
            crop_padding: 2,
            hflip: true,
            crop_fill: CropFill::Black,
            mix_partner: MixPartner::Shuffled,
            erasing_box: ErasingBox::Torchvision,
            min_lr_at: MinLrAt::LastStep,
            papa_every_steps: 10,
            papa_alpha: None,
            papa_lr_scaling: true,
            papa_step_phase: StepPhase::Run,
            papa_every_epochs: 3,
            papa_from_first_epoch: FromFirstEpoch::default(),
            same_init: true,
            after_averaging: AfterAveraging::Repair,
            average_momentum: false,
            repair_batches: 5,
            calibration_batch: 0,
        }
    }
}

/// A setting that cannot be used, naming the file or the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The TOML file is not a configuration (bad syntax, an unknown key, a wrong type).
    #[error("config file {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: toml::de::Error,
    },
    /// The settings cannot be written as TOML.
    #[error("cannot write the settings as TOML: {0}")]
    Write(#[from] toml::ser::Error),
    /// A value is out of range.
    #[error("config key `{key}`: {message}")]
    Value {
        /// The key.
        key: &'static str,
        /// What was wrong.
        message: &'static str,
    },
    /// `model` names no model of the zoo.
    #[error("config key `model`: {0}")]
    UnknownModel(#[from] UnknownModel),
    /// The model does not fit the data (e.g. the small CNN on F x 1 x 1 feature vectors).
    #[error("config key `model`: {0}")]
    Model(#[from] ModelError),
}

impl TrainConfig {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_files(&[path])
    }

    /// Reads TOML files over the defaults, each over the ones before it: a key set in a later
    /// file wins. Each file must be a configuration on its own (an unknown key or a wrong
    /// type names its file), so a base setting can be shared and varied in small files.
    ///
    /// ```
    /// # use papa_train::config::TrainConfig;
    /// let dir = std::env::temp_dir().join(format!("papa-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let (base, variant) = (dir.join("base.toml"), dir.join("variant.toml"));
    /// std::fs::write(&base, "epochs = 12\npopulation = 5\n")?;
    /// std::fs::write(&variant, "population = 3\n")?;
    /// let cfg = TrainConfig::from_files(&[&base, &variant])?;
    /// assert_eq!((cfg.epochs, cfg.population), (12, 3));
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_files<P: AsRef<Path>>(paths: &[P]) -> Result<Self, ConfigError> {
        let mut merged = toml::Table::new();
        let mut last = PathBuf::new();
        for path in paths {
            let path = path.as_ref();
            let parse_error = |source| ConfigError::Parse {
                path: path.into(),
                source,
            };
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.into(),
                source,
            })?;
            // Checked alone first, so that a bad key is reported with the file that holds it.
            toml::from_str::<TrainConfig>(&text).map_err(parse_error)?;
            merged.extend(text.parse::<toml::Table>().map_err(parse_error)?);
            last = path.into();
        }
        merged
            .try_into()
            .map_err(|source| ConfigError::Parse { path: last, source })
    }

    /// The settings as a TOML document (what [`TrainConfig::from_file`] reads back).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        Ok(toml::to_string(self)?)
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, message| Err(ConfigError::Value { key, message });
        if self.population == 0 {
            return bad("population", "must be at least 1");
        }
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1");
        }
        if self.batch < 2 {
            return bad("batch", "must be at least 2 (BatchNorm needs two samples)");
        }
        if self.methods.is_empty() {
            return bad("methods", "name at least one method");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", "must be positive");
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0) {
            return bad("min_lr", "must be a finite number >= 0");
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("momentum", "must lie in [0, 1)");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", "must be a finite number >= 0");
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad("val_fraction", "must lie in [0, 1)");
        }
        if !(0.0..=1.0).contains(&self.grid_strength) {
            return bad("grid_strength", "must lie in [0, 1]");
        }
        if let Some(a) = self.papa_alpha {
            if !(0.0..=1.0).contains(&a) {
                return bad("papa_alpha", "must lie in [0, 1]");
            }
        }
        if self.papa_every_steps == 0 {
            return bad("papa_every_steps", "must be at least 1");
        }
        if self.papa_every_epochs == 0 {
            return bad("papa_every_epochs", "must be at least 1");
        }
        if let FromFirstEpoch::Methods(methods) = &self.papa_from_first_epoch {
            if methods
                .iter()
                .any(|m| !matches!(m, Method::PapaAll | Method::Papa2))
            {
                return bad(
                    "papa_from_first_epoch",
                    "lists only papa-all and papa-2 (the methods that average every few epochs)",
                );
            }
        }
        if self.repair_batches == 0 {
            return bad("repair_batches", "must be at least 1");
        }
        if self.calibration_batch == 1 {
            return bad(
                "calibration_batch",
                "must be 0 (= batch) or at least 2 (BatchNorm needs two samples)",
            );
        }
        if self
            .val_indices
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return bad("val_indices", "must name a file (or be left out)");
        }
        self.model.parse::<Zoo>()?;
        Ok(())
    }

    /// Samples per calibration batch: `calibration_batch`, or `batch` when it is 0.
    pub fn calibration_batch_size(&self) -> usize {
        match self.calibration_batch {
            0 => self.batch,
            n => n,
        }
    }

    /// The samples per forward an engine needs for this run: a training batch and a
    /// calibration batch.
    pub fn engine_capacity(&self) -> usize {
        self.batch.max(self.calibration_batch_size())
    }

    /// How the run's data is read: its validation split (`val_fraction` and `seed`, or
    /// `val_indices`).
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            val_fraction: self.val_fraction,
            seed: self.seed,
            val_indices: self.val_indices.clone(),
            ..LoadOptions::default()
        }
    }

    /// The gradual coefficient for a run of `total_steps`: the configured one, or the paper's
    /// 0.99 per application rescaled so that the pull's half-life is the same fraction of
    /// the run as in the paper's ~200k-step runs: a = 0.99^(20000 / applications), but never
    /// below [`MIN_DEFAULT_ALPHA`]. A constant 0.99 is far too weak in a short run (docs/RESULTS.md:
    /// the members drift apart and their average is at chance).
    pub fn papa_alpha(&self, total_steps: usize) -> f32 {
        self.papa_alpha.unwrap_or_else(|| {
            let applications = (total_steps as f64 / f64::from(self.papa_every_steps)).max(1.0);
            PAPER_ALPHA
                .powf(PAPER_APPLICATIONS / applications)
                .max(MIN_DEFAULT_ALPHA) as f32
        })
    }
}

/// The zoo model `name` for inputs of `shape` (C, H, W) and `classes` outputs.
pub fn build_model(
    name: &str,
    shape: [usize; 3],
    classes: usize,
) -> Result<ModelSpec, ConfigError> {
    let zoo: Zoo = name.parse()?;
    Ok(ModelSpec::new(&zoo.layers(classes), shape, classes)?)
}
