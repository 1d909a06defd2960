//! Hostile uploads keep the real server's memory bounded: decompression bombs over the limits
//! cost nothing, a bomb just inside them costs about its decoded size, and an oversized message
//! is refused before it is buffered. Peak resident memory (VmHWM) is read from /proc.

use std::io::Write;

use facesim_proto::v1::{self as pb, dataset_service_client::DatasetServiceClient};
use facesim_tests::process::*;

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn chunk(kind: &[u8; 4], data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A valid grayscale PNG of `side`² black pixels: a few hundred kB that inflate to `side`² bytes.
fn png_bomb(side: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = side.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(b"IHDR", &ihdr, &mut out);
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let row = vec![0u8; side as usize + 1];
    for _ in 0..side {
        zlib.write_all(&row).unwrap();
    }
    chunk(b"IDAT", &zlib.finish().unwrap(), &mut out);
    chunk(b"IEND", &[], &mut out);
    out
}

/// Peak resident memory of a process in MiB.
fn peak_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

fn message(name: &str, data: Vec<u8>) -> pb::ImportImagesRequest {
    pb::ImportImagesRequest {
        dataset: "hostile".into(),
        identity: "Nobody".into(),
        file_name: name.into(),
        data,
        ..Default::default()
    }
}

#[tokio::test]
async fn hostile_uploads_keep_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = start(dir.path(), true);
    let mut datasets = DatasetServiceClient::connect(url.clone()).await.unwrap();
    // One ordinary import first, so the baseline includes a warmed-up decoder and descriptor.
    let report = datasets.import_images(admin(futures::stream::iter(demo_messages()))).await.unwrap().into_inner();
    assert_eq!(report.imported, 5);
    finished_job(&url, report.embedding_job_id).await;
    let baseline = peak_mib(server.pid());

    // Over the limits: 30,000² (900 MB decoded) and 7,000² (49 Mpx > 40 Mpx), five times each.
    let (huge, wide) = (png_bomb(30_000), png_bomb(7_000));
    for round in 0..5 {
        let stream = vec![
            message(&format!("huge-{round}.png"), huge.clone()),
            message(&format!("wide-{round}.png"), wide.clone()),
        ];
        let report = datasets.import_images(admin(futures::stream::iter(stream))).await.unwrap().into_inner();
        assert!(
            report.results.iter().all(|r| r.error == pb::ImportError::DimensionsTooLarge as i32),
            "{:?}",
            report.results
        );
    }
    let after_bombs = peak_mib(server.pid());
    assert!(
        after_bombs - baseline < 64.0,
        "bombs over the limits raised the peak from {baseline:.0} to {after_bombs:.0} MiB"
    );

    // A message over the 16 MiB limit is refused by its length prefix.
    let big = message("big.png", vec![0u8; 40 * 1024 * 1024]);
    let status = datasets.import_images(admin(futures::stream::iter(vec![big]))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    let after_big = peak_mib(server.pid());
    assert!(
        after_big - baseline < 64.0,
        "a refused 40 MiB message raised the peak from {baseline:.0} to {after_big:.0} MiB"
    );

    // Just inside the limits (6,000² = 36 Mpx): decoded, so it costs about its pixels, and it is
    // refused afterwards only if no face fits; memory comes back bounded by the limit.
    let inside = png_bomb(6_000);
    let report =
        datasets.import_images(admin(futures::stream::iter(vec![message("inside.png", inside)]))).await.unwrap();
    assert_eq!(report.into_inner().results.len(), 1);
    let after_inside = peak_mib(server.pid());
    // 36 M grey pixels, their RGB copy for the crop, and the decoder's buffers.
    assert!(
        after_inside - baseline < 400.0,
        "a 36 Mpx image raised the peak from {baseline:.0} to {after_inside:.0} MiB"
    );
    eprintln!("peak MiB: baseline {baseline:.0}, after bombs {after_bombs:.0}, after 40 MiB message {after_big:.0}, after 36 Mpx image {after_inside:.0}");
    drop(server);
}
