//! How many rows one `generate` call can run at once, estimated from the model's shapes before
//! anything is allocated.
//!
//! A call holds every finished completion until it returns (token ids, log-probs, text), and
//! each row being decoded holds its KV cache (twice while finished rows are compacted out),
//! a vocabulary of logits and its token buffers. The first part grows with the whole request
//! (`-n` × prompts × `--max-new-tokens`) and cannot be split; the second only with the rows of
//! one batch, so a request whose completions fit runs in as many row batches as it takes.
//! The sizes are lower bounds of what the buffers take (allocator slack and the prefill's
//! attention scratch are not counted), so a refused request could not have finished.

use crate::model::ModelConfig;

/// What one call is asked to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenShape {
    pub prompts: usize,
    /// Completions per prompt.
    pub samples: usize,
    /// Tokens of the longest prompt.
    pub longest_prompt: usize,
    pub max_new_tokens: usize,
}

impl GenShape {
    pub fn rows(&self) -> u64 {
        (self.prompts as u64).saturating_mul(self.samples as u64)
    }
}

/// The estimate for one [`GenShape`], in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenMemory {
    /// All completions, kept until the call returns.
    pub output: u64,
    /// One row being decoded.
    pub per_row: u64,
}

/// Bytes a finished completion keeps: token ids and log-probs (4 bytes each per token), its
/// text (about 4 bytes per BPE token: one byte per token understated it, and a request that
/// needed all of a 24 GB machine was let through) and the record itself.
pub fn output_bytes_per_row(max_new_tokens: usize) -> u64 {
    const RECORD: u64 = 128;
    RECORD.saturating_add((max_new_tokens as u64).saturating_mul(12))
}

/// Bytes one decoding row needs: its f32 KV cache of `prompt + max_new` positions (rounded up
/// to the cache's 16-position key tiles) twice, since compaction copies the live rows, plus a
/// vocabulary of f32 logits, the forward's per-row scratch and its token buffers.
pub fn working_bytes_per_row(m: &ModelConfig, longest_prompt: usize, max_new_tokens: usize) -> u64 {
    let positions = (longest_prompt as u64)
        .saturating_add(max_new_tokens as u64)
        .div_ceil(16)
        .saturating_mul(16);
    let kv_per_position =
        2 * (m.num_hidden_layers as u64) * (m.num_key_value_heads as u64) * (m.head_dim as u64) * 4;
    let kv = positions.saturating_mul(kv_per_position);
    let q = (m.num_attention_heads * m.head_dim) as u64;
    let scratch = (4 * m.hidden_size as u64 + 2 * m.intermediate_size as u64 + 2 * q) * 4;
    let logits = 2 * m.vocab_size as u64 * 4;
    let tokens = (max_new_tokens as u64).saturating_mul(8);
    kv.saturating_mul(2)
        .saturating_add(scratch)
        .saturating_add(logits)
        .saturating_add(tokens)
}

pub fn estimate(m: &ModelConfig, shape: &GenShape) -> GenMemory {
    GenMemory {
        output: shape
            .rows()
            .saturating_mul(output_bytes_per_row(shape.max_new_tokens)),
        per_row: working_bytes_per_row(m, shape.longest_prompt, shape.max_new_tokens),
    }
}

/// Why a request cannot run in `available` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The completions alone (plus one decoding row) do not fit: fewer rows or shorter ones.
    Output { need: u64, available: u64 },
    /// Not even one row's KV cache fits: shorter completions.
    Row { need: u64, available: u64 },
}

/// Rows per batch for `shape` in `available` bytes: all of them when they fit, else the most
/// that do (at least 1), or why none can. `requested` (`--max-batch-rows`, 0 = no limit) caps
/// the result.
pub fn plan_rows(
    m: &ModelConfig,
    shape: &GenShape,
    available: u64,
    requested: usize,
) -> Result<usize, Refusal> {
    let mem = estimate(m, shape);
    if mem.per_row > available {
        return Err(Refusal::Row {
            need: mem.per_row,
            available,
        });
    }
    let need = mem.output.saturating_add(mem.per_row);
    if need > available {
        return Err(Refusal::Output { need, available });
    }
    let fit = (available - mem.output) / mem.per_row.max(1);
    let mut rows = shape.rows().min(fit).max(1);
    if requested > 0 {
        rows = rows.min(requested as u64);
    }
    Ok(usize::try_from(rows).unwrap_or(usize::MAX))
}

/// Formats bytes as GB with two decimals (as the training memory check does).
pub fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelConfig {
        ModelConfig::from_json(
            serde_json::json!({"model_type": "qwen2", "vocab_size": 1000, "hidden_size": 64,
                "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "tie_word_embeddings": true}),
            "t",
        )
        .unwrap()
    }

    #[test]
    fn a_row_is_its_kv_cache_twice_plus_logits_and_buffers() {
        let m = model();
        // 10 + 20 positions round up to 32; 2 (k, v) × 2 layers × 2 heads × 16 dims × 4 bytes
        // = 512 bytes per position.
        let kv = 32 * 512;
        let scratch = (4 * 64 + 2 * 128 + 2 * 64) * 4;
        assert_eq!(
            working_bytes_per_row(&m, 10, 20),
            2 * kv + scratch + 2 * 1000 * 4 + 20 * 8
        );
        assert_eq!(output_bytes_per_row(20), 128 + 20 * 12);
    }

    #[test]
    fn rows_are_all_when_they_fit_else_batched_else_refused() {
        let m = model();
        let shape = GenShape {
            prompts: 3,
            samples: 1000,
            longest_prompt: 10,
            max_new_tokens: 20,
        };
        let mem = estimate(&m, &shape);
        let plenty = mem.output + 3000 * mem.per_row;
        assert_eq!(plan_rows(&m, &shape, plenty, 0), Ok(3000));
        assert_eq!(plan_rows(&m, &shape, plenty, 64), Ok(64));
        // Room for the completions and 10.5 rows: batches of 10.
        let tight = mem.output + 10 * mem.per_row + mem.per_row / 2;
        assert_eq!(plan_rows(&m, &shape, tight, 0), Ok(10));
        match plan_rows(&m, &shape, mem.output, 0) {
            Err(Refusal::Output { need, available }) => {
                assert_eq!(need, mem.output + mem.per_row);
                assert_eq!(available, mem.output);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            plan_rows(&m, &shape, mem.per_row - 1, 0),
            Err(Refusal::Row { .. })
        ));
        // Ten million completions of 256 tokens need tens of GB just to hold.
        let huge = GenShape {
            prompts: 1,
            samples: 10_000_000,
            longest_prompt: 10,
            max_new_tokens: 256,
        };
        assert_eq!(estimate(&m, &huge).output, 10_000_000 * (128 + 256 * 12));
        assert!(matches!(
            plan_rows(&m, &huge, 16 << 30, 0),
            Err(Refusal::Output { .. })
        ));
    }
}
