//! The one blocked matrix product behind every many-against-many comparison: dot products of
//! each row of one row-major block with each row of another, by `gemm`. Proposal's pair search
//! (a block of the distance matrix's upper triangle), ranking's exact search (a block of gallery
//! rows against a batch of queries) and the benchmarks all call [`dots`]; distances follow from
//! the norm identity ‖x − y‖² = ‖x‖² + ‖y‖² − 2 x·y in the caller.

/// `out[i * n + j] = lhs[i] · rhs[j]` for the `m = lhs.len() / dim` rows of `lhs` and the
/// `n = rhs.len() / dim` rows of `rhs`, both row-major with `dim` values a row. `out` is resized
/// to `m × n`. `threads` > 1 splits the product over that many rayon threads (for one large
/// product); searches that already run one block per thread pass 1.
pub fn dots(lhs: &[f32], rhs: &[f32], dim: usize, threads: usize, out: &mut Vec<f32>) {
    assert!(dim > 0 && lhs.len().is_multiple_of(dim) && rhs.len().is_multiple_of(dim), "whole rows");
    let (m, n) = (lhs.len() / dim, rhs.len() / dim);
    out.clear();
    out.resize(m * n, 0.0);
    if m == 0 || n == 0 {
        return;
    }
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: `out` holds m·n floats written with row stride n (column stride 1); lhs is read as
    // an m × dim row-major matrix (row stride dim) and rhs as a dim × n matrix whose columns are
    // its rows (column stride dim), all in bounds (checked above) and alive for the call; nothing
    // aliases `out`.
    unsafe {
        gemm::gemm(
            m,
            n,
            dim,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            dim as isize,
            rhs.as_ptr(),
            dim as isize,
            1,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_match_plain_sums_for_odd_shapes_and_threads() {
        let dim = 37;
        let lhs: Vec<f32> = (0..13 * dim).map(|i| ((i as f32) * 0.37).sin()).collect();
        let rhs: Vec<f32> = (0..7 * dim).map(|i| ((i as f32) * 0.11).cos()).collect();
        for threads in [1, 2] {
            let mut out = vec![9.0; 3];
            dots(&lhs, &rhs, dim, threads, &mut out);
            assert_eq!(out.len(), 13 * 7);
            for i in 0..13 {
                for j in 0..7 {
                    let want: f32 =
                        lhs[i * dim..(i + 1) * dim].iter().zip(&rhs[j * dim..(j + 1) * dim]).map(|(a, b)| a * b).sum();
                    assert!((out[i * 7 + j] - want).abs() < 1e-4, "({i}, {j}): {} vs {want}", out[i * 7 + j]);
                }
            }
        }
        let mut out = vec![1.0];
        dots(&[], &rhs, dim, 1, &mut out);
        assert!(out.is_empty());
    }
}
