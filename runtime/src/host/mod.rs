//! Host networks: the backbone that exposes injection points for seed slots.

mod batchnorm;
pub mod budget;
mod cnn;
mod conv;
mod kernels;
mod memory_format;
mod pool;

pub use cnn::{CnnHost, CnnHostConfig, HostError, InjectionPoint, Segment};
pub use kernels::HostKernels;
pub use memory_format::{is_channels_last, to_channels_last, MemoryFormat};
pub use pool::fused_pool_available;
