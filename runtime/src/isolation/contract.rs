//! The output contract every seed forward is held to, checked by the runtime on every
//! call, whatever plugin the seed comes from:
//!
//! * the input is not written in place (libtorch's version counter, which a `detach()`ed
//!   alias shares with the host tensor, did not move);
//! * the output is on the input's device, has its dtype (no implicit cast: a seed that
//!   wants another precision converts back itself) and **exactly** its shape (no
//!   broadcasting);
//! * returning the input itself is fine: the runtime never writes to a seed's output in
//!   place.
//!
//! Every check reads metadata only: no kernel, no host-device sync.

use tch::{Device, Kind, TchError, Tensor};
use thiserror::Error;

/// A breach of the output contract.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ContractViolation {
    #[error(
        "forward wrote its input in place (version counter {before} -> {after}); a seed must not modify its input"
    )]
    InputWritten { before: i64, after: i64 },
    #[error("output on {got}, expected the input's device {expected}")]
    Device { expected: String, got: String },
    #[error("output dtype {got:?}, expected the input's {expected:?} (no implicit casts)")]
    Dtype { expected: Kind, got: Kind },
    #[error("output shape {got:?}, expected exactly the input's {expected:?} (no broadcasting)")]
    Shape { expected: Vec<i64>, got: Vec<i64> },
}

impl ContractViolation {
    /// A short stable code for events and prune reasons.
    pub fn code(&self) -> &'static str {
        match self {
            ContractViolation::InputWritten { .. } => "input_written",
            ContractViolation::Device { .. } => "wrong_device",
            ContractViolation::Dtype { .. } => "wrong_dtype",
            ContractViolation::Shape { .. } => "wrong_shape",
        }
    }
}

/// The input's version before the seed runs (one dispatcher call, no kernel).
pub fn input_version(input: &Tensor) -> Result<i64, TchError> {
    input.f_internal_version()
}

/// Checks a seed's `output` for `input`, whose version was `version_before` when the
/// seed was called.
pub fn check_output(input: &Tensor, version_before: i64, output: &Tensor) -> Result<(), ContractViolation> {
    check_output_as(input, version_before, output, input.kind())
}

/// As [`check_output`], with the output's dtype expected to be `dtype` (the isolation
/// layer's allowance for autocast's float32, which it converts itself).
pub fn check_output_as(
    input: &Tensor,
    version_before: i64,
    output: &Tensor,
    dtype: Kind,
) -> Result<(), ContractViolation> {
    let after = input.f_internal_version().unwrap_or(i64::MAX);
    if after != version_before {
        return Err(ContractViolation::InputWritten { before: version_before, after });
    }
    let (expected, got) = (input.device(), output.device());
    if expected != got {
        return Err(ContractViolation::Device { expected: device_name(expected), got: device_name(got) });
    }
    let (expected, got) = (dtype, output.kind());
    if expected != got {
        return Err(ContractViolation::Dtype { expected, got });
    }
    let (expected, got) = (input.size(), output.size());
    if expected != got {
        return Err(ContractViolation::Shape { expected, got });
    }
    Ok(())
}

/// `cpu`, `cuda:0`, ...
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{host::to_channels_last, isolation::seed_input};

    fn x() -> Tensor {
        Tensor::randn([2, 4, 3, 3], (Kind::Float, Device::Cpu))
    }

    #[test]
    fn identity_and_a_fresh_output_pass() {
        let input = x();
        let v = input_version(&input).unwrap();
        assert_eq!(check_output(&input, v, &input), Ok(()));
        assert_eq!(check_output(&input, v, &(&input * 2.0)), Ok(()));
    }

    #[test]
    fn shape_dtype_and_broadcast_are_caught() {
        let input = x();
        let v = input_version(&input).unwrap();
        let broadcast = input.mean_dim([0i64].as_slice(), true, Kind::Float);
        assert!(matches!(check_output(&input, v, &broadcast), Err(ContractViolation::Shape { .. })));
        let double = input.to_kind(Kind::Double);
        assert!(matches!(check_output(&input, v, &double), Err(ContractViolation::Dtype { .. })));
    }

    #[test]
    fn check_output_as_allows_only_the_named_dtype_and_still_checks_the_rest() {
        let input = x().to_kind(Kind::BFloat16);
        let v = input_version(&input).unwrap();
        let f32_out = input.to_kind(Kind::Float);
        assert_eq!(check_output_as(&input, v, &f32_out, Kind::Float), Ok(()));
        assert!(matches!(check_output(&input, v, &f32_out), Err(ContractViolation::Dtype { .. })));
        let f64_out = input.to_kind(Kind::Double);
        assert!(matches!(check_output_as(&input, v, &f64_out, Kind::Float), Err(ContractViolation::Dtype { .. })));
        let short = f32_out.narrow(0, 0, 1);
        assert!(matches!(check_output_as(&input, v, &short, Kind::Float), Err(ContractViolation::Shape { .. })));
        let _ = input.shallow_clone().f_mul_scalar_(2.0).unwrap();
        let err = check_output_as(&input, v, &f32_out, Kind::Float).unwrap_err();
        assert_eq!(err.code(), "input_written");
    }

    #[test]
    fn an_in_place_write_through_the_isolated_input_is_caught_for_both_layouts() {
        for channels_last in [false, true] {
            let leaf = x().set_requires_grad(true);
            let host = if channels_last { to_channels_last(&(&leaf * 1.0)) } else { &leaf * 1.0 };
            let input = seed_input(&host, true);
            let v = input_version(&input).unwrap();
            let _ = input.shallow_clone().f_mul_scalar_(0.0).unwrap();
            let err = check_output(&input, v, &input).unwrap_err();
            assert_eq!(err.code(), "input_written", "channels_last={channels_last}");
        }
    }
}
