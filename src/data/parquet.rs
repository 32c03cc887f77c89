//! Parquet data files (as the Hub's data sets ship them), read row by row with the Apache
//! `parquet` crate's record API into the JSON objects the JSONL loaders take.

use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context, Result};
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::{Map, Value};

/// Every row of a Parquet file as a JSON object, with its 1-based row number.
pub fn read_parquet_rows(path: &Path) -> Result<Vec<(usize, Map<String, Value>)>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = SerializedFileReader::new(file)
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
    let rows = reader
        .get_row_iter(None)
        .with_context(|| format!("{}: reading its rows", path.display()))?;
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        let row = row.with_context(|| format!("{}: row {}", path.display(), i + 1))?;
        match row.to_json_value() {
            Value::Object(map) => out.push((i + 1, map)),
            other => bail!(
                "{}: row {}: expected a record, found {other}",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(out)
}
