//! B2-PT-03: channels-last applied once at the network entry (what the host does)
//! against converted/checked before every block, and plain contiguous NCHW for
//! reference. Forward and backward of the default host, batch 32.

use criterion::{criterion_group, criterion_main, Criterion};
use esper_runtime::host::{to_channels_last, CnnHost, CnnHostConfig, MemoryFormat};
use std::time::Duration;
use tch::{nn, Device, Kind, Tensor};

fn bench(c: &mut Criterion) {
    tch::manual_seed(0);
    let x = Tensor::randn([32, 3, 32, 32], (Kind::Float, Device::Cpu));
    let labels = Tensor::randint(10, [32], (Kind::Int64, Device::Cpu));
    let mut group = c.benchmark_group("memory_format");
    group.sample_size(20).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(6));
    for format in [MemoryFormat::ChannelsLast, MemoryFormat::Contiguous] {
        let vs = nn::VarStore::new(Device::Cpu);
        let host = CnnHost::new(&vs.root(), CnnHostConfig { memory_format: format, ..Default::default() }).unwrap();
        let name = match format {
            MemoryFormat::ChannelsLast => "channels_last_once_at_entry",
            MemoryFormat::Contiguous => "contiguous",
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                host.forward(&x, true).cross_entropy_for_logits(&labels).backward();
            })
        });
        if format == MemoryFormat::ChannelsLast {
            group.bench_function("channels_last_per_block", |b| {
                b.iter(|| {
                    let mut h = x.shallow_clone();
                    for i in 0..host.num_ops() {
                        h = host.run_segment(host.op_segment(i), &to_channels_last(&h), true);
                    }
                    h.cross_entropy_for_logits(&labels).backward();
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
