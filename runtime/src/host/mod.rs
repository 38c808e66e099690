//! Host networks: the backbone that exposes injection points for seed slots.
//!
//! [`Host`] is the seam the model drives (see [`seam`]); [`CnnHost`] and
//! [`TransformerHost`] are the built-in hosts, made from `[host]` ([`HostConfig`]) by
//! [`HostConfig::build`] (the one place a config becomes a host).

mod batchnorm;
pub mod budget;
mod cnn;
mod config;
mod conv;
mod kernels;
mod memory_format;
mod pool;
pub mod seam;
pub mod transformer;

pub use batchnorm::{Armed, BatchNormSync};
pub use budget::HostBudget;
pub use cnn::{CnnHost, CnnHostConfig};
pub use config::HostConfig;
pub use kernels::HostKernels;
pub use memory_format::{is_channels_last, to_channels_last, MemoryFormat};
pub use pool::fused_pool_available;
pub use seam::{FeatureLayout, Host, HostError, InjectionPoint, Segment, Topology, UnknownTopology};
pub use transformer::{TransformerHost, TransformerHostConfig};
