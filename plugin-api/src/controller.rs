//! Controllers (ABI 1.3): what decides, each epoch, when to germinate which blueprint
//! where, when to advance and when to prune. Implemented by plugin authors and
//! registered with [`register_controller!`](crate::register_controller); the runtime
//! validates every decision against the lifecycle before it applies any.
//!
//! Across the boundary a controller is a [`ControllerBox`]: the observation goes in as
//! JSON text, the decisions come back as a JSON array. Panics are caught on the plugin's
//! side and reported as errors.

use crate::{observation::Decision, parse_options, ErrorKind, Observation, PluginError};
use abi_stable::{
    sabi_trait,
    std_types::{RBox, RResult, RStr, RString},
    StableAbi,
};
use serde::de::DeserializeOwned;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A controller. `decide` is called once after every epoch (and once before the first,
/// with epoch 0) and should give the same decisions for the same observation and state.
pub trait Controller: Send + Sized + 'static {
    /// The controller's name, unique within its library (`[lifecycle.controller] name`).
    const NAME: &'static str;
    /// One line saying how it decides.
    const DESCRIPTION: &'static str;
    /// Its options (`[lifecycle.controller] options`), from a JSON object: use
    /// `#[serde(deny_unknown_fields)]`, or [`NoOptions`](crate::NoOptions).
    type Options: DeserializeOwned;

    /// A controller for one run.
    fn create(options: Self::Options) -> Result<Self, PluginError>;

    /// The decisions after `observation.epoch` (none, or [`Decision::Wait`], to wait).
    fn decide(&mut self, observation: &Observation) -> Result<Vec<Decision>, PluginError>;
}

/// What the runtime learns about a controller.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ControllerDescriptor {
    pub name: RString,
    pub description: RString,
}

/// The ABI-stable controller interface, as the runtime calls it.
#[sabi_trait]
pub trait ControllerModule: Send {
    /// The decisions for an observation (JSON text) as a JSON array of decisions.
    #[sabi(last_prefix_field)]
    fn decide(&mut self, observation_json: RStr<'_>) -> RResult<RString, PluginError>;
}

/// A controller as it crosses the boundary (owned, boxed, type-erased).
pub type ControllerBox = ControllerModule_TO<'static, RBox<()>>;

/// Wraps an author's [`Controller`]: parses the observation, serializes the decisions,
/// and catches panics.
struct Guarded<C: Controller>(C);

impl<C: Controller> ControllerModule for Guarded<C> {
    fn decide(&mut self, observation_json: RStr<'_>) -> RResult<RString, PluginError> {
        let observation: Observation = match serde_json::from_str(observation_json.as_str()) {
            Ok(o) => o,
            Err(e) => {
                let message = format!("controller `{}`: the observation is not one it reads: {e}", C::NAME);
                return RResult::RErr(PluginError::new(ErrorKind::InvalidArgument, message));
            }
        };
        match catch_unwind(AssertUnwindSafe(|| self.0.decide(&observation))) {
            Ok(Ok(decisions)) => match serde_json::to_string(&decisions) {
                Ok(text) => RResult::ROk(text.into()),
                Err(e) => RResult::RErr(PluginError::other(format!("decisions not serializable: {e}"))),
            },
            Ok(Err(e)) => RResult::RErr(e),
            Err(payload) => RResult::RErr(PluginError::from_panic("decide", payload)),
        }
    }
}

/// One controller's entry in a plugin's `inventory`.
pub struct ControllerRegistration {
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
    pub(crate) create: fn(&str) -> Result<ControllerBox, PluginError>,
}

impl ControllerRegistration {
    /// The registration of controller `C` (used by `register_controller!`).
    pub const fn of<C: Controller>() -> Self {
        Self { name: C::NAME, description: C::DESCRIPTION, create: create::<C> }
    }

    pub(crate) fn descriptor(&self) -> ControllerDescriptor {
        ControllerDescriptor { name: self.name.into(), description: self.description.into() }
    }
}

inventory::collect!(ControllerRegistration);

fn create<C: Controller>(options_json: &str) -> Result<ControllerBox, PluginError> {
    let options = parse_options::<C::Options>(C::NAME, options_json)?;
    let controller = C::create(options)?;
    Ok(ControllerModule_TO::from_value(Guarded(controller), abi_stable::sabi_trait::TD_Opaque))
}

/// The controller `name` of this plugin's inventory.
pub(crate) fn registration(name: &str) -> Result<&'static ControllerRegistration, PluginError> {
    let all = || inventory::iter::<ControllerRegistration>.into_iter();
    all().find(|r| r.name == name).ok_or_else(|| {
        let known: Vec<&str> = all().map(|r| r.name).collect();
        PluginError::invalid_argument(format!("no controller `{name}` in this plugin (it has: {})", known.join(", ")))
    })
}

/// Registers a controller type in this plugin: one line per controller.
#[macro_export]
macro_rules! register_controller {
    ($controller:ty) => {
        $crate::inventory::submit! { $crate::abi::ControllerRegistration::of::<$controller>() }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoOptions;

    struct Panics;
    impl Controller for Panics {
        const NAME: &'static str = "panics";
        const DESCRIPTION: &'static str = "panics when asked";
        type Options = NoOptions;
        fn create(_: NoOptions) -> Result<Self, PluginError> {
            Ok(Panics)
        }
        fn decide(&mut self, o: &Observation) -> Result<Vec<Decision>, PluginError> {
            if o.epoch == 2 {
                panic!("deliberate panic in decide");
            }
            Ok(vec![Decision::Advance { slot: format!("e{}", o.epoch) }])
        }
    }

    fn observation(epoch: u32) -> String {
        let o = Observation {
            version: crate::OBSERVATION_VERSION,
            epoch,
            epochs: 3,
            objective: "accuracy".into(),
            history: vec![],
            host_parameters: 1,
            seed_parameters: 0,
            slots: vec![],
            free_slots: vec![],
            blueprints: vec![],
        };
        serde_json::to_string(&o).unwrap()
    }

    #[test]
    fn decisions_cross_as_json_and_a_panic_becomes_an_error() {
        let mut c = create::<Panics>("").unwrap();
        let text = c.decide(observation(1).as_str().into()).into_result().unwrap();
        assert_eq!(text.as_str(), r#"[{"op":"advance","slot":"e1"}]"#);
        let e = c.decide(observation(2).as_str().into()).into_result().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Panic);
        assert!(e.message.as_str().contains("deliberate panic in decide"), "{e}");
        let e = c.decide("{}".into()).into_result().unwrap_err();
        assert!(e.message.as_str().contains("the observation is not one it reads"), "{e}");
        assert!(create::<Panics>(r#"{"x": 1}"#).is_err(), "unknown options refused");
    }
}
