//! The embedding example `runtime/examples/custom_host.rs`: a host of its own through
//! the public `Host` trait, a `norm` seed germinated into it, a few steps.

#[path = "../../runtime/examples/custom_host.rs"]
mod example;

use esper_runtime::lifecycle::SeedStage;
use esper_tests::plugin_lib;

#[test]
fn a_custom_host_grows_a_seed_and_trains() {
    let outcome = example::run(&plugin_lib("esper-norm"), 12).unwrap();
    assert_eq!(outcome.blueprint.as_deref(), Some("cnn:norm"));
    assert_eq!(outcome.stage, SeedStage::Training);
    let (first, last) = (outcome.losses[0], outcome.losses[outcome.losses.len() - 1]);
    assert!(last < 0.9 * first, "the loss fell: {:?}", outcome.losses);
}
