//! The model card: everything a tool needs to rebuild and feed a model, saved with it.
//!
//! A model file holds the tensors and ONE metadata entry, [`CARD_KEY`], whose value is the
//! card as JSON. One entry, so the file's bytes do not depend on a map's order; JSON, so a
//! Python user reads it with `json.loads(safe_open(...).metadata()["papa.model_card"])`.

use crate::layer::Layer;
use crate::{ModelError, ModelSpec};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use papa_core::layout::TensorKind;
use papa_core::LengthMismatch;
use serde::{Deserialize, Serialize};

/// Metadata key of the card in a model file.
pub const CARD_KEY: &str = "papa.model_card";
/// The card format this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// How a model's input is stored and read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Channels of one sample.
    pub channels: usize,
    /// Rows (1 for a feature vector).
    pub height: usize,
    /// Columns (the features of a feature vector).
    pub width: usize,
    /// The model reads `stored / pixel_scale`: 255 for 8-bit pixels (read as `[0, 1]`), 1 for
    /// features taken as they are (CSV).
    pub pixel_scale: f32,
    /// Sample layout of the values: always `"NCHW"` (channel-major, row-major).
    pub layout: String,
}

/// Per-channel normalisation applied after the pixel scale: `(x - mean[c]) / std[c]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    /// Mean per channel.
    pub mean: Vec<f32>,
    /// Standard deviation per channel.
    pub std: Vec<f32>,
}

impl Normalization {
    /// No change: mean 0, std 1 on each of `channels`.
    pub fn identity(channels: usize) -> Self {
        Normalization {
            mean: alloc::vec![0.0; channels],
            std: alloc::vec![1.0; channels],
        }
    }

    /// Normalises `values`, whole samples in NCHW with `plane = height x width` values per
    /// channel: each value becomes `(v - mean[c]) / std[c]`.
    ///
    /// ```
    /// use papa_model::card::Normalization;
    /// let n = Normalization { mean: vec![1.0, 0.0], std: vec![2.0, 1.0] };
    /// let mut two_samples = [3.0, 3.0, 5.0, 5.0];
    /// n.apply(&mut two_samples, 1)?;
    /// assert_eq!(two_samples, [1.0, 3.0, 2.0, 5.0]);
    /// # Ok::<(), papa_core::LengthMismatch>(())
    /// ```
    pub fn apply(&self, values: &mut [f32], plane: usize) -> Result<(), LengthMismatch> {
        let channels = self.mean.len();
        LengthMismatch::check("normalisation std", channels, self.std.len())?;
        let sample = channels * plane;
        let whole = values.len().checked_div(sample).unwrap_or(0) * sample;
        LengthMismatch::check("values (whole samples)", whole, values.len())?;
        for (k, chunk) in values.chunks_exact_mut(plane.max(1)).enumerate() {
            let (m, s) = (self.mean[k % channels], self.std[k % channels]);
            chunk.iter_mut().for_each(|v| *v = (*v - m) / s);
        }
        Ok(())
    }
}

/// The classes a model predicts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Classes {
    /// How many (logits per sample).
    pub count: usize,
    /// Their names in label order, where the data has them (else empty).
    pub names: Vec<String>,
}

/// One tensor of the flat member vector, as recorded in the card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorEntry {
    /// Its `state_dict` name (also its name in the file).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Index of its first element in the member vector.
    pub offset: usize,
    /// What it holds: `weight`, `bias`, `bn_scale`, `bn_shift`, `bn_running_mean`,
    /// `bn_running_var`, `counter` or `other`.
    pub kind: String,
}

/// Where a model came from: enough to reload its data and check its recorded accuracy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The dataset (a bundled name or the directory given).
    pub dataset: String,
    /// Fraction of the training file held out for validation.
    pub val_fraction: f64,
    /// The run's seed.
    pub seed: u64,
    /// The method that trained it (`none`, `papa`, `papa-all`, `papa-2`).
    pub method: String,
    /// Which candidate was kept (`uniform soup`, `greedy soup + REPAIR`, ...).
    pub final_model_is: String,
    /// Its test accuracy at training time, in %.
    pub test_accuracy: f32,
}

/// Everything needed to rebuild and feed a model, from the file alone.
///
/// ```
/// use papa_model::card::{ModelCard, Normalization};
/// use papa_model::{zoo, ModelSpec};
/// let spec = ModelSpec::new(&zoo::mlp(&[8], 3), [1, 2, 2], 3)?;
/// let card = ModelCard::new("mlp:8", &spec, 255.0, Normalization::identity(1), vec![]);
/// let back = ModelCard::from_json(&card.to_json()?)?;
/// assert_eq!(back.spec()?, spec);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// The model's name (a zoo name such as `cnn-s`, or any label).
    pub name: String,
    /// The input and how to read it.
    pub input: InputSpec,
    /// The normalisation the model was trained with.
    pub normalization: Normalization,
    /// The classes.
    pub classes: Classes,
    /// The layers, in forward order.
    pub layers: Vec<Layer>,
    /// The flat vector's tensors, in order (derived from the layers; checked on load).
    pub layout: Vec<TensorEntry>,
    /// Where it came from, when it came out of a training run.
    pub provenance: Option<Provenance>,
}

/// Why a card cannot be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum CardError {
    /// Not valid card JSON (an unknown or missing field included).
    Json(serde_json::Error),
    /// Written by a format this crate does not read.
    Version {
        /// The card's version.
        found: u32,
    },
    /// Its layers do not make a model.
    Model(ModelError),
    /// Its layout is not the one its layers give (tensor `index` differs).
    Layout {
        /// The first tensor that differs (or the length of the shorter list).
        index: usize,
    },
    /// Its normalisation or class names do not match the model.
    Length(LengthMismatch),
    /// A number that JSON cannot hold (infinite or NaN), so the card could not be read back.
    NotFinite {
        /// The field, e.g. `input.pixel_scale`.
        field: &'static str,
    },
}

impl fmt::Display for CardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CardError::Json(e) => write!(f, "the model card is not valid: {e}"),
            CardError::Version { found } => write!(
                f,
                "model card format {found}, this papa reads format {FORMAT_VERSION}: use the papa that wrote it, or retrain"
            ),
            CardError::Model(e) => write!(f, "the model card's layers: {e}"),
            CardError::Layout { index } => write!(
                f,
                "the model card's layout differs from its layers' at tensor {index}"
            ),
            CardError::Length(e) => write!(f, "the model card: {e}"),
            CardError::NotFinite { field } => {
                write!(f, "the model card's `{field}` is not a finite number")
            }
        }
    }
}

impl core::error::Error for CardError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            CardError::Json(e) => Some(e),
            CardError::Model(e) => Some(e),
            CardError::Length(e) => Some(e),
            CardError::Version { .. } | CardError::Layout { .. } | CardError::NotFinite { .. } => {
                None
            }
        }
    }
}

impl ModelCard {
    /// The card of `spec`: its layers and layout, input read as `stored / pixel_scale` then
    /// normalised, classes named by `class_names` (empty where the data has no names).
    pub fn new(
        name: &str,
        spec: &ModelSpec,
        pixel_scale: f32,
        normalization: Normalization,
        class_names: Vec<String>,
    ) -> Self {
        let [channels, height, width] = spec.input_shape();
        ModelCard {
            format_version: FORMAT_VERSION,
            name: name.into(),
            input: InputSpec {
                channels,
                height,
                width,
                pixel_scale,
                layout: "NCHW".into(),
            },
            normalization,
            classes: Classes {
                count: spec.classes(),
                names: class_names,
            },
            layers: spec.layers().to_vec(),
            layout: layout_of(spec),
            provenance: None,
        }
    }

    /// Rebuilds the model, checking that the card agrees with itself: its layout is the one
    /// its layers give, one mean and std per input channel, one name per class (or none),
    /// and every number finite.
    pub fn spec(&self) -> Result<ModelSpec, CardError> {
        self.check_finite()?;
        let input = [self.input.channels, self.input.height, self.input.width];
        let spec =
            ModelSpec::new(&self.layers, input, self.classes.count).map_err(CardError::Model)?;
        let expected = layout_of(&spec);
        if let Some(index) = (0..expected.len().max(self.layout.len()))
            .find(|&i| expected.get(i) != self.layout.get(i))
        {
            return Err(CardError::Layout { index });
        }
        let channels = self.input.channels;
        let check = |what, n: usize| LengthMismatch::check(what, channels, n);
        check("normalisation mean", self.normalization.mean.len())
            .and(check("normalisation std", self.normalization.std.len()))
            .map_err(CardError::Length)?;
        if !self.classes.names.is_empty() {
            LengthMismatch::check("class names", self.classes.count, self.classes.names.len())
                .map_err(CardError::Length)?;
        }
        Ok(spec)
    }

    /// JSON writes an infinity or NaN as `null`, which no f32 field reads back: a card
    /// holding one would be written as a file that cannot be loaded. (Parsing yields them:
    /// `1e39` overflows f32, and the older metadata's numbers may say `inf`.)
    fn check_finite(&self) -> Result<(), CardError> {
        let finite = |field, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(CardError::NotFinite { field })
            }
        };
        let all = |v: &[f32]| v.iter().all(|x| x.is_finite());
        finite("input.pixel_scale", self.input.pixel_scale.is_finite())?;
        finite("normalization.mean", all(&self.normalization.mean))?;
        finite("normalization.std", all(&self.normalization.std))?;
        if let Some(p) = &self.provenance {
            finite("provenance.val_fraction", p.val_fraction.is_finite())?;
            finite("provenance.test_accuracy", p.test_accuracy.is_finite())?;
        }
        Ok(())
    }

    /// The card as compact JSON (fields in declaration order, so the bytes are fixed).
    pub fn to_json(&self) -> Result<String, CardError> {
        serde_json::to_string(self).map_err(CardError::Json)
    }

    /// Reads a card written by [`ModelCard::to_json`], refusing other format versions.
    pub fn from_json(json: &str) -> Result<Self, CardError> {
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        // The version first: a newer card's other fields may not parse here.
        let version: Version = serde_json::from_str(json).map_err(CardError::Json)?;
        if version.format_version != FORMAT_VERSION {
            return Err(CardError::Version {
                found: version.format_version,
            });
        }
        serde_json::from_str(json).map_err(CardError::Json)
    }
}

/// The card's layout entries of `spec`.
fn layout_of(spec: &ModelSpec) -> Vec<TensorEntry> {
    spec.tensors()
        .iter()
        .map(|t| TensorEntry {
            name: t.name.clone(),
            shape: t.shape.clone(),
            offset: t.offset,
            kind: kind_name(t.kind).into(),
        })
        .collect()
}

/// Stable on-disk name of a tensor kind (independent of the Rust enum's spelling).
pub fn kind_name(kind: TensorKind) -> &'static str {
    match kind {
        TensorKind::Weight => "weight",
        TensorKind::Bias => "bias",
        TensorKind::BnScale => "bn_scale",
        TensorKind::BnShift => "bn_shift",
        TensorKind::BnRunningMean => "bn_running_mean",
        TensorKind::BnRunningVar => "bn_running_var",
        TensorKind::Counter => "counter",
        TensorKind::Other => "other",
    }
}
