//! The range of every key, checked by [`Config::validate`](super::Config::validate), which both
//! `grpo config show` and every run call: a value a run would reject is rejected when the
//! config is shown, and no value reaches training to turn into NaN steps later.
//!
//! Each message names `section.key`, the value and the accepted range, e.g.
//! `optim.adam_beta1 = 1: expected a number in [0, 1)`.

use std::fmt::Display;

use anyhow::{bail, Result};

use super::Config;

/// `key = value: expected what` unless `ok`.
fn expect(ok: bool, key: &str, value: impl Display, what: &str) -> Result<()> {
    if !ok {
        bail!("{key} = {value}: expected {what}");
    }
    Ok(())
}

/// A finite number `>= min`.
fn at_least(key: &str, v: f64, min: f64) -> Result<()> {
    expect(
        v.is_finite() && v >= min,
        key,
        v,
        &format!("a finite number >= {min}"),
    )
}

/// A finite number `> min`.
fn above(key: &str, v: f64, min: f64) -> Result<()> {
    expect(
        v.is_finite() && v > min,
        key,
        v,
        &format!("a finite number > {min}"),
    )
}

/// A number in `[0, 1)`.
fn unit_open(key: &str, v: f64) -> Result<()> {
    expect((0.0..1.0).contains(&v), key, v, "a number in [0, 1)")
}

/// A finite number.
fn finite(key: &str, v: f64) -> Result<()> {
    expect(v.is_finite(), key, v, "a finite number")
}

/// A positive integer.
fn positive(key: &str, v: usize) -> Result<()> {
    expect(v >= 1, key, v, "at least 1")
}

/// A non-empty string (after trimming).
fn non_empty(key: &str, v: &str, what: &str) -> Result<()> {
    if v.trim().is_empty() {
        bail!("{key}: expected {what}, got an empty string");
    }
    Ok(())
}

/// Every key's own range; keys checked against each other stay in `Config::validate`.
pub(super) fn check(cfg: &Config) -> Result<()> {
    let m = &cfg.model;
    non_empty("model.path", &m.path, "a model directory or hub id")?;
    if let Some(r) = &m.revision {
        non_empty("model.revision", r, "a hub revision (or no key)")?;
    }

    let d = &cfg.data;
    non_empty(
        "data.train",
        &d.train,
        "a JSONL file or a shipped benchmark name",
    )?;
    if d.dataset_name.trim().is_empty() {
        for (key, v) in [
            ("data.dataset_config", &d.dataset_config),
            ("data.validation_split", &d.validation_split),
        ] {
            if !v.is_empty() {
                bail!("{key} = {v:?} needs data.dataset_name (the hub data set it belongs to)");
            }
        }
    } else {
        non_empty(
            "data.train_split",
            &d.train_split,
            "a split name of data.dataset_name",
        )?;
        let defaults = crate::config::DataSection::default();
        if d.train != defaults.train {
            bail!(
                "data.train = {:?} and data.dataset_name = {:?} both name the training set:                  keep one",
                d.train,
                d.dataset_name
            );
        }
        if !d.validation_split.is_empty() && d.validation != defaults.validation {
            bail!(
                "data.validation = {:?} and data.validation_split = {:?} both name the                  validation set: keep one",
                d.validation,
                d.validation_split
            );
        }
    }
    non_empty("data.question_field", &d.question_field, "a field name")?;
    non_empty("data.answer_field", &d.answer_field, "a field name")?;
    if !d.prompt_template.contains("{question}") {
        bail!(
            "data.prompt_template = {:?}: expected a template containing the {{question}} placeholder",
            d.prompt_template
        );
    }

    let s = &cfg.sampling;
    expect(
        s.num_generations >= 2,
        "sampling.num_generations",
        s.num_generations,
        "at least 2 (group-relative advantages need a group)",
    )?;
    positive("sampling.max_completion_length", s.max_completion_length)?;
    above("sampling.temperature", s.temperature, 0.0)?;
    expect(
        s.top_p > 0.0 && s.top_p <= 1.0,
        "sampling.top_p",
        s.top_p,
        "a number in (0, 1]",
    )?;
    unit_open("sampling.min_p", s.min_p)?;
    for (i, stop) in s.stop.iter().enumerate() {
        if stop.is_empty() {
            bail!("sampling.stop[{i}]: expected a non-empty stop string, got an empty string (it would stop every completion at once)");
        }
    }
    for (i, t) in s.allowed_tokens.iter().enumerate() {
        if t.is_empty() {
            bail!("sampling.allowed_tokens[{i}]: expected a token, got an empty string");
        }
    }

    let r = &cfg.rewards;
    for (i, w) in r.weights.iter().enumerate() {
        finite(&format!("rewards.weights[{i}]"), *w)?;
    }
    positive("rewards.length_window", r.length_window)?;
    finite("rewards.tree_r_neg", r.tree_r_neg)?;
    finite("rewards.tree_r_other", r.tree_r_other)?;

    let l = &cfg.loss;
    at_least("loss.beta", l.beta, 0.0)?;
    expect(
        l.epsilon.is_finite() && (0.0..1.0).contains(&l.epsilon),
        "loss.epsilon",
        l.epsilon,
        "a number in [0, 1) (the ratio is clipped below at 1 - epsilon)",
    )?;
    if let Some(e) = l.epsilon_high {
        at_least("loss.epsilon_high", e, 0.0)?;
    }
    positive("loss.num_iterations", l.num_iterations)?;

    let o = &cfg.optim;
    at_least("optim.learning_rate", o.learning_rate, 0.0)?;
    unit_open("optim.adam_beta1", o.adam_beta1)?;
    unit_open("optim.adam_beta2", o.adam_beta2)?;
    above("optim.adam_epsilon", o.adam_epsilon, 0.0)?;
    at_least("optim.weight_decay", o.weight_decay, 0.0)?;
    at_least("optim.max_grad_norm", o.max_grad_norm, 0.0)?;

    let t = &cfg.train;
    positive("train.batch_size", t.batch_size)?;
    if let Some(k) = t.gradient_accumulation_steps.fixed() {
        positive("train.gradient_accumulation_steps", k)?;
    }
    positive("train.max_steps", t.max_steps)?;
    positive("train.logging_steps", t.logging_steps)?;
    positive("train.max_nonfinite_steps", t.max_nonfinite_steps)?;

    let e = &cfg.eval;
    positive("eval.n", e.n)?;
    at_least("eval.temperature", e.temperature, 0.0)?;
    positive("eval.max_completion_length", e.max_completion_length)?;

    if cfg.output.dir.as_os_str().is_empty() {
        bail!("output.dir: expected a folder for metrics and checkpoints, got an empty string");
    }

    let f = &cfg.sft;
    positive("sft.batch_size", f.batch_size)?;
    positive("sft.logging_steps", f.logging_steps)?;
    expect(
        (0.0..=1.0).contains(&f.direct_answer_fraction),
        "sft.direct_answer_fraction",
        f.direct_answer_fraction,
        "a fraction in [0, 1]",
    )?;
    at_least("sft.eval_temperature", f.eval_temperature, 0.0)?;
    positive("sft.max_position_embeddings", f.max_position_embeddings)?;
    above("sft.rope_theta", f.rope_theta, 0.0)?;
    at_least("sft.initializer_range", f.initializer_range, 0.0)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error `key=value` gets, or "ok".
    fn verdict(set: &str) -> String {
        match Config::from_overrides(&[set.to_string()]) {
            Ok(_) => "ok".into(),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn every_bad_numeric_value_is_named_with_its_range() {
        let cases = [
            (
                "optim.learning_rate=nan",
                "optim.learning_rate = NaN: expected a finite number >= 0",
            ),
            ("optim.learning_rate=inf", "optim.learning_rate = inf"),
            (
                "optim.learning_rate=-1e-5",
                "optim.learning_rate = -0.00001",
            ),
            (
                "optim.adam_beta1=1.0",
                "optim.adam_beta1 = 1: expected a number in [0, 1)",
            ),
            ("optim.adam_beta2=-0.1", "optim.adam_beta2 = -0.1"),
            (
                "optim.adam_epsilon=0",
                "optim.adam_epsilon = 0: expected a finite number > 0",
            ),
            ("optim.weight_decay=-0.01", "optim.weight_decay = -0.01"),
            ("optim.max_grad_norm=nan", "optim.max_grad_norm = NaN"),
            ("optim.max_grad_norm=-1", "optim.max_grad_norm = -1"),
            ("loss.epsilon=nan", "loss.epsilon = NaN"),
            (
                "loss.epsilon=1.5",
                "loss.epsilon = 1.5: expected a number in [0, 1)",
            ),
            ("loss.epsilon_high=inf", "loss.epsilon_high = inf"),
            (
                "loss.beta=nan",
                "loss.beta = NaN: expected a finite number >= 0",
            ),
            ("loss.beta=-0.1", "loss.beta = -0.1"),
            ("eval.n=0", "eval.n = 0: expected at least 1"),
            (
                "eval.temperature=-1",
                "eval.temperature = -1: expected a finite number >= 0",
            ),
            (
                "eval.max_completion_length=0",
                "eval.max_completion_length = 0",
            ),
            (
                "sampling.temperature=inf",
                "sampling.temperature = inf: expected a finite number > 0",
            ),
            ("sampling.temperature=0", "sampling.temperature = 0"),
            (
                "sampling.top_p=1.5",
                "sampling.top_p = 1.5: expected a number in (0, 1]",
            ),
            ("sampling.min_p=nan", "sampling.min_p = NaN"),
            (
                "sampling.num_generations=1",
                "sampling.num_generations = 1: expected at least 2",
            ),
            (
                "train.max_steps=0",
                "train.max_steps = 0: expected at least 1",
            ),
            (
                "train.max_nonfinite_steps=0",
                "train.max_nonfinite_steps = 0",
            ),
            (
                "rewards.weights=[nan]",
                "rewards.weights[0] = NaN: expected a finite number",
            ),
            (
                "rewards.length_window=0",
                "rewards.length_window = 0: expected at least 1",
            ),
            ("rewards.tree_r_neg=-inf", "rewards.tree_r_neg = -inf"),
            ("sft.rope_theta=0", "sft.rope_theta = 0"),
            (
                "sft.direct_answer_fraction=2",
                "sft.direct_answer_fraction = 2",
            ),
        ];
        for (set, want) in cases {
            let got = verdict(set);
            assert!(
                got.contains(want),
                "--set {set}: got `{got}`, want `{want}`"
            );
        }
    }

    #[test]
    fn bad_strings_are_named_by_key() {
        let cases = [
            ("data.train=", "data.train: expected a JSONL file or a shipped benchmark name, got an empty string"),
            ("output.dir=", "output.dir: expected a folder"),
            ("model.path=", "model.path: expected a model directory"),
            ("data.prompt_template=Solve it", "data.prompt_template = \"Solve it\": expected a template containing the {question} placeholder"),
            ("sampling.stop=[\"\"]", "sampling.stop[0]: expected a non-empty stop string"),
            ("data.question_field=", "data.question_field"),
        ];
        for (set, want) in cases {
            let got = verdict(set);
            assert!(
                got.contains(want),
                "--set {set}: got `{got}`, want `{want}`"
            );
        }
    }

    #[test]
    fn edge_values_inside_the_ranges_are_accepted() {
        for set in [
            "optim.learning_rate=0",
            "optim.adam_beta1=0",
            "optim.adam_beta2=0.9999",
            "optim.max_grad_norm=0",
            "loss.epsilon=0",
            "loss.epsilon_high=0.28",
            "loss.beta=0.04",
            "eval.temperature=0",
            "sampling.top_p=1",
            "sampling.min_p=0",
            "rewards.weights=[-1.0]",
        ] {
            assert_eq!(verdict(set), "ok", "--set {set}");
        }
    }
}
