//! The names an exported ONNX graph uses, shared by the exporter and the runner (and
//! available without features, for tools that only read them).

/// Name of the graph input.
pub const INPUT: &str = "input";
/// Name of the graph output.
pub const OUTPUT: &str = "logits";
/// Name of the dynamic batch dimension of [`INPUT`] and [`OUTPUT`].
pub const BATCH_DIM: &str = "batch";
/// Metadata key of the model card (JSON, as in the model file).
pub const META_CARD: &str = "papa.model_card";
/// Metadata key of the class names (a JSON array of strings; absent when the data has none).
pub const META_CLASS_NAMES: &str = "papa.class_names";
/// Metadata key of the description of the input.
pub const META_INPUT: &str = "papa.input";
/// Metadata key of an int8 export's description of its quantisation (absent in an f32
/// export).
pub const META_QUANTIZATION: &str = "papa.quantization";
