//! Training data: labelled pairs from the crowd's majority labels or from an identity-labelled
//! pair list, their seeded train/validation/test split, and the network inputs of their images
//! (descriptor vectors for GAML, 128x128 face crops for the CNN).

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::TrainingError;
use crate::dataset::Datasets;
use crate::labeling::{DISSIMILAR, SIMILAR};
use crate::models::descriptor;
use crate::models::siamese::input::planar_normalised;
use crate::store::{LabelRecord, Store, SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALIDATION};

/// Split numbers as stored in [`crate::store::PairSetRecord`].
pub const TRAIN: u32 = SPLIT_TRAIN;
pub const VALIDATION: u32 = SPLIT_VALIDATION;
pub const TEST: u32 = SPLIT_TEST;

/// One labelled pair of images.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledPair {
    pub image_a: u64,
    pub image_b: u64,
    /// 1 similar, 0 dissimilar; the share of "similar" votes with soft labels.
    pub target: f32,
    /// The labelled pair's id, 0 for pairs from a pair list.
    pub pair_id: u64,
    /// The labeling batch of the pair, 0 for pairs from a pair list.
    pub batch_id: u64,
}

impl LabelledPair {
    pub fn same(&self) -> bool {
        self.target >= 0.5
    }
}

/// Which crowd labels to train on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelQuery {
    /// Empty means every labelled pair.
    pub batch_ids: Vec<u64>,
    pub unanimous_only: bool,
    pub soft_labels: bool,
}

/// The majority labels chosen by `query`, in pair id order.
pub fn from_labels(store: &Store, query: &LabelQuery) -> Result<Vec<LabelledPair>, TrainingError> {
    let mut labels: Vec<LabelRecord> = Vec::new();
    let batches: Vec<u64> = if query.batch_ids.is_empty() { vec![0] } else { query.batch_ids.clone() };
    for batch in batches {
        if batch != 0 && store.batch(batch)?.is_none() {
            return Err(TrainingError::NotFound(format!("no batch with id {batch}")));
        }
        let (mut page, mut next) = store.labels_page(batch, 0, 1024)?;
        labels.append(&mut page);
        while let Some(start) = next {
            let (mut more, after) = store.labels_page(batch, start, 1024)?;
            labels.append(&mut more);
            next = after;
        }
    }
    labels.sort_by_key(|l| l.pair_id);
    labels.dedup_by_key(|l| l.pair_id);
    let mut out = Vec::with_capacity(labels.len());
    for label in labels {
        let total = label.similar_votes + label.dissimilar_votes;
        if query.unanimous_only && label.similar_votes != total && label.dissimilar_votes != total {
            continue;
        }
        let Some(pair) = store.pair(label.pair_id)? else { continue };
        let target = if query.soft_labels {
            label.similar_votes as f32 / total.max(1) as f32
        } else {
            match label.majority {
                SIMILAR => 1.0,
                DISSIMILAR => 0.0,
                _ => continue,
            }
        };
        out.push(LabelledPair {
            image_a: pair.image_a,
            image_b: pair.image_b,
            target,
            pair_id: label.pair_id,
            batch_id: pair.batch_id,
        });
    }
    Ok(out)
}

/// One line of a pair list: two (identity name, image number) and whether they are one person.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedPair {
    pub a: (String, u32),
    pub b: (String, u32),
    pub same: bool,
}

/// Parses LFW's pair formats (`pairs.txt`, `pairsDevTrain.txt`, `pairsDevTest.txt`): an optional
/// header of one or two numbers, then `name n1 n2` for a same-person pair and
/// `name1 n1 name2 n2` for a different-person pair, tab or space separated.
pub fn parse_pair_list(text: &str) -> Result<Vec<ListedPair>, TrainingError> {
    let mut out = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let bad = |what: &str| TrainingError::Invalid(format!("pair list line {}: {what}: {line:?}", number + 1));
        let image_number = |s: &str| s.parse::<u32>().map_err(|_| bad("image numbers must be whole numbers"));
        match fields.as_slice() {
            [] => {}
            header if out.is_empty() && header.len() <= 2 && header.iter().all(|f| f.parse::<u32>().is_ok()) => {}
            [name, n1, n2] => out.push(ListedPair {
                a: (name.to_string(), image_number(n1)?),
                b: (name.to_string(), image_number(n2)?),
                same: true,
            }),
            [name1, n1, name2, n2] => out.push(ListedPair {
                a: (name1.to_string(), image_number(n1)?),
                b: (name2.to_string(), image_number(n2)?),
                same: false,
            }),
            _ => return Err(bad("expected `name n1 n2` or `name1 n1 name2 n2`")),
        }
    }
    if out.is_empty() {
        return Err(TrainingError::Invalid("the pair list holds no pairs".into()));
    }
    Ok(out)
}

/// Resolves a pair list against a dataset: image `n` of identity `Name` is the file whose stem
/// is `Name_000n` (LFW's naming). Pairs naming images the dataset lacks are left out and
/// counted.
pub fn resolve_pair_list(
    store: &Store,
    dataset: &str,
    listed: &[ListedPair],
) -> Result<(Vec<LabelledPair>, usize), TrainingError> {
    let mut cache: HashMap<String, HashMap<String, u64>> = HashMap::new();
    let mut find = |name: &str, n: u32| -> Result<Option<u64>, TrainingError> {
        if !cache.contains_key(name) {
            let images = store.images_of_identity(dataset, name)?.unwrap_or_default();
            let stems = images
                .into_iter()
                .map(|image| {
                    let stem = image.file_name.rsplit('/').next().unwrap_or("").split('.').next().unwrap_or("");
                    (stem.to_string(), image.id)
                })
                .collect();
            cache.insert(name.to_string(), stems);
        }
        Ok(cache[name].get(&format!("{name}_{n:04}")).copied())
    };
    let (mut out, mut missing) = (Vec::new(), 0);
    for pair in listed {
        match (find(&pair.a.0, pair.a.1)?, find(&pair.b.0, pair.b.1)?) {
            (Some(a), Some(b)) if a != b => out.push(LabelledPair {
                image_a: a,
                image_b: b,
                target: if pair.same { 1.0 } else { 0.0 },
                pair_id: 0,
                batch_id: 0,
            }),
            _ => missing += 1,
        }
    }
    Ok((out, missing))
}

/// Assigns each of `n` pairs to train, validation or test in the proportions `ratios`, by a
/// seeded shuffle.
pub fn split(n: usize, ratios: [u32; 3], seed: u64) -> Vec<u32> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let total: u32 = ratios.iter().sum();
    let train_end = n * ratios[0] as usize / total as usize;
    let validation_end = n * (ratios[0] + ratios[1]) as usize / total as usize;
    let mut out = vec![TRAIN; n];
    for (rank, &i) in order.iter().enumerate() {
        out[i] = if rank < train_end {
            TRAIN
        } else if rank < validation_end {
            VALIDATION
        } else {
            TEST
        };
    }
    out
}

/// The network inputs of a set of images, held in memory for the whole job.
pub enum Inputs {
    /// Descriptor vectors, `dim` floats per image.
    Vectors { dim: usize, row: HashMap<u64, usize>, data: Vec<f32> },
    /// Face crops resized to `side`x`side` RGB, bytes per image.
    Images { side: usize, row: HashMap<u64, usize>, data: Vec<u8> },
}

impl Inputs {
    /// The descriptor vectors of `ids`.
    pub fn vectors(store: &Store, ids: &[u64]) -> Result<Inputs, TrainingError> {
        let dim = descriptor::DIM;
        let (mut row, mut data, mut missing) = (HashMap::new(), Vec::with_capacity(ids.len() * dim), 0);
        for &id in ids {
            if row.contains_key(&id) {
                continue;
            }
            match store.embedding(descriptor::MODEL_ID, id)? {
                Some(v) if v.len() == dim => {
                    row.insert(id, row.len());
                    data.extend(v);
                }
                _ => missing += 1,
            }
        }
        if missing > 0 {
            return Err(TrainingError::MissingEmbeddings(missing));
        }
        Ok(Inputs::Vectors { dim, row, data })
    }

    /// The stored face crops of `ids`, resized to `side`.
    pub fn images(datasets: &Datasets, ids: &[u64], side: usize) -> Result<Inputs, TrainingError> {
        let (mut row, mut data) = (HashMap::new(), Vec::with_capacity(ids.len() * side * side * 3));
        for &id in ids {
            if row.contains_key(&id) {
                continue;
            }
            let face = datasets.face(id)?;
            let resized = image::imageops::resize(&face, side as u32, side as u32, FilterType::Triangle);
            row.insert(id, row.len());
            data.extend_from_slice(resized.as_raw());
        }
        Ok(Inputs::Images { side, row, data })
    }

    /// The vector of an image held by [`Inputs::vectors`] (empty for images).
    pub fn vector(&self, id: u64) -> &[f32] {
        match self {
            Inputs::Vectors { dim, row, data } => &data[row[&id] * dim..(row[&id] + 1) * dim],
            Inputs::Images { .. } => &[],
        }
    }

    /// The input tensor of `ids`: (N, dim) vectors, or (N, 3, side, side) images normalised as
    /// the descriptor's, `(pixel − mean) / 255`.
    pub fn batch(&self, ids: &[u64], device: &Device) -> Result<Tensor, TrainingError> {
        match self {
            Inputs::Vectors { dim, row, data } => {
                let mut out = Vec::with_capacity(ids.len() * dim);
                for id in ids {
                    let r = row[id];
                    out.extend_from_slice(&data[r * dim..(r + 1) * dim]);
                }
                Ok(Tensor::from_vec(out, (ids.len(), *dim), device)?)
            }
            Inputs::Images { side, row, data } => {
                let plane = side * side;
                let mut out = vec![0f32; ids.len() * 3 * plane];
                for (k, id) in ids.iter().enumerate() {
                    let pixels = &data[row[id] * 3 * plane..(row[id] + 1) * 3 * plane];
                    planar_normalised(pixels, &mut out[k * 3 * plane..(k + 1) * 3 * plane]);
                }
                Ok(Tensor::from_vec(out, (ids.len(), 3, *side, *side), device)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_lists_parse_in_lfw_formats() {
        let text = "2\nAlice\t1\t2\nAlice 1 Bob 3\n\n";
        let pairs = parse_pair_list(text).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0], ListedPair { a: ("Alice".into(), 1), b: ("Alice".into(), 2), same: true });
        assert!(!pairs[1].same && pairs[1].b == ("Bob".into(), 3));
        assert!(
            matches!(parse_pair_list("10 300\nAlice one 2"), Err(TrainingError::Invalid(m)) if m.contains("line 2"))
        );
        assert!(parse_pair_list("Alice 1 2 3 4").is_err());
        assert!(parse_pair_list("1100\n").is_err());
    }

    #[test]
    fn splits_follow_the_ratios_and_the_seed() {
        let s = split(100, [8, 1, 1], 7);
        let count = |k| s.iter().filter(|&&x| x == k).count();
        assert_eq!((count(TRAIN), count(VALIDATION), count(TEST)), (80, 10, 10));
        assert_eq!(s, split(100, [8, 1, 1], 7));
        assert_ne!(s, split(100, [8, 1, 1], 8));
    }
}
