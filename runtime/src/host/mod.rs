//! Host networks: the backbone that exposes injection points for seed slots.

mod batchnorm;
pub mod budget;
mod cnn;
mod conv;
mod kernels;
mod memory_format;
mod pool;
pub mod transformer;

pub use cnn::{CnnHost, CnnHostConfig, HostError, InjectionPoint};
pub use kernels::HostKernels;
pub use memory_format::{is_channels_last, to_channels_last, MemoryFormat};
pub use pool::fused_pool_available;
pub use transformer::{TransformerHost, TransformerHostConfig};

/// A range of a host's steps `start..end` (for the CNN its ops, for the transformer its
/// embedding, blocks and head), the unit of routing between slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub(crate) start: usize,
    pub(crate) end: usize,
}
