//! The Candle age and gender net reproduces face-api's AgeGenderNet. `fixtures/faceapi_traits.json`
//! was computed by face-api 1.7.15 itself on the pure-JS tfjs CPU backend
//! (`tools/faceapi-reference/traits_reference.mjs`) from the images `support/face_inputs.rs`
//! builds (each whole picture is the net's input); `tools/faceapi-reference/check.sh` recomputes
//! it and runs this test on the fresh file (`FACESIM_TRAITS_FIXTURE`).

#[path = "support/face_inputs.rs"]
mod face_inputs;

use std::collections::HashMap;

use candle_core::Device;
use facesim_server::faces::FaceFinder;

#[derive(serde::Deserialize)]
struct Fixture {
    backend: String,
    images: HashMap<String, Expected>,
}

#[derive(serde::Deserialize)]
struct Expected {
    age: f64,
    male_probability: f64,
}

#[test]
fn candle_age_and_gender_match_faceapi() {
    let text = match std::env::var("FACESIM_TRAITS_FIXTURE") {
        Ok(path) => std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}")),
        Err(_) => include_str!("fixtures/faceapi_traits.json").to_string(),
    };
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    assert_eq!(fixture.backend, "cpu");
    let inputs = face_inputs::reference_inputs();
    assert!(inputs.len() >= 20, "at least 20 images ({})", inputs.len());
    assert_eq!(inputs.len(), fixture.images.len(), "the fixture covers the same images");

    let finder = FaceFinder::load(&Device::Cpu).unwrap();
    let (mut worst_age, mut worst_male) = (0f64, 0f64);
    let mut ages = Vec::new();
    for (name, image) in &inputs {
        let want = &fixture.images[name];
        let got = finder.traits(image).unwrap();
        let age = (f64::from(got.age) - want.age).abs();
        let male = (f64::from(got.male_probability) - want.male_probability).abs();
        assert!(age < 0.01, "{name}: age {} vs face-api's {}", got.age, want.age);
        assert!(male < 1e-3, "{name}: P(male) {} vs face-api's {}", got.male_probability, want.male_probability);
        worst_age = worst_age.max(age);
        worst_male = worst_male.max(male);
        ages.push(got.age);
    }
    println!("{} images: worst age {worst_age:.2e} years, P(male) {worst_male:.2e}", inputs.len());
    // The inputs give the net something to tell apart: not one answer for every picture.
    let spread = ages.iter().copied().fold(f32::MIN, f32::max) - ages.iter().copied().fold(f32::MAX, f32::min);
    assert!(spread > 10.0, "estimated ages spread over {spread} years only");
}
