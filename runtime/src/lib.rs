//! The Esper seed runtime.
//!
//! * [`lifecycle`]: seed stages, transitions, gates, alpha schedule and metrics.
//! * [`plugin`]: the plugin loader and blueprint registry (dynamic blueprint plugins
//!   through the stable ABI in `esper-plugin-api`).

pub mod lifecycle;
pub mod plugin;
