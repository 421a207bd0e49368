//! Checks of the checkpoint files: bit-exact round trips, errors that name the file and the
//! tensor, and atomic writes that never leave a temp file or a half-written target.

use papa_core::rng::Rng;
use papa_train::checkpoint::{
    load_model, load_state, save_model, save_state, write_atomic, CheckpointError,
};
use papa_train::model::{Layer, ModelKind, ModelSpec};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A small model with every kind of tensor: conv weight/bias, BatchNorm (counter included),
/// linear weight/bias.
fn spec() -> ModelSpec {
    let layers = vec![
        Layer::Conv3x3 { out: 2 },
        Layer::BatchNorm,
        Layer::Relu,
        Layer::Flatten,
        Layer::Linear { out: 3 },
    ];
    ModelSpec::new(ModelKind::Sequential(layers), 1, 4, 4, 3).unwrap()
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

fn metadata() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("model".to_string(), "tiny-cnn".to_string()),
        ("input_shape".to_string(), "[1,4,4]".to_string()),
        ("mean".to_string(), "[0.2860]".to_string()),
    ])
}

/// Names `path` in the error's message.
fn assert_names(err: &CheckpointError, path: &Path) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name the file: {msg}"
    );
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
fn model_round_trip_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let spec = spec();
    let params = awkward_values(spec.len(), 7);
    save_model(&path, &spec, &params, &metadata()).unwrap();
    let loaded = load_model(&path).unwrap();
    assert_eq!(bits(&loaded.params), bits(&params));
    assert_eq!(loaded.metadata, metadata());
    let expected: Vec<(String, Vec<usize>)> = spec
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    assert_eq!(loaded.tensors, expected);
    assert_eq!(listing(dir.path()), ["model.safetensors"]);
}

#[test]
fn model_file_is_a_plain_state_dict() {
    // Any safetensors reader sees the state_dict names and shapes, counters as scalars.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let spec = spec();
    let params: Vec<f32> = (0..spec.len()).map(|i| i as f32).collect();
    save_model(&path, &spec, &params, &metadata()).unwrap();
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
        save_model(&path, &spec, &short, &metadata()),
        Err(CheckpointError::InvalidInput { .. })
    ));
    let mut reserved = metadata();
    reserved.insert("layout".into(), "[]".into());
    let params = vec![0.0; spec.len()];
    assert!(save_model(&path, &spec, &params, &reserved).is_err());
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
    save_model(&path, &spec, &vec![0.5; spec.len()], &metadata()).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 3]).unwrap();
    let err = load_model(&truncated).unwrap_err();
    assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
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

/// Writes a safetensors file with the layout of `spec` but the tensors given.
fn forge(path: &Path, spec: &ModelSpec, tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>) {
    let layout: Vec<serde_json::Value> = spec
        .tensors()
        .iter()
        .map(|t| {
            serde_json::json!({"name": t.name, "shape": t.shape, "offset": t.offset, "kind": "weight"})
        })
        .collect();
    let meta = HashMap::from([(
        "layout".to_string(),
        serde_json::to_string(&layout).unwrap(),
    )]);
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, &Some(meta)).unwrap()).unwrap();
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
    forge(&path, &spec, tensors);
    let err = load_model(&path).unwrap_err();
    assert!(
        matches!(err, CheckpointError::MissingTensor { .. }),
        "{err}"
    );
    assert_names(&err, &path);
    assert!(err.to_string().contains(&victim), "{err}");

    let path = dir.path().join("wrong-dtype.safetensors");
    let mut tensors = zeros(&spec);
    let t = tensors.iter_mut().find(|t| t.0 == victim).unwrap();
    t.1 = Dtype::F64;
    t.3 = vec![0u8; t.3.len() * 2];
    forge(&path, &spec, tensors);
    let err = load_model(&path).unwrap_err();
    assert!(matches!(err, CheckpointError::BadTensor { .. }), "{err}");
    assert_names(&err, &path);
    assert!(err.to_string().contains(&victim), "{err}");

    let path = dir.path().join("wrong-shape.safetensors");
    let mut tensors = zeros(&spec);
    let t = tensors.iter_mut().find(|t| t.0 == victim).unwrap();
    t.2 = vec![t.2.iter().product::<usize>(), 1];
    forge(&path, &spec, tensors);
    let err = load_model(&path).unwrap_err();
    assert!(matches!(err, CheckpointError::BadTensor { .. }), "{err}");
    assert!(err.to_string().contains(&victim), "{err}");
}

#[test]
fn a_layout_with_a_gap_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gap.safetensors");
    let meta = HashMap::from([(
        "layout".to_string(),
        r#"[{"name":"a","shape":[2],"offset":0,"kind":"weight"},
            {"name":"b","shape":[2],"offset":3,"kind":"bias"}]"#
            .to_string(),
    )]);
    let data = [0u8; 8];
    let views = vec![
        ("a", TensorView::new(Dtype::F32, vec![2], &data).unwrap()),
        ("b", TensorView::new(Dtype::F32, vec![2], &data).unwrap()),
    ];
    std::fs::write(&path, safetensors::serialize(views, &Some(meta)).unwrap()).unwrap();
    let err = load_model(&path).unwrap_err();
    assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("`b`"), "{err}");
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
