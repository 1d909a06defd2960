//! Vector maths shared by everything that compares embeddings: the metrics ([`Metric`] and the
//! reference distances), the SIMD kernels for one pair of vectors ([`kernel`]) and the blocked
//! matrix product that scores many vectors against many ([`blocks`]). It knows nothing of models,
//! images or the store, so proposal, ranking, training and the benchmarks all point down to it.

pub mod blocks;
pub mod kernel;
mod metric;

pub use metric::{euclidean, squared_euclidean, Metric, COSINE, EUCLIDEAN};
