//! Whether a run may be resumed with the config it is given.
//!
//! A checkpoint's `trainer_state.json` holds the config it was trained with. Resuming with a
//! config that changes the run (model, loss, data, sampling, rewards, seed, schedule) would
//! silently splice two different runs into one `metrics.jsonl` (a larger `max_steps` even
//! reshapes a cosine schedule mid-run), so such a change is refused, naming the key. Changes
//! that only affect where and how often things are written or measured are allowed.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

/// Keys (or `section.` prefixes) a resumed run may change freely.
const HARMLESS: &[&str] = &[
    "output.",
    "eval.",
    "sft.",
    "data.validation",
    "data.validation_split",
    "model.device",
    "train.logging_steps",
    "train.save_steps",
    "train.save_total_limit",
    "train.save_rollouts",
    "train.max_nonfinite_steps",
    "train.share_prefixes",
];

/// Compares the config a checkpoint was trained with (`saved`, TOML) with the one a resumed run
/// is given (`new`, TOML); `step` is the checkpoint's step. Keys present on one side only (a
/// config written by another version) are not compared.
///
/// `train.max_steps` may change under a constant learning rate (warmup counts absolute steps,
/// so it is unaffected), as long as it is not below `step`; under a decaying schedule it sets
/// the decay and may not change.
pub fn check_resume_config(saved: &str, new: &str, step: usize) -> Result<()> {
    let old = flatten(saved).context("the checkpoint's config (trainer_state.json)")?;
    let new = flatten(new).context("the resumed run's config")?;
    let constant = |m: &BTreeMap<String, toml::Value>| {
        m.get("optim.lr_scheduler_type")
            .and_then(toml::Value::as_str)
            .is_none_or(|s| s == "constant")
    };
    let mut changed = Vec::new();
    for (key, before) in &old {
        let Some(after) = new.get(key) else { continue };
        if before == after || HARMLESS.iter().any(|h| key_matches(key, h)) {
            continue;
        }
        if key == "train.max_steps" && constant(&old) && constant(&new) {
            let to = after.as_integer().unwrap_or(0);
            if to < step as i64 {
                bail!(
                    "--resume: train.max_steps = {to} is below the checkpoint's step {step}; \
                     pass at least {step}"
                );
            }
            continue;
        }
        let why = if key == "train.max_steps" {
            " (it sets where the decaying learning-rate schedule ends)"
        } else {
            ""
        };
        changed.push(format!("{key}: {before} → {after}{why}"));
    }
    if !changed.is_empty() {
        bail!(
            "--resume: the config differs from the checkpoint's in a way that changes the run:\n  \
             {}\nresume with the checkpoint's values (see its trainer_state.json), or start a new \
             run in another output.dir (only output.*, eval.*, data.validation, model.device, \
             train.logging_steps / save_steps / save_total_limit / save_rollouts / share_prefixes, and a \
             different train.max_steps under a constant learning rate may change)",
            changed.join("\n  ")
        );
    }
    Ok(())
}

fn key_matches(key: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('.') {
        Some(section) => key
            .strip_prefix(section)
            .is_some_and(|r| r.starts_with('.')),
        None => key == pattern,
    }
}

/// `section.key` → value for every leaf of a TOML document (arrays are leaves).
fn flatten(text: &str) -> Result<BTreeMap<String, toml::Value>> {
    let doc: toml::Table = toml::from_str(text)?;
    let mut out = BTreeMap::new();
    fn walk(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
        for (k, v) in table {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) => walk(&key, t, out),
                other => {
                    out.insert(key, other.clone());
                }
            }
        }
    }
    walk("", &doc, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[model]
path = "models/tiny-math"
device = "cpu"
[loss]
type = "lambda_grpo"
beta = 0.0
[optim]
learning_rate = 1e-5
lr_scheduler_type = "constant"
[train]
max_steps = 100
seed = 42
logging_steps = 1
[eval]
every = 50
[output]
dir = "runs/a"
"#;

    fn with(from: &str, to: &str) -> String {
        assert!(BASE.contains(from), "{from}");
        BASE.replace(from, to)
    }

    #[test]
    fn identical_and_harmless_changes_pass() {
        check_resume_config(BASE, BASE, 50).unwrap();
        for (a, b) in [
            ("dir = \"runs/a\"", "dir = \"runs/b\""),
            ("logging_steps = 1", "logging_steps = 10"),
            ("every = 50", "every = 10"),
            ("device = \"cpu\"", "device = \"cuda\""),
            ("max_steps = 100", "max_steps = 200"),
        ] {
            check_resume_config(BASE, &with(a, b), 50).unwrap();
        }
        // A key only one side has (another version's config) is not compared.
        check_resume_config(BASE, &format!("{BASE}[sft]\nsteps = 3\n"), 50).unwrap();
    }

    #[test]
    fn run_changing_keys_are_refused_by_name() {
        for (a, b, key) in [
            ("type = \"lambda_grpo\"", "type = \"dapo\"", "loss.type"),
            ("beta = 0.0", "beta = 0.04", "loss.beta"),
            ("seed = 42", "seed = 1", "train.seed"),
            (
                "path = \"models/tiny-math\"",
                "path = \"models/other\"",
                "model.path",
            ),
            (
                "learning_rate = 1e-5",
                "learning_rate = 2e-5",
                "optim.learning_rate",
            ),
        ] {
            let err = check_resume_config(BASE, &with(a, b), 50)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        let err = check_resume_config(BASE, &with("type = \"lambda_grpo\"", "type = \"dapo\""), 5)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"lambda_grpo\" → \"dapo\""), "{err}");
    }

    #[test]
    fn max_steps_only_under_a_constant_schedule() {
        let cosine = with("\"constant\"", "\"cosine\"");
        let longer = cosine.replace("max_steps = 100", "max_steps = 200");
        let err = check_resume_config(&cosine, &longer, 50)
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.max_steps"), "{err}");
        // Constant: allowed, but not below the checkpoint's step.
        let shorter = with("max_steps = 100", "max_steps = 20");
        let err = check_resume_config(BASE, &shorter, 50)
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.max_steps = 20"), "{err}");
        // Switching the schedule itself is a change.
        let err = check_resume_config(BASE, &cosine, 50)
            .unwrap_err()
            .to_string();
        assert!(err.contains("optim.lr_scheduler_type"), "{err}");
    }
}
