//! Face alignment as dlib does it for its face recognition network (`get_face_chip_details`
//! with 68 points, then `extract_image_chip`): a similarity transform (rotation, uniform scale,
//! translation), fitted by least squares from 33 of the 68 landmarks to dlib's mean face, maps a
//! `size`×`size` chip with `padding` (a fraction of the face's width on each side) into the image;
//! each chip pixel is read from the image by bilinear interpolation, black outside.

use image::{Rgb, RgbImage};

use super::Point;

/// The chip the descriptor takes, as dlib makes it for `dlib_face_recognition_resnet_model_v1`.
pub const CHIP_SIZE: u32 = 150;
pub const CHIP_PADDING: f64 = 0.25;

/// dlib's mean positions of landmarks 17..=67 in a unit square (from `get_face_chip_details`).
const MEAN_FACE_X: [f64; 51] = [
    0.000213256,
    0.0752622,
    0.18113,
    0.29077,
    0.393397,
    0.586856,
    0.689483,
    0.799124,
    0.904991,
    0.98004,
    0.490127,
    0.490127,
    0.490127,
    0.490127,
    0.36688,
    0.426036,
    0.490127,
    0.554217,
    0.613373,
    0.121737,
    0.187122,
    0.265825,
    0.334606,
    0.260918,
    0.182743,
    0.645647,
    0.714428,
    0.793132,
    0.858516,
    0.79751,
    0.719335,
    0.254149,
    0.340985,
    0.428858,
    0.490127,
    0.551395,
    0.639268,
    0.726104,
    0.642159,
    0.556721,
    0.490127,
    0.423532,
    0.338094,
    0.290379,
    0.428096,
    0.490127,
    0.552157,
    0.689874,
    0.553364,
    0.490127,
    0.42689,
];
const MEAN_FACE_Y: [f64; 51] = [
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915, 0.106454, 0.203352,
    0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852,
    0.231733, 0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099, 0.780233, 0.745405,
    0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805, 0.902192, 0.909281, 0.902192, 0.864805, 0.784792,
    0.778746, 0.785343, 0.778746, 0.784792, 0.824182, 0.831803, 0.824182,
];

/// The landmarks dlib fits: 27..=67 without the lower lip (55..=59 and 65..=67); eyebrows
/// (17..=26) are left out too.
fn used(i: usize) -> bool {
    (27..68).contains(&i) && !(55..=59).contains(&i) && !(65..=67).contains(&i)
}

/// x' = a·x − b·y + tx, y' = b·x + a·y + ty.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f64,
    pub b: f64,
    pub tx: f64,
    pub ty: f64,
}

impl Similarity {
    pub fn apply(&self, p: Point) -> Point {
        Point { x: self.a * p.x - self.b * p.y + self.tx, y: self.b * p.x + self.a * p.y + self.ty }
    }

    /// The least-squares similarity taking `from` onto `to` (Umeyama's, which in two dimensions
    /// and without reflection is this closed form).
    pub fn fit(from: &[Point], to: &[Point]) -> Option<Similarity> {
        let n = from.len() as f64;
        if from.len() < 2 || from.len() != to.len() {
            return None;
        }
        let mean = |ps: &[Point]| Point {
            x: ps.iter().map(|p| p.x).sum::<f64>() / n,
            y: ps.iter().map(|p| p.y).sum::<f64>() / n,
        };
        let (mf, mt) = (mean(from), mean(to));
        let (mut dot, mut cross, mut norm) = (0.0, 0.0, 0.0);
        for (f, t) in from.iter().zip(to) {
            let (fx, fy, tx, ty) = (f.x - mf.x, f.y - mf.y, t.x - mt.x, t.y - mt.y);
            dot += fx * tx + fy * ty;
            cross += fx * ty - fy * tx;
            norm += fx * fx + fy * fy;
        }
        if norm <= f64::EPSILON {
            return None;
        }
        let (a, b) = (dot / norm, cross / norm);
        Some(Similarity { a, b, tx: mt.x - (a * mf.x - b * mf.y), ty: mt.y - (b * mf.x + a * mf.y) })
    }
}

/// The map from chip pixels to image coordinates for 68 `landmarks`, as dlib's
/// `chip_details` then `extract_image_chip` compute it: the fitted similarity fixes the chip's
/// centre, angle and scale; the chip's corner pixels land on the corners of a rectangle
/// `size·scale − 1` wide around that centre.
pub fn chip_to_image(landmarks: &[Point], size: u32, padding: f64) -> Option<Similarity> {
    if landmarks.len() != 68 {
        return None;
    }
    let s = f64::from(size);
    let (mut chip, mut image) = (Vec::new(), Vec::new());
    for i in (17..68).filter(|&i| used(i)) {
        let x = (padding + MEAN_FACE_X[i - 17]) / (2.0 * padding + 1.0) * s;
        let y = (padding + MEAN_FACE_Y[i - 17]) / (2.0 * padding + 1.0) * s;
        chip.push(Point { x, y });
        image.push(landmarks[i]);
    }
    let fitted = Similarity::fit(&chip, &image)?;
    let centre = fitted.apply(Point { x: s / 2.0, y: s / 2.0 });
    let scale = fitted.a.hypot(fitted.b);
    // The chip's pixel step in the image, and the unit rotation.
    let step = (s * scale - 1.0) / (s - 1.0);
    let (cos, sin) = (fitted.a / scale, fitted.b / scale);
    let (a, b) = (step * cos, step * sin);
    let half = (s - 1.0) / 2.0;
    // chip (half, half) ↦ centre.
    Some(Similarity { a, b, tx: centre.x - (a * half - b * half), ty: centre.y - (b * half + a * half) })
}

/// Reads `image` at `p` by bilinear interpolation; `None` when a neighbour is outside.
fn bilinear(image: &RgbImage, p: Point) -> Option<[f64; 3]> {
    let (left, top) = (p.x.floor(), p.y.floor());
    if left < 0.0 || top < 0.0 || left + 1.0 >= f64::from(image.width()) || top + 1.0 >= f64::from(image.height()) {
        return None;
    }
    let (lr, tb) = (p.x - left, p.y - top);
    let (l, t) = (left as u32, top as u32);
    let px = |x: u32, y: u32| image.get_pixel(x, y).0;
    let (tl, tr, bl, br) = (px(l, t), px(l + 1, t), px(l, t + 1), px(l + 1, t + 1));
    let mut out = [0.0; 3];
    for c in 0..3 {
        let upper = (1.0 - lr) * f64::from(tl[c]) + lr * f64::from(tr[c]);
        let lower = (1.0 - lr) * f64::from(bl[c]) + lr * f64::from(br[c]);
        out[c] = (1.0 - tb) * upper + tb * lower;
    }
    Some(out)
}

/// Halves an image, each output pixel the mean of a 2x2 block (the last odd row/column dropped).
fn halve(image: &RgbImage) -> RgbImage {
    let (w, h) = ((image.width() / 2).max(1), (image.height() / 2).max(1));
    RgbImage::from_fn(w, h, |x, y| {
        let mut sum = [0u32; 3];
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            let p = image.get_pixel((2 * x + dx).min(image.width() - 1), (2 * y + dy).min(image.height() - 1)).0;
            for c in 0..3 {
                sum[c] += u32::from(p[c]);
            }
        }
        Rgb(sum.map(|s| ((s + 2) / 4) as u8))
    })
}

/// The aligned `size`×`size` chip of the face with these 68 landmarks. When the chip shrinks
/// the face by more than 2x, the image is first halved (as dlib reads such chips from an image
/// pyramid; dlib's pyramid filter differs, so chips that shrink this much differ slightly).
pub fn extract_chip(image: &RgbImage, landmarks: &[Point], size: u32, padding: f64) -> Option<RgbImage> {
    let mut map = chip_to_image(landmarks, size, padding)?;
    let mut source: Option<RgbImage> = None;
    while map.a.hypot(map.b) > 2.0 && source.as_ref().unwrap_or(image).width() > 1 {
        source = Some(halve(source.as_ref().unwrap_or(image)));
        // Pixel i of the half image covers pixels 2i and 2i+1: its centre is 2i + 0.5.
        map = Similarity { a: map.a / 2.0, b: map.b / 2.0, tx: (map.tx - 0.5) / 2.0, ty: (map.ty - 0.5) / 2.0 };
    }
    let source = source.as_ref().unwrap_or(image);
    Some(RgbImage::from_fn(size, size, |x, y| {
        let p = map.apply(Point { x: f64::from(x), y: f64::from(y) });
        match bilinear(source, p) {
            Some(v) => Rgb(v.map(|c| c.clamp(0.0, 255.0) as u8)),
            None => Rgb([0, 0, 0]),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_recovers_a_known_similarity() {
        let truth = Similarity { a: 1.3 * 0.5f64.cos(), b: 1.3 * 0.5f64.sin(), tx: 12.0, ty: -4.0 };
        let from: Vec<Point> = (0..10).map(|i| Point { x: f64::from(i * 7 % 11), y: f64::from(i * i % 13) }).collect();
        let to: Vec<Point> = from.iter().map(|&p| truth.apply(p)).collect();
        let fitted = Similarity::fit(&from, &to).unwrap();
        for (got, want) in [(fitted.a, truth.a), (fitted.b, truth.b), (fitted.tx, truth.tx), (fitted.ty, truth.ty)] {
            assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        }
    }

    #[test]
    fn landmarks_on_the_template_give_the_identity_chip_map() {
        // Landmarks placed exactly where the template puts them in a 150 chip: the chip maps to
        // the image with scale 1 and no rotation, so chip pixel (x, y) reads image pixel (x, y).
        let s = f64::from(CHIP_SIZE);
        let mut landmarks = vec![Point { x: 0.0, y: 0.0 }; 68];
        for i in 17..68 {
            landmarks[i] = Point {
                x: (CHIP_PADDING + MEAN_FACE_X[i - 17]) / (2.0 * CHIP_PADDING + 1.0) * s,
                y: (CHIP_PADDING + MEAN_FACE_Y[i - 17]) / (2.0 * CHIP_PADDING + 1.0) * s,
            };
        }
        let map = chip_to_image(&landmarks, CHIP_SIZE, CHIP_PADDING).unwrap();
        // dlib's chip rectangle is size·scale − 1 wide over size − 1 steps: exactly 1 here; it
        // is centred on the template's centre (75, 75), so chip pixel 0 reads image 0.5.
        assert!((map.a - 1.0).abs() < 1e-9 && map.b.abs() < 1e-9, "{map:?}");
        assert!((map.tx - 0.5).abs() < 1e-9 && (map.ty - 0.5).abs() < 1e-9, "{map:?}");
        let image = RgbImage::from_fn(200, 200, |x, y| Rgb([x as u8, y as u8, 7]));
        let chip = extract_chip(&image, &landmarks, CHIP_SIZE, CHIP_PADDING).unwrap();
        // Halfway between two levels: dlib (and this port) truncate the interpolated value.
        assert_eq!(chip.get_pixel(10, 20).0, [10, 20, 7]);
        assert_eq!(chip.get_pixel(149, 149).0, [149, 149, 7]);
    }
}
