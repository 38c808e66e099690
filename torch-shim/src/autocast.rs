//! bfloat16 mixed precision (`cpp/autocast.cpp`): libtorch's autocast on the CPU or CUDA,
//! entered for a scope. tch's own `autocast` knows CUDA only, with float16.

use crate::sys::{esper_autocast_enabled, esper_autocast_enter, esper_autocast_exit, EsperAutocastState as State};
use crate::ShimError;

/// bfloat16 autocast on the CPU (`cuda` false) or CUDA, with the weight cache off, until
/// dropped (then the previous state is back). Ops on autocast's lower-precision list run
/// in bfloat16 (convolutions, linear, matmul); those on its float32 list (on CUDA: the
/// norms, softmax, losses) return float32.
/// Autocast state is per thread: drop it on the thread that made it.
#[derive(Debug)]
pub struct Bf16Autocast {
    cuda: i32,
    previous: State,
}

impl Bf16Autocast {
    pub fn enter(cuda: bool) -> Result<Self, ShimError> {
        let cuda = i32::from(cuda);
        let mut previous = State::default();
        // SAFETY: `previous` is a live, writable `repr(C)` struct the shim fills; the
        // shim catches every C++ exception and writes at most `len` bytes of message.
        crate::call(|err, len| unsafe { esper_autocast_enter(cuda, &mut previous, err, len) })?;
        Ok(Self { cuda, previous })
    }
}

impl Drop for Bf16Autocast {
    fn drop(&mut self) {
        // SAFETY: `self.previous` is the state `enter` saved; exceptions are caught.
        let left = crate::call(|err, len| unsafe { esper_autocast_exit(self.cuda, &self.previous, err, len) });
        if let Err(e) = left {
            tracing::warn!(error = %e, "leaving bfloat16 autocast failed");
        }
    }
}

/// Whether autocast is on for the CPU (`cuda` false) or CUDA on this thread.
pub fn enabled(cuda: bool) -> bool {
    // SAFETY: a plain value in, a plain value out; exceptions are caught in the shim.
    unsafe { esper_autocast_enabled(i32::from(cuda)) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn inside_convolutions_run_in_bf16_and_leaving_restores() {
        let x = Tensor::randn([2, 4, 8, 8], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([4, 4, 3, 3], (Kind::Float, Device::Cpu));
        assert!(!enabled(false));
        {
            let _bf16 = Bf16Autocast::enter(false).unwrap();
            assert!(enabled(false));
            let y = x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
            assert_eq!(y.kind(), Kind::BFloat16);
        }
        assert!(!enabled(false));
        let y = x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
        assert_eq!(y.kind(), Kind::Float);
    }
}
