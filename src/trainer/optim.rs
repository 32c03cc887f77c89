//! The optimizer (AdamW or SGD), gradient clipping and the learning-rate schedule.
//!
//! candle ships an AdamW, but it keeps its moments private, and resuming a run must restore
//! them bit for bit; so this one is written out (it is twelve lines of arithmetic).
//!
//! Moments are always f32, and so are the weights the update is applied to: for a model held in
//! bf16/f16 the optimizer keeps an f32 *master* copy of every parameter, updates that, and writes
//! its rounding back into the model (mixed-precision training as in Megatron / DeepSpeed).
//! Without it an AdamW step of lr·1 at lr 1e-6 is below half a bf16 ulp of any |w| ≳ 3e-4 and
//! rounds away: training silently does nothing.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, Var};

use crate::config::{LrScheduler, OptimKind, OptimSection};
use crate::trainer::inplace::{self, AdamW};

/// Learning rate at `step` (0-based): linear warmup, then constant / cosine / linear decay to 0
/// at `max_steps`. A pure function so a resumed run gets the same rate.
pub fn learning_rate(cfg: &OptimSection, step: usize, max_steps: usize) -> f64 {
    let base = cfg.learning_rate;
    if step < cfg.warmup_steps {
        return base * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    let decay_steps = max_steps.saturating_sub(cfg.warmup_steps).max(1) as f64;
    let progress = ((step - cfg.warmup_steps) as f64 / decay_steps).clamp(0.0, 1.0);
    match cfg.lr_scheduler_type {
        LrScheduler::Constant => base,
        LrScheduler::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        LrScheduler::Linear => base * (1.0 - progress),
    }
}

/// Decoupled-weight-decay Adam (Loshchilov & Hutter), as `torch.optim.AdamW`; or plain SGD
/// (`optim.optim = "sgd"`, as `torch.optim.SGD` without momentum), whose step follows the
/// gradient's scale, which Adam normalises away per parameter.
pub struct Optimizer {
    kind: OptimKind,
    names: Vec<String>,
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// f32 master weights of the parameters not held in f32 (`None` for f32 parameters, which
    /// are their own master).
    master: Vec<Option<Tensor>>,
    step: usize,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Optimizer {
    /// `params` are (name, var) pairs; the names key the saved state.
    pub fn new(mut params: Vec<(String, Var)>, cfg: &OptimSection) -> Result<Self> {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let mut names = Vec::with_capacity(params.len());
        let mut vars = Vec::with_capacity(params.len());
        let mut m = Vec::with_capacity(params.len());
        let mut v = Vec::with_capacity(params.len());
        let mut master = Vec::with_capacity(params.len());
        for (name, var) in params {
            let theta = var.as_tensor().to_dtype(DType::F32)?;
            // Two buffers: the step writes them in place.
            m.push(theta.zeros_like()?);
            v.push(theta.zeros_like()?);
            master.push((var.dtype() != DType::F32).then_some(theta));
            names.push(name);
            vars.push(var);
        }
        Ok(Self {
            kind: cfg.optim,
            names,
            vars,
            m,
            v,
            master,
            step: 0,
            beta1: cfg.adam_beta1,
            beta2: cfg.adam_beta2,
            eps: cfg.adam_epsilon,
            weight_decay: cfg.weight_decay,
        })
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether some parameter is held in half precision with an f32 master copy.
    pub fn has_master_weights(&self) -> bool {
        self.master.iter().any(Option::is_some)
    }

    /// The weights as the optimizer holds them, in f32: the master copy of a half-precision
    /// parameter (what a checkpoint should store), the parameter itself otherwise.
    pub fn master_weights(&self) -> Result<Vec<(String, Tensor)>> {
        self.names
            .iter()
            .zip(&self.vars)
            .zip(&self.master)
            .map(|((name, var), master)| {
                let t = match master {
                    Some(t) => t.clone(),
                    None => var.as_tensor().to_dtype(DType::F32)?,
                };
                Ok((name.clone(), t))
            })
            .collect()
    }

    /// One update with `grads[i]` the gradient of `vars()[i]`.
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        if grads.len() != self.vars.len() {
            bail!(
                "optimizer: {} gradients for {} parameters",
                grads.len(),
                self.vars.len()
            );
        }
        self.step += 1;
        let t = self.step as i32;
        let adamw = AdamW {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            bc1: 1.0 - self.beta1.powi(t),
            bc2: 1.0 - self.beta2.powi(t),
            lr,
            weight_decay: self.weight_decay,
        };
        for (i, grad) in grads.iter().enumerate() {
            let g = grad.to_dtype(DType::F32)?;
            // Updated in place: the master copy of a half-precision parameter, the
            // parameter itself otherwise.
            let theta = match &self.master[i] {
                Some(t) => t.clone(),
                None => self.vars[i].as_tensor().clone(),
            };
            match self.kind {
                // torch.optim.SGD: weight decay is L2, added to the gradient.
                OptimKind::Sgd => inplace::sgd_step(&theta, &g, lr, self.weight_decay)?,
                OptimKind::Adamw => adamw.step(&theta, &self.m[i], &self.v[i], &g)?,
            }
            if self.master[i].is_some() {
                let var = &self.vars[i];
                var.set(&theta.to_dtype(var.dtype())?)?;
            }
        }
        Ok(())
    }

    /// Moments, master weights (half-precision parameters only) and step count, for
    /// `checkpoint-N/optimizer.safetensors`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (i, name) in self.names.iter().enumerate() {
            tensors.insert(format!("m.{name}"), self.m[i].clone());
            tensors.insert(format!("v.{name}"), self.v[i].clone());
            if let Some(master) = &self.master[i] {
                tensors.insert(format!("master.{name}"), master.clone());
            }
        }
        tensors.insert(
            "step".to_string(),
            Tensor::new(&[self.step as i64], &candle_core::Device::Cpu)?,
        );
        candle_core::safetensors::save(&tensors, path)
            .with_context(|| format!("writing optimizer state {}", path.display()))
    }

    pub fn load(&mut self, path: &Path) -> Result<()> {
        let device = self
            .vars
            .first()
            .map(|v| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let tensors = candle_core::safetensors::load(path, &device)
            .with_context(|| format!("reading optimizer state {}", path.display()))?;
        for (i, name) in self.names.iter().enumerate() {
            let get = |k: String| {
                tensors
                    .get(&k)
                    .cloned()
                    .with_context(|| format!("{}: missing tensor `{k}`", path.display()))
            };
            // The step writes these in place; nothing else holds them once `tensors` is gone.
            for (moments, key) in [(&mut self.m, "m"), (&mut self.v, "v")] {
                let t = get(format!("{key}.{name}"))?.to_dtype(DType::F32)?;
                if t.shape() != self.vars[i].shape() {
                    bail!(
                        "{}: {key}.{name} has shape {:?}, the model {:?}",
                        path.display(),
                        t.shape(),
                        self.vars[i].shape()
                    );
                }
                moments[i] = t;
            }
            // A checkpoint written before master weights existed (or by an f32 run resumed in
            // half precision) has none: start them from the model's weights.
            if self.master[i].is_some() {
                if let Some(master) = tensors.get(&format!("master.{name}")) {
                    if master.shape() != self.vars[i].shape() {
                        bail!(
                            "{}: master.{name} has shape {:?}, the model {:?}",
                            path.display(),
                            master.shape(),
                            self.vars[i].shape()
                        );
                    }
                    self.master[i] = Some(master.to_dtype(DType::F32)?);
                }
            }
        }
        let step = tensors
            .get("step")
            .with_context(|| format!("{}: missing tensor `step`", path.display()))?
            .to_device(&candle_core::Device::Cpu)?
            .to_vec1::<i64>()?;
        self.step = step.first().copied().unwrap_or(0) as usize;
        Ok(())
    }
}

/// Global L2 norm of all gradients, in f64.
pub fn global_norm(grads: &[Tensor]) -> Result<f64> {
    let mut total = 0.0f64;
    for g in grads {
        total += inplace::sum_sq(&g.to_dtype(DType::F32)?)?;
    }
    Ok(total.sqrt())
}

/// Scales gradients so their global norm is at most `max_norm` (as
/// `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping. Scales f32 gradients in
/// place (they must not share storage with anything else), others by a new tensor.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads)?;
    if max_norm > 0.0 && norm.is_finite() && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            if g.dtype() == DType::F32 && g.is_contiguous() {
                inplace::scale(g, scale as f32)?;
            } else {
                *g = (&*g * scale)?;
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn optim(lr: f64, wd: f64) -> OptimSection {
        OptimSection {
            learning_rate: lr,
            weight_decay: wd,
            ..OptimSection::default()
        }
    }

    #[test]
    fn adamw_matches_torch_reference() {
        // torch.optim.AdamW([p], lr=0.1, weight_decay=0.01), p = [1, -2], grads [0.5, 0.25] then
        // [-1, 2], recomputed below in f64 with torch's update order.
        let var = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let cfg = optim(0.1, 0.01);
        let mut opt = Optimizer::new(vec![("p".into(), var.clone())], &cfg).unwrap();
        let g1 = Tensor::new(&[0.5f32, 0.25], &Device::Cpu).unwrap();
        let g2 = Tensor::new(&[-1.0f32, 2.0], &Device::Cpu).unwrap();
        opt.step(&[g1], 0.1).unwrap();
        opt.step(&[g2], 0.1).unwrap();
        // Hand computation in f64 of the same recurrences.
        let mut p = [1.0f64, -2.0];
        let gs = [[0.5f64, 0.25], [-1.0, 2.0]];
        let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
        for (t, g) in gs.iter().enumerate() {
            let t = t as i32 + 1;
            for k in 0..2 {
                p[k] *= 1.0 - 0.1 * 0.01;
                m[k] = 0.9 * m[k] + 0.1 * g[k];
                v[k] = 0.999 * v[k] + 0.001 * g[k] * g[k];
                let mh = m[k] / (1.0 - 0.9f64.powi(t));
                let vh = v[k] / (1.0 - 0.999f64.powi(t));
                p[k] -= 0.1 * mh / (vh.sqrt() + 1e-8);
            }
        }
        let got = var.as_tensor().to_vec1::<f32>().unwrap();
        for k in 0..2 {
            assert!((got[k] as f64 - p[k]).abs() < 1e-6, "{got:?} vs {p:?}");
        }
    }

    #[test]
    fn sgd_matches_torch_reference() {
        // torch.optim.SGD([p], lr=0.1, weight_decay=0.01): p -= lr·(g + wd·p), twice.
        let var = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let cfg = OptimSection {
            optim: OptimKind::Sgd,
            ..optim(0.1, 0.01)
        };
        let mut opt = Optimizer::new(vec![("p".into(), var.clone())], &cfg).unwrap();
        opt.step(&[Tensor::new(&[0.5f32, 0.25], &Device::Cpu).unwrap()], 0.1)
            .unwrap();
        // 1 − 0.1·(0.5 + 0.01) = 0.949;  −2 − 0.1·(0.25 − 0.02) = −2.023
        let got = var.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (got[0] - 0.949).abs() < 1e-6 && (got[1] + 2.023).abs() < 1e-6,
            "{got:?}"
        );
        opt.step(&[Tensor::new(&[-1.0f32, 2.0], &Device::Cpu).unwrap()], 0.1)
            .unwrap();
        let want = [
            0.949 - 0.1 * (-1.0 + 0.01 * 0.949),
            -2.023 - 0.1 * (2.0 - 0.01 * 2.023),
        ];
        let got = var.as_tensor().to_vec1::<f32>().unwrap();
        for k in 0..2 {
            assert!(
                (got[k] as f64 - want[k]).abs() < 1e-6,
                "{got:?} vs {want:?}"
            );
        }
        assert_eq!(opt.step, 2);
    }

    #[test]
    fn optimizer_state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let var = Var::new(&[1.0f32, -2.0, 3.0], &Device::Cpu).unwrap();
        let cfg = optim(0.01, 0.0);
        let mut opt = Optimizer::new(vec![("w".into(), var.clone())], &cfg).unwrap();
        let g = Tensor::new(&[0.1f32, 0.2, -0.3], &Device::Cpu).unwrap();
        opt.step(std::slice::from_ref(&g), 0.01).unwrap();
        opt.save(&dir.path().join("opt.safetensors")).unwrap();
        let var2 = Var::new(&var.as_tensor().to_vec1::<f32>().unwrap()[..], &Device::Cpu).unwrap();
        let mut opt2 = Optimizer::new(vec![("w".into(), var2.clone())], &cfg).unwrap();
        opt2.load(&dir.path().join("opt.safetensors")).unwrap();
        assert_eq!(opt2.step, 1);
        opt.step(std::slice::from_ref(&g), 0.01).unwrap();
        opt2.step(&[g], 0.01).unwrap();
        assert_eq!(
            var.as_tensor().to_vec1::<f32>().unwrap(),
            var2.as_tensor().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn half_precision_keeps_f32_master_weights() {
        // One AdamW step at lr 1e-6 moves every weight by ~1e-6 (Adam's first step is
        // lr·sign(g)), far below half an ulp of bf16/f16 at these magnitudes: without master
        // weights the update rounds away and the model never changes.
        let init = [0.5f32, -1.0, 2.0, 0.75];
        for dtype in [DType::BF16, DType::F16] {
            let var = Var::from_tensor(
                &Tensor::new(&init, &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let mut opt =
                Optimizer::new(vec![("w".into(), var.clone())], &optim(1e-6, 0.0)).unwrap();
            assert!(opt.has_master_weights());
            let g = Tensor::new(&[0.3f32, -0.2, 0.1, -0.4], &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            opt.step(std::slice::from_ref(&g), 1e-6).unwrap();
            let master = opt.master_weights().unwrap()[0].1.to_vec1::<f32>().unwrap();
            let want = [0.5 - 1e-6, -1.0 + 1e-6, 2.0 - 1e-6, 0.75 + 1e-6];
            for k in 0..4 {
                assert!(
                    (f64::from(master[k]) - want[k]).abs() < 1e-7,
                    "{dtype:?}: {master:?} vs {want:?}"
                );
            }
            // The model holds the master's rounding.
            let model = var
                .as_tensor()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(model, init, "{dtype:?}");
            // Many small steps accumulate in the master and eventually move the model too.
            for _ in 0..2000 {
                opt.step(std::slice::from_ref(&g), 1e-5).unwrap();
            }
            let model = var
                .as_tensor()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert!(model[0] < 0.5 && model[1] > -1.0, "{dtype:?}: {model:?}");

            // Save / load restores the master exactly.
            let dir = tempfile::tempdir().unwrap();
            opt.save(&dir.path().join("o.safetensors")).unwrap();
            let var2 = Var::from_tensor(var.as_tensor()).unwrap();
            let mut opt2 = Optimizer::new(vec![("w".into(), var2)], &optim(1e-6, 0.0)).unwrap();
            opt2.load(&dir.path().join("o.safetensors")).unwrap();
            assert_eq!(
                opt2.master_weights().unwrap()[0]
                    .1
                    .to_vec1::<f32>()
                    .unwrap(),
                opt.master_weights().unwrap()[0].1.to_vec1::<f32>().unwrap()
            );
        }
        // f32 parameters are their own master.
        let var = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        let opt = Optimizer::new(vec![("w".into(), var)], &optim(1e-6, 0.0)).unwrap();
        assert!(!opt.has_master_weights());
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let mut grads = vec![
            Tensor::new(&[3.0f32], &Device::Cpu).unwrap(),
            Tensor::new(&[4.0f32], &Device::Cpu).unwrap(),
        ];
        let norm = clip_grad_norm(&mut grads, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        let after = global_norm(&grads).unwrap();
        assert!((after - 1.0).abs() < 1e-5, "{after}");
    }

    #[test]
    fn schedules() {
        let mut cfg = optim(1.0, 0.0);
        cfg.warmup_steps = 2;
        assert_eq!(learning_rate(&cfg, 0, 10), 0.5);
        assert_eq!(learning_rate(&cfg, 1, 10), 1.0);
        assert_eq!(learning_rate(&cfg, 5, 10), 1.0);
        cfg.lr_scheduler_type = LrScheduler::Cosine;
        assert!((learning_rate(&cfg, 2, 10) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&cfg, 6, 10) - 0.5).abs() < 1e-12);
        cfg.lr_scheduler_type = LrScheduler::Linear;
        assert!((learning_rate(&cfg, 6, 10) - 0.5).abs() < 1e-12);
    }
}
