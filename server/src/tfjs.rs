//! Reads TensorFlow.js weights: a JSON manifest naming each tensor's shape and quantisation, and
//! one binary file holding the tensors back to back in manifest order. uint8 tensors dequantise
//! as `q · scale + min` (computed in f64, stored as f32); float32 tensors are stored raw.

use std::collections::HashMap;

use serde::Deserialize;

/// A weight file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("bad TensorFlow.js weights: {0}")]
pub struct TfjsError(pub String);

#[derive(Debug, Deserialize)]
struct Group {
    weights: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    name: String,
    shape: Vec<usize>,
    dtype: String,
    quantization: Option<Quantization>,
}

#[derive(Debug, Deserialize)]
struct Quantization {
    dtype: String,
    scale: f64,
    min: f64,
}

/// One decoded tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Looks up a tensor by name, with the shape it must have.
pub fn tensor<'a>(
    weights: &'a HashMap<String, WeightTensor>,
    name: &str,
    shape: &[usize],
) -> Result<&'a WeightTensor, TfjsError> {
    let tensor = weights.get(name).ok_or_else(|| TfjsError(format!("missing tensor {name}")))?;
    if tensor.shape != shape {
        return Err(TfjsError(format!("{name} has shape {:?}, expected {shape:?}", tensor.shape)));
    }
    Ok(tensor)
}

/// Decodes every tensor of a manifest and its weight bytes, by name.
pub fn decode(manifest_json: &str, bin: &[u8]) -> Result<HashMap<String, WeightTensor>, TfjsError> {
    let groups: Vec<Group> = serde_json::from_str(manifest_json).map_err(|e| TfjsError(format!("manifest: {e}")))?;
    let mut offset = 0usize;
    let mut out = HashMap::new();
    for entry in groups.into_iter().flat_map(|g| g.weights) {
        if entry.dtype != "float32" {
            return Err(TfjsError(format!("{}: unsupported dtype {}", entry.name, entry.dtype)));
        }
        let count: usize = entry.shape.iter().product();
        let values = match &entry.quantization {
            Some(q) if q.dtype == "uint8" => {
                let bytes = bin.get(offset..offset + count).ok_or_else(|| truncated(&entry.name))?;
                offset += count;
                bytes.iter().map(|&b| (f64::from(b) * q.scale + q.min) as f32).collect()
            }
            Some(q) => return Err(TfjsError(format!("{}: unsupported quantisation {}", entry.name, q.dtype))),
            None => {
                let bytes = bin.get(offset..offset + 4 * count).ok_or_else(|| truncated(&entry.name))?;
                offset += 4 * count;
                bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
        };
        out.insert(entry.name, WeightTensor { shape: entry.shape, values });
    }
    if offset != bin.len() {
        return Err(TfjsError(format!("{} bytes left after the last tensor", bin.len() - offset)));
    }
    Ok(out)
}

fn truncated(name: &str) -> TfjsError {
    TfjsError(format!("weight file ends inside tensor {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dequantises_uint8_and_reads_raw_float32() {
        let manifest = r#"[{"paths":["x.bin"],"weights":[
            {"name":"q","shape":[3],"dtype":"float32","quantization":{"dtype":"uint8","scale":0.5,"min":-1.0}},
            {"name":"f","shape":[2],"dtype":"float32"}]}]"#;
        let mut bin = vec![0u8, 2, 255];
        bin.extend_from_slice(&1.25f32.to_le_bytes());
        bin.extend_from_slice(&(-3.0f32).to_le_bytes());
        let w = decode(manifest, &bin).unwrap();
        assert_eq!(w["q"].values, vec![-1.0, 0.0, 126.5]);
        assert_eq!(w["f"], WeightTensor { shape: vec![2], values: vec![1.25, -3.0] });
        assert!(decode(manifest, &bin[..6]).is_err(), "truncated file");
        bin.push(0);
        assert!(decode(manifest, &bin).is_err(), "trailing bytes");
    }
}
