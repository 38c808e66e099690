//! A learnability check of the synthetic set: the default job's host shape (3 blocks of
//! conv3x3-BN-ReLU-maxpool, 16/32/64 channels, global average pool, linear) trained with
//! SGD (lr 0.05, momentum 0.9, weight decay 5e-4, batch 64), printing accuracy per epoch.
//! Minutes on 2 CPU cores, so ignored by default:
//!
//! ```text
//! cargo test -p esper-runtime --lib data::learnability -- --ignored --nocapture
//! ```
//!
//! Environment knobs: `ESPER_CHECK_EPOCHS` (default 12), `ESPER_CHECK_NOISE`,
//! `ESPER_CHECK_TRAIN` (train size, default 5000).

use super::{epoch_seed, synthetic, DEFAULT_SYNTHETIC_NOISE};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
#[ignore = "trains a CNN for minutes; run on demand"]
fn small_cnn_learns_the_synthetic_set() {
    tch::manual_seed(0);
    let epochs: u64 = env("ESPER_CHECK_EPOCHS", 12);
    let noise: f32 = env("ESPER_CHECK_NOISE", DEFAULT_SYNTHETIC_NOISE);
    let train_size: usize = env("ESPER_CHECK_TRAIN", 5000);
    let started = std::time::Instant::now();
    let data = synthetic(train_size, 1000, 0, noise).unwrap();
    eprintln!("generated in {:?}: {}", started.elapsed(), data.source);
    let vs = nn::VarStore::new(Device::Cpu);
    let p = vs.root();
    let conv = nn::ConvConfig { padding: 1, bias: false, ..Default::default() };
    let mut net = nn::seq_t();
    let mut c_in = 3;
    for (i, c) in [16, 32, 64].into_iter().enumerate() {
        net = net
            .add(nn::conv2d(&p / format!("c{i}"), c_in, c, 3, conv))
            .add(nn::batch_norm2d(&p / format!("b{i}"), c, Default::default()))
            .add_fn(|x| x.relu().max_pool2d_default(2));
        c_in = c;
    }
    let net = net.add_fn(|x| x.mean_dim([2i64, 3].as_slice(), false, Kind::Float)).add(nn::linear(
        &p / "head",
        64,
        10,
        Default::default(),
    ));
    let mut opt = nn::Sgd { momentum: 0.9, wd: 5e-4, ..Default::default() }.build(&vs, 0.05).unwrap();
    let mut final_val = 0.0;
    for epoch in 0..epochs {
        let t = std::time::Instant::now();
        let (mut correct, mut seen) = (0i64, 0i64);
        for (x, y) in data.train.batches(64, Some(epoch_seed(0, epoch)), Device::Cpu) {
            let logits = net.forward_t(&x, true);
            opt.backward_step(&logits.cross_entropy_for_logits(&y));
            correct += logits.argmax(1, false).eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
            seen += y.size()[0];
        }
        let train_acc = correct as f64 / seen as f64;
        let (mut vc, mut vn) = (0i64, 0i64);
        tch::no_grad(|| {
            for (x, y) in data.val.batches(256, None, Device::Cpu) {
                vc += net.forward_t(&x, false).argmax(1, false).eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
                vn += y.size()[0];
            }
        });
        final_val = vc as f64 / vn as f64;
        eprintln!("epoch {:2}: train {:.3} val {:.3} ({:.1?})", epoch + 1, train_acc, final_val, t.elapsed());
    }
    assert!(final_val > 0.5, "validation accuracy {final_val}");
}
