//! Property-based fuzzing (proptest) of the two places where outside bytes are parsed: image
//! decoding + face preprocessing, and the store's record decoding. Each property runs a fixed
//! number of cases (CI budget: a few seconds each; `PROPTEST_CASES` raises it for a long run).
//! The hostile files in `fuzz-corpus/` are replayed on every run, and proptest keeps any
//! failing input it finds in `proptest-regressions/` for the next runs.

use std::io::Cursor;
use std::path::Path;

use facesim_server::dataset::{decode_face_png, decode_limited, encode_png, face_crop, DecodeLimits, FACE_SIZE};
use facesim_server::store::{
    decode, decode_id, AnnotatorRecord, BatchRecord, EvaluationRecord, ImageRecord, JobRecord, LabelRecord,
    ModelRecord, PairRecord, TokenRecord, UserRecord, VoteRecord,
};
use proptest::prelude::*;

fn limits() -> DecodeLimits {
    // The server's defaults.
    DecodeLimits { max_bytes: 10 * 1024 * 1024, max_side: 8192, max_pixels: 40_000_000 }
}

/// Decodes like an import does and, when it succeeds, makes the face crop and its PNG round trip.
fn decode_and_preprocess(bytes: &[u8]) -> Result<(), String> {
    let limits = limits();
    match decode_limited(bytes, &limits) {
        Ok(decoded) => {
            assert!(decoded.width <= limits.max_side && decoded.height <= limits.max_side);
            assert!(u64::from(decoded.width) * u64::from(decoded.height) <= limits.max_pixels);
            let face = face_crop(&decoded.image);
            assert_eq!((face.width(), face.height()), (FACE_SIZE, FACE_SIZE));
            let again = decode_face_png(&encode_png(&face)).expect("the crop's own PNG decodes");
            assert_eq!(again.as_raw(), face.as_raw());
            Ok(())
        }
        Err(error) => {
            let message = error.to_string();
            assert!(message.len() > 5, "a readable reason: {message:?}");
            Err(message)
        }
    }
}

/// Valid small images of every supported format, made from a real face.
fn seeds() -> Vec<Vec<u8>> {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/lfw-demo/Abdullah_Gul/Abdullah_Gul_0001.jpg");
    let jpeg = std::fs::read(demo).unwrap();
    let face = image::load_from_memory(&jpeg).unwrap().resize(48, 48, image::imageops::FilterType::Triangle);
    let mut out = vec![jpeg];
    for format in [image::ImageFormat::Png, image::ImageFormat::Bmp, image::ImageFormat::WebP, image::ImageFormat::Jpeg]
    {
        let mut bytes = Cursor::new(Vec::new());
        face.to_rgb8().write_to(&mut bytes, format).unwrap();
        out.push(bytes.into_inner());
    }
    let mut pgm = Cursor::new(Vec::new());
    face.to_luma8().write_to(&mut pgm, image::ImageFormat::Pnm).unwrap();
    out.push(pgm.into_inner());
    out
}

#[test]
fn the_corpus_of_hostile_files_is_refused() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 8, "the corpus is there: {files:?}");
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        assert!(decode_and_preprocess(&bytes).is_err(), "{} was accepted", path.display());
    }
}

#[test]
fn the_seeds_decode() {
    for seed in seeds() {
        decode_and_preprocess(&seed).unwrap();
    }
}

/// A seed with `edits` applied: (position fraction, new byte) overwrites, then a cut.
fn mutate(seed: &[u8], edits: &[(f64, u8)], keep: f64) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for (at, byte) in edits {
        let i = ((bytes.len() - 1) as f64 * at) as usize;
        bytes[i] = *byte;
    }
    bytes.truncate(((bytes.len() as f64) * keep).ceil() as usize);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode_and_preprocess(&bytes);
    }

    /// Arbitrary bytes behind a real format signature reach each format's header parser.
    #[test]
    fn signed_garbage_never_panics(which in 0usize..6, tail in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let signatures: [&[u8]; 6] =
            [b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"BM", b"RIFF\x00\x10\x00\x00WEBPVP8 ", b"P5\n", b"P6\n"];
        let mut bytes = signatures[which].to_vec();
        bytes.extend(tail);
        let _ = decode_and_preprocess(&bytes);
    }

    /// Real images of every format with bytes overwritten and cut short: refused or decoded,
    /// never a panic, a hang or an oversized result.
    #[test]
    fn mutated_images_never_panic(
        which in 0usize..6,
        edits in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 0..12),
        keep in 0.0f64..=1.0,
    ) {
        let seeds = seeds();
        let _ = decode_and_preprocess(&mutate(&seeds[which], &edits, keep));
    }

    /// Arbitrary bytes read as any stored record: an error (the store reports the tree as
    /// corrupt) or a record that encodes back to bytes that decode to the same record.
    #[test]
    fn stored_records_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        fn check<R: prost::Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
            if let Ok(record) = decode::<R>("fuzz", bytes) {
                let again: R = decode("fuzz", &record.encode_to_vec()).expect("re-encoded record decodes");
                assert_eq!(again, record);
            }
        }
        check::<UserRecord>(&bytes);
        check::<TokenRecord>(&bytes);
        check::<ImageRecord>(&bytes);
        check::<JobRecord>(&bytes);
        check::<PairRecord>(&bytes);
        check::<BatchRecord>(&bytes);
        check::<VoteRecord>(&bytes);
        check::<LabelRecord>(&bytes);
        check::<AnnotatorRecord>(&bytes);
        check::<ModelRecord>(&bytes);
        check::<EvaluationRecord>(&bytes);
        match decode_id("fuzz", &bytes) {
            Ok(_) => prop_assert_eq!(bytes.len(), 8),
            Err(error) => prop_assert!(error.to_string().contains("fuzz")),
        }
    }
}
