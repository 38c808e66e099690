//! Host networks: the backbone that exposes injection points for seed slots.
//!
//! [`Host`] is the seam the model drives (see [`seam`]); [`CnnHost`] is the built-in
//! host, made from its config by [`build`] (the one place a config becomes a host).

mod batchnorm;
pub mod budget;
mod cnn;
mod conv;
mod kernels;
mod memory_format;
mod pool;
pub mod seam;
pub mod transformer;

pub use budget::HostBudget;
pub use cnn::{CnnHost, CnnHostConfig};
pub use kernels::HostKernels;
pub use memory_format::{is_channels_last, to_channels_last, MemoryFormat};
pub use pool::fused_pool_available;
pub use seam::{FeatureLayout, Host, HostError, InjectionPoint, Segment, Topology, UnknownTopology};
pub use transformer::{TransformerHost, TransformerHostConfig};

use tch::nn;

/// The built-in host for `config`, its parameters under `path`.
pub fn build(path: &nn::Path, config: CnnHostConfig) -> Result<Box<dyn Host>, HostError> {
    Ok(Box::new(CnnHost::new(path, config)?))
}

/// Why a host kind other than `cnn` is refused (the transformer host is not wired into
/// runs yet).
pub(crate) fn kind_not_wired(kind: Topology) -> String {
    format!("host kind `{kind}` is not wired into runs yet; the built-in host is kind = \"cnn\"")
}
