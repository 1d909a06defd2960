//! Descriptor throughput of the Candle port on the CPU: images per second at each batch size,
//! over the reference inputs written by the `descriptor_inputs` example, plus peak memory.
//! Prints one JSON line per batch size; `bench/descriptor.sh` runs it beside dlib and face-api.
//!
//! cargo run --release -p facesim-server --example bench_descriptor -- <inputs-dir> [seconds]

#[path = "support/peak_rss.rs"]
mod peak_rss;

use peak_rss::peak_rss_mib;
use std::time::Instant;

use candle_core::Device;
use facesim_server::models::descriptor::Descriptor;
use image::RgbImage;

fn main() -> anyhow::Result<()> {
    facesim_server::cpu::park_idle_candle_threads();
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "/tmp/descriptor-inputs".into()));
    let seconds: f64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10.0);
    let names: Vec<String> = serde_json::from_str(&std::fs::read_to_string(dir.join("index.json"))?)?;
    let faces: Vec<RgbImage> = names
        .iter()
        .map(|n| {
            let raw = std::fs::read(dir.join(format!("{n}.rgb")))?;
            RgbImage::from_raw(150, 150, raw).ok_or_else(|| anyhow::anyhow!("{n}: not 150x150x3"))
        })
        .collect::<anyhow::Result<_>>()?;
    let descriptor = Descriptor::load(Device::Cpu)?;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    for batch in [1usize, 32] {
        let inputs: Vec<&RgbImage> = (0..batch).map(|i| &faces[i % faces.len()]).collect();
        descriptor.embed(&inputs)?; // warm-up
        let started = Instant::now();
        let mut images = 0usize;
        while started.elapsed().as_secs_f64() < seconds {
            descriptor.embed(&inputs)?;
            images += batch;
        }
        let rate = images as f64 / started.elapsed().as_secs_f64();
        println!(
            "{{\"impl\":\"facesim (candle 0.11.1, cpu)\",\"batch\":{batch},\"images_per_s\":{rate:.2},\"threads\":{threads},\"peak_rss_mib\":{:.0}}}",
            peak_rss_mib()
        );
    }
    Ok(())
}
