//! Benchmark evaluation: sample `n` completions per problem, grade each with the same verifier
//! the accuracy reward uses, and summarize (pass@1, unbiased pass@k, maj@k, a 95 % CI, lengths,
//! per-subject / per-level breakdowns).
//!
//! [`evaluate`] is the in-memory entry point (the trainer's validation); [`run_benchmark`] adds
//! what the `grpo eval` CLI needs: already-graded samples to resume from, a sink that persists
//! each finished batch, and the [`Solver::Oracle`] that answers with the reference solutions.
//!
//! Problems are generated `batch_size` at a time in fixed batches (problems `[b·B, (b+1)·B)`),
//! each with the sampler seed `mix_seed(seed, b·B)`. A batch's completions therefore depend only
//! on the settings and the problems' positions, so a resumed run regenerates an unfinished batch
//! exactly as the interrupted run would have.

pub mod context;
pub mod fewshot;
pub mod metrics;
pub mod report;
pub mod store;
pub mod summary;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::data::benchmarks::BenchmarkSpec;
use crate::data::dataset::{load_benchmark, Example};
use crate::data::prompt::PromptFormat;
use crate::data::prompt::BOXED_INSTRUCTION;
use crate::model::{Policy, Tokenizer};
use crate::sampler::{generate_restricted, mix_seed, SamplingParams, TokenEvent};
use crate::verifier::{verify_completion, EquivOptions, ExtractPolicy};

pub use summary::{average, summarize, BenchmarkResult, Breakdown, Interval};

/// How to evaluate: sampling, prompt and which scores to report.
#[derive(Debug, Clone)]
pub struct EvalSettings {
    /// Samples per problem.
    pub n: usize,
    /// The k of pass@k and maj@k (each `1 ≤ k ≤ n`).
    pub ks: Vec<usize>,
    /// 0 = greedy.
    pub temperature: f64,
    pub top_p: f64,
    /// 0 = off.
    pub top_k: usize,
    pub max_new_tokens: usize,
    pub seed: u64,
    /// Only the first `limit` problems.
    pub limit: Option<usize>,
    pub prompt: PromptFormat,
    /// Problems per `generate` call (and per resume unit); part of a sampled run's identity.
    pub batch_size: usize,
    /// Most rows (problems × samples) per forward pass, 0 = all of a batch; does not change
    /// results.
    pub max_batch_rows: usize,
    /// Completions end before these strings.
    pub stop: Vec<String>,
    pub equiv: EquivOptions,
    /// Only these token ids can be sampled (`sampling.allowed_tokens` of the toy tasks); empty =
    /// the whole vocabulary.
    pub allowed_tokens: Vec<u32>,
}

impl Default for EvalSettings {
    /// Greedy pass@1 with the default math prompt.
    fn default() -> Self {
        EvalSettings {
            n: 1,
            ks: vec![1],
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: 1024,
            seed: 0,
            limit: None,
            prompt: math_prompt(),
            batch_size: 64,
            max_batch_rows: 0,
            stop: Vec::new(),
            equiv: EquivOptions::default(),
            allowed_tokens: Vec::new(),
        }
    }
}

impl EvalSettings {
    pub fn validate(&self) -> Result<()> {
        if self.n == 0 {
            bail!("n (samples per problem) must be at least 1");
        }
        if let Some(&k) = self.ks.iter().find(|&&k| k == 0 || k > self.n) {
            bail!(
                "k = {k} needs 1 ≤ k ≤ n = {}: pass@k and maj@k use k of the n samples per \
                 problem (raise -n or drop k)",
                self.n
            );
        }
        if self.batch_size == 0 {
            bail!("batch size must be at least 1");
        }
        if self.limit == Some(0) {
            bail!("limit must be at least 1");
        }
        if !self.prompt.user_template.contains("{question}") {
            bail!(
                "prompt template `{}` lacks the {{question}} placeholder",
                self.prompt.user_template
            );
        }
        self.sampling(0, &[]).logits_processor()?;
        Ok(())
    }

    /// The sampler settings of the batch starting at problem `first`.
    fn sampling(&self, first: usize, eos: &[u32]) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: 0.0,
            max_new_tokens: self.max_new_tokens,
            stop: self.stop.clone(),
            eos_token_ids: eos.to_vec(),
            ignore_eos: false,
            seed: mix_seed(self.seed, first as u64),
            max_batch_rows: self.max_batch_rows,
        }
    }
}

/// The default evaluation prompt: the question, then "Please reason step by step, and put your
/// final answer within \boxed{}." in the user turn (works with and without a system turn).
pub fn math_prompt() -> PromptFormat {
    PromptFormat {
        system: None,
        user_template: format!("{{question}}\n{BOXED_INSTRUCTION}"),
        use_chat_template: true,
        max_prompt_length: 0,
    }
}

/// A benchmark ready to evaluate: its problems, how to extract answers, few-shot examples.
#[derive(Debug, Clone)]
pub struct EvalSet {
    pub name: String,
    pub examples: Vec<Example>,
    pub extraction: ExtractPolicy,
    /// Solved examples shown before each question (see [`fewshot`]).
    pub few_shot: Vec<Example>,
}

impl EvalSet {
    /// Loads a registered benchmark (or a [`BenchmarkSpec::custom`] file).
    pub fn from_spec(spec: &BenchmarkSpec) -> Result<EvalSet> {
        let extraction = ExtractPolicy::by_name(&spec.extraction).with_context(|| {
            format!(
                "benchmark `{}`: unknown extraction policy `{}`",
                spec.name, spec.extraction
            )
        })?;
        Ok(EvalSet {
            name: spec.name.clone(),
            examples: load_benchmark(spec)?,
            extraction,
            few_shot: Vec::new(),
        })
    }

    pub fn new(name: &str, examples: Vec<Example>, extraction: ExtractPolicy) -> EvalSet {
        EvalSet {
            name: name.to_string(),
            examples,
            extraction,
            few_shot: Vec::new(),
        }
    }

    /// The problems under `limit`.
    pub fn num_problems(&self, limit: Option<usize>) -> usize {
        limit.map_or(self.examples.len(), |l| l.min(self.examples.len()))
    }

    /// The question as the prompt template receives it (few-shot examples first).
    pub fn question(&self, example: &Example) -> String {
        fewshot::with_examples(&self.few_shot, &example.question)
    }
}

/// Who answers the problems.
#[derive(Clone, Copy)]
pub enum Solver<'a> {
    Model {
        policy: &'a Policy,
        tokenizer: &'a Tokenizer,
    },
    /// Each problem's reference solution when it carries its final answer (`\boxed{}` or
    /// `####`), else `\boxed{answer}`: checks prompt → extraction → verification without a model.
    Oracle,
}

/// One graded completion: a line of `samples.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    pub benchmark: String,
    /// Position in the benchmark file (the resume key, with `sample_index`).
    pub problem_index: usize,
    pub id: String,
    pub sample_index: usize,
    pub prompt: String,
    pub completion: String,
    /// The answer the extraction policy found; `null` when none.
    pub extracted: Option<String>,
    pub gold: String,
    pub correct: bool,
    /// Completion length in tokens (0 for the oracle).
    pub num_tokens: usize,
    /// `eos`, `stop` or `length` (`oracle` for the oracle).
    pub finish_reason: String,
    pub subject: Option<String>,
    pub level: Option<String>,
}

/// Progress of one benchmark, reported after every finished sample.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub samples_done: usize,
    pub samples_total: usize,
    /// Tokens generated so far in this call (not counting resumed samples).
    pub tokens: usize,
}

/// Evaluates `policy` on `set`: the trainer's validation and the CLI's scores.
pub fn evaluate(
    policy: &Policy,
    tokenizer: &Tokenizer,
    set: &EvalSet,
    settings: &EvalSettings,
    progress: Option<&mut dyn FnMut(&Progress)>,
) -> Result<BenchmarkResult> {
    let solver = Solver::Model { policy, tokenizer };
    run_benchmark(solver, set, settings, Vec::new(), &mut |_| Ok(()), progress)
}

/// Evaluates `solver` on the first `limit` problems of `set`, skipping the problems `done`
/// already holds all `n` samples of. `sink` receives each batch's new records (to persist them)
/// before the next batch starts; the summary covers resumed and new samples alike.
pub fn run_benchmark(
    solver: Solver<'_>,
    set: &EvalSet,
    settings: &EvalSettings,
    done: Vec<SampleRecord>,
    sink: &mut dyn FnMut(&[SampleRecord]) -> Result<()>,
    mut progress: Option<&mut dyn FnMut(&Progress)>,
) -> Result<BenchmarkResult> {
    settings.validate()?;
    let num = set.num_problems(settings.limit);
    if num == 0 {
        bail!("{}: no problems", set.name);
    }
    let n = settings.n;
    let mut records = complete_problems(set, n, done)?;
    let mut finished = vec![false; num];
    for r in records.iter().filter(|r| r.problem_index < num) {
        finished[r.problem_index] = true;
    }
    let mut p = Progress {
        samples_done: finished.iter().filter(|&&f| f).count() * n,
        samples_total: num * n,
        tokens: 0,
    };
    if let Some(cb) = progress.as_mut() {
        cb(&p);
    }
    let eos = match solver {
        Solver::Model { tokenizer, .. } => tokenizer.eos_token_ids(),
        Solver::Oracle => Vec::new(),
    };
    let mut start = 0;
    while start < num {
        let end = (start + settings.batch_size).min(num);
        let batch = start..end;
        start = end;
        if batch.clone().all(|i| finished[i]) {
            continue;
        }
        let questions: Vec<String> = batch
            .clone()
            .map(|i| set.question(&set.examples[i]))
            .collect();
        let mut new: Vec<SampleRecord> = Vec::new();
        let mut push =
            |i: usize, s: usize, prompt: &str, text: &str, tokens: usize, finish: &str| {
                if finished[i] {
                    return;
                }
                let ex = &set.examples[i];
                let v = verify_completion(text, &ex.answer, &set.extraction, &settings.equiv);
                new.push(SampleRecord {
                    benchmark: set.name.clone(),
                    problem_index: i,
                    id: ex.id.clone(),
                    sample_index: s,
                    prompt: prompt.to_string(),
                    completion: text.to_string(),
                    extracted: v.pred_parsed,
                    gold: ex.answer.clone(),
                    correct: v.correct,
                    num_tokens: tokens,
                    finish_reason: finish.to_string(),
                    subject: ex.subject.clone(),
                    level: ex.level.clone(),
                });
            };
        match solver {
            Solver::Model { policy, tokenizer } => {
                let texts = questions
                    .iter()
                    .map(|q| settings.prompt.render(tokenizer, q))
                    .collect::<Result<Vec<_>>>()?;
                // A prompt that alone overflows the model's positions is an error, found
                // without tokenizing more of it than the model could take.
                let context = policy.config.max_position_embeddings;
                let prompts = batch
                    .clone()
                    .zip(&questions)
                    .map(|(i, q)| {
                        settings
                            .prompt
                            .encode_bounded(tokenizer, q, context)
                            .with_context(|| {
                                let ex = &set.examples[i];
                                format!(
                                    "{}: problem {} (line {}): the model has {context} positions",
                                    set.name, ex.id, ex.line
                                )
                            })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let params = settings.sampling(batch.start, &eos);
                let mut on_token = |e: &TokenEvent<'_>| {
                    p.tokens += 1;
                    if e.finish_reason.is_some() && !finished[batch.start + e.prompt_index] {
                        p.samples_done += 1;
                        if let Some(cb) = progress.as_mut() {
                            cb(&p);
                        }
                    }
                };
                let completions = generate_restricted(
                    policy,
                    tokenizer,
                    &prompts,
                    n,
                    &params,
                    Some(&mut on_token),
                    &settings.allowed_tokens,
                )
                .with_context(|| {
                    format!(
                        "{}: generating problems {}..{}",
                        set.name, batch.start, batch.end
                    )
                })?;
                for c in &completions {
                    push(
                        batch.start + c.prompt_index,
                        c.sample_index,
                        &texts[c.prompt_index],
                        &c.text,
                        c.token_ids.len(),
                        c.finish_reason.as_str(),
                    );
                }
            }
            Solver::Oracle => {
                for (j, i) in batch.clone().enumerate() {
                    let text = oracle_completion(&set.examples[i]);
                    let prompt = render_plain(&settings.prompt, &questions[j]);
                    for s in 0..n {
                        push(i, s, &prompt, &text, 0, "oracle");
                    }
                    if !finished[i] {
                        p.samples_done += n;
                        if let Some(cb) = progress.as_mut() {
                            cb(&p);
                        }
                    }
                }
            }
        }
        new.sort_by_key(|r| (r.problem_index, r.sample_index));
        sink(&new).with_context(|| format!("{}: saving samples", set.name))?;
        for r in &new {
            finished[r.problem_index] = true;
        }
        records.extend(new);
    }
    records.sort_by_key(|r| (r.problem_index, r.sample_index));
    summarize(&set.name, num, n, &settings.ks, &records, &settings.equiv)
}

/// Keeps the records of problems that have all `n` samples and still match `set` (a partly
/// written problem is regenerated); an id mismatch means the data changed and is an error.
pub fn complete_problems(
    set: &EvalSet,
    n: usize,
    records: Vec<SampleRecord>,
) -> Result<Vec<SampleRecord>> {
    let mut seen: std::collections::BTreeMap<usize, Vec<SampleRecord>> = Default::default();
    for r in records {
        let ex = set.examples.get(r.problem_index).with_context(|| {
            format!(
                "{}: saved sample for problem {} but the benchmark has {} problems",
                set.name,
                r.problem_index,
                set.examples.len()
            )
        })?;
        if ex.id != r.id {
            bail!(
                "{}: saved problem {} has id `{}` but the data says `{}`: the benchmark file \
                 changed; use a fresh output directory",
                set.name,
                r.problem_index,
                r.id,
                ex.id
            );
        }
        seen.entry(r.problem_index).or_default().push(r);
    }
    let mut out = Vec::new();
    for (_, mut rows) in seen {
        rows.sort_by_key(|r| r.sample_index);
        rows.dedup_by_key(|r| r.sample_index);
        if rows.len() == n && rows.iter().enumerate().all(|(s, r)| r.sample_index == s) {
            out.extend(rows);
        }
    }
    Ok(out)
}

/// What the oracle answers for `example`.
pub fn oracle_completion(example: &Example) -> String {
    match &example.solution {
        Some(s) if s.contains("\\boxed") || s.contains("\\fbox") || s.contains("####") => s.clone(),
        _ => format!("The final answer is \\boxed{{{}}}.", example.answer),
    }
}

/// The prompt as plain text, as [`PromptFormat::render`] writes it without a chat template.
pub fn render_plain(format: &PromptFormat, question: &str) -> String {
    let user = format.user_template.replace("{question}", question);
    match &format.system {
        Some(system) => format!("{system}\n\n{user}"),
        None => user,
    }
}
