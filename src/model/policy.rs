//! The trainable policy: a decoder whose parameters are `Var`s in a `VarMap`.

use super::checkpoint::{self, dtype_from_name, dtype_name};
use super::config::ModelConfig;
use super::infer::LogitsAt;
use super::kernels::bf16::Precision;
use super::kv_cache::KvCache;
use super::lm_head_op::LmHeadLogprobs;
use super::lora::{Adapter, LoraConfig, TrainGuard};
use super::qwen2::{parameter_specs, SharedBatch, Transformer};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;

/// A causal LM whose every parameter is a trainable `Var` registered in `varmap` under its
/// Hugging Face name.
pub struct Policy {
    pub config: ModelConfig,
    pub varmap: VarMap,
    pub device: Device,
    pub dtype: DType,
    model: Transformer,
    /// On-disk dtype of each tensor, so `save` writes what was loaded.
    disk_dtypes: HashMap<String, DType>,
    /// LoRA adapters: when present, they are the only trainable parameters and the base
    /// weights in `model` are frozen (`model::lora`).
    lora: Option<Adapter>,
}

fn check_dtype_device(dtype: DType) -> Result<()> {
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64) {
        bail!("unsupported compute dtype {dtype:?} (use f32, f16 or bf16)");
    }
    Ok(())
}

/// The dtype the parameters are held in and the precision of the weight products for a
/// requested compute dtype. bf16 on the CPU is mixed precision: f32 parameters (the master
/// weights the optimizer updates), bf16 products with f32 accumulation (`bf16_copies`).
pub fn storage_and_precision(dtype: DType, device: &Device) -> (DType, Precision) {
    if dtype == DType::BF16 && device.is_cpu() {
        (DType::F32, Precision::Bf16)
    } else {
        (dtype, Precision::F32)
    }
}

impl Policy {
    fn from_tensors(
        config: ModelConfig,
        tensors: HashMap<String, Tensor>,
        disk_dtypes: HashMap<String, DType>,
        dtype: DType,
        device: &Device,
        precision: Precision,
    ) -> Result<Policy> {
        let varmap = VarMap::new();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| anyhow::anyhow!("VarMap lock poisoned"))?;
            for (name, t) in tensors {
                data.insert(name, Var::from_tensor(&t)?);
            }
        }
        let model = {
            let data = varmap
                .data()
                .lock()
                .map_err(|_| anyhow::anyhow!("VarMap lock poisoned"))?;
            let get = |name: &str| -> Result<Tensor> {
                data.get(name)
                    .map(|v| v.as_tensor().clone())
                    .with_context(|| format!("parameter `{name}` missing"))
            };
            let mut m = Transformer::new(&config, &get)?;
            m.precision = precision;
            m
        };
        Ok(Policy {
            config,
            varmap,
            device: device.clone(),
            dtype,
            model,
            disk_dtypes,
            lora: None,
        })
    }

    /// Load from a local HF directory (config.json + model.safetensors or
    /// model.safetensors.index.json shards).
    /// A PEFT adapter directory (`adapter_config.json`, no `config.json`) loads its
    /// `base_model_name_or_path` with the adapter on top.
    /// `dtype` bf16 on the CPU holds f32 weights and multiplies in bf16
    /// ([`storage_and_precision`]).
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Policy> {
        check_dtype_device(dtype)?;
        if dir.join(super::lora::ADAPTER_CONFIG).is_file() && !dir.join("config.json").is_file() {
            let base = super::lora::base_model_of(dir)?;
            let mut p = Self::load(&base, dtype, device)
                .with_context(|| format!("loading the base model of adapter {}", dir.display()))?;
            p.load_adapter(dir)?;
            return Ok(p);
        }
        let config = checkpoint::load_config(dir)?;
        checkpoint::check_layers_present(dir, &config)?;
        let specs = parameter_specs(&config);
        let (dtype, prec) = storage_and_precision(dtype, device);
        let w = checkpoint::read_weights(dir, &specs, dtype, device)?;
        Self::from_tensors(config, w.tensors, w.disk_dtypes, dtype, device, prec)
    }

    /// Random init (normal std=config.initializer_range, norms = 1, biases 0), deterministic
    /// in `seed`.
    pub fn new_random(
        config: ModelConfig,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Policy> {
        check_dtype_device(dtype)?;
        let (dtype, prec) = storage_and_precision(dtype, device);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let std = config.initializer_range as f32;
        let disk = config
            .torch_dtype
            .as_deref()
            .and_then(dtype_from_name)
            .unwrap_or(dtype);
        let mut tensors = HashMap::new();
        let mut disk_dtypes = HashMap::new();
        for (name, shape) in parameter_specs(&config) {
            let n: usize = shape.iter().product();
            let data: Vec<f32> =
                if name.ends_with("layernorm.weight") || name == "model.norm.weight" {
                    vec![1.0; n]
                } else if name.ends_with(".bias") {
                    vec![0.0; n]
                } else {
                    (0..n).map(|_| std * standard_normal(&mut rng)).collect()
                };
            let t = if dtype == DType::F32 && device.is_cpu() {
                Var::from_vec(data, shape, device)?.into_inner()
            } else {
                Tensor::from_vec(data, shape, device)?.to_dtype(dtype)?
            };
            disk_dtypes.insert(name.clone(), disk);
            tensors.insert(name, t);
        }
        Self::from_tensors(config, tensors, disk_dtypes, dtype, device, prec)
    }

    /// Writes config.json + model.safetensors in HF layout atomically (temp dir in the same
    /// parent + rename), tensors with their original names and on-disk dtype. Copies nothing
    /// else: the caller copies tokenizer files via `copy_tokenizer_files`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.save_weights(dir, None)
    }

    /// As [`Policy::save`], but with `weights` (name → tensor, written as given) in place of
    /// the model's own: a half-precision run saves the optimizer's f32 master weights, which
    /// hold updates too small to show in bf16/f16.
    pub fn save_weights(&self, dir: &Path, weights: Option<&[(String, Tensor)]>) -> Result<()> {
        let overrides: HashMap<&str, &Tensor> = weights
            .unwrap_or_default()
            .iter()
            .map(|(n, t)| (n.as_str(), t))
            .collect();
        // Staged in `dir` itself when it exists (a run's output folder: its next run, holding
        // the folder's lock, removes what a killed save leaves), else beside it (renamed into
        // place whole). Never in a parent that other runs share.
        let staging_in = if dir.is_dir() {
            dir.to_path_buf()
        } else {
            match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => std::path::PathBuf::from("."),
            }
        };
        std::fs::create_dir_all(&staging_in)
            .with_context(|| format!("creating {}", staging_in.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(".grpo-save-")
            .tempdir_in(&staging_in)
            .with_context(|| {
                format!("creating a temporary directory in {}", staging_in.display())
            })?;

        let mut config = self.config.clone();
        let default_disk = config
            .torch_dtype
            .as_deref()
            .and_then(dtype_from_name)
            .unwrap_or(self.dtype);
        if config.torch_dtype.is_none() {
            config.torch_dtype = Some(dtype_name(default_disk).to_string());
        }
        let json = serde_json::to_string_pretty(&config.to_json())?;
        std::fs::write(tmp.path().join("config.json"), json + "\n")
            .with_context(|| format!("writing config.json in {}", tmp.path().display()))?;

        let mut tensors = vec![];
        for (name, var) in self.named_vars() {
            let t = match overrides.get(name.as_str()) {
                Some(&t) => t.to_device(&Device::Cpu)?,
                None => {
                    let disk = self.disk_dtypes.get(&name).copied().unwrap_or(default_disk);
                    var.as_tensor().to_dtype(disk)?.to_device(&Device::Cpu)?
                }
            };
            tensors.push((name, t));
        }
        checkpoint::write_safetensors(&tmp.path().join("model.safetensors"), &tensors)?;

        if !dir.exists() {
            let tmp_path = tmp.keep();
            std::fs::rename(&tmp_path, dir)
                .with_context(|| format!("renaming {} to {}", tmp_path.display(), dir.display()))?;
        } else {
            // Each file is replaced atomically; other files in `dir` are left alone.
            for name in ["model.safetensors", "config.json"] {
                std::fs::rename(tmp.path().join(name), dir.join(name))
                    .with_context(|| format!("replacing {}", dir.join(name).display()))?;
            }
        }
        Ok(())
    }

    /// Differentiable logits [B,T,V] (f32) for input_ids [B,T] (u32); attention_mask [B,T]
    /// (u32 or f32, 1 = token, 0 = left padding) or None = all ones.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let h = self.model.forward_train(input_ids, attention_mask)?;
        self.model.lm_head(&h)
    }

    /// Inference with cache: appends input_ids [B,T] (+ its mask [B,T], None = all ones) to
    /// the cache and returns logits [B,T,V] f32 for the new positions.
    pub fn forward_cached(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        self.model
            .forward_cached_logits(input_ids, attention_mask, cache, LogitsAt::All)
    }

    /// Like `forward_cached` but returns only the last position's logits `[B, V]` (f32),
    /// skipping the output projection of the rest of a prefill.
    pub fn forward_cached_last(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        self.model
            .forward_cached_logits(input_ids, attention_mask, cache, LogitsAt::Last)
    }

    /// [`forward_cached_last`](Self::forward_cached_last) on host data, the sampler's decode
    /// step: `ids` `[b, t]` row-major, `mask` 1 = token (None = all); writes the last
    /// position's logits `[b, V]` row-major into `logits` (resized, so one buffer serves every
    /// step). No tensor is built on a host (CPU f32) cache.
    pub fn forward_cached_last_host(
        &self,
        ids: &[u32],
        mask: Option<&[u8]>,
        b: usize,
        t: usize,
        cache: &mut KvCache,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        self.model
            .forward_cached_host(ids, mask, b, t, cache, LogitsAt::Last, logits)
    }

    /// Log-prob of each next token: logits/temperature at position t scored at
    /// input_ids[t+1]; returns [B, T-1] f32, differentiable.
    pub fn token_logprobs(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        temperature: f64,
    ) -> Result<Tensor> {
        let (_, t) = input_ids
            .dims2()
            .context("input_ids must have shape [batch, seq_len]")?;
        if t < 2 {
            bail!("token_logprobs needs at least 2 tokens per row, got {t}");
        }
        if temperature <= 0.0 || !temperature.is_finite() {
            bail!("temperature must be positive and finite, got {temperature}");
        }
        let h = self.model.forward_train(input_ids, attention_mask)?;
        let targets = input_ids.narrow(1, 1, t - 1)?.to_dtype(DType::U32)?;
        if self.fused_head(&h) {
            let h = h.narrow(1, 0, t - 1)?;
            let (lp, _) = self.head_logprobs(&h, &targets, temperature, None)?;
            return Ok(lp);
        }
        // The last position predicts nothing we score: skip its output projection.
        let logits = self.model.lm_head(&h.narrow(1, 0, t - 1)?)?;
        let logits = if temperature != 1.0 {
            (logits / temperature)?
        } else {
            logits
        };
        let targets = targets.contiguous()?.unsqueeze(2)?;
        let picked = logits.gather(&targets, 2)?.squeeze(2)?;
        let max = logits.max_keepdim(D::Minus1)?.detach();
        let lse = logits
            .broadcast_sub(&max)?
            .exp()?
            .sum_keepdim(D::Minus1)?
            .log()?
            .add(&max)?
            .squeeze(2)?;
        Ok((picked - lse)?)
    }

    /// Log-probs `[B, L]` (differentiable) of `targets [B, L]` predicted at positions
    /// `start .. start + L`, under `softmax(logits / temperature + vocab_bias)`, and the
    /// entropy `[B, L]` of that distribution (detached, unless an [`EntropyGrad`] guard is
    /// alive on this thread). The output projection runs only on
    /// those L positions and the log-softmax is one fused pass, so this is the cheap way to
    /// score completions after a prompt (`start = prompt_len - 1`). `vocab_bias` is `[V]`.
    pub fn completion_logprobs(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        start: usize,
        targets: &Tensor,
        temperature: f64,
        vocab_bias: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (b, t) = input_ids
            .dims2()
            .context("input_ids must have shape [batch, seq_len]")?;
        let (tb, l) = targets
            .dims2()
            .context("targets must have shape [batch, completion_len]")?;
        if tb != b || start + l > t {
            bail!(
                "completion_logprobs: targets {:?} at start {start} do not fit input_ids {:?}",
                targets.dims(),
                input_ids.dims()
            );
        }
        if temperature <= 0.0 || !temperature.is_finite() {
            bail!("temperature must be positive and finite, got {temperature}");
        }
        // The trainer's loss path: the only one where LoRA dropout applies (as in PEFT's
        // train mode; every other forward is eval mode).
        let _train = self.train_mode();
        let h = self.model.forward_train(input_ids, attention_mask)?;
        self.logprobs_from_hidden(&h.narrow(1, start, l)?, targets, temperature, vocab_bias)
    }

    /// [`Policy::completion_logprobs`] with each group's prompt computed once: rows are
    /// (prompt, completion) pairs, and adjacent rows with equal prompts share its forward and
    /// backward (`qwen2::shared`); with `tree`, so do their common completion prefixes. Returns log-probs and entropy `[R, Lc]` (`Lc` the longest
    /// completion, at least 1; padding targets are `pad`) and the tokens the decoder ran.
    /// Equal to the padded forward of `trainer::rollout::pack` up to float rounding.
    pub fn completion_logprobs_shared(
        &self,
        prompts: &[&[u32]],
        completions: &[&[u32]],
        pad: u32,
        temperature: f64,
        vocab_bias: Option<&Tensor>,
        tree: bool,
    ) -> Result<(Tensor, Tensor, usize)> {
        if temperature <= 0.0 || !temperature.is_finite() {
            bail!("temperature must be positive and finite, got {temperature}");
        }
        let sb = SharedBatch::new(prompts, completions, pad, tree)?;
        let _train = self.train_mode();
        let h = self.model.forward_shared(&sb, &self.device)?;
        let (r, lc) = (sb.rows(), sb.completion_len);
        let head = Tensor::from_slice(&sb.head, r * lc, &self.device)?;
        let h = h.index_select(&head, 0)?.reshape((r, lc, h.dim(1)?))?;
        let targets = Tensor::from_slice(&sb.targets, (r, lc), &self.device)?;
        let (logp, entropy) = self.logprobs_from_hidden(&h, &targets, temperature, vocab_bias)?;
        Ok((logp, entropy, sb.tokens()))
    }

    /// Log-probs and entropy `[B, L]` of `targets [B, L]` from the hidden states `[B, L, H]`
    /// that predict them.
    fn logprobs_from_hidden(
        &self,
        h: &Tensor,
        targets: &Tensor,
        temperature: f64,
        vocab_bias: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let targets = targets.to_dtype(DType::U32)?;
        if self.fused_head(h) {
            return self.head_logprobs(h, &targets, temperature, vocab_bias);
        }
        let logits = self.model.lm_head(h)?;
        let (z, inv_t) = match vocab_bias {
            Some(bias) => ((logits / temperature)?.broadcast_add(bias)?, 1.0f32),
            None => (logits, (1.0 / temperature) as f32),
        };
        let z = (z * inv_t as f64)?;
        let logsm = candle_nn::ops::log_softmax(&z, D::Minus1)?;
        let logp = logsm
            .gather(&targets.contiguous()?.unsqueeze(2)?, 2)?
            .squeeze(2)?;
        let ls = if entropy_grad_on() {
            logsm.clone()
        } else {
            logsm.detach()
        };
        let entropy = (ls.exp()? * &ls)?.sum(D::Minus1)?.neg()?;
        Ok((logp, entropy))
    }

    /// Whether the output projection and log-softmax run as one chunked op (f32 on CPU). LoRA
    /// adapts no output projection, so adapted models use it too (with a frozen head).
    fn fused_head(&self, hidden: &Tensor) -> bool {
        self.model.fused
            && hidden.device().is_cpu()
            && hidden.dtype() == DType::F32
            && self.model.lm_head_weight().dtype() == DType::F32
    }

    /// `(log-probs, entropy)` `[B, L]` of `targets [B, L]` (u32) predicted from the hidden
    /// states `[B, L, H]`, through `LmHeadLogprobs`: the `[tokens × vocab]` logits are only
    /// ever held one vocabulary block at a time.
    fn head_logprobs(
        &self,
        hidden: &Tensor,
        targets: &Tensor,
        temperature: f64,
        vocab_bias: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (b, l, hd) = hidden.dims3()?;
        let h = hidden.contiguous()?.reshape((b * l, hd))?;
        let bias = match vocab_bias {
            Some(t) => Some(std::sync::Arc::new(
                t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
            )),
            None => None,
        };
        let weight = self.model.lm_head_weight().contiguous()?;
        let w = self.model.mixed().head(self.model.lm_head_weight())?;
        let op = LmHeadLogprobs {
            inv_temperature: (1.0 / temperature) as f32,
            bias,
            block_cols: 0,
            // Only when a backward will follow (no graph, no backward to reuse them in).
            keep_logits: h.track_op() || weight.track_op(),
            saved: Default::default(),
            w,
        };
        let out = h.apply_op3(&weight, &targets.flatten_all()?.contiguous()?, op)?;
        let logp = out.narrow(1, 0, 1)?.reshape((b, l))?;
        let ent = if entropy_grad_on() { out } else { out.detach() };
        let entropy = ent.narrow(1, 1, 1)?.reshape((b, l))?;
        Ok((logp, entropy))
    }

    /// Total number of scalar parameters (a tied head counted once).
    pub fn num_parameters(&self) -> usize {
        self.named_vars()
            .iter()
            .map(|(_, v)| v.as_tensor().elem_count())
            .sum()
    }

    /// All parameters sorted by name (deterministic order for optimizers and tests).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let mut v: Vec<(String, Var)> = match self.varmap.data().lock() {
            Ok(d) => d.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(p) => p
                .into_inner()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// An independent copy with its own parameter storage (e.g. a frozen reference model).
    pub fn deep_clone(&self) -> Result<Policy> {
        let tensors = self
            .named_vars()
            .into_iter()
            .map(|(n, v)| -> Result<(String, Tensor)> { Ok((n, v.as_tensor().copy()?)) })
            .collect::<Result<HashMap<_, _>>>()?;
        Self::from_tensors(
            self.config.clone(),
            tensors,
            self.disk_dtypes.clone(),
            self.dtype,
            &self.device,
            self.model.precision,
        )
    }

    /// Switches the training path between the fused CPU ops (default; hand-written backward)
    /// and the same maths composed from basic candle ops (used on other devices). For tests
    /// and benchmarks.
    #[doc(hidden)]
    pub fn set_fused_ops(&mut self, on: bool) {
        self.model.fused = on;
    }

    /// The precision of the weight products: bf16 for `model.dtype = "bf16"` on the CPU
    /// (f32 parameters, bf16 copies), else f32.
    pub fn precision(&self) -> Precision {
        self.model.precision
    }

    /// Builds the bf16 weight copies the sampler multiplies by now, rather than in the first
    /// forward: the bf16 conversion belongs to loading a model for sampling (`grpo generate`,
    /// `grpo eval`), as transformers converts inside `from_pretrained`. A no-op in f32 and for
    /// a policy with adapters (its sampler runs a merged copy, see [`Policy::for_sampling`]).
    pub fn prepare_sampling_weights(&self) -> Result<()> {
        if self.lora.is_some() {
            return Ok(());
        }
        self.model.bf16_weights().map(|_| ())
    }

    /// Tells the policy its weights were changed in place (an optimizer step): the bf16
    /// copies are rebuilt from the new f32 values on next use. Every in-place update must
    /// call this, or a bf16 forward would use the old weights.
    pub fn weights_changed(&self) {
        self.model.copies.clear();
    }

    /// Adds fresh LoRA adapters (`model::lora`): from now on only they are trained, the base
    /// weights are frozen, and the model equals the base until they are updated.
    pub fn add_lora(&mut self, config: &LoraConfig, seed: u64) -> Result<()> {
        let adapter = Adapter::init(config, &self.config, seed, self.dtype, &self.device)?;
        self.attach(adapter)
    }

    /// Loads a PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`)
    /// onto this base model, replacing any adapter it had.
    pub fn load_adapter(&mut self, dir: &Path) -> Result<()> {
        let adapter = Adapter::load(dir, &self.config, self.dtype, &self.device)?;
        self.attach(adapter)
    }

    fn attach(&mut self, adapter: Adapter) -> Result<()> {
        let mut model = self.frozen_model()?;
        model.fused = self.model.fused;
        for (path, lin) in model.linears_mut() {
            lin.lora = adapter.layer(&path);
        }
        self.model = model;
        self.lora = Some(adapter);
        // Merged copies of a previous adapter are stale.
        self.model.copies.clear();
        Ok(())
    }

    /// The decoder over this policy's weights as frozen (non-`Var`) tensors, sharing storage.
    fn frozen_model(&self) -> Result<Transformer> {
        let vars: HashMap<String, Var> = self.named_vars().into_iter().collect();
        let get = |name: &str| -> Result<Tensor> {
            vars.get(name)
                .map(|v| v.as_tensor().detach())
                .with_context(|| format!("parameter `{name}` missing"))
        };
        let mut m = Transformer::new(&self.config, &get)?;
        // Same storage, so the same bf16 copies.
        m.precision = self.model.precision;
        m.copies = self.model.copies.clone();
        Ok(m)
    }

    /// The LoRA config when this policy carries adapters.
    pub fn lora_config(&self) -> Option<&LoraConfig> {
        self.lora.as_ref().map(|a| &a.config)
    }

    /// What the optimizer updates: the adapters' A and B under their PEFT keys when there are
    /// adapters, else every parameter.
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        match &self.lora {
            Some(a) => a.named_vars(),
            None => self.named_vars(),
        }
    }

    /// Writes the adapters in PEFT layout into `dir`; `base_model` goes into the config's
    /// `base_model_name_or_path`. Fails when there are none.
    pub fn save_adapter(&self, dir: &Path, base_model: &str) -> Result<()> {
        match &self.lora {
            Some(a) => a.save(dir, base_model),
            None => bail!("this policy has no LoRA adapter to save"),
        }
    }

    /// The base model with the adapters switched off, sharing this policy's weights (no
    /// copy): the KL reference of a LoRA run. Without adapters, a shallow copy of the policy.
    pub fn without_adapter(&self) -> Result<Policy> {
        let model = if self.lora.is_some() {
            self.frozen_model()?
        } else {
            self.model.clone()
        };
        Ok(self.with_model(model))
    }

    /// A plain model with the adapters merged into its weights (`W + s·B·A`): what
    /// `grpo export --merge` saves, and what the sampler runs. Only adapted weights are new
    /// tensors; the others are shared with this policy.
    pub fn merged(&self) -> Result<Policy> {
        let Some(adapter) = &self.lora else {
            return self.without_adapter();
        };
        let mut tensors = HashMap::new();
        for (name, var) in self.named_vars() {
            let module = name.strip_suffix(".weight").unwrap_or("");
            let t = match adapter.merge(module, var.as_tensor())? {
                Some(m) => m,
                None => var.as_tensor().clone(),
            };
            tensors.insert(name, t);
        }
        let mut p = Self::from_tensors(
            self.config.clone(),
            tensors,
            self.disk_dtypes.clone(),
            self.dtype,
            &self.device,
            self.model.precision,
        )?;
        p.model.fused = self.model.fused;
        Ok(p)
    }

    /// What the sampler should run instead of this policy: the adapters merged into the
    /// weights (`Some`), or this policy itself (`None`, no adapters). Merging costs one
    /// `B·A` product per adapted weight per call; applying the adapters per decoded token
    /// instead costs three small ops per projection per token, measured slower (README).
    pub fn for_sampling(&self) -> Result<Option<Policy>> {
        match self.lora {
            Some(_) => Ok(Some(self.merged()?)),
            None => Ok(None),
        }
    }

    /// The same weights (shared storage) as plain tensors: a forward through it records no
    /// graph and keeps no activations for a backward, as under `torch.no_grad()`. `None` for
    /// a policy with adapters (their weights live in the adapter).
    pub fn without_grad(&self) -> Result<Option<Policy>> {
        if self.lora.is_some() {
            return Ok(None);
        }
        Ok(Some(self.with_model(self.frozen_model()?)))
    }

    /// This policy's weights and names around another decoder over them, without adapters.
    fn with_model(&self, mut model: Transformer) -> Policy {
        model.fused = self.model.fused;
        Policy {
            config: self.config.clone(),
            varmap: self.varmap.clone(),
            device: self.device.clone(),
            dtype: self.dtype,
            model,
            disk_dtypes: self.disk_dtypes.clone(),
            lora: None,
        }
    }

    /// Seeds LoRA dropout for the next training forwards (no-op without adapters or dropout).
    pub fn set_dropout_seed(&self, seed: u64) {
        if let Some(a) = &self.lora {
            a.set_dropout_seed(seed);
        }
    }

    fn train_mode(&self) -> Option<TrainGuard> {
        self.lora.as_ref().map(|a| TrainGuard::new(&a.ctl))
    }

    /// A KV cache sized for this model.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> Result<KvCache> {
        KvCache::new(&self.config, batch, capacity, self.dtype, &self.device)
    }
}

thread_local! {
    static ENTROPY_GRAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn entropy_grad_on() -> bool {
    ENTROPY_GRAD.with(|c| c.get())
}

/// While alive, the log-prob calls of this thread return an entropy that carries a gradient
/// (an entropy bonus in the loss needs it). Off by default: the composed path would otherwise
/// keep two more `[tokens × vocab]` tensors for a backward that never reads them.
pub struct EntropyGrad(bool);

impl EntropyGrad {
    pub fn new(on: bool) -> Self {
        EntropyGrad(ENTROPY_GRAD.with(|c| c.replace(on)))
    }
}

impl Drop for EntropyGrad {
    fn drop(&mut self) {
        ENTROPY_GRAD.with(|c| c.set(self.0));
    }
}

/// Box–Muller: avoids a `rand_distr` dependency for one distribution.
fn standard_normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_weights_are_built_at_load_in_bf16_only() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-math");
        let p = Policy::load(&dir, DType::BF16, &Device::Cpu).unwrap();
        assert_eq!(p.model.copies.len(), 0, "built lazily by default");
        p.prepare_sampling_weights().unwrap();
        // Four stacks per layer and the output projection.
        assert_eq!(p.model.copies.len(), 4 * p.config.num_hidden_layers + 1);
        let f = Policy::load(&dir, DType::F32, &Device::Cpu).unwrap();
        f.prepare_sampling_weights().unwrap();
        assert_eq!(f.model.copies.len(), 0);
    }
}
