//! Parameters and buffers of a portable seed: created and kept by the runtime (on the
//! seed's device, checkpointed, optimised and monitored like any other), handed to the
//! plugin as tensor handles.

use crate::{ops, sys, ErrorKind, PluginError, Tensor};
use std::{ffi::CString, marker::PhantomData};

/// How a parameter or buffer is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    Constant {
        value: f64,
    },
    Uniform {
        lo: f64,
        hi: f64,
    },
    Normal {
        mean: f64,
        std: f64,
    },
    /// Kaiming-uniform over the fan-in (the second dimension times the rest).
    KaimingUniform,
}

impl Init {
    /// PyTorch's default init of a convolution or linear weight of `shape`
    /// (`[out, in / groups, k...]`): uniform in ±1/√fan_in.
    pub fn pytorch_default(shape: &[i64]) -> Init {
        let fan_in: i64 = shape.iter().skip(1).product();
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        Init::Uniform { lo: -bound, hi: bound }
    }

    pub(crate) fn to_sys(self) -> sys::EsperInit {
        let (kind, a, b) = match self {
            Init::Zeros => (sys::INIT_ZEROS, 0.0, 0.0),
            Init::Ones => (sys::INIT_ONES, 0.0, 0.0),
            Init::Constant { value } => (sys::INIT_CONSTANT, value, 0.0),
            Init::Uniform { lo, hi } => (sys::INIT_UNIFORM, lo, hi),
            Init::Normal { mean, std } => (sys::INIT_NORMAL, mean, std),
            Init::KaimingUniform => (sys::INIT_KAIMING_UNIFORM, 0.0, 0.0),
        };
        sys::EsperInit { kind, a, b }
    }
}

/// What a blueprint's `create` receives to obtain its parameters and buffers.
pub struct Params<'a> {
    raw: *mut sys::EsperParams,
    /// `conv.` inside `params.sub("conv")`; empty at the root.
    prefix: String,
    _create: PhantomData<&'a mut sys::EsperParams>,
}

impl Params<'_> {
    pub(crate) fn new(raw: *mut sys::EsperParams) -> Self {
        Self { raw, prefix: String::new(), _create: PhantomData }
    }

    /// The parameters of a part of a composite seed, named under `name`:
    /// `params.sub("conv").param("weight", ..)` is `conv.weight`.
    pub fn sub(&mut self, name: &str) -> Params<'_> {
        Params { raw: self.raw, prefix: format!("{}{name}.", self.prefix), _create: PhantomData }
    }

    /// A trainable parameter, owned by the runtime.
    pub fn param(&mut self, name: &str, shape: &[i64], init: Init) -> Result<Tensor, PluginError> {
        self.request(name, shape, init, sys::PARAM_TRAINABLE)
    }

    /// A trainable parameter of the seed's *output layer* (the weight and bias of its
    /// last convolution or linear layer): under a MULTIPLY blend the runtime zeroes it at
    /// germination, so the seed starts neutral there.
    pub fn output_param(&mut self, name: &str, shape: &[i64], init: Init) -> Result<Tensor, PluginError> {
        self.request(name, shape, init, sys::PARAM_TRAINABLE | sys::PARAM_OUTPUT_LAYER)
    }

    /// A non-trainable buffer, owned by the runtime.
    pub fn buffer(&mut self, name: &str, shape: &[i64], init: Init) -> Result<Tensor, PluginError> {
        self.request(name, shape, init, 0)
    }

    fn request(&mut self, name: &str, shape: &[i64], init: Init, flags: i32) -> Result<Tensor, PluginError> {
        if name.contains('.') {
            return Err(PluginError::new(
                ErrorKind::InvalidArgument,
                format!("parameter name `{}{name}`: use `Params::sub` for nesting, not `.` in a name", self.prefix),
            ));
        }
        let full = CString::new(format!("{}{name}", self.prefix))
            .map_err(|_| PluginError::invalid_argument(format!("parameter name `{name}` contains a NUL byte")))?;
        let f = ops().param;
        // SAFETY: `raw` is the runtime's handle for this `create` call (a `Params` lives
        // no longer than it); the name is nul-terminated, `shape` holds `shape.len()` values.
        Tensor::call(|out| unsafe {
            f(self.raw, full.as_ptr(), shape.as_ptr(), shape.len(), init.to_sys(), flags, out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialisers_cross_as_kind_and_two_numbers() {
        assert_eq!(
            Init::Uniform { lo: -1.0, hi: 2.0 }.to_sys(),
            sys::EsperInit { kind: sys::INIT_UNIFORM, a: -1.0, b: 2.0 }
        );
        assert_eq!(Init::Constant { value: 3.0 }.to_sys().a, 3.0);
        assert_eq!(Init::pytorch_default(&[8, 4, 1, 1]), Init::Uniform { lo: -0.5, hi: 0.5 });
    }
}
