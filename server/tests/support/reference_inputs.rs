//! The inputs on which the Candle descriptor is compared with face-api's original: the first face
//! of each of the first 20 demo people (LFW), cropped exactly as an import crops it, plus an
//! all-black, an all-white and a noise image. Shared by the test and the example that writes
//! the inputs for the JavaScript reference.

use std::path::Path;

use facesim_server::dataset::{decode_limited, face_crop, DecodeLimits, FACE_SIZE};
use image::RgbImage;

pub fn reference_inputs(demo_dir: &Path) -> Vec<(String, RgbImage)> {
    let mut people: Vec<_> = std::fs::read_dir(demo_dir).unwrap().map(|e| e.unwrap().path()).collect();
    people.retain(|p| p.is_dir());
    people.sort();
    let mut out = Vec::new();
    for person in people.iter().take(20) {
        let mut files: Vec<_> = std::fs::read_dir(person).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let decoded = decode_limited(&std::fs::read(&files[0]).unwrap(), &DecodeLimits::default()).unwrap();
        out.push((person.file_name().unwrap().to_string_lossy().into_owned(), face_crop(&decoded.image)));
    }
    out.push(("black".into(), RgbImage::from_pixel(FACE_SIZE, FACE_SIZE, image::Rgb([0, 0, 0]))));
    out.push(("white".into(), RgbImage::from_pixel(FACE_SIZE, FACE_SIZE, image::Rgb([255, 255, 255]))));
    // A fixed linear congruential sequence, so the noise is the same everywhere.
    let mut state: u32 = 42;
    let noise = RgbImage::from_fn(FACE_SIZE, FACE_SIZE, |_, _| {
        let mut px = [0u8; 3];
        for v in &mut px {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *v = (state >> 24) as u8;
        }
        image::Rgb(px)
    });
    out.push(("noise".into(), noise));
    out
}
