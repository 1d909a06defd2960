//! The Candle network loaded from dlib's own full-precision weights
//! (`models/dlib/dlib_face_recognition_resnet_model_v1.dat`, read by
//! `models::descriptor::dlib_dat`) reproduces dlib's C++ `compute_face_descriptor`. The reference
//! vectors in `fixtures/dlib_descriptors.json` were computed by dlib-bin 20.0.1 on the same 23
//! inputs as the face-api reference (`bench/descriptor.sh` writes them:
//! `python3 bench/descriptor_dlib.py INPUTS SECONDS OUT.json` on the inputs of the
//! `descriptor_inputs` example); `tools/faceapi-reference/check.sh` recomputes them with dlib and
//! runs this test on the fresh file (`FACESIM_DLIB_DESCRIPTOR_FIXTURE`).

#[path = "support/reference_inputs.rs"]
mod reference_inputs;

use std::collections::HashMap;
use std::path::Path;

use candle_core::Device;
use facesim_server::models::descriptor::{Descriptor, DescriptorError, DIM};

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dat() -> Vec<u8> {
    std::fs::read(root().join("models/dlib/dlib_face_recognition_resnet_model_v1.dat")).unwrap()
}

#[test]
fn dlib_weights_reproduce_dlib_within_1e_4() {
    // `tools/faceapi-reference/check.sh` (CI) passes vectors freshly computed by dlib.
    let text = match std::env::var("FACESIM_DLIB_DESCRIPTOR_FIXTURE") {
        Ok(path) => std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}")),
        Err(_) => include_str!("fixtures/dlib_descriptors.json").to_string(),
    };
    let fixture: HashMap<String, Vec<f32>> = serde_json::from_str(&text).unwrap();
    let inputs = reference_inputs::reference_inputs(&root().join("datasets/lfw-demo"));
    assert_eq!(inputs.len(), 23, "20 faces, black, white, noise");
    let descriptor = Descriptor::from_dlib_dat(&dat(), Device::Cpu).unwrap();
    let faces: Vec<_> = inputs.iter().map(|(_, img)| img).collect();
    let mut batched = descriptor.embed(&faces[..7]).unwrap();
    batched.extend(descriptor.embed(&faces[7..]).unwrap());
    let single: Vec<Vec<f32>> = faces.iter().map(|f| descriptor.embed(&[f]).unwrap().remove(0)).collect();
    let mut worst = 0f32;
    for ((name, _), got) in inputs.iter().zip(&batched).chain(inputs.iter().zip(&single)) {
        let want = &fixture[name];
        assert_eq!((got.len(), want.len()), (DIM, DIM));
        let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-4, "{name}: max abs difference {diff}");
        worst = worst.max(diff);
        assert!(got.iter().map(|v| v * v).sum::<f32>().sqrt() > 0.1, "{name}");
    }
    println!("max abs difference from dlib over {} descriptors, batched and single: {worst:e}", inputs.len());
}

#[test]
fn damaged_dlib_files_are_refused_with_a_reason() {
    let bytes = dat();
    let cases: [(&str, &[u8]); 3] = [
        ("empty", &[]),
        ("cut in the middle", &bytes[..bytes.len() / 2]),
        ("a face-api weight file", include_bytes!("../../models/face-api/face_recognition_model.bin")),
    ];
    for (what, bytes) in cases {
        match Descriptor::from_dlib_dat(bytes, Device::Cpu) {
            Err(DescriptorError::Weights(reason)) => {
                assert!(reason.starts_with("dlib model file:"), "{what}: {reason}")
            }
            Err(other) => panic!("{what}: {other}"),
            Ok(_) => panic!("{what}: loaded"),
        }
    }
}
