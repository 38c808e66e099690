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

    /// Per-tensor gradient norms, stacked per device and moved to `target`
    /// (parameters without a gradient are skipped). None when none has one.
    fn norms(&self, target: Device) -> Option<Tensor> {
        let mut parts = Vec::with_capacity(self.groups.len());
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
            let stacked = Tensor::stack(&norms, 0);
            // A blocking copy: a non-blocking device-to-host copy into pinned memory is read
            // on the CPU before anything waits for it (BUG-013's mixed-device case).
            parts.push(if *device == target { stacked } else { stacked.to_device_(target, Kind::Float, false, false) });
        }
        match parts.len() {
            0 => None,
            1 => parts.pop(),
            _ => Some(Tensor::cat(&parts, 0)),
        }
    }
}

/// One measurement, read back to the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradientSample {
    pub host_norm: f64,
    pub seed_norm: f64,
    pub ratio: f64,
    /// Norm of each seed parameter's gradient (for the gradient-health summary).
    pub seed_param_norms: Vec<f64>,
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

    /// `[host_norm, seed_norm, ratio, seed per-tensor norms...]` as one device tensor
    /// (no host sync). None until both sides have gradients.
    pub fn compute(&self) -> Option<Tensor> {
        let target = self.host.groups.first().or(self.seed.groups.first())?.0;
        let host_norm = self.host.norms(target)?.square().sum(Kind::Float).sqrt();
        let seed_norms = self.seed.norms(target)?;
        let seed_norm = seed_norms.square().sum(Kind::Float).sqrt();
        let scale = (self.host.numel as f64 / self.seed.numel.max(1) as f64).sqrt();
        let raw = (&seed_norm / host_norm.clamp_min(HOST_NORM_FLOOR) * scale).clamp_max(RATIO_CLAMP);
        let ratio = raw.where_self(&host_norm.ge(HOST_NORM_FLOOR), &raw.zeros_like());
        Some(Tensor::cat(&[Tensor::stack(&[host_norm, seed_norm, ratio], 0), seed_norms], 0))
    }

    /// Computes and reads everything back in one transfer.
    pub fn sample(&self) -> Option<GradientSample> {
        let values = self.compute()?.to_device(Device::Cpu).to_kind(Kind::Double);
        let v: Vec<f64> = Vec::<f64>::try_from(&values).ok()?;
        Some(GradientSample { host_norm: v[0], seed_norm: v[1], ratio: v[2], seed_param_norms: v[3..].to_vec() })
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
        assert_eq!(s.seed_param_norms, vec![1.0]);
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
