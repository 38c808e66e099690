//! Language-model runs: the transformer host on text, through the `esper` binary and the
//! library: the lifecycle judged on the validation loss, resume bit for bit, and the
//! comparison over the transformer catalogue.

use crate::run_job::untimed;
use esper_runtime::{
    config::RunConfig,
    lifecycle::{LifecycleEvent, SeedStage},
    train::{Silent, Trainer},
};
use esper_tests::{esper, one_job_at_a_time, plugin_lib, temp_dir, write_file, TextJob};
use std::path::PathBuf;

/// Gates that let a seed through quickly, a 2-epoch alpha ramp.
const QUICK_GATES: &str = "[slot]\nblend_tempo = 2\n\n[lifecycle.gates]\nmode = \"permissive\"\n\
                           min_blending_epochs = 1\nmin_gradient_health_for_blending = 0.0\n";

fn transformer_lib() -> PathBuf {
    plugin_lib("esper-transformer")
}

fn report(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("out/report.json")).unwrap()).unwrap()
}

#[test]
fn the_controller_grows_a_seed_in_a_language_model_on_a_loss_plateau() {
    let dir = temp_dir("text-job");
    let plugin = transformer_lib();
    // Every epoch a plateau (a gain under 1000 loss points), so the controller germinates
    // at its first chance (epoch 2, the first with a gain to judge), in both slots, from
    // the transformer rotation.
    let controller = "max_live_seeds = 2\nmin_epoch = 1\nplateau_epochs = 1\nplateau_delta = 1000.0\n\
                      fossilize_at_contribution = -1000.0\nprune_below_contribution = -1000.0";
    let job = TextJob { plugin: &plugin, epochs: 10, blueprint: None, sections: QUICK_GATES, controller };
    let config = write_file(&dir, "run.toml", &job.text());
    let out = esper().arg("run").arg(&config).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("val_ppl") && stdout.contains("validation loss: "), "{stdout}");

    let report = report(&dir);
    let epochs = report["epochs"].as_array().unwrap();
    let loss = |e: &serde_json::Value| e["val_loss"].as_f64().unwrap();
    for e in epochs {
        let ppl = e["val_perplexity"].as_f64().unwrap();
        assert!((ppl - loss(e).exp()).abs() < 1e-9 * ppl, "{e}");
    }
    let (first, last) = (loss(&epochs[0]), loss(epochs.last().unwrap()));
    assert!(last < first - 0.05, "validation loss falls: {first} -> {last}");
    assert!(first < 256f64.ln() + 0.5, "the first epoch already learns: {first}");
    let events: Vec<String> =
        epochs.iter().flat_map(|e| e["events"].as_array().unwrap().iter().map(|v| v["text"].to_string())).collect();
    for (slot, blueprint) in [("r0c0", "transformer:lora"), ("r0c1", "transformer:mlp_small")] {
        assert!(events.iter().any(|e| e.contains(&format!("{slot}: germinated {blueprint}"))), "{events:?}");
    }
    // Through BLENDING and HOLDING to FOSSILIZED (the contribution thresholds are off).
    let stages: Vec<&str> = epochs.iter().map(|e| e["slots"][1]["stage"].as_str().unwrap()).collect();
    assert_eq!(stages.last(), Some(&"FOSSILIZED"), "{stages:?}");
    assert!(stages.contains(&"BLENDING") && stages.contains(&"HOLDING"), "{stages:?}");
    let contribution = epochs.last().unwrap()["slots"][1]["contribution"].as_f64();
    assert!(contribution.is_some_and(f64::is_finite), "measured on the loss: {contribution:?}");
}

/// Two in-process runs of `blueprint` blended by `blend`: one straight through 4 epochs,
/// one checkpointed after 3 (mid-ramp) and resumed.
#[test]
fn a_language_model_resumed_while_blending_is_bit_exact() {
    let _one = one_job_at_a_time();
    let plugin = transformer_lib();
    for (blend, blueprint) in [("gate", "lora"), ("multiply", "mlp_small"), ("add", "attention")] {
        let config = |name: &str, epochs: u32| {
            let dir = temp_dir(&format!("text-resume-{blend}-{name}"));
            let sections = QUICK_GATES.replace("[slot]\n", &format!("[slot]\nblend = \"{blend}\"\n"));
            let sections = sections.replace("blend_tempo = 2", "blend_tempo = 3");
            let job = TextJob {
                plugin: &plugin,
                epochs,
                blueprint: Some(blueprint),
                sections: &sections,
                controller: "enabled = false",
            };
            (RunConfig::load(&write_file(&dir, "run.toml", &job.text())).unwrap(), dir.join("out"))
        };
        let run = |config: RunConfig| {
            let mut t = Trainer::new(config).unwrap();
            t.run(&mut Silent).unwrap();
            t
        };
        let a = run(config("a", 4).0);
        let (config_b, out_b) = config("b", 3);
        let interrupted = run(config_b);
        let slot = &interrupted.model().slots()[1];
        assert_eq!(slot.stage(), SeedStage::Blending, "{blend}: checkpointed while blending");
        assert!(slot.alpha() > 0.0 && slot.alpha() < 1.0, "{blend}: alpha {}", slot.alpha());
        drop(interrupted);
        let mut b = Trainer::resume(&out_b).unwrap();
        b.set_epochs(4);
        b.run(&mut Silent).unwrap();

        assert_eq!(untimed(&a), untimed(&b), "{blend}: the same history, every loss and event");
        let state = |t: &Trainer| t.model().state();
        let (sa, sb) = (state(&a), state(&b));
        assert_eq!(sa.len(), sb.len());
        for ((na, x), (nb, y)) in sa.iter().zip(&sb) {
            assert_eq!(na, nb);
            assert!(x.equal(y), "{blend}: {na} differs after resume");
        }
        assert!(a.history()[0].events.iter().any(|e| matches!(e, LifecycleEvent::Germinated { .. })));
    }
}

#[test]
fn compare_runs_the_whole_transformer_catalogue() {
    let dir = temp_dir("text-compare");
    let plugin = transformer_lib();
    let job = TextJob {
        plugin: &plugin,
        epochs: 2,
        blueprint: Some("noop"),
        sections: QUICK_GATES,
        controller: "enabled = false",
    };
    let config = write_file(&dir, "run.toml", &job.text());
    let out = esper().arg("compare").arg(&config).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().next().unwrap().contains("val_loss   val_ppl"), "{stdout}");
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("out/compare.json")).unwrap()).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["blueprint"].as_str().unwrap_or("(none)")).collect();
    let catalogue = ["attention", "flex_attention", "lora", "lora_large", "mlp", "mlp_small", "noop", "norm"];
    assert_eq!(names.len(), 1 + catalogue.len(), "{names:?}");
    for b in catalogue {
        assert!(names.contains(&format!("transformer:{b}").as_str()), "{b} missing: {names:?}");
    }
    for r in &rows {
        assert!(r["final_val_loss"].as_f64().is_some_and(|l| l.is_finite() && l > 0.0), "{r}");
    }
}
