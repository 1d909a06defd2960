//! The images on which face detection and landmarks are compared with face-api's original
//! (`tools/faceapi-reference/detect_reference.mjs`), built the same way by the test and by the
//! example that writes them for the JavaScript side. The photos are full 250x250 LFW originals
//! (`server/tests/fixtures/faces/`, see its README); the rest is made from them here: several
//! faces in one picture, a face cut by the border, a face rotated 30°, a small face, images of
//! other sizes and shapes, and images without a face.

use std::path::Path;

use image::{imageops, Rgb, RgbImage};

fn photo(name: &str) -> RgbImage {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faces").join(name);
    image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

/// The photos, in order.
pub fn photo_names() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faces");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jpg"))
        .collect();
    names.sort();
    names
}

/// `image` turned by `degrees` (counter-clockwise) about its centre, bilinear, black outside.
pub fn rotated(image: &RgbImage, degrees: f64) -> RgbImage {
    let (w, h) = (f64::from(image.width()), f64::from(image.height()));
    let (cx, cy) = ((w - 1.0) / 2.0, (h - 1.0) / 2.0);
    let (sin, cos) = degrees.to_radians().sin_cos();
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let (dx, dy) = (f64::from(x) - cx, f64::from(y) - cy);
        let (sx, sy) = (cos * dx - sin * dy + cx, sin * dx + cos * dy + cy);
        let (l, t) = (sx.floor(), sy.floor());
        if l < 0.0 || t < 0.0 || l + 1.0 >= w || t + 1.0 >= h {
            return Rgb([0, 0, 0]);
        }
        let (fx, fy) = (sx - l, sy - t);
        let p = |x: f64, y: f64| image.get_pixel(x as u32, y as u32).0;
        let (a, b, c, d) = (p(l, t), p(l + 1.0, t), p(l, t + 1.0), p(l + 1.0, t + 1.0));
        Rgb(std::array::from_fn(|k| {
            let top = f64::from(a[k]) * (1.0 - fx) + f64::from(b[k]) * fx;
            let bottom = f64::from(c[k]) * (1.0 - fx) + f64::from(d[k]) * fx;
            (top * (1.0 - fy) + bottom * fy).round() as u8
        }))
    })
}

pub fn reference_inputs() -> Vec<(String, RgbImage)> {
    let names = photo_names();
    assert!(names.len() >= 14, "the LFW photos are in tests/fixtures/faces ({} found)", names.len());
    let photos: Vec<RgbImage> = names.iter().map(|n| photo(n)).collect();
    let mut out: Vec<(String, RgbImage)> =
        names.iter().zip(&photos).map(|(n, p)| (n.trim_end_matches(".jpg").to_string(), p.clone())).collect();

    // Several faces: four photos in a 2x2 mosaic (500x500), and two side by side (500x250).
    let mut mosaic = RgbImage::new(500, 500);
    for (k, p) in photos.iter().take(4).enumerate() {
        imageops::replace(&mut mosaic, p, 250 * (k as i64 % 2), 250 * (k as i64 / 2));
    }
    out.push(("mosaic_2x2".into(), mosaic));
    let mut pair = RgbImage::new(500, 250);
    imageops::replace(&mut pair, &photos[4], 0, 0);
    imageops::replace(&mut pair, &photos[5], 250, 0);
    out.push(("side_by_side".into(), pair));
    // A face cut by the left border, and one by the top (photos the detector finds when whole).
    out.push(("border_left".into(), imageops::crop_imm(&photos[2], 95, 30, 155, 200).to_image()));
    out.push(("border_top".into(), imageops::crop_imm(&photos[14], 20, 90, 210, 160).to_image()));
    // Rotated 30° each way.
    out.push(("rotated_30".into(), rotated(&photos[8], 30.0)));
    out.push(("rotated_minus_30".into(), rotated(&photos[13], -30.0)));
    // A small face: the photo shrunk to 100x100 (the face about 40 px) in a 300x300 grey frame.
    let mut frame = RgbImage::from_pixel(300, 300, Rgb([128, 128, 128]));
    let small = imageops::resize(&photos[10], 100, 100, imageops::FilterType::Triangle);
    imageops::replace(&mut frame, &small, 140, 60);
    out.push(("small_face".into(), frame));
    // A larger photo: upscaled to 600x600 (the detector shrinks it).
    out.push(("upscaled_600".into(), imageops::resize(&photos[11], 600, 600, imageops::FilterType::Triangle)));
    // No face: flat grey (non-square), noise, and a background corner of a photo.
    out.push(("grey_320x200".into(), RgbImage::from_pixel(320, 200, Rgb([128, 128, 128]))));
    let mut state: u32 = 7;
    out.push((
        "noise".into(),
        RgbImage::from_fn(256, 256, |_, _| {
            Rgb(std::array::from_fn(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            }))
        }),
    ));
    let corner = imageops::crop_imm(&photos[12], 0, 0, 60, 60).to_image();
    out.push(("background".into(), imageops::resize(&corner, 180, 180, imageops::FilterType::Triangle)));
    out
}
