//! `facesim rank` (the faces most like a face), `facesim eval retrieval` (mAP and Rank@K of a
//! model on an identity-labelled dataset) and `facesim bench rank` (ranking throughput and
//! latency over gRPC).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use facesim_client::{pb, Client, ClientError};
use facesim_metrics::retrieval;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use super::faces::face_input;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MetricArg {
    Euclidean,
    Cosine,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Exact,
    Approximate,
}

#[derive(Debug, Args)]
pub struct RankArgs {
    /// The face: a stored image id or an image file.
    pub face: String,
    /// Number of results.
    #[arg(short, long, default_value_t = 10)]
    pub k: u32,
    /// Model id (default: the active model).
    #[arg(long, default_value = "")]
    pub model: String,
    /// One row per identity, scored by the mean over its images.
    #[arg(long)]
    pub group: bool,
    /// Leave out the query's own identity (query by image id).
    #[arg(long)]
    pub exclude_identity: bool,
    /// Only these identity ids (repeatable).
    #[arg(long = "identity")]
    pub identities: Vec<u64>,
    /// Only these datasets (repeatable).
    #[arg(long = "dataset")]
    pub datasets: Vec<String>,
    /// Drop results worse than this score.
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Score with this metric instead of the model's own.
    #[arg(long, value_enum)]
    pub metric: Option<MetricArg>,
    /// Force exact or approximate search (default: by gallery size).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    #[command(flatten)]
    pub face_args: super::faces::FaceArgs,
}

fn metric_number(metric: Option<MetricArg>) -> i32 {
    match metric {
        None => pb::DistanceMetric::Unspecified as i32,
        Some(MetricArg::Euclidean) => pb::DistanceMetric::Euclidean as i32,
        Some(MetricArg::Cosine) => pb::DistanceMetric::Cosine as i32,
    }
}

fn metric_name(n: i32) -> &'static str {
    if n == pb::DistanceMetric::Cosine as i32 {
        "cosine similarity"
    } else {
        "Euclidean distance"
    }
}

pub async fn rank(client: &Client, args: RankArgs) -> anyhow::Result<()> {
    let request = pb::RankRequest {
        query: Some(face_input(&args.face, args.face_args.choice())?),
        k: args.k,
        score_threshold: args.threshold,
        metric: metric_number(args.metric),
        filter: Some(pb::RankFilter {
            exclude_query_identity: args.exclude_identity,
            identity_ids: args.identities,
            datasets: args.datasets,
        }),
        group_by_identity: args.group,
        model_id: args.model,
        mode: match args.mode {
            None => pb::SearchMode::Unspecified,
            Some(ModeArg::Exact) => pb::SearchMode::Exact,
            Some(ModeArg::Approximate) => pb::SearchMode::Approximate,
        } as i32,
    };
    let r = client.ranking().rank(request).await.map_err(ClientError::from)?.into_inner();
    let mode = if r.mode == pb::SearchMode::Approximate as i32 { "approximate" } else { "exact" };
    println!("model {} · {} · {mode} search · {} results", r.model_id, metric_name(r.metric), r.results.len());
    println!("{:>4}  {:>9}  {:>10}  {:<32} {:>7}", "rank", "image", "score", "identity", "images");
    for (i, row) in r.results.iter().enumerate() {
        println!(
            "{:>4}  {:>9}  {:>10.4}  {:<32} {:>7}",
            i + 1,
            row.image_id,
            row.score,
            format!("{} (#{})", row.identity, row.identity_id),
            row.merged_images
        );
    }
    Ok(())
}

/// Every image of a dataset, with its identity.
pub(crate) async fn dataset_images(client: &Client, dataset: &str) -> anyhow::Result<Vec<pb::Image>> {
    let mut images = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .datasets()
            .list_images(pb::ListImagesRequest { dataset: dataset.into(), identity_id: 0, page_size: 1000, page_token })
            .await
            .map_err(ClientError::from)?
            .into_inner();
        images.extend(page.images);
        if page.next_page_token.is_empty() {
            return Ok(images);
        }
        page_token = page.next_page_token;
    }
}

/// `facesim eval retrieval`: every image of identities with at least `min_images` images is a
/// probe against all the others; the model's embeddings come from the server.
pub async fn eval_retrieval(
    client: &Client,
    dataset: &str,
    model: &str,
    min_images: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let r = retrieval_of(client, dataset, model, min_images, concurrency).await?;
    println!(
        "retrieval on {dataset:?}: {} probes, {} identities, model {} ({})",
        r.result.probes,
        r.people,
        r.model_id,
        metric_name(r.metric)
    );
    println!("mAP      {:.4}", r.result.map);
    for (k, share) in &r.result.rank_at {
        println!("Rank@{k:<3} {share:.4}");
    }
    eprintln!("embedded and scored in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// A model's retrieval figures on a dataset.
pub struct Retrieved {
    pub model_id: String,
    pub metric: i32,
    pub people: usize,
    pub result: facesim_metrics::Retrieval,
}

/// Every image of `dataset` whose identity has at least `min_images` images is a probe against
/// the rest, under `model` (the active one when empty): mAP and Rank@1/5/10.
pub async fn retrieval_of(
    client: &Client,
    dataset: &str,
    model: &str,
    min_images: usize,
    concurrency: usize,
) -> anyhow::Result<Retrieved> {
    let mut images = dataset_images(client, dataset).await?;
    anyhow::ensure!(!images.is_empty(), "dataset {dataset:?} has no images");
    let mut per_identity: HashMap<u64, usize> = HashMap::new();
    for image in &images {
        *per_identity.entry(image.identity_id).or_default() += 1;
    }
    images.retain(|i| per_identity[&i.identity_id] >= min_images.max(2));
    anyhow::ensure!(!images.is_empty(), "no identity of {dataset:?} has {min_images} or more images");
    let people = images.iter().map(|i| i.identity_id).collect::<std::collections::HashSet<_>>().len();
    eprintln!("{} images of {people} identities with >= {} images each", images.len(), min_images.max(2));

    let bar = ProgressBar::new(images.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} embedding [{bar:40}] {pos}/{len} {per_sec} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut responses = futures::stream::iter(images.iter().map(|i| i.id).enumerate())
        .map(|(row, id)| {
            let (client, model) = (client.clone(), model.to_string());
            async move {
                let face = pb::FaceInput { face: Some(pb::face_input::Face::ImageId(id)), ..Default::default() };
                let r = client.ranking().embed(pb::EmbedRequest { face: Some(face), model_id: model }).await;
                anyhow::Ok((row, r.map_err(ClientError::from)?.into_inner()))
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut vectors = vec![Vec::new(); images.len()];
    let mut model_id = String::new();
    while let Some(result) = responses.next().await {
        let (row, response) = result?;
        model_id = response.model_id;
        vectors[row] = response.embedding.unwrap_or_default().values;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let info = client.models().get_model(pb::GetModelRequest { model_id: model_id.clone() }).await;
    let metric = info.map_err(ClientError::from)?.into_inner().metric;
    let cosine = metric == pb::DistanceMetric::Cosine as i32;
    let groups: Vec<u64> = images.iter().map(|i| i.identity_id).collect();
    let result = tokio::task::spawn_blocking(move || {
        let norms: Vec<f32> = vectors.iter().map(|v| v.iter().map(|x| x * x).sum::<f32>().sqrt()).collect();
        let score = |a: usize, b: usize| {
            let (x, y) = (&vectors[a], &vectors[b]);
            if cosine {
                x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>() / (norms[a] * norms[b]).max(f32::MIN_POSITIVE)
            } else {
                x.iter().zip(y).map(|(p, q)| (p - q) * (p - q)).sum::<f32>()
            }
        };
        retrieval(groups.len(), &groups, score, cosine, &[1, 5, 10])
    })
    .await?;
    Ok(Retrieved { model_id, metric, people, result })
}

#[derive(Debug, Args)]
pub struct BenchRankArgs {
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    #[arg(short, long, default_value_t = 10)]
    pub k: u32,
    /// Force exact or approximate search (default: by gallery size).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Model id (default: the active model).
    #[arg(long, default_value = "")]
    pub model: String,
    /// Query with the embeddings in this file (little-endian f32 vectors of the model's
    /// dimension) instead of stored images.
    #[arg(long)]
    pub queries: Option<std::path::PathBuf>,
    /// Dimension of the vectors in `--queries`.
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
    /// Before the timed run, answer this many queries both ways and report the recall@k of the
    /// requested mode against exact search (0: skip).
    #[arg(long, default_value_t = 0)]
    pub recall_sample: usize,
}

/// `facesim bench rank`: concurrent callers rank stored images (or given embeddings) for a while.
pub async fn bench_rank(client: &Client, args: BenchRankArgs) -> anyhow::Result<()> {
    let BenchRankArgs { clients, seconds, k, mode, model, queries, dim, recall_sample } = args;
    let (faces, source): (Vec<pb::face_input::Face>, String) = match &queries {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            anyhow::ensure!(
                dim > 0 && !bytes.is_empty() && bytes.len() % (4 * dim) == 0,
                "{}: {} bytes is not a whole number of {dim}-float vectors",
                path.display(),
                bytes.len()
            );
            let faces: Vec<_> = bytes
                .chunks_exact(4 * dim)
                .map(|v| {
                    let values = v.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                    pb::face_input::Face::Embedding(pb::Embedding { values })
                })
                .collect();
            let source = format!("{} embeddings from {}", faces.len(), path.display());
            (faces, source)
        }
        None => {
            let ids: Vec<u64> = dataset_images(client, "").await?.iter().map(|i| i.id).collect();
            anyhow::ensure!(!ids.is_empty(), "the server has no images to rank");
            let source = format!("{} stored images", ids.len());
            (ids.into_iter().map(pb::face_input::Face::ImageId).collect(), source)
        }
    };
    let mode = match mode {
        None => pb::SearchMode::Unspecified,
        Some(ModeArg::Exact) => pb::SearchMode::Exact,
        Some(ModeArg::Approximate) => pb::SearchMode::Approximate,
    } as i32;
    let faces = std::sync::Arc::new(faces);
    let request = move |i: usize, mode: i32| pb::RankRequest {
        query: Some(pb::FaceInput { face: Some(faces[i % faces.len()].clone()), ..Default::default() }),
        k,
        model_id: model.clone(),
        mode,
        ..Default::default()
    };
    // Warm-up: connections, the index, an approximate graph if one is asked for (a million
    // vectors take 25-40 minutes to index on two cores, seconds once the server saved it).
    let warm_until = Instant::now() + Duration::from_secs(3600);
    let mut said = false;
    loop {
        let r = match client.ranking().rank(request(0, mode)).await {
            Ok(r) => r.into_inner(),
            // The server is still building its first index.
            Err(status) if status.code() == tonic::Code::Unavailable && Instant::now() < warm_until => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(status) => return Err(ClientError::from(status).into()),
        };
        if r.mode == mode || mode == pb::SearchMode::Unspecified as i32 || Instant::now() > warm_until {
            break;
        }
        if !said {
            eprintln!("waiting for the server's approximate index ...");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let recall = if recall_sample > 0 {
        let (mut found, mut wanted) = (0usize, 0usize);
        for i in 0..recall_sample {
            let exact =
                client.ranking().rank(request(i, pb::SearchMode::Exact as i32)).await.map_err(ClientError::from)?;
            let asked = client.ranking().rank(request(i, mode)).await.map_err(ClientError::from)?;
            let asked: Vec<u64> = asked.get_ref().results.iter().map(|r| r.image_id).collect();
            wanted += exact.get_ref().results.len();
            found += exact.get_ref().results.iter().filter(|r| asked.contains(&r.image_id)).count();
        }
        format!(", recall@{k} {:.4} on {recall_sample} queries", found as f64 / wanted.max(1) as f64)
    } else {
        String::new()
    };
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients.max(1) {
        let client = client.clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors, mut modes) = (Vec::new(), 0u64, HashMap::<i32, u64>::new());
            let mut i = c * 7919;
            while Instant::now() < deadline {
                let t = Instant::now();
                match client.ranking().rank(request(i, mode)).await {
                    Ok(r) => {
                        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                        *modes.entry(r.get_ref().mode).or_default() += 1;
                    }
                    Err(_) => errors += 1,
                }
                i += 1;
            }
            (latencies, errors, modes)
        }));
    }
    let (mut latencies, mut errors, mut modes) = (Vec::new(), 0, HashMap::<i32, u64>::new());
    for task in tasks {
        let (l, e, m) = task.await.context("bench client")?;
        latencies.extend(l);
        errors += e;
        for (mode, n) in m {
            *modes.entry(mode).or_default() += n;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let q = |p: f64| facesim_client::crowd::CrowdReport::quantile(&latencies, p);
    let approximate = modes.get(&(pb::SearchMode::Approximate as i32)).copied().unwrap_or(0);
    println!(
        "rank k={k}: {} queries in {elapsed:.1} s by {clients} clients, {source}: {:.0} QPS, \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {errors} errors, {approximate} approximate{recall}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        q(0.5),
        q(0.99),
        q(1.0),
    );
    Ok(())
}
