//! Portable plugins: the portable `norm` agrees bit for bit with the native one; a plugin
//! written in C loads, runs and passes conformance; a portable library states no
//! libtorch version at all and needs none; bad ABI claims and malformed descriptions are
//! refused at load, by message; op errors name the op and the shapes.

use esper_conformance::{run_suite, SuiteOptions};
use esper_runtime::host::to_channels_last;
use esper_runtime::plugin::{BlueprintRegistry, LoadError, PluginKind, PluginSeed};
use esper_tests::{esper, plugin_lib, stderr, stdout};
use serde_json::json;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

// The two plugins' shared rule for when the gate is folded into GroupNorm.
#[path = "../../plugins/norm/src/fold.rs"]
mod fold;

fn c_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("ESPER_C_FIXTURES")).join(format!("libesper_fixture_{name}.so"))
}

fn seed_of(crate_or_path: &std::path::Path, blueprint: &str, channels: i64) -> PluginSeed {
    let mut r = BlueprintRegistry::new();
    r.load(crate_or_path).unwrap_or_else(|e| panic!("{e}"));
    r.create_seed(blueprint, channels, &json!({}), Device::Cpu).unwrap_or_else(|e| panic!("{e}"))
}

/// Sets every parameter of `to` to the value of the same-named one of `from`.
fn copy_parameters(from: &PluginSeed, to: &PluginSeed) {
    let (src, dst) = (from.vars().variables(), to.vars().variables());
    assert_eq!(src.keys().collect::<std::collections::BTreeSet<_>>(), dst.keys().collect(), "same parameter names");
    tch::no_grad(|| {
        for (name, t) in &src {
            dst[name].shallow_clone().copy_(t);
        }
    });
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn portable_norm_matches_the_native_norm_bit_for_bit_in_outputs_and_gradients() {
    // Both forms: the gate folded into GroupNorm from fold::FOLD_FROM elements, and not.
    let cases = [(64, [1, 64, 8, 8]), (64, [8, 64, 8, 8]), (16, [3, 16, 5, 7]), (64, [16, 64, 64, 64])];
    assert!(cases.iter().any(|(_, s)| fold::fold(s)) && cases.iter().any(|(_, s)| !fold::fold(s)));
    for (channels, shape) in cases {
        let native = seed_of(&plugin_lib("esper-norm"), "norm", channels);
        let portable = seed_of(&plugin_lib("esper-norm-portable"), "norm", channels);
        // Away from the identity at birth, so every op matters.
        tch::no_grad(|| {
            for t in native.vars().variables().values() {
                t.shallow_clone().copy_(&(Tensor::randn_like(t) * 0.5));
            }
        });
        copy_parameters(&native, &portable);
        let x = to_channels_last(&Tensor::randn(shape, (Kind::Float, Device::Cpu)));
        let g = Tensor::randn(shape, (Kind::Float, Device::Cpu));
        let mut grads = Vec::new();
        for seed in [&native, &portable] {
            let xi = x.detach().set_requires_grad(true);
            let y = seed.forward(&xi, true).unwrap();
            (&y * &g).sum(Kind::Float).backward();
            let mut named: Vec<(String, Tensor)> =
                seed.vars().variables().into_iter().map(|(n, t)| (n, t.grad().copy())).collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            grads.push((y.detach(), xi.grad().copy(), named));
        }
        let ((yn, gxn, gn), (yp, gxp, gp)) = (&grads[0], &grads[1]);
        assert_eq!(max_diff(yn, yp), 0.0, "outputs at {shape:?}");
        assert_eq!(max_diff(gxn, gxp), 0.0, "input gradients at {shape:?}");
        for ((name, a), (_, b)) in gn.iter().zip(gp) {
            assert!(a.abs().sum(Kind::Float).double_value(&[]) > 0.0, "{name} got a gradient");
            assert_eq!(max_diff(a, b), 0.0, "gradient of {name} at {shape:?}");
        }
    }
}

#[test]
fn a_portable_library_states_no_libtorch_version_and_links_none() {
    for lib in [plugin_lib("esper-norm-portable"), c_fixture("c_gain")] {
        let mut r = BlueprintRegistry::new();
        r.load(&lib).unwrap_or_else(|e| panic!("{e}"));
        let plugin = r.plugins().next().unwrap();
        assert_eq!(plugin.kind(), PluginKind::Portable);
        assert!(plugin.handshake().is_none(), "a portable handshake carries no libtorch or tch version");
        assert_eq!(plugin.abi_version(), esper_plugin_api::abi::ABI_VERSION);
        // The dynamic section names every library it needs: none of libtorch's.
        let out = std::process::Command::new("readelf").arg("-d").arg(&lib).output().expect("readelf (binutils) runs");
        let needed: Vec<String> =
            stdout(&out).lines().filter(|l| l.contains("(NEEDED)")).map(|l| l.trim().to_string()).collect();
        assert!(needed.iter().any(|l| l.contains("libc.so")), "premise: readelf lists NEEDED entries: {needed:?}");
        assert!(!needed.iter().any(|l| l.contains("torch") || l.contains("c10")), "{}: {needed:?}", lib.display());
    }
}

#[test]
fn the_c_plugin_is_the_identity_at_birth_learns_and_passes_conformance() {
    let seed = seed_of(&c_fixture("c_gain"), "c-gain", 16);
    assert_eq!(seed.num_parameters(), 16);
    let x = Tensor::randn([2, 16, 4, 4], (Kind::Float, Device::Cpu));
    assert_eq!(max_diff(&seed.forward(&x, true).unwrap(), &x), 0.0, "identity at birth");
    let _ = tch::no_grad(|| seed.vars().variables()["gain"].shallow_clone().fill_(0.5));
    let expected = &x * (1.0 + 0.5f64.tanh());
    assert!(max_diff(&seed.forward(&x, false).unwrap(), &expected) < 1e-6);

    let report = run_suite(&c_fixture("c_gain"), &SuiteOptions::default());
    assert!(report.passed, "{}", report.render());
    let h = report.handshake.as_ref().unwrap();
    assert_eq!((h.kind.as_str(), h.libtorch.as_deref(), h.tch.as_deref()), ("portable", None, None));
}

#[test]
fn the_esper_binary_checks_inspects_and_lists_the_c_plugin() {
    let lib = c_fixture("c_gain");
    let out = esper().arg("conformance").arg(&lib).output().unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("(portable): ABI 1.3"), "{}", stdout(&out));
    let out = esper().args(["plugins", "inspect"]).arg(&lib).output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success() && text.contains("kind     portable, ABI 1.3"), "{text}");
    assert!(text.contains("\"additionalProperties\": false"), "its options schema is shown: {text}");
}

#[test]
fn op_errors_name_the_op_and_the_shapes() {
    let seed = seed_of(&c_fixture("c_gain"), "c-gain", 16);
    let wrong = Tensor::randn([2, 8, 4, 4], (Kind::Float, Device::Cpu));
    let e = seed.forward(&wrong, true).expect_err("8 channels into a 16-channel gain");
    let text = e.to_string();
    assert!(text.contains("cnn:c-gain") && text.contains("libesper_fixture_c_gain.so"), "{text}");
    assert!(text.contains("mul([2, 8, 4, 4] Float, [1, 16, 1, 1] Float)"), "{text}");
    assert!(!text.contains("frame #"), "libtorch's C++ frames are dropped: {text}");
}

#[test]
fn bad_options_and_channels_are_refused_by_a_c_plugin_with_its_message() {
    let mut r = BlueprintRegistry::new();
    r.load(&c_fixture("c_gain")).unwrap();
    let e = r.create_seed("c-gain", 16, &json!({"width": 3}), Device::Cpu).err().expect("an unknown option");
    assert!(e.to_string().contains("takes no options"), "{e}");
    let e = r.create_seed("c-gain", 0, &json!({}), Device::Cpu).err().expect("zero channels");
    assert!(e.to_string().contains("channels must be positive"), "{e}");
}

#[test]
fn a_portable_plugin_of_an_older_minor_loads_and_runs() {
    // Built against ABI 1.1 (no `causal_attention` in its table): a 1.2 runtime takes it.
    let seed = seed_of(&c_fixture("c_gain_abi_1_1"), "c-gain", 16);
    let x = Tensor::randn([2, 16, 4, 4], (Kind::Float, Device::Cpu));
    assert_eq!(max_diff(&seed.forward(&x, true).unwrap(), &x), 0.0, "identity at birth");
}

#[test]
fn portable_libraries_claiming_another_abi_or_without_a_forward_are_refused_by_message() {
    let refuse = |name: &str| BlueprintRegistry::new().load(&c_fixture(name)).expect_err("refused").to_string();
    let e = refuse("c_gain_abi_2_0");
    assert!(e.contains("plugin built against ABI 2.0, runtime has ABI 1.3") && e.contains("another major"), "{e}");
    let e = refuse("c_gain_abi_1_9");
    assert!(
        e.contains("plugin built against ABI 1.9, runtime has ABI 1.3") && e.contains("the plugin is newer"),
        "{e}"
    );
    let e = refuse("c_gain_null_forward");
    assert!(
        e.contains("portable plugin") && e.contains("blueprint `c-gain`: a null create, forward or destroy"),
        "{e}"
    );
    // Through the binary: refused with the same message and a failure status, no crash.
    let out = esper().arg("conformance").arg(c_fixture("c_gain_null_forward")).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("a null create, forward or destroy"), "{}", stdout(&out));
}

#[test]
fn a_portable_seed_follows_its_parameters_to_channels_last_and_back() {
    // The op table works on whatever the runtime passes: channels-last input, output
    // shape kept (the isolation layer and contract checks are the runtime's).
    let seed = seed_of(&plugin_lib("esper-norm-portable"), "norm", 32);
    let x = to_channels_last(&Tensor::randn([2, 32, 6, 6], (Kind::Float, Device::Cpu)));
    let y = seed.forward(&x, false).unwrap();
    assert_eq!(y.size(), x.size());
    let e: Result<_, LoadError> = seed.forward(&Tensor::randn([2, 31, 6, 6], (Kind::Float, Device::Cpu)), false);
    assert!(e.unwrap_err().to_string().contains("group_norm("), "names the op");
}
