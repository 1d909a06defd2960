//! The Candle face detector and landmark net reproduce face-api's original JavaScript networks.
//! `fixtures/faceapi_faces.json` was computed by face-api 1.7.15 itself (TinyFaceDetector at
//! input 416, score > 0.5, then FaceLandmark68Net) on the pure-JS tfjs CPU backend
//! (`tools/faceapi-reference/detect_reference.mjs`) from the images `support/face_inputs.rs`
//! builds. `tools/faceapi-reference/check.sh` recomputes it with face-api and runs this test on
//! the fresh file (`FACESIM_FACES_FIXTURE`).

#[path = "support/face_inputs.rs"]
mod face_inputs;

use std::collections::HashMap;

use candle_core::Device;
use facesim_server::faces::{DetectSettings, Face, FaceFinder};

#[derive(serde::Deserialize)]
struct Fixture {
    backend: String,
    detector: String,
    images: HashMap<String, Vec<Expected>>,
}

#[derive(serde::Deserialize)]
struct Expected {
    #[serde(rename = "box")]
    bbox: [f64; 4],
    score: f64,
    landmarks: Vec<[f64; 2]>,
}

fn corners(b: [f64; 4]) -> [f64; 4] {
    [b[0], b[1], b[0] + b[2], b[1] + b[3]]
}

fn worst_corner(face: &Face, want: &Expected) -> f64 {
    let got = corners([face.bbox.x, face.bbox.y, face.bbox.width, face.bbox.height]);
    got.iter().zip(corners(want.bbox)).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
}

#[test]
fn candle_detector_and_landmarks_match_faceapi() {
    let text = match std::env::var("FACESIM_FACES_FIXTURE") {
        Ok(path) => std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}")),
        Err(_) => include_str!("fixtures/faceapi_faces.json").to_string(),
    };
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    assert_eq!((fixture.backend.as_str(), fixture.detector.as_str()), ("cpu", "tiny"));
    let inputs = face_inputs::reference_inputs();
    assert!(inputs.len() >= 20, "at least 20 images ({})", inputs.len());
    assert_eq!(inputs.len(), fixture.images.len(), "the fixture covers the same images");

    let finder = FaceFinder::load(&Device::Cpu).unwrap();
    let (mut worst_box, mut worst_score, mut worst_point) = (0f64, 0f64, 0f64);
    let mut counts = HashMap::new();
    for (name, image) in &inputs {
        let want = &fixture.images[name];
        let got = finder
            .find_in_detector_order(image, DetectSettings { input_size: 416, ..DetectSettings::default() })
            .unwrap()
            .faces;
        assert_eq!(got.len(), want.len(), "{name}: {} faces found, face-api found {}", got.len(), want.len());
        counts.insert(name.as_str(), got.len());
        for w in want {
            // Pair each expected face with the found face whose box is nearest.
            let face = got.iter().min_by(|a, b| worst_corner(a, w).total_cmp(&worst_corner(b, w))).unwrap();
            let corner = worst_corner(face, w);
            let score = (f64::from(face.score) - w.score).abs();
            assert_eq!(face.landmarks.len(), 68);
            let point = face
                .landmarks
                .iter()
                .zip(&w.landmarks)
                .map(|(p, q)| (p.x - q[0]).abs().max((p.y - q[1]).abs()))
                .fold(0.0, f64::max);
            assert!(corner < 0.5, "{name}: a box corner is {corner:.3} px off");
            assert!(score < 1e-3, "{name}: score off by {score:.2e}");
            assert!(point < 0.5, "{name}: a landmark is {point:.3} px off");
            worst_box = worst_box.max(corner);
            worst_score = worst_score.max(score);
            worst_point = worst_point.max(point);
        }
    }
    println!(
        "{} images, {} faces: worst box corner {worst_box:.4} px, score {worst_score:.2e}, landmark {worst_point:.4} px",
        inputs.len(),
        counts.values().sum::<usize>()
    );
    // The set exercises what it is meant to.
    assert!(counts["mosaic_2x2"] >= 2, "several faces in one picture");
    assert!(["grey_320x200", "noise"].iter().all(|n| counts[n] == 0), "pictures without a face");
    assert!(counts["rotated_30"] >= 1 && counts["rotated_minus_30"] >= 1, "rotated faces are found");
    assert!(counts["border_left"] >= 1 && counts["small_face"] >= 1, "a face cut by the border and a small face");
}
