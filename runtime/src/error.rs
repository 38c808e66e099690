//! The library's error type: [`Error`], one variant per module's error, and [`Result`].
//!
//! Each module keeps its own error enum (what went wrong, where, with the values
//! involved); a cause that is itself an error (an `std::io::Error`, a libtorch error, a
//! JSON error, another module's error) is its [`source`](StdError::source), not part of
//! its text. [`Error`] gathers them: an embedding program matches on the variant (and on
//! the module error inside) to react, and prints the whole chain, `what: cause: cause`,
//! with `{:#}` (or [`chain`]), as the `esper` binary does.

use crate::{
    config::{ConfigError, PreflightError, ResourceError},
    data::DataError,
    device::DeviceError,
    distributed::DistError,
    host::{budget::BudgetError, HostError},
    lifecycle::LifecycleError,
    model::ModelError,
    plugin::LoadError,
    run_folder::RunFolderError,
    train::{attribution::HostFault, checkpoint::CheckpointError, Stopped, TrainError},
};
use std::{error::Error as StdError, fmt};

/// What the library's public functions return on failure: one variant per module.
///
/// `Display` shows the variant's own message, the alternate form (`{:#}`) the whole chain
/// of causes (`what: cause: cause`, each libtorch error without its C++ frame list).
/// `source()` is the module error's own cause: a variant adds no message of its own,
/// so printing the chain never says a thing twice.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Reading or checking a run config.
    Config(ConfigError),
    /// The run's memory estimate against its limit.
    Resource(ResourceError),
    /// The preflight of a run config (slots, plugins, blueprints tried).
    Preflight(PreflightError),
    /// The device the config asks for cannot be used.
    Device(DeviceError),
    /// Loading a plugin library, resolving or creating a blueprint.
    Load(LoadError),
    /// The host network's shape.
    Host(HostError),
    /// The host's size arithmetic.
    Budget(BudgetError),
    /// The training data.
    Data(DataError),
    /// A seed lifecycle transition.
    Lifecycle(LifecycleError),
    /// The model: slots, seeds, the host's computation.
    Model(ModelError),
    /// A run folder's lock or files.
    RunFolder(RunFolderError),
    /// The training job.
    Train(TrainError),
    /// Writing, finding or reading a checkpoint.
    Checkpoint(CheckpointError),
    /// The host's own values went non-finite: the run ends.
    HostFault(HostFault),
    /// A stop was requested ([`crate::train::StopSignal`]).
    Stopped(Stopped),
    /// The ranks of a multi-process run (see [`crate::distributed`]).
    Distributed(DistError),
}

/// `Result` with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The module error this one carries.
    pub fn inner(&self) -> &(dyn StdError + Send + Sync + 'static) {
        match self {
            Error::Config(e) => e,
            Error::Resource(e) => e,
            Error::Preflight(e) => e,
            Error::Device(e) => e,
            Error::Load(e) => e,
            Error::Host(e) => e,
            Error::Budget(e) => e,
            Error::Data(e) => e,
            Error::Lifecycle(e) => e,
            Error::Model(e) => e,
            Error::RunFolder(e) => e,
            Error::Train(e) => e,
            Error::Checkpoint(e) => e,
            Error::HostFault(e) => e,
            Error::Stopped(e) => e,
            Error::Distributed(e) => e,
        }
    }

    /// The first error of type `T` in the chain (this one, its module error, their
    /// causes), e.g. the [`HostFault`] that ended a run under the epoch's context.
    pub fn downcast_ref<T: StdError + 'static>(&self) -> Option<&T> {
        let mut next: Option<&(dyn StdError + 'static)> = Some(self);
        while let Some(e) = next {
            let e = unwrap_transparent(e);
            if let Some(found) = e.downcast_ref::<T>() {
                return Some(found);
            }
            next = e.source();
        }
        None
    }

    /// Whether the chain holds an error of type `T` (see [`Error::downcast_ref`]).
    pub fn is<T: StdError + 'static>(&self) -> bool {
        self.downcast_ref::<T>().is_some()
    }
}

/// The error a transparent wrapper stands for: an [`Error`]'s module error (also where
/// a cause holds a boxed [`Error`]), or what a [`ModelError`] passes through unchanged.
fn unwrap_transparent<'a>(mut e: &'a (dyn StdError + 'static)) -> &'a (dyn StdError + 'static) {
    loop {
        let outer = e.downcast_ref::<Error>().or_else(|| e.downcast_ref::<Box<Error>>().map(AsRef::as_ref));
        e = match (outer, e.downcast_ref::<ModelError>()) {
            (Some(outer), _) => outer.inner(),
            (_, Some(ModelError::Host(inner))) => inner,
            (_, Some(ModelError::Plugin(inner))) => inner,
            (_, Some(ModelError::Seed(inner))) => inner.as_ref(),
            _ => return e,
        };
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            f.write_str(&chain(self))
        } else {
            fmt::Display::fmt(self.inner(), f)
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner().source()
    }
}

/// `e` and its causes as one line, `what: cause: cause`, each without the C++ frame list
/// a libtorch error carries (see [`crate::torch_error::summary`]): what a user reads.
pub fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![crate::torch_error::summary(&e.to_string())];
    let mut next = e.source();
    while let Some(cause) = next {
        parts.push(crate::torch_error::summary(&cause.to_string()));
        next = cause.source();
    }
    parts.join(": ")
}

macro_rules! from_module_errors {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for Error {
            fn from(e: $ty) -> Self {
                Error::$variant(e)
            }
        })*
    };
}

from_module_errors!(
    Config(ConfigError),
    Resource(ResourceError),
    Preflight(PreflightError),
    Device(DeviceError),
    Load(LoadError),
    Host(HostError),
    Budget(BudgetError),
    Data(DataError),
    Lifecycle(LifecycleError),
    Model(ModelError),
    RunFolder(RunFolderError),
    Train(TrainError),
    Checkpoint(CheckpointError),
    HostFault(HostFault),
    Stopped(Stopped),
    Distributed(DistError),
);

/// A libtorch failure of the trainer's own (no seed, no module of its own to name).
impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Train(TrainError::Torch(e))
    }
}

/// A failure in the torch shim (fused optimizer steps, CUDA streams and graphs).
impl From<esper_torch_shim::ShimError> for Error {
    fn from(e: esper_torch_shim::ShimError) -> Self {
        Error::Train(TrainError::Shim(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{
        attribution::{Evidence, HostCause, HostFaultSite},
        Trainer,
    };
    use std::io::ErrorKind;

    #[test]
    fn a_checkpoint_without_its_state_file_is_a_checkpoint_error_caused_by_the_missing_file() {
        let dir = crate::test_dir("error-missing-state");
        let ckpt = dir.join("checkpoints").join("epoch-0001");
        std::fs::create_dir_all(&ckpt).unwrap();
        std::fs::write(ckpt.join("COMPLETE"), "").unwrap();
        let e = Trainer::resume_into(&ckpt, &dir).err().expect("no state.json: refused");
        let Error::Checkpoint(CheckpointError::Io { action: "reading", path, .. }) = &e else { panic!("{e:?}") };
        assert_eq!(path, &ckpt.join("state.json"));
        let cause = e.source().and_then(|s| s.downcast_ref::<std::io::Error>()).expect("the system's error, typed");
        assert_eq!(cause.kind(), ErrorKind::NotFound);
        assert_eq!(e.to_string(), format!("reading {}", path.display()));
        assert_eq!(format!("{e:#}"), format!("reading {}: {cause}", path.display()), "the chain, each part once");
        assert!(e.is::<std::io::Error>());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_cause_is_printed_once_by_the_chain() {
        let missing = std::path::Path::new("/nonexistent/esper/run.toml");
        let e = Error::from(crate::config::RunConfig::load(missing).unwrap_err());
        let Error::Config(ConfigError::Read { source, .. }) = &e else { panic!("{e:?}") };
        assert_eq!(source.kind(), ErrorKind::NotFound);
        assert_eq!(format!("{e:#}"), format!("cannot read config {}: {source}", missing.display()));
        let data =
            Error::from(DataError::Io { path: "/data/x.bin".into(), source: std::io::Error::other("disk gone") });
        assert_eq!(format!("{data:#}"), "cannot read /data/x.bin: disk gone");
        assert_eq!(chain(&data), format!("{data:#}"));
    }

    #[test]
    fn a_host_fault_is_found_under_the_epoch_it_ended() {
        let fault = HostFault {
            site: HostFaultSite::Step,
            evidence: Evidence::NoSeedRuns,
            cause: HostCause::Data,
            recurred: false,
        };
        let e: Error = TrainError::Phase { epoch: 2, phase: "training", source: Box::new(fault.clone().into()) }.into();
        assert_eq!(e.downcast_ref::<HostFault>(), Some(&fault));
        assert!(!e.is::<Stopped>());
        let shown = format!("{e:#}");
        assert!(shown.starts_with("epoch 2: training failed on the host's side"), "{shown}");
        assert!(shown.ends_with(&format!(": {fault}")), "{shown}");
        assert_eq!(shown.matches("host fault:").count(), 1, "{shown}");
    }
}
