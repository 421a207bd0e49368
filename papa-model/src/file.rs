//! Model files: safetensors bytes with one f32 tensor per layout tensor, under its PyTorch
//! `state_dict` name (so `safetensors.torch.load_file` gives a loadable `state_dict`), and the
//! [`ModelCard`] as the one metadata entry. Reading and writing the bytes to disk is the
//! caller's (papa-train writes them atomically).

extern crate std;

use crate::card::{CardError, ModelCard, Normalization, Provenance, CARD_KEY};
use crate::zoo::Zoo;
use crate::ModelSpec;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use papa_core::LengthMismatch;
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};
use std::collections::HashMap;

/// A model read back: its card and its flat member vector (N values, layout order).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFile {
    /// The card.
    pub card: ModelCard,
    /// The member vector.
    pub params: Vec<f32>,
}

/// Why bytes are not a model file, or a model cannot be written.
#[derive(Debug)]
#[non_exhaustive]
pub enum FileError {
    /// Not valid safetensors (truncated, corrupt header, tensor data out of bounds).
    Safetensors(SafeTensorError),
    /// A safetensors file without a model card (nor the older metadata papa wrote before it).
    NoCard,
    /// The card is unusable.
    Card(CardError),
    /// A file from before the model card whose metadata entry `key` is missing or unreadable.
    Legacy {
        /// The entry.
        key: &'static str,
    },
    /// A tensor the layout names is not in the file.
    MissingTensor {
        /// Its name.
        name: String,
    },
    /// A tensor is not f32 or has another shape than the layout's.
    BadTensor {
        /// Its name.
        name: String,
        /// Its dtype.
        dtype: Dtype,
        /// Its shape.
        shape: Vec<usize>,
        /// The shape the layout gives.
        expected: Vec<usize>,
    },
    /// The parameters given do not fill the model.
    Length(LengthMismatch),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Safetensors(e) => write!(f, "not a valid safetensors file ({e})"),
            FileError::NoCard => write!(
                f,
                "no `{CARD_KEY}` metadata: not a model written by papa (checkpoints/ holds training state, not models)"
            ),
            FileError::Card(e) => e.fmt(f),
            FileError::Legacy { key } => write!(
                f,
                "this model predates the model card and its `{key}` metadata is missing or unreadable; retrain it with `papa train`"
            ),
            FileError::MissingTensor { name } => write!(f, "tensor `{name}` is missing"),
            FileError::BadTensor {
                name,
                dtype,
                shape,
                expected,
            } => write!(
                f,
                "tensor `{name}` is {dtype:?} {shape:?}, the model card says F32 {expected:?}"
            ),
            FileError::Length(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for FileError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            FileError::Safetensors(e) => Some(e),
            FileError::Card(e) => Some(e),
            FileError::Length(e) => Some(e),
            _ => None,
        }
    }
}

impl From<CardError> for FileError {
    fn from(e: CardError) -> Self {
        FileError::Card(e)
    }
}

/// The bytes of a model file holding `params` (one member) described by `card`.
///
/// ```
/// use papa_model::card::{ModelCard, Normalization};
/// use papa_model::file::{decode, encode};
/// use papa_model::{zoo, ModelSpec};
/// let spec = ModelSpec::new(&zoo::mlp(&[4], 2), [1, 1, 3], 2)?;
/// let card = ModelCard::new("mlp:4", &spec, 1.0, Normalization::identity(1), vec![]);
/// let params: Vec<f32> = (0..spec.len()).map(|i| i as f32).collect();
/// let bytes = encode(&card, &params)?;
/// let back = decode(&bytes)?;
/// assert_eq!((back.card, back.params), (card, params));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode(card: &ModelCard, params: &[f32]) -> Result<Vec<u8>, FileError> {
    let spec = card.spec()?;
    LengthMismatch::check("params", spec.len(), params.len()).map_err(FileError::Length)?;
    let bytes: Vec<Vec<u8>> = spec
        .tensors()
        .iter()
        .map(|t| {
            params[t.range()]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        })
        .collect();
    let mut views = Vec::with_capacity(bytes.len());
    for (t, data) in spec.tensors().iter().zip(&bytes) {
        let view =
            TensorView::new(Dtype::F32, t.shape.clone(), data).map_err(FileError::Safetensors)?;
        views.push((t.name.as_str(), view));
    }
    let metadata = HashMap::from([(CARD_KEY.to_string(), card.to_json()?)]);
    safetensors::serialize(views, &Some(metadata)).map_err(FileError::Safetensors)
}

/// Reads a model file: its card (or, for a file from before the card, one rebuilt from the
/// older metadata) and its member vector, bit-exact. Tensors the layout does not name are
/// ignored.
pub fn decode(bytes: &[u8]) -> Result<ModelFile, FileError> {
    let file = SafeTensors::deserialize(bytes).map_err(FileError::Safetensors)?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(FileError::Safetensors)?;
    let empty = HashMap::new();
    let metadata = header.metadata().as_ref().unwrap_or(&empty);
    let card = match metadata.get(CARD_KEY) {
        Some(json) => ModelCard::from_json(json)?,
        None if metadata.contains_key("layout") => legacy_card(metadata)?,
        None => return Err(FileError::NoCard),
    };
    let spec = card.spec()?;
    // Every tensor is checked before the member vector is allocated: a card may describe a
    // model of any size, but tensors that match it are data the file really holds.
    let mut views = Vec::with_capacity(spec.tensors().len());
    for t in spec.tensors() {
        let view = file.tensor(&t.name).map_err(|_| FileError::MissingTensor {
            name: t.name.clone(),
        })?;
        if view.dtype() != Dtype::F32 || view.shape() != t.shape.as_slice() {
            return Err(FileError::BadTensor {
                name: t.name.clone(),
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                expected: t.shape.clone(),
            });
        }
        views.push(view);
    }
    let mut params = alloc::vec![0.0f32; spec.len()];
    for (t, view) in spec.tensors().iter().zip(&views) {
        // The shape matched, so the data holds exactly the tensor's values.
        for (v, b) in params[t.range()]
            .iter_mut()
            .zip(view.data().chunks_exact(4))
        {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
    }
    Ok(ModelFile { card, params })
}

/// The card of a file written before the card existed (papa 0.1 wrote `model`,
/// `input_shape`, `classes`, `normalize_mean`, `normalize_std` and the run's settings as
/// separate entries). Its pixel scale was not recorded: images (height > 1) were 8-bit
/// pixels, feature vectors were read as they are.
fn legacy_card(meta: &HashMap<String, String>) -> Result<ModelCard, FileError> {
    fn get<'m>(meta: &'m HashMap<String, String>, key: &'static str) -> Result<&'m str, FileError> {
        meta.get(key)
            .map(String::as_str)
            .ok_or(FileError::Legacy { key })
    }
    fn parse<T: core::str::FromStr>(
        meta: &HashMap<String, String>,
        key: &'static str,
    ) -> Result<T, FileError> {
        get(meta, key)?
            .trim()
            .parse()
            .map_err(|_| FileError::Legacy { key })
    }
    fn list<T: core::str::FromStr>(
        meta: &HashMap<String, String>,
        key: &'static str,
    ) -> Result<Vec<T>, FileError> {
        get(meta, key)?
            .split(',')
            .map(|v| v.trim().parse().map_err(|_| FileError::Legacy { key }))
            .collect()
    }
    let name = get(meta, "model")?;
    let zoo: Zoo = name
        .parse()
        .map_err(|_| FileError::Legacy { key: "model" })?;
    let input: [usize; 3] = list::<usize>(meta, "input_shape")?
        .try_into()
        .map_err(|_| FileError::Legacy { key: "input_shape" })?;
    let classes: usize = parse(meta, "classes")?;
    let spec = ModelSpec::new(&zoo.layers(classes), input, classes)
        .map_err(|e| FileError::Card(CardError::Model(e)))?;
    let normalization = Normalization {
        mean: list(meta, "normalize_mean")?,
        std: list(meta, "normalize_std")?,
    };
    let pixel_scale = if input[1] > 1 { 255.0 } else { 1.0 };
    let mut card = ModelCard::new(name, &spec, pixel_scale, normalization, Vec::new());
    card.provenance = Some(Provenance {
        dataset: get(meta, "data")?.into(),
        val_fraction: parse(meta, "val_fraction")?,
        seed: parse(meta, "seed")?,
        method: get(meta, "method")?.into(),
        final_model_is: get(meta, "final_model_is")?.into(),
        test_accuracy: parse(meta, "test_accuracy")?,
    });
    Ok(card)
}
