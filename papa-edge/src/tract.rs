//! Classify with an ONNX model in tract (feature `tract`): the inference API to embed.
//!
//! A [`Model`] is an ONNX classifier with one f32 input `[batch, ...]` (the sample's
//! dimensions fixed, the batch any size) and one output `[batch, classes]`, as
//! [`papa_edge::onnx`](crate) writes them; it is checked and optimised once, on load.
//!
//! ```
//! use papa_edge::{onnx, tract::Model};
//! use papa_model::card::{ModelCard, Normalization};
//! use papa_model::file::ModelFile;
//! use papa_model::{zoo, ModelSpec};
//!
//! // A tiny exported model: 2 x 2 images of 8-bit pixels, 3 classes.
//! let spec = ModelSpec::new(&zoo::mlp(&[4], 3), [1, 2, 2], 3)?;
//! let names = vec!["cat".into(), "dog".into(), "fox".into()];
//! let card = ModelCard::new("mlp:4", &spec, 255.0, Normalization::identity(1), names);
//! let params = (0..spec.len()).map(|i| (i % 5) as f32 * 0.2 - 0.4).collect();
//! let bytes = onnx::to_bytes(&onnx::export(&ModelFile { card, params }, onnx::Opset::DEFAULT)?);
//!
//! let model = Model::from_bytes(&bytes)?; // or Model::load("model.onnx")
//! assert_eq!((model.sample_shape(), model.classes()), (&[1, 2, 2][..], 3));
//! let p = model.predict(&[0.0, 255.0, 128.0, 3.0])?; // pixels as the data stores them
//! println!("{} ({:?})", model.class_names()[p.class], p.logits);
//! let two = model.predict_batch(&[0.0; 8])?;
//! assert_eq!(two.len(), 2);
//! assert!(model.predict(&[0.0; 3]).is_err()); // a typed error, not a panic
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::names::META_CLASS_NAMES;
use prost::Message;
use std::boxed::Box;
use std::ops::RangeInclusive;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::string::String;
use std::string::ToString;
use std::vec::Vec;
use std::{format, vec};
use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as DimValue;
use tract_onnx::pb::type_proto::Value as TypeValue;
use tract_onnx::prelude::{
    tvec, Framework, InferenceModelExt, IntoRunnable, IntoTValue, Tensor, TractResult,
    TypedRunnableModel,
};

/// Why a model cannot be loaded or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The bytes are not an ONNX model (truncated or corrupt protobuf).
    #[error("not an ONNX model (truncated or corrupt): {0}")]
    Decode(#[from] prost::DecodeError),
    /// The model declares no operator set of the default domain, or one tract does not run.
    #[error("{}: tract runs opsets {} to {}", match found { Some(v) => format!("the model uses ONNX opset {v}"), None => "the model declares no ONNX opset".into() }, SUPPORTED_OPSETS.start(), SUPPORTED_OPSETS.end())]
    Opset {
        /// The default domain's opset, if declared.
        found: Option<i64>,
    },
    /// The model holds no graph.
    #[error("the ONNX model holds no graph")]
    NoGraph,
    /// The graph is not a classifier of one f32 input and one `[batch, classes]` output.
    #[error("the graph's {what}: {problem}")]
    Signature {
        /// `input` or `output`.
        what: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// tract refused the model or a run.
    #[error("tract, {stage}: {source}")]
    Tract {
        /// What it was doing: `reading the graph`, `optimising`, `running`.
        stage: &'static str,
        /// Its error, with the chain of causes.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Input of the wrong size.
    #[error("the input holds {found} values, the model takes {what} of {sample} values each")]
    InputSize {
        /// `one sample` or `whole samples`.
        what: &'static str,
        /// Values per sample.
        sample: usize,
        /// Values given.
        found: usize,
    },
    /// The output is not `classes` logits per sample.
    #[error("the model gave {found} values for {samples} samples of {classes} classes")]
    OutputSize {
        /// Samples run.
        samples: usize,
        /// Classes per sample.
        classes: usize,
        /// Values given back.
        found: usize,
    },
}

/// One sample's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// The predicted class: the index of the largest logit (the first, on a tie).
    pub class: usize,
    /// One logit per class.
    pub logits: Vec<f32>,
}

/// An ONNX classifier, optimised for tract, with its input shape, classes and metadata.
#[derive(Debug)]
pub struct Model {
    plan: std::sync::Arc<TypedRunnableModel>,
    sample_shape: Vec<usize>,
    classes: usize,
    class_names: Vec<String>,
    metadata: Vec<(String, String)>,
}

impl Model {
    /// Loads the ONNX file at `path` (see [`Model::from_bytes`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.into(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// Reads an ONNX model from its bytes, checks that it is a classifier tract runs (an
    /// opset in [`SUPPORTED_OPSETS`], one f32 input `[batch, d1, ...]` of fixed sample
    /// dimensions, one output `[batch, classes]`) and optimises it for any batch size.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let proto = pb::ModelProto::decode(bytes)?;
        let opset = proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version);
        if !opset.is_some_and(|v| SUPPORTED_OPSETS.contains(&v)) {
            return Err(Error::Opset { found: opset });
        }
        let graph = proto.graph.as_ref().ok_or(Error::NoGraph)?;
        let (sample_shape, classes) = signature(graph)?;
        let metadata: Vec<(String, String)> = proto
            .metadata_props
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        let class_names = metadata
            .iter()
            .find(|(k, _)| k == META_CLASS_NAMES)
            .and_then(|(_, v)| serde_json::from_str::<Vec<String>>(v).ok())
            .filter(|names| names.len() == classes)
            .unwrap_or_else(|| (0..classes).map(|c| format!("{c}")).collect());
        let model = guarded("reading the graph", || {
            tract_onnx::onnx().model_for_proto_model(&proto)
        })?;
        let optimised = guarded("optimising", || model.into_optimized())?;
        let plan = guarded("planning", || optimised.into_runnable())?;
        Ok(Model {
            plan,
            sample_shape,
            classes,
            class_names,
            metadata,
        })
    }

    /// The dimensions of one sample (the input's, less the batch).
    pub fn sample_shape(&self) -> &[usize] {
        &self.sample_shape
    }

    /// Values per sample.
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// Logits per sample.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The class names from the model's metadata (`papa.class_names`), else `"0"`, `"1"`,
    /// ...: one per class.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// The metadata entry `key` (e.g. `papa.model_card`, `papa.input`), if present.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The prediction for one sample of [`Model::sample_len`] values.
    pub fn predict(&self, sample: &[f32]) -> Result<Prediction, Error> {
        if sample.len() != self.sample_len() {
            return Err(Error::InputSize {
                what: "one sample",
                sample: self.sample_len(),
                found: sample.len(),
            });
        }
        let mut all = self.predict_batch(sample)?;
        // One sample in, one prediction out (checked by `logits`).
        Ok(all.swap_remove(0))
    }

    /// The predictions for whole samples laid end to end (none for an empty slice).
    pub fn predict_batch(&self, samples: &[f32]) -> Result<Vec<Prediction>, Error> {
        Ok(self
            .logits(samples)?
            .chunks_exact(self.classes)
            .map(|logits| Prediction {
                class: argmax(logits),
                logits: logits.to_vec(),
            })
            .collect())
    }

    /// The logits of whole samples laid end to end, `samples x classes`, in one run.
    pub fn logits(&self, samples: &[f32]) -> Result<Vec<f32>, Error> {
        let sample = self.sample_len();
        let n = samples.len().checked_div(sample).unwrap_or(0);
        if n * sample != samples.len() || sample == 0 {
            return Err(Error::InputSize {
                what: "whole samples",
                sample,
                found: samples.len(),
            });
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let shape: Vec<usize> = [n]
            .into_iter()
            .chain(self.sample_shape.iter().copied())
            .collect();
        let outputs = guarded("running", || {
            let input = Tensor::from_shape(&shape, samples)?;
            self.plan.run(tvec![input.into_tvalue()])
        })?;
        let output = outputs.first().ok_or_else(|| Error::Tract {
            stage: "running",
            source: "the model gave no output".into(),
        })?;
        let logits: Vec<f32> = guarded("reading the output", || {
            Ok(output
                .to_plain_array_view::<f32>()?
                .iter()
                .copied()
                .collect())
        })?;
        if logits.len() != n * self.classes {
            return Err(Error::OutputSize {
                samples: n,
                classes: self.classes,
                found: logits.len(),
            });
        }
        Ok(logits)
    }
}

/// `f()`, tract's error or panic turned into an [`Error::Tract`] naming `stage`.
///
/// tract checks a graph as it builds it but some ops index their inputs or attributes
/// unchecked (a Flatten of a rank-0 value, an output naming no value): a corrupt file must
/// not abort the program that loads it, so a panic is caught here. (The panic hook still
/// prints its message on stderr.)
fn guarded<T>(stage: &'static str, f: impl FnOnce() -> TractResult<T>) -> Result<T, Error> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(|e| Error::Tract {
            stage,
            source: e.into(),
        }),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Error::Tract {
                stage,
                source: format!("tract panicked on this model: {message}").into(),
            })
        }
    }
}

/// Index of the largest value, the first on a tie (NaN never wins).
fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best
}

/// The sample dimensions and classes of a classifier graph: one f32 input `[batch, ...]`
/// (initializers listed as inputs, as older exporters do, are not inputs) and one output
/// `[batch, classes]`.
fn signature(graph: &pb::GraphProto) -> Result<(Vec<usize>, usize), Error> {
    let initialised = |name: &str| graph.initializer.iter().any(|t| t.name == name);
    let inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initialised(&i.name))
        .collect();
    let [input] = inputs[..] else {
        return Err(signature_error(
            "input",
            format!("{} inputs, a classifier has one", inputs.len()),
        ));
    };
    let [output] = &graph.output[..] else {
        return Err(signature_error(
            "output",
            format!("{} outputs, a classifier has one", graph.output.len()),
        ));
    };
    let input_dims = dims("input", input)?;
    let sample = input_dims
        .get(1..)
        .filter(|d| !d.is_empty())
        .and_then(|d| d.iter().copied().collect::<Option<Vec<usize>>>())
        .filter(|d| d.iter().all(|&n| n > 0))
        .ok_or_else(|| signature_error("input", format!("shape {input_dims:?}: expected [batch, ...] with every sample dimension fixed and positive")))?;
    // tract indexes its value table by the output's name: one produced by nothing panics.
    let produced = graph.node.iter().any(|n| n.output.contains(&output.name))
        || graph.input.iter().any(|i| i.name == output.name)
        || initialised(&output.name);
    if !produced {
        return Err(signature_error(
            "output",
            format!("`{}` is produced by no node", output.name),
        ));
    }
    let output_dims = dims("output", output)?;
    let classes = match output_dims[..] {
        [_, Some(classes)] if classes > 0 => classes,
        _ => {
            return Err(signature_error(
                "output",
                format!("shape {output_dims:?}: expected [batch, classes]"),
            ))
        }
    };
    Ok((sample, classes))
}

fn signature_error(what: &'static str, problem: String) -> Error {
    Error::Signature { what, problem }
}

/// The dimensions of an f32 tensor value (`None` for a named or unknown one).
fn dims(what: &'static str, value: &pb::ValueInfoProto) -> Result<Vec<Option<usize>>, Error> {
    let tensor = match value.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TypeValue::TensorType(t)) => t,
        _ => {
            return Err(signature_error(
                what,
                format!("`{}` is not a tensor", value.name),
            ))
        }
    };
    if tensor.elem_type != pb::tensor_proto::DataType::Float as i32 {
        return Err(signature_error(
            what,
            format!(
                "`{}` is not f32 (ONNX type {})",
                value.name, tensor.elem_type
            ),
        ));
    }
    let shape = tensor
        .shape
        .as_ref()
        .ok_or_else(|| signature_error(what, format!("`{}` has no shape", value.name)))?;
    Ok(shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(DimValue::DimValue(n)) => usize::try_from(n).ok(),
            _ => None,
        })
        .collect())
}

/// The opsets [`Model::from_bytes`] accepts: those tract is tested against (ONNX 1.4 to
/// 1.13).
pub const SUPPORTED_OPSETS: RangeInclusive<i64> = 9..=18;
