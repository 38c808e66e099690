//! Decisions from Python: a callable as the run's [`DecisionMaker`]
//! (`Run(..., controller=fn)`), and the decisions `Run.act` is given, both read as the
//! runtime reads a controller plugin's (JSON objects tagged by `op`).

use esper_runtime::control::{DecisionContext, DecisionMaker, Proposal};
use pyo3::{
    exceptions::{PyKeyboardInterrupt, PySystemExit},
    prelude::*,
    types::{PyDict, PyList, PyTuple},
};
use std::sync::{Arc, Mutex};

/// What events name a Python controller.
pub const NAME: &str = "python";

/// A Python callable deciding after every epoch: called with the observation as a dict,
/// it returns a decision (a dict), a list of them, or `None` (wait). It runs inside
/// `step_epoch`, whose GIL-free section it re-enters with [`Python::attach`]. An
/// exception it raises, or an answer that is not one of those, is its failure: the run
/// contains it as a plugin controller's (a `controller_failed` event, no decision).
/// A `KeyboardInterrupt` or `SystemExit` is contained the same way and also kept in
/// its [`Interrupt`], for `step_epoch` to raise once the epoch is over: Ctrl-C stops
/// the loop driving the run, as it would without a controller.
pub struct PyController {
    callable: Py<PyAny>,
    interrupt: Interrupt,
}

/// A `KeyboardInterrupt` or `SystemExit` the callable raised, not raised yet.
pub type Interrupt = Arc<Mutex<Option<PyErr>>>;

impl PyController {
    pub fn new(callable: Py<PyAny>) -> (Self, Interrupt) {
        let interrupt = Interrupt::default();
        (Self { callable, interrupt: interrupt.clone() }, interrupt)
    }

    /// `err` as the failure's text, kept in the [`Interrupt`] when it is one.
    fn failure(&self, py: Python<'_>, err: PyErr) -> String {
        let text = described(py, &err);
        if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
            if let Ok(mut pending) = self.interrupt.lock() {
                pending.get_or_insert(err);
            }
        }
        text
    }
}

/// Takes the interrupt `interrupt` holds, if any.
pub fn take(interrupt: &Interrupt) -> Option<PyErr> {
    interrupt.lock().ok().and_then(|mut pending| pending.take())
}

impl DecisionMaker for PyController {
    fn name(&self) -> &str {
        NAME
    }

    fn decide(&mut self, context: &DecisionContext<'_>) -> Result<Vec<Proposal>, String> {
        Python::attach(|py| {
            let observation = crate::run::to_python(py, context.observation).map_err(|e| described(py, &e))?;
            let answer = self.callable.call1(py, (observation,)).map_err(|e| self.failure(py, e))?;
            proposals(answer.bind(py)).map_err(|e| described(py, &e))
        })
    }
}

/// `err` as one line: the exception's type and message.
fn described(py: Python<'_>, err: &PyErr) -> String {
    let kind = err.get_type(py).name().map_or_else(|_| "Exception".to_string(), |n| n.to_string());
    format!("{kind}: {}", err.value(py))
}

/// The decisions `answer` stands for: `None` is none, a dict one, a list or tuple one
/// per element. An element that does not read as a decision (not a dict, unknown keys,
/// a missing slot) is kept as a [`Proposal::Malformed`], refused by name when validated.
pub fn proposals(answer: &Bound<'_, PyAny>) -> PyResult<Vec<Proposal>> {
    if answer.is_none() {
        return Ok(Vec::new());
    }
    if answer.is_instance_of::<PyDict>() {
        return Ok(vec![proposal(answer)?]);
    }
    if answer.is_instance_of::<PyList>() || answer.is_instance_of::<PyTuple>() {
        return answer.try_iter()?.map(|item| proposal(&item?)).collect();
    }
    let kind = answer.get_type().name()?;
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "expected a decision (a dict such as {{\"op\": \"wait\"}}), a list of decisions or None, not {kind}"
    )))
}

/// One element, through JSON (`json.dumps`, then the runtime's reading of decisions).
fn proposal(item: &Bound<'_, PyAny>) -> PyResult<Proposal> {
    let dumped = item.py().import("json")?.getattr("dumps")?.call1((item,));
    let text: String = match dumped {
        Ok(text) => text.extract()?,
        Err(e) => {
            let json = item.repr().map_or_else(|_| "?".to_string(), |r| r.to_string());
            return Ok(Proposal::Malformed { json, error: format!("not JSON: {}", e.value(item.py())) });
        }
    };
    Ok(match serde_json::from_str(&text) {
        Ok(value) => Proposal::from_value(value),
        Err(e) => Proposal::Malformed { json: text, error: e.to_string() },
    })
}
