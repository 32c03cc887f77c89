//! TR-DPO's reference update (`loss.sync_ref_model`, TRL's `SyncRefModelCallback`): after every
//! `ref_model_sync_steps`-th step the reference becomes `α·policy + (1 − α)·reference`,
//! `α = ref_model_mixup_alpha`, parameter by parameter.

use anyhow::{bail, Context, Result};

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

/// A resumed run cannot rebuild a reference that has been synchronized (checkpoints hold the
/// policy only): refused with the key named, rather than silently training against the base.
pub fn check_resume(l: &LossSection, step: usize) -> Result<()> {
    if l.sync_ref_model && step >= l.ref_model_sync_steps {
        bail!(
            "loss.sync_ref_model: the reference was synchronized at step {} (ref_model_sync_steps = {}) \
             and checkpoints do not hold it, so this run cannot be resumed exactly; start it again, or \
             resume from a checkpoint before step {}",
            l.ref_model_sync_steps * (step / l.ref_model_sync_steps),
            l.ref_model_sync_steps,
            l.ref_model_sync_steps
        );
    }
    Ok(())
}
