//! Fuzz target of the model-file decoder (`papa_model::file::decode`), seeded with valid
//! files: an MLP, a small CNN with every kind of tensor, and a file from before the model
//! card. Budget and reproduction: docs/FUZZING.md.

use papa_fuzz::{fuzz, Budget};
use papa_model::card::{CardError, ModelCard, Normalization};
use papa_model::file::{decode, encode, FileError};
use papa_model::layer::Layer;
use papa_model::{zoo, ModelSpec};
use serde_json::json;
use std::error::Error;

/// Distinct, exactly representable values, so a mix-up of tensors changes the result.
fn params(spec: &ModelSpec) -> Vec<f32> {
    (0..spec.len()).map(|i| i as f32 * 0.25 - 3.0).collect()
}

fn card_file(name: &str, spec: &ModelSpec, class_names: Vec<String>) -> Vec<u8> {
    let channels = spec.input_shape()[0];
    let card = ModelCard::new(
        name,
        spec,
        255.0,
        Normalization::identity(channels),
        class_names,
    );
    encode(&card, &params(spec)).unwrap()
}

/// A file as papa 0.1 wrote it: the tensors and separate metadata entries, no card. The
/// header is built here rather than by `safetensors::serialize`, which writes the entries
/// of a `HashMap` in a different order in each process (the seed must not change).
fn legacy_file() -> Vec<u8> {
    legacy_file_with(&[])
}

/// [`legacy_file`] with some metadata entries replaced (the tensors stay those of `mlp:4`).
fn legacy_file_with(changes: &[(&str, &str)]) -> Vec<u8> {
    let spec = ModelSpec::new(&zoo::mlp(&[4], 3), [1, 2, 2], 3).unwrap();
    let values = params(&spec);
    let mut meta = json!({
            "layout": "[]",
            "model": "mlp:4",
            "data": "fashion-mnist",
            "input_shape": "1,2,2",
            "classes": "3",
            "normalize_mean": "0.5",
            "normalize_std": "0.25",
            "val_fraction": "0.1",
            "seed": "4",
            "method": "papa",
            "final_model_is": "uniform soup",
            "test_accuracy": "81.25",
    });
    for (key, value) in changes {
        meta[*key] = json!(value);
    }
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), meta);
    let mut data = Vec::new();
    for t in spec.tensors() {
        let start = data.len();
        data.extend(values[t.range()].iter().flat_map(|v| v.to_le_bytes()));
        let entry = json!({"dtype": "F32", "shape": t.shape, "data_offsets": [start, data.len()]});
        header.insert(t.name.clone(), entry);
    }
    frame(serde_json::to_vec(&header).unwrap(), &data)
}

/// A safetensors file: the header's length, the header, the data.
fn frame(header: Vec<u8>, data: &[u8]) -> Vec<u8> {
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header);
    file.extend_from_slice(data);
    file
}

/// The header and the data of a valid file.
fn split(file: &[u8]) -> (&[u8], &[u8]) {
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    file[8..].split_at(n)
}

/// The property every accepted file must have: the crate writes the same model again,
/// value for value.
fn check_accepted(bytes: &[u8]) -> Result<(), FileError> {
    let file = decode(bytes)?;
    let spec = file.card.spec().expect("an accepted card makes a model");
    assert_eq!(file.params.len(), spec.len());
    let again = decode(&encode(&file.card, &file.params).expect("re-encodes"))
        .expect("the re-encoded file decodes");
    assert_eq!(again.card, file.card);
    assert_eq!(bits(&again.params), bits(&file.params));
    Ok(())
}

fn seeds() -> Vec<Vec<u8>> {
    let mlp = ModelSpec::new(&zoo::mlp(&[8], 3), [1, 2, 2], 3).unwrap();
    let cnn = ModelSpec::new(
        &[
            Layer::conv3x3(2),
            Layer::BatchNorm,
            Layer::Relu,
            Layer::Flatten,
            Layer::Linear { out_features: 2 },
        ],
        [1, 3, 3],
        2,
    )
    .unwrap();
    let names = vec!["cat".to_string(), "dog".to_string()];
    let seeds = vec![
        card_file("mlp:8", &mlp, Vec::new()),
        card_file("tiny-cnn", &cnn, names),
        legacy_file(),
    ];
    for seed in &seeds {
        check_accepted(seed).unwrap();
    }
    seeds
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// The whole file mutated: mostly exercises the safetensors framing.
#[test]
fn fuzz_model_decode() -> Result<(), Box<dyn Error>> {
    let report = fuzz(
        "model-decode",
        &seeds(),
        &Budget::from_env()?,
        check_accepted,
    )?;
    println!("{report}");
    Ok(())
}

/// Only the header (the card or the older metadata, and the tensor table) mutated, its
/// length kept right, so that the edits reach the card rather than stop at the framing.
/// The input's first byte picks which seed's tensor data follows the header.
#[test]
fn fuzz_model_header() -> Result<(), Box<dyn Error>> {
    let files = seeds();
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .enumerate()
        .map(|(i, f)| [&[i as u8][..], split(f).0].concat())
        .collect();
    let report = fuzz("model-header", &seeds, &Budget::from_env()?, |input| {
        let (&pick, header) = input.split_first().unwrap_or((&0, &[]));
        let data = split(&files[usize::from(pick) % files.len()]).1;
        check_accepted(&frame(header.to_vec(), data))
    })?;
    println!("{report}");
    Ok(())
}

// Regressions: the defects the targets above found (docs/FUZZING.md), one test each.

/// A card may describe a model of any size; the decoder allocated the member vector it
/// describes before checking that the file holds its tensors, and a terabyte allocation
/// aborts the process (found by `model-header`: `input_shape` = `1,2,42949672962`).
#[test]
fn a_card_bigger_than_its_file_is_refused_before_allocating() {
    for (key, value) in [
        ("input_shape", "1,2,42949672962"),
        ("model", "mlp:1000000000000"),
    ] {
        let err = decode(&legacy_file_with(&[(key, value)])).unwrap_err();
        assert!(matches!(err, FileError::BadTensor { .. }), "{err}");
    }
}

/// `1e39` overflows f32 and the older metadata may say `inf`: the decoder accepted an
/// infinite number, which the card's JSON writes as `null`, so the model was saved as a
/// file that could not be loaded (found by `model-header`: `test_accuracy` = `81.21e3005`).
#[test]
fn a_card_with_a_number_json_cannot_hold_is_refused() {
    let err = decode(&legacy_file_with(&[("test_accuracy", "81.21e3005")])).unwrap_err();
    assert!(
        matches!(
            err,
            FileError::Card(CardError::NotFinite {
                field: "provenance.test_accuracy"
            })
        ),
        "{err}"
    );
    let spec = ModelSpec::new(&zoo::mlp(&[4], 3), [1, 2, 2], 3).unwrap();
    let mut card = ModelCard::new("mlp:4", &spec, 255.0, Normalization::identity(1), vec![]);
    card.normalization.std[0] = f32::INFINITY;
    let err = encode(&card, &params(&spec)).unwrap_err();
    assert!(err.to_string().contains("normalization.std"), "{err}");
    assert!(decode(&card_file("mlp:4", &spec, Vec::new())).is_ok());
}
