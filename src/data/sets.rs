//! The training and validation sets a `[data]` section names: local files or shipped names
//! (`data.train`, `data.validation`), or splits of a hub data set (`data.dataset_name`).

use anyhow::Result;

use super::dataset::{load_examples, Example};
use super::hub::{load_hub_split, HubSplit};
use crate::config::DataSection;

/// Loaded sets, with how to name each in messages and the hub data set's commit.
#[derive(Debug, Clone)]
pub struct DataSets {
    pub train: Vec<Example>,
    pub validation: Vec<Example>,
    /// `data.train = `…`` or `data.dataset_name = `…` (split `train`)`.
    pub train_label: String,
    pub validation_label: String,
    /// The commit `data.dataset_name` resolved to; `None` without one.
    pub dataset_commit: Option<String>,
}

/// Loads `data.train` (or `dataset_name`'s `train_split`) and, when `with_validation`,
/// `validation_split` of `dataset_name`, else `data.validation` (with `dataset_name`, only when
/// set to something other than its default).
pub fn load_data_sets(d: &DataSection, with_validation: bool) -> Result<DataSets> {
    let (qf, af) = (&d.question_field, &d.answer_field);
    if d.dataset_name.is_empty() {
        let train = load_examples(&d.train, qf, af)?;
        let validation = match with_validation && !d.validation.is_empty() {
            true => load_examples(&d.validation, qf, af)?,
            false => Vec::new(),
        };
        return Ok(DataSets {
            train,
            validation,
            train_label: format!("data.train = `{}`", d.train),
            validation_label: format!("data.validation = `{}`", d.validation),
            dataset_commit: None,
        });
    }
    let split = |s: &str| HubSplit {
        name: d.dataset_name.clone(),
        config: (!d.dataset_config.is_empty()).then(|| d.dataset_config.clone()),
        split: s.to_string(),
    };
    let label = |s: &str| format!("data.dataset_name = `{}` (split `{s}`)", d.dataset_name);
    let train = load_hub_split(&split(&d.train_split), None, qf, af)?;
    let default_validation = DataSection::default().validation;
    let (validation, validation_label) = if !with_validation {
        (Vec::new(), String::new())
    } else if !d.validation_split.is_empty() {
        let rows = load_hub_split(&split(&d.validation_split), None, qf, af)?;
        (rows.examples, label(&d.validation_split))
    } else if !d.validation.is_empty() && d.validation != default_validation {
        (
            load_examples(&d.validation, qf, af)?,
            format!("data.validation = `{}`", d.validation),
        )
    } else {
        (Vec::new(), String::new())
    };
    Ok(DataSets {
        train: train.examples,
        validation,
        train_label: label(&d.train_split),
        validation_label,
        dataset_commit: Some(train.commit),
    })
}
