//! Device selection.
//!
//! tch links `libtorch_cuda.so` only when a symbol needs it, and none does, so a plain
//! build cannot see CUDA. The runtime loads it on first use instead (its static
//! initialisers register libtorch's CUDA backend), then asks libtorch.

use serde::{Deserialize, Serialize};
use std::sync::OnceLock;
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

/// Loads libtorch's CUDA library once; Err says why it could not be loaded.
fn load_cuda_backend() -> &'static Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED.get_or_init(|| {
        abi_stable::library::RawLibrary::load_at(std::path::Path::new("libtorch_cuda.so"))
            .map(std::mem::forget) // stays loaded for the life of the process
            .map_err(|e| e.to_string())
    })
}

/// Whether a CUDA device can be used.
pub fn cuda_available() -> bool {
    load_cuda_backend().is_ok() && tch::Cuda::is_available()
}

impl DeviceChoice {
    pub fn resolve(self) -> Result<Device, String> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda if cuda_available() => Ok(Device::Cuda(0)),
            DeviceChoice::Cuda => Err(match load_cuda_backend() {
                Err(e) => format!("device `cuda` asked for, but libtorch's CUDA library could not be loaded: {e}"),
                Ok(()) => "device `cuda` asked for, but libtorch sees no CUDA device".to_string(),
            }),
            DeviceChoice::Auto => Ok(if cuda_available() { Device::Cuda(0) } else { Device::Cpu }),
        }
    }
}
