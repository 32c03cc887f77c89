//! TR-DPO's reference update (`loss.sync_ref_model`, TRL's `SyncRefModelCallback`): after every
//! `ref_model_sync_steps`-th step the reference becomes `α·policy + (1 − α)·reference`,
//! `α = ref_model_mixup_alpha`, parameter by parameter.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;

use crate::config::LossSection;
use crate::model::Policy;

/// Mixes the policy into the reference when `step` (steps completed) is a multiple of
/// `ref_model_sync_steps`; returns whether it did.
pub fn maybe_sync(
    l: &LossSection,
    step: usize,
    policy: &Policy,
    reference: &Policy,
) -> Result<bool> {
    if !l.sync_ref_model || step == 0 || !step.is_multiple_of(l.ref_model_sync_steps) {
        return Ok(false);
    }
    mix(policy, reference, l.ref_model_mixup_alpha)?;
    tracing::info!(
        step,
        alpha = l.ref_model_mixup_alpha,
        "reference model synchronized (TR-DPO)"
    );
    Ok(true)
}

/// `reference ← α·policy + (1 − α)·reference` for every parameter (same names and shapes).
pub fn mix(policy: &Policy, reference: &Policy, alpha: f64) -> Result<()> {
    let pv = policy.named_vars();
    let rv = reference.named_vars();
    if pv.len() != rv.len() {
        bail!(
            "sync_ref_model: the policy has {} parameters, the reference {}",
            pv.len(),
            rv.len()
        );
    }
    for ((pn, p), (rn, r)) in pv.iter().zip(&rv) {
        if pn != rn {
            bail!("sync_ref_model: parameter `{pn}` of the policy against `{rn}` of the reference");
        }
        let dtype = r.as_tensor().dtype();
        let mixed = ((r.as_tensor() * (1.0 - alpha))?
            + (p.as_tensor().to_dtype(dtype)?.detach() * alpha)?)
            .with_context(|| format!("sync_ref_model: mixing `{pn}`"))?;
        r.set(&mixed)?;
    }
    Ok(())
}

/// The file beside a checkpoint's weights that holds the synchronized reference.
pub const REFERENCE_FILE: &str = "ref_model.safetensors";

/// After a checkpoint is written into `dir`: with `sync_ref_model`, the reference goes beside it
/// (written to a temporary name and renamed, so a killed save leaves no half file), since a
/// synchronized reference is no longer the base model a resumed run would load.
pub fn save_reference(l: &LossSection, dir: &Path, reference: Option<&Policy>) -> Result<()> {
    let Some(reference) = reference.filter(|_| l.sync_ref_model) else {
        return Ok(());
    };
    let tensors: HashMap<String, Tensor> = reference
        .named_vars()
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect();
    let tmp = dir.join(format!(".{REFERENCE_FILE}.partial"));
    candle_core::safetensors::save(&tensors, &tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(REFERENCE_FILE))
        .with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

/// On `--resume` from `dir` at `step`: puts back the reference a synchronized run saved. A run
/// past its first synchronization whose checkpoint lacks the file cannot be resumed exactly, and
/// is refused with the key named rather than trained against the base model.
pub fn restore_reference(
    l: &LossSection,
    dir: &Path,
    step: usize,
    reference: Option<&Policy>,
) -> Result<()> {
    let Some(reference) = reference.filter(|_| l.sync_ref_model) else {
        return Ok(());
    };
    let file = dir.join(REFERENCE_FILE);
    if !file.exists() {
        if step >= l.ref_model_sync_steps {
            bail!(
                "loss.sync_ref_model: the reference was synchronized at step {} (ref_model_sync_steps = {}) \
                 but {} does not hold it, so this run cannot be resumed exactly; start it again, or \
                 resume from a checkpoint before step {}",
                l.ref_model_sync_steps * (step / l.ref_model_sync_steps),
                l.ref_model_sync_steps,
                dir.display(),
                l.ref_model_sync_steps
            );
        }
        return Ok(());
    }
    let saved = candle_core::safetensors::load(&file, &reference.device)
        .with_context(|| format!("reading {}", file.display()))?;
    for (name, var) in reference.named_vars() {
        let t = saved
            .get(&name)
            .with_context(|| format!("{}: no tensor `{name}`", file.display()))?;
        var.set(&t.to_dtype(var.as_tensor().dtype())?)
            .with_context(|| format!("{}: tensor `{name}`", file.display()))?;
    }
    Ok(())
}
