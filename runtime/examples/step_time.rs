//! Times this runtime's training step as `esper run` takes it, for the side-by-side
//! benchmark against PyTorch (`scripts/bench-vs-pytorch.sh`): the default host (3 blocks,
//! base 32), a `norm` seed in TRAINING at r0c1 with isolation (or none), SGD with
//! momentum 0.9 on host and seed. Prints one JSON line per batch size:
//! `{"batch": 8, "seed": true, "cuda_graph": "auto", "median_ms": ..., "min_ms": ..., "steps": ...,
//! "replays": ..., "capture_ms": ...}` (`--cuda-graph off` for eager steps on CUDA,
//! `--precision bf16` for bfloat16 autocast, `--no-kernel NAME` (repeatable) to turn off
//! one of the runtime's CUDA kernels, NAME a key of `[host.kernels]`: `pool` for
//! libtorch's ReLU and max pool, `batchnorm` for libtorch's BatchNorm, `first_conv` for
//! cuDNN's first convolution, `wgrad` for cuDNN's weight gradient of the second;
//! `--cudnn-benchmark` to let cuDNN time its algorithms).
//!
//! ```text
//! cargo run --release -p esper-runtime --example step_time -- \
//!     --plugin target/release/libesper_norm.so --device cpu --batches 8,128
//! ```

use anyhow::{bail, Context, Result};
use esper_runtime::{config::RunConfig, host::HostKernels, train::Trainer};
use std::path::{Path, PathBuf};

struct Args {
    plugin: PathBuf,
    device: String,
    batches: Vec<i64>,
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
        plugin: PathBuf::new(),
        device: "cpu".into(),
        batches: vec![8, 128],
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
            "--plugin" => a.plugin = PathBuf::from(value()?),
            "--device" => a.device = value()?,
            "--batches" => {
                a.batches = value()?.split(',').map(str::parse).collect::<Result<_, _>>().context("--batches")?
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
    if !a.plugin.is_file() {
        bail!("--plugin must name the norm plugin library (got {})", a.plugin.display());
    }
    Ok(a)
}

fn config(a: &Args, batch: i64) -> Result<RunConfig> {
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
    if a.kernels != none && a.device == "cuda" {
        if let Err(why) = esper_runtime::host::fused_pool_available() {
            eprintln!("the runtime's CUDA kernels are unavailable: {why}");
            a.kernels = none; // reported as not used: they are compiled together
        }
    }
    if a.cudnn_benchmark {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    for &batch in &a.batches {
        let mut trainer = Trainer::new(config(&a, batch)?)?;
        if a.seed {
            trainer.seed_in_training("r0c1", "norm")?;
        }
        let mut times = trainer.time_steps(batch, a.warmup, a.steps)?;
        if std::env::var_os("STEP_TIME_EACH").is_some() {
            eprintln!("{}", times.iter().map(|t| format!("{t:.1}")).collect::<Vec<_>>().join(" "));
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let graphs = trainer.graph_stats();
        println!(
            "{{\"batch\": {batch}, \"seed\": {}, \"cuda_graph\": \"{}\", \"precision\": \"{}\", \"kernels\": {{\"pool\": {}, \"batchnorm\": {}, \"first_conv\": {}, \"wgrad\": {}}}, \"median_ms\": {median:.4}, \"min_ms\": {:.4}, \
             \"steps\": {}, \"replays\": {}, \"capture_ms\": {:.3}, \"graph_nodes\": {}}}",
            a.seed,
            a.cuda_graph,
            a.precision,
            a.kernels.pool,
            a.kernels.batchnorm,
            a.kernels.first_conv,
            a.kernels.wgrad,
            times[0],
            times.len(),
            graphs.replays,
            graphs.last_capture_ms,
            graphs.last_graph_nodes,
        );
    }
    Ok(())
}
