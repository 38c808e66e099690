//! `esper_runtime`, the Esper seed runtime from Python: the extension module
//! `esper_runtime._native` (PyO3), re-exported by the package `esper_runtime`
//! (python/esper_runtime/). A [`run::Run`] drives a training run an epoch at a time; its
//! parameters reach Python as torch tensors sharing memory with the runtime
//! ([`dlpack`]); the runtime's errors arrive as the exceptions of [`errors`].

mod controller;
mod dlpack;
mod errors;
mod run;

use pyo3::prelude::*;

/// The length of the observation vector of a run with `slots` slots and `blueprints`
/// loaded blueprints (see `Run.observe_vector`).
#[pyfunction]
fn feature_len(slots: usize, blueprints: usize) -> usize {
    esper_runtime::control::feature_len(slots, blueprints)
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("EsperError", py.get_type::<errors::EsperError>())?;
    m.add("ConfigError", py.get_type::<errors::ConfigError>())?;
    m.add("PluginError", py.get_type::<errors::PluginError>())?;
    m.add("RunError", py.get_type::<errors::RunError>())?;
    m.add("CheckpointError", py.get_type::<errors::CheckpointError>())?;
    m.add_class::<run::Run>()?;
    m.add_function(wrap_pyfunction!(feature_len, m)?)?;
    Ok(())
}
