//! Device selection.
//!
//! tch links `libtorch_cuda.so` only when a symbol needs it, and none does, so a plain
//! build cannot see CUDA. The runtime loads it on first use instead (its static
//! initialisers register libtorch's CUDA backend), then asks libtorch.

use abi_stable::library::LibraryError;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};
use tch::Device;

/// Where a run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    Cpu,
    Cuda,
    /// CUDA when available, else CPU.
    #[default]
    Auto,
}

/// Why the device a config asks for cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeviceError {
    /// libtorch's CUDA library could not be loaded (the dynamic loader's error, shared:
    /// the library is loaded once per process).
    #[error("device `cuda` asked for, but libtorch's CUDA library could not be loaded")]
    CudaLibrary(#[source] Arc<LibraryError>),
    #[error("device `cuda` asked for, but libtorch sees no CUDA device")]
    NoCudaDevice,
}

/// Loads libtorch's CUDA library once; Err says why it could not be loaded.
fn load_cuda_backend() -> &'static Result<(), Arc<LibraryError>> {
    static LOADED: OnceLock<Result<(), Arc<LibraryError>>> = OnceLock::new();
    LOADED.get_or_init(|| {
        abi_stable::library::RawLibrary::load_at(std::path::Path::new("libtorch_cuda.so"))
            .map(std::mem::forget) // stays loaded for the life of the process
            .map_err(Arc::new)
    })
}

/// Whether a CUDA device can be used.
pub fn cuda_available() -> bool {
    load_cuda_backend().is_ok() && tch::Cuda::is_available()
}

impl DeviceChoice {
    pub fn resolve(self) -> Result<Device, DeviceError> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda if cuda_available() => Ok(Device::Cuda(0)),
            DeviceChoice::Cuda => Err(match load_cuda_backend() {
                Err(e) => DeviceError::CudaLibrary(Arc::clone(e)),
                Ok(()) => DeviceError::NoCudaDevice,
            }),
            DeviceChoice::Auto => Ok(if cuda_available() { Device::Cuda(0) } else { Device::Cpu }),
        }
    }
}
