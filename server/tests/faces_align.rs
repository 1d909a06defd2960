//! The alignment reproduces dlib's face chips. `fixtures/dlib_chips/` holds, for LFW photos of
//! `fixtures/faces/`, the 68 landmarks dlib's own shape predictor found and the 150x150 chip
//! `dlib.get_face_chip(image, shape, 150, 0.25)` cut from them
//! (`tools/dlib-reference/chips.py`); the same landmarks through `faces::align` must give the
//! same pixels.

use std::collections::BTreeMap;
use std::path::Path;

use facesim_server::faces::{align, Point, CHIP_PADDING, CHIP_SIZE};

#[test]
fn chips_match_dlibs_get_face_chip() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let landmarks: BTreeMap<String, Vec<[f64; 2]>> =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("dlib_chips/landmarks.json")).unwrap()).unwrap();
    assert!(landmarks.len() >= 8, "the reference chips are there ({})", landmarks.len());
    let (mut worst, mut total, mut count) = (0u8, 0u64, 0u64);
    for (name, points) in &landmarks {
        let photo = image::open(fixtures.join(format!("faces/{name}.jpg"))).unwrap().to_rgb8();
        let want = image::open(fixtures.join(format!("dlib_chips/{name}.png"))).unwrap().to_rgb8();
        let points: Vec<Point> = points.iter().map(|p| Point { x: p[0], y: p[1] }).collect();
        let got = align::extract_chip(&photo, &points, CHIP_SIZE, CHIP_PADDING).unwrap();
        assert_eq!(got.dimensions(), want.dimensions());
        let mut off = 0u64;
        for (a, b) in got.as_raw().iter().zip(want.as_raw()) {
            let d = a.abs_diff(*b);
            worst = worst.max(d);
            total += u64::from(d);
            off += u64::from(d > 0);
            count += 1;
        }
        println!("{name}: {off} of {} values differ", got.as_raw().len());
    }
    let mean = total as f64 / count as f64;
    println!("{} chips: largest difference {worst}/255, mean {mean:.4}", landmarks.len());
    assert!(worst <= 1, "a chip value is {worst}/255 off dlib's");
    assert!(mean < 0.01, "mean difference {mean:.4}/255");
}
