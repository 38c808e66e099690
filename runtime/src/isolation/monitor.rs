//! Gradient health monitor: host and seed gradient norms compared after backward.
//!
//! Norms are computed where the gradients live: parameters are grouped **per device**
//! once (and again after a device move), each group is reduced on its own device
//! (one norm kernel per tensor, one stack and sum per group), and the per-device partial
//! sums are moved to one device and added (BUG-013: mixed devices never fail). The whole
//! computation stays on the device; reading a [`GradientSample`] costs one transfer of
//! three numbers, not one sync per parameter.
//!
//! Ratio = (seed_norm / host_norm) * sqrt(host_params / seed_params), clamped to 10,
//! and 0 when host_norm < 1e-8. (Its EMA, decay 0.9, lives with the seed's metrics in
//! `lifecycle::SeedMetrics`.)

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

pub const RATIO_CLAMP: f64 = 10.0;
pub const HOST_NORM_FLOOR: f64 = 1e-8;

/// Parameters grouped by the device they live on.
#[derive(Debug, Default)]
struct DeviceGroups {
    groups: Vec<(Device, Vec<Tensor>)>,
    numel: i64,
}

impl DeviceGroups {
    fn new(params: &[Tensor]) -> Self {
        let mut groups: Vec<(Device, Vec<Tensor>)> = Vec::new();
        for p in params {
            let d = p.device();
            match groups.iter_mut().find(|(g, _)| *g == d) {
                Some((_, v)) => v.push(p.shallow_clone()),
                None => groups.push((d, vec![p.shallow_clone()])),
            }
        }
        Self { groups, numel: params.iter().map(|p| p.numel() as i64).sum() }
    }

    fn regroup(&mut self) {
        let all: Vec<Tensor> = self.groups.drain(..).flat_map(|(_, v)| v).collect();
        *self = Self::new(&all);
    }

    fn devices(&self) -> Vec<Device> {
        self.groups.iter().map(|(d, _)| *d).collect()
    }

    /// Sum of squared gradient norms, reduced per device, then on `target`.
    /// None when no parameter has a gradient.
    fn sum_sq(&self, target: Device) -> Option<Tensor> {
        let mut total: Option<Tensor> = None;
        for (device, params) in &self.groups {
            let norms: Vec<Tensor> = params
                .iter()
                .map(|p| p.grad())
                .filter(|g| g.defined())
                .map(|g| g.norm().to_kind(Kind::Float))
                .collect();
            if norms.is_empty() {
                continue;
            }
            let mut partial = Tensor::stack(&norms, 0).square().sum(Kind::Float);
            if *device != target {
                partial = partial.to_device_(target, Kind::Float, true, false);
            }
            total = Some(match total {
                Some(t) => t + partial,
                None => partial,
            });
        }
        total
    }
}

/// One measurement, read back to the host.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GradientSample {
    pub host_norm: f64,
    pub seed_norm: f64,
    pub ratio: f64,
}

#[derive(Debug, Default)]
pub struct GradientHealthMonitor {
    host: DeviceGroups,
    seed: DeviceGroups,
}

impl GradientHealthMonitor {
    pub fn new(host_params: &[Tensor], seed_params: &[Tensor]) -> Self {
        Self { host: DeviceGroups::new(host_params), seed: DeviceGroups::new(seed_params) }
    }

    /// Re-groups after the parameters moved device (they are shared handles, so they
    /// follow a `VarStore::set_device`; only the grouping needs refreshing).
    pub fn follow_device_move(&mut self) {
        self.host.regroup();
        self.seed.regroup();
    }

    /// Devices of the host and seed groups.
    pub fn devices(&self) -> (Vec<Device>, Vec<Device>) {
        (self.host.devices(), self.seed.devices())
    }

    /// Host norm, seed norm and ratio as device tensors (no host sync). None until
    /// both sides have gradients.
    pub fn compute(&self) -> Option<[Tensor; 3]> {
        let target = self.host.groups.first().or(self.seed.groups.first())?.0;
        let host_norm = self.host.sum_sq(target)?.sqrt();
        let seed_norm = self.seed.sum_sq(target)?.sqrt();
        let scale = (self.host.numel as f64 / self.seed.numel.max(1) as f64).sqrt();
        let raw = (&seed_norm / host_norm.clamp_min(HOST_NORM_FLOOR) * scale).clamp_max(RATIO_CLAMP);
        let ratio = raw.where_self(&host_norm.ge(HOST_NORM_FLOOR), &raw.zeros_like());
        Some([host_norm, seed_norm, ratio])
    }

    /// Computes and reads back the three numbers (one transfer).
    pub fn sample(&self) -> Option<GradientSample> {
        let values = Tensor::stack(&self.compute()?, 0).to_device(Device::Cpu);
        let v: Vec<f64> = Vec::<f64>::try_from(&values.to_kind(Kind::Double)).ok()?;
        Some(GradientSample { host_norm: v[0], seed_norm: v[1], ratio: v[2] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_with_grad(values: &[f32]) -> Tensor {
        let p = Tensor::from_slice(values).set_requires_grad(true);
        (&p * &p * 0.5).sum(Kind::Float).backward(); // grad = p
        p
    }

    #[test]
    fn ratio_matches_the_formula() {
        let host = [param_with_grad(&[3.0, 4.0]), param_with_grad(&[0.0, 0.0, 0.0, 0.0])]; // |g| = 5, 6 params
        let seed = [param_with_grad(&[1.0, 0.0])]; // |g| = 1, 2 params
        let m = GradientHealthMonitor::new(&host, &seed);
        let s = m.sample().unwrap();
        assert!((s.host_norm - 5.0).abs() < 1e-6 && (s.seed_norm - 1.0).abs() < 1e-6);
        let expected = (1.0 / 5.0) * (6.0f64 / 2.0).sqrt();
        assert!((s.ratio - expected).abs() < 1e-6, "{s:?}");
    }

    #[test]
    fn clamped_and_zero_when_host_is_still() {
        let host = [param_with_grad(&[1e-3])];
        let seed = [param_with_grad(&[100.0])];
        assert_eq!(GradientHealthMonitor::new(&host, &seed).sample().unwrap().ratio, RATIO_CLAMP);
        let host = [param_with_grad(&[0.0])];
        assert_eq!(GradientHealthMonitor::new(&host, &seed).sample().unwrap().ratio, 0.0);
    }

    #[test]
    fn no_gradients_no_sample() {
        let host = [Tensor::ones([2], (Kind::Float, Device::Cpu)).set_requires_grad(true)];
        let seed = [param_with_grad(&[1.0])];
        assert!(GradientHealthMonitor::new(&host, &seed).sample().is_none());
    }
}
