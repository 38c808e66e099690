//! Seed modules: the trait a plugin author implements, and its ABI-stable form.

use crate::{PluginError, TensorOut, TensorRef};
use abi_stable::{
    sabi_trait,
    std_types::{RBox, RResult},
};
use std::panic::{catch_unwind, AssertUnwindSafe};
use tch::Tensor;

/// A seed: the module a blueprint creates. Implemented by plugin authors.
///
/// `forward` must keep the input's shape (the runtime's germination probe refuses a
/// seed that does not). `train` is the train/eval flag (e.g. for dropout or batch
/// statistics). Errors and panics are both reported to the runtime as errors.
pub trait Seed: Send + 'static {
    fn forward(&self, input: &Tensor, train: bool) -> Result<Tensor, PluginError>;
}

/// The ABI-stable seed interface, as the runtime calls it.
#[sabi_trait]
pub trait SeedModule: Send {
    /// Runs the seed on a borrowed input and returns an owned output.
    fn forward(&self, input: TensorRef<'_>, train: bool) -> RResult<TensorOut, PluginError>;
}

/// A seed module as it crosses the boundary (owned, boxed, type-erased).
pub type SeedBox = SeedModule_TO<'static, RBox<()>>;

/// Wraps an author's [`Seed`] so no panic crosses the boundary.
pub(crate) struct Guarded<S>(pub(crate) S);

impl<S: Seed> SeedModule for Guarded<S> {
    fn forward(&self, input: TensorRef<'_>, train: bool) -> RResult<TensorOut, PluginError> {
        let input = input.view();
        match catch_unwind(AssertUnwindSafe(|| self.0.forward(&input, train))) {
            Ok(Ok(out)) => RResult::ROk(TensorOut::new(out)),
            Ok(Err(e)) => RResult::RErr(e),
            Err(payload) => RResult::RErr(PluginError::from_panic("forward", payload)),
        }
    }
}

pub(crate) fn seed_box<S: Seed>(seed: S) -> SeedBox {
    SeedModule_TO::from_value(Guarded(seed), abi_stable::sabi_trait::TD_Opaque)
}
