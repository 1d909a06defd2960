//! Malformed and hostile input over the whole API: every RPC gets empty, truncated, non-UTF-8,
//! out-of-range enum and extreme numeric requests; images of every supported format arrive
//! corrupt, truncated or as decompression bombs; an upload stream stops sending. Each gets a
//! precise status with a readable message, and the server keeps serving.

use std::time::Duration;

use facesim_client::pb;
use facesim_tests::raw::{all_methods, call_raw};
use facesim_tests::{encoded_image, TestServer, ADMIN_TOKEN};
use prost::Message;
use prost_types::field_descriptor_proto::Type;
use tonic::Code;

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn key(field: i32, wire: u64, out: &mut Vec<u8>) {
    varint(((field as u64) << 3) | wire, out);
}

/// The request message type of every method, by path.
fn request_types() -> Vec<(String, prost_types::DescriptorProto)> {
    let fds = prost_types::FileDescriptorSet::decode(facesim_proto::FILE_DESCRIPTOR_SET).unwrap();
    let messages: Vec<(String, prost_types::DescriptorProto)> = fds
        .file
        .iter()
        .flat_map(|f| f.message_type.iter().map(move |m| (format!(".{}.{}", f.package(), m.name()), m.clone())))
        .collect();
    let mut out = vec![];
    for file in fds.file.iter().filter(|f| f.package() == "facesim.v1") {
        for service in &file.service {
            for method in &service.method {
                let path = format!("/facesim.v1.{}/{}", service.name(), method.name());
                let input = messages.iter().find(|(name, _)| name == method.input_type()).unwrap().1.clone();
                out.push((path, input));
            }
        }
    }
    out
}

/// The token that gets past the access check of `method`: annotators' own RPCs refuse admins.
fn token_for(method: &str, annotator: &str) -> String {
    let own = ["NextTask", "SubmitVote", "Skip", "MyStats"];
    if own.iter().any(|m| method.ends_with(&format!("LabelingService/{m}"))) {
        annotator.to_string()
    } else {
        ADMIN_TOKEN.to_string()
    }
}

/// Codes that would mean the server, not the request, is at fault (or that nobody decided).
const SERVER_FAULTS: [Code; 4] = [Code::Internal, Code::Unknown, Code::Unimplemented, Code::DataLoss];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_hostile_requests_precisely() {
    let server = TestServer::start().await;
    let annotator = server.user("anna", pb::Role::Annotator).await;
    facesim_tests::import_demo(&server.admin().await, 2).await;
    let methods = all_methods();
    let types = request_types();
    assert_eq!(methods.len(), types.len());
    let mut failures = Vec::new();
    let mut cases = 0;
    for (method, input) in &types {
        let token = token_for(method, &annotator);
        let mut requests: Vec<(String, Vec<u8>, Option<Code>)> = vec![
            ("empty".into(), vec![], None),
            // Field 1 claims 16 bytes and the message ends after one.
            ("truncated".into(), vec![0x0a, 0x10, 0x01], Some(Code::InvalidArgument)),
            // A varint that never ends.
            (
                "endless varint".into(),
                vec![0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                Some(Code::InvalidArgument),
            ),
        ];
        for field in &input.field {
            let number = field.number();
            match field.r#type() {
                Type::String => {
                    let mut body = vec![];
                    key(number, 2, &mut body);
                    body.extend_from_slice(&[3, 0xff, 0xfe, 0xfd]);
                    requests.push((format!("{} not UTF-8", field.name()), body, Some(Code::InvalidArgument)));
                    let mut body = vec![];
                    key(number, 2, &mut body);
                    let long = "../".repeat(40_000);
                    varint(long.len() as u64, &mut body);
                    body.extend_from_slice(long.as_bytes());
                    requests.push((format!("{} 120 kB of ../", field.name()), body, None));
                }
                Type::Enum => {
                    let mut body = vec![];
                    key(number, 0, &mut body);
                    varint(99, &mut body);
                    requests.push((format!("{} = 99", field.name()), body, Some(Code::InvalidArgument)));
                }
                Type::Uint64 | Type::Uint32 | Type::Int32 | Type::Int64 => {
                    for (what, value) in [("max", u64::MAX), ("-1", u64::MAX), ("zero", 0)] {
                        let mut body = vec![];
                        key(number, 0, &mut body);
                        varint(value, &mut body);
                        requests.push((format!("{} = {what}", field.name()), body, None));
                    }
                }
                Type::Float | Type::Double if field.label() != prost_types::field_descriptor_proto::Label::Repeated => {
                    let mut body = vec![];
                    if field.r#type() == Type::Float {
                        key(number, 5, &mut body);
                        body.extend_from_slice(&f32::NAN.to_le_bytes());
                    } else {
                        key(number, 1, &mut body);
                        body.extend_from_slice(&f64::NAN.to_le_bytes());
                    }
                    requests.push((format!("{} = NaN", field.name()), body, None));
                }
                _ => {}
            }
        }
        for (what, body, want) in requests {
            cases += 1;
            let outcome =
                tokio::time::timeout(Duration::from_secs(30), call_raw(&server, method, Some(&token), body)).await;
            let Ok(outcome) = outcome else {
                failures.push(format!("{method} {what}: no answer in 30 s"));
                continue;
            };
            if std::env::var_os("SHOW_CASES").is_some() {
                eprintln!(
                    "{method} {what}: {:?}",
                    outcome
                        .as_ref()
                        .map(|_| "OK")
                        .map_err(|s| (s.code(), s.message().chars().take(90).collect::<String>()))
                );
            }
            match (outcome, want) {
                (Ok(_), None) => {}
                (Ok(_), Some(code)) => failures.push(format!("{method} {what}: OK, want {code:?}")),
                (Err(status), want) => {
                    if SERVER_FAULTS.contains(&status.code()) || want.is_some_and(|w| w != status.code()) {
                        failures.push(format!(
                            "{method} {what}: {:?} {:?} (want {want:?})",
                            status.code(),
                            status.message()
                        ));
                    } else if status.message().trim().len() < 10 {
                        failures.push(format!("{method} {what}: {:?} without a readable message", status.code()));
                    }
                }
            }
        }
    }
    assert!(cases > 300, "{cases} cases");
    assert!(failures.is_empty(), "{} of {cases} cases failed:\n{}", failures.len(), failures.join("\n"));
    // Still serving.
    server.admin().await.admin().who_am_i(pb::WhoAmIRequest {}).await.unwrap();
}

/// A file of the fuzzing corpus (hostile files kept by `server/tests/fuzz.rs`).
fn corpus(name: &str) -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/tests/fuzz-corpus");
    std::fs::read(dir.join(name)).unwrap()
}

fn import_message(name: &str, data: Vec<u8>) -> pb::ImportImagesRequest {
    pb::ImportImagesRequest {
        dataset: "hostile".into(),
        identity: "Someone".into(),
        file_name: name.into(),
        data,
        ..Default::default()
    }
}

#[tokio::test]
async fn broken_images_of_every_format_and_bombs_are_refused_one_by_one() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let mut messages = Vec::new();
    let formats = [
        ("jpg", image::ImageFormat::Jpeg),
        ("png", image::ImageFormat::Png),
        ("pgm", image::ImageFormat::Pnm),
        ("webp", image::ImageFormat::WebP),
        ("bmp", image::ImageFormat::Bmp),
    ];
    for (ext, format) in formats {
        let good = encoded_image(format, 120, 120);
        messages.push(import_message(&format!("truncated.{ext}"), good[..good.len() / 2].to_vec()));
        // The format's signature, then noise where the header should be.
        let mut corrupt = good[..4].to_vec();
        corrupt.extend((0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        messages.push(import_message(&format!("corrupt.{ext}"), corrupt));
        messages.push(import_message(&format!("signature-only.{ext}"), good[..4].to_vec()));
    }
    // Real decompression bombs: 9,000² (over the side limit) and 7,000² (49 Mpx, over the area
    // limit) black pixels in under 100 kB each.
    for name in ["bomb-9000.png", "bomb-7000.png"] {
        let bomb = corpus(name);
        assert!(bomb.len() < 100_000, "{name}: {} bytes", bomb.len());
        messages.push(import_message(name, bomb));
    }
    let mut report =
        client.datasets().import_images(futures::stream::iter(messages.clone())).await.unwrap().into_inner();
    assert_eq!(report.results.len(), messages.len());
    assert_eq!((report.imported, report.rejected), (0, messages.len() as u32), "{:#?}", report.results);
    let bombs: Vec<_> = report.results.drain(messages.len() - 2..).collect();
    for r in &bombs {
        assert_eq!(r.error, pb::ImportError::DimensionsTooLarge as i32, "{}: {}", r.file_name, r.message);
    }
    for r in &report.results {
        let allowed = [
            pb::ImportError::Corrupt,
            pb::ImportError::UnsupportedFormat,
            pb::ImportError::DimensionsTooLarge,
            pb::ImportError::TooSmall,
        ];
        assert!(allowed.iter().any(|e| *e as i32 == r.error), "{}: {:?} {}", r.file_name, r.error, r.message);
        assert!(r.message.len() > 10, "{} has a readable message", r.file_name);
    }

    // The same bytes given to the RPCs that take an image directly: INVALID_ARGUMENT.
    for message in &messages {
        let face = || {
            Some(pb::FaceInput {
                face: Some(pb::face_input::Face::ImageData(message.data.clone())),
                ..Default::default()
            })
        };
        let error = client.ranking().embed(pb::EmbedRequest { face: face(), ..Default::default() }).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "Embed {}: {}", message.file_name, error.message());
        let error =
            client.ranking().rank(pb::RankRequest { query: face(), k: 5, ..Default::default() }).await.unwrap_err();
        assert!(
            matches!(error.code(), Code::InvalidArgument | Code::Unavailable),
            "Rank {}: {error:?}",
            message.file_name
        );
    }
    client.admin().who_am_i(pb::WhoAmIRequest {}).await.unwrap();
}

fn one_second_idle(config: &mut facesim_server::Config) {
    config.stream_idle_seconds = 1;
}

#[tokio::test]
async fn an_upload_that_stops_sending_is_ended_and_keeps_what_it_sent() {
    let server = TestServer::start_with(one_second_idle).await;
    let client = server.admin().await;
    let face = facesim_tests::demo_subset(1).remove(0);
    let first = pb::ImportImagesRequest {
        dataset: "demo".into(),
        identity: face.identity.clone(),
        file_name: face.file_name.clone(),
        data: std::fs::read(&face.path).unwrap(),
        ..Default::default()
    };
    // One file, then silence with the stream left open.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(first).await.unwrap();
    let started = std::time::Instant::now();
    let mut datasets = client.datasets();
    let call = datasets.import_images(tokio_stream::wrappers::ReceiverStream::new(rx));
    let error = tokio::time::timeout(Duration::from_secs(30), call).await.expect("ended by the server").unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
    assert!(error.message().contains("sent no complete file"), "{}", error.message());
    assert!(started.elapsed() < Duration::from_secs(15));
    drop(tx);
    let images = client.datasets().list_images(pb::ListImagesRequest::default()).await.unwrap().into_inner().images;
    assert_eq!(images.len(), 1, "the file sent before the silence is stored");
    assert_eq!(images[0].file_name, face.file_name);
}

/// Out-of-range values in requests that are valid otherwise, so the value itself is what the
/// server must refuse (the loop above often stops at a missing required field first).
#[tokio::test]
async fn out_of_range_values_in_valid_requests_are_named() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let report = facesim_tests::import_demo(&client, 2).await;
    let image_id = report.results[0].image_id;
    let job = facesim_tests::wait_for_job(&client, report.embedding_job_id).await;
    assert_eq!(job.state, pb::JobState::Succeeded as i32);
    let query = || Some(pb::FaceInput { face: Some(pb::face_input::Face::ImageId(image_id)), ..Default::default() });
    let rank = |r: pb::RankRequest| {
        let client = client.clone();
        async move { client.ranking().rank(r).await.map(|_| ()) }
    };
    let cases: Vec<(&str, Result<(), tonic::Status>, &str)> = vec![
        (
            "GetImageData variant 99",
            client.datasets().get_image_data(pb::GetImageDataRequest { image_id, variant: 99 }).await.map(|_| ()),
            "variant",
        ),
        (
            "GetThumbnail size 0 means default, 100000 is refused",
            client.datasets().get_thumbnail(pb::GetThumbnailRequest { image_id, size: 100_000 }).await.map(|_| ()),
            "size",
        ),
        ("Rank metric 99", rank(pb::RankRequest { query: query(), metric: 99, ..Default::default() }).await, "metric"),
        ("Rank mode 99", rank(pb::RankRequest { query: query(), mode: 99, ..Default::default() }).await, "mode"),
        ("Rank k 5000", rank(pb::RankRequest { query: query(), k: 5000, ..Default::default() }).await, "k"),
        (
            "Rank unknown model",
            rank(pb::RankRequest { query: query(), model_id: "../../etc/passwd".into(), ..Default::default() }).await,
            "model",
        ),
        (
            "ListJobs kind 99",
            client.jobs().list_jobs(pb::ListJobsRequest { kind: 99, ..Default::default() }).await.map(|_| ()),
            "kind",
        ),
        (
            "ProposePairs order 99",
            client
                .proposals()
                .propose_pairs(pb::ProposePairsRequest {
                    limit: Some(pb::propose_pairs_request::Limit::Budget(5)),
                    order: 99,
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            "order",
        ),
        (
            "ProposePairs negative distance",
            client
                .proposals()
                .propose_pairs(pb::ProposePairsRequest {
                    limit: Some(pb::propose_pairs_request::Limit::MaxDistance(-1.0)),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            "max_distance",
        ),
        (
            "ListImages dataset ../x",
            client
                .datasets()
                .list_images(pb::ListImagesRequest { dataset: "../x".into(), ..Default::default() })
                .await
                .map(|_| ()),
            "dataset",
        ),
    ];
    let mut failures = Vec::new();
    for (what, outcome, names) in cases {
        match outcome {
            Err(status) if status.code() == Code::InvalidArgument || status.code() == Code::NotFound => {
                if !status.message().to_lowercase().contains(names) {
                    failures.push(format!("{what}: the message does not name {names:?}: {}", status.message()));
                }
            }
            other => failures.push(format!("{what}: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
