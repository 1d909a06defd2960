//! LFW-format pair lists (`pairs.txt`'s layout: a count line, then `name n m` same-person lines,
//! then `name n other m` different-person lines) built from a dataset's file names, for training
//! and evaluation by pair list. Used by `facesim bench soak` and by the test suites.

use std::collections::BTreeMap;

/// The image numbers of each identity, from LFW-style file names (`Name_0003.jpg` → 3), by
/// identity name; files whose names carry no number are left out.
pub fn numbered_images<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<(String, Vec<u32>)> {
    let mut by_identity: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (identity, file_name) in files {
        let stem = file_name.rsplit('/').next().unwrap_or("").split('.').next().unwrap_or("");
        if let Some(number) = stem.rsplit('_').next().and_then(|n| n.parse().ok()) {
            by_identity.entry(identity).or_default().push(number);
        }
    }
    by_identity
        .into_iter()
        .map(|(name, mut numbers)| {
            numbers.sort_unstable();
            (name.to_string(), numbers)
        })
        .collect()
}

/// A pair list over `people` (name and image numbers): every two consecutive images of a
/// person as a same-person pair, and as many different-person pairs, each pairing that
/// person's first image of the two with the next person's first image. People with fewer than
/// two images are left out.
pub fn lfw_pair_list(people: &[(String, Vec<u32>)]) -> String {
    let people: Vec<&(String, Vec<u32>)> = people.iter().filter(|(_, n)| n.len() >= 2).collect();
    let (mut same, mut different) = (Vec::new(), Vec::new());
    for (i, (name, numbers)) in people.iter().enumerate() {
        for w in numbers.windows(2) {
            same.push(format!("{name}\t{}\t{}", w[0], w[1]));
            let (other, theirs) = people[(i + 1) % people.len()];
            different.push(format!("{name}\t{}\t{other}\t{}", w[0], theirs[0]));
        }
    }
    format!("{}\n{}\n{}\n", same.len(), same.join("\n"), different.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_lists_pair_each_identity_and_its_neighbour() {
        let files =
            [("A", "A_0001.jpg"), ("B", "x/B_0003.jpg"), ("A", "A_0002.jpg"), ("B", "B_0001.jpg"), ("C", "C_1.jpg")];
        let people = numbered_images(files);
        assert_eq!(people, vec![("A".into(), vec![1, 2]), ("B".into(), vec![1, 3]), ("C".into(), vec![1])]);
        assert_eq!(lfw_pair_list(&people), "2\nA\t1\t2\nB\t1\t3\nA\t1\tB\t1\nB\t1\tA\t1\n");
    }
}
