//! Checkpoints: files written atomically, models and training state in safetensors.
//!
//! Every file the project writes goes through [`write_atomic`], so a crash or a full disk
//! leaves either the old file or the new one, never a half-written mix. Models are stored
//! as one f32 tensor per layout tensor under its PyTorch `state_dict` name, so that
//! `safetensors.torch.load_file` gives a loadable `state_dict`; a `"layout"` metadata entry
//! records where each tensor sits in the flat member vector, so [`load_model`] rebuilds that
//! vector bit-exactly without knowing the model.

use crate::model::ModelSpec;
use papa_core::layout::TensorKind;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Metadata key of the layout entry written by [`save_model`].
pub const LAYOUT_KEY: &str = "layout";
/// Metadata key of the run state written by [`save_state`].
pub const STATE_KEY: &str = "state";

/// What went wrong while writing or reading a checkpoint; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file system refused (missing directory, permissions, full disk, ...).
    #[error("{}: {action}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What was being done, e.g. "cannot write".
        action: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a readable checkpoint (truncated, corrupt header, bad metadata).
    #[error("{}: corrupt checkpoint: {reason}", path.display())]
    Corrupt {
        /// The file concerned.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A tensor the layout names is not in the file.
    #[error("{}: tensor `{tensor}` is missing", path.display())]
    MissingTensor {
        /// The file concerned.
        path: PathBuf,
        /// The missing tensor's name.
        tensor: String,
    },
    /// A tensor has the wrong dtype or shape, or its data does not fit the layout.
    #[error("{}: tensor `{tensor}`: {reason}", path.display())]
    BadTensor {
        /// The file concerned.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What was wrong.
        reason: String,
    },
    /// The caller's inputs are inconsistent (nothing was written).
    #[error("{}: cannot save: {reason}", path.display())]
    InvalidInput {
        /// The file that was to be written.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// A model read back by [`load_model`].
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedModel {
    /// The flat member vector (N values), in layout order.
    pub params: Vec<f32>,
    /// Name and shape of each tensor, in layout order.
    pub tensors: Vec<(String, Vec<usize>)>,
    /// The caller's metadata as saved (without the `"layout"` entry).
    pub metadata: BTreeMap<String, String>,
}

/// Training state read back by [`load_state`].
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedState {
    /// Each named buffer: its shape and its values (row-major).
    pub buffers: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    /// The run's state as saved (a JSON document).
    pub state_json: String,
}

/// One entry of the `"layout"` metadata: where a tensor sits in the flat vector.
#[derive(Serialize, Deserialize)]
struct LayoutEntry {
    name: String,
    shape: Vec<usize>,
    offset: usize,
    kind: String,
}

/// Distinguishes temp files of concurrent writers within one process (the pid alone
/// distinguishes processes).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename
/// over the target, then fsync of the directory where the platform allows it.
///
/// The temp file lives in the target's directory because a rename is only atomic within
/// one file system. On failure the temp file is removed and the target is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let io = |action, source| CheckpointError::Io {
        path: path.to_path_buf(),
        action,
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| CheckpointError::InvalidInput {
            path: path.to_path_buf(),
            reason: "the path has no file name".into(),
        })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| io("cannot create a temporary file", e))?;
        file.write_all(bytes).map_err(|e| io("cannot write", e))?;
        file.sync_all().map_err(|e| io("cannot sync", e))?;
        drop(file);
        fs::rename(&tmp, path).map_err(|e| io("cannot replace", e))
    })();
    if written.is_err() {
        // Best effort: the temp file may not even exist (e.g. a missing directory).
        let _ = fs::remove_file(&tmp);
        return written;
    }
    // Makes the rename itself durable. Directories cannot be opened on every platform
    // (Windows), and the data is already safe in the file, so a failure here is ignored.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Stable on-disk name of a tensor kind (independent of the Rust enum's spelling).
fn kind_name(kind: TensorKind) -> &'static str {
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

/// Little-endian bytes of `values`, whatever the host's byte order (safetensors is LE).
fn to_le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Serializes named f32 tensors with metadata and writes the file atomically.
fn write_tensors(
    path: &Path,
    tensors: &[(&str, &[f32], &[usize])],
    metadata: HashMap<String, String>,
) -> Result<(), CheckpointError> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, v, _)| to_le_bytes(v)).collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, _, shape), data) in tensors.iter().zip(&bytes) {
        let view = TensorView::new(Dtype::F32, shape.to_vec(), data).map_err(|e| {
            CheckpointError::InvalidInput {
                path: path.to_path_buf(),
                reason: format!("tensor `{name}`: {e}"),
            }
        })?;
        views.push((*name, view));
    }
    let file = safetensors::serialize(views, &Some(metadata)).map_err(|e| {
        CheckpointError::InvalidInput {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })?;
    write_atomic(path, &file)
}

/// Reads a whole file, naming it in the error.
fn read_file(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        action: "cannot read",
        source,
    })
}

/// Parses a safetensors buffer, turning its errors into [`CheckpointError::Corrupt`].
fn parse<'a>(path: &Path, buffer: &'a [u8]) -> Result<SafeTensors<'a>, CheckpointError> {
    SafeTensors::deserialize(buffer).map_err(|e| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("not a valid safetensors file ({e})"),
    })
}

/// The file's metadata, empty when it has none (safetensors 0.4 exposes it only through
/// `read_metadata`, so the header is parsed a second time; it is small).
fn metadata_of(path: &Path, buffer: &[u8]) -> Result<BTreeMap<String, String>, CheckpointError> {
    let (_, meta) = SafeTensors::read_metadata(buffer).map_err(|e| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("not a valid safetensors file ({e})"),
    })?;
    Ok(meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default())
}

/// Decodes an f32 tensor, checking its dtype (and its shape when `expected` is given).
fn decode_f32(
    path: &Path,
    name: &str,
    view: &TensorView<'_>,
    expected: Option<&[usize]>,
) -> Result<Vec<f32>, CheckpointError> {
    let bad = |reason: String| CheckpointError::BadTensor {
        path: path.to_path_buf(),
        tensor: name.to_string(),
        reason,
    };
    if view.dtype() != Dtype::F32 {
        return Err(bad(format!("dtype is {:?}, expected F32", view.dtype())));
    }
    if let Some(shape) = expected {
        if view.shape() != shape {
            return Err(bad(format!(
                "shape is {:?}, the layout says {:?}",
                view.shape(),
                shape
            )));
        }
    }
    Ok(view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Saves one model: one f32 tensor per layout tensor, named by its `state_dict` name and
/// with its shape (`[]` for scalar counters), plus `metadata` and a `"layout"` entry.
///
/// `params` is the flat member vector (`spec.len()` values). `metadata` carries whatever a
/// reader needs to use the model (model name, input shape, classes, normalisation, ...);
/// its key `"layout"` is reserved. The file is written with [`write_atomic`].
pub fn save_model(
    path: &Path,
    spec: &ModelSpec,
    params: &[f32],
    metadata: &BTreeMap<String, String>,
) -> Result<(), CheckpointError> {
    let invalid = |reason: String| CheckpointError::InvalidInput {
        path: path.to_path_buf(),
        reason,
    };
    if params.len() != spec.len() {
        return Err(invalid(format!(
            "{} parameters given, the model has {}",
            params.len(),
            spec.len()
        )));
    }
    if metadata.contains_key(LAYOUT_KEY) {
        return Err(invalid(format!("metadata key `{LAYOUT_KEY}` is reserved")));
    }
    let mut tensors = Vec::with_capacity(spec.tensors().len());
    let mut layout = Vec::with_capacity(spec.tensors().len());
    for t in spec.tensors() {
        let numel: usize = t.shape.iter().product();
        let values = t
            .offset
            .checked_add(numel)
            .and_then(|end| params.get(t.offset..end))
            .ok_or_else(|| invalid(format!("tensor `{}` lies outside the vector", t.name)))?;
        tensors.push((t.name.as_str(), values, t.shape.as_slice()));
        layout.push(LayoutEntry {
            name: t.name.clone(),
            shape: t.shape.clone(),
            offset: t.offset,
            kind: kind_name(t.kind).to_string(),
        });
    }
    let mut meta: HashMap<String, String> = metadata.clone().into_iter().collect();
    let layout_json =
        serde_json::to_string(&layout).map_err(|e| invalid(format!("layout: {e}")))?;
    meta.insert(LAYOUT_KEY.to_string(), layout_json);
    write_tensors(path, &tensors, meta)
}

/// Loads a model saved by [`save_model`], rebuilding the flat vector from the `"layout"`
/// metadata; the round trip is bit-exact.
///
/// Fails, naming the file (and the tensor where one is at fault), when the file cannot be
/// read or parsed, the layout is missing or does not tile `0..N` exactly, or a tensor is
/// missing or has the wrong dtype or shape. Tensors the layout does not name are ignored.
pub fn load_model(path: &Path) -> Result<LoadedModel, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let buffer = read_file(path)?;
    let file = parse(path, &buffer)?;
    let mut metadata = metadata_of(path, &buffer)?;
    let layout_json = metadata
        .remove(LAYOUT_KEY)
        .ok_or_else(|| corrupt(format!("no `{LAYOUT_KEY}` metadata")))?;
    let layout: Vec<LayoutEntry> = serde_json::from_str(&layout_json)
        .map_err(|e| corrupt(format!("`{LAYOUT_KEY}` metadata: {e}")))?;

    // The layout must cover 0..N with neither gap nor overlap, so that every value of the
    // rebuilt vector comes from the file.
    let mut spans = Vec::with_capacity(layout.len());
    for e in &layout {
        let numel = e.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let end = numel.and_then(|n| e.offset.checked_add(n));
        let end = end.ok_or_else(|| corrupt(format!("layout of `{}` overflows", e.name)))?;
        spans.push((e.offset, end, e.name.as_str()));
    }
    spans.sort_unstable();
    let mut len = 0;
    for &(start, end, name) in &spans {
        if start != len {
            return Err(corrupt(format!(
                "layout of `{name}` starts at {start}, expected {len} (gap or overlap)"
            )));
        }
        len = end;
    }

    let mut params = vec![0.0f32; len];
    let mut tensors = Vec::with_capacity(layout.len());
    for e in layout {
        let view = file
            .tensor(&e.name)
            .map_err(|_| CheckpointError::MissingTensor {
                path: path.to_path_buf(),
                tensor: e.name.clone(),
            })?;
        let values = decode_f32(path, &e.name, &view, Some(&e.shape))?;
        // In range: the spans above tile 0..len and the shape matched.
        params[e.offset..e.offset + values.len()].copy_from_slice(&values);
        tensors.push((e.name, e.shape));
    }
    Ok(LoadedModel {
        params,
        tensors,
        metadata,
    })
}

/// Saves training state for resuming: named f32 buffers (e.g. `"population"` `[P, N]` and
/// `"velocity"` `[P, N]`) and the run's state as a JSON document (metadata key `"state"`).
///
/// Fails without writing when a name repeats, a buffer's length is not the product of its
/// shape, or `state_json` is not valid JSON (caught here rather than at resume time).
pub fn save_state(
    path: &Path,
    buffers: &[(&str, &[f32], &[usize])],
    state_json: &str,
) -> Result<(), CheckpointError> {
    let invalid = |reason: String| CheckpointError::InvalidInput {
        path: path.to_path_buf(),
        reason,
    };
    let mut seen = BTreeSet::new();
    for (name, values, shape) in buffers {
        if !seen.insert(*name) {
            return Err(invalid(format!("buffer `{name}` given twice")));
        }
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if numel != Some(values.len()) {
            return Err(invalid(format!(
                "buffer `{name}` has {} values, its shape {shape:?} needs {}",
                values.len(),
                numel.map_or_else(|| "too many".to_string(), |n| n.to_string())
            )));
        }
    }
    serde_json::from_str::<serde_json::Value>(state_json)
        .map_err(|e| invalid(format!("the state is not valid JSON: {e}")))?;
    let meta = HashMap::from([(STATE_KEY.to_string(), state_json.to_string())]);
    write_tensors(path, buffers, meta)
}

/// Loads training state saved by [`save_state`]: every buffer (all must be f32) and the
/// `"state"` JSON document. Errors name the file, and the tensor where one is at fault.
pub fn load_state(path: &Path) -> Result<LoadedState, CheckpointError> {
    let buffer = read_file(path)?;
    let file = parse(path, &buffer)?;
    let mut metadata = metadata_of(path, &buffer)?;
    let state_json = metadata
        .remove(STATE_KEY)
        .ok_or_else(|| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("no `{STATE_KEY}` metadata"),
        })?;
    let mut buffers = BTreeMap::new();
    for (name, view) in file.iter() {
        let values = decode_f32(path, name, &view, None)?;
        buffers.insert(name.to_string(), (view.shape().to_vec(), values));
    }
    Ok(LoadedState {
        buffers,
        state_json,
    })
}
