//! LoRA adapters (Hu et al., 2021) in PEFT's conventions, so that what `grpo` trains loads in
//! `peft.PeftModel.from_pretrained` and the other way round.
//!
//! A targeted projection `y = x Wᵀ` becomes `y = x Wᵀ + s · (drop(x) Aᵀ) Bᵀ` with `A [r, in]`
//! Kaiming-uniform (PEFT's `kaiming_uniform_(a = √5)`, i.e. `U(±1/√in)`), `B [out, r]` zero (so
//! step 0 is the base model) and `s = lora_alpha / r` (`lora_alpha / √r` with `use_rslora`).
//! Only `A` and `B` are `Var`s: the base weights are plain tensors, and [`matmul_t`] multiplies
//! by them through an op whose backward skips their gradient (candle's `matmul` would compute
//! and keep one per frozen weight). Files: `adapter_config.json` + `adapter_model.safetensors`
//! with keys `base_model.model.<module>.lora_{A,B}.weight`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Shape, Tensor, Var};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::config::ModelConfig;
pub use crate::config::lora::{LoraConfig, TargetModules, LINEAR_MODULES};

/// File names of a PEFT adapter directory.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
const KEY_PREFIX: &str = "base_model.model.";

/// PEFT's `adapter_config.json` for a [`LoraConfig`].
impl LoraConfig {
    /// The adapter's config as PEFT writes it; `targets` are the adapted module names.
    pub(crate) fn to_peft_json(&self, base_model: &str, targets: &[String]) -> Value {
        let alpha = if self.lora_alpha.fract() == 0.0 {
            json!(self.lora_alpha as i64)
        } else {
            json!(self.lora_alpha)
        };
        json!({
            "alpha_pattern": {},
            "base_model_name_or_path": base_model,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "layers_pattern": null,
            "layers_to_transform": null,
            "lora_alpha": alpha,
            "lora_dropout": self.lora_dropout,
            "modules_to_save": null,
            "peft_type": "LORA",
            "r": self.r,
            "rank_pattern": {},
            "revision": null,
            "target_modules": targets,
            "task_type": "CAUSAL_LM",
            "use_dora": false,
            "use_rslora": self.use_rslora,
        })
    }

    /// Reads a PEFT `adapter_config.json`, refusing the options this implementation does not
    /// apply (they would change the model silently).
    pub fn from_peft_file(path: &Path) -> Result<LoraConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", path.display()))?;
        let p = path.display();
        let get = |k: &str| v.get(k).filter(|x| !x.is_null());
        match get("peft_type").and_then(Value::as_str) {
            Some("LORA") => {}
            other => bail!("{p}: peft_type is {other:?}, expected \"LORA\""),
        }
        let empty = |k: &str| match get(k) {
            None => true,
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Bool(b)) => !b,
            Some(Value::String(s)) => s == "none",
            _ => false,
        };
        for k in [
            "rank_pattern",
            "alpha_pattern",
            "layers_to_transform",
            "modules_to_save",
            "use_dora",
            "fan_in_fan_out",
            "bias",
            "layer_replication",
            "trainable_token_indices",
            "exclude_modules",
            "lora_bias",
            "use_qalora",
            "use_bdlora",
            "target_parameters",
            "alora_invocation_tokens",
        ] {
            if !empty(k) {
                bail!(
                    "{p}: `{k}` = {} is not supported (only plain LoRA on linear layers)",
                    v[k]
                );
            }
        }
        let r = get("r")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("{p}: `r` missing or not a positive integer"))?
            as usize;
        let target_modules = match get("target_modules") {
            Some(Value::String(s)) => TargetModules::Pattern(s.clone()),
            Some(Value::Array(a)) => TargetModules::List(
                a.iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| anyhow!("{p}: `target_modules` must list strings"))?,
            ),
            _ => bail!("{p}: `target_modules` missing"),
        };
        let cfg = LoraConfig {
            r,
            lora_alpha: get("lora_alpha").and_then(Value::as_f64).unwrap_or(8.0),
            lora_dropout: get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0),
            target_modules,
            use_rslora: get("use_rslora").and_then(Value::as_bool).unwrap_or(false),
        };
        if r == 0 {
            bail!("{p}: r = 0");
        }
        cfg.validate(&p.to_string())?;
        Ok(cfg)
    }
}

/// The base model directory named by an adapter's `base_model_name_or_path` (a local path, or
/// a hub id, fetched into the cache if needed).
pub fn base_model_of(dir: &Path) -> Result<std::path::PathBuf> {
    let base = base_model_name(dir)?;
    super::source::resolve_model_dir(&base, None).with_context(|| {
        format!(
            "{}: base_model_name_or_path `{base}`",
            dir.join(ADAPTER_CONFIG).display()
        )
    })
}

/// An adapter's `base_model_name_or_path`, as written.
pub fn base_model_name(dir: &Path) -> Result<String> {
    let path = dir.join(ADAPTER_CONFIG);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let base = v
        .get("base_model_name_or_path")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            anyhow!(
                "{}: no base_model_name_or_path; pass the base model and the adapter separately (--model BASE --adapter {})",
                path.display(),
                dir.display()
            )
        })?;
    Ok(base.to_string())
}

/// Switches shared by all adapters of one policy.
#[derive(Debug, Default)]
pub(crate) struct LoraControl {
    /// Set while a differentiable (training) forward runs: dropout applies only then.
    pub(crate) train: AtomicBool,
    dropout_seed: AtomicU64,
    dropout_calls: AtomicU64,
}

/// One projection's adapter.
#[derive(Debug, Clone)]
pub(crate) struct LoraLayer {
    a: Tensor,
    b: Tensor,
    scale: f64,
    dropout: f64,
    ctl: Arc<LoraControl>,
}

impl LoraLayer {
    /// `(A, B, scale, dropout)`, for the fused op (`model::lora_op`).
    pub(crate) fn parts(&self) -> (&Tensor, &Tensor, f64, f64) {
        (&self.a, &self.b, self.scale, self.dropout)
    }

    /// `y + s · (drop(x) Aᵀ) Bᵀ` for `x [N, in]`, `y [N, out]`.
    fn add_delta(&self, x: &Tensor, y: Tensor) -> Result<Tensor> {
        let x = if self.dropout > 0.0 && self.ctl.train.load(Ordering::Relaxed) {
            let call = self.ctl.dropout_calls.fetch_add(1, Ordering::Relaxed);
            let seed = self.ctl.dropout_seed.load(Ordering::Relaxed);
            (x * dropout_mask(
                x,
                self.dropout,
                seed ^ call.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            )?)?
        } else {
            x.clone()
        };
        let d = x.matmul(&self.a.t()?)?.matmul(&self.b.t()?)?;
        Ok((y + (d * self.scale)?)?)
    }
}

/// `W + (s·B)·A`, detached: the adapted weight. The sampler's merge and the bf16 trainer
/// (`lora_op`) both compute it here, so they round the same f32 values to bf16.
pub(crate) fn merge_weight(w: &Tensor, a: &Tensor, b: &Tensor, scale: f64) -> Result<Tensor> {
    Ok((w.detach() + (b.detach() * scale)?.matmul(&a.detach())?)?)
}

/// Inverted-dropout mask (`0` or `1/(1-p)`), seeded so a resumed run draws the same masks.
fn dropout_mask(x: &Tensor, p: f64, seed: u64) -> Result<Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let keep = (1.0 / (1.0 - p)) as f32;
    let v: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.random::<f64>() < p { 0.0 } else { keep })
        .collect();
    Ok(Tensor::from_vec(v, x.shape(), x.device())?.to_dtype(x.dtype())?)
}

/// The projection hook: adds the adapter's term to `y = x Wᵀ` when there is one.
pub(crate) fn apply(lora: Option<&LoraLayer>, x: &Tensor, y: Tensor) -> Result<Tensor> {
    match lora {
        Some(l) => l.add_delta(x, y),
        None => Ok(y),
    }
}

/// `x Wᵀ` for `x [N, in]`, `w [out, in]`. A trainable `w` (a `Var`) goes through candle's
/// matmul; a frozen one through [`FrozenMatmul`], which gives `x` its gradient and computes
/// none for `w`.
pub(crate) fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if w.is_variable() || !x.track_op() || !(w.device().is_cpu() || w.device().is_cuda()) {
        return Ok(x.matmul(&w.t()?)?);
    }
    Ok(x.contiguous()?.apply_op2(&w.contiguous()?, FrozenMatmul)?)
}

/// `x Wᵀ` with a backward for `x` only.
struct FrozenMatmul;

fn frozen_fwd<S: BackendStorage>(
    s1: &S,
    l1: &Layout,
    s2: &S,
    l2: &Layout,
) -> candle_core::Result<(S, Shape)> {
    let (m, k) = l1.shape().dims2()?;
    let (n, k2) = l2.shape().dims2()?;
    if k != k2 {
        candle_core::bail!("frozen matmul: x [{m}, {k}] against w [{n}, {k2}]");
    }
    let wt = l2.transpose(0, 1)?;
    Ok((s1.matmul(s2, (1, m, n, k), l1, &wt)?, Shape::from((m, n))))
}

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        frozen_fwd(s1, l1, s2, l2)
    }

    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        frozen_fwd(s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(w)?), None))
    }
}

/// A policy's adapters: the trainable `A`, `B` of every targeted projection, by PEFT key.
#[derive(Debug, Clone)]
pub(crate) struct Adapter {
    pub config: LoraConfig,
    /// Module path (`model.layers.0.self_attn.q_proj`) → (A, B).
    layers: BTreeMap<String, (Var, Var)>,
    pub ctl: Arc<LoraControl>,
}

/// `(module path, [out, in])` of every linear projection of the model.
fn linear_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    super::params::parameter_specs(cfg)
        .into_iter()
        .filter_map(|(name, shape)| {
            let module = name.strip_suffix(".weight")?;
            let last = module.rsplit('.').next()?;
            LINEAR_MODULES
                .contains(&last)
                .then(|| (module.to_string(), shape))
        })
        .collect()
}

impl Adapter {
    /// Fresh adapters: A Kaiming-uniform as PEFT (`U(±1/√in)`, deterministic in `seed`), B zero.
    pub fn init(
        config: &LoraConfig,
        model: &ModelConfig,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Adapter> {
        config.validate("lora")?;
        if !config.enabled() {
            bail!("lora.r: expected a positive rank to add an adapter");
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let r = config.r;
        let mut layers = BTreeMap::new();
        for (module, shape) in linear_shapes(model) {
            if !config.targets(&module) {
                continue;
            }
            let (out, inp) = (shape[0], shape[1]);
            let bound = 1.0 / (inp as f64).sqrt();
            let a: Vec<f32> = (0..r * inp)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect();
            let a = Tensor::from_vec(a, (r, inp), device)?.to_dtype(dtype)?;
            let b = Tensor::zeros((out, r), dtype, device)?;
            layers.insert(module, (Var::from_tensor(&a)?, Var::from_tensor(&b)?));
        }
        if layers.is_empty() {
            bail!(
                "lora.target_modules: {:?} matches no linear layer of the model",
                config.target_modules
            );
        }
        Ok(Adapter {
            config: config.clone(),
            layers,
            ctl: Arc::default(),
        })
    }

    /// Reads a PEFT adapter directory for a model of config `model`.
    pub fn load(dir: &Path, model: &ModelConfig, dtype: DType, device: &Device) -> Result<Adapter> {
        let cfg_path = dir.join(ADAPTER_CONFIG);
        if !cfg_path.is_file() {
            bail!(
                "{} has no {ADAPTER_CONFIG}: not a LoRA adapter directory",
                dir.display()
            );
        }
        let config = LoraConfig::from_peft_file(&cfg_path)?;
        let file = dir.join(ADAPTER_WEIGHTS);
        if !file.is_file() {
            bail!("{}: {ADAPTER_WEIGHTS} is missing", dir.display());
        }
        let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu)
            .with_context(|| format!("reading {}", file.display()))?;
        // Adapters are small: checked after decoding, like the base weights (`finite`).
        if !super::finite::allow_non_finite() {
            for (name, t) in &tensors {
                let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                if let Some((i, kind)) = super::finite::first_non_finite_f32(&v) {
                    return Err(super::finite::error(&file, name, t.dims(), i, kind));
                }
            }
        }
        let shapes: HashMap<String, Vec<usize>> = linear_shapes(model).into_iter().collect();
        let mut layers = BTreeMap::new();
        let mut keys: Vec<String> = tensors.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let Some(module) = key
                .strip_prefix(KEY_PREFIX)
                .and_then(|k| k.strip_suffix(".lora_A.weight"))
            else {
                if key.ends_with(".lora_B.weight") {
                    continue;
                }
                bail!(
                    "{}: unexpected tensor `{key}` (expected {KEY_PREFIX}<module>.lora_A/B.weight)",
                    file.display()
                );
            };
            let shape = shapes.get(module).ok_or_else(|| {
                anyhow!(
                    "{}: `{key}` adapts `{module}`, which is not a linear layer of this model",
                    file.display()
                )
            })?;
            let b_key = format!("{KEY_PREFIX}{module}.lora_B.weight");
            let a = tensors.remove(&key).context("lora_A")?;
            let b = tensors
                .remove(&b_key)
                .ok_or_else(|| anyhow!("{}: `{key}` has no `{b_key}`", file.display()))?;
            let (out, inp, r) = (shape[0], shape[1], config.r);
            if a.dims() != [r, inp] || b.dims() != [out, r] {
                bail!(
                    "{}: `{module}` has lora_A {:?} and lora_B {:?}; r = {r} and the model imply [{r}, {inp}] and [{out}, {r}]",
                    file.display(),
                    a.dims(),
                    b.dims()
                );
            }
            let a = a.to_dtype(dtype)?.to_device(device)?;
            let b = b.to_dtype(dtype)?.to_device(device)?;
            layers.insert(
                module.to_string(),
                (Var::from_tensor(&a)?, Var::from_tensor(&b)?),
            );
        }
        if layers.is_empty() {
            bail!("{}: holds no lora_A / lora_B tensors", file.display());
        }
        Ok(Adapter {
            config,
            layers,
            ctl: Arc::default(),
        })
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` into `dir` (created).
    pub fn save(&self, dir: &Path, base_model: &str) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let targets: Vec<String> = {
            let mut t: Vec<String> = self
                .layers
                .keys()
                .filter_map(|m| m.rsplit('.').next().map(str::to_string))
                .collect();
            t.sort();
            t.dedup();
            t
        };
        let json = serde_json::to_string_pretty(&self.config.to_peft_json(base_model, &targets))?;
        std::fs::write(dir.join(ADAPTER_CONFIG), json + "\n")
            .with_context(|| format!("writing {}", dir.join(ADAPTER_CONFIG).display()))?;
        let tensors = self
            .named_vars()
            .into_iter()
            .map(|(k, v)| Ok((k, v.as_tensor().to_device(&Device::Cpu)?)))
            .collect::<Result<Vec<_>>>()?;
        super::checkpoint::write_safetensors(&dir.join(ADAPTER_WEIGHTS), &tensors)
    }

    /// `(PEFT key, Var)` of every A and B, sorted by key.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let mut v = Vec::with_capacity(2 * self.layers.len());
        for (m, (a, b)) in &self.layers {
            v.push((format!("{KEY_PREFIX}{m}.lora_A.weight"), a.clone()));
            v.push((format!("{KEY_PREFIX}{m}.lora_B.weight"), b.clone()));
        }
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    }

    /// The layer for the projection at `module`, if it is adapted.
    pub fn layer(&self, module: &str) -> Option<LoraLayer> {
        let (a, b) = self.layers.get(module)?;
        Some(LoraLayer {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scale: self.config.scaling(),
            dropout: self.config.lora_dropout,
            ctl: self.ctl.clone(),
        })
    }

    /// `W + s·B·A` for the projection at `module` with base weight `w`, if it is adapted.
    pub fn merge(&self, module: &str, w: &Tensor) -> Result<Option<Tensor>> {
        let Some((a, b)) = self.layers.get(module) else {
            return Ok(None);
        };
        Ok(Some(merge_weight(
            w,
            a.as_tensor(),
            b.as_tensor(),
            self.config.scaling(),
        )?))
    }

    /// Seeds the dropout masks of the following training forwards (a pure function of the
    /// seed and the order of calls, so resumed runs draw the same masks).
    pub fn set_dropout_seed(&self, seed: u64) {
        self.ctl.dropout_seed.store(seed, Ordering::Relaxed);
        self.ctl.dropout_calls.store(0, Ordering::Relaxed);
    }
}

/// Sets the control's training flag for its lifetime.
pub(crate) struct TrainGuard(Arc<LoraControl>);

impl TrainGuard {
    pub(crate) fn new(ctl: &Arc<LoraControl>) -> TrainGuard {
        ctl.train.store(true, Ordering::Relaxed);
        TrainGuard(ctl.clone())
    }
}

impl Drop for TrainGuard {
    fn drop(&mut self) {
        self.0.train.store(false, Ordering::Relaxed);
    }
}
