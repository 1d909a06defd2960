//! One training step (both towers forward, loss, backward, update) of a facesim model, timed:
//! the Candle side of `bench/train_step.sh`. Inputs are made from sines (no data set needed);
//! the same shapes, batch and thread count run in PyTorch in `bench/train_step_torch.py`.
//!
//! Usage: bench_train_step <cnn|gaml> <batch> <steps> [gaml input dim]
//! Prints one JSON line: {"impl", "model", "batch", "threads", "step_ms", "pairs_per_s"}.

use std::time::Instant;

// The server's allocator: training allocates and frees buffers of up to a gigabyte each step.
facesim_server::use_jemalloc!();

use candle_core::{Device, Tensor};
use facesim_server::models::siamese::{Architecture, LossKind, Siamese};
use facesim_server::training::optim::Optimizer;
use facesim_server::training::Hyperparameters;

fn inputs(shape: &[usize], phase: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| ((i as f64 * 0.0013 + phase).sin() * 0.5) as f32).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).expect("shape matches")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    facesim_server::cpu::park_idle_candle_threads();
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_train_step <cnn|gaml> <batch> <steps> [gaml input dim]";
    let model = args.get(1).ok_or(usage)?.as_str();
    let batch: usize = args.get(2).ok_or(usage)?.parse()?;
    let steps: usize = args.get(3).ok_or(usage)?.parse()?;
    let dim: usize = args.get(4).map(|d| d.parse()).transpose()?.unwrap_or(128);
    let (architecture, loss, shape) = match model {
        "cnn" => (Architecture::SiameseCnn, LossKind::Contrastive, vec![batch, 3, 128, 128]),
        "gaml" => (Architecture::SiameseGaml, LossKind::GeometryAware, vec![batch, dim]),
        _ => return Err(usage.into()),
    };
    let device = Device::Cpu;
    let net = Siamese::new(architecture, loss, dim, &device, 1)?;
    let h = Hyperparameters::defaults(architecture, loss);
    let mut optimizer = match architecture {
        Architecture::SiameseCnn => Optimizer::sgd(net.vars(), h.learning_rate, h.momentum),
        Architecture::SiameseGaml => Optimizer::adam(net.vars(), h.learning_rate)?,
    };
    let (a, b) = (inputs(&shape, 0.0), inputs(&shape, 1.0));
    let y = Tensor::from_vec((0..batch).map(|i| (i % 2) as f32).collect::<Vec<_>>(), batch, &device)?;
    // One warm-up step, then the timed ones.
    optimizer.backward_step(&net.loss(&a, &b, &y, &h.loss)?)?;
    let started = Instant::now();
    for _ in 0..steps {
        optimizer.backward_step(&net.loss(&a, &b, &y, &h.loss)?)?;
    }
    let step = started.elapsed().as_secs_f64() / steps as f64;
    let label = if model == "gaml" { format!("gaml d={dim}") } else { "cnn".to_string() };
    println!(
        "{{\"impl\": \"facesim (candle 0.11.1)\", \"model\": \"{label}\", \"batch\": {batch}, \"threads\": {}, \"step_ms\": {:.2}, \"pairs_per_s\": {:.1}}}",
        candle_core::utils::get_num_threads(),
        step * 1000.0,
        batch as f64 / step
    );
    Ok(())
}
