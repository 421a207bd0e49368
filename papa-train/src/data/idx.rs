//! IDX files (the MNIST family's format), gzipped or raw.
//!
//! An IDX file is a 4-byte magic (two zero bytes, a type code, the number of dimensions),
//! one big-endian `u32` per dimension, then the data. Only unsigned bytes are used here:
//! `0x00000803` for images (n x rows x cols) and `0x00000801` for labels (n).

use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::DataError;

/// Magic number of an IDX file of unsigned bytes with three dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with one dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Stored 8-bit pixels are divided by this, to `[0, 1]`.
pub const PIXEL_SCALE: f32 = 255.0;

/// Images read from an IDX file, pixels scaled from `0..=255` to `[0, 1]`.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `count x rows x cols` pixels, row-major.
    pub pixels: Vec<f32>,
}

/// Reads the whole file at `path`, decompressing it when it starts with the gzip magic
/// `1f 8b` (an IDX file never does: its first two bytes are zero).
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|source| DataError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Reads an images file (`*-images-idx3-ubyte`, optionally `.gz`).
pub fn read_images(path: &Path) -> Result<IdxImages, DataError> {
    parse_images(&read_maybe_gz(path)?, path)
}

/// Reads a labels file (`*-labels-idx1-ubyte`, optionally `.gz`).
pub fn read_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    parse_labels(&read_maybe_gz(path)?, path)
}

/// Parses the decompressed bytes of an images file; `path` only names the file in errors.
pub fn parse_images(bytes: &[u8], path: &Path) -> Result<IdxImages, DataError> {
    let dims = parse_header(bytes, IMAGES_MAGIC, path)?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    if rows == 0 || cols == 0 {
        return Err(format_error(
            path,
            format!("empty image size {rows}x{cols}"),
        ));
    }
    let body = body(bytes, &dims, path)?;
    let pixels = body.iter().map(|&b| f32::from(b) / PIXEL_SCALE).collect();
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels,
    })
}

/// Parses the decompressed bytes of a labels file; `path` only names the file in errors.
pub fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>, DataError> {
    let dims = parse_header(bytes, LABELS_MAGIC, path)?;
    Ok(body(bytes, &dims, path)?.to_vec())
}

/// Checks the magic and returns the dimensions.
fn parse_header(bytes: &[u8], expected: u32, path: &Path) -> Result<Vec<usize>, DataError> {
    let word = |at: usize| -> Option<u32> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let magic = word(0).ok_or_else(|| {
        format_error(
            path,
            format!("truncated header: {} bytes, need at least 4", bytes.len()),
        )
    })?;
    if magic != expected {
        return Err(format_error(
            path,
            format!("IDX magic {magic:#010x}, expected {expected:#010x}"),
        ));
    }
    let ndims = (expected & 0xff) as usize;
    (0..ndims)
        .map(|d| {
            word(4 + 4 * d).map(|v| v as usize).ok_or_else(|| {
                format_error(
                    path,
                    format!("truncated header: dimension {} of {ndims} missing", d + 1),
                )
            })
        })
        .collect()
}

/// The data after the header, which must hold exactly the product of `dims` bytes:
/// a short file is truncated, a long one is not the file its header describes.
fn body<'a>(bytes: &'a [u8], dims: &[usize], path: &Path) -> Result<&'a [u8], DataError> {
    let start = 4 + 4 * dims.len();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format_error(path, format!("dimensions {dims:?} overflow")))?;
    let got = bytes.len() - start;
    if got < expected {
        return Err(format_error(
            path,
            format!("truncated: dimensions {dims:?} need {expected} data bytes, found {got}"),
        ));
    }
    if got > expected {
        return Err(format_error(
            path,
            format!(
                "{} trailing bytes after {expected} data bytes",
                got - expected
            ),
        ));
    }
    Ok(&bytes[start..])
}

fn format_error(path: &Path, message: String) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        message,
    }
}
