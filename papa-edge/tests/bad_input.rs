//! Bad input gives a typed error naming what is wrong, never a panic: truncated, corrupt
//! and wrong-opset ONNX files, graphs that are not classifiers, model files whose card and
//! tensors disagree, broken parameters, inputs of the wrong size.

use papa_edge::onnx::{convert, export, pb, to_bytes, ExportError, Opset};
use papa_edge::tract::{Error, Model};
use papa_model::card::{ModelCard, Normalization, CARD_KEY};
use papa_model::file::{encode, FileError, ModelFile};
use papa_model::{zoo, ModelSpec};
use prost::Message;
use std::collections::HashMap;

/// A tiny exported model: 2 x 2 images, 3 classes.
fn tiny() -> (ModelFile, Vec<u8>) {
    let spec = ModelSpec::new(&zoo::mlp(&[4], 3), [1, 2, 2], 3).unwrap();
    let card = ModelCard::new("mlp:4", &spec, 255.0, Normalization::identity(1), vec![]);
    let params = (0..spec.len()).map(|i| (i % 5) as f32 * 0.1).collect();
    let file = ModelFile { card, params };
    let bytes = to_bytes(&export(&file, Opset::DEFAULT).unwrap());
    (file, bytes)
}

fn edited(bytes: &[u8], edit: impl FnOnce(&mut pb::ModelProto)) -> Vec<u8> {
    let mut proto = pb::ModelProto::decode(bytes).unwrap();
    edit(&mut proto);
    to_bytes(&proto)
}

#[test]
fn a_truncated_file_is_not_an_onnx_model() {
    let (_, bytes) = tiny();
    for len in [bytes.len() / 2, bytes.len() - 1, 3] {
        let e = Model::from_bytes(&bytes[..len]).unwrap_err();
        assert!(matches!(e, Error::Decode(_)), "{len}: {e}");
        assert!(e.to_string().contains("truncated or corrupt"), "{e}");
    }
}

#[test]
fn corrupt_bytes_are_refused_or_run_but_never_panic() {
    // tract's own panics, which the runner catches, would flood the output: not printed.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info
            .location()
            .is_some_and(|l| l.file().contains("/tract-"))
        {
            default(info);
        }
    }));
    let (_, bytes) = tiny();
    let mut refused = 0;
    for pos in 0..bytes.len() {
        for value in [0x00, 0xff, bytes[pos] ^ 0x10] {
            let mut bad = bytes.clone();
            bad[pos] = value;
            match Model::from_bytes(&bad) {
                Err(e) => {
                    refused += 1;
                    assert!(!e.to_string().is_empty());
                }
                // A flipped weight byte is still a model: it must run.
                Ok(model) => drop(model.predict(&[0.0; 4]).map(drop)),
            }
        }
    }
    assert!(refused > 0);
    let e = Model::from_bytes(b"not an onnx file at all").unwrap_err();
    assert!(matches!(e, Error::Decode(_)), "{e}");
}

#[test]
fn an_opset_tract_does_not_run_is_named() {
    let (file, bytes) = tiny();
    let old = edited(&bytes, |p| p.opset_import[0].version = 7);
    let e = Model::from_bytes(&old).unwrap_err();
    assert!(matches!(e, Error::Opset { found: Some(7) }), "{e}");
    assert!(e.to_string().contains("opset 7"), "{e}");
    let none = edited(&bytes, |p| p.opset_import.clear());
    let e = Model::from_bytes(&none).unwrap_err();
    assert!(matches!(e, Error::Opset { found: None }), "{e}");
    // The exporter writes 13 to 18 only.
    let e = Opset::new(19).unwrap_err();
    assert!(matches!(e, ExportError::Opset { version: 19 }), "{e}");
    assert!(export(&file, Opset::new(13).unwrap()).is_ok());
}

#[test]
fn a_graph_that_is_not_a_classifier_is_named() {
    let (_, bytes) = tiny();
    let no_graph = edited(&bytes, |p| p.graph = None);
    assert!(matches!(
        Model::from_bytes(&no_graph).unwrap_err(),
        Error::NoGraph
    ));
    let two_outputs = edited(&bytes, |p| {
        let g = p.graph.as_mut().unwrap();
        let extra = g.output[0].clone();
        g.output.push(extra);
    });
    let e = Model::from_bytes(&two_outputs).unwrap_err();
    assert!(matches!(e, Error::Signature { what: "output", .. }), "{e}");
    let unknown_width = edited(&bytes, |p| {
        let g = p.graph.as_mut().unwrap();
        let Some(pb::type_proto::Value::TensorType(t)) =
            g.input[0].r#type.as_mut().unwrap().value.as_mut()
        else {
            unreachable!()
        };
        t.shape.as_mut().unwrap().dim[3].value = None;
    });
    let e = Model::from_bytes(&unknown_width).unwrap_err();
    assert!(matches!(e, Error::Signature { what: "input", .. }), "{e}");
    assert!(
        e.to_string().contains("every sample dimension fixed"),
        "{e}"
    );
    // A node tract cannot translate: its error, with the stage.
    let unknown_op = edited(&bytes, |p| {
        p.graph.as_mut().unwrap().node[0].op_type = "NoSuchOp".into();
    });
    let e = Model::from_bytes(&unknown_op).unwrap_err();
    assert!(matches!(e, Error::Tract { .. }), "{e}");
}

#[test]
fn a_missing_file_is_named() {
    let e = Model::load("/nonexistent/model.onnx").unwrap_err();
    assert!(matches!(e, Error::Read { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/model.onnx"), "{e}");
}

#[test]
fn an_input_of_the_wrong_size_is_an_error() {
    let (_, bytes) = tiny();
    let model = Model::from_bytes(&bytes).unwrap();
    let e = model.predict(&[0.0; 5]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InputSize {
                sample: 4,
                found: 5,
                ..
            }
        ),
        "{e}"
    );
    assert!(model.predict(&[]).is_err());
    let e = model.predict_batch(&[0.0; 7]).unwrap_err();
    assert!(matches!(e, Error::InputSize { found: 7, .. }), "{e}");
    assert_eq!(model.predict_batch(&[]).unwrap(), []);
    assert_eq!(model.predict_batch(&[0.0; 12]).unwrap().len(), 3);
}

#[test]
fn a_model_file_whose_card_and_tensors_disagree_is_refused() {
    let (small, _) = tiny();
    // The tensors of mlp:4 under the card of mlp:8.
    let wide = ModelSpec::new(&zoo::mlp(&[8], 3), [1, 2, 2], 3).unwrap();
    let card = ModelCard::new("mlp:8", &wide, 255.0, Normalization::identity(1), vec![]);
    let good = encode(&small.card, &small.params).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&good).unwrap();
    let views = tensors.tensors();
    let meta = HashMap::from([(CARD_KEY.to_string(), card.to_json().unwrap())]);
    let lying = safetensors::serialize(views, &Some(meta)).unwrap();
    let e = convert(&lying, Opset::DEFAULT).unwrap_err();
    assert!(
        matches!(e, ExportError::File(FileError::BadTensor { ref name, .. }) if name == "fc1.weight"),
        "{e}"
    );
    assert!(e.to_string().contains("fc1.weight"), "{e}");
    // In memory: parameters that do not fill the card's model.
    let e = export(
        &ModelFile {
            card,
            params: small.params,
        },
        Opset::DEFAULT,
    )
    .unwrap_err();
    assert!(matches!(e, ExportError::Params(_)), "{e}");
    // Not a model file at all.
    let e = convert(b"junk", Opset::DEFAULT).unwrap_err();
    assert!(
        matches!(e, ExportError::File(FileError::Safetensors(_))),
        "{e}"
    );
}

#[test]
fn broken_parameters_are_named() {
    let (mut file, _) = tiny();
    file.params[17] = f32::NAN;
    let e = export(&file, Opset::DEFAULT).unwrap_err();
    assert!(
        matches!(e, ExportError::NonFinite { ref tensor, .. } if tensor == "fc1.bias"),
        "{e}"
    );
    // A BatchNorm whose running variance is negative cannot be folded.
    let spec = ModelSpec::new(&zoo::cnn_s(10), [1, 28, 28], 10).unwrap();
    let card = ModelCard::new("cnn-s", &spec, 255.0, Normalization::identity(1), vec![]);
    let mut params = vec![0.1; spec.len()];
    params[spec.find("bn2.running_var").unwrap().range()][3] = -1.0;
    let e = export(&ModelFile { card, params }, Opset::DEFAULT).unwrap_err();
    assert!(
        matches!(e, ExportError::Fold { ref layer, ref batch_norm, .. } if layer == "conv2" && batch_norm == "bn2"),
        "{e}"
    );
    assert!(e.to_string().contains("running_var"), "{e}");
}
