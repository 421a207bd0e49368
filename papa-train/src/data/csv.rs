//! CSV tables of numeric features and one integer label column.
//!
//! Deliberately small: comma-separated, no quoting, blank lines skipped, an optional header
//! line. Every error names the file, the 1-based line and the 1-based column, because a
//! table that fails to load is usually fixed by hand in an editor.

use std::path::Path;

use super::{DataError, Dataset};

/// Which column holds the label.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LabelColumn {
    /// The last column (the common layout of exported tables).
    #[default]
    Last,
    /// The column at this 0-based index.
    Index(usize),
}

/// Whether the first row of a table names its columns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Header {
    /// Decided from the first row: it is a header when a field is not a number, or when its
    /// three or more fields number the columns from 0 (`0,1,...,n-1`, as pandas writes
    /// unnamed columns). A data row that happens to read like that needs [`Header::Absent`].
    #[default]
    Auto,
    /// The first row is a header.
    Present,
    /// Every row is data.
    Absent,
}

/// How to read a CSV table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CsvOptions {
    /// Which column holds the label.
    pub label_column: LabelColumn,
    /// Whether the first row is a header.
    pub header: Header,
    /// Number of classes; labels must lie in `[0, classes)`. `None` takes the largest
    /// label plus one.
    pub classes: Option<usize>,
}

/// Reads the table at `path` into a dataset of `F x 1 x 1` "images", F being the number of
/// feature columns: each feature is a channel, so the per-channel normalisation standardises
/// every feature on its own (one mean and std for all of them would let the feature of the
/// largest scale drown the others). Flips never make sense for tabular features, so
/// `hflip_ok` is false.
pub fn read(path: &Path, options: &CsvOptions) -> Result<Dataset, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path, options)
}

/// Parses CSV text; `path` only names the file in errors.
pub fn parse(text: &str, path: &Path, options: &CsvOptions) -> Result<Dataset, DataError> {
    let field_error = |line: usize, column: usize, message: String| DataError::Csv {
        path: path.to_path_buf(),
        line,
        column,
        message,
    };
    if options.classes.is_some_and(|c| c == 0 || c > 256) {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            message: format!(
                "{} classes requested; labels are stored as bytes, so 1 to 256 are supported",
                options.classes.unwrap_or(0)
            ),
        });
    }
    // Spreadsheet exports often start with a byte-order mark, which would make the first
    // field unreadable and so the first row a header.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .peekable();

    let first_is_header = match options.header {
        Header::Present => true,
        Header::Absent => false,
        Header::Auto => rows.peek().is_some_and(|(_, l)| looks_like_header(l)),
    };
    let mut width = None;
    if first_is_header {
        if let Some((_, header)) = rows.next() {
            width = Some(header.split(',').count());
        }
    }

    let mut features = Vec::new();
    let mut raw_labels = Vec::new();
    let mut label_at = 0;
    for (line, row) in rows {
        let fields: Vec<&str> = row.split(',').map(str::trim).collect();
        let expected = *width.get_or_insert(fields.len());
        if fields.len() != expected {
            return Err(field_error(
                line,
                expected.min(fields.len()) + 1,
                format!("ragged row: {} fields, expected {expected}", fields.len()),
            ));
        }
        label_at = match options.label_column {
            LabelColumn::Last => expected - 1,
            LabelColumn::Index(i) if i < expected => i,
            LabelColumn::Index(i) => {
                return Err(field_error(
                    line,
                    i + 1,
                    format!(
                        "label column {} requested but rows have {expected} fields",
                        i + 1
                    ),
                ))
            }
        };
        if expected < 2 {
            return Err(field_error(
                line,
                1,
                "a row needs at least one feature and a label".to_string(),
            ));
        }
        for (column, field) in fields.iter().enumerate() {
            let value: f64 = field
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| {
                    field_error(
                        line,
                        column + 1,
                        format!("{field:?} is not a finite number"),
                    )
                })?;
            if column == label_at {
                if value.fract() != 0.0 || value < 0.0 {
                    return Err(field_error(
                        line,
                        column + 1,
                        format!("label {field:?} is not a non-negative integer"),
                    ));
                }
                raw_labels.push((line, value));
            } else {
                // Finite in f64 is not enough: 1e39 would become an f32 infinity.
                let feature = value as f32;
                if !feature.is_finite() {
                    return Err(field_error(
                        line,
                        column + 1,
                        format!("{field:?} is beyond the range of f32 (about 3.4e38)"),
                    ));
                }
                features.push(feature);
            }
        }
    }
    if raw_labels.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }

    let largest = raw_labels.iter().map(|&(_, v)| v).fold(0.0, f64::max);
    // A label beyond usize (1e20) saturates: it is then refused as out of range below.
    let classes = options
        .classes
        .unwrap_or_else(|| (largest as usize).saturating_add(1));
    let limit = classes.min(256);
    let labels = raw_labels
        .iter()
        .map(|&(line, v)| {
            if v < limit as f64 {
                Ok(v as u8)
            } else {
                Err(field_error(
                    line,
                    label_at + 1,
                    format!("label {v} out of range [0, {limit})"),
                ))
            }
        })
        .collect::<Result<Vec<u8>, DataError>>()?;
    let features_per_row = features.len() / labels.len();
    Ok(Dataset {
        images: features,
        labels,
        channels: features_per_row,
        height: 1,
        width: 1,
        classes,
        hflip_ok: false,
    })
}

/// Whether a first row reads as a header: a field that is not a number, or three or more
/// fields that number the columns from 0 (pandas' names for unnamed columns).
fn looks_like_header(row: &str) -> bool {
    let fields: Vec<&str> = row.split(',').map(str::trim).collect();
    fields.iter().any(|f| f.parse::<f64>().is_err())
        || (fields.len() >= 3
            && fields
                .iter()
                .enumerate()
                .all(|(i, f)| f.parse::<usize>() == Ok(i)))
}
