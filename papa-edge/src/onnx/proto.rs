//! Small constructors of tract's ONNX protobuf messages, so that the graph code reads as
//! the graph it builds.

use super::ExportError;
use std::string::{String, ToString};
use std::vec::Vec;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
use tract_onnx::pb::type_proto::{self, Tensor};
use tract_onnx::pb::{
    AttributeProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// One dimension of a graph input or output.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Dim {
    /// The batch: any size, named [`super::BATCH_DIM`].
    Batch,
    /// A fixed size.
    Fixed(usize),
}

/// A size as ONNX stores it (i64).
pub(crate) fn dim(n: usize) -> Result<i64, ExportError> {
    i64::try_from(n).map_err(|_| ExportError::TooLarge { size: n })
}

/// An f32 initializer `name` of shape `dims` (little-endian raw data, as exporters write it).
pub(crate) fn tensor(
    name: &str,
    dims: &[usize],
    values: &[f32],
    doc: &str,
) -> Result<TensorProto, ExportError> {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    raw_tensor(name, dims, DataType::Float, raw, doc)
}

/// An int8 initializer.
pub(crate) fn tensor_i8(
    name: &str,
    dims: &[usize],
    values: &[i8],
    doc: &str,
) -> Result<TensorProto, ExportError> {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    raw_tensor(name, dims, DataType::Int8, raw, doc)
}

/// An int32 initializer.
pub(crate) fn tensor_i32(
    name: &str,
    dims: &[usize],
    values: &[i32],
    doc: &str,
) -> Result<TensorProto, ExportError> {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    raw_tensor(name, dims, DataType::Int32, raw, doc)
}

fn raw_tensor(
    name: &str,
    dims: &[usize],
    data_type: DataType,
    raw_data: Vec<u8>,
    doc: &str,
) -> Result<TensorProto, ExportError> {
    Ok(TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| dim(d)).collect::<Result<_, _>>()?,
        data_type: data_type as i32,
        raw_data,
        doc_string: doc.into(),
        ..TensorProto::default()
    })
}

/// A node `name` of type `op_type`, reading `inputs` and writing the value `output`.
pub(crate) fn node(
    op_type: &str,
    name: &str,
    inputs: &[&str],
    output: &str,
    attributes: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: op_type.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: [output.to_string()].into(),
        attribute: attributes,
        ..NodeProto::default()
    }
}

/// An integer attribute.
pub(crate) fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..AttributeProto::default()
    }
}

/// A float attribute.
pub(crate) fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: value,
        ..AttributeProto::default()
    }
}

/// A list-of-integers attribute.
pub(crate) fn ints(name: &str, values: &[usize]) -> Result<AttributeProto, ExportError> {
    Ok(AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.iter().map(|&v| dim(v)).collect::<Result<_, _>>()?,
        ..AttributeProto::default()
    })
}

/// A graph input or output: an f32 tensor of shape `dims`.
pub(crate) fn value_info(
    name: &str,
    dims: &[Dim],
    doc: String,
) -> Result<ValueInfoProto, ExportError> {
    let dim = dims
        .iter()
        .map(|d| {
            Ok(Dimension {
                value: Some(match *d {
                    Dim::Batch => dimension::Value::DimParam(super::BATCH_DIM.into()),
                    Dim::Fixed(n) => dimension::Value::DimValue(dim(n)?),
                }),
                ..Dimension::default()
            })
        })
        .collect::<Result<_, ExportError>>()?;
    Ok(ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..TypeProto::default()
        }),
        doc_string: doc,
    })
}
