//! Vector kernels for search: dot products and squared Euclidean distances of two `f32` slices.
//!
//! One portable body is written so the compiler can vectorise it (independent partial sums in
//! lanes, no reduction until the end), and compiled three times: for AVX-512, for AVX2 + FMA and
//! for the baseline target. The widest version the CPU supports is picked at run time (the
//! standard library caches the CPU's features, so the check is a load and a test).

/// Partial sums kept apart so the loop vectorises: 64 lanes fill four AVX-512 or eight AVX2
/// registers, enough to hide the latency of the additions.
const LANES: usize = 64;

/// Sums the lanes pairwise, halving each step, so the additions stay vector instructions (a plain
/// left-to-right sum would be 64 dependent scalar additions, longer than the loop itself).
#[inline(always)]
fn reduce(mut acc: [f32; LANES]) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for j in 0..width {
            acc[j] += acc[j + width];
        }
        width /= 2;
    }
    acc[0]
}

/// `Σ term(a[i], b[i])` in `LANES` independent partial sums.
#[inline(always)]
fn lanes(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        // Fixed-size views: no bounds checks inside, so the loop becomes vector instructions.
        let (x, y): (&[f32; LANES], &[f32; LANES]) = (x.try_into().unwrap(), y.try_into().unwrap());
        for j in 0..LANES {
            acc[j] += term(x[j], y[j]);
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| term(*x, *y)).sum();
    reduce(acc) + tail
}

#[inline(always)]
fn dot_body(a: &[f32], b: &[f32]) -> f32 {
    lanes(a, b, |x, y| x * y)
}

#[inline(always)]
fn sq_l2_body(a: &[f32], b: &[f32]) -> f32 {
    lanes(a, b, |x, y| (x - y) * (x - y))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f")]
    pub fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        super::dot_body(a, b)
    }

    #[target_feature(enable = "avx512f")]
    pub fn sq_l2_avx512(a: &[f32], b: &[f32]) -> f32 {
        super::sq_l2_body(a, b)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        super::dot_body(a, b)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn sq_l2_avx2(a: &[f32], b: &[f32]) -> f32 {
        super::sq_l2_body(a, b)
    }
}

type Kernel = fn(&[f32], &[f32]) -> f32;
#[cfg(target_arch = "x86_64")]
type WideKernel = unsafe fn(&[f32], &[f32]) -> f32;

/// Runs the widest kernel the CPU supports on `a` and `b` cut to the same length.
#[inline]
fn run(
    a: &[f32],
    b: &[f32],
    portable: Kernel,
    #[cfg(target_arch = "x86_64")] avx512: WideKernel,
    #[cfg(target_arch = "x86_64")] avx2: WideKernel,
) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { avx512(a, b) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { avx2(a, b) };
        }
    }
    portable(a, b)
}

/// `a · b` over the shorter length.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    run(
        a,
        b,
        dot_body,
        #[cfg(target_arch = "x86_64")]
        x86::dot_avx512,
        #[cfg(target_arch = "x86_64")]
        x86::dot_avx2,
    )
}

/// `‖a − b‖²` over the shorter length.
#[inline]
pub fn sq_l2(a: &[f32], b: &[f32]) -> f32 {
    run(
        a,
        b,
        sq_l2_body,
        #[cfg(target_arch = "x86_64")]
        x86::sq_l2_avx512,
        #[cfg(target_arch = "x86_64")]
        x86::sq_l2_avx2,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_plain_sums_for_lengths_around_the_lane_count() {
        for n in [0, 1, 7, 63, 64, 65, 128, 130, 2622] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 53 % 89) as f32 - 44.0) / 30.0).collect();
            let dot_plain: f64 = a.iter().zip(&b).map(|(x, y)| (*x as f64) * (*y as f64)).sum();
            let l2_plain: f64 = a.iter().zip(&b).map(|(x, y)| ((*x - *y) as f64).powi(2)).sum();
            let tol = 1e-4 * (1.0 + n as f64);
            assert!((dot(&a, &b) as f64 - dot_plain).abs() < tol, "dot, n = {n}");
            assert!((sq_l2(&a, &b) as f64 - l2_plain).abs() < tol, "sq_l2, n = {n}");
            assert!((dot_body(&a, &b) - dot(&a, &b)).abs() as f64 <= tol, "portable and SIMD agree, n = {n}");
        }
    }
}
