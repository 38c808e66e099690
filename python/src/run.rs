//! `esper_runtime.Run`: one training run driven from Python an epoch at a time, its
//! record read as Python values and its parameters as torch tensors sharing the
//! runtime's memory.

use crate::{controller, dlpack, errors};
use esper_runtime::{
    config::RunConfig,
    control::{ActionMasks, DecisionMaker, Waiting},
    lifecycle::LifecycleEvent,
    run_folder::{self, RunFile, RunLock},
    train::{checkpoint, EpochStep, Silent, Trainer},
};
use pyo3::{
    exceptions::{PyKeyError, PyValueError},
    prelude::*,
    types::{PyDict, PyList},
};
use send_wrapper::SendWrapper;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};
use tch::{Kind, Tensor};

/// A run: its trainer and the lock on its folder, held until the run is closed.
struct Open {
    trainer: Trainer,
    _lock: RunLock,
    /// A Python controller's pending interrupt (see [`controller::PyController`]).
    interrupt: Option<controller::Interrupt>,
}

/// A training run of the Esper runtime, driven an epoch at a time.
///
/// `unsendable`: the trainer stays on the thread that made it (libtorch's CUDA streams
/// and graphs, plugin seeds are not `Send`); Python refuses a call from another thread.
/// The GIL is released while an epoch runs: [`Python::detach`] runs its closure on this
/// same thread, so [`SendWrapper`] (which checks exactly that) carries the trainer in.
#[pyclass(module = "esper_runtime", unsendable)]
pub struct Run {
    /// `None` once closed.
    open: Option<Open>,
}

/// `value` (anything serde writes) as the Python value `json.loads` makes of it.
pub(crate) fn to_python<'py, T: serde::Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| errors::RunError::new_err(e.to_string()))?;
    py.import("json")?.getattr("loads")?.call1((text,))
}

/// Appends `events` to `list` as dicts, each tagged with the `epoch` whose record keeps it.
fn append_events(list: &Bound<'_, PyList>, events: &[LifecycleEvent], epoch: u32) -> PyResult<()> {
    for event in events {
        let event = to_python(list.py(), event)?;
        event.set_item("epoch", epoch)?;
        list.append(event)?;
    }
    Ok(())
}

/// The config `config` names: a path to a TOML file, or a dict written out as TOML (by
/// `esper_runtime._toml`) and read as a file would be, named `<dict>` in messages.
fn read_config(config: &Bound<'_, PyAny>) -> PyResult<(RunConfig, PathBuf)> {
    if config.is_instance_of::<PyDict>() {
        let text: String = config.py().import("esper_runtime._toml")?.getattr("dumps")?.call1((config,))?.extract()?;
        let source = PathBuf::from("<dict>");
        return Ok((RunConfig::parse(&text, &source).map_err(errors::from)?, source));
    }
    let path: PathBuf = config.extract()?;
    Ok((RunConfig::read(&path).map_err(errors::from)?, path))
}

/// Makes `dir` the folder of a new run: created if missing, locked, and refused unless
/// empty (a folder holding a run is continued with `Run.resume`).
fn new_run_folder(dir: &Path) -> PyResult<RunLock> {
    let io = |e: std::io::Error| errors::RunError::new_err(format!("run folder {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let lock = RunLock::acquire(dir).map_err(errors::from)?;
    let mut entries = std::fs::read_dir(dir).map_err(io)?;
    let taken = entries.any(|e| e.is_ok_and(|e| e.file_name() != RunFile::Lock.name()));
    if taken {
        return Err(errors::RunError::new_err(format!(
            "run folder {} is not empty (it holds an earlier run): continue that run with \
             esper_runtime.Run.resume({:?}), or pass another run_dir",
            dir.display(),
            dir.display().to_string()
        )));
    }
    Ok(lock)
}

/// A decision maker asked for (none: the config's), and a Python controller's interrupt.
#[derive(Default)]
struct Maker {
    maker: Option<Box<dyn DecisionMaker>>,
    interrupt: Option<controller::Interrupt>,
}

impl Maker {
    /// Puts it in charge of `trainer`: the run, open.
    fn open(self, mut trainer: Trainer, lock: RunLock) -> Run {
        if let Some(maker) = self.maker {
            trainer.set_decision_maker(maker);
        }
        Run { open: Some(Open { trainer, _lock: lock, interrupt: self.interrupt }) }
    }
}

/// The decision maker `controller` asks for: `None` keeps the config's (the built-in
/// heuristic or a controller plugin), `"external"` leaves every decision to `Run.act`
/// ([`Waiting`]), a callable decides from Python ([`controller::PyController`]). Read
/// before the run is built, so a bad one costs nothing.
fn decision_maker(controller: Option<&Bound<'_, PyAny>>) -> PyResult<Maker> {
    let Some(controller) = controller else { return Ok(Maker::default()) };
    if controller.is_callable() {
        let (maker, interrupt) = controller::PyController::new(controller.clone().unbind());
        return Ok(Maker { maker: Some(Box::new(maker)), interrupt: Some(interrupt) });
    }
    match controller.extract::<String>() {
        Ok(name) if name == "external" => Ok(Maker { maker: Some(Box::new(Waiting)), interrupt: None }),
        _ => Err(PyValueError::new_err(format!(
            "controller={}: expected None (the config's controller), \"external\" (decisions only through \
             Run.act) or a callable taking the observation",
            controller.repr()?
        ))),
    }
}

/// `values` as a 1-D (or, with `rows`, 2-D) torch tensor.
fn torch_of<'py, T: tch::kind::Element>(
    py: Python<'py>,
    values: &[T],
    rows: Option<i64>,
) -> PyResult<Bound<'py, PyAny>> {
    let tensor = Tensor::from_slice(values);
    let tensor = match rows {
        Some(rows) => tensor.f_view([rows, -1]).map_err(|e| errors::RunError::new_err(e.to_string()))?,
        None => tensor,
    };
    dlpack::to_torch(py, &tensor)
}

/// The masks as a dict of torch bool tensors: `op` (5), `slot` (5 by slots), `blueprint`.
fn masks_to_torch<'py>(py: Python<'py>, masks: &ActionMasks) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("op", torch_of(py, &masks.op, None)?)?;
    let slot: Vec<bool> = masks.slot.iter().flatten().copied().collect();
    dict.set_item("slot", torch_of(py, &slot, Some(masks.slot.len() as i64))?)?;
    dict.set_item("blueprint", torch_of(py, &masks.blueprint, None)?)?;
    Ok(dict)
}

/// The sum of `tensor`'s elements, computed by the runtime (in double precision).
fn sum(tensor: &Tensor) -> PyResult<f64> {
    let total = tensor.f_sum(Kind::Double).and_then(|t| t.f_double_value(&[]));
    total.map_err(|e| errors::RunError::new_err(e.to_string()))
}

impl Run {
    /// The open run, refused once closed.
    fn open(&self) -> PyResult<&Open> {
        self.open.as_ref().ok_or_else(|| errors::RunError::new_err("this run is closed"))
    }

    fn open_mut(&mut self) -> PyResult<&mut Open> {
        self.open.as_mut().ok_or_else(|| errors::RunError::new_err("this run is closed"))
    }

    /// Named tensors as a dict of torch tensors sharing their memory.
    fn tensors<'py>(py: Python<'py>, named: &[(String, Tensor)]) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, tensor) in named {
            dict.set_item(name, dlpack::to_torch(py, tensor)?)?;
        }
        Ok(dict)
    }

    /// Slot `slot`'s seed (and blend gate) tensors; a `KeyError` naming the slots for
    /// an unknown one.
    fn slot_tensors(open: &Open, slot: &str) -> PyResult<Vec<(String, Tensor)>> {
        let slots = open.trainer.model().slots();
        match slots.iter().find(|s| s.id() == slot) {
            Some(s) => Ok(s.named_seed_tensors()),
            None => {
                let ids: Vec<&str> = slots.iter().map(|s| s.id()).collect();
                Err(PyKeyError::new_err(format!("no slot {slot:?} in this run (its slots: {})", ids.join(", "))))
            }
        }
    }
}

#[pymethods]
impl Run {
    /// A new run of `config` (a path to a TOML file, or a dict of the same keys), writing
    /// into `run_dir` (default: the config's `[output] dir`), which must be empty;
    /// `epochs`, `seed` and `checkpoint` replace `[training] epochs`, `[training] seed`
    /// and `[output] checkpoint`; `controller` as in [`decision_maker`].
    #[new]
    #[pyo3(signature = (config, run_dir = None, *, epochs = None, seed = None, checkpoint = None, controller = None))]
    fn new(
        py: Python<'_>,
        config: &Bound<'_, PyAny>,
        run_dir: Option<PathBuf>,
        epochs: Option<u32>,
        seed: Option<u64>,
        checkpoint: Option<bool>,
        controller: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let maker = decision_maker(controller)?;
        let (mut config, source) = read_config(config)?;
        if let Some(dir) = run_dir {
            config.output.dir = dir;
        }
        if let Some(epochs) = epochs {
            config.training.epochs = epochs;
        }
        if let Some(seed) = seed {
            config.training.seed = seed;
        }
        if let Some(checkpoint) = checkpoint {
            config.output.checkpoint = checkpoint;
        }
        config.validate(&source).map_err(errors::from)?;
        let lock = new_run_folder(&config.output.dir)?;
        let trainer = py.detach(|| SendWrapper::new(Trainer::new(config))).take().map_err(errors::to_py)?;
        Ok(maker.open(trainer, lock))
    }

    /// Continues the run of `run_dir` (a run folder, or a checkpoint in it) from its
    /// latest checkpoint, in that folder; `epochs` extends it to that many.
    #[staticmethod]
    #[pyo3(signature = (run_dir, *, epochs = None, controller = None))]
    fn resume(
        py: Python<'_>,
        run_dir: PathBuf,
        epochs: Option<u32>,
        controller: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let maker = decision_maker(controller)?;
        let dir = checkpoint::run_folder_of(&run_dir).map_err(errors::from)?;
        let lock = RunLock::acquire(&dir).map_err(errors::from)?;
        run_folder::refuse_links(&dir).map_err(errors::from)?;
        let resumed = py.detach(|| SendWrapper::new(Trainer::resume_into(&run_dir, &dir)));
        let mut trainer = resumed.take().map_err(errors::to_py)?;
        if let Some(epochs) = epochs {
            trainer.set_epochs(epochs);
        }
        Ok(maker.open(trainer, lock))
    }

    /// Runs the next epoch (the GIL released meanwhile) and returns its record as a dict
    /// (as in report.json), or `None` when the run is over. A `KeyboardInterrupt` or
    /// `SystemExit` a Python controller raised is raised here, once the epoch is over.
    fn step_epoch<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let open = self.open_mut()?;
        let mut trainer = SendWrapper::new(&mut open.trainer);
        let step = py.detach(move || trainer.step_epoch(&mut Silent));
        if let Some(interrupt) = open.interrupt.as_ref().and_then(controller::take) {
            return Err(interrupt);
        }
        let step = step.map_err(errors::to_py)?;
        match (step, open.trainer.history().last()) {
            (EpochStep::Ran { .. }, Some(record)) => Ok(Some(to_python(py, record)?)),
            _ => Ok(None),
        }
    }

    /// The epoch the next `step_epoch` runs (past `epochs` once the run is over).
    #[getter]
    fn next_epoch(&self) -> PyResult<u32> {
        let open = self.open()?;
        Ok(open.trainer.next_epoch())
    }

    /// The run's last epoch.
    #[getter]
    fn epochs(&self) -> PyResult<u32> {
        let open = self.open()?;
        Ok(open.trainer.config().training.epochs)
    }

    /// The run's folder (its checkpoints).
    #[getter]
    fn run_dir(&self) -> PyResult<PathBuf> {
        let open = self.open()?;
        Ok(open.trainer.config().output.dir.clone())
    }

    /// The name of the decision maker in charge: `heuristic`, a controller plugin's
    /// controller, `python` (a callable) or `external` (decisions only through `act`).
    #[getter]
    fn controller(&self) -> PyResult<String> {
        Ok(self.open()?.trainer.decision_maker().to_string())
    }

    /// What a controller would see now (after the last epoch, with the decisions already
    /// taken for the next one), as a dict (the observation of docs/src/guide/controllers.md).
    fn observe<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.open()?.trainer.observe())
    }

    /// The observation as a flat float32 torch tensor (`feature_len(len(slots),
    /// len(blueprints))` long, the documented layout) and the masks of the decisions
    /// legal now: a dict of torch bool tensors `op` (5), `slot` (5 by slots), `blueprint`.
    fn observe_vector<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyDict>)> {
        let observation = self.open()?.trainer.observe();
        Ok((torch_of(py, &observation.features(), None)?, masks_to_torch(py, &observation.masks())?))
    }

    /// Applies a decision (a dict tagged by `op`) or a list of them now, before the next
    /// epoch, validated as a controller's: returns the events (as `events()` gives them,
    /// with the number of the epoch whose record keeps them: the next), an illegal or
    /// malformed decision a `decision_refused` event, never applied.
    fn act<'py>(&mut self, py: Python<'py>, decisions: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let proposals = controller::proposals(decisions)?;
        let open = self.open_mut()?;
        // The events go into the next epoch's record: they carry its number, as in `events()`.
        let epoch = open.trainer.next_epoch();
        let mut trainer = SendWrapper::new(&mut open.trainer);
        let events = py.detach(move || trainer.act(proposals)).map_err(errors::to_py)?;
        let list = PyList::empty(py);
        append_events(&list, &events, epoch)?;
        Ok(list)
    }

    /// The slots of the model, in execution order.
    #[getter]
    fn slots(&self) -> PyResult<Vec<String>> {
        let open = self.open()?;
        Ok(open.trainer.model().slots().iter().map(|s| s.id().to_string()).collect())
    }

    /// The run's report as report.json has it: `format`, `epochs` (one record per epoch
    /// so far) and `final_slots` (each slot's state now).
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let open = self.open()?;
        let slots = serde_json::to_value(open.trainer.model().report())
            .map_err(|e| errors::RunError::new_err(e.to_string()))?;
        to_python(py, &esper_runtime::train::report::to_json(open.trainer.history(), &slots))
    }

    /// The lifecycle events of every epoch so far, in order: dicts tagged by `event`, each
    /// with the `epoch` it happened in.
    fn events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let open = self.open()?;
        let list = PyList::empty(py);
        for record in open.trainer.history() {
            append_events(&list, &record.events, record.epoch)?;
        }
        Ok(list)
    }

    /// Writes a checkpoint of the run after its last epoch into run folder `run_dir`
    /// (default: its own) and returns the checkpoint's folder.
    #[pyo3(signature = (run_dir = None))]
    fn save_checkpoint(&self, py: Python<'_>, run_dir: Option<PathBuf>) -> PyResult<PathBuf> {
        let open = self.open()?;
        if open.trainer.history().is_empty() {
            return Err(errors::CheckpointError::new_err("no epoch has run yet: there is nothing to checkpoint"));
        }
        let dir = run_dir.unwrap_or_else(|| open.trainer.config().output.dir.clone());
        let trainer = SendWrapper::new(&open.trainer);
        py.detach(move || trainer.save_checkpoint_to(&dir)).map_err(errors::from)
    }

    /// The host's parameters and buffers by name, as torch tensors sharing the runtime's
    /// memory (an in-place change is the runtime's too; they carry no autograd history).
    fn parameters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let open = self.open()?;
        Self::tensors(py, &checkpoint::named(open.trainer.model().host_vars()))
    }

    /// The parameters of the seed in slot `slot` (`seed.*`, and `gate.*` for a gated
    /// blend) as torch tensors sharing the runtime's memory; empty for an empty slot.
    fn seed_parameters<'py>(&self, py: Python<'py>, slot: &str) -> PyResult<Bound<'py, PyDict>> {
        let open = self.open()?;
        Self::tensors(py, &Self::slot_tensors(open, slot)?)
    }

    /// The sum of each parameter's elements, computed by the runtime on its own tensors:
    /// the host's (`slot=None`) or slot `slot`'s seed.
    #[pyo3(signature = (slot = None))]
    fn parameter_sums(&self, slot: Option<&str>) -> PyResult<BTreeMap<String, f64>> {
        let open = self.open()?;
        let named = match slot {
            Some(slot) => Self::slot_tensors(open, slot)?,
            None => checkpoint::named(open.trainer.model().host_vars()),
        };
        named.iter().map(|(name, t)| Ok((name.clone(), sum(t)?))).collect()
    }

    /// Ends the run: its folder's lock is released (the folder can be resumed), every
    /// later call is refused. Tensors handed out stay valid.
    fn close(&mut self) {
        self.open = None;
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&mut self, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close();
        false
    }
}
