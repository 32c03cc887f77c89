//! `grpo init-model`: a freshly initialised Qwen2 decoder in Hugging Face layout.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::{DType, Device};
use clap::Args;

use crate::model::{
    copy_tokenizer_files, random_qwen2_config, resolve_model, Need, Policy, Qwen2Shape, Tokenizer,
};

/// The long `--help` text. main.rs attaches it to the subcommand: the variant's doc comment
/// there would otherwise replace it.
pub const LONG_ABOUT: &str = "Write a randomly initialised Qwen2 model in Hugging Face layout.

The vocabulary and special tokens come from the tokenizer folder, whose tokenizer files are
copied beside the weights, so the result loads in `grpo` and in `transformers` as is. Useful for
toy tasks and benchmarks; `grpo sft` starts from the same initialisation.

Examples:
  grpo init-model --tokenizer models/tiny-math --out models/tiny-tree --hidden-size 64 --layers 2
  grpo init-model --tokenizer models/tiny-math --out /tmp/m10 --hidden-size 256 --layers 6 --heads 8 --kv-heads 2";

/// Write a randomly initialised Qwen2 model (HF layout) for a tokenizer.
#[derive(Debug, Args)]
#[command(long_about = LONG_ABOUT)]
pub struct InitModelArgs {
    /// Folder with tokenizer.json / tokenizer_config.json, or a hub id (only its tokenizer
    /// files are downloaded).
    #[arg(long, value_name = "DIR|HUB_ID")]
    pub tokenizer: String,
    /// Branch, tag or commit of a hub id --tokenizer (default `main`).
    #[arg(long)]
    pub revision: Option<String>,
    /// Output folder (written atomically).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub hidden_size: usize,
    /// MLP width (default: 3 × hidden size).
    #[arg(long)]
    pub intermediate_size: Option<usize>,
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long, default_value_t = 2)]
    pub kv_heads: usize,
    #[arg(long, default_value_t = 256)]
    pub max_position_embeddings: usize,
    /// Untie the LM head from the embeddings.
    #[arg(long)]
    pub untied: bool,
    /// Standard deviation of the normal init (HF `initializer_range`). Small values give
    /// near-uniform next-token distributions, like a policy that has no preference yet.
    #[arg(long, default_value_t = 0.02)]
    pub initializer_range: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: &InitModelArgs) -> Result<()> {
    if !(args.initializer_range > 0.0 && args.initializer_range.is_finite()) {
        anyhow::bail!(
            "--initializer-range {}: expected a positive standard deviation",
            args.initializer_range
        );
    }
    let tok_dir = resolve_model(&args.tokenizer, args.revision.as_deref(), Need::Tokenizer)?.dir;
    let tokenizer = Tokenizer::load(&tok_dir)?;
    let shape = Qwen2Shape {
        hidden_size: args.hidden_size,
        intermediate_size: args.intermediate_size.unwrap_or(3 * args.hidden_size),
        num_hidden_layers: args.layers,
        num_attention_heads: args.heads,
        num_key_value_heads: args.kv_heads,
        max_position_embeddings: args.max_position_embeddings,
        rope_theta: 10000.0,
        tie_word_embeddings: !args.untied,
        initializer_range: args.initializer_range,
    };
    let config = random_qwen2_config(&shape, &tokenizer, "init-model")?;
    let policy = Policy::new_random(config, args.seed, DType::F32, &Device::Cpu)?;
    policy.save(&args.out)?;
    copy_tokenizer_files(&tok_dir, &args.out)?;
    println!(
        "wrote {} ({} parameters)",
        args.out.display(),
        policy.num_parameters()
    );
    Ok(())
}
