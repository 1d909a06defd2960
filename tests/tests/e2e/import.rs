//! Importing real demo faces together with broken and hostile files: each file gets its own
//! result, bad ones never stop good ones, and what is stored is exactly what was sent.

use facesim_client::{pb, ImportEntry};
use facesim_tests::{demo_subset, encoded_image, TestServer};
use tonic::Code;

/// A valid PNG signature and IHDR chunk claiming 50000x50000 RGB pixels, an empty IDAT and an
/// end chunk (from the fuzzing corpus): a decoder that trusted the header would try to allocate
/// 7.5 GB.
fn huge_png_header() -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/tests/fuzz-corpus");
    std::fs::read(dir.join("huge-header.png")).unwrap()
}

fn write(dir: &std::path::Path, identity: &str, name: &str, data: &[u8]) -> ImportEntry {
    let folder = dir.join(identity.replace('/', "_"));
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join(name);
    std::fs::write(&path, data).unwrap();
    ImportEntry { identity: identity.into(), file_name: name.into(), path, size: data.len() as u64 }
}

#[tokio::test]
async fn good_files_import_and_bad_files_are_rejected_one_by_one() {
    let server = TestServer::start().await;
    let researcher = server.user("rita", pb::Role::Researcher).await;
    let client = server.client(Some(&researcher)).await;
    let tmp = tempfile::tempdir().unwrap();

    let demo = demo_subset(2);
    assert_eq!(demo.len(), 10, "two demo people with five faces each");
    let real_jpeg = std::fs::read(&demo[0].path).unwrap();

    // Bad files interleaved with good ones, so a bad file is followed by more work.
    let mut entries = vec![demo[0].clone()];
    let bad = [
        ("corrupt.jpg", real_jpeg[..real_jpeg.len() / 3].to_vec(), pb::ImportError::Corrupt),
        ("empty.jpg", vec![], pb::ImportError::Empty),
        ("huge.png", huge_png_header(), pb::ImportError::DimensionsTooLarge),
        ("notes.txt", b"this is not an image\n".to_vec(), pb::ImportError::UnsupportedFormat),
        ("tiny.png", encoded_image(image::ImageFormat::Png, 8, 8), pb::ImportError::TooSmall),
    ];
    for (name, data, _) in &bad {
        entries.push(write(tmp.path(), "Broken_Files", name, data));
    }
    entries.push(write(tmp.path(), "../escape", "x.png", &encoded_image(image::ImageFormat::Png, 40, 40)));
    entries.extend(demo[1..].iter().cloned());
    let pgm = encoded_image(image::ImageFormat::Pnm, 64, 80);
    entries.push(write(tmp.path(), "Synthetic", "gray.pgm", &pgm));
    entries.push(write(tmp.path(), "Synthetic", "colour.png", &encoded_image(image::ImageFormat::Png, 90, 60)));
    let sent = entries.len();

    let report = client.import_files("demo", entries.clone(), |_, _| {}).await.unwrap();
    assert_eq!(report.results.len(), sent);
    assert_eq!((report.imported, report.duplicates, report.rejected), (12, 0, 6));
    for (name, _, error) in &bad {
        let r = report.results.iter().find(|r| &r.file_name == name).unwrap();
        assert_eq!(r.outcome, pb::ImportOutcome::Rejected as i32, "{name}");
        assert_eq!(r.error, *error as i32, "{name}: {}", r.message);
        assert!(!r.message.is_empty(), "{name} has a readable message");
    }
    let escape = report.results.iter().find(|r| r.identity == "../escape").unwrap();
    assert_eq!(escape.error, pb::ImportError::InvalidName as i32);

    // Results come in stream order and ids increase with it.
    let ids: Vec<u64> = report.results.iter().filter(|r| r.image_id != 0).map(|r| r.image_id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // What is stored is exactly what was sent, plus a 150x150 face crop.
    let first = &report.results[0];
    let original = client
        .datasets()
        .get_image_data(pb::GetImageDataRequest {
            image_id: first.image_id,
            variant: pb::ImageVariant::Original as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(original.data, real_jpeg);
    assert_eq!(original.content_type, "image/jpeg");
    let face = client
        .datasets()
        .get_image_data(pb::GetImageDataRequest { image_id: first.image_id, variant: pb::ImageVariant::Face as i32 })
        .await
        .unwrap()
        .into_inner();
    let face = image::load_from_memory_with_format(&face.data, image::ImageFormat::Png).unwrap();
    assert_eq!((face.width(), face.height()), (150, 150));
    let thumb =
        client.datasets().get_thumbnail(pb::GetThumbnailRequest { image_id: first.image_id, size: 64 }).await.unwrap();
    let thumb = image::load_from_memory_with_format(&thumb.into_inner().data, image::ImageFormat::Jpeg).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (64, 64));

    let pgm_result = report.results.iter().find(|r| r.file_name == "gray.pgm").unwrap();
    let meta =
        client.datasets().get_image(pb::GetImageRequest { image_id: pgm_result.image_id }).await.unwrap().into_inner();
    assert_eq!((meta.format, meta.width, meta.height), (pb::ImageFormat::Pnm as i32, 64, 80));
    assert_eq!(meta.identity, "Synthetic");

    // Importing the same bytes again stores nothing new and names the stored image.
    let again = client.import_files("demo", vec![demo[0].clone()], |_, _| {}).await.unwrap();
    assert_eq!((again.imported, again.duplicates), (0, 1));
    assert_eq!(again.results[0].image_id, first.image_id);

    let summary = client.datasets().list_datasets(pb::ListDatasetsRequest {}).await.unwrap().into_inner().datasets;
    assert_eq!(summary.len(), 1);
    assert_eq!((summary[0].identity_count, summary[0].image_count), (3, 12));
}

#[tokio::test]
async fn oversized_files_are_refused_and_the_server_stays_up() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    // Over the 10 MiB image limit but under the message limit: a per-file rejection.
    let mut big = encoded_image(image::ImageFormat::Png, 40, 40);
    big.resize(10 * 1024 * 1024 + 1, 0);
    let tmp = tempfile::tempdir().unwrap();
    let entry = write(tmp.path(), "Big", "big.png", &big);
    let report = client.import_files("demo", vec![entry], |_, _| {}).await.unwrap();
    assert_eq!(report.results[0].error, pb::ImportError::TooLarge as i32);

    // Over the message limit: tonic refuses the stream with OUT_OF_RANGE and says why.
    big.resize(20 * 1024 * 1024, 0);
    let entry = write(tmp.path(), "Big", "bigger.png", &big);
    let err = client.import_files("demo", vec![entry], |_, _| {}).await.unwrap_err();
    match err {
        facesim_client::ClientError::Rpc(status) => {
            assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
            assert!(status.message().contains("too large"), "{}", status.message());
        }
        other => panic!("unexpected error {other}"),
    }
    let who = client.admin().who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    assert_eq!(who.user.unwrap().name, "admin");
}

#[tokio::test]
async fn lookups_of_missing_things_say_not_found() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let ds = client.datasets();
    assert_eq!(ds.clone().get_image(pb::GetImageRequest { image_id: 42 }).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(
        ds.clone().get_image(pb::GetImageRequest { image_id: 0 }).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        ds.clone().delete_image(pb::DeleteImageRequest { image_id: 42 }).await.unwrap_err().code(),
        Code::NotFound
    );
    let err = ds.clone().get_image_data(pb::GetImageDataRequest { image_id: 42, variant: 99 }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err =
        ds.clone().list_images(pb::ListImagesRequest { identity_id: 77, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = ds
        .clone()
        .list_images(pb::ListImagesRequest { dataset: "../etc".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
