//! Gradient health monitor: host and seed gradient norms compared after backward.
//!
//! Norms are computed where the gradients live: parameters are grouped **per device**
//! once (and again after a device move), each gradient's norm is one reduction on its own
//! device (accurate to float32 rounding: see `grad_norm`), and each group's norms are stacked and moved
//! to one device as float64 (BUG-013: mixed devices never fail). The sums of squares,
//! square roots and the ratio are computed there in float64, so the cross-device sum is
//! exact to float64 rounding.
//!
//! **Transfers.** Every move is a blocking copy (`non_blocking = false`): a device→host
//! copy is complete when it returns, so no value is read before it has arrived (a
//! non-blocking copy into pinned memory, read at once, would be a race). The common
//! device is the CPU when any group lives there (then the other device's norms cross
//! once, device→host, and the read-back is free), else the first group's device (then the
//! read-back is the one device→host transfer). Either way a capture ([`sample`]) costs
//! one transfer per accelerator holding parameters — one on a single-GPU model, mixed or
//! not — never one per parameter.
//!
//! Ratio = (seed_norm / host_norm) * sqrt(host_params / seed_params), clamped to 10,
//! and 0 when host_norm < 1e-8. (The seed norm's EMA, decay 0.9, and the ratio G2
//! reads, made from it, live in `lifecycle::SeedMetrics`.)
//!
//! [`sample`]: GradientHealthMonitor::sample

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, TchError, Tensor};

pub const RATIO_CLAMP: f64 = 10.0;
pub const HOST_NORM_FLOOR: f64 = 1e-8;

/// Parameters grouped by the device they live on, each with its index in the list given.
#[derive(Debug, Default)]
struct DeviceGroups {
    groups: Vec<(Device, Vec<(usize, Tensor)>)>,
    numel: i64,
}

impl DeviceGroups {
    fn new(params: &[Tensor]) -> Self {
        Self::from_indexed(params.iter().map(Tensor::shallow_clone).enumerate())
    }

    fn from_indexed(params: impl Iterator<Item = (usize, Tensor)>) -> Self {
        let mut params: Vec<Option<(usize, Tensor)>> = params.map(Some).collect();
        let numel = params.iter().flatten().map(|(_, p)| p.numel() as i64).sum();
        let devices: Vec<Device> = params.iter().flatten().map(|(_, p)| p.device()).collect();
        let groups = group_by_device(&devices)
            .into_iter()
            .map(|(device, positions)| (device, positions.into_iter().filter_map(|k| params[k].take()).collect()))
            .collect();
        Self { groups, numel }
    }

    fn regroup(&mut self) {
        let mut all: Vec<(usize, Tensor)> = self.groups.drain(..).flat_map(|(_, v)| v).collect();
        all.sort_by_key(|(i, _)| *i);
        *self = Self::from_indexed(all.into_iter());
    }

    fn devices(&self) -> Vec<Device> {
        self.groups.iter().map(|(d, _)| *d).collect()
    }

    /// Per-tensor gradient norms, stacked per device and moved to `target` as float64 with
    /// a blocking copy (parameters without a gradient are skipped), with the parameter
    /// index of each norm. None when no parameter has a gradient.
    fn norms(&self, target: Device) -> Result<Option<(Tensor, Vec<usize>)>, TchError> {
        let mut parts = Vec::with_capacity(self.groups.len());
        let mut order = Vec::new();
        for (_, params) in &self.groups {
            let mut norms = Vec::with_capacity(params.len());
            for (i, p) in params {
                let g = p.grad();
                if g.defined() {
                    norms.push(grad_norm(&g)?);
                    order.push(*i);
                }
            }
            if norms.is_empty() {
                continue;
            }
            // non_blocking = false: complete when it returns (a no-op on `target` itself).
            parts.push(Tensor::f_stack(&norms, 0)?.f_to_device_(target, Kind::Double, false, false)?);
        }
        Ok(match parts.len() {
            0 => None,
            1 => parts.pop().map(|t| (t, order)),
            _ => Some((Tensor::f_cat(&parts, 0)?, order)),
        })
    }
}

/// The positions of `devices` grouped by device, each group in order, the groups in the
/// order their devices first appear: one group (one reduction and one transfer) per
/// device, whatever the mix.
fn group_by_device(devices: &[Device]) -> Vec<(Device, Vec<usize>)> {
    let mut groups: Vec<(Device, Vec<usize>)> = Vec::new();
    for (k, &d) in devices.iter().enumerate() {
        match groups.iter_mut().find(|(g, _)| *g == d) {
            Some((_, positions)) => positions.push(k),
            None => groups.push((d, vec![k])),
        }
    }
    groups
}

/// The device the norms are gathered on, given the groups' devices: the CPU when any
/// group is there (the read-back is then free), else the first. None without any.
fn gathering_device(mut devices: impl Iterator<Item = Device>) -> Option<Device> {
    let first = devices.next()?;
    Some(if first == Device::Cpu || devices.any(|d| d == Device::Cpu) { Device::Cpu } else { first })
}

/// Elements per partial norm of a gradient on the CPU (see [`grad_norm`]).
const CPU_CHUNK: i64 = 1024;

/// The 2-norm of one gradient, as a float32 scalar on the gradient's device (half
/// precision is never reduced in half precision).
///
/// On CUDA libtorch's norm is accurate. On the CPU its float32 norm accumulates in float32
/// across the whole tensor (measured with torch 2.11: 1e-5 relative error at 2^20
/// elements, 3e-4 at 2^23), so a large CPU gradient is reduced as partial norms of
/// [`CPU_CHUNK`] elements (the same single pass, same speed; no copy for a dense
/// gradient, channels-last included) that are combined in float64 (about 1e-9).
fn grad_norm(g: &Tensor) -> Result<Tensor, TchError> {
    if g.device() != Device::Cpu || g.numel() <= CPU_CHUNK as usize {
        return g.f_norm_scalaropt_dtype(2, Kind::Float);
    }
    let flat = memory_order_flat(g)?;
    let n = flat.numel() as i64;
    let rows = n / CPU_CHUNK;
    let whole = rows * CPU_CHUNK;
    let mut partial = vec![flat.f_narrow(0, 0, whole)?.f_view([rows, CPU_CHUNK])?.f_norm_scalaropt_dim_dtype(
        2,
        [1],
        false,
        Kind::Float,
    )?];
    if whole < n {
        partial.push(flat.f_narrow(0, whole, n - whole)?.f_norm_scalaropt_dim_dtype(2, [0], true, Kind::Float)?);
    }
    global_norm(&Tensor::f_cat(&partial, 0)?.f_to_kind(Kind::Double)?)?.f_to_kind(Kind::Float)
}

/// `g` as a flat view in memory order (a permutation of a dense tensor, such as a
/// channels-last one, is viewed without a copy); a copy only for a non-dense tensor.
fn memory_order_flat(g: &Tensor) -> Result<Tensor, TchError> {
    let strides = g.stride();
    let mut dims: Vec<i64> = (0..strides.len() as i64).collect();
    dims.sort_by_key(|&d| std::cmp::Reverse(strides[d as usize]));
    let permuted = g.f_permute(&dims)?;
    if permuted.is_contiguous() {
        permuted.f_view([-1])
    } else {
        g.f_contiguous()?.f_view([-1])
    }
}

/// `sqrt(sum(norms^2))` in float64.
fn global_norm(norms: &Tensor) -> Result<Tensor, TchError> {
    norms.f_square()?.f_sum(Kind::Double)?.f_sqrt()
}

/// One measurement, read back to the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradientSample {
    pub host_norm: f64,
    pub seed_norm: f64,
    pub ratio: f64,
    /// Norm of each seed parameter's gradient (for the gradient-health summary), in the
    /// order of the seed parameters given to the monitor; parameters without a gradient
    /// are left out.
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

    /// The device everything is gathered on: the CPU when any group is there, else the
    /// first group's device. None without parameters.
    fn common_device(&self) -> Option<Device> {
        gathering_device(self.host.groups.iter().chain(&self.seed.groups).map(|(d, _)| *d))
    }

    /// The number of scalars in the host's and the seed's monitored parameters.
    pub fn param_counts(&self) -> (u64, u64) {
        (self.host.numel.max(0) as u64, self.seed.numel.max(0) as u64)
    }

    /// `[host_norm, seed_norm, ratio, seed per-tensor norms...]` as one float64 tensor on
    /// the common device, not read back (the per-tensor norms grouped by device; see
    /// [`sample`](Self::sample) for them in parameter order). None until both sides have
    /// gradients, or when libtorch refused a step.
    pub fn compute(&self) -> Option<Tensor> {
        self.gather().ok().flatten().map(|(values, _)| values)
    }

    /// [`compute`](Self::compute), with the seed parameter index of each per-tensor norm.
    fn gather(&self) -> Result<Option<(Tensor, Vec<usize>)>, TchError> {
        let Some(target) = self.common_device() else { return Ok(None) };
        let Some((host_norms, _)) = self.host.norms(target)? else { return Ok(None) };
        let Some((seed_norms, seed_order)) = self.seed.norms(target)? else { return Ok(None) };
        let host_norm = global_norm(&host_norms)?;
        let seed_norm = global_norm(&seed_norms)?;
        let scale = (self.host.numel as f64 / self.seed.numel.max(1) as f64).sqrt();
        let raw =
            seed_norm.f_div(&host_norm.f_clamp_min(HOST_NORM_FLOOR)?)?.f_mul_scalar(scale)?.f_clamp_max(RATIO_CLAMP)?;
        let ratio = raw.f_where_self(&host_norm.f_ge(HOST_NORM_FLOOR)?, &raw.f_zeros_like()?)?;
        let head = Tensor::f_stack(&[host_norm, seed_norm, ratio], 0)?;
        Ok(Some((Tensor::f_cat(&[head, seed_norms], 0)?, seed_order)))
    }

    /// Computes and reads everything back (see the module docs for the transfers). None
    /// until both sides have gradients, or when libtorch refused a step (logged).
    pub fn sample(&self) -> Option<GradientSample> {
        self.try_sample().unwrap_or_else(|e| {
            let error = crate::torch_error::summarize("gradient monitor", &e.to_string());
            tracing::warn!(%error, "gradient norms could not be measured");
            None
        })
    }

    /// [`sample`](Self::sample), with libtorch's error when a step fails.
    pub fn try_sample(&self) -> Result<Option<GradientSample>, TchError> {
        let Some((values, order)) = self.gather()? else { return Ok(None) };
        // Blocking device→host copy (a no-op when the values are already on the CPU).
        let values = values.f_to_device_(Device::Cpu, Kind::Double, false, false)?;
        let v = Vec::<f64>::try_from(&values)?;
        let [host_norm, seed_norm, ratio, per_param @ ..] = v.as_slice() else {
            return Err(TchError::Shape(format!(
                "gradient monitor: {} values read back, at least 3 expected",
                v.len()
            )));
        };
        let mut per_param: Vec<(usize, f64)> = order.into_iter().zip(per_param.iter().copied()).collect();
        per_param.sort_by_key(|(i, _)| *i);
        Ok(Some(GradientSample {
            host_norm: *host_norm,
            seed_norm: *seed_norm,
            ratio: *ratio,
            seed_param_norms: per_param.into_iter().map(|(_, n)| n).collect(),
        }))
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

    /// Parameters of the given sizes with gradient `randn * scale` (grad = g exactly).
    fn params_with_random_grads(sizes: &[i64], scale: f64) -> (Vec<Tensor>, Vec<Tensor>) {
        let params: Vec<Tensor> =
            sizes.iter().map(|&n| Tensor::zeros([n], (Kind::Float, Device::Cpu)).set_requires_grad(true)).collect();
        let grads: Vec<Tensor> =
            sizes.iter().map(|&n| Tensor::randn([n], (Kind::Float, Device::Cpu)) * scale).collect();
        let loss = params
            .iter()
            .zip(&grads)
            .map(|(p, g)| (p * g).sum(Kind::Float))
            .fold(None, |acc: Option<Tensor>, t| Some(acc.map_or(t.shallow_clone(), |a| a + t)));
        loss.expect("at least one parameter").backward();
        (params, grads)
    }

    /// `sqrt(sum(g^2))` over `grads`, in float64.
    fn reference_norm(grads: &[Tensor]) -> f64 {
        grads.iter().map(|g| g.to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[])).sum::<f64>().sqrt()
    }

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs().max(1e-30)
    }

    #[test]
    fn values_match_a_float64_reference() {
        for round in 0..20 {
            let (host, host_g) = params_with_random_grads(&[100_000, 7, 3 * 3 * 64], 1e-3 * (round + 1) as f64);
            let (seed, seed_g) = params_with_random_grads(&[50_000, 1, 64], 1e-4);
            let s = GradientHealthMonitor::new(&host, &seed).sample().expect("gradients on both sides");
            let (h, sd) = (reference_norm(&host_g), reference_norm(&seed_g));
            let ratio = ((sd / h) * ((100_000 + 7 + 576) as f64 / (50_000 + 1 + 64) as f64).sqrt()).min(RATIO_CLAMP);
            assert!(rel(s.host_norm, h) < 1e-6 && rel(s.seed_norm, sd) < 1e-6 && rel(s.ratio, ratio) < 1e-6, "{s:?}");
            assert_eq!(s.seed_param_norms.len(), 3);
            for (got, g) in s.seed_param_norms.iter().zip(&seed_g) {
                assert!(rel(*got, reference_norm(std::slice::from_ref(g))) < 1e-6, "{s:?}");
            }
        }
    }

    #[test]
    fn large_and_channels_last_cpu_gradients_are_reduced_accurately() {
        // libtorch's own CPU float32 norm is off by about 1e-4 relative at this size.
        let big = Tensor::randn([(1 << 23) + 7], (Kind::Float, Device::Cpu)) * 1e-2;
        let nhwc = Tensor::randn([64, 5, 7, 96], (Kind::Float, Device::Cpu)).permute([0, 3, 1, 2]); // channels-last
        let transposed = Tensor::randn([300, 41], (Kind::Float, Device::Cpu)).tr();
        let sliced = Tensor::randn([3000, 10], (Kind::Float, Device::Cpu)).narrow(1, 2, 5); // not dense
        for g in [big, nhwc, transposed, sliced] {
            let got = grad_norm(&g).unwrap().double_value(&[]);
            let want = reference_norm(std::slice::from_ref(&g));
            assert!(rel(got, want) < 1e-7, "{:?}: {got} vs {want}", g.size());
        }
    }

    #[test]
    fn per_parameter_norms_keep_parameter_order_and_skip_missing_gradients() {
        let host = [param_with_grad(&[1.0])];
        let no_grad = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let seed = [param_with_grad(&[3.0, 4.0]), no_grad, param_with_grad(&[2.0])];
        let s = GradientHealthMonitor::new(&host, &seed).sample().unwrap();
        assert_eq!(s.seed_param_norms, vec![5.0, 2.0]);
        assert_eq!(s.seed_norm, 29f64.sqrt());
    }

    #[test]
    fn parameters_are_grouped_per_device_whatever_the_mix() {
        use Device::{Cpu, Cuda};
        let groups = group_by_device(&[Cpu, Cuda(0), Cpu, Cuda(1)]);
        assert_eq!(groups, [(Cpu, vec![0, 2]), (Cuda(0), vec![1]), (Cuda(1), vec![3])]);
        let groups = group_by_device(&[Cuda(1), Cuda(1), Cuda(0), Cpu, Cuda(0), Cuda(1)]);
        assert_eq!(groups, [(Cuda(1), vec![0, 1, 5]), (Cuda(0), vec![2, 4]), (Cpu, vec![3])]);
        assert_eq!(group_by_device(&[Cuda(0); 3]), [(Cuda(0), vec![0, 1, 2])]);
        assert!(group_by_device(&[]).is_empty());
        // Gathered on the CPU when any group is there, else on the first group's device.
        assert_eq!(gathering_device([Cuda(1), Cuda(0), Cpu].into_iter()), Some(Cpu));
        assert_eq!(gathering_device([Cuda(1), Cuda(0)].into_iter()), Some(Cuda(1)));
        assert_eq!(gathering_device(std::iter::empty()), None);
        // The monitor's groups are these (on the CPU: one group, every parameter in order).
        let params = [param_with_grad(&[1.0]), param_with_grad(&[2.0, 3.0])];
        let m = GradientHealthMonitor::new(&params, &params[..1]);
        assert_eq!(m.devices(), (vec![Cpu], vec![Cpu]));
        let indices: Vec<usize> = m.host.groups[0].1.iter().map(|(i, _)| *i).collect();
        assert_eq!((indices, m.param_counts()), (vec![0, 1], (3, 1)));
    }

    #[test]
    fn norms_across_parameters_are_summed_in_float64_exactly() {
        // 4097^2 + 1 = 16785410 and 4097^2 + 1000 need 25 bits: a float32 square or sum
        // rounds them, and a float32 square root could not hold the float64 result.
        let host = [param_with_grad(&[4097.0]), param_with_grad(&[1.0])];
        let ones: Vec<Tensor> = (0..1000).map(|_| param_with_grad(&[1.0])).collect();
        let seed: Vec<Tensor> = std::iter::once(param_with_grad(&[4097.0])).chain(ones).collect();
        let s = GradientHealthMonitor::new(&host, &seed).sample().unwrap();
        assert_eq!(s.host_norm, (4097f64 * 4097.0 + 1.0).sqrt(), "{s:?}");
        assert_eq!(s.seed_norm, (4097f64 * 4097.0 + 1000.0).sqrt());
        assert_eq!(s.seed_param_norms.len(), 1001);
    }

    #[test]
    fn no_gradients_no_sample() {
        let host = [Tensor::ones([2], (Kind::Float, Device::Cpu)).set_requires_grad(true)];
        let seed = [param_with_grad(&[1.0])];
        assert!(GradientHealthMonitor::new(&host, &seed).sample().is_none());
    }
}
