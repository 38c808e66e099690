//! Parameters and buffers: created by the runtime, handed to the plugin.
//!
//! A blueprint never allocates its own trainable state. It asks the runtime-provided
//! [`Params`] for each named tensor (shape and initialiser); the runtime creates it on
//! the seed's device, keeps it in its own store, and returns a handle that shares the
//! storage. So the runtime can checkpoint, move devices, build optimizers and monitor
//! gradients for every plugin alike.

use crate::{abi::TensorOut, ErrorKind, PluginError};
use abi_stable::{
    sabi_trait,
    std_types::{RResult, RSlice, RStr},
    StableAbi,
};
use tch::Tensor;

/// How a parameter or buffer is initialised.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq)]
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
    /// PyTorch's default init of a convolution or linear layer's weight of `shape`
    /// (`[out, in / groups, k...]`): uniform in ±1/√fan_in, fan_in = `in / groups` times
    /// the kernel size (what `kaiming_uniform_(a = √5)` gives). [`Init::KaimingUniform`]
    /// is ±√(6/fan_in), about 2.45 times wider.
    pub fn pytorch_default(shape: &[i64]) -> Init {
        let fan_in: i64 = shape.iter().skip(1).product();
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        Init::Uniform { lo: -bound, hi: bound }
    }

    /// PyTorch's default init of the bias of a layer whose weight has `weight_shape`:
    /// the same ±1/√fan_in.
    pub fn pytorch_default_bias(weight_shape: &[i64]) -> Init {
        Init::pytorch_default(weight_shape)
    }
}

/// One request for a named tensor.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct ParamSpec<'a> {
    pub name: RStr<'a>,
    pub shape: RSlice<'a, i64>,
    pub init: Init,
    /// `true` for a parameter (gets gradients, is optimised); `false` for a buffer.
    pub trainable: bool,
}

/// Implemented by the runtime; called by the plugin while a seed is created.
#[sabi_trait]
pub trait ParamSink {
    /// Creates (and keeps) the tensor, returning an owned handle that shares its storage.
    ///
    /// ABI 1.0's only method. No method is in the vtable's prefix (the sabi_trait
    /// default, as 1.0 was built): later ones are appended, never inserted.
    fn create(&mut self, spec: ParamSpec<'_>) -> RResult<TensorOut, PluginError>;

    /// ABI 1.1: marks the parameter `name` (already created) as part of the seed's output
    /// layer, which the runtime zeroes when the seed is germinated into a MULTIPLY slot so
    /// the multiplicative blend starts neutral.
    fn mark_output(&mut self, name: RStr<'_>) -> RResult<(), PluginError>;
}

/// The erased form of a [`ParamSink`] as it crosses the boundary.
pub type ParamSinkRef<'a> = ParamSink_TO<'a, abi_stable::sabi_types::RMut<'a, ()>>;

/// What a blueprint's `create` receives to obtain its parameters and buffers.
pub struct Params<'a> {
    sink: ParamSinkRef<'a>,
    /// `conv.` inside `params.sub("conv")`; empty at the root.
    prefix: String,
}

impl<'a> Params<'a> {
    pub fn new(sink: ParamSinkRef<'a>) -> Self {
        Self { sink, prefix: String::new() }
    }

    /// The parameters of a part of a composite seed, named under `name` (as candle's
    /// `pp` or tch's `path / "name"`): `params.sub("conv").param("weight", ..)` is
    /// `conv.weight`. A name asked for twice is refused by the runtime.
    pub fn sub(&mut self, name: &str) -> Params<'_> {
        Params { sink: self.sink.sabi_reborrow_mut(), prefix: format!("{}{name}.", self.prefix) }
    }

    /// A trainable parameter, owned by the runtime.
    pub fn param(&mut self, name: &str, shape: &[i64], init: Init) -> Result<Tensor, PluginError> {
        self.request(name, shape, init, true)
    }

    /// A trainable parameter of the seed's *output layer* (the weight and bias of its
    /// last convolution or linear layer). Under a MULTIPLY blend the runtime zeroes these
    /// at germination, so the seed starts neutral there (BLUEPRINTS.md's MULTIPLY rule).
    pub fn output_param(&mut self, name: &str, shape: &[i64], init: Init) -> Result<Tensor, PluginError> {
        let tensor = self.request(name, shape, init, true)?;
        let full = format!("{}{name}", self.prefix);
        self.sink.mark_output(full.as_str().into()).into_result()?;
        Ok(tensor)
    }

    /// A non-trainable buffer (e.g. running statistics), owned by the runtime.
    pub fn buffer(&mut self, name: &str, shape: &[i64], init: Init) -> Result<Tensor, PluginError> {
        self.request(name, shape, init, false)
    }

    fn request(&mut self, name: &str, shape: &[i64], init: Init, trainable: bool) -> Result<Tensor, PluginError> {
        if name.contains('.') {
            return Err(PluginError::new(
                ErrorKind::InvalidArgument,
                format!("parameter name `{}{name}`: use `Params::sub` for nesting, not `.` in a name", self.prefix),
            ));
        }
        let full = format!("{}{name}", self.prefix);
        let spec = ParamSpec { name: full.as_str().into(), shape: shape.into(), init, trainable };
        self.sink.create(spec).into_result().map(TensorOut::into_tensor)
    }
}
