//! Hugging Face checkpoint directories: locating them, reading and writing safetensors.

use super::config::{ModelConfig, SUPPORTED_MODEL_TYPES};
use super::finite;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Files next to the weights that define tokenization and generation defaults.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
];

/// Copies the tokenizer / generation files present in `from` into `to` (created if needed).
/// Returns the names copied.
pub fn copy_tokenizer_files(from: &Path, to: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let mut copied = vec![];
    for name in TOKENIZER_FILES {
        let src = from.join(name);
        if src.is_file() {
            std::fs::copy(&src, to.join(name)).with_context(|| {
                format!("copying {} to {}", src.display(), to.join(name).display())
            })?;
            copied.push(name.to_string());
        }
    }
    Ok(copied)
}

/// Reads and validates `<dir>/config.json`.
pub fn load_config(dir: &Path) -> Result<ModelConfig> {
    if !dir.is_dir() {
        bail!("model directory {} does not exist", dir.display());
    }
    let path = dir.join("config.json");
    if !path.is_file() {
        bail!(
            "{} has no config.json (expected a Hugging Face checkpoint of type {})",
            dir.display(),
            SUPPORTED_MODEL_TYPES.join(" or ")
        );
    }
    ModelConfig::from_file(&path)
}

/// The safetensors files of a checkpoint: `model.safetensors`, else the shards listed by
/// `model.safetensors.index.json`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        bail!(
            "{} has neither model.safetensors nor model.safetensors.index.json",
            dir.display()
        );
    }
    let text =
        std::fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", index.display()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| anyhow!("{}: missing object `weight_map`", index.display()))?;
    let files: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
    if files.is_empty() {
        bail!("{}: `weight_map` lists no files", index.display());
    }
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

/// Maps a safetensors dtype to candle's.
fn st_dtype(d: safetensors::Dtype, name: &str, file: &Path) -> Result<DType> {
    DType::try_from(d).map_err(|_| {
        anyhow!(
            "{}: tensor `{name}` has unsupported dtype {d:?}",
            file.display()
        )
    })
}

/// candle dtype for a transformers dtype name (`torch_dtype` / `dtype`): the names of
/// [`crate::config::DType`] (the one parser `model.dtype` and `--dtype` use), plus `float64`.
pub fn dtype_from_name(name: &str) -> Option<DType> {
    match name {
        "float64" | "f64" => Some(DType::F64),
        other => other
            .parse::<crate::config::DType>()
            .ok()
            .map(crate::config::DType::to_candle),
    }
}

/// transformers dtype name for a candle dtype.
pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "float32",
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        DType::F64 => "float64",
        _ => "float32",
    }
}

/// Checks `config`'s layer count against the tensors the checkpoint holds (headers only),
/// before anything is sized by it: a damaged `num_hidden_layers = 1000000000` would otherwise
/// enumerate a billion layers' parameters before finding the first one missing.
pub fn check_layers_present(dir: &Path, config: &ModelConfig) -> Result<()> {
    let mut layers = 0usize;
    for file in weight_files(dir)? {
        if !file.is_file() {
            bail!("safetensors file {} does not exist", file.display());
        }
        // SAFETY: read-only map of the header and views, dropped at the end of the iteration.
        let st =
            unsafe { candle_core::safetensors::MmapedSafetensors::new(&file) }.map_err(|e| {
                anyhow!(
                    "safetensors file {} is corrupt or truncated: {e}",
                    file.display()
                )
            })?;
        for (name, _) in st.tensors() {
            let index = name
                .strip_prefix("model.layers.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|n| n.parse::<usize>().ok());
            if let Some(i) = index {
                layers = layers.max(i + 1);
            }
        }
    }
    if config.num_hidden_layers > layers {
        bail!(
            "{}: num_hidden_layers = {} but the weights hold {layers} layers \
             (model.layers.0 to model.layers.{}); the config.json does not match its weights",
            dir.join("config.json").display(),
            config.num_hidden_layers,
            layers.saturating_sub(1)
        );
    }
    Ok(())
}

/// Loaded parameters converted to the compute dtype, plus each tensor's on-disk dtype.
pub(crate) struct LoadedWeights {
    pub tensors: HashMap<String, Tensor>,
    pub disk_dtypes: HashMap<String, DType>,
}

/// Reads the parameters named in `specs` from the checkpoint's safetensors files, checking
/// presence and shapes. Extra tensors (e.g. a redundant tied `lm_head.weight`) are ignored.
pub(crate) fn read_weights(
    dir: &Path,
    specs: &[(String, Vec<usize>)],
    dtype: DType,
    device: &Device,
) -> Result<LoadedWeights> {
    let files = weight_files(dir)?;
    let mut tensors = HashMap::new();
    let mut disk_dtypes = HashMap::new();
    let wanted: HashMap<&str, &Vec<usize>> = specs.iter().map(|(n, s)| (n.as_str(), s)).collect();
    for file in &files {
        if !file.is_file() {
            bail!("safetensors file {} does not exist", file.display());
        }
        // SAFETY: the map is read-only and dropped before returning; as with every mmap-based
        // loader, the file must not be modified concurrently.
        let st =
            unsafe { candle_core::safetensors::MmapedSafetensors::new(file) }.map_err(|e| {
                anyhow!(
                    "safetensors file {} is corrupt or truncated: {e}",
                    file.display()
                )
            })?;
        let mut views = Vec::new();
        for (name, view) in st.tensors() {
            let Some(shape) = wanted.get(name.as_str()) else {
                continue;
            };
            if view.shape() != shape.as_slice() {
                bail!(
                    "{}: tensor `{name}` has shape {:?}, the config implies {:?}",
                    file.display(),
                    view.shape(),
                    shape
                );
            }
            let disk = st_dtype(view.dtype(), &name, file)?;
            if !matches!(disk, DType::F32 | DType::F16 | DType::BF16 | DType::F64) {
                bail!(
                    "{}: tensor `{name}` is stored as {disk:?}; model weights must be floating \
                     point (F32, BF16, F16 or F64): the checkpoint is damaged or not a plain \
                     (unquantized) model",
                    file.display()
                );
            }
            views.push((name, view, disk));
        }
        // Decoded on every thread: most of a load is the kernel faulting in fresh pages for
        // the copies, and that work spreads over cores. Each tensor is checked for NaN and
        // infinities by the thread that decodes it (`finite`), unless the user opted out.
        let check = !finite::allow_non_finite();
        let decoded: Vec<(String, Tensor, DType)> = views
            .into_par_iter()
            .map(|(name, view, disk)| -> Result<(String, Tensor, DType)> {
                let bad = |(i, kind)| finite::error(file, &name, view.shape(), i, kind);
                let t = if disk == DType::F32 && dtype == DType::F32 && device.is_cpu() {
                    // One copy, straight into the parameter's own buffer: a variable, which
                    // the policy keeps as it is (a plain tensor would be copied into one).
                    // Checked block by block while the block is still in cache.
                    let bytes = view.data();
                    let mut data: Vec<f32> = Vec::with_capacity(bytes.len() / 4);
                    for block in bytes.chunks(4 * finite::BLOCK) {
                        let start = data.len();
                        data.extend(
                            block
                                .chunks_exact(4)
                                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                        );
                        if let Some((i, kind)) = check
                            .then(|| finite::first_non_finite_f32(&data[start..]))
                            .flatten()
                        {
                            return Err(bad((start + i, kind)));
                        }
                    }
                    candle_core::Var::from_vec(data, view.shape(), device)?.into_inner()
                } else {
                    if let Some(hit) = check
                        .then(|| finite::first_non_finite(view.data(), disk))
                        .flatten()
                    {
                        return Err(bad(hit));
                    }
                    Tensor::from_raw_buffer(view.data(), disk, view.shape(), &Device::Cpu)
                        .with_context(|| format!("{}: decoding tensor `{name}`", file.display()))?
                        .to_dtype(dtype)?
                        .to_device(device)?
                };
                Ok((name, t, disk))
            })
            .collect::<Result<_>>()?;
        for (name, t, disk) in decoded {
            disk_dtypes.insert(name.clone(), disk);
            tensors.insert(name, t);
        }
    }
    for (name, _) in specs {
        if !tensors.contains_key(name) {
            bail!(
                "checkpoint {} is missing tensor `{name}` (looked in {})",
                dir.display(),
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(LoadedWeights {
        tensors,
        disk_dtypes,
    })
}

/// Writes named tensors to one safetensors file with transformers' `format: pt` metadata.
pub(crate) fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let data = tensors.iter().map(|(n, t)| (n.as_str(), t));
    safetensors::serialize_to_file(data, Some(meta), path)
        .with_context(|| format!("writing {}", path.display()))
}
