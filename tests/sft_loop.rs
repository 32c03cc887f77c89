//! `grpo sft`: the completion-only loss, the training loop end to end on a tiny model, and the
//! saved checkpoint.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use grpo::config::Config;
use grpo::data::dataset::load_jsonl;
use grpo::model::{ModelConfig, Policy, Tokenizer};
use grpo::trainer::sft::{
    build_rows, completion_nll, is_direct_answer, make_batch, prompt_format, random_model_config,
    train_sft, SftRow,
};

fn tiny_config(vocab: usize) -> ModelConfig {
    let raw = serde_json::json!({
        "model_type": "qwen2",
        "vocab_size": vocab,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "tie_word_embeddings": true,
        "eos_token_id": 2,
    });
    ModelConfig::from_json(raw, "test").unwrap()
}

fn row(prompt: &[u32], completion: &[u32]) -> SftRow {
    SftRow {
        prompt: prompt.to_vec(),
        completion: completion.to_vec(),
    }
}

#[test]
fn loss_mask_covers_exactly_the_completion_tokens() {
    let a = row(&[5, 6, 7], &[8, 2]);
    let b = row(&[9], &[10, 11, 12, 2]);
    let batch = make_batch(&[&a, &b], 0, &Device::Cpu).unwrap();
    assert_eq!(batch.packed.prompt_len, 3);
    assert_eq!(batch.packed.completion_len, 4);
    assert_eq!(
        batch.packed.input_ids.to_vec2::<u32>().unwrap(),
        vec![vec![5, 6, 7, 8, 2, 0, 0], vec![0, 0, 9, 10, 11, 12, 2]]
    );
    assert_eq!(
        batch.loss_mask.to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 1.0, 0.0, 0.0], vec![1.0, 1.0, 1.0, 1.0]]
    );
    assert_eq!(batch.tokens, 6);
}

#[test]
fn nll_sums_completion_log_probs_only() {
    let policy = Policy::new_random(tiny_config(32), 7, DType::F32, &Device::Cpu).unwrap();
    let a = row(&[5, 6, 7], &[8, 2]);
    let b = row(&[9], &[10, 11, 12, 2]);
    let batch = make_batch(&[&a, &b], 0, &Device::Cpu).unwrap();
    let nll = completion_nll(&policy, &batch)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;

    // Reference: per-token log-probs of the whole padded row; position t scores token t + 1, so
    // the completion (at columns 3..3 + len) is scored at 2..2 + len.
    let lp = policy
        .token_logprobs(
            &batch.packed.input_ids,
            Some(&batch.packed.attention_mask),
            1.0,
        )
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let completion_only: f64 =
        -(lp[0][2..4].iter().sum::<f32>() + lp[1][2..6].iter().sum::<f32>()) as f64;
    let with_prompt: f64 = completion_only
        - (lp[0][0..2].iter().sum::<f32>() + lp[1][1..2].iter().sum::<f32>()) as f64;
    assert!(
        (nll - completion_only).abs() < 1e-3,
        "nll {nll} vs completion-only reference {completion_only}"
    );
    assert!(
        (nll - with_prompt).abs() > 0.5,
        "prompt tokens must not count ({nll} vs {with_prompt})"
    );
    // A random model is near-uniform over 32 tokens: about ln 32 per token.
    let per_token = nll / 6.0;
    assert!((per_token - 32f64.ln()).abs() < 0.5, "{per_token}");
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn write_split(path: &Path, rows: &[(&str, &str, &str)]) {
    let text: String = rows
        .iter()
        .enumerate()
        .map(|(i, (q, a, s))| {
            serde_json::json!({"id": format!("t{i}"), "question": q, "answer": a, "solution": s})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

fn batch_loss(policy: &Policy, rows: &[SftRow], pad: u32) -> f64 {
    let refs: Vec<&SftRow> = rows.iter().collect();
    let batch = make_batch(&refs, pad, &Device::Cpu).unwrap();
    completion_nll(policy, &batch)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64
        / batch.tokens as f64
}

#[test]
fn sft_lowers_the_loss_and_saves_a_checkpoint_that_reloads_identically() {
    let model_dir = repo().join("models/tiny-math");
    let tmp = tempfile::tempdir().unwrap();
    let train = tmp.path().join("train.jsonl");
    let val = tmp.path().join("val.jsonl");
    write_split(
        &train,
        &[
            (
                "Tom has 3 pens. He buys 4 more. How many pens does Tom have now?",
                "7",
                "3+4=7. \\boxed{7}",
            ),
            (
                "Ann has 5 cups. She buys 2 more. How many cups does Ann have now?",
                "7",
                "5+2=7. \\boxed{7}",
            ),
            (
                "Max has 9 cards. He loses 4. How many cards does Max have now?",
                "5",
                "9-4=5. \\boxed{5}",
            ),
            (
                "Each box holds 3 eggs. Sam buys 2 boxes. How many eggs?",
                "6",
                "2*3=6. \\boxed{6}",
            ),
        ],
    );
    write_split(
        &val,
        &[(
            "Zoe has 2 hats. She buys 2 more. How many hats does Zoe have now?",
            "4",
            "2+2=4. \\boxed{4}",
        )],
    );
    let out = tmp.path().join("out");
    let toml = format!(
        r#"
[model]
path = "{model}"
[data]
train = "{train}"
validation = "{val}"
[optim]
learning_rate = 1e-2
lr_scheduler_type = "cosine"
warmup_steps = 2
[eval]
max_completion_length = 8
[output]
dir = "{out}"
[sft]
max_steps = 12
batch_size = 4
micro_batch_size = 3
logging_steps = 4
eval_every = 6
eval_samples = 2
save_every = 6
seed = 3
hidden_size = 32
intermediate_size = 64
num_hidden_layers = 2
num_attention_heads = 4
num_key_value_heads = 2
max_position_embeddings = 128
"#,
        model = model_dir.display(),
        train = train.display(),
        val = val.display(),
        out = out.display(),
    );
    let cfg = Config::from_toml_str(&toml, "test", &[]).unwrap();

    let tokenizer = Tokenizer::load(&model_dir).unwrap();
    let examples = load_jsonl(&train, "question", "answer").unwrap();
    let rows = build_rows(&examples, &tokenizer, &prompt_format(&cfg), 0.0, 0).unwrap();
    assert_eq!(rows.len(), 4);
    let eos = tokenizer.token_to_id("<|im_end|>").unwrap();
    for (r, ex) in rows.iter().zip(&examples) {
        assert_eq!(r.completion.last(), Some(&eos), "completion ends with EOS");
        assert_eq!(
            tokenizer.decode(&r.completion, true).unwrap(),
            ex.solution.clone().unwrap()
        );
        // The prompt is the RL trainer's: chat template with the generation prompt.
        let prompt = tokenizer.decode(&r.prompt, false).unwrap();
        assert!(prompt.starts_with("<|im_start|>user\n"), "{prompt:?}");
        assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt:?}");
    }
    let pad = tokenizer.pad_token_id();
    let initial = Policy::new_random(
        random_model_config(&cfg.sft, &tokenizer).unwrap(),
        cfg.sft.seed,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let before = batch_loss(&initial, &rows, pad);

    let (summary, trained) = train_sft(&cfg).unwrap();
    let after = batch_loss(&trained, &rows, pad);
    assert!(
        (before - (tokenizer.vocab_size() as f64).ln()).abs() < 0.5,
        "a random init starts near uniform: {before}"
    );
    assert!(after < 0.6 * before, "loss {before} -> {after}");
    assert_eq!(summary.steps, 12);
    assert_eq!(summary.train_examples, 4);
    assert_eq!(summary.num_parameters, trained.num_parameters());
    let greedy = summary.val_accuracy_greedy.unwrap();
    assert!(greedy == 0.0 || greedy == 1.0, "{greedy}");
    let sampled = summary.val_accuracy_sampled.unwrap();
    assert!([0.0, 0.5, 1.0].contains(&sampled), "{sampled}");

    // metrics.jsonl: a line per logging window (steps 4, 8, 12), the mid-run greedy eval, and
    // the final eval line.
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let loss_steps: Vec<u64> = lines
        .iter()
        .filter(|l| l.get("loss").is_some())
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    assert_eq!(loss_steps, vec![4, 8, 12]);
    assert!(lines
        .iter()
        .any(|l| l["step"] == 6 && l.get("val_accuracy_greedy").is_some()));
    let last = lines.last().unwrap();
    assert_eq!(last["step"], 12);
    assert!(last.get("val_accuracy_sampled").is_some());
    let first_loss = lines[0]["loss"].as_f64().unwrap();
    assert!(
        summary.final_loss < first_loss,
        "{first_loss} -> {}",
        summary.final_loss
    );

    // The final model reloads (with its tokenizer) and gives bit-identical logits.
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "summary.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    assert!(out.join("checkpoint-6/model.safetensors").exists());
    let reloaded = Policy::load(&out, DType::F32, &Device::Cpu).unwrap();
    Tokenizer::load(&out).unwrap();
    assert_eq!(reloaded.config.vocab_size, tokenizer.vocab_size());
    assert_eq!(reloaded.config.hidden_size, 32);
    let refs: Vec<&SftRow> = rows.iter().collect();
    let batch = make_batch(&refs, pad, &Device::Cpu).unwrap();
    let logits = |p: &Policy| -> Vec<f32> {
        p.forward(&batch.packed.input_ids, Some(&batch.packed.attention_mask))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(logits(&trained), logits(&reloaded));
    // ... and differ from the mid-run checkpoint's.
    let mid = Policy::load(&out.join("checkpoint-6"), DType::F32, &Device::Cpu).unwrap();
    assert_ne!(logits(&trained), logits(&mid));
}

#[test]
fn direct_answer_fraction_replaces_that_share_of_targets_with_the_boxed_answer() {
    let model_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-math");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/arith/validation.jsonl");
    let cfg = Config::from_toml_str(
        &format!(
            "[model]\npath = {:?}\n[data]\ntrain = {:?}\n",
            model_dir, data
        ),
        "test",
        &[],
    )
    .unwrap();
    let tokenizer = Tokenizer::load(&model_dir).unwrap();
    let examples = load_jsonl(&data, "question", "answer").unwrap();
    let format = prompt_format(&cfg);
    let worked = build_rows(&examples, &tokenizer, &format, 0.0, 7).unwrap();
    let mixed = build_rows(&examples, &tokenizer, &format, 0.5, 7).unwrap();
    let mut direct = 0;
    for (i, ((w, m), ex)) in worked.iter().zip(&mixed).zip(&examples).enumerate() {
        assert_eq!(w.prompt, m.prompt, "prompts are untouched");
        let text = tokenizer.decode(&m.completion, true).unwrap();
        if is_direct_answer(7, i, 0.5) {
            direct += 1;
            assert_eq!(text, format!("\\boxed{{{}}}", ex.answer));
        } else {
            assert_eq!(m.completion, w.completion);
        }
    }
    // 200 fair coin flips: 100 ± 7 (one std); a selection that ignores the fraction fails.
    assert!((75..=125).contains(&direct), "{direct} of 200 direct");
    assert!((0..200).all(|i| !is_direct_answer(7, i, 0.0) && is_direct_answer(7, i, 1.0)));
    assert_ne!(
        (0..200)
            .map(|i| is_direct_answer(7, i, 0.5))
            .collect::<Vec<_>>(),
        (0..200)
            .map(|i| is_direct_answer(8, i, 0.5))
            .collect::<Vec<_>>(),
        "the seed picks the subset"
    );
}

#[test]
fn interrupted_sft_saves_the_model_and_fails() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-math");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/arith/validation.jsonl");
    let out = tmp.path().join("out");
    let toml = format!(
        "[model]\npath = {:?}\n[data]\ntrain = {:?}\nvalidation = \"\"\n[output]\ndir = {:?}\n\
         [sft]\ninit = \"pretrained\"\nmax_steps = 5\nbatch_size = 2\n",
        model_dir, data, out
    );
    let cfg = Config::from_toml_str(&toml, "test", &[]).unwrap();
    // The flag is already set, as after a Ctrl-C during loading: stop before the first step.
    let err = grpo::trainer::sft::sft(&cfg, Arc::new(AtomicBool::new(true)))
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(err.contains("interrupted at step 0 of 5"), "{err}");
    let saved = Policy::load(&out.join("checkpoint-0"), DType::F32, &Device::Cpu).unwrap();
    let shipped = Policy::load(&model_dir, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(saved.num_parameters(), shipped.num_parameters());
    assert!(
        !out.join("summary.json").exists(),
        "an interrupted run writes no summary"
    );
}
