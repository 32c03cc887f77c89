//! `grpo::sampler::generate` against the tiny fixtures: greedy tokens of `transformers`, cache vs
//! full recomputation, log-probs vs a full forward, seeds vs batch layout, stop strings and EOS.

use candle_core::{DType, Device, Tensor};
use grpo::model::{Policy, Tokenizer};
use grpo::sampler::logits::row_rng;
use grpo::sampler::{generate, Completion, FinishReason, SamplingParams, TokenEvent};

mod common;
use common::fixture;

struct Fixture {
    policy: Policy,
    tokenizer: Tokenizer,
    prompts: Vec<Vec<u32>>,
    greedy: Vec<Vec<u32>>,
}

fn load(name: &str) -> Fixture {
    let dir = fixture(name);
    let policy = Policy::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let tokenizer = Tokenizer::load(&dir).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let prompts = reference["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| tokenizer.encode(p.as_str().unwrap(), false).unwrap())
        .collect();
    let greedy = reference["greedy_new_token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ids| {
            ids.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    Fixture {
        policy,
        tokenizer,
        prompts,
        greedy,
    }
}

fn greedy_params(max_new_tokens: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_new_tokens,
        ignore_eos: true,
        ..SamplingParams::default()
    }
}

/// Reference path without a cache: a full forward over prompt + generated tokens per step,
/// sampling with the same per-row RNG.
fn generate_no_cache(
    f: &Fixture,
    prompt: &[u32],
    prompt_index: usize,
    sample_index: usize,
    params: &SamplingParams,
) -> (Vec<u32>, Vec<f32>) {
    let processor = params.logits_processor().unwrap();
    let mut rng = row_rng(params.seed, prompt_index, sample_index);
    let mut seq = prompt.to_vec();
    let (mut tokens, mut logprobs) = (vec![], vec![]);
    for _ in 0..params.max_new_tokens {
        let ids = Tensor::from_slice(&seq, (1, seq.len()), &Device::Cpu).unwrap();
        let logits = f.policy.forward(&ids, None).unwrap();
        let last: Vec<f32> = logits
            .narrow(1, seq.len() - 1, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let s = processor.sample(&last, &mut rng).unwrap();
        tokens.push(s.token);
        logprobs.push(s.logprob);
        seq.push(s.token);
    }
    (tokens, logprobs)
}

/// Extra prompts of other lengths to mix into batches.
fn fillers(f: &Fixture) -> Vec<Vec<u32>> {
    [
        "Hi",
        "A much longer prompt about apples, oranges, and 17 pears sold on Tuesday at noon.",
    ]
    .iter()
    .map(|p| f.tokenizer.encode(p, false).unwrap())
    .collect()
}

fn check_greedy_alone_and_batched(name: &str) {
    let f = load(name);
    let params = greedy_params(16);
    // Each prompt alone.
    for (p, prompt) in f.prompts.iter().enumerate() {
        let out = generate(
            &f.policy,
            &f.tokenizer,
            std::slice::from_ref(prompt),
            1,
            &params,
            None,
        )
        .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].token_ids, f.greedy[p], "{name}: prompt {p} alone");
        assert_eq!(out[0].finish_reason, FinishReason::Length);
        assert_eq!(out[0].text, f.tokenizer.decode(&f.greedy[p], true).unwrap());
        // Without the cache, the same tokens.
        let (tokens, logprobs) = generate_no_cache(&f, prompt, 0, 0, &params);
        assert_eq!(tokens, f.greedy[p], "{name}: prompt {p} without cache");
        for (a, b) in logprobs.iter().zip(&out[0].logprobs) {
            assert!((a - b).abs() < 1e-4, "{name}: logprob {a} vs {b}");
        }
    }
    // Mixed into a batch with prompts of other lengths, 3 samples each, in several
    // micro-batch layouts.
    let fill = fillers(&f);
    let batch = vec![
        fill[0].clone(),
        f.prompts[0].clone(),
        fill[1].clone(),
        f.prompts[1].clone(),
    ];
    for max_batch_rows in [0, 3, 6] {
        let params = SamplingParams {
            max_batch_rows,
            ..greedy_params(16)
        };
        let out = generate(&f.policy, &f.tokenizer, &batch, 3, &params, None).unwrap();
        assert_eq!(out.len(), 12);
        for (i, c) in out.iter().enumerate() {
            assert_eq!((c.prompt_index, c.sample_index), (i / 3, i % 3));
            assert_eq!(c.token_ids.len(), 16);
        }
        for s in 0..3 {
            assert_eq!(out[3 + s].token_ids, f.greedy[0], "{name}: batched p0 s{s}");
            assert_eq!(out[9 + s].token_ids, f.greedy[1], "{name}: batched p1 s{s}");
        }
    }
}

#[test]
fn greedy_matches_transformers_qwen2() {
    check_greedy_alone_and_batched("tiny-qwen2");
}

#[test]
fn greedy_matches_transformers_llama() {
    check_greedy_alone_and_batched("tiny-llama");
}

fn sampled_params(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 0.7,
        top_p: 0.95,
        top_k: 50,
        max_new_tokens: 12,
        ignore_eos: true,
        seed,
        ..SamplingParams::default()
    }
}

#[test]
fn sampled_logprobs_match_full_forward_and_no_cache_path() {
    let f = load("tiny-qwen2");
    let mut prompts = f.prompts.clone();
    prompts.push(fillers(&f)[0].clone());
    let params = sampled_params(7);
    let out = generate(&f.policy, &f.tokenizer, &prompts, 2, &params, None).unwrap();
    assert_eq!(out.len(), 6);
    // Samples of one prompt differ (the RNG is per sample).
    assert_ne!(out[0].token_ids, out[1].token_ids);
    for c in &out {
        let prompt = &prompts[c.prompt_index];
        let seq: Vec<u32> = prompt.iter().chain(&c.token_ids).copied().collect();
        let ids = Tensor::from_slice(&seq, (1, seq.len()), &Device::Cpu).unwrap();
        let lp: Vec<f32> = f
            .policy
            .token_logprobs(&ids, None, 0.7)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let tail = &lp[prompt.len() - 1..];
        assert_eq!(tail.len(), c.logprobs.len());
        for (a, b) in tail.iter().zip(&c.logprobs) {
            assert!((a - b).abs() < 1e-4, "logprob {b} vs full forward {a}");
        }
        let (tokens, _) = generate_no_cache(&f, prompt, c.prompt_index, c.sample_index, &params);
        assert_eq!(tokens, c.token_ids, "cache vs no cache, {c:?}");
    }
}

#[test]
fn same_seed_same_tokens_across_batch_layouts() {
    let f = load("tiny-llama");
    let fill = fillers(&f);
    let params = sampled_params(1234);
    let alone = generate(&f.policy, &f.tokenizer, &f.prompts, 2, &params, None).unwrap();
    // Same prompt indices 0 and 1, more prompts and samples after them, different
    // micro-batching (1 and 3 rows split one prompt's samples across batches): rows (p, s)
    // for p < 2, s < 2 must not change.
    let mut batch = f.prompts.clone();
    batch.extend(fill.iter().cloned());
    for max_batch_rows in [0, 4, 5, 1, 3] {
        let p = SamplingParams {
            max_batch_rows,
            ..params.clone()
        };
        let big = generate(&f.policy, &f.tokenizer, &batch, 4, &p, None).unwrap();
        for c in &alone {
            let other = &big[c.prompt_index * 4 + c.sample_index];
            assert_eq!(other.token_ids, c.token_ids);
            assert_eq!(other.logprobs.len(), c.logprobs.len());
            for (a, b) in other.logprobs.iter().zip(&c.logprobs) {
                assert!((a - b).abs() < 1e-4);
            }
        }
    }
    // A different seed changes the samples.
    let other = generate(
        &f.policy,
        &f.tokenizer,
        &f.prompts,
        2,
        &sampled_params(99),
        None,
    )
    .unwrap();
    assert_ne!(other[0].token_ids, alone[0].token_ids);
}

#[test]
fn stop_string_across_token_boundary() {
    let f = load("tiny-qwen2");
    let greedy = &f.greedy[1];
    // Token pieces of the greedy path; build a stop string from the end of one piece and the
    // start of the next, so it can only be seen on decoded text.
    let pieces: Vec<String> = greedy
        .iter()
        .map(|&t| f.tokenizer.decode(&[t], true).unwrap())
        .collect();
    let k = (2..greedy.len() - 1)
        .find(|&k| {
            pieces[k].chars().count() >= 2
                && pieces[k + 1].chars().count() >= 2
                && !pieces[k].contains('\u{FFFD}')
                && !pieces[k + 1].contains('\u{FFFD}')
        })
        .expect("a pair of multi-character pieces");
    let tail: String = pieces[k]
        .chars()
        .rev()
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let head: String = pieces[k + 1].chars().take(2).collect();
    let stop = format!("{tail}{head}");
    let full_text = f.tokenizer.decode(greedy, true).unwrap();
    let pos = full_text.find(&stop).unwrap();
    let params = SamplingParams {
        stop: vec!["never-appears".into(), stop.clone()],
        ..greedy_params(16)
    };
    let mut streamed = String::new();
    let mut last_finish = None;
    let mut cb = |e: &TokenEvent<'_>| {
        streamed.push_str(e.text);
        last_finish = e.finish_reason;
    };
    let out = generate(
        &f.policy,
        &f.tokenizer,
        &[f.prompts[1].clone()],
        1,
        &params,
        Some(&mut cb),
    )
    .unwrap();
    let c = &out[0];
    assert_eq!(c.finish_reason, FinishReason::Stop);
    // The stop is completed by token k + 1 (unless it already occurs earlier in the text).
    let end = (1..=greedy.len())
        .find(|&n| {
            f.tokenizer
                .decode(&greedy[..n], true)
                .unwrap()
                .contains(&stop)
        })
        .unwrap();
    assert!(end <= k + 2);
    assert_eq!(c.token_ids, greedy[..end]);
    assert_eq!(c.logprobs.len(), end);
    assert_eq!(c.text, full_text[..pos]);
    assert!(!c.text.contains(&stop));
    assert_eq!(streamed, c.text);
    assert_eq!(last_finish, Some(FinishReason::Stop));
}

#[test]
fn eos_ends_row_and_is_kept_in_tokens() {
    let f = load("tiny-qwen2");
    let greedy = &f.greedy[0];
    let eos = greedy[3];
    let params = SamplingParams {
        eos_token_ids: vec![eos],
        ignore_eos: false,
        ..greedy_params(16)
    };
    let batch = vec![f.prompts[0].clone(), f.prompts[1].clone()];
    let out: Vec<Completion> = generate(&f.policy, &f.tokenizer, &batch, 2, &params, None).unwrap();
    for c in &out[..2] {
        assert_eq!(c.finish_reason, FinishReason::Eos);
        assert_eq!(c.token_ids, greedy[..4]);
    }
    // The other prompt's rows are unaffected by the compaction of the finished rows.
    for c in &out[2..] {
        let n = f.greedy[1]
            .iter()
            .position(|&t| t == eos)
            .map_or(16, |i| i + 1);
        assert_eq!(c.token_ids, f.greedy[1][..n]);
    }
    // ignore_eos generates through it.
    let params = SamplingParams {
        ignore_eos: true,
        ..params
    };
    let out = generate(&f.policy, &f.tokenizer, &batch[..1], 1, &params, None).unwrap();
    assert_eq!(out[0].token_ids, *greedy);
    assert_eq!(out[0].finish_reason, FinishReason::Length);
}

#[test]
fn rejects_bad_input() {
    let f = load("tiny-qwen2");
    let p = greedy_params(4);
    assert!(generate(&f.policy, &f.tokenizer, &[vec![]], 1, &p, None).is_err());
    assert!(generate(&f.policy, &f.tokenizer, &f.prompts, 0, &p, None).is_err());
    let bad = SamplingParams {
        top_p: 0.0,
        ..p.clone()
    };
    assert!(generate(&f.policy, &f.tokenizer, &f.prompts, 1, &bad, None).is_err());
    let zero = SamplingParams {
        max_new_tokens: 0,
        ..p
    };
    let out = generate(&f.policy, &f.tokenizer, &f.prompts, 2, &zero, None).unwrap();
    assert_eq!(out.len(), 4);
    assert!(out.iter().all(|c| c.token_ids.is_empty()));
}

#[test]
fn restricted_generation_only_samples_allowed_tokens() {
    let f = load("tiny-qwen2");
    let allowed: Vec<u32> = vec![16, 46, 63, 124, 347, 366];
    let params = sampled_params(5);
    let out = grpo::sampler::generate_restricted(
        &f.policy,
        &f.tokenizer,
        &f.prompts,
        3,
        &params,
        None,
        &allowed,
    )
    .unwrap();
    assert_eq!(out.len(), 6);
    for c in &out {
        assert_eq!(c.token_ids.len(), 12);
        assert!(c.token_ids.iter().all(|t| allowed.contains(t)), "{c:?}");
        // Renormalised over six tokens: each log-prob is above the full-vocabulary one.
        let prompt = &f.prompts[c.prompt_index];
        let seq: Vec<u32> = prompt.iter().chain(&c.token_ids).copied().collect();
        let ids = Tensor::from_slice(&seq, (1, seq.len()), &Device::Cpu).unwrap();
        let full: Vec<f32> = f
            .policy
            .token_logprobs(&ids, None, 0.7)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (lp, full_lp) in c.logprobs.iter().zip(&full[prompt.len() - 1..]) {
            assert!(*lp <= 0.0 && *lp > *full_lp, "{lp} vs {full_lp}");
        }
    }
}
