//! Checkpoints: files written atomically, models and training state in safetensors.
//!
//! Every file the project writes goes through [`write_atomic`], so a crash or a full disk
//! leaves either the old file or the new one, never a half-written mix. Models are
//! papa-model's model files (one f32 tensor per layout tensor under its PyTorch `state_dict`
//! name, and the model card), so [`load_model`] rebuilds the model and its flat vector
//! bit-exactly from the file alone.

use papa_model::card::ModelCard;
use papa_model::file::{self, FileError, ModelFile};
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

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
    /// The file is not valid safetensors (truncated, corrupt header), or the tensors given
    /// cannot be written as safetensors.
    #[error("{}: not a valid safetensors file ({source})", path.display())]
    Safetensors {
        /// The file concerned.
        path: PathBuf,
        /// The safetensors error.
        source: SafeTensorError,
    },
    /// A safetensors file without the run state: not a training checkpoint.
    #[error("{}: no `{STATE_KEY}` metadata: not a training state checkpoint", path.display())]
    NoState {
        /// The file concerned.
        path: PathBuf,
    },
    /// A training-state tensor is not f32.
    #[error("{}: tensor `{tensor}` is {dtype:?}, expected F32", path.display())]
    BadTensor {
        /// The file concerned.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// Its dtype.
        dtype: Dtype,
    },
    /// A model file is unreadable, or a model cannot be written (nothing was written).
    #[error("{}: {source}", path.display())]
    Model {
        /// The file concerned.
        path: PathBuf,
        /// What was wrong.
        source: FileError,
    },
    /// A path without a file name (`/`, `..`): nothing can be written there.
    #[error("{}: the path has no file name", path.display())]
    NoFileName {
        /// The path given.
        path: PathBuf,
    },
    /// Two state buffers with one name (nothing was written).
    #[error("{}: cannot save: buffer `{name}` given twice", path.display())]
    DuplicateBuffer {
        /// The file that was to be written.
        path: PathBuf,
        /// The name.
        name: String,
    },
    /// A state buffer whose length is not the product of its shape (nothing was written).
    #[error("{}: cannot save: buffer `{name}` has {len} values, its shape is {shape:?}", path.display())]
    BufferShape {
        /// The file that was to be written.
        path: PathBuf,
        /// The buffer's name.
        name: String,
        /// Its length.
        len: usize,
        /// The shape given.
        shape: Vec<usize>,
    },
    /// The run state is not valid JSON (nothing was written).
    #[error("{}: cannot save: the state is not valid JSON: {source}", path.display())]
    StateJson {
        /// The file that was to be written.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
}

/// Training state read back by [`load_state`].
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedState {
    /// Each named buffer: its shape and its values (row-major).
    pub buffers: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    /// The run's state as saved (a JSON document).
    pub state_json: String,
}

/// Distinguishes temp files of concurrent writers within one process (the pid alone
/// distinguishes processes).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename
/// over the target, then fsync of the directory where the platform allows it.
///
/// The temp file lives in the target's directory because a rename is only atomic within
/// one file system. On failure the temp file is removed and the target is untouched.
///
/// Crash-test hook: with `PAPA_CRASH_WRITE=<k>` (or `<file name>:<k>`) in the environment,
/// the k-th call of this process (counting only targets of that file name) writes half its
/// bytes to the temp file, syncs them, and kills the process (SIGKILL where a `kill`
/// command exists, else an abort) before the rename: a crash in the middle of a write, at a
/// chosen point. The variable is read once; without it the hook costs one atomic load.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let io = |action, source| CheckpointError::Io {
        path: path.to_path_buf(),
        action,
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| CheckpointError::NoFileName {
            path: path.to_path_buf(),
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
        if crash_write_due(name) {
            file.write_all(&bytes[..bytes.len() / 2])
                .and_then(|()| file.sync_all())
                .map_err(|e| io("cannot write", e))?;
            crash();
        }
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
    remove_stale_temps(dir, Some(&name.to_string_lossy()));
    Ok(())
}

/// Removes every temp file that [`write_atomic`] writers killed mid-write left in `dir`
/// (those of processes that no longer exist). A run calls it when it starts: a file whose
/// write was killed may never be written again (e.g. the checkpoint of a method that was
/// already finished on resume), so its own writes would not clear it.
pub fn remove_stale_temps_in(dir: &Path) {
    remove_stale_temps(dir, None);
}

/// `PAPA_CRASH_WRITE` as read once: the file name it is limited to, if any, and k.
static CRASH_WRITE: OnceLock<Option<(Option<String>, u64)>> = OnceLock::new();

/// The calls of [`write_atomic`] counted against `PAPA_CRASH_WRITE`.
static CRASH_COUNT: AtomicU64 = AtomicU64::new(0);

/// Whether this write of a file named `name` is the one `PAPA_CRASH_WRITE` stops (a value
/// that does not parse stops none).
fn crash_write_due(name: &std::ffi::OsStr) -> bool {
    let plan = CRASH_WRITE.get_or_init(|| {
        let spec = std::env::var("PAPA_CRASH_WRITE").ok()?;
        let (file, k) = match spec.rsplit_once(':') {
            Some((file, k)) => (Some(file.to_string()), k),
            None => (None, spec.as_str()),
        };
        Some((file, k.parse().ok()?))
    });
    let Some((file, k)) = plan else {
        return false;
    };
    file.as_deref().is_none_or(|f| name == f)
        && CRASH_COUNT.fetch_add(1, Ordering::Relaxed) + 1 == *k
}

/// Ends the process at once, as `kill -9` would: no destructor, no flush, no rename.
fn crash() -> ! {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &std::process::id().to_string()])
        .status();
    // No `kill` command (or it failed): an abort is as abrupt for the files.
    std::process::abort()
}

/// Removes the temp files of `name` that writers killed mid-write left in `dir`, so that
/// repeated kills do not pile them up. Only those of processes that no longer exist go
/// (this process's own may belong to a concurrent write); where the platform cannot tell
/// (no `/proc`), none does. Best effort: a failure leaves the file.
fn remove_stale_temps(dir: &Path, name: Option<&str>) {
    let proc_fs = Path::new("/proc");
    if !proc_fs.join("self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        // `.{name}.tmp-{pid}-{counter}`, of one name or of any.
        let rest = file.to_str().and_then(|f| match name {
            Some(name) => f.strip_prefix(&format!(".{name}.tmp-")),
            None => f
                .strip_prefix('.')
                .and_then(|f| f.rsplit_once(".tmp-"))
                .map(|(_, rest)| rest),
        });
        let Some(rest) = rest else {
            continue;
        };
        let Some(Ok(pid)) = rest.split('-').next().map(str::parse::<u32>) else {
            continue;
        };
        if pid != std::process::id() && !proc_fs.join(pid.to_string()).exists() {
            let _ = fs::remove_file(entry.path());
        }
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
    let invalid = |source| CheckpointError::Safetensors {
        path: path.to_path_buf(),
        source,
    };
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, v, _)| to_le_bytes(v)).collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, _, shape), data) in tensors.iter().zip(&bytes) {
        let view = TensorView::new(Dtype::F32, shape.to_vec(), data).map_err(invalid)?;
        views.push((*name, view));
    }
    let file = safetensors::serialize(views, &Some(metadata)).map_err(invalid)?;
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

/// Parses a safetensors buffer, naming the file in its errors.
fn parse<'a>(path: &Path, buffer: &'a [u8]) -> Result<SafeTensors<'a>, CheckpointError> {
    SafeTensors::deserialize(buffer).map_err(|source| CheckpointError::Safetensors {
        path: path.to_path_buf(),
        source,
    })
}

/// The file's metadata, empty when it has none (safetensors 0.4 exposes it only through
/// `read_metadata`, so the header is parsed a second time; it is small).
fn metadata_of(path: &Path, buffer: &[u8]) -> Result<BTreeMap<String, String>, CheckpointError> {
    let (_, meta) =
        SafeTensors::read_metadata(buffer).map_err(|source| CheckpointError::Safetensors {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default())
}

/// Decodes an f32 tensor, checking its dtype.
fn decode_f32(path: &Path, name: &str, view: &TensorView<'_>) -> Result<Vec<f32>, CheckpointError> {
    if view.dtype() != Dtype::F32 {
        return Err(CheckpointError::BadTensor {
            path: path.to_path_buf(),
            tensor: name.to_string(),
            dtype: view.dtype(),
        });
    }
    Ok(view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Saves one model (`params`, one member) with its card, atomically.
///
/// Fails without writing when the card does not make a model or `params` does not fill it.
pub fn save_model(path: &Path, card: &ModelCard, params: &[f32]) -> Result<(), CheckpointError> {
    let bytes = file::encode(card, params).map_err(|source| CheckpointError::Model {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, &bytes)
}

/// Loads a model saved by [`save_model`] (or by papa before the model card, whose card is
/// rebuilt from the older metadata); the round trip is bit-exact.
///
/// Fails, naming the file (and the tensor where one is at fault), when the file cannot be
/// read, is not safetensors, has no usable card, or a tensor is missing or has the wrong
/// dtype or shape.
pub fn load_model(path: &Path) -> Result<ModelFile, CheckpointError> {
    let buffer = read_file(path)?;
    file::decode(&buffer).map_err(|source| CheckpointError::Model {
        path: path.to_path_buf(),
        source,
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
    let mut seen = BTreeSet::new();
    for (name, values, shape) in buffers {
        if !seen.insert(*name) {
            return Err(CheckpointError::DuplicateBuffer {
                path: path.to_path_buf(),
                name: name.to_string(),
            });
        }
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if numel != Some(values.len()) {
            return Err(CheckpointError::BufferShape {
                path: path.to_path_buf(),
                name: name.to_string(),
                len: values.len(),
                shape: shape.to_vec(),
            });
        }
    }
    serde_json::from_str::<serde_json::Value>(state_json).map_err(|source| {
        CheckpointError::StateJson {
            path: path.to_path_buf(),
            source,
        }
    })?;
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
        .ok_or_else(|| CheckpointError::NoState {
            path: path.to_path_buf(),
        })?;
    let mut buffers = BTreeMap::new();
    for (name, view) in file.iter() {
        let values = decode_f32(path, name, &view)?;
        buffers.insert(name.to_string(), (view.shape().to_vec(), values));
    }
    Ok(LoadedState {
        buffers,
        state_json,
    })
}
