//! The Esper seed runtime.
//!
//! * [`plugin`]: the plugin loader and blueprint registry (dynamic blueprint plugins
//!   through the stable ABI in `esper-plugin-api`).

pub mod plugin;
