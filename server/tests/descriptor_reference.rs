//! The Candle descriptor reproduces face-api's original JavaScript network. The reference
//! vectors in `fixtures/faceapi_descriptors.json` were computed by face-api 1.7.15 itself on
//! the pure-JS tfjs CPU backend (`tools/faceapi-reference/reference.mjs`) from the same input
//! tensors that `support/reference_inputs.rs` builds here. `tools/faceapi-reference/check.sh`
//! recomputes them with face-api and runs this test on the fresh file
//! (`FACESIM_DESCRIPTOR_FIXTURE`).

#[path = "support/reference_inputs.rs"]
mod reference_inputs;

use std::collections::HashMap;
use std::path::Path;

use candle_core::Device;
use facesim_server::models::descriptor::{Descriptor, DIM};
use facesim_server::vectors::euclidean;

#[derive(serde::Deserialize)]
struct Fixture {
    backend: String,
    descriptors: HashMap<String, Vec<f32>>,
}

fn demo_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/lfw-demo")
}

#[test]
fn candle_port_matches_faceapi_within_1e_3() {
    let text = match std::env::var("FACESIM_DESCRIPTOR_FIXTURE") {
        Ok(path) => std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}")),
        Err(_) => include_str!("fixtures/faceapi_descriptors.json").to_string(),
    };
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    assert_eq!(fixture.backend, "cpu");
    let inputs = reference_inputs::reference_inputs(&demo_dir());
    assert_eq!(inputs.len(), 23, "20 faces, black, white, noise");
    let descriptor = Descriptor::load(Device::Cpu).unwrap();
    let faces: Vec<_> = inputs.iter().map(|(_, img)| img).collect();
    // Batches take candle's convolution, single images a path of their own: check both.
    let mut batched = descriptor.embed(&faces[..7]).unwrap();
    batched.extend(descriptor.embed(&faces[7..]).unwrap());
    let single: Vec<Vec<f32>> = faces.iter().map(|f| descriptor.embed(&[f]).unwrap().remove(0)).collect();
    let mut worst = 0f32;
    let checks = inputs.iter().zip(&batched).chain(inputs.iter().zip(&single));
    for ((name, _), got) in checks {
        let want = &fixture.descriptors[name];
        assert_eq!((got.len(), want.len()), (DIM, DIM));
        let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-3, "{name}: max abs difference {diff}");
        worst = worst.max(diff);
        // A real descriptor, not zeros.
        assert!(got.iter().map(|v| v * v).sum::<f32>().sqrt() > 0.1, "{name}");
    }
    println!("max abs difference over {} descriptors, batched and single: {worst:e}", inputs.len());
}

#[test]
fn same_person_is_nearer_than_other_people() {
    let descriptor = Descriptor::load(Device::Cpu).unwrap();
    let load = |person: &str, n: u32| {
        let path = demo_dir().join(person).join(format!("{person}_{n:04}.jpg"));
        let bytes = std::fs::read(&path).unwrap();
        let decoded = facesim_server::dataset::decode_limited(&bytes, &Default::default()).unwrap();
        facesim_server::dataset::face_crop(&decoded.image)
    };
    let (a1, a2, b1) = (load("Colin_Powell", 1), load("Colin_Powell", 2), load("Serena_Williams", 1));
    let d = descriptor.embed(&[&a1, &a2, &b1]).unwrap();
    let same = euclidean(&d[0], &d[1]);
    let other = euclidean(&d[0], &d[2]);
    assert!(same < 0.6, "two photos of one person: {same}");
    assert!(other > same + 0.1, "different people {other} vs same person {same}");
}
