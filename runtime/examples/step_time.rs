//! Times this runtime's training step as `esper run` takes it, for the side-by-side
//! benchmark against PyTorch (`scripts/bench-vs-pytorch.sh`): the default host (3 blocks,
//! base 32), a `norm` seed in TRAINING at r0c1 with isolation (or none), SGD with
//! momentum 0.9 on host and seed. Prints one JSON line per batch size:
//! `{"host": "cnn", "batch": 8, "threads": 2, "seed": true, "cuda_graph": "auto",
//! "median_ms": ..., "min_ms": ..., "steps": ..., "replays": ..., "capture_ms": ...}`
//! (`threads`: libtorch's intra-op threads; `--cuda-graph off` for eager steps on CUDA,
//! `--precision bf16` for bfloat16 autocast, `--no-kernel NAME` (repeatable) to turn off
//! one of the runtime's CUDA kernels, NAME a key of `[host.kernels]`: `pool` for
//! libtorch's ReLU and max pool, `batchnorm` for libtorch's BatchNorm, `first_conv` for
//! cuDNN's first convolution, `wgrad` for cuDNN's weight gradient of the second;
//! `--cudnn-benchmark` to let cuDNN time its algorithms).
//!
//! `--host transformer`: the default transformer job instead (`configs/transformer.toml`,
//! as `esper run` reads it: its model, data, batch size and Adam on host and seed), with a
//! `lora` seed in TRAINING at r0c0 from `--plugin` (the transformer plugin), the
//! controller off; `--batches` defaults to the job's batch size.
//!
//! ```text
//! cargo run --release -p esper-runtime --example step_time -- \
//!     --plugin target/release/libesper_norm.so --device cpu --batches 8,128
//! cargo run --release -p esper-runtime --example step_time -- --host transformer \
//!     --plugin target/release/libesper_transformer.so --device cpu
//! ```

use anyhow::{bail, Context, Result};
use esper_runtime::{
    config::{PluginSource, RunConfig},
    host::{HostKernels, Topology},
    train::Trainer,
};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// The default transformer job, the file `esper run configs/transformer.toml` reads.
const TRANSFORMER_JOB: &str = include_str!("../../configs/transformer.toml");
const TRANSFORMER_JOB_PATH: &str = "configs/transformer.toml";

fn transformer_job() -> Result<RunConfig> {
    Ok(RunConfig::parse(TRANSFORMER_JOB, Path::new(TRANSFORMER_JOB_PATH))?)
}

struct Args {
    host: Topology,
    plugin: PathBuf,
    device: String,
    /// None: 8 and 128 for the CNN, the job's batch size for the transformer.
    batches: Option<Vec<i64>>,
    warmup: usize,
    steps: usize,
    seed: bool,
    memory_format: String,
    cuda_graph: String,
    precision: String,
    cudnn_benchmark: bool,
    kernels: HostKernels,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        host: Topology::Cnn,
        plugin: PathBuf::new(),
        device: "cpu".into(),
        batches: None,
        warmup: 10,
        steps: 40,
        seed: true,
        memory_format: "channels_last".into(),
        cuda_graph: "auto".into(),
        precision: "fp32".into(),
        cudnn_benchmark: false,
        kernels: HostKernels::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--host" => a.host = value()?.parse().context("--host")?,
            "--plugin" => a.plugin = PathBuf::from(value()?),
            "--device" => a.device = value()?,
            "--batches" => {
                a.batches = Some(value()?.split(',').map(str::parse).collect::<Result<_, _>>().context("--batches")?)
            }
            "--warmup" => a.warmup = value()?.parse().context("--warmup")?,
            "--steps" => a.steps = value()?.parse().context("--steps")?,
            "--memory-format" => a.memory_format = value()?,
            "--cuda-graph" => a.cuda_graph = value()?,
            "--precision" => a.precision = value()?,
            "--no-seed" => a.seed = false,
            "--cudnn-benchmark" => a.cudnn_benchmark = true,
            "--no-kernel" => {
                let k = &mut a.kernels;
                match value()?.as_str() {
                    "pool" => k.pool = false,
                    "batchnorm" => k.batchnorm = false,
                    "first_conv" => k.first_conv = false,
                    "wgrad" => k.wgrad = false,
                    other => {
                        bail!("--no-kernel {other}: not a key of [host.kernels] (pool, batchnorm, first_conv, wgrad)")
                    }
                }
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let (_, blueprint) = seed_of(a.host);
    if !a.plugin.is_file() {
        bail!("--plugin must name a plugin library with `{blueprint}` (got {})", a.plugin.display());
    }
    if a.host == Topology::Transformer && (a.kernels != HostKernels::default() || a.memory_format != "channels_last") {
        bail!("--no-kernel and --memory-format are settings of the cnn host, not the transformer");
    }
    Ok(a)
}

/// The slot and blueprint of the seed in TRAINING.
fn seed_of(host: Topology) -> (&'static str, &'static str) {
    match host {
        Topology::Cnn => ("r0c1", "norm"),
        Topology::Transformer => ("r0c0", "lora"),
    }
}

fn config(a: &Args, batch: i64) -> Result<RunConfig> {
    match a.host {
        Topology::Cnn => cnn_config(a, batch),
        Topology::Transformer => transformer_config(a, batch),
    }
}

/// A setting given on the command line, read as the config file would read it.
fn setting<T: DeserializeOwned>(flag: &str, value: &str) -> Result<T> {
    serde_json::from_value(value.into()).with_context(|| format!("{flag} {value}"))
}

/// The default transformer job at batch size `batch`, with this run's device, CUDA graph
/// mode, precision and plugin, the controller off (the seed is placed by hand), no
/// checkpoints.
fn transformer_config(a: &Args, batch: i64) -> Result<RunConfig> {
    let mut c = transformer_job()?;
    c.device = setting("--device", &a.device)?;
    c.training.cuda_graph = setting("--cuda-graph", &a.cuda_graph)?;
    c.training.precision = setting("--precision", &a.precision)?;
    c.training.batch_size = batch;
    c.plugins = vec![PluginSource { path: a.plugin.clone(), sha256: None }];
    c.lifecycle.controller.enabled = false;
    c.lifecycle.schedule.clear();
    c.output.checkpoint = false;
    c.validate(Path::new(TRANSFORMER_JOB_PATH))?;
    Ok(c)
}

/// The batch sizes to time: `--batches`, else the host's defaults.
fn batches(a: &Args) -> Result<Vec<i64>> {
    if let Some(b) = &a.batches {
        return Ok(b.clone());
    }
    Ok(match a.host {
        Topology::Cnn => vec![8, 128],
        Topology::Transformer => vec![transformer_job()?.training.batch_size],
    })
}

fn cnn_config(a: &Args, batch: i64) -> Result<RunConfig> {
    let text = format!(
        r#"
device = "{device}"
slots = ["r0c1"]

[[plugins]]
path = "{plugin}"

[host]
memory_format = "{format}"

[host.kernels]
pool = {pool}
batchnorm = {batchnorm}
first_conv = {first_conv}
wgrad = {wgrad}

[data]
kind = "synthetic"

[training]
batch_size = {batch}
host_optimizer = {{ kind = "sgd", lr = 0.01, momentum = 0.9 }}
seed_optimizer = {{ kind = "sgd", lr = 0.01, momentum = 0.9 }}
cuda_graph = "{cuda_graph}"
precision = "{precision}"

[lifecycle.controller]
enabled = false

[output]
checkpoint = false
"#,
        device = a.device,
        plugin = a.plugin.display(),
        format = a.memory_format,
        pool = a.kernels.pool,
        batchnorm = a.kernels.batchnorm,
        first_conv = a.kernels.first_conv,
        wgrad = a.kernels.wgrad,
        cuda_graph = a.cuda_graph,
        precision = a.precision,
    );
    Ok(RunConfig::parse(&text, Path::new("step_time.toml"))?)
}

fn main() -> Result<()> {
    let mut a = parse_args()?;
    let none = HostKernels { pool: false, batchnorm: false, first_conv: false, wgrad: false };
    if a.host == Topology::Cnn && a.kernels != none && a.device == "cuda" {
        if let Err(why) = esper_runtime::host::fused_pool_available() {
            eprintln!("the runtime's CUDA kernels are unavailable: {why}");
            a.kernels = none; // reported as not used: they are compiled together
        }
    }
    if a.cudnn_benchmark {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    let (slot, blueprint) = seed_of(a.host);
    for batch in batches(&a)? {
        let mut trainer = Trainer::new(config(&a, batch)?)?;
        if a.seed {
            trainer.seed_in_training(slot, blueprint)?;
        }
        let mut times = trainer.time_steps(batch, a.warmup, a.steps)?;
        if std::env::var_os("STEP_TIME_EACH").is_some() {
            eprintln!("{}", times.iter().map(|t| format!("{t:.1}")).collect::<Vec<_>>().join(" "));
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let graphs = trainer.graph_stats();
        let k = &a.kernels;
        let kernels = match a.host {
            Topology::Cnn => format!(
                "{{\"pool\": {}, \"batchnorm\": {}, \"first_conv\": {}, \"wgrad\": {}}}",
                k.pool, k.batchnorm, k.first_conv, k.wgrad
            ),
            Topology::Transformer => "null".into(), // [host.kernels] is the CNN host's
        };
        println!(
            "{{\"host\": \"{}\", \"batch\": {batch}, \"threads\": {}, \"seed\": {}, \"cuda_graph\": \"{}\", \"precision\": \"{}\", \"kernels\": {kernels}, \"median_ms\": {median:.4}, \"min_ms\": {:.4}, \
             \"steps\": {}, \"replays\": {}, \"capture_ms\": {:.3}, \"graph_nodes\": {}}}",
            a.host,
            tch::get_num_threads(),
            a.seed,
            a.cuda_graph,
            a.precision,
            times[0],
            times.len(),
            graphs.replays,
            graphs.last_capture_ms,
            graphs.last_graph_nodes,
        );
    }
    Ok(())
}
