//! What λ-GRPO adds to a training step, measured on one machine in one process: the trainer's
//! update (coefficients → log-probs → clipped loss → backward) of one real rollout batch of the shipped
//! default run (`models/tiny-math`, 8 prompts × 8 completions at temperature 1), once with the
//! `dapo` coefficients and once with `lambda_grpo`'s, which also build every group's prefix
//! tree for |λ|. Both variants run interleaved under criterion, so machine load hits them alike;
//! the printed ratio is the overhead the "< 2%" goal is about.
//!
//!     cargo bench --bench lambda_overhead

use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Var};
use criterion::{criterion_group, criterion_main, Criterion};
use grpo::config::SharePrefixes;
use grpo::data::dataset::load_jsonl;
use grpo::data::prompt::PromptFormat;
use grpo::model::{Policy, Tokenizer};
use grpo::process_sets;
use grpo::sampler::{self, SamplingParams};
use grpo::trainer::loss::{self, LossType, ProcessWeighting, SeqLayout};
use grpo::trainer::update::{accumulate, FrozenLogprobs, LossSettings, UpdateBatch};

const B: usize = 8;
const G: usize = 8;

struct Rollout {
    policy: Policy,
    prompts: Vec<Vec<u32>>,
    completions: Vec<Vec<u32>>,
    advantages: Vec<f64>,
    pad: u32,
    vars: Vec<Var>,
}

fn rollout() -> Rollout {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("models/tiny-math");
    let policy = Policy::load(&model, DType::F32, &Device::Cpu).expect("models/tiny-math");
    let tokenizer = Tokenizer::load(&model).expect("tokenizer");
    let data = load_jsonl(&root.join("data/arith/train.jsonl"), "question", "answer")
        .expect("data/arith/train.jsonl");
    let format = PromptFormat {
        system: None,
        user_template: "{question}".into(),
        use_chat_template: true,
        max_prompt_length: 0,
    };
    let prompts: Vec<Vec<u32>> = data[..B]
        .iter()
        .map(|e| format.encode(&tokenizer, &e.question).expect("prompt"))
        .collect();
    let params = SamplingParams {
        temperature: 1.0,
        top_p: 1.0,
        top_k: 0,
        min_p: 0.0,
        max_new_tokens: 64,
        stop: Vec::new(),
        eos_token_ids: tokenizer.eos_token_ids(),
        ignore_eos: false,
        seed: 1,
        max_batch_rows: 0,
    };
    let out = sampler::generate(&policy, &tokenizer, &prompts, G, &params, None).expect("rollout");
    // Fixed non-zero advantages: the cost does not depend on their values.
    let advantages = (0..B * G).map(|i| (i % 3) as f64 - 1.0).collect();
    let vars = policy.named_vars().into_iter().map(|(_, v)| v).collect();
    Rollout {
        pad: tokenizer.pad_token_id(),
        prompts: out
            .iter()
            .map(|c| prompts[c.prompt_index].clone())
            .collect(),
        completions: out.into_iter().map(|c| c.token_ids).collect(),
        advantages,
        vars,
        policy,
    }
}

/// One update's work after sampling and scoring, by the trainer's own code: the step's
/// coefficients (with the prefix trees for |λ| under `lambda_grpo`), then one pass of
/// `trainer::update::accumulate` (log-probs → clipped loss → backward → summed gradients).
/// Returns the loss so nothing is optimised away.
fn update(r: &Rollout, weighting: ProcessWeighting) -> f64 {
    let loss_type = match weighting {
        ProcessWeighting::None => LossType::Dapo,
        ProcessWeighting::Lambda => LossType::LambdaGrpo,
    };
    let resolved = loss_type.resolve(weighting).expect("loss");
    let lambda: Vec<Vec<u32>> = match weighting {
        ProcessWeighting::None => Vec::new(),
        ProcessWeighting::Lambda => r
            .completions
            .chunks(G)
            .flat_map(|g| process_sets::build(g).lambda_sizes())
            .collect(),
    };
    let masks: Vec<Vec<bool>> = r.completions.iter().map(|c| vec![true; c.len()]).collect();
    let layouts: Vec<SeqLayout> = masks
        .iter()
        .enumerate()
        .map(|(i, m)| SeqLayout {
            mask: m,
            lambda_sizes: lambda.get(i).map(|l| l.as_slice()),
            micro_batch: 0,
        })
        .collect();
    let coef = loss::token_coefficients(&layouts, resolved, 64).expect("coefficients");
    let prompts: Vec<&[u32]> = r.prompts.iter().map(|p| p.as_slice()).collect();
    let completions: Vec<&[u32]> = r.completions.iter().map(|c| c.as_slice()).collect();
    let batch = UpdateBatch {
        prompts: &prompts,
        completions: &completions,
        advantages: &r.advantages,
        coefficients: &coef,
        micro_batch: completions.len(),
        pad: r.pad,
        sampler_logprobs: None,
        share: SharePrefixes::default(),
    };
    let settings = LossSettings {
        temperature: 1.0,
        epsilon_low: 0.2,
        epsilon_high: 0.2,
        beta: 0.0,
        vocab_bias: None,
        policy: None,
    };
    let pass = accumulate(
        &r.policy,
        None,
        &r.vars,
        &batch,
        &settings,
        &mut FrozenLogprobs::default(),
    )
    .expect("update");
    std::hint::black_box(pass.grads);
    pass.loss
}

fn bench(c: &mut Criterion) {
    let r = rollout();
    let tokens: usize = r.completions.iter().map(|c| c.len()).sum();
    println!(
        "rollout: {} completions, {tokens} completion tokens",
        r.completions.len()
    );
    // Paired, alternating-order timings first: each pair sees the same machine load, and the
    // median of the per-pair ratios ignores the pairs a background job disturbed.
    let mut ratios = Vec::new();
    let (mut none, mut lam) = (0.0, 0.0);
    for k in 0..10 {
        let time = |w| {
            let t = Instant::now();
            update(&r, w);
            t.elapsed().as_secs_f64()
        };
        let (a, b) = if k % 2 == 0 {
            let a = time(ProcessWeighting::None);
            (a, time(ProcessWeighting::Lambda))
        } else {
            let b = time(ProcessWeighting::Lambda);
            (time(ProcessWeighting::None), b)
        };
        none += a;
        lam += b;
        ratios.push(b / a);
    }
    ratios.sort_by(f64::total_cmp);
    let median = (ratios[4] + ratios[5]) / 2.0;
    println!(
        "10 paired updates: dapo {:.3} s, lambda_grpo {:.3} s (means); median overhead {:+.2}%",
        none / 10.0,
        lam / 10.0,
        (median - 1.0) * 100.0
    );
    let t = Instant::now();
    for g in r.completions.chunks(G) {
        std::hint::black_box(process_sets::build(g).lambda_sizes());
    }
    println!(
        "prefix trees + |λ| alone: {:.1} µs per step",
        t.elapsed().as_secs_f64() * 1e6
    );

    let mut g = c.benchmark_group("update_step");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("dapo", |b| b.iter(|| update(&r, ProcessWeighting::None)));
    g.bench_function("lambda_grpo", |b| {
        b.iter(|| update(&r, ProcessWeighting::Lambda))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
