//! A lower bound on the memory one training step needs, checked against the memory available
//! before anything large is allocated.
//!
//! Without it a config such as `sampling.num_generations = 100000` runs until the rollout's KV
//! cache allocation aborts the process (21.5 GB). The estimate counts only buffers whose size
//! is certain (weights, gradients, optimizer moments, KV caches, logits and the activations a
//! backward pass keeps), so a run it rejects could not have finished; what it misses (attention
//! scratch, allocator slack) only makes real use larger.

use anyhow::{bail, Result};

use crate::config::{Config, Device, OptimKind};
use crate::model::ModelConfig;

/// Sizes of one step's phases, in bytes. Phases run one after another, so the peak is the
/// resident part plus the largest phase.
#[derive(Debug, Clone, PartialEq)]
pub struct StepMemory {
    /// Parameters of the policy.
    pub params: u64,
    /// Longest sequence of the step: prompt plus completion, in tokens.
    pub positions: u64,
    /// Policy (and reference) weights, gradients and optimizer moments: held throughout.
    pub resident: u64,
    /// The weights' part of `resident` (already allocated once the models are loaded).
    pub weights: u64,
    /// KV cache of the rollout: every completion of the step is generated at once.
    pub rollout: u64,
    /// Logits and saved activations of one training micro-batch.
    pub update: u64,
    /// Micro-batches per step the `update` figure is for.
    pub micro_batches: usize,
    /// KV cache of one validation batch.
    pub validation: u64,
}

impl StepMemory {
    pub fn peak(&self) -> u64 {
        self.resident + self.rollout.max(self.update).max(self.validation)
    }
}

/// Problems per validation batch (`EvalSettings::default().batch_size`).
const VALIDATION_BATCH: usize = 64;

/// Number of parameters a Qwen2 / Llama decoder with `m`'s shapes has.
pub fn num_parameters(m: &ModelConfig) -> u64 {
    let (h, i, v) = (
        m.hidden_size as u64,
        m.intermediate_size as u64,
        m.vocab_size as u64,
    );
    let q = (m.num_attention_heads * m.head_dim) as u64;
    let kv = (m.num_key_value_heads * m.head_dim) as u64;
    let bias =
        if m.attention_bias { q + 2 * kv } else { 0 } + if m.mlp_bias { 2 * i + h } else { 0 };
    let per_layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h + bias;
    let head = if m.tie_word_embeddings { 0 } else { v * h };
    (v * h)
        .saturating_add(per_layer.saturating_mul(m.num_hidden_layers as u64))
        .saturating_add(h + head)
}

/// Bytes of the activations a training forward keeps for backward, per token: per layer the
/// normed inputs, q/k/v/o and the MLP's gate, up and product.
pub fn activation_bytes_per_token(m: &ModelConfig, elem: u64) -> u64 {
    (m.num_hidden_layers as u64)
        .saturating_mul((4 * m.hidden_size + 3 * m.intermediate_size) as u64 * elem)
}

/// KV cache bytes for `rows` sequences of `positions` tokens.
fn kv_bytes(m: &ModelConfig, rows: u64, positions: u64, elem: u64) -> u64 {
    let per_token = 2 * (m.num_hidden_layers * m.num_key_value_heads * m.head_dim) as u64 * elem;
    rows.saturating_mul(positions).saturating_mul(per_token)
}

/// The lower bound for `cfg` on model `m`, with the longest prompt of the training and the
/// validation set in tokens, for `train.gradient_accumulation_steps` (1 for `auto`; see
/// [`estimate_with`]).
pub fn estimate(
    cfg: &Config,
    m: &ModelConfig,
    prompt_len: usize,
    val_prompt_len: usize,
) -> StepMemory {
    let k = cfg.train.gradient_accumulation_steps.fixed().unwrap_or(1);
    estimate_with(cfg, m, prompt_len, val_prompt_len, k)
}

/// [`estimate`] for `micro_batches` micro-batches per step.
pub fn estimate_with(
    cfg: &Config,
    m: &ModelConfig,
    prompt_len: usize,
    val_prompt_len: usize,
    micro_batches: usize,
) -> StepMemory {
    // bf16 on the CPU is mixed precision: f32 weights, caches and activations, plus a bf16
    // copy of every weight (`model::bf16_copies`).
    let cpu_mixed =
        cfg.model.dtype == crate::config::DType::Bf16 && cfg.model.device == Device::Cpu;
    let elem = if cpu_mixed {
        4
    } else {
        cfg.model.dtype.to_candle().size_in_bytes() as u64
    };
    let params = num_parameters(m);
    let copies = if cfg.loss.beta > 0.0 { 2 } else { 1 };
    // Gradients and optimizer state are kept in f32.
    let optimizer_f32 = match cfg.optim.optim {
        OptimKind::Adamw => 3,
        OptimKind::Sgd => 1,
    };
    let weights = params.saturating_mul((elem + if cpu_mixed { 2 } else { 0 }) * copies);
    let resident = weights.saturating_add(params.saturating_mul(4 * optimizer_f32));
    let rows = (cfg.train.batch_size as u64).saturating_mul(cfg.sampling.num_generations as u64);
    let positions = (prompt_len + cfg.sampling.max_completion_length) as u64;
    let rollout = kv_bytes(m, rows, positions, elem);
    let micro = rows / micro_batches.max(1) as u64;
    let tokens = micro.saturating_mul(positions);
    // f32 logits and their log-softmax (except in f32, where the fused head holds one vocabulary
    // block at a time), plus per layer the normed inputs, q/k/v/o and the MLP's gate, up and
    // product that backward keeps.
    let per_token_logits = if elem == 4 {
        0
    } else {
        2 * 4 * m.vocab_size as u64
    };
    let per_token_layers = activation_bytes_per_token(m, elem);
    let update = tokens.saturating_mul(per_token_logits.saturating_add(per_token_layers));
    let validation = if cfg.data.validation.is_empty() {
        0
    } else {
        let rows = (VALIDATION_BATCH as u64).saturating_mul(cfg.eval.n.max(1) as u64);
        kv_bytes(
            m,
            rows,
            (val_prompt_len + cfg.eval.max_completion_length) as u64,
            elem,
        )
    };
    StepMemory {
        params,
        positions,
        resident,
        weights,
        rollout,
        update,
        micro_batches: micro_batches.max(1),
        validation,
    }
}

/// How many times its estimate a micro-batch must find free for `auto`: the estimate counts
/// only the activations backward keeps, and the measured peak of a Qwen2.5-0.5B step (8 × 700
/// tokens in 4 passes of 2: 13.68 GB, README "Memory") was the resident 7.9 GB plus about 2.4
/// times the 2.4 GB estimate of one pass. 3 leaves a margin above that.
pub const AUTO_ACTIVATION_HEADROOM: u64 = 3;

/// Micro-batches per step: the configured number, or for `auto` the fewest that divide the
/// step's `batch_size × num_generations` completions and whose micro-batch fits `free` (bytes
/// free now, the weights already loaded) beside the gradients and optimizer state, with
/// [`AUTO_ACTIVATION_HEADROOM`] times its estimate. When even one completion per micro-batch
/// does not fit, that many (the memory check then says why); with no memory figure (`None`:
/// not a CPU, or unreadable), 1.
pub fn micro_batches(
    cfg: &Config,
    m: &ModelConfig,
    prompt_len: usize,
    val_prompt_len: usize,
    free: Option<u64>,
) -> usize {
    if let Some(k) = cfg.train.gradient_accumulation_steps.fixed() {
        return k;
    }
    let rows = cfg.train.batch_size * cfg.sampling.num_generations;
    let Some(free) = free else {
        return 1;
    };
    (1..=rows)
        .filter(|k| rows.is_multiple_of(*k))
        .find(|&k| {
            let e = estimate_with(cfg, m, prompt_len, val_prompt_len, k);
            let available = free.saturating_add(e.weights);
            e.resident
                .saturating_add(e.update.saturating_mul(AUTO_ACTIVATION_HEADROOM))
                <= available
        })
        .unwrap_or(rows.max(1))
}

/// Environment variable that caps the memory the pre-checks count as available (bytes, or
/// with a K/M/G/T suffix): leave room for other processes, or rehearse a smaller machine.
pub const MAX_MEMORY_ENV: &str = "GRPO_MAX_MEMORY";

/// Bytes of memory this process can still allocate on the CPU: `MemAvailable` of
/// `/proc/meminfo`, lowered by a cgroup v2 limit (`memory.max` − `memory.current`) when one
/// is set and by `GRPO_MAX_MEMORY` when given. None when none can be read.
pub fn available_cpu_bytes() -> Option<u64> {
    available_cpu_bytes_after(0)
}

/// [`available_cpu_bytes`] once `loaded` bytes (weights already read) are held:
/// `GRPO_MAX_MEMORY` caps the whole process, so they count against it; `MemAvailable` and
/// the cgroup already exclude them.
pub fn available_cpu_bytes_after(loaded: u64) -> Option<u64> {
    let cap = std::env::var(MAX_MEMORY_ENV)
        .ok()
        .and_then(|v| parse_bytes(&v))
        .map(|c| c.saturating_sub(loaded));
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let mut avail = meminfo.and_then(|m| {
        m.lines().find_map(|l| {
            let kb = l.strip_prefix("MemAvailable:")?.trim().strip_suffix("kB")?;
            kb.trim().parse::<u64>().ok().map(|k| k * 1024)
        })
    });
    if let Some(cap) = cap {
        avail = Some(avail.map_or(cap, |a| a.min(cap)));
    }
    let mut avail = avail?;
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    if let (Some(max), Some(cur)) = (read("memory.max"), read("memory.current")) {
        avail = avail.min(max.saturating_sub(cur));
    }
    Some(avail)
}

/// `12345`, `512M`, `1.5G` (powers of 1024) as bytes; None when malformed.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&t[..i], t[i..].trim_end_matches(['B', 'b', 'i'])),
        None => (t, ""),
    };
    let scale: u64 = match unit.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some((v * scale as f64) as u64)
}

fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

/// Fails, naming the keys that drive the largest part and their values, when `need` exceeds
/// `available` bytes.
pub fn check(cfg: &Config, need: &StepMemory, available: u64) -> Result<()> {
    let peak = need.peak();
    if peak <= available {
        return Ok(());
    }
    let b = cfg.train.batch_size;
    let g = cfg.sampling.num_generations;
    let phases = [
        (need.rollout, format!(
            "the rollout's KV cache ({} for train.batch_size = {b} × sampling.num_generations = {g} completions of up to sampling.max_completion_length = {} tokens after the prompt): lower sampling.num_generations, train.batch_size or sampling.max_completion_length",
            gb(need.rollout), cfg.sampling.max_completion_length
        )),
        (need.update, format!(
            "one training micro-batch ({} for {} sequences of up to {} tokens: train.batch_size = {b} × sampling.num_generations = {g} completions / {} micro-batches (train.gradient_accumulation_steps = {})): {}lower sampling.num_generations, train.batch_size or sampling.max_completion_length",
            gb(need.update),
            (b * g) / need.micro_batches.max(1),
            need.positions,
            need.micro_batches,
            cfg.train.gradient_accumulation_steps,
            if cfg.train.gradient_accumulation_steps.fixed().is_some() && need.micro_batches < b * g {
                "raise train.gradient_accumulation_steps (or set it to \"auto\"), or "
            } else {
                ""
            }
        )),
        (need.validation, format!(
            "a validation batch's KV cache ({} for {VALIDATION_BATCH} problems × eval.n = {} samples, eval.max_completion_length = {}): lower eval.n or eval.max_completion_length",
            gb(need.validation), cfg.eval.n, cfg.eval.max_completion_length
        )),
    ];
    let (largest, why) = phases
        .iter()
        .max_by_key(|(bytes, _)| *bytes)
        .map(|(bytes, why)| (*bytes, why.clone()))
        .unwrap_or_default();
    if largest < need.resident {
        bail!(
            "not enough memory: the model's weights, gradients and optimizer state alone need at least {} ({} parameters{}), {} is available; use a smaller model.path{}",
            gb(need.resident),
            need.params,
            if cfg.loss.beta > 0.0 { ", twice for the loss.beta > 0 reference model" } else { "" },
            gb(available),
            if cfg.loss.beta > 0.0 { " or loss.beta = 0" } else { "" }
        );
    }
    bail!(
        "not enough memory for one training step: at least {} is needed, {} is available. The largest part is {why} (weights and optimizer state: {})",
        gb(peak),
        gb(available),
        gb(need.resident)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_model() -> ModelConfig {
        ModelConfig::from_json(
            serde_json::json!({"model_type": "qwen2", "vocab_size": 100, "hidden_size": 64,
                "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "tie_word_embeddings": true}),
            "t",
        )
        .unwrap()
    }

    #[test]
    fn parameter_count_matches_the_shapes() {
        // embed 6400; per layer q 4096 + k,v 2·2048 + o 4096 + mlp 3·8192 + norms 128 + q/k/v
        // biases 128 = 37120; final norm 64.
        assert_eq!(num_parameters(&tiny_model()), 6400 + 2 * 37120 + 64);
    }

    #[test]
    fn parameter_count_matches_a_loaded_checkpoint() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-math");
        let policy =
            crate::model::Policy::load(&dir, candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap();
        assert_eq!(
            num_parameters(&policy.config),
            policy.num_parameters() as u64
        );
    }

    #[test]
    fn huge_num_generations_fails_naming_the_key_and_the_number() {
        let m = tiny_model();
        let mut cfg = Config::default();
        cfg.sampling.num_generations = 100_000;
        cfg.sampling.max_completion_length = 256;
        let need = estimate(&cfg, &m, 44, 40);
        // 2 layers × 2 (k, v) × 2 kv heads × 16 dims × 4 bytes = 512 bytes per position.
        assert_eq!(need.rollout, 4 * 100_000 * 300 * 512);
        let err = check(&cfg, &need, 8 << 30).unwrap_err().to_string();
        assert!(err.contains("sampling.num_generations = 100000"), "{err}");
        assert!(err.contains("8.59 GB is available"), "{err}");
        // The default config fits easily.
        let cfg = Config::default();
        check(&cfg, &estimate(&cfg, &m, 44, 40), 8 << 30).unwrap();
    }

    #[test]
    fn auto_picks_the_fewest_micro_batches_that_fit() {
        use crate::config::Accumulation;
        let m = tiny_model();
        let mut cfg = Config::default();
        assert_eq!(cfg.train.gradient_accumulation_steps, Accumulation::Auto);
        cfg.train.batch_size = 4;
        cfg.sampling.num_generations = 4;
        cfg.sampling.max_completion_length = 100;
        let (p, v) = (20, 20);
        let e4 = estimate_with(&cfg, &m, p, v, 4);
        assert_eq!(e4.update * 4, estimate_with(&cfg, &m, p, v, 1).update);
        // Free memory (weights loaded) for the rest of the resident state and 3× a quarter step.
        let free = e4.resident - e4.weights + AUTO_ACTIVATION_HEADROOM * e4.update;
        assert_eq!(micro_batches(&cfg, &m, p, v, Some(free)), 4);
        assert_eq!(micro_batches(&cfg, &m, p, v, Some(free - 1)), 8);
        assert_eq!(micro_batches(&cfg, &m, p, v, Some(u64::MAX / 2)), 1);
        // Nothing fits: one completion per micro-batch (the check then says why); no figure: 1.
        assert_eq!(micro_batches(&cfg, &m, p, v, Some(0)), 16);
        assert_eq!(micro_batches(&cfg, &m, p, v, None), 1);
        // Only divisors of B·G = 12 are candidates: after 4 comes 6 (5 would not split evenly).
        cfg.sampling.num_generations = 3;
        let e4 = estimate_with(&cfg, &m, p, v, 4);
        let e6 = estimate_with(&cfg, &m, p, v, 6);
        let free = e6.resident - e6.weights + AUTO_ACTIVATION_HEADROOM * e6.update;
        assert!(free < e4.resident - e4.weights + AUTO_ACTIVATION_HEADROOM * e4.update);
        assert_eq!(micro_batches(&cfg, &m, p, v, Some(free)), 6);
        // A number is used as given.
        cfg.train.gradient_accumulation_steps = Accumulation::Steps(2);
        assert_eq!(micro_batches(&cfg, &m, p, v, Some(0)), 2);
        assert_eq!(estimate(&cfg, &m, p, v).micro_batches, 2);
    }

    #[test]
    fn max_memory_sizes_parse() {
        assert_eq!(parse_bytes("12345"), Some(12345));
        assert_eq!(parse_bytes("512M"), Some(512 << 20));
        assert_eq!(parse_bytes("1.5G"), Some(3 << 29));
        assert_eq!(parse_bytes("8GiB"), Some(8 << 30));
        assert_eq!(parse_bytes("2t"), Some(2 << 40));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("-1G"), None);
        assert_eq!(parse_bytes("3X"), None);
    }

    #[test]
    fn available_memory_is_read() {
        let avail = available_cpu_bytes().unwrap();
        assert!(avail > 1 << 20, "{avail}");
    }
}
