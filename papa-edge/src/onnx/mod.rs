//! A papa model as an ONNX model (feature `export`).
//!
//! The graph takes `input`, f32 `[batch, C, H, W]` holding the values as the dataset stores
//! them (8-bit pixels 0-255; CSV features as they are, each a channel of a `F x 1 x 1`
//! sample), and gives `logits`, f32 `[batch, classes]`. Inside, the card's pixel scale and
//! per-channel normalisation come first; every BatchNorm that directly follows a conv or
//! linear layer is folded into it (papa-core's [`fold_batchnorm`]); other BatchNorms stay
//! eval-mode `BatchNormalization` nodes. Initializers keep the model card's tensor names
//! (`conv1.weight`, `fc2.bias`), the batch dimension is named [`BATCH_DIM`], and the card,
//! the class names and a description of the input travel as `metadata_props`.
//!
//! The messages are tract's own (`tract_onnx::pb`, re-exported as [`pb`]), encoded with
//! prost, so tract and this exporter read the same schema.
//!
//! [`fold_batchnorm`]: papa_core::repair::fold_batchnorm
//! [`BATCH_DIM`]: crate::names::BATCH_DIM

mod graph;
mod int8;
mod proto;

use crate::names::{BATCH_DIM, INPUT, META_CARD, META_CLASS_NAMES, META_INPUT, OUTPUT};
#[cfg(feature = "calibrate")]
pub use int8::{calibrate, DEFAULT_CALIBRATION_SAMPLES};
pub use int8::{export_int8, fold, quantize, Quantized, QUANTIZATION_NOTE};
use papa_model::card::{CardError, ModelCard};
use papa_model::file::{decode, FileError, ModelFile};
use papa_model::{LengthMismatch, ModelError};
use proto::{value_info, Dim};
use std::format;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;
pub use tract_onnx::pb;

/// Why a model cannot be exported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The bytes are not a usable papa model file (its card and tensors disagree, say).
    #[error("the model file: {0}")]
    File(#[from] FileError),
    /// The model card does not describe a model.
    #[error(transparent)]
    Card(#[from] CardError),
    /// The card's layers cannot be planned.
    #[error("the model card's layers: {0}")]
    Model(ModelError),
    /// The parameters do not fill the card's model.
    #[error("{0}")]
    Params(LengthMismatch),
    /// A parameter is NaN or infinite: the model is broken.
    #[error("tensor `{tensor}` holds {value}: the model is broken (retrain it)")]
    NonFinite {
        /// The tensor holding it.
        tensor: String,
        /// The value.
        value: f32,
    },
    /// A BatchNorm could not be folded into the layer before it.
    #[error("cannot fold {batch_norm} into {layer}: {source}")]
    Fold {
        /// The conv/linear layer.
        layer: String,
        /// The BatchNorm.
        batch_norm: String,
        /// papa-core's reason (a negative running variance, a zero `var + eps`).
        source: papa_core::Error,
    },
    /// An opset outside the range this exporter writes.
    #[error(
        "opset {version} is not supported: choose {} to {}",
        Opset::MIN,
        Opset::MAX
    )]
    Opset {
        /// The opset asked for.
        version: i64,
    },
    /// The int8 export folds every BatchNorm: this one follows no conv/linear layer.
    #[error("{batch_norm} follows no conv or linear layer: the int8 export needs every BatchNorm folded")]
    Unfoldable {
        /// The BatchNorm.
        batch_norm: String,
    },
    /// The model cannot be written as a flash image (a layer the image cannot express, a
    /// size beyond its fields).
    #[error("flash image: {0}")]
    Flash(String),
    /// The calibration does not fit the model.
    #[error("calibration: {0}")]
    Calibration(String),
    /// A tensor could not be quantised.
    #[error("quantising {tensor}: {source}")]
    Quant {
        /// The layer or tensor.
        tensor: String,
        /// The quantiser's reason.
        source: crate::quant::QuantError,
    },
    /// papa's forward failed during calibration.
    #[cfg(feature = "calibrate")]
    #[error("calibration forward: {0}")]
    Forward(#[from] papa_train::model::Error),
    /// A size ONNX cannot hold (beyond i64).
    #[error("a size of {size} does not fit an ONNX dimension")]
    TooLarge {
        /// The size.
        size: usize,
    },
}

/// The ONNX operator set the model declares (the default domain's).
///
/// Every opset from 13 (the first with per-axis quantisation, which the int8 export will
/// need) to 18 (the last tract is tested against) gives the same graph: the ops used
/// (Conv, Gemm, MaxPool, Relu, Flatten, Div, Sub, BatchNormalization in inference form)
/// mean the same in all of them.
///
/// ```
/// use papa_edge::onnx::Opset;
/// assert_eq!(Opset::new(17)?, Opset::DEFAULT);
/// assert!(Opset::new(12).is_err());
/// # Ok::<(), papa_edge::onnx::ExportError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opset(i64);

impl Opset {
    /// The oldest opset written.
    pub const MIN: i64 = 13;
    /// The newest opset written.
    pub const MAX: i64 = 18;
    /// Opset 17 (ONNX 1.12): read by every maintained runtime.
    pub const DEFAULT: Opset = Opset(17);

    /// Opset `version`, if it is one this exporter writes.
    pub fn new(version: i64) -> Result<Self, ExportError> {
        if (Self::MIN..=Self::MAX).contains(&version) {
            Ok(Opset(version))
        } else {
            Err(ExportError::Opset { version })
        }
    }

    /// Its number.
    pub fn version(self) -> i64 {
        self.0
    }

    /// The IR version of the ONNX release that introduced it (a runtime refuses files of
    /// a newer IR than it knows, so the oldest that holds the opset).
    fn ir_version(self) -> i64 {
        if self.0 <= 14 {
            7
        } else {
            8
        }
    }
}

/// The ONNX model of `model` (see the [module documentation](self)).
///
/// Fails when the card does not describe a model, the parameters do not fill it or hold a
/// NaN or infinity, or a BatchNorm cannot be folded.
///
/// ```
/// use papa_edge::onnx::{export, to_bytes, Opset};
/// use papa_model::card::{ModelCard, Normalization};
/// use papa_model::file::ModelFile;
/// use papa_model::{zoo, ModelSpec};
/// let spec = ModelSpec::new(&zoo::cnn_s(10), [1, 28, 28], 10)?;
/// let card = ModelCard::new("cnn-s", &spec, 255.0, Normalization::identity(1), vec![]);
/// let mut params = vec![0.01f32; spec.len()];
/// params[spec.find("bn1.running_var").unwrap().range()].fill(1.0);
/// params[spec.find("bn2.running_var").unwrap().range()].fill(1.0);
/// let onnx = export(&ModelFile { card, params }, Opset::DEFAULT)?;
/// let ops: Vec<&str> = onnx.graph.as_ref().unwrap().node.iter().map(|n| n.op_type.as_str()).collect();
/// // 8-bit pixels are divided by 255 in the graph; both BatchNorms are folded.
/// assert_eq!(ops, ["Div", "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu", "Gemm"]);
/// assert!(!to_bytes(&onnx).is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn export(model: &ModelFile, opset: Opset) -> Result<pb::ModelProto, ExportError> {
    let card = &model.card;
    checked(model)?;
    let graph = graph::build(card, &model.params)?;
    let doc = format!("{}: exported by papa-edge from its model file", card.name);
    model_proto(card, graph, opset, doc, Vec::new())
}

/// The model around `graph`: its input and output, opset, producer and metadata (the card,
/// the input description, the class names, then `extra`).
pub(crate) fn model_proto(
    card: &ModelCard,
    graph: graph::Graph,
    opset: Opset,
    doc: String,
    extra: Vec<(&str, String)>,
) -> Result<pb::ModelProto, ExportError> {
    let spec = card.spec()?;
    let graph::Graph {
        nodes,
        initializers,
    } = graph;
    let [channels, height, width] = spec.input_shape();
    let input = value_info(
        INPUT,
        &[
            Dim::Batch,
            Dim::Fixed(channels),
            Dim::Fixed(height),
            Dim::Fixed(width),
        ],
        input_description(card),
    )?;
    let output = value_info(
        OUTPUT,
        &[Dim::Batch, Dim::Fixed(spec.classes())],
        format!("one logit per class, {} classes", spec.classes()),
    )?;
    let mut metadata = vec![
        entry(META_CARD, card.to_json()?),
        entry(META_INPUT, input_description(card)),
    ];
    if !card.classes.names.is_empty() {
        let names = serde_json::to_string(&card.classes.names).map_err(CardError::Json)?;
        metadata.push(entry(META_CLASS_NAMES, names));
    }
    metadata.extend(extra.into_iter().map(|(k, v)| entry(k, v)));
    Ok(pb::ModelProto {
        ir_version: opset.ir_version(),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: opset.version(),
        }],
        producer_name: "papa".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: doc,
        graph: Some(pb::GraphProto {
            name: card.name.clone(),
            node: nodes,
            initializer: initializers,
            input: vec![input],
            output: vec![output],
            ..pb::GraphProto::default()
        }),
        metadata_props: metadata,
        ..pb::ModelProto::default()
    })
}

/// The model's spec, once its parameters are checked to fill it and to be finite.
pub(crate) fn checked(model: &ModelFile) -> Result<papa_model::ModelSpec, ExportError> {
    let spec = model.card.spec()?;
    LengthMismatch::check("params", spec.len(), model.params.len()).map_err(ExportError::Params)?;
    if let Some(i) = model.params.iter().position(|v| !v.is_finite()) {
        // The spec's tensors tile the vector, so one holds position i.
        let tensor = spec.tensors().iter().find(|t| t.range().contains(&i));
        return Err(ExportError::NonFinite {
            tensor: tensor.map_or_else(String::new, |t| t.name.clone()),
            value: model.params[i],
        });
    }
    Ok(spec)
}

/// [`export`] of a model file's bytes (as `papa train` writes them), encoded.
pub fn convert(model_file: &[u8], opset: Opset) -> Result<Vec<u8>, ExportError> {
    Ok(to_bytes(&export(&decode(model_file)?, opset)?))
}

/// The bytes of an ONNX file holding `model`.
pub fn to_bytes(model: &pb::ModelProto) -> Vec<u8> {
    prost::Message::encode_to_vec(model)
}

/// What [`INPUT`] holds, for people and tools reading the file.
fn input_description(card: &ModelCard) -> String {
    let i = &card.input;
    let stored = if i.pixel_scale == 1.0 {
        "values as the dataset stores them (features as they are)".to_string()
    } else if i.pixel_scale == 255.0 {
        "values as the dataset stores them (8-bit pixels, 0 to 255)".to_string()
    } else {
        format!(
            "values as the dataset stores them (read by the model divided by {})",
            i.pixel_scale
        )
    };
    format!(
        "f32 [batch, {}, {}, {}] ({}), {stored}; the graph divides by {} and normalises each channel c as (x - mean[c]) / std[c] with the model card's mean and std",
        i.channels, i.height, i.width, i.layout, i.pixel_scale
    )
}

fn entry(key: &str, value: String) -> pb::StringStringEntryProto {
    pb::StringStringEntryProto {
        key: key.into(),
        value,
    }
}
