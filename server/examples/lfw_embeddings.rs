//! Embeds every LFW image with the pretrained descriptor, the way the server embeds the bundled
//! demo faces (centred 160x160 square, then the server's face crop), and writes the vectors for
//! benchmarks: `<out>.f32` (rows of 128 little-endian f32, people in name order, files in name
//! order) and `<out>.ids` (one person index per row, as text).
//!
//! cargo run --release -p facesim-server --example lfw_embeddings -- <lfw images dir> <out prefix>

use std::io::Write;

use candle_core::Device;
use facesim_server::dataset::face_crop;
use facesim_server::models::descriptor::Descriptor;

const CROP: u32 = 160;
const BATCH: usize = 32;

fn main() -> anyhow::Result<()> {
    facesim_server::cpu::park_idle_candle_threads();
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!("give the LFW images dir"))?);
    let out = args.next().ok_or_else(|| anyhow::anyhow!("give the output prefix"))?;
    let mut people: Vec<_> = std::fs::read_dir(&dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    // Stray files such as .DS_Store sit beside the people's folders.
    people.retain(|p| p.is_dir());
    people.sort();
    let mut files = Vec::new();
    for (person, path) in people.iter().enumerate() {
        let mut images: Vec<_> = std::fs::read_dir(path)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        images.retain(|f| f.extension().is_some_and(|e| e == "jpg"));
        images.sort();
        files.extend(images.into_iter().map(|f| (person, f)));
    }
    let descriptor = Descriptor::load(Device::Cpu)?;
    let mut vectors = std::io::BufWriter::new(std::fs::File::create(format!("{out}.f32"))?);
    let mut ids = std::io::BufWriter::new(std::fs::File::create(format!("{out}.ids"))?);
    let started = std::time::Instant::now();
    for (n, chunk) in files.chunks(BATCH).enumerate() {
        let faces = chunk
            .iter()
            .map(|(_, path)| {
                let image = image::open(path)?;
                let (x, y) = ((image.width() - CROP) / 2, (image.height() - CROP) / 2);
                Ok(face_crop(&image.crop_imm(x, y, CROP, CROP)))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let refs: Vec<_> = faces.iter().collect();
        for ((person, _), values) in chunk.iter().zip(descriptor.embed(&refs)?) {
            for v in values {
                vectors.write_all(&v.to_le_bytes())?;
            }
            writeln!(ids, "{person}")?;
        }
        if n % 40 == 0 {
            eprintln!("{} / {} images, {:.0} s", (n + 1) * BATCH, files.len(), started.elapsed().as_secs_f64());
        }
    }
    vectors.flush()?;
    ids.flush()?;
    eprintln!("{} images of {} people embedded", files.len(), people.len());
    Ok(())
}
