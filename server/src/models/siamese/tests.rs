//! Gradients of every layer and loss used in training, checked against PyTorch.
//!
//! `tests/python/gradients.py` builds the same inputs from sines (no shared random generator
//! needed) and prints, for each gradient g, Σ g[i]·sin(0.11 i + 0.3) and Σ |g[i]|; those printed
//! values are the constants below (PyTorch 2.15, float64). Any wrong element of a gradient moves
//! the weighted sum, and a wrong scale moves both.

use candle_core::{Device, Module, Tensor, Var};

use super::nets::{self, Conv, Linear};
use super::{conv, loss};

fn make(shape: &[usize], a: f64, b: f64, scale: f64) -> Var {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| (scale * (a * i as f64 + b).sin()) as f32).collect();
    Var::from_tensor(&Tensor::from_vec(values, shape, &Device::Cpu).unwrap()).unwrap()
}

fn weights(n: usize, a: f64) -> Tensor {
    Tensor::from_vec((0..n).map(|i| (a * i as f64).cos() as f32).collect::<Vec<_>>(), n, &Device::Cpu).unwrap()
}

/// Checks a gradient's two checksums against PyTorch's.
fn check(name: &str, g: &Tensor, weighted: f64, abs: f64) {
    let flat: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
    let w: f64 = flat.iter().enumerate().map(|(i, &v)| f64::from(v) * (0.11 * i as f64 + 0.3).sin()).sum();
    let a: f64 = flat.iter().map(|&v| f64::from(v).abs()).sum();
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-4 * y.abs().max(1.0);
    assert!(close(w, weighted) && close(a, abs), "{name}: weighted {w} (torch {weighted}), abs {a} (torch {abs})");
}

/// Two conv + ReLU + pool blocks (9x9 stride 2, then 5x5) on a 2x3x16x16 input, run by
/// `blocks` (which gets the input and both layers and returns (2, 5, 2, 2) channels-first);
/// every gradient is checked against PyTorch's.
fn check_two_blocks_against_pytorch(blocks: impl Fn(&Tensor, &Conv, &Conv) -> Tensor) {
    let x = make(&[2, 3, 16, 16], 0.37, 0.1, 1.0);
    let (w1, b1) = (make(&[4, 3, 9, 9], 0.23, 0.5, 0.05), make(&[4], 0.9, 0.2, 0.1));
    let (w2, b2) = (make(&[5, 4, 5, 5], 0.19, 0.7, 0.08), make(&[5], 1.3, 0.4, 0.1));
    let c1 = Conv::from_tensors(w1.as_tensor().clone(), b1.as_tensor().clone(), 2).unwrap();
    let c2 = Conv::from_tensors(w2.as_tensor().clone(), b2.as_tensor().clone(), 1).unwrap();
    let h = blocks(x.as_tensor(), &c1, &c2);
    assert_eq!(h.dims(), &[2, 5, 2, 2]);
    let out = (h.flatten_all().unwrap() * weights(40, 0.7)).unwrap().sum_all().unwrap();
    let grads = out.backward().unwrap();
    check("conv x", grads.get(x.as_tensor()).unwrap(), -0.41063863433688896, 6.971927327549485);
    check("conv w1", grads.get(w1.as_tensor()).unwrap(), -3.022566522654581, 162.41560172719147);
    check("conv b1", grads.get(b1.as_tensor()).unwrap(), 0.12726363486550368, 1.7117445233057111);
    check("conv w2", grads.get(w2.as_tensor()).unwrap(), -3.9886987819503625, 151.48022872475048);
    check("conv b2", grads.get(b2.as_tensor()).unwrap(), 0.9902674387548004, 5.870911254736474);
}

#[test]
fn conv_relu_pool_gradients_match_pytorch() {
    check_two_blocks_against_pytorch(|x, c1, c2| {
        let h = conv::max_pool_2x2(&c1.forward(x).unwrap().relu().unwrap()).unwrap();
        conv::max_pool_2x2(&c2.forward(&h).unwrap().relu().unwrap()).unwrap()
    });
}

#[test]
fn channels_last_conv_blocks_match_pytorch_gradients() {
    // The CPU's channels-last path: im2col + matrix product, fused ReLU and pool, col2im for
    // the input gradient.
    check_two_blocks_against_pytorch(|x, c1, c2| {
        let h = c1.block_channels_last(&x.permute((0, 2, 3, 1)).unwrap()).unwrap();
        c2.block_channels_last(&h).unwrap().permute((0, 3, 1, 2)).unwrap()
    });
}

#[test]
fn the_cpu_cnn_tower_is_the_same_function_as_the_channels_first_one() {
    let vars = candle_nn::VarMap::new();
    let tower = nets::CnnTower::new(&mut nets::Builder::new(&vars, &Device::Cpu, 3)).unwrap();
    // An input without exactly tied maxima in any pooling window: on a tie the channels-first
    // path (a maximum's gradient mask) credits every tied value, PyTorch and the fused pool
    // only the first, so smooth inputs (ties) would differ by design.
    let x = make(&[2, 3, 128, 128], 0.37, 0.4, 0.5);
    let probe = weights(2 * 400, 0.3).reshape((2, 400)).unwrap();
    let run = |out: Tensor| {
        let grads = (out.clone() * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let mut named: Vec<(String, Tensor)> = vars
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(name, var)| (name.clone(), grads.get(var.as_tensor()).expect("every weight has a gradient").clone()))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        (out, named)
    };
    let (fast, fast_grads) = run(tower.forward(x.as_tensor()).unwrap());
    let (reference, reference_grads) = run(tower.forward_channels_first(x.as_tensor()).unwrap());
    let close = |a: &Tensor, b: &Tensor, what: &str| {
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{what}: a gradient that can be compared");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= 1e-4 * scale, "{what}[{i}]: {x} vs {y} (scale {scale})");
        }
    };
    close(&fast, &reference, "embeddings");
    assert_eq!(fast_grads.len(), 14, "6 convolutions and the FC layer, weight and bias each");
    for ((name, a), (_, b)) in fast_grads.iter().zip(&reference_grads) {
        close(a, b, name);
    }
}

#[test]
fn candle_max_pool_gradient_is_the_reason_for_the_reshape_pool() {
    // One 2x2 window with a single maximum: the whole gradient belongs to it. The reshape pool
    // gives 1; candle 0.11's `max_pool2d` gave 0.25 when this was written.
    let x = Var::from_tensor(&Tensor::new(&[[[[1f32, 4.0], [2.0, 3.0]]]], &Device::Cpu).unwrap()).unwrap();
    let grads = conv::max_pool_2x2(x.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    let g: Vec<f32> = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(g, vec![0.0, 1.0, 0.0, 0.0]);
}

#[test]
fn tanh_fc_gradients_match_pytorch() {
    let x = make(&[4, 6], 0.41, 0.3, 1.0);
    let (w1, b1) = (make(&[5, 6], 0.29, 0.1, 0.4), make(&[5], 0.8, 0.6, 0.1));
    let (w2, b2) = (make(&[3, 5], 0.31, 0.9, 0.4), make(&[3], 0.5, 0.2, 0.1));
    let l1 = Linear::from_tensors(w1.as_tensor().clone(), b1.as_tensor().clone());
    let l2 = Linear::from_tensors(w2.as_tensor().clone(), b2.as_tensor().clone());
    let y = l2.forward(&l1.forward(x.as_tensor()).unwrap().tanh().unwrap()).unwrap().tanh().unwrap();
    let out = (y.flatten_all().unwrap() * weights(12, 0.7)).unwrap().sum_all().unwrap();
    let grads = out.backward().unwrap();
    check("fc x", grads.get(x.as_tensor()).unwrap(), -0.40846287422408933, 1.3714178793663705);
    check("fc w1", grads.get(w1.as_tensor()).unwrap(), 3.91375698533727, 9.896398873381568);
    check("fc b2", grads.get(b2.as_tensor()).unwrap(), 0.6627418775357604, 1.8125600476519743);
}

fn targets() -> Tensor {
    Tensor::new(&[1f32, 0.0, 1.0, 0.0, 0.0, 1.0], &Device::Cpu).unwrap()
}

fn features() -> (Var, Var) {
    (make(&[6, 5], 0.53, 0.2, 0.6), make(&[6, 5], 0.47, 1.1, 0.6))
}

fn scalar(t: &Tensor) -> f64 {
    f64::from(t.to_scalar::<f32>().unwrap())
}

#[test]
fn contrastive_and_geometry_aware_losses_match_pytorch() {
    let (fa, fb) = features();
    let d = nets::euclidean(fa.as_tensor(), fb.as_tensor()).unwrap();
    let l = loss::contrastive(&d, &targets(), 2.0).unwrap();
    assert!((scalar(&l) - 0.7377195839482183).abs() < 1e-5);
    check(
        "contrastive fa",
        l.backward().unwrap().get(fa.as_tensor()).unwrap(),
        0.02104968967521015,
        1.9715115384610984,
    );

    let (fa, fb) = features();
    let input_a = ((fa.as_tensor().detach() * 1.7).unwrap() + 0.1).unwrap();
    let input_b = ((fb.as_tensor().detach() * 1.7).unwrap() - 0.1).unwrap();
    let d0 = nets::euclidean(&nets::l2_normalize(&input_a).unwrap(), &nets::l2_normalize(&input_b).unwrap()).unwrap();
    let d = nets::euclidean(&nets::l2_normalize(fa.as_tensor()).unwrap(), &nets::l2_normalize(fb.as_tensor()).unwrap())
        .unwrap();
    let l = loss::geometry_aware(&d, &d0, &targets(), 0.5, 0.55).unwrap();
    assert!((scalar(&l) - 0.2985793530196606).abs() < 1e-5);
    check("geometry fa", l.backward().unwrap().get(fa.as_tensor()).unwrap(), -0.3494807857242106, 3.712149467407027);
}

#[test]
fn head_losses_match_pytorch() {
    let logits = make(&[6], 0.9, 0.3, 2.0);
    let l = loss::bce(logits.as_tensor(), &targets()).unwrap();
    assert!((scalar(&l) - 0.9670510824875086).abs() < 1e-5);
    check("bce", l.backward().unwrap().get(logits.as_tensor()).unwrap(), -0.0040828657373480765, 0.5041710211334315);
    let logits = make(&[6], 0.9, 0.3, 2.0);
    let l = loss::focal(logits.as_tensor(), &targets(), 2.0).unwrap();
    assert!((scalar(&l) - 0.5817245917069291).abs() < 1e-5);
    check("focal", l.backward().unwrap().get(logits.as_tensor()).unwrap(), -0.02737454434899142, 0.44995266334623274);
}

#[test]
fn mining_loss_matches_pytorch() {
    let (fa, fb) = features();
    let h = loss::MiningSettings { alpha: 0.2, beta: 3.1, lambda: 1.5, epsilon: -0.08 };
    let l = loss::mining_labelled(fa.as_tensor(), fb.as_tensor(), &targets(), &h).unwrap();
    assert!((scalar(&l) - 1.008177798429524).abs() < 1e-5, "{}", scalar(&l));
    check("mining fa", l.backward().unwrap().get(fa.as_tensor()).unwrap(), 0.018037478714759407, 0.15290140058957355);
}

/// The in-batch variant against PyTorch computing it pair by pair (tests/python/gradients.py):
/// 3 similar pairs, their 6 cross pairs and 3 labelled dissimilar pairs.
#[test]
fn in_batch_mining_loss_matches_pytorch() {
    let (fa, fb) = features();
    let h = loss::MiningSettings { alpha: 0.7, beta: 2.3, lambda: 0.2, epsilon: 0.3 };
    let l = loss::mining_in_batch(fa.as_tensor(), fb.as_tensor(), &targets(), &h).unwrap();
    assert!((scalar(&l) - 1.0192256100253076).abs() < 1e-5, "{}", scalar(&l));
    let grads = l.backward().unwrap();
    check("in-batch mining fa", grads.get(fa.as_tensor()).unwrap(), 0.00397417028342318, 0.323771733480006);
    check("in-batch mining fb", grads.get(fb.as_tensor()).unwrap(), 0.03026202319688703, 0.38568750274746266);
}
