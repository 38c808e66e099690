//! The per-blueprint checks, one function each, run through a [`Subject`] that records
//! every call into the plugin (and every panic it contained).
//!
//! Each check creates its own fresh seed(s) on the CPU, so one check's gradients or
//! parameter changes never leak into another.

use super::{
    report::{Check, CheckResult},
    topology::{SuiteInputs, Topology},
};
use esper_plugin_api::abi::BlueprintDescriptor;
use esper_runtime::{
    isolation::{contract, seed_input, straight_through, Blend},
    plugin::{BlueprintRegistry, LoadError, PluginSeed},
};
use serde_json::{json, Value};
use std::{
    cell::{Cell, RefCell},
    panic::{catch_unwind, AssertUnwindSafe},
};
use tch::{Device, Kind, Tensor};

/// Channel counts the create and shape checks sweep. 48, 80 and 112 are not powers of
/// two: they catch blueprints that assume one (group counts, head counts, reductions).
pub const CHANNELS: [i64; 7] = [16, 32, 48, 64, 80, 112, 128];
/// Spatial sizes (H, W) of the shape check for `cnn` blueprints, from 1x1 to 64x64 (a
/// usual size first, so a seed that changes the shape is reported on it rather than on
/// an edge case). `transformer` blueprints get [`SEQUENCE_LENGTHS`](crate::SEQUENCE_LENGTHS).
pub const SIZES: [(i64, i64); 8] = [(32, 32), (1, 1), (2, 2), (3, 5), (7, 7), (8, 8), (16, 16), (64, 64)];
/// Batch sizes of the shape check.
pub const BATCHES: [i64; 2] = [1, 3];
/// The channel count of every other check, the parameter estimate's included.
pub const PRIMARY_CHANNELS: i64 = 64;
/// The parameter estimate may be off by this factor either way before it warns.
pub const ESTIMATE_FACTOR: f64 = 10.0;
/// The option key no blueprint may accept.
pub const UNKNOWN_OPTION: &str = "esper_conformance_unknown_key";

/// Pass with the `Ok` reason, fail with the `Err` one.
type Outcome = Result<String, String>;

/// One blueprint under test: creates seeds and runs them, recording every contained panic.
pub struct Subject<'a> {
    registry: &'a BlueprintRegistry,
    key: String,
    descriptor: BlueprintDescriptor,
    topology: Topology,
    panics: RefCell<Vec<String>>,
    calls: Cell<usize>,
}

impl<'a> Subject<'a> {
    /// The blueprint `name` (`topology:name`, or the bare name when unambiguous) of `registry`.
    pub fn new(registry: &'a BlueprintRegistry, name: &str) -> Result<Self, LoadError> {
        let (key, descriptor) = registry.resolve(name)?;
        // A topology the runtime has no host for gets `cnn` inputs (`metadata` warns).
        let topology = descriptor.topology.as_str().parse().unwrap_or(Topology::Cnn);
        Ok(Self {
            registry,
            key: key.to_string(),
            descriptor: descriptor.clone(),
            topology,
            panics: RefCell::default(),
            calls: Cell::new(0),
        })
    }

    /// `topology:name`.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn descriptor(&self) -> &BlueprintDescriptor {
        &self.descriptor
    }

    /// The topology whose inputs the checks feed it.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// The shape of `batch` samples at [`PRIMARY_CHANNELS`] and `extent` (spatial side
    /// or sequence length) in this blueprint's topology.
    fn shape(&self, batch: i64, extent: i64) -> Vec<i64> {
        self.topology.shape(batch, PRIMARY_CHANNELS, extent)
    }

    /// Random normal features of that shape, on the CPU.
    fn randn(&self, batch: i64, extent: i64) -> Tensor {
        randn(&self.shape(batch, extent))
    }

    /// A seed on the CPU, created through the registry like the runtime does.
    pub fn create_with(&self, channels: i64, options: &Value) -> Result<PluginSeed, LoadError> {
        self.calls.set(self.calls.get() + 1);
        let made = self.registry.create_seed(&self.key, channels, options, Device::Cpu);
        if let Err(LoadError::Panicked { message, .. }) = &made {
            self.panics.borrow_mut().push(format!("create for {channels} channels: {message}"));
        }
        made
    }

    /// A seed for `channels` channels with no options; the error is a report line.
    pub fn create(&self, channels: i64) -> Result<PluginSeed, String> {
        self.create_with(channels, &Value::Null).map_err(|e| format!("create for {channels} channels: {}", short(&e)))
    }

    /// Drops a seed through the ABI's `release`, recording a panic in its `Drop`.
    pub fn release(&self, seed: PluginSeed) {
        self.calls.set(self.calls.get() + 1);
        if let Err(LoadError::Panicked { message, .. }) = seed.release() {
            self.panics.borrow_mut().push(format!("drop: {message}"));
        }
    }

    /// Runs the seed's forward; the error is a report line naming the input.
    pub fn forward(&self, seed: &PluginSeed, x: &Tensor, train: bool) -> Result<Tensor, String> {
        self.calls.set(self.calls.get() + 1);
        seed.forward(x, train).map_err(|e| {
            if let LoadError::Panicked { message, .. } = &e {
                self.panics.borrow_mut().push(format!("forward on {}: {message}", describe(x)));
            }
            format!("forward(train={train}) on {}: {}", describe(x), short(&e))
        })
    }
}

/// A plugin error without the library path (the report names the library once).
fn short(e: &LoadError) -> String {
    let text = match e {
        LoadError::Panicked { message, .. } => format!("{message} (contained)"),
        LoadError::BadOptions { message, .. } => format!("bad options: {message}"),
        LoadError::Failed { message, .. } | LoadError::BadParameter { message, .. } => message.clone(),
        other => esper_runtime::error::chain(other),
    };
    esper_runtime::torch_error::summarize("conformance", &text)
}

/// `[2, 64, 8, 8] Float cpu`.
pub fn describe(x: &Tensor) -> String {
    format!("{:?} {:?} {}", x.size(), x.kind(), device_name(x.device()))
}

pub use esper_runtime::isolation::contract::device_name;

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

/// Number of NaN or infinite values.
fn non_finite(x: &Tensor) -> i64 {
    x.isfinite().logical_not().sum(Kind::Int64).int64_value(&[])
}

fn require_finite(y: &Tensor, what: &str) -> Result<(), String> {
    match non_finite(y) {
        0 => Ok(()),
        n => Err(format!("{what}: {n} of {} output values are NaN or infinite", y.numel())),
    }
}

fn require_same_shape(x: &Tensor, y: &Tensor) -> Result<(), String> {
    if y.size() == x.size() {
        Ok(())
    } else {
        Err(format!("output {:?} for input {:?}: a seed must keep its input's shape", y.size(), x.size()))
    }
}

/// `a` and `b` agree within the tolerances (NaN equals NaN); the error says by how much not.
fn close(a: &Tensor, b: &Tensor, rtol: f64, atol: f64) -> Result<(), String> {
    if a.size() != b.size() {
        return Err(format!("shapes differ: {:?} vs {:?}", a.size(), b.size()));
    }
    let b = b.to_device(a.device()).to_kind(a.kind());
    if a.allclose(&b, rtol, atol, true) {
        Ok(())
    } else {
        Err(format!("max |difference| {:.3e}", max_diff(a, &b)))
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// The seed's trainable parameters by name, sorted.
fn trainable(seed: &PluginSeed) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> =
        seed.vars().variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Every parameter and buffer by name, deep-copied.
fn snapshot(seed: &PluginSeed) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> =
        seed.vars().variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Names of the tensors that differ between two snapshots (of the same seed).
fn changed(before: &[(String, Tensor)], after: &[(String, Tensor)], only_trainable: Option<&[String]>) -> Vec<String> {
    before
        .iter()
        .zip(after)
        .filter(|((n, _), _)| only_trainable.is_none_or(|names| names.contains(n)))
        .filter(|((_, a), (_, b))| a.size() != b.size() || !a.allclose(b, 0.0, 0.0, true))
        .map(|((n, _), _)| n.clone())
        .collect()
}

/// Moves every trainable parameter off its initial value (by 0.1 randn), so a seed that
/// is the identity at birth computes something and the checks see its real math.
fn perturb(seed: &PluginSeed) {
    tch::no_grad(|| {
        for mut p in seed.trainable() {
            let _ = p.f_add_(&(p.randn_like() * 0.1));
        }
    });
}

/// `sum(y * r)` for a fixed random `r`, backward; returns `r`.
fn backward_through(y: &Tensor) -> Result<Tensor, String> {
    let r = y.randn_like();
    (y * &r).sum(Kind::Float).f_backward().map_err(|e| format!("backward failed: {e}"))?;
    Ok(r)
}

/// Names of the parameters a plain train-mode backward reaches (on a fresh seed). The
/// isolation, channels-last and device-move checks require these to keep getting
/// gradients; a parameter that never gets one is `parameter_gradients`' failure alone.
fn live_parameters(s: &Subject<'_>) -> Result<Vec<String>, String> {
    let seed = s.create(PRIMARY_CHANNELS)?;
    let params = trainable(&seed);
    let y = s.forward(&seed, &s.randn(2, 8), true)?;
    if params.is_empty() || !y.requires_grad() {
        return Ok(Vec::new());
    }
    let _ = backward_through(&y)?;
    Ok(params.into_iter().filter(|(_, p)| p.grad().defined()).map(|(n, _)| n).collect())
}

/// Which of the `live` parameters have no gradient.
fn starved<'p>(params: &'p [(String, Tensor)], live: &[String]) -> Vec<&'p str> {
    params.iter().filter(|(n, p)| live.contains(n) && !p.grad().defined()).map(|(n, _)| n.as_str()).collect()
}

/// Runs a check; a panic on the runtime's side (a libtorch error on the seed's output,
/// say) fails the check instead of the suite.
pub fn guarded(check: Check, f: impl FnOnce() -> CheckResult) -> CheckResult {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let what = esper_plugin_api::panic_message(payload.as_ref());
        let what = esper_runtime::torch_error::summarize(&format!("conformance check {check}"), &what);
        let what = what.lines().next().unwrap_or_default();
        CheckResult::fail(check, format!("the check hit an error on the seed's output: {what}"))
    })
}

fn is_identifier(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && s.len() <= 64
}

/// Topologies the runtime has hosts for.
pub const KNOWN_TOPOLOGIES: [&str; 2] = [Topology::ALL[0].as_str(), Topology::ALL[1].as_str()];

pub fn metadata(d: &BlueprintDescriptor) -> CheckResult {
    let (name, topology, description) = (d.name.as_str(), d.topology.as_str(), d.description.as_str());
    let mut problems = Vec::new();
    if !is_identifier(name) {
        problems.push(format!("name {name:?} is not a lowercase identifier (a-z, 0-9, '-', '_'; at most 64)"));
    }
    if !is_identifier(topology) {
        problems.push(format!("topology {topology:?} is not a lowercase identifier"));
    }
    if description.trim().is_empty() {
        problems.push("the description is empty".into());
    } else if description.contains('\n') || description.len() > 200 {
        problems.push(format!("the description must be one line of at most 200 characters ({})", description.len()));
    }
    if !problems.is_empty() {
        return CheckResult::fail(Check::Metadata, problems.join("; "));
    }
    let summary = format!("`{topology}:{name}`: {description:?}");
    if KNOWN_TOPOLOGIES.contains(&topology) {
        CheckResult::pass(Check::Metadata, summary)
    } else {
        CheckResult::warn(
            Check::Metadata,
            format!(
                "{summary}; topology `{topology}` has no host in this runtime (it has: {})",
                KNOWN_TOPOLOGIES.join(", ")
            ),
        )
    }
}

pub fn create(s: &Subject<'_>) -> CheckResult {
    let mut failures = Vec::new();
    let mut params = Vec::new();
    for c in CHANNELS {
        match s.create(c) {
            Ok(seed) => params.push(format!("{c}: {}", seed.num_parameters())),
            Err(e) => failures.push(e),
        }
    }
    if failures.is_empty() {
        CheckResult::pass(
            Check::Create,
            format!(
                "created with no options for {} channels (parameters per count: {})",
                list(&CHANNELS),
                params.join(", ")
            ),
        )
    } else {
        CheckResult::fail(
            Check::Create,
            format!("{} of {} channel counts failed; first: {}", failures.len(), CHANNELS.len(), failures[0]),
        )
    }
}

fn list(values: &[i64]) -> String {
    values.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

pub fn shape_dtype_device(s: &Subject<'_>) -> CheckResult {
    CheckResult::from_outcome(Check::ShapeDtypeDevice, shape_sweep(s))
}

fn shape_sweep(s: &Subject<'_>) -> Outcome {
    let mut cases = 0;
    for c in CHANNELS {
        let seed = s.create(c)?;
        for b in BATCHES {
            for shape in s.topology().sweep(b, c) {
                for train in [false, true] {
                    let x = randn(&shape);
                    let version = contract::input_version(&x).map_err(|e| e.to_string())?;
                    let y = tch::no_grad(|| s.forward(&seed, &x, train))?;
                    // Shape, dtype and device exactly as the runtime checks them in a run.
                    if let Err(
                        v @ (contract::ContractViolation::Shape { .. }
                        | contract::ContractViolation::Dtype { .. }
                        | contract::ContractViolation::Device { .. }),
                    ) = contract::check_output(&x, version, &y)
                    {
                        return Err(format!("forward(train={train}) on {}: {v}", describe(&x)));
                    }
                    cases += 1;
                }
            }
        }
    }
    Ok(format!(
        "{cases} {} inputs, train and eval ({} channels; {}; batch {}): output shape, Float and cpu kept",
        s.topology().layout_text(),
        list(&CHANNELS),
        s.topology().sweep_text(),
        list(&BATCHES)
    ))
}

pub fn train_eval_flag(s: &Subject<'_>) -> CheckResult {
    CheckResult::from_outcome(Check::TrainEvalFlag, train_eval(s))
}

fn train_eval(s: &Subject<'_>) -> Outcome {
    let seed = s.create(PRIMARY_CHANNELS)?;
    perturb(&seed);
    let names: Vec<String> = trainable(&seed).into_iter().map(|(n, _)| n).collect();
    let x = s.randn(4, 8);
    let before = snapshot(&seed);
    let y_train = s.forward(&seed, &x, true)?;
    require_same_shape(&x, &y_train)?;
    require_finite(&y_train, "train=true")?;
    let moved = changed(&before, &snapshot(&seed), Some(&names));
    if !moved.is_empty() {
        return Err(format!("forward(train=true) changed parameter(s) {}: only an optimizer may", moved.join(", ")));
    }
    let before_eval = snapshot(&seed);
    let y_eval = s.forward(&seed, &x, false)?;
    require_same_shape(&x, &y_eval)?;
    require_finite(&y_eval, "train=false")?;
    let moved = changed(&before_eval, &snapshot(&seed), None);
    if !moved.is_empty() {
        return Err(format!("forward(train=false) changed {}: eval mode must not update state", moved.join(", ")));
    }
    let differ = close(&y_train, &y_eval, 0.0, 0.0).is_err();
    Ok(format!(
        "both flags keep the shape and give finite outputs; forward changed none of {} parameter(s) and eval none of \
         {} tensor(s); train and eval outputs {} (a blueprint may ignore the flag)",
        names.len(),
        before.len(),
        if differ { "differ" } else { "are equal" }
    ))
}

pub fn parameter_gradients(s: &Subject<'_>) -> CheckResult {
    CheckResult::from_outcome(Check::ParameterGradients, gradients(s))
}

fn gradients(s: &Subject<'_>) -> Outcome {
    let seed = s.create(PRIMARY_CHANNELS)?;
    let params = trainable(&seed);
    if params.is_empty() {
        return Ok("declares no trainable parameters".into());
    }
    let x = s.randn(2, 8);
    let y = s.forward(&seed, &x, true)?;
    if !y.requires_grad() {
        return Err(format!("the train-mode output depends on none of its {} parameter(s)", params.len()));
    }
    let _ = backward_through(&y)?;
    let missing: Vec<String> =
        params.iter().filter(|(_, p)| !p.grad().defined()).map(|(n, p)| format!("`{n}` {:?}", p.size())).collect();
    if missing.is_empty() {
        let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        Ok(format!("all {} trainable parameter(s) got a gradient: {}", params.len(), names.join(", ")))
    } else {
        Err(format!(
            "no gradient reached {} of {} trainable parameter(s): {} (every declared parameter must take part in \
             forward)",
            missing.len(),
            params.len(),
            missing.join(", ")
        ))
    }
}

pub fn host_isolation(s: &Subject<'_>) -> CheckResult {
    host_isolation_with(s, &|host| seed_input(host, true))
}

/// The host-isolation check with a given seed-input function: the runtime's
/// `seed_input(host, true)` in the suite; anything else in tests that prove the check
/// catches a leak.
pub fn host_isolation_with(s: &Subject<'_>, feed: &dyn Fn(&Tensor) -> Tensor) -> CheckResult {
    guarded(Check::HostIsolation, || CheckResult::from_outcome(Check::HostIsolation, isolation(s, feed)))
}

#[derive(Debug, Clone, Copy)]
enum Route {
    StraightThrough,
    Add,
    Multiply,
}

impl Route {
    /// The blend a blending route goes through (GATE needs a trained gate: not checked here).
    fn blend(self) -> Option<Blend> {
        match self {
            Route::StraightThrough => None,
            Route::Add => Some(Blend::Add),
            Route::Multiply => Some(Blend::Multiply),
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::StraightThrough => f.write_str("straight-through (TRAINING)"),
            Route::Add => write!(f, "ADD blend at alpha {BLEND_ALPHA}"),
            Route::Multiply => write!(f, "MULTIPLY blend at alpha {BLEND_ALPHA}"),
        }
    }
}

const BLEND_ALPHA: f64 = 0.5;

/// [`BLEND_ALPHA`] as the runtime's blends take it: a 0-d tensor on `like`'s device.
fn blend_alpha(like: &Tensor) -> Tensor {
    Tensor::from(BLEND_ALPHA as f32).to_device(like.device())
}

fn isolation(s: &Subject<'_>, feed: &dyn Fn(&Tensor) -> Tensor) -> Outcome {
    let live = live_parameters(s)?;
    let seed = s.create(PRIMARY_CHANNELS)?;
    // Off its birth value a seed really transforms its input, so a leak would show.
    perturb(&seed);
    let params = trainable(&seed);
    let routes = [Route::StraightThrough, Route::Add, Route::Multiply];
    for route in routes {
        // The host input: a leaf whose only legitimate gradient is the host path's.
        let host = s.randn(2, 8).set_requires_grad(true);
        let input = feed(&host);
        let out = s.forward(&seed, &input, true)?;
        require_same_shape(&host, &out)?;
        let y = match route.blend() {
            None => straight_through(&host, &out).map_err(|e| e.to_string())?,
            Some(b) => b.apply(&host, &out, &input, &blend_alpha(&host)).map_err(|e| e.to_string())?,
        };
        let r = backward_through(&y)?;
        // What the host input's gradient is when nothing flows back through the seed.
        let expected = tch::no_grad(|| match route {
            Route::StraightThrough => r.shallow_clone(),
            Route::Multiply => &r * ((out.detach() - input.detach()).tanh() * BLEND_ALPHA + 1.0),
            Route::Add => &r * (1.0 - BLEND_ALPHA),
        });
        let grad = host.grad();
        if !grad.defined() {
            return Err(format!("{route}: the host input got no gradient at all"));
        }
        if let Err(e) = close(&grad, &expected, 1e-5, 1e-6) {
            return Err(format!(
                "{route}: the host input's gradient differs from the host path's alone ({e}): gradient leaked \
                 through the seed into the host"
            ));
        }
        if matches!(route, Route::StraightThrough) {
            let starved = starved(&params, &live);
            if !starved.is_empty() {
                return Err(format!("straight-through: no gradient reached seed parameter(s) {}", starved.join(", ")));
            }
        }
    }
    Ok(format!(
        "through seed_input(isolate) + straight-through, ADD and MULTIPLY (alpha {BLEND_ALPHA}) the host input's \
         gradient is exactly the host path's; {} seed parameter(s) still got gradients",
        live.len()
    ))
}

pub fn channels_last(s: &Subject<'_>) -> CheckResult {
    CheckResult::from_outcome(Check::ChannelsLast, channels_last_outcome(s))
}

fn channels_last_outcome(s: &Subject<'_>) -> Outcome {
    let live = live_parameters(s)?;
    let seed = s.create(PRIMARY_CHANNELS)?;
    perturb(&seed);
    let params = trainable(&seed);
    let (topology, layout) = (s.topology(), s.topology().strided_name());
    let leaf = s.randn(2, 8).set_requires_grad(true);
    let host = topology.strided(&leaf);
    let strides = host.stride();
    // The isolation layer: contiguous before detach (BUG-005), host stream untouched.
    let input = seed_input(&host, true);
    let out = s.forward(&seed, &input, true)?;
    require_same_shape(&host, &out)?;
    let y = straight_through(&host, &out).map_err(|e| e.to_string())?
        + Blend::Add.apply(&host, &out, &input, &blend_alpha(&host)).map_err(|e| e.to_string())?;
    let r = backward_through(&y)?;
    if !topology.is_strided(&host) {
        return Err(format!("the host stream lost its {layout} layout"));
    }
    let expected = &r * (2.0 - BLEND_ALPHA);
    let grad = leaf.grad();
    if !grad.defined() {
        return Err(format!("the {layout} host got no gradient"));
    }
    close(&grad, &expected, 1e-5, 1e-6).map_err(|e| format!("{layout} host gradient is not the host path's: {e}"))?;
    let starved = starved(&params, &live);
    if !starved.is_empty() {
        return Err(format!("no gradient reached seed parameter(s) {} from a {layout} host", starved.join(", ")));
    }
    // Without isolation the seed itself sees the strided layout: same values either way.
    let x = s.randn(2, 8);
    let (y_contiguous, y_last) = tch::no_grad(|| -> Result<(Tensor, Tensor), String> {
        Ok((s.forward(&seed, &x, false)?, s.forward(&seed, &topology.strided(&x), false)?))
    })?;
    require_same_shape(&x, &y_last)?;
    close(&y_last, &y_contiguous, 1e-4, 1e-5)
        .map_err(|e| format!("a {layout} input gives another output than the contiguous one: {e}"))?;
    Ok(format!(
        "host with strides {strides:?}: backward through the isolation layer completed, the host kept {layout} and \
         its exact gradient, {} seed parameter(s) got gradients; {layout} and contiguous inputs agree",
        live.len()
    ))
}

pub fn finite_outputs(s: &Subject<'_>) -> CheckResult {
    CheckResult::from_outcome(Check::FiniteOutputs, finite(s))
}

fn finite(s: &Subject<'_>) -> Outcome {
    let seed = s.create(PRIMARY_CHANNELS)?;
    perturb(&seed);
    let shape = s.shape(4, 16);
    let inputs =
        [("randn", randn(&shape)), ("relu(randn)", randn(&shape).relu()), ("zeros", randn(&shape).zeros_like())];
    for round in 1..=REPEATS {
        for (name, x) in &inputs {
            for train in [true, false] {
                let y = s.forward(&seed, x, train)?;
                require_finite(&y, &format!("call round {round}: {name} input {:?}, train={train}", x.size()))?;
            }
        }
    }
    Ok(format!(
        "finite for randn, relu(randn) and zeros inputs {shape:?}, train and eval, {REPEATS} rounds (parameters \
         perturbed)"
    ))
}

/// How often the checks that look for a seed that misbehaves only after a while (NaN
/// after some steps, a late in-place write, a late device change) repeat their calls.
pub const REPEATS: usize = 4;

pub fn input_untouched(s: &Subject<'_>) -> CheckResult {
    CheckResult::from_outcome(Check::InputUntouched, untouched(s))
}

fn untouched(s: &Subject<'_>) -> Outcome {
    let seed = s.create(PRIMARY_CHANNELS)?;
    perturb(&seed);
    let mut calls = 0;
    for round in 1..=REPEATS {
        for strided in [false, true] {
            for train in [true, false] {
                // A host activation as the runtime hands it to a seed: detached, and made
                // contiguous first when the host is strided (BUG-005).
                let leaf = s.randn(2, 8).set_requires_grad(true);
                let host = if strided { s.topology().strided(&(&leaf * 1.0)) } else { &leaf * 1.0 };
                let input = seed_input(&host, true);
                let reference = host.detach().copy();
                let version = contract::input_version(&input).map_err(|e| e.to_string())?;
                let layout = if strided { s.topology().strided_name() } else { "contiguous" };
                let out = s.forward(&seed, &input, train)?;
                calls += 1;
                if let Err(v @ contract::ContractViolation::InputWritten { .. }) =
                    contract::check_output(&input, version, &out)
                {
                    return Err(format!("call {calls} (round {round}, {layout} host, train={train}): {v}"));
                }
                if !host.detach().equal(&reference) {
                    return Err(format!(
                        "call {calls} (round {round}, {layout} host, train={train}): the host activation's values \
                         changed under the seed (written without the version counter)"
                    ));
                }
            }
        }
    }
    Ok(format!(
        "{calls} calls (train and eval, contiguous and {} hosts, {REPEATS} rounds): the input's version counter and \
         values never changed",
        s.topology().strided_name()
    ))
}

pub fn determinism(s: &Subject<'_>) -> CheckResult {
    CheckResult::from_outcome(Check::Determinism, deterministic(s))
}

fn deterministic(s: &Subject<'_>) -> Outcome {
    let seed = s.create(PRIMARY_CHANNELS)?;
    perturb(&seed);
    let x = s.randn(2, 16);
    let first = tch::no_grad(|| s.forward(&seed, &x, false))?;
    let again = tch::no_grad(|| s.forward(&seed, &x, false))?;
    close(&again, &first, 0.0, 0.0).map_err(|e| format!("the same input twice gave different outputs: {e}"))?;
    let mut twin = s.create(PRIMARY_CHANNELS)?;
    twin.vars_mut().copy(seed.vars()).map_err(|e| format!("cannot copy the parameters into a second seed: {e}"))?;
    let other = tch::no_grad(|| s.forward(&twin, &x, false))?;
    close(&other, &first, 0.0, 0.0).map_err(|e| {
        format!(
            "a second seed with the same parameters gave another output ({e}): the output depends on state the \
             runtime does not own"
        )
    })?;
    Ok("eval mode: identical outputs for the same input twice and in a second seed with the parameters copied".into())
}

pub fn param_estimate(s: &Subject<'_>) -> CheckResult {
    let declared = s.descriptor().param_estimate;
    let seed = match s.create(PRIMARY_CHANNELS) {
        Ok(seed) => seed,
        Err(e) => return CheckResult::skip(Check::ParamEstimate, format!("no seed: {e}")),
    };
    let actual = seed.num_parameters().max(0) as u64;
    let at = format!("at {PRIMARY_CHANNELS} channels: {actual} actual vs {declared} declared");
    if declared == 0 && actual == 0 {
        return CheckResult::pass(Check::ParamEstimate, format!("{at} (no parameters)"));
    }
    if declared == 0 {
        return CheckResult::warn(Check::ParamEstimate, format!("{at}: declares 0 but has parameters"));
    }
    let factor = actual as f64 / declared as f64;
    let within = (1.0 / ESTIMATE_FACTOR..=ESTIMATE_FACTOR).contains(&factor);
    let text = format!("{at} (factor {factor:.2}; allowed 1/{ESTIMATE_FACTOR}..{ESTIMATE_FACTOR})");
    if within {
        CheckResult::pass(Check::ParamEstimate, text)
    } else {
        CheckResult::warn(Check::ParamEstimate, format!("{text}: update PARAM_ESTIMATE"))
    }
}

pub fn unknown_options(s: &Subject<'_>) -> CheckResult {
    let options = json!({ UNKNOWN_OPTION: 1 });
    let outcome = match s.create_with(PRIMARY_CHANNELS, &options) {
        Ok(_) => Err(format!(
            "accepted {options}: unknown option keys must be refused by name (use #[serde(deny_unknown_fields)] or \
             NoOptions)"
        )),
        Err(LoadError::BadOptions { message, .. }) if message.contains(UNKNOWN_OPTION) => {
            Ok(format!("refused: {message}"))
        }
        Err(LoadError::BadOptions { message, .. }) => {
            Err(format!("refused as bad options, but the message does not name the key `{UNKNOWN_OPTION}`: {message}"))
        }
        Err(e) => Err(format!("expected a bad-options error for {options}, got: {}", short(&e))),
    };
    CheckResult::from_outcome(Check::UnknownOptions, outcome)
}

/// Run last: sums up the panics every earlier check ran into, after dropping one more
/// used seed through the ABI (so a panic in a seed's `Drop` shows here).
pub fn no_panic(s: &Subject<'_>) -> CheckResult {
    if let Ok(seed) = s.create(PRIMARY_CHANNELS) {
        let x = s.randn(2, 8);
        let _ = s.forward(&seed, &x, true);
        s.release(seed);
    }
    let panics = s.panics.borrow();
    match panics.first() {
        None => {
            CheckResult::pass(Check::NoPanic, format!("no panic in {} create, forward and drop calls", s.calls.get()))
        }
        Some(first) => CheckResult::fail(
            Check::NoPanic,
            format!(
                "{} of {} create, forward and drop calls panicked (each contained; the runtime is unaffected); \
                 first: {first}",
                panics.len(),
                s.calls.get()
            ),
        ),
    }
}

pub fn device_move(s: &Subject<'_>, target: Device) -> CheckResult {
    CheckResult::from_outcome(Check::DeviceMove, moved(s, target))
}

fn moved(s: &Subject<'_>, target: Device) -> Outcome {
    let live = live_parameters(s)?;
    let mut seed = s.create(PRIMARY_CHANNELS)?;
    perturb(&seed);
    let x = s.randn(2, 8);
    let reference = tch::no_grad(|| s.forward(&seed, &x, false))?;
    let route = format!("cpu -> {} -> cpu", device_name(target));
    seed.set_device(target);
    if let Some((name, t)) = seed.vars().variables().into_iter().find(|(_, t)| t.device() != target) {
        return Err(format!("after set_device({}), `{name}` is on {}", device_name(target), device_name(t.device())));
    }
    // A copy even when the target is the CPU: a seed that writes its input must not
    // spoil the reference input.
    let xt = x.to_device(target).copy();
    let y = tch::no_grad(|| s.forward(&seed, &xt, false))
        .map_err(|e| format!("after the move to {}: {e}", device_name(target)))?;
    if y.device() != target {
        return Err(format!(
            "after the move, the output is on {} for an input on {}",
            device_name(y.device()),
            device_name(target)
        ));
    }
    close(&y, &reference, 1e-4, 1e-5)
        .map_err(|e| format!("after the move to {}, the output differs from the cpu one: {e}", device_name(target)))?;
    let params = trainable(&seed);
    for call in 1..=REPEATS {
        let y = s.forward(&seed, &xt.copy(), true)?;
        if y.device() != target {
            return Err(format!(
                "after the move, train-mode call {call}: the output is on {} for an input on {}",
                device_name(y.device()),
                device_name(target)
            ));
        }
    }
    if !live.is_empty() {
        let y = s.forward(&seed, &xt, true)?;
        let _ = backward_through(&y)?;
        let wrong: Vec<&str> = params
            .iter()
            .filter(|(n, p)| live.contains(n) && (!p.grad().defined() || p.grad().device() != target))
            .map(|(n, _)| n.as_str())
            .collect();
        if !wrong.is_empty() {
            return Err(format!("on {}: no gradient there for {}", device_name(target), wrong.join(", ")));
        }
    }
    seed.set_device(Device::Cpu);
    let back = tch::no_grad(|| s.forward(&seed, &x, false)).map_err(|e| format!("after moving back to cpu: {e}"))?;
    close(&back, &reference, 1e-4, 1e-5).map_err(|e| format!("back on cpu, the output changed: {e}"))?;
    let note = if target == Device::Cpu { " (no CUDA device: a cpu -> cpu move only)" } else { "" };
    Ok(format!("{route}: same outputs on each side, train-mode gradients on {}{note}", device_name(target)))
}

/// Sequence length of the causal check.
pub const CAUSAL_LENGTH: i64 = 16;
/// The positions `t` the causal check splits the sequence at: the first, one inside and
/// the last but one, so a leak from one position ahead, from the far end or from
/// anywhere between is caught.
pub const CAUSAL_SPLITS: [i64; 3] = [0, 6, CAUSAL_LENGTH - 2];

pub fn causal(s: &Subject<'_>) -> CheckResult {
    match s.topology() {
        Topology::Transformer => CheckResult::from_outcome(Check::Causal, causal_outcome(s)),
        other => CheckResult::pass(
            Check::Causal,
            format!("not applicable: topology `{other}` has no sequence positions (checked for `transformer` only)"),
        ),
    }
}

fn causal_outcome(s: &Subject<'_>) -> Outcome {
    // Off its birth value a seed really mixes positions (a zero-init projection would
    // hide a leak), so a non-causal seed shows.
    let seed = s.create(PRIMARY_CHANNELS)?;
    perturb(&seed);
    let x = s.randn(2, CAUSAL_LENGTH);
    let y = tch::no_grad(|| s.forward(&seed, &x, false))?;
    require_same_shape(&x, &y)?;
    for t in CAUSAL_SPLITS {
        let (head, tail) = (t + 1, CAUSAL_LENGTH - t - 1);
        // Forward: every feature at positions > t replaced by fresh random values.
        let changed = Tensor::cat(&[x.narrow(1, 0, head), randn(&[2, tail, PRIMARY_CHANNELS])], 1);
        let y_changed = tch::no_grad(|| s.forward(&seed, &changed, false))?;
        require_same_shape(&changed, &y_changed)?;
        close(&y_changed.narrow(1, 0, head), &y.narrow(1, 0, head), 0.0, 0.0).map_err(|e| {
            format!(
                "eval mode, length {CAUSAL_LENGTH}: changing the features at positions > {t} changed the output at \
                 positions <= {t} ({e}): the seed looks ahead"
            )
        })?;
        // Backward: no gradient from the outputs at positions <= t to inputs after t.
        let leaf = x.copy().set_requires_grad(true);
        let out = s.forward(&seed, &leaf, true)?;
        if !out.requires_grad() {
            continue;
        }
        let part = out.narrow(1, 0, head);
        (&part * part.randn_like()).sum(Kind::Float).f_backward().map_err(|e| format!("backward failed: {e}"))?;
        let grad = leaf.grad();
        if !grad.defined() {
            continue;
        }
        let ahead = grad.narrow(1, head, tail).abs().max().double_value(&[]);
        if ahead != 0.0 {
            return Err(format!(
                "train mode, length {CAUSAL_LENGTH}: the outputs at positions <= {t} send gradient to the inputs at \
                 positions > {t} (max |gradient| {ahead:.3e}): the seed looks ahead"
            ));
        }
    }
    Ok(format!(
        "length {CAUSAL_LENGTH}, split after positions {}: random features after the split leave the eval output up \
         to it bit-identical, and the train-mode outputs up to it send exactly zero gradient past it (parameters \
         perturbed)",
        list(&CAUSAL_SPLITS)
    ))
}
