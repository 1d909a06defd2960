//! The face pipeline through the real server in detect mode (its default): whole photos are
//! imported with their detected face, a picture without a face is refused by name with the best
//! score, uploads to Embed/Compare are cut the same way, and DetectFaces reports every face.

use facesim_client::{pb, FaceChoice, ImportEntry};
use facesim_server::dataset::FaceMode;
use facesim_tests::TestServer;
use tonic::Code;

fn photos() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/tests/fixtures/faces")
}

fn entry(identity: &str, path: std::path::PathBuf) -> ImportEntry {
    let size = std::fs::metadata(&path).unwrap().len();
    ImportEntry { identity: identity.into(), file_name: path.file_name().unwrap().to_string_lossy().into(), path, size }
}

fn detect_mode(config: &mut facesim_server::Config) {
    config.face_mode = FaceMode::Detect;
}

fn upload(bytes: Vec<u8>, mode: pb::FaceMode) -> Option<pb::FaceInput> {
    Some(pb::FaceInput {
        face: Some(pb::face_input::Face::ImageData(bytes)),
        face_mode: mode as i32,
        ..Default::default()
    })
}

#[tokio::test]
async fn photos_are_cut_at_their_detected_face_and_pictures_without_one_are_refused() {
    let server = TestServer::start_with(detect_mode).await;
    let client = server.admin().await;
    let tmp = tempfile::tempdir().unwrap();

    // A flat grey picture holds no face.
    let mut grey_png = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(200, 160, image::Rgb([128, 128, 128]))
        .write_to(&mut grey_png, image::ImageFormat::Png)
        .unwrap();
    let grey_bytes = grey_png.into_inner();
    let grey = tmp.path().join("grey.png");
    std::fs::write(&grey, &grey_bytes).unwrap();
    let entries = vec![
        entry("Bill_Clinton", photos().join("Bill_Clinton_0001.jpg")),
        entry("Nobody", grey.clone()),
        entry("Ashanti", photos().join("Ashanti_0001.jpg")),
    ];
    let report = client.import_files("photos", entries, |_, _| {}).await.unwrap();
    assert_eq!((report.imported, report.rejected), (2, 1), "{report:?}");
    let refused = report.results.iter().find(|r| r.file_name == "grey.png").unwrap();
    assert_eq!(refused.error, pb::ImportError::NoFace as i32);
    assert!(refused.message.starts_with("no face found; best score 0."), "{}", refused.message);
    assert!(refused.message.ends_with("< 0.50"), "{}", refused.message);

    // The stored image tells where its face is: a box inside the 250x250 photo, 68 landmarks.
    let clinton = report.results.iter().find(|r| r.file_name == "Bill_Clinton_0001.jpg").unwrap();
    let image =
        client.datasets().get_image(pb::GetImageRequest { image_id: clinton.image_id }).await.unwrap().into_inner();
    let face = image.face.expect("a detected face is stored");
    assert_eq!(image.face_count, 1);
    assert_eq!(face.landmarks.len(), 68);
    assert!(face.score > 0.5 && face.score <= 1.0, "{}", face.score);
    let [x, y, w, h] = face.r#box[..] else { panic!("box {:?}", face.r#box) };
    assert!(x > 20.0 && y > 20.0 && x + w < 230.0 && y + h < 230.0 && w > 60.0, "{:?}", face.r#box);

    // The same photo in center mode is the old centred crop: no face recorded.
    let center = FaceChoice { mode: pb::FaceMode::Center as i32, ..Default::default() };
    let again = client.import_files_with("centred", vec![entry("Nobody", grey)], center, |_, _| {}).await.unwrap();
    assert_eq!(again.imported, 1, "center mode takes any picture: {again:?}");
    let stored =
        client.datasets().get_image(pb::GetImageRequest { image_id: again.results[0].image_id }).await.unwrap();
    assert!(stored.into_inner().face.is_none());

    // Uploads are cut the same way: an uploaded photo embeds like its imported copy (the same
    // pipeline), and a picture without a face is INVALID_ARGUMENT with the reason.
    let bytes = std::fs::read(photos().join("Bill_Clinton_0001.jpg")).unwrap();
    let mut ranking = client.ranking();
    let by_upload = ranking
        .embed(pb::EmbedRequest { face: upload(bytes.clone(), pb::FaceMode::Unspecified), model_id: String::new() })
        .await
        .unwrap()
        .into_inner();
    let by_id = ranking
        .embed(pb::EmbedRequest {
            face: Some(pb::FaceInput {
                face: Some(pb::face_input::Face::ImageId(clinton.image_id)),
                ..Default::default()
            }),
            model_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let (a, b) = (by_upload.embedding.unwrap().values, by_id.embedding.unwrap().values);
    let gap = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(gap < 1e-4, "upload and stored crop differ by {gap}");
    let centred = ranking
        .embed(pb::EmbedRequest { face: upload(bytes.clone(), pb::FaceMode::Center), model_id: String::new() })
        .await
        .unwrap()
        .into_inner()
        .embedding
        .unwrap()
        .values;
    let moved = a.iter().zip(&centred).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(moved > 1e-3, "center mode is another crop");
    let err = ranking
        .embed(pb::EmbedRequest {
            face: upload(grey_bytes.clone(), pb::FaceMode::Unspecified),
            model_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("no face found; best score"), "{}", err.message());
    let err = ranking
        .embed(pb::EmbedRequest {
            face: Some(pb::FaceInput {
                face: Some(pb::face_input::Face::ImageData(bytes.clone())),
                min_face_score: 1.5,
                ..Default::default()
            }),
            model_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // DetectFaces: two photos side by side are two faces, largest first, in the image's pixels.
    let (left, right) = (
        image::open(photos().join("Antonio_Banderas_0001.jpg")).unwrap().to_rgb8(),
        image::open(photos().join("Ari_Fleischer_0001.jpg")).unwrap().to_rgb8(),
    );
    let mut pair = image::RgbImage::new(500, 250);
    image::imageops::replace(&mut pair, &left, 0, 0);
    image::imageops::replace(&mut pair, &right, 250, 0);
    let mut png = std::io::Cursor::new(Vec::new());
    pair.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let pair_png = png.into_inner();
    let found = ranking
        .detect_faces(pb::DetectFacesRequest { image_data: pair_png.clone(), min_face_score: 0.0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((found.width, found.height), (500, 250));
    assert!(found.faces.len() >= 2, "{:?}", found.faces.iter().map(|f| &f.r#box).collect::<Vec<_>>());
    let area = |f: &pb::DetectedFace| f.r#box[2] * f.r#box[3];
    assert!(found.faces.windows(2).all(|w| area(&w[0]) >= area(&w[1])), "largest first");
    // The two largest are the two people, one in each half.
    let mut lefts: Vec<f32> = found.faces[..2].iter().map(|f| f.r#box[0]).collect();
    lefts.sort_by(f32::total_cmp);
    assert!(lefts[0] < 250.0 && lefts[1] > 250.0, "one face in each half: {lefts:?}");
    let none = ranking
        .detect_faces(pb::DetectFacesRequest { image_data: grey_bytes, min_face_score: 0.0 })
        .await
        .unwrap()
        .into_inner();
    assert!(none.faces.is_empty() && none.best_score < 0.5, "{none:?}");

    // --all-faces: each face of the pair photo is its own image, `file#k`, largest first, with
    // the face count; importing the file again finds every face stored; center mode refuses.
    let pair_path = tmp.path().join("pair.png");
    std::fs::write(&pair_path, &pair_png).unwrap();
    let all = FaceChoice { all_faces: true, ..Default::default() };
    let report =
        client.import_files_with("group", vec![entry("Pair", pair_path.clone())], all, |_, _| {}).await.unwrap();
    assert_eq!(report.imported as usize, found.faces.len(), "{report:?}");
    let names: Vec<&str> = report.results.iter().map(|r| r.file_name.as_str()).collect();
    let expected: Vec<String> = (1..=found.faces.len()).map(|k| format!("pair.png#{k}")).collect();
    assert_eq!(names, expected);
    assert!(report.results.iter().all(|r| r.index == 0));
    for (result, face) in report.results.iter().zip(&found.faces) {
        let image =
            client.datasets().get_image(pb::GetImageRequest { image_id: result.image_id }).await.unwrap().into_inner();
        assert_eq!(image.face_count as usize, found.faces.len());
        let stored = image.face.expect("a face per record");
        let gap = stored.r#box.iter().zip(&face.r#box).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(
            gap < 1e-3,
            "record {} has the box of face {}: {:?} vs {:?}",
            result.file_name,
            result.index,
            stored.r#box,
            face.r#box
        );
    }
    let again =
        client.import_files_with("group", vec![entry("Pair", pair_path.clone())], all, |_, _| {}).await.unwrap();
    assert_eq!((again.imported, again.duplicates as usize), (0, found.faces.len()), "{again:?}");
    let centred_all = FaceChoice { mode: pb::FaceMode::Center as i32, all_faces: true, ..Default::default() };
    let err =
        client.import_files_with("group", vec![entry("Pair", pair_path)], centred_all, |_, _| {}).await.unwrap_err();
    assert!(err.to_string().contains("needs face_mode detect"), "{err}");
}

/// EstimateTraits: face-api's age and gender net on stored faces, answered in the order asked;
/// the count is bounded and unknown ids are NOT_FOUND (the crowd's look-alike truth uses it).
#[tokio::test]
async fn traits_of_stored_faces_come_back_in_order_and_bad_requests_are_refused() {
    let server = TestServer::start_with(detect_mode).await;
    let client = server.admin().await;
    let people = ["Bill_Clinton", "Angelina_Jolie", "Arnold_Schwarzenegger", "Angela_Merkel"];
    let entries = people.iter().map(|p| entry(p, photos().join(format!("{p}_0001.jpg")))).collect();
    let report = client.import_files("traits", entries, |_, _| {}).await.unwrap();
    assert_eq!(report.imported, 4, "{report:?}");
    let id = |name: &str| report.results.iter().find(|r| r.identity == name).unwrap().image_id;
    let asked = vec![id("Angela_Merkel"), id("Bill_Clinton"), id("Angelina_Jolie"), id("Arnold_Schwarzenegger")];

    let mut datasets = client.datasets();
    let request = |image_ids: Vec<u64>| pb::EstimateTraitsRequest { image_ids };
    let traits = datasets.estimate_traits(request(asked.clone())).await.unwrap().into_inner().traits;
    assert_eq!(traits.iter().map(|t| t.image_id).collect::<Vec<_>>(), asked);
    for t in &traits {
        assert!((18.0..80.0).contains(&t.age), "an adult's apparent age: {t:?}");
        assert!((0.0..=1.0).contains(&t.male_probability), "{t:?}");
    }
    let male: Vec<bool> = traits.iter().map(|t| t.male_probability > 0.5).collect();
    assert_eq!(male, [false, true, false, true], "Merkel, Clinton, Jolie, Schwarzenegger: {traits:?}");
    // The same face asked twice gets the same answer (one net, no randomness).
    let twice = datasets.estimate_traits(request(vec![asked[1], asked[1]])).await.unwrap().into_inner().traits;
    assert_eq!(twice[0], twice[1]);
    assert_eq!(twice[0], traits[1]);

    let err = datasets.estimate_traits(request(Vec::new())).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("give 1 to 1000 image ids, got 0"), "{}", err.message());
    let err = datasets.estimate_traits(request(vec![asked[0]; 1001])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = datasets.estimate_traits(request(vec![asked[0], 987_654])).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("987654"), "{}", err.message());
}
