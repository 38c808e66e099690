//! The Esper seed runtime.
//!
//! * [`host`]: host networks (the CNN backbone) and their injection points.
//! * [`isolation`]: the isolation layer every seed goes through, and the gradient monitor.
//! * [`lifecycle`]: seed stages, transitions, gates, alpha schedule and metrics.
//! * [`model`]: the morphogenetic model: host plus seed slots, germinate, prune, forward.
//! * [`plugin`]: the plugin loader and blueprint registry (dynamic blueprint plugins
//!   through the stable ABI in `esper-plugin-api`).

pub mod device;
pub mod host;
pub mod isolation;
pub mod lifecycle;
pub mod model;
pub mod plugin;
