//! Seed modules: the trait a plugin author implements, and its ABI-stable form.

use crate::{
    abi::{TensorOut, TensorRef},
    ErrorKind, PluginError,
};
use abi_stable::{
    sabi_trait,
    std_types::{RBox, RResult},
};
use std::panic::{catch_unwind, AssertUnwindSafe};
use tch::Tensor;

/// A seed: the module a blueprint creates. Implemented by plugin authors.
///
/// The runtime checks every forward against the output contract: the output has exactly
/// the input's shape, dtype and device, and the input is not written in place (returning
/// the input itself is fine). A seed that breaks it is pruned. `train` is the train/eval
/// flag (e.g. for dropout or batch statistics). Errors and panics are both reported to
/// the runtime as errors.
pub trait Seed: Send + 'static {
    fn forward(&self, input: &Tensor, train: bool) -> Result<Tensor, PluginError>;
}

/// The ABI-stable seed interface, as the runtime calls it.
#[sabi_trait]
pub trait SeedModule: Send {
    /// Runs the seed on a borrowed input and returns an owned output.
    fn forward(&self, input: TensorRef<'_>, train: bool) -> RResult<TensorOut, PluginError>;

    /// Drops the author's seed now, reporting a panic in its `Drop` as an error (the
    /// module itself stays, empty, until the runtime drops it).
    #[sabi(last_prefix_field)]
    fn release(&mut self) -> RResult<(), PluginError>;
}

/// A seed module as it crosses the boundary (owned, boxed, type-erased).
pub type SeedBox = SeedModule_TO<'static, RBox<()>>;

/// Wraps an author's [`Seed`] so no panic crosses the boundary, in `forward` or in the
/// seed's `Drop`.
pub(crate) struct Guarded<S: Seed>(Option<S>);

impl<S: Seed> Guarded<S> {
    fn release_seed(&mut self) -> Result<(), PluginError> {
        match self.0.take() {
            None => Ok(()),
            Some(seed) => catch_unwind(AssertUnwindSafe(move || drop(seed)))
                .map_err(|payload| PluginError::from_panic("drop", payload)),
        }
    }
}

impl<S: Seed> SeedModule for Guarded<S> {
    fn forward(&self, input: TensorRef<'_>, train: bool) -> RResult<TensorOut, PluginError> {
        let Some(seed) = &self.0 else {
            return RResult::RErr(PluginError::new(ErrorKind::InvalidArgument, "forward on a released seed"));
        };
        let input = input.view();
        match catch_unwind(AssertUnwindSafe(|| seed.forward(&input, train))) {
            Ok(Ok(out)) => RResult::ROk(TensorOut::new(out)),
            Ok(Err(e)) => RResult::RErr(e),
            Err(payload) => RResult::RErr(PluginError::from_panic("forward", payload)),
        }
    }

    fn release(&mut self) -> RResult<(), PluginError> {
        self.release_seed().into()
    }
}

impl<S: Seed> Drop for Guarded<S> {
    fn drop(&mut self) {
        // Normally `release` already ran; if not, a panic in the seed's `Drop` must still
        // not unwind across the boundary (the runtime has no way to hear of it here).
        let _ = self.release_seed();
    }
}

pub(crate) fn seed_box<S: Seed>(seed: S) -> SeedBox {
    SeedModule_TO::from_value(Guarded(Some(seed)), abi_stable::sabi_trait::TD_Opaque)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    struct PanicsOnDrop;
    impl Seed for PanicsOnDrop {
        fn forward(&self, input: &Tensor, _: bool) -> Result<Tensor, PluginError> {
            Ok(input.shallow_clone())
        }
    }
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("deliberate panic in drop");
        }
    }

    #[test]
    fn a_panic_in_drop_is_reported_by_release_and_contained_in_drop() {
        let mut seed = seed_box(PanicsOnDrop);
        let x = Tensor::ones([2], (Kind::Float, Device::Cpu));
        assert!(seed.forward(TensorRef::new(&x), false).into_result().is_ok());
        let err = seed.release().into_result().unwrap_err();
        assert_eq!(err.kind, ErrorKind::Panic);
        assert!(err.message.as_str().contains("deliberate panic in drop"), "{err}");
        assert!(seed.forward(TensorRef::new(&x), false).into_result().is_err(), "a released seed runs no more");
        assert!(seed.release().into_result().is_ok(), "releasing twice is a no-op");
        drop(seed);
        // Never released: dropping the module still contains the panic.
        drop(seed_box(PanicsOnDrop));
    }
}
