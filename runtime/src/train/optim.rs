//! SGD (momentum, weight decay) and Adam: each step one fused update of the group with
//! libtorch's `_foreach_*` kernels (through `esper-torch-shim`; SGD on CUDA one kernel
//! of the shim's for the group, the same arithmetic), the state (momentum,
//! moments, step count) ours to checkpoint: a resumed run continues exactly where it
//! stopped.
//!
//! Nothing in a step changes on the host from one step to the next (Adam's step count,
//! which its bias corrections need, is kept on the device too), so a CUDA graph of the
//! training step replays it right ([`Optimizer::count_replayed_step`] keeps the host's
//! count, which checkpoints read, in line).

use crate::config::OptimizerConfig;
use esper_torch_shim::{self as shim, ShimError};
use tch::{Kind, Tensor};

/// Saved optimizer state that does not fit the optimizer it is loaded into.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateMismatch {
    #[error("optimizer state has no `steps`")]
    NoSteps,
    #[error("optimizer state {name} has shape {saved:?}, parameter has {expected:?}")]
    Shape { name: String, saved: Vec<i64>, expected: Vec<i64> },
}

fn refs(v: &[Tensor]) -> Vec<&Tensor> {
    v.iter().collect()
}

/// A step count as a 0-d double tensor on `device`.
fn count_on(device: tch::Device, steps: i64) -> Result<Tensor, ShimError> {
    Tensor::f_from_slice(&[steps as f64])
        .and_then(|t| t.f_reshape([] as [i64; 0]))
        .and_then(|t| t.f_to_device(device))
        .map_err(|e| ShimError(e.to_string()))
}

/// An optimizer's state, copied for a rollback (see [`Optimizer::save_into`]).
#[derive(Debug, Default)]
pub struct StateCopy {
    steps: i64,
    state: Vec<Vec<Tensor>>,
}

pub struct Optimizer {
    config: OptimizerConfig,
    params: Vec<Tensor>,
    /// Per parameter: SGD `[momentum]`, Adam `[m, v]` (created lazily on first step).
    state: Vec<Vec<Tensor>>,
    steps: i64,
    /// Adam: `steps` on the parameters' device (0-d double), made at the first step.
    device_steps: Option<Tensor>,
    /// A frozen optimizer's `step` changes nothing (a seed blending out for a prune).
    frozen: bool,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig, params: Vec<Tensor>) -> Self {
        let state = params.iter().map(|_| Vec::new()).collect();
        Self { config, params, state, steps: 0, device_steps: None, frozen: false }
    }

    /// Freezes (or thaws) its parameters: while frozen, `step` leaves them and the
    /// optimizer state as they are.
    pub fn set_frozen(&mut self, frozen: bool) {
        self.frozen = frozen;
    }

    pub fn frozen(&self) -> bool {
        self.frozen
    }

    /// Steps taken (the host's count, which checkpoints keep).
    pub fn steps(&self) -> i64 {
        self.steps
    }

    /// Sets the host's count only (a CUDA graph capture ran `step` without stepping).
    pub(super) fn set_steps(&mut self, steps: i64) {
        self.steps = steps;
    }

    /// Whether every parameter with a gradient has its state: then a step allocates
    /// nothing and changes nothing on the host but the count (what a CUDA graph of it
    /// needs). Before a first step, a parameter without a gradient yet, or Adam's device
    /// count not made yet, say no.
    pub fn ready_for_capture(&self) -> bool {
        let slots = self.state_slots();
        let states = self.params.iter().zip(&self.state).all(|(p, s)| s.len() == slots || !p.grad().defined());
        let count = !matches!(self.config, OptimizerConfig::Adam { .. }) || self.device_steps.is_some();
        self.frozen || (self.steps > 0 && states && count)
    }

    /// Counts a step a CUDA graph replay made (its kernels updated the parameters, the
    /// state and the device count).
    pub fn count_replayed_step(&mut self) {
        if !self.frozen {
            self.steps += 1;
        }
    }

    fn state_slots(&self) -> usize {
        match self.config {
            OptimizerConfig::Sgd { momentum: 0.0, .. } => 0,
            OptimizerConfig::Sgd { .. } => 1,
            OptimizerConfig::Adam { .. } => 2,
        }
    }

    /// Zeroes the gradients the group has (one fused kernel for all of them).
    pub fn zero_grad(&mut self) -> Result<(), ShimError> {
        let grads: Vec<Tensor> = self.params.iter().map(Tensor::grad).filter(Tensor::defined).collect();
        shim::zero(&refs(&grads))
    }

    /// Drops the group's gradients (no kernel; see [`shim::clear_grads`]) and says which
    /// parameters had one, for [`Self::zero_missing_grads`] after the backward.
    pub fn clear_grads(&mut self) -> Result<Vec<bool>, ShimError> {
        let had: Vec<bool> = self.params.iter().map(|p| p.grad().defined()).collect();
        shim::clear_grads(&refs(&self.params))?;
        Ok(had)
    }

    /// After a backward that followed [`Self::clear_grads`]: a zero gradient for each
    /// parameter that had one and that the backward did not reach, so the step treats
    /// it as after [`Self::zero_grad`].
    pub fn zero_missing_grads(&mut self, had: &[bool]) -> Result<(), ShimError> {
        shim::zero_missing_grads(&refs(&self.params), had)
    }

    /// One update of every parameter that has a gradient: one fused step over the group
    /// (libtorch's `_foreach_*` kernels through the C++ shim: one launch per op for the
    /// whole group on CUDA; SGD on CUDA one kernel of the shim's for the group). State is
    /// created at a parameter's first gradient (momentum and moments at zero, so the first
    /// update is exactly the plain one).
    pub fn step(&mut self) -> Result<(), ShimError> {
        if self.frozen {
            return Ok(());
        }
        self.steps += 1;
        let (mut params, mut grads, mut first, mut second) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let slots = self.state_slots();
        for (p, state) in self.params.iter().zip(&mut self.state) {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            while state.len() < slots {
                state.push(tch::no_grad(|| p.zeros_like()));
            }
            params.push(p.shallow_clone());
            grads.push(g);
            if slots > 0 {
                first.push(state[0].shallow_clone());
            }
            if slots > 1 {
                second.push(state[1].shallow_clone());
            }
        }
        if params.is_empty() {
            return Ok(());
        }
        let r = refs;
        match self.config {
            OptimizerConfig::Sgd { lr, momentum, weight_decay } => {
                shim::sgd(&r(&params), &r(&grads), &r(&first), shim::Sgd { lr, momentum, weight_decay }).map(|_| ())
            }
            OptimizerConfig::Adam { lr, beta1, beta2, weight_decay, eps } => {
                let settings = shim::Adam { lr, beta1, beta2, weight_decay, eps };
                // Made at the first step from the count before it (the shim adds one).
                let steps = match &self.device_steps {
                    Some(t) => t,
                    None => self.device_steps.insert(count_on(params[0].device(), self.steps - 1)?),
                };
                shim::adam(&r(&params), &r(&grads), &r(&first), &r(&second), settings, steps)
            }
        }
    }

    /// Named state tensors (and the step count) for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("steps".to_string(), Tensor::from_slice(&[self.steps]))];
        for (i, s) in self.state.iter().enumerate() {
            for (j, t) in s.iter().enumerate() {
                out.push((format!("p{i}.s{j}"), t.shallow_clone()));
            }
        }
        out
    }

    /// Copies the state into `copy`, in place once `copy` has the same structure (no
    /// allocation per call), for an in-memory rollback.
    pub fn save_into(&self, copy: &mut StateCopy) -> Result<(), tch::TchError> {
        copy.steps = self.steps;
        let same =
            copy.state.len() == self.state.len() && copy.state.iter().zip(&self.state).all(|(c, s)| c.len() == s.len());
        if !same {
            copy.state = self
                .state
                .iter()
                .map(|s| s.iter().map(|t| t.f_detach_copy()).collect::<Result<Vec<_>, _>>())
                .collect::<Result<_, _>>()?;
            return Ok(());
        }
        tch::no_grad(|| {
            for (c, s) in copy.state.iter_mut().flatten().zip(self.state.iter().flatten()) {
                c.f_copy_(s)?;
            }
            Ok(())
        })
    }

    /// Restores what [`Optimizer::save_into`] copied (state created after the copy is
    /// dropped, as if it never existed).
    pub fn restore_from(&mut self, copy: &StateCopy) -> Result<(), tch::TchError> {
        self.steps = copy.steps;
        if let Some(t) = &self.device_steps {
            let _ = t.shallow_clone().f_fill_(copy.steps as f64)?; // no sync: a fill kernel
        }
        tch::no_grad(|| {
            for (mine, saved) in self.state.iter_mut().zip(&copy.state) {
                if mine.len() == saved.len() {
                    for (m, s) in mine.iter_mut().zip(saved) {
                        m.f_copy_(s)?;
                    }
                } else {
                    *mine = saved.iter().map(|t| t.f_detach_copy()).collect::<Result<_, _>>()?;
                }
            }
            Ok(())
        })
    }

    /// Restores what [`Optimizer::state_tensors`] saved.
    pub fn load_state(&mut self, tensors: &[(String, Tensor)]) -> Result<(), StateMismatch> {
        let get = |name: &str| tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t);
        let steps = get("steps").ok_or(StateMismatch::NoSteps)?;
        self.steps = steps.int64_value(&[0]);
        self.device_steps = None; // made from `steps` at the next step
        for (i, (p, state)) in self.params.iter().zip(&mut self.state).enumerate() {
            state.clear();
            for j in 0.. {
                let name = format!("p{i}.s{j}");
                let Some(t) = get(&name) else { break };
                if t.size() != p.size() {
                    return Err(StateMismatch::Shape { name, saved: t.size(), expected: p.size() });
                }
                state.push(t.to_device(p.device()).to_kind(Kind::Float));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn quadratic_descent(config: OptimizerConfig) -> f64 {
        let p = Tensor::from_slice(&[3.0f32, -2.0]).set_requires_grad(true);
        let mut opt = Optimizer::new(config, vec![p.shallow_clone()]);
        for _ in 0..200 {
            opt.zero_grad().unwrap();
            (&p * &p).sum(Kind::Float).backward();
            opt.step().unwrap();
        }
        p.abs().max().double_value(&[])
    }

    #[test]
    fn both_optimizers_minimise_a_quadratic() {
        assert!(quadratic_descent(OptimizerConfig::Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.0 }) < 1e-3);
        assert!(
            quadratic_descent(OptimizerConfig::Adam {
                lr: 0.1,
                beta1: 0.9,
                beta2: 0.999,
                weight_decay: 0.0,
                eps: 1e-8
            }) < 1e-2
        );
    }

    #[test]
    fn rollback_restores_the_state_exactly_even_when_it_was_created_later() {
        let config = OptimizerConfig::Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.0 };
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut opt = Optimizer::new(config, vec![p.shallow_clone()]);
        let step = |opt: &mut Optimizer| {
            opt.zero_grad().unwrap();
            (&p * &p * &p).sum(Kind::Float).backward();
            opt.step().unwrap();
        };
        let mut copy = StateCopy::default();
        opt.save_into(&mut copy).unwrap(); // before the momentum buffer exists
        let p0 = p.detach().copy();
        step(&mut opt);
        step(&mut opt);
        tch::no_grad(|| p.shallow_clone().copy_(&p0));
        opt.restore_from(&copy).unwrap();
        step(&mut opt);
        let once = p.detach().copy();
        // The same single step from scratch.
        let q = p0.copy().set_requires_grad(true);
        let mut fresh = Optimizer::new(config, vec![q.shallow_clone()]);
        fresh.zero_grad().unwrap();
        (&q * &q * &q).sum(Kind::Float).backward();
        fresh.step().unwrap();
        assert!(once.equal(&q.detach()), "{once} vs {q}");
        // Saved in place once the structure matches: the copy follows later states.
        opt.save_into(&mut copy).unwrap();
        step(&mut opt);
        opt.restore_from(&copy).unwrap();
        assert_eq!(opt.steps, copy.steps);
    }

    #[test]
    fn state_round_trip_continues_identically() {
        let config = OptimizerConfig::Adam { lr: 0.05, beta1: 0.9, beta2: 0.999, weight_decay: 0.01, eps: 1e-8 };
        let run = |p: &Tensor, opt: &mut Optimizer, n: usize| {
            for _ in 0..n {
                opt.zero_grad().unwrap();
                (p * p * p).sum(Kind::Float).backward();
                opt.step().unwrap();
            }
        };
        let a = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let mut oa = Optimizer::new(config, vec![a.shallow_clone()]);
        run(&a, &mut oa, 6);
        let b = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let mut ob = Optimizer::new(config, vec![b.shallow_clone()]);
        run(&b, &mut ob, 3);
        let saved: Vec<(String, Tensor)> = ob.state_tensors().into_iter().map(|(n, t)| (n, t.copy())).collect();
        let mut ob2 = Optimizer::new(config, vec![b.shallow_clone()]);
        ob2.load_state(&saved).unwrap();
        run(&b, &mut ob2, 3);
        assert!(a.equal(&b), "{a} vs {b}");
        assert_eq!(b.device(), Device::Cpu);
    }

    #[test]
    fn state_that_does_not_fit_is_refused_naming_what() {
        let config = OptimizerConfig::Adam { lr: 0.05, beta1: 0.9, beta2: 0.999, weight_decay: 0.0, eps: 1e-8 };
        let p = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let mut opt = Optimizer::new(config, vec![p.shallow_clone()]);
        assert_eq!(opt.load_state(&[]), Err(StateMismatch::NoSteps));
        let steps = ("steps".to_string(), Tensor::from_slice(&[3i64]));
        let wide = ("p0.s0".to_string(), Tensor::zeros([3], (Kind::Float, Device::Cpu)));
        let e = opt.load_state(&[steps, wide]).unwrap_err();
        assert_eq!(e, StateMismatch::Shape { name: "p0.s0".into(), saved: vec![3], expected: vec![2] });
        assert_eq!(e.to_string(), "optimizer state p0.s0 has shape [3], parameter has [2]");
    }
}
