//! Training steps end to end on toy data: GAML learns a toy task with Adam, a seed gives the same
//! start, and the CNN trains on images with momentum SGD.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::optim::Optimizer;
use super::Hyperparameters;
use crate::models::siamese::{Architecture, LossKind, Siamese};

/// Pairs of 128-d points around 12 centres: similar when they share a centre.
fn toy_pairs(n: usize, seed: u64) -> (Tensor, Tensor, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..12).map(|_| (0..128).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect();
    let point = |c: usize, rng: &mut ChaCha8Rng| -> Vec<f32> {
        centres[c].iter().map(|v| v + rng.random_range(-0.9f32..0.9)).collect()
    };
    let (mut a, mut b, mut y) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let c = rng.random_range(0..12);
        let same = i % 2 == 0;
        let other = if same { c } else { (c + 1 + rng.random_range(0..11)) % 12 };
        a.extend(point(c, &mut rng));
        b.extend(point(other, &mut rng));
        y.push(if same { 1f32 } else { 0.0 });
    }
    let d = &Device::Cpu;
    (
        Tensor::from_vec(a, (n, 128), d).unwrap(),
        Tensor::from_vec(b, (n, 128), d).unwrap(),
        Tensor::from_vec(y, n, d).unwrap(),
    )
}

fn auc(model: &Siamese, a: &Tensor, b: &Tensor, y: &Tensor) -> f64 {
    let d: Vec<f64> = model.distances(a, b).unwrap().to_vec1::<f32>().unwrap().into_iter().map(f64::from).collect();
    let same: Vec<bool> = y.to_vec1::<f32>().unwrap().into_iter().map(|v| v > 0.5).collect();
    facesim_metrics::roc_auc(&d, &same).unwrap()
}

#[test]
fn gaml_learns_a_toy_task_and_a_seed_gives_the_same_start() {
    let (a, b, y) = toy_pairs(256, 1);
    let (ta, tb, ty) = toy_pairs(128, 2);
    let device = Device::Cpu;
    let mut h = Hyperparameters::defaults(Architecture::SiameseGaml, LossKind::GeometryAware);
    h.loss.margin = 1.4;
    let model = Siamese::new(Architecture::SiameseGaml, LossKind::GeometryAware, 128, &device, 42).unwrap();
    let twin = Siamese::new(Architecture::SiameseGaml, LossKind::GeometryAware, 128, &device, 42).unwrap();
    let other = Siamese::new(Architecture::SiameseGaml, LossKind::GeometryAware, 128, &device, 43).unwrap();
    let start: Vec<f32> = model.distances(&ta, &tb).unwrap().to_vec1().unwrap();
    assert_eq!(start, twin.distances(&ta, &tb).unwrap().to_vec1::<f32>().unwrap());
    assert_ne!(start, other.distances(&ta, &tb).unwrap().to_vec1::<f32>().unwrap());

    let before = auc(&model, &ta, &tb, &ty);
    let mut optimizer = Optimizer::adam(model.vars(), 1e-4).unwrap();
    let first = model.loss(&a, &b, &y, &h.loss).unwrap().to_scalar::<f32>().unwrap();
    for _ in 0..6 {
        for k in 0..4 {
            let (xa, xb, yy) =
                (a.narrow(0, k * 64, 64).unwrap(), b.narrow(0, k * 64, 64).unwrap(), y.narrow(0, k * 64, 64).unwrap());
            optimizer.backward_step(&model.loss(&xa, &xb, &yy, &h.loss).unwrap()).unwrap();
        }
    }
    let last = model.loss(&a, &b, &y, &h.loss).unwrap().to_scalar::<f32>().unwrap();
    let after = auc(&model, &ta, &tb, &ty);
    assert!(last < first * 0.8, "training loss {first} -> {last}");
    assert!(after > 0.9 && after >= before - 0.02, "held-out AUC {before} -> {after}");
}

/// Both mining losses (labelled negatives; in-batch cross pairs as well) lower their loss and
/// separate held-out toy pairs with the kinship paper's settings.
#[test]
fn gaml_learns_the_toy_task_with_either_mining_loss() {
    let (a, b, y) = toy_pairs(256, 1);
    let (ta, tb, ty) = toy_pairs(128, 2);
    for kind in [LossKind::MiningContrastive, LossKind::MiningInBatch] {
        let h = Hyperparameters::defaults(Architecture::SiameseGaml, kind);
        assert_eq!((h.loss.alpha, h.loss.beta, h.loss.lambda, h.loss.epsilon), (0.2, 3.1, 1.5, 1.0));
        let model = Siamese::new(Architecture::SiameseGaml, kind, 128, &Device::Cpu, 42).unwrap();
        let mut optimizer = Optimizer::adam(model.vars(), 1e-4).unwrap();
        let first = model.loss(&a, &b, &y, &h.loss).unwrap().to_scalar::<f32>().unwrap();
        for _ in 0..6 {
            for k in 0..4 {
                let (xa, xb, yy) = (
                    a.narrow(0, k * 64, 64).unwrap(),
                    b.narrow(0, k * 64, 64).unwrap(),
                    y.narrow(0, k * 64, 64).unwrap(),
                );
                optimizer.backward_step(&model.loss(&xa, &xb, &yy, &h.loss).unwrap()).unwrap();
            }
        }
        let last = model.loss(&a, &b, &y, &h.loss).unwrap().to_scalar::<f32>().unwrap();
        let after = auc(&model, &ta, &tb, &ty);
        assert!(last < first, "{kind:?}: training loss {first} -> {last}");
        assert!(after > 0.9, "{kind:?}: held-out AUC {after}");
    }
}

#[test]
fn the_cnn_trains_on_images_with_momentum_sgd() {
    let device = Device::Cpu;
    let n = 4;
    let pixels = |phase: f64| -> Tensor {
        let v: Vec<f32> = (0..n * 3 * 128 * 128).map(|i| ((i as f64 * 0.001 + phase).sin() * 0.5) as f32).collect();
        Tensor::from_vec(v, (n, 3, 128, 128), &device).unwrap()
    };
    let (a, b) = (pixels(0.0), pixels(1.0));
    let y = Tensor::new(&[1f32, 0.0, 1.0, 0.0], &device).unwrap();
    let h = Hyperparameters::defaults(Architecture::SiameseCnn, LossKind::Contrastive);
    let model = Siamese::new(Architecture::SiameseCnn, LossKind::Contrastive, 0, &device, 7).unwrap();
    assert_eq!(model.embed(&a).unwrap().dims(), &[4, 400]);
    let mut optimizer = Optimizer::sgd(model.vars(), 0.001, 0.9);
    let first = model.loss(&a, &b, &y, &h.loss).unwrap().to_scalar::<f32>().unwrap();
    for _ in 0..4 {
        optimizer.backward_step(&model.loss(&a, &b, &y, &h.loss).unwrap()).unwrap();
    }
    let last = model.loss(&a, &b, &y, &h.loss).unwrap().to_scalar::<f32>().unwrap();
    assert!(last.is_finite() && last < first, "loss {first} -> {last}");
}

#[test]
fn hyperparameters_are_stored_as_one_flat_json_object_as_before() {
    // A record written before the loss settings had a struct of their own reads back the same.
    let stored = r#"{"epochs":40,"batch_size":100,"learning_rate":0.0001,"momentum":0.0,"optimizer":"Adam",
        "margin":0.55,"alpha":0.5,"beta":0.0,"lambda":0.0,"epsilon":0.0,"focal_gamma":2.0,"seed":3}"#;
    let h: Hyperparameters = serde_json::from_str(stored).unwrap();
    let mut expected = Hyperparameters::defaults(Architecture::SiameseGaml, LossKind::GeometryAware);
    (expected.epochs, expected.seed) = (40, 3);
    assert_eq!(h, expected);
    let written: serde_json::Value = serde_json::to_value(&h).unwrap();
    assert_eq!(written["margin"], 0.55, "flat, not nested under `loss`: {written}");
    assert!(written.get("loss").is_none());
}
