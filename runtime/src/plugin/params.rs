//! The runtime's side of parameter creation: every tensor a plugin asks for is created
//! here, on the seed's device, and kept in the seed's `VarStore`. Requests are counted
//! (checked arithmetic on the shape) against the seed's cap before anything is
//! allocated, so a plugin asking for terabytes gets an error naming the request.

use abi_stable::std_types::{RResult, RStr};
use esper_plugin_api::{
    abi::{ParamSink, ParamSpec, TensorOut},
    ErrorKind, Init, PluginError,
};
use std::{
    collections::HashSet,
    panic::{catch_unwind, AssertUnwindSafe},
};
use tch::{nn, Kind, Tensor};

/// How many elements (parameters and buffers together) one seed may hold, and the
/// rule that gave the number (for messages).
#[derive(Debug, Clone)]
pub(crate) struct SeedCap {
    pub(crate) elements: u64,
    pub(crate) rule: String,
}

/// Bytes per element of the tensors created here (float32).
const BYTES_PER_ELEMENT: u64 = 4;

/// Creates named tensors in a `VarStore` path on behalf of a plugin.
pub(crate) struct StoreSink<'a> {
    path: nn::Path<'a>,
    names: HashSet<String>,
    cap: SeedCap,
    /// Elements created so far.
    elements: u64,
    /// The first refused request, kept to report it even if the plugin swallows it.
    pub(crate) refused: Option<String>,
    /// The parameters the plugin marked as its output layer, in order.
    pub(crate) output_layer: Vec<String>,
}

impl<'a> StoreSink<'a> {
    pub(crate) fn new(path: nn::Path<'a>, cap: SeedCap) -> Self {
        Self { path, names: HashSet::new(), cap, elements: 0, refused: None, output_layer: Vec::new() }
    }

    /// Counts a request of `shape` against the cap; nothing is allocated.
    fn reserve(&mut self, name: &str, shape: &[i64]) -> Result<(), String> {
        let numel = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64)).ok_or_else(|| {
            format!("parameter `{name}` of shape {shape:?}: its element count overflows 64 bits; nothing was allocated")
        })?;
        let total = self.elements.checked_add(numel).filter(|&t| t <= self.cap.elements).ok_or_else(|| {
            format!(
                "parameter `{name}` of shape {shape:?} asks for {numel} elements ({}){}, over this seed's cap of {} \
                 elements ({}; {}); nothing was allocated",
                human(numel.saturating_mul(BYTES_PER_ELEMENT)),
                if self.elements > 0 { format!(" on top of {} already created", self.elements) } else { String::new() },
                self.cap.elements,
                human(self.cap.elements.saturating_mul(BYTES_PER_ELEMENT)),
                self.cap.rule
            )
        })?;
        self.elements = total;
        Ok(())
    }

    fn make(&mut self, spec: &ParamSpec<'_>) -> Result<Tensor, String> {
        let name = spec.name.as_str();
        // `conv.weight` from `params.sub("conv")`: each part an identifier.
        let parts: Vec<&str> = name.split('.').collect();
        if parts.iter().any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) {
            return Err(format!(
                "parameter name `{name}` must be ASCII letters, digits or `_` (sub-parts joined by `.`, from `Params::sub`)"
            ));
        }
        let shape = spec.shape.as_slice();
        if shape.iter().any(|&d| d < 0) {
            return Err(format!("parameter `{name}` has a negative dimension in {shape:?}"));
        }
        if self.names.contains(name) {
            return Err(format!("parameter `{name}` requested twice"));
        }
        self.reserve(name, shape)?;
        self.names.insert(name.to_string());
        let init = match spec.init {
            Init::Zeros => nn::Init::Const(0.0),
            Init::Ones => nn::Init::Const(1.0),
            Init::Constant { value } => nn::Init::Const(value),
            Init::Uniform { lo, hi } => nn::Init::Uniform { lo, up: hi },
            Init::Normal { mean, std } => nn::Init::Randn { mean, stdev: std },
            Init::KaimingUniform => {
                if shape.len() < 2 {
                    return Err(format!("parameter `{name}`: Kaiming init needs at least 2 dimensions, got {shape:?}"));
                }
                nn::init::DEFAULT_KAIMING_UNIFORM
            }
        };
        let tensor = nn::init::f_init(init, shape, self.path.device(), Kind::Float)
            .map_err(|e| format!("parameter `{name}`: {e}"))?;
        let (leaf, parents) = parts.split_last().ok_or_else(|| format!("parameter name `{name}` is empty"))?;
        let path = parents.iter().fold(self.path.clone(), |path, part| &path / *part);
        Ok(path.add(leaf, tensor, spec.trainable))
    }
}

impl ParamSink for StoreSink<'_> {
    fn create(&mut self, spec: ParamSpec<'_>) -> RResult<TensorOut, PluginError> {
        // This runs inside a call from the plugin: nothing may unwind out of it.
        let made = catch_unwind(AssertUnwindSafe(|| self.make(&spec)))
            .unwrap_or_else(|_| Err("parameter creation panicked".into()));
        match made {
            Ok(t) => RResult::ROk(TensorOut::new(t)),
            Err(message) => {
                self.refused.get_or_insert_with(|| message.clone());
                RResult::RErr(PluginError::new(ErrorKind::InvalidArgument, message))
            }
        }
    }

    fn mark_output(&mut self, name: RStr<'_>) -> RResult<(), PluginError> {
        let name = name.as_str();
        let refused = if !self.names.contains(name) {
            Some(format!("output layer: `{name}` is not a parameter this seed created"))
        } else if self.output_layer.iter().any(|n| n == name) {
            Some(format!("output layer: `{name}` marked twice"))
        } else {
            None
        };
        match refused {
            Some(message) => {
                self.refused.get_or_insert_with(|| message.clone());
                RResult::RErr(PluginError::new(ErrorKind::InvalidArgument, message))
            }
            None => {
                self.output_layer.push(name.to_string());
                RResult::ROk(())
            }
        }
    }
}

fn human(bytes: u64) -> String {
    crate::host::budget::human_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::{RSlice, RStr};
    use tch::Device;

    fn spec<'a>(name: &'a str, shape: &'a [i64]) -> ParamSpec<'a> {
        ParamSpec { name: RStr::from_str(name), shape: RSlice::from_slice(shape), init: Init::Zeros, trainable: true }
    }

    fn cap(elements: u64) -> SeedCap {
        SeedCap { elements, rule: "test cap".into() }
    }

    #[test]
    fn output_layer_parameters_are_recorded_by_their_full_names_and_checked() {
        use abi_stable::sabi_trait::TD_Opaque;
        use esper_plugin_api::{abi::ParamSink_TO, Params};
        let vs = nn::VarStore::new(Device::Cpu);
        let mut sink = StoreSink::new(vs.root(), cap(1 << 20));
        {
            let mut params = Params::new(ParamSink_TO::from_ptr(&mut sink, TD_Opaque));
            let _ = params.param("inner", &[2], Init::Ones).unwrap();
            let _ = params.sub("head").output_param("weight", &[4, 2], Init::Ones).unwrap();
        }
        assert_eq!(sink.output_layer, vec!["head.weight".to_string()]);
        assert!(sink.mark_output(RStr::from_str("nothing")).into_result().is_err(), "only created parameters");
        assert!(sink.mark_output(RStr::from_str("head.weight")).into_result().is_err(), "marked twice");
        assert_eq!(sink.output_layer.len(), 1);
    }

    #[test]
    fn params_sub_nests_names_and_a_name_asked_twice_is_refused() {
        use abi_stable::sabi_trait::TD_Opaque;
        use esper_plugin_api::{abi::ParamSink_TO, Params};
        let vs = nn::VarStore::new(Device::Cpu);
        let mut sink = StoreSink::new(vs.root(), cap(1 << 20));
        let mut params = Params::new(ParamSink_TO::from_ptr(&mut sink, TD_Opaque));
        let w = params.sub("conv").param("weight", &[4, 2], Init::Ones).unwrap();
        let _stat = params.sub("conv").sub("inner").buffer("stat", &[3], Init::Zeros).unwrap();
        let _scale = params.param("scale", &[1], Init::Zeros).unwrap();
        let again = params.sub("conv").param("weight", &[4, 2], Init::Ones).unwrap_err();
        assert!(again.message.as_str().contains("`conv.weight` requested twice"), "{again}");
        let dotted = params.param("a.b", &[1], Init::Zeros).unwrap_err();
        assert!(dotted.message.as_str().contains("use `Params::sub`"), "{dotted}");
        let mut names: Vec<String> = vs.variables().into_keys().collect();
        names.sort();
        assert_eq!(names, ["conv.inner.stat", "conv.weight", "scale"]);
        assert_eq!(vs.variables()["conv.weight"].data_ptr(), w.data_ptr(), "the plugin's handle is the stored tensor");
    }

    #[test]
    fn a_request_over_the_cap_is_refused_before_allocation() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut sink = StoreSink::new(vs.root(), cap(1 << 20));
        // 10^11 elements, 400 GB: refused by arithmetic, instantly.
        let started = std::time::Instant::now();
        let e = sink.make(&spec("huge", &[100_000, 100_000, 10])).unwrap_err();
        assert!(started.elapsed().as_secs() < 1);
        assert!(e.contains("parameter `huge` of shape [100000, 100000, 10] asks for 100000000000 elements"), "{e}");
        assert!(e.contains("372.5 GiB") && e.contains("cap of 1048576 elements (4.0 MiB; test cap)"), "{e}");
        assert!(vs.variables().is_empty(), "nothing created");
        // Overflowing shapes are refused too.
        let e = sink.make(&spec("wild", &[i64::MAX, i64::MAX])).unwrap_err();
        assert!(e.contains("overflows"), "{e}");
        // Requests add up.
        let _a = sink.make(&spec("a", &[1024, 512])).unwrap();
        let _b = sink.make(&spec("b", &[1024, 512])).unwrap();
        let e = sink.make(&spec("c", &[1])).unwrap_err();
        assert!(e.contains("on top of 1048576 already created"), "{e}");
        assert_eq!(vs.variables().len(), 2);
    }
}
