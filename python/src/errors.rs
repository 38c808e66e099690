//! The runtime's errors as Python exceptions: one base class, [`EsperError`], and a
//! subclass per kind of failure, each carrying the runtime's whole message (its chain of
//! causes, with the file and line where the runtime names them).

use esper_runtime::Error;
use pyo3::{create_exception, exceptions::PyException, PyErr};

create_exception!(esper_runtime, EsperError, PyException, "Any error of the Esper runtime.");
create_exception!(
    esper_runtime,
    ConfigError,
    EsperError,
    "A run config that cannot be read, parsed or checked (the message names the file and line)."
);
create_exception!(esper_runtime, PluginError, EsperError, "A plugin library that cannot be loaded or used.");
create_exception!(esper_runtime, RunError, EsperError, "A run that cannot start or go on.");
create_exception!(esper_runtime, CheckpointError, RunError, "A checkpoint that cannot be written, found or read.");

/// `err` as the exception of its kind, with the runtime's message and causes.
pub fn to_py(err: Error) -> PyErr {
    let message = format!("{err:#}");
    match err {
        Error::Config(_) | Error::Resource(_) | Error::Preflight(_) => ConfigError::new_err(message),
        Error::Load(_) => PluginError::new_err(message),
        Error::Checkpoint(_) => CheckpointError::new_err(message),
        _ => RunError::new_err(message),
    }
}

/// [`to_py`] for a module error of the runtime.
pub fn from<E: Into<Error>>(err: E) -> PyErr {
    to_py(err.into())
}
