//! Checks of the checkpoint files: bit-exact round trips, errors that name the file and the
//! tensor, and atomic writes that never leave a temp file or a half-written target.

use papa_core::rng::Rng;
use papa_model::card::{ModelCard, Normalization, CARD_KEY};
use papa_model::file::FileError;
use papa_model::layer::Layer;
use papa_model::zoo;
use papa_train::checkpoint::{
    load_model, load_state, save_model, save_state, write_atomic, CheckpointError,
};
use papa_train::model::{Input, ModelSpec, Network};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// A small model with every kind of tensor: conv weight/bias, BatchNorm (counter included),
/// linear weight/bias.
fn spec() -> ModelSpec {
    let layers = [
        Layer::conv3x3(2),
        Layer::BatchNorm,
        Layer::Relu,
        Layer::Flatten,
        Layer::Linear { out_features: 3 },
    ];
    ModelSpec::new(&layers, [1, 4, 4], 3).unwrap()
}

fn card(spec: &ModelSpec) -> ModelCard {
    let normalization = Normalization {
        mean: vec![0.2860],
        std: vec![0.3530],
    };
    let names = ["a", "b", "c"].map(String::from).to_vec();
    ModelCard::new("tiny-cnn", spec, 255.0, normalization, names)
}

/// Arbitrary bit patterns (NaN excluded, since NaN != NaN would hide nothing but complicate
/// the comparison), with -0.0, subnormals and extremes planted at the start.
fn awkward_values(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let planted = [
        -0.0,
        0.0,
        f32::from_bits(1),
        -f32::from_bits(0x007f_ffff),
        f32::MIN_POSITIVE / 3.0,
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    (0..len)
        .map(|i| match planted.get(i) {
            Some(&v) => v,
            None => loop {
                let v = f32::from_bits(rng.next_u32());
                if !v.is_nan() {
                    break v;
                }
            },
        })
        .collect()
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// Names `path` in the error's message.
fn assert_names(err: &CheckpointError, path: &Path) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name the file: {msg}"
    );
}

/// Loads `path`, expecting a model-file error whose message names the file and `what`.
fn load_error(path: &Path, what: &str) -> FileError {
    let err = load_model(path).unwrap_err();
    assert_names(&err, path);
    assert!(err.to_string().contains(what), "{err}");
    match err {
        CheckpointError::Model { source, .. } => source,
        other => panic!("not a model-file error: {other}"),
    }
}

/// The files in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn model_round_trip_is_bit_exact_and_byte_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let spec = spec();
    let params = awkward_values(spec.len(), 7);
    save_model(&path, &card(&spec), &params).unwrap();
    let loaded = load_model(&path).unwrap();
    assert_eq!(bits(&loaded.params), bits(&params));
    assert_eq!(loaded.card, card(&spec));
    assert_eq!(listing(dir.path()), ["model.safetensors"]);
    // The same model gives the same bytes: one metadata entry, tensors in name order.
    let again = dir.path().join("again.safetensors");
    save_model(&again, &card(&spec), &params).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&again).unwrap()
    );
}

#[test]
fn the_card_alone_rebuilds_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let trained = spec();
    let mut params = vec![0.0; trained.len()];
    trained.init_member(&mut Rng::new(3), &mut params).unwrap();
    save_model(&path, &card(&trained), &params).unwrap();
    // Only the file: the model, its vector and its logits come back.
    let loaded = load_model(&path).unwrap();
    let rebuilt = loaded.card.spec().unwrap();
    assert_eq!(rebuilt, trained);
    let input: Vec<f32> = (0..5 * 16).map(|i| (i % 7) as f32 / 7.0).collect();
    let logits = |spec: &ModelSpec, params: &[f32]| {
        let mut net = Network::new(spec, 1, 5).unwrap();
        bits(net.evaluate(params, Input::Shared(&input)).unwrap())
    };
    assert_eq!(logits(&rebuilt, &loaded.params), logits(&trained, &params));
}

#[test]
fn model_file_is_a_plain_state_dict_with_one_metadata_entry() {
    // Any safetensors reader sees the state_dict names and shapes, counters as scalars.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let spec = spec();
    let params: Vec<f32> = (0..spec.len()).map(|i| i as f32).collect();
    save_model(&path, &card(&spec), &params).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(file.len(), spec.tensors().len());
    for t in spec.tensors() {
        let view = file.tensor(&t.name).unwrap();
        assert_eq!(view.dtype(), Dtype::F32);
        assert_eq!(view.shape(), t.shape.as_slice(), "{}", t.name);
        let first = f32::from_le_bytes(view.data()[..4].try_into().unwrap());
        assert_eq!(first, t.offset as f32, "{}", t.name);
    }
    assert!(spec.tensors().iter().any(|t| t.shape.is_empty()));
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    assert_eq!(meta.keys().collect::<Vec<_>>(), [CARD_KEY]);
    let json: serde_json::Value = serde_json::from_str(&meta[CARD_KEY]).unwrap();
    assert_eq!(json["classes"]["names"][2], "c");
    assert_eq!(json["input"]["pixel_scale"], 255.0);
    assert_eq!(json["layers"][0]["type"], "conv2d");
}

#[test]
fn state_round_trip_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.safetensors");
    let population = awkward_values(3 * 5, 1);
    let velocity = awkward_values(3 * 5, 2);
    let counter = [42.0f32];
    let state = r#"{"epoch":3,"step":120,"rng":[1,2,3]}"#;
    save_state(
        &path,
        &[
            ("population", &population, &[3, 5]),
            ("velocity", &velocity, &[3, 5]),
            ("step", &counter, &[]),
        ],
        state,
    )
    .unwrap();
    let loaded = load_state(&path).unwrap();
    assert_eq!(loaded.state_json, state);
    assert_eq!(loaded.buffers.len(), 3);
    let (shape, values) = &loaded.buffers["population"];
    assert_eq!(shape, &[3, 5]);
    assert_eq!(bits(values), bits(&population));
    let (shape, values) = &loaded.buffers["velocity"];
    assert_eq!(shape, &[3, 5]);
    assert_eq!(bits(values), bits(&velocity));
    assert_eq!(loaded.buffers["step"], (vec![], vec![42.0]));
}

#[test]
fn bad_inputs_are_refused_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.safetensors");
    let spec = spec();
    let short = vec![0.0; spec.len() - 1];
    assert!(matches!(
        save_model(&path, &card(&spec), &short),
        Err(CheckpointError::Model {
            source: FileError::Length(_),
            ..
        })
    ));
    // A card whose layout disagrees with its layers does not make a model.
    let mut tampered = card(&spec);
    tampered.layout[1].offset += 1;
    let params = vec![0.0; spec.len()];
    let err = save_model(&path, &tampered, &params).unwrap_err();
    assert!(err.to_string().contains("layout"), "{err}");
    let mut no_std = card(&spec);
    no_std.normalization.std.clear();
    assert!(save_model(&path, &no_std, &params).is_err());
    let v = [1.0f32, 2.0];
    assert!(save_state(&path, &[("a", &v, &[3])], "{}").is_err());
    assert!(save_state(&path, &[("a", &v, &[2]), ("a", &v, &[2])], "{}").is_err());
    assert!(save_state(&path, &[("a", &v, &[2])], "{not json").is_err());
    assert!(listing(dir.path()).is_empty());
}

#[test]
fn truncated_and_corrupt_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let spec = spec();
    save_model(&path, &card(&spec), &vec![0.5; spec.len()]).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 3]).unwrap();
    let err = load_model(&truncated).unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::Model {
                source: FileError::Safetensors(_),
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, &truncated);

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a checkpoint at all").unwrap();
    let err = load_model(&garbage).unwrap_err();
    assert_names(&err, &garbage);
    let err = load_state(&garbage).unwrap_err();
    assert_names(&err, &garbage);

    let empty = dir.path().join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    assert_names(&load_model(&empty).unwrap_err(), &empty);

    let missing = dir.path().join("missing.safetensors");
    let err = load_model(&missing).unwrap_err();
    assert!(matches!(err, CheckpointError::Io { .. }));
    assert_names(&err, &missing);

    // A model file is not a state file, and the other way round.
    let err = load_state(&path).unwrap_err();
    assert!(err.to_string().contains("state"), "{err}");
    assert_names(&err, &path);
}

/// Writes a safetensors file with the metadata given and the tensors given.
fn forge(
    path: &Path,
    meta: HashMap<String, String>,
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, &Some(meta)).unwrap()).unwrap();
}

/// The metadata of a model file holding `spec`.
fn card_entry(spec: &ModelSpec) -> HashMap<String, String> {
    HashMap::from([(CARD_KEY.to_string(), card(spec).to_json().unwrap())])
}

/// Every tensor of `spec` as zeros, as f32.
fn zeros(spec: &ModelSpec) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    spec.tensors()
        .iter()
        .map(|t| {
            let n: usize = t.shape.iter().product();
            (
                t.name.clone(),
                Dtype::F32,
                t.shape.clone(),
                vec![0u8; 4 * n],
            )
        })
        .collect()
}

#[test]
fn missing_or_mistyped_tensors_name_the_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let victim = spec.tensors()[1].name.clone();

    let path = dir.path().join("missing-tensor.safetensors");
    let mut tensors = zeros(&spec);
    tensors.retain(|t| t.0 != victim);
    forge(&path, card_entry(&spec), tensors);
    assert!(matches!(
        load_error(&path, &victim),
        FileError::MissingTensor { .. }
    ));

    let path = dir.path().join("wrong-dtype.safetensors");
    let mut tensors = zeros(&spec);
    let t = tensors.iter_mut().find(|t| t.0 == victim).unwrap();
    t.1 = Dtype::F64;
    t.3 = vec![0u8; t.3.len() * 2];
    forge(&path, card_entry(&spec), tensors);
    assert!(matches!(
        load_error(&path, &victim),
        FileError::BadTensor { .. }
    ));

    let path = dir.path().join("wrong-shape.safetensors");
    let mut tensors = zeros(&spec);
    let t = tensors.iter_mut().find(|t| t.0 == victim).unwrap();
    t.2 = vec![t.2.iter().product::<usize>(), 1];
    forge(&path, card_entry(&spec), tensors);
    assert!(matches!(
        load_error(&path, &victim),
        FileError::BadTensor { .. }
    ));
}

/// The metadata papa wrote before the model card, for an `mlp:4` on 1 x 4 x 4 inputs.
fn legacy_metadata() -> HashMap<String, String> {
    [
        ("layout", "[]"),
        ("model", "mlp:4"),
        ("data", "fashion-mnist"),
        ("input_shape", "1,4,4"),
        ("classes", "3"),
        ("normalize_mean", "0.2860405"),
        ("normalize_std", "0.3530242"),
        ("val_fraction", "0.1"),
        ("seed", "4"),
        ("method", "papa"),
        ("final_model_is", "uniform soup"),
        ("test_accuracy", "81.25"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn a_model_from_before_the_card_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.safetensors");
    let spec = ModelSpec::new(&zoo::mlp(&[4], 3), [1, 4, 4], 3).unwrap();
    let params = awkward_values(spec.len(), 9);
    let tensors = spec
        .tensors()
        .iter()
        .map(|t| {
            let data = params[t.range()].iter().flat_map(|v| v.to_le_bytes());
            (t.name.clone(), Dtype::F32, t.shape.clone(), data.collect())
        })
        .collect();
    forge(&path, legacy_metadata(), tensors);
    let loaded = load_model(&path).unwrap();
    assert_eq!(bits(&loaded.params), bits(&params));
    assert_eq!(loaded.card.spec().unwrap(), spec);
    assert_eq!(loaded.card.normalization.mean, [0.2860405]);
    assert_eq!(loaded.card.input.pixel_scale, 255.0);
    let provenance = loaded.card.provenance.unwrap();
    assert_eq!((provenance.seed, provenance.test_accuracy), (4, 81.25));

    // One entry short, the error names it and what to do.
    let mut meta = legacy_metadata();
    meta.remove("normalize_std");
    forge(&path, meta, zeros(&spec));
    let err = load_model(&path).unwrap_err().to_string();
    assert!(
        err.contains("normalize_std") && err.contains("retrain"),
        "{err}"
    );
}

#[test]
fn a_file_without_a_card_is_not_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.safetensors");
    forge(&path, HashMap::new(), zeros(&spec()));
    assert!(matches!(load_error(&path, ""), FileError::NoCard));
}

#[test]
fn write_atomic_replaces_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.json");
    write_atomic(&path, b"first").unwrap();
    write_atomic(&path, b"second, longer").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
    write_atomic(&path, b"").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"");
    assert_eq!(listing(dir.path()), ["out.json"]);
}

#[test]
fn write_atomic_clears_temp_files_of_killed_writers() {
    if !Path::new("/proc/self").exists() {
        println!("SKIP: no /proc here: dead writers cannot be told from live ones");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.json");
    // A process that has exited, standing for a writer killed mid-write.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = dir.path().join(format!(".out.json.tmp-{dead}-0"));
    let ours = dir
        .path()
        .join(format!(".out.json.tmp-{}-999", std::process::id()));
    let other_file = dir.path().join(format!(".other.json.tmp-{dead}-0"));
    for f in [&stale, &ours, &other_file] {
        std::fs::write(f, b"half").unwrap();
    }
    write_atomic(&path, b"whole").unwrap();
    assert!(!stale.exists(), "a dead writer's temp file is left");
    assert!(
        ours.exists(),
        "a live writer's temp file (this process) must stay"
    );
    assert!(other_file.exists(), "another target's temp file must stay");
    assert_eq!(std::fs::read(&path).unwrap(), b"whole");
}

#[test]
fn write_atomic_into_a_missing_directory_fails_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("out.json");
    let err = write_atomic(&path, b"data").unwrap_err();
    assert_names(&err, &path);
    assert!(!path.exists());
    assert!(listing(dir.path()).is_empty());
}

#[test]
fn write_atomic_over_a_directory_fails_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("occupied");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"kept").unwrap();
    assert!(write_atomic(&target, b"data").is_err());
    assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"kept");
    assert_eq!(listing(dir.path()), ["occupied"]);
}

#[test]
fn concurrent_writers_never_leave_a_mixed_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.bin");
    let a = vec![b'a'; 1 << 16];
    let b = vec![b'b'; 1 << 17];
    std::thread::scope(|s| {
        for data in [&a, &b, &a, &b] {
            let path = &path;
            s.spawn(move || {
                for _ in 0..10 {
                    write_atomic(path, data).unwrap();
                }
            });
        }
    });
    let got = std::fs::read(&path).unwrap();
    assert!(got == a || got == b);
    assert_eq!(listing(dir.path()), ["shared.bin"]);
}
