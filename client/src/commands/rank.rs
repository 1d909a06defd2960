//! `facesim rank` (the faces most like a face), `facesim eval retrieval` (mAP and Rank@K of a
//! model on an identity-labelled dataset) and `facesim bench rank` (ranking throughput and
//! latency over gRPC).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use facesim_client::metrics::retrieval;
use facesim_client::{pb, Client, ClientError};
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
        query: Some(face_input(&args.face)?),
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
async fn dataset_images(client: &Client, dataset: &str) -> anyhow::Result<Vec<pb::Image>> {
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
                let face = pb::FaceInput { face: Some(pb::face_input::Face::ImageId(id)) };
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

    let started = Instant::now();
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
    println!(
        "retrieval on {dataset:?}: {} probes, {people} identities, model {model_id} ({})",
        result.probes,
        metric_name(metric)
    );
    println!("mAP      {:.4}", result.map);
    for (k, share) in &result.rank_at {
        println!("Rank@{k:<3} {share:.4}");
    }
    eprintln!("scored all {} probe pairs in {:.1} s", result.probes * result.probes, started.elapsed().as_secs_f64());
    Ok(())
}

/// `facesim bench rank`: `clients` concurrent callers rank random stored images for `seconds`.
pub async fn bench_rank(
    client: &Client,
    clients: usize,
    seconds: f64,
    k: u32,
    mode: Option<ModeArg>,
    model: &str,
) -> anyhow::Result<()> {
    let ids: Vec<u64> = dataset_images(client, "").await?.iter().map(|i| i.id).collect();
    anyhow::ensure!(!ids.is_empty(), "the server has no images to rank");
    let gallery = ids.len();
    let mode = match mode {
        None => pb::SearchMode::Unspecified,
        Some(ModeArg::Exact) => pb::SearchMode::Exact,
        Some(ModeArg::Approximate) => pb::SearchMode::Approximate,
    } as i32;
    let (ids, model) = (std::sync::Arc::new(ids), model.to_string());
    let request = move |i: usize| pb::RankRequest {
        query: Some(pb::FaceInput { face: Some(pb::face_input::Face::ImageId(ids[i % ids.len()])) }),
        k,
        model_id: model.clone(),
        mode,
        ..Default::default()
    };
    // Warm-up: connections, the index, an approximate graph if one is asked for.
    let warm_until = Instant::now() + Duration::from_secs(120);
    loop {
        let r = client.ranking().rank(request(0)).await.map_err(ClientError::from)?.into_inner();
        if r.mode == mode || mode == pb::SearchMode::Unspecified as i32 || Instant::now() > warm_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
                match client.ranking().rank(request(i)).await {
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
        "rank k={k}: {} queries in {elapsed:.1} s by {clients} clients over {} stored images: {:.0} QPS, \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {errors} errors, {approximate} approximate",
        latencies.len(),
        gallery,
        latencies.len() as f64 / elapsed,
        q(0.5),
        q(0.99),
        q(1.0),
    );
    Ok(())
}
