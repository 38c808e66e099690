//! The Esper seed runtime.
//!
//! * [`cli`]: the `esper` command line.
//! * [`conformance`]: the plugin conformance suite (`esper conformance`, `conformance_test!`).
//! * [`data`]: training data: the embedded synthetic image set, CIFAR-10, batching.
//! * [`host`]: host networks (the CNN backbone) and their injection points.
//! * [`isolation`]: the isolation layer every seed goes through, and the gradient monitor.
//! * [`lifecycle`]: seed stages, transitions, gates, alpha schedule and metrics.
//! * [`model`]: the morphogenetic model: host plus seed slots, germinate, prune, forward.
//! * [`config`]: the run config (TOML).
//! * [`train`]: the training job, controller, checkpoints and report.
//! * [`telemetry`]: tracing set-up (stderr, JSON lines, progress bars).
//! * [`plugin`]: the plugin loader and blueprint registry (dynamic blueprint plugins
//!   through the stable ABI in `esper-plugin-api`).

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod conformance;
pub mod data;
pub mod device;
pub mod host;
pub mod isolation;
pub mod lifecycle;
pub mod model;
pub mod plugin;
pub mod telemetry;
pub mod torch_error;
pub mod train;
