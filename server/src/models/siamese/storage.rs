//! Reading the values of candle's CPU storage inside the fused ops of `conv` and `dense`.

use candle_core::{bail, CpuStorage, Layout, Result};

/// The contiguous f32 values of a CPU tensor's storage.
pub fn values<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(all) = storage else {
        bail!("{op}: f32 values expected");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&all[start..end]),
        None => bail!("{op}: a contiguous tensor expected"),
    }
}
