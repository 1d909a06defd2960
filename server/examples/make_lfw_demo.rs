//! Builds the bundled demo faces from Labeled Faces in the Wild (deep-funneled): every person
//! with at least 5 images, their first 5 images in name order, each centre-cropped to 160x160
//! around the face (deep funneling centres it) and saved as JPEG quality 90.
//!
//! cargo run -p facesim-server --example make_lfw_demo -- ../shared/datasets/lfw datasets/lfw-demo

use std::path::PathBuf;

const MIN_IMAGES: usize = 5;
const PER_PERSON: usize = 5;
const CROP: u32 = 160;
const QUALITY: u8 = 90;

fn main() -> anyhow::Result<()> {
    facesim_server::cpu::park_idle_candle_threads();
    let mut args = std::env::args().skip(1);
    let lfw = PathBuf::from(args.next().unwrap_or_else(|| "../shared/datasets/lfw".into()));
    let out = PathBuf::from(args.next().unwrap_or_else(|| "datasets/lfw-demo".into()));
    let images = lfw.join("images_deepfunneled");
    let mut people: Vec<_> = std::fs::read_dir(&images)?.collect::<Result<_, _>>()?;
    people.retain(|e| e.path().is_dir());
    people.sort_by_key(|e| e.file_name());
    let (mut persons, mut files) = (0, 0);
    for person in people {
        let mut faces: Vec<_> = std::fs::read_dir(person.path())?.collect::<Result<_, _>>()?;
        if faces.len() < MIN_IMAGES {
            continue;
        }
        faces.sort_by_key(|e| e.file_name());
        let dir = out.join(person.file_name());
        std::fs::create_dir_all(&dir)?;
        for face in faces.iter().take(PER_PERSON) {
            let img = image::open(face.path())?;
            let x = (img.width() - CROP) / 2;
            let y = (img.height() - CROP) / 2;
            let crop = img.crop_imm(x, y, CROP, CROP).to_rgb8();
            let mut file = std::io::BufWriter::new(std::fs::File::create(dir.join(face.file_name()))?);
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut file, QUALITY).encode_image(&crop)?;
            files += 1;
        }
        persons += 1;
    }
    println!("wrote {files} images of {persons} people to {}", out.display());
    Ok(())
}
