//! Times this runtime's training step as `esper run` takes it, for the side-by-side
//! benchmark against PyTorch (`scripts/bench-vs-pytorch.sh`): the default host (3 blocks,
//! base 32), a `norm` seed in TRAINING at r0c1 with isolation (or none), SGD with
//! momentum 0.9 on host and seed. Prints one JSON line per batch size:
//! `{"batch": 8, "seed": true, "cuda_graph": "auto", "median_ms": ..., "min_ms": ..., "steps": ...,
//! "replays": ..., "capture_ms": ...}` (`--cuda-graph off` for eager steps on CUDA,
//! `--precision bf16` for bfloat16 autocast, `--no-fused-pool` for libtorch's ReLU and
//! max pool, `--no-fused-bn` for libtorch's BatchNorm, `--no-first-conv-kernel` for
//! cuDNN's first convolution, `--no-wgrad-kernel` for cuDNN's weight gradient of the
//! second, `--cudnn-benchmark` to let cuDNN time its algorithms).
//!
//! ```text
//! cargo run --release -p esper-runtime --example step_time -- \
//!     --plugin target/release/libesper_norm.so --device cpu --batches 8,128
//! ```

use anyhow::{bail, Context, Result};
use esper_runtime::{config::RunConfig, train::Trainer};
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
    fused_pool: bool,
    fused_batchnorm: bool,
    first_conv_kernel: bool,
    wgrad_kernel: bool,
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
        fused_pool: true,
        fused_batchnorm: true,
        first_conv_kernel: true,
        wgrad_kernel: true,
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
            "--no-fused-pool" => a.fused_pool = false,
            "--no-fused-bn" => a.fused_batchnorm = false,
            "--no-first-conv-kernel" => a.first_conv_kernel = false,
            "--no-wgrad-kernel" => a.wgrad_kernel = false,
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
fused_pool = {fused_pool}
fused_batchnorm = {fused_batchnorm}
first_conv_kernel = {first_conv_kernel}
wgrad_kernel = {wgrad_kernel}

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
        fused_pool = a.fused_pool,
        fused_batchnorm = a.fused_batchnorm,
        first_conv_kernel = a.first_conv_kernel,
        wgrad_kernel = a.wgrad_kernel,
        cuda_graph = a.cuda_graph,
        precision = a.precision,
    );
    Ok(RunConfig::parse(&text, Path::new("step_time.toml"))?)
}

fn main() -> Result<()> {
    let mut a = parse_args()?;
    if a.fused_pool && a.device == "cuda" {
        if let Err(why) = esper_runtime::host::fused_pool_available() {
            eprintln!("fused pool kernels unavailable: {why}");
            a.fused_pool = false; // reported as not used
            a.fused_batchnorm = false; // compiled with the pool's
            a.first_conv_kernel = false;
            a.wgrad_kernel = false;
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
            "{{\"batch\": {batch}, \"seed\": {}, \"cuda_graph\": \"{}\", \"precision\": \"{}\", \"fused_pool\": {}, \"fused_batchnorm\": {}, \"first_conv_kernel\": {}, \"wgrad_kernel\": {}, \"median_ms\": {median:.4}, \"min_ms\": {:.4}, \
             \"steps\": {}, \"replays\": {}, \"capture_ms\": {:.3}, \"graph_nodes\": {}}}",
            a.seed,
            a.cuda_graph,
            a.precision,
            a.fused_pool,
            a.fused_batchnorm,
            a.first_conv_kernel,
            a.wgrad_kernel,
            times[0],
            times.len(),
            graphs.replays,
            graphs.last_capture_ms,
            graphs.last_graph_nodes,
        );
    }
    Ok(())
}
