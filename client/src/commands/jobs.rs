//! `facesim jobs ...`: list, follow and cancel background jobs.

use clap::Subcommand;
use facesim_client::{pb, Client, ClientError};
use indicatif::{ProgressBar, ProgressStyle};

use super::{paginate, time};

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        #[arg(long, default_value_t = 20)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
        #[arg(long)]
        all: bool,
    },
    /// One job in detail.
    Show { job_id: u64 },
    /// Follow a job with a progress bar until it ends.
    Watch { job_id: u64 },
    /// Ask a running job to stop.
    Cancel { job_id: u64 },
}

pub fn kind_name(kind: i32) -> String {
    pb::JobKind::try_from(kind)
        .map(|k| k.as_str_name().trim_start_matches("JOB_KIND_").to_lowercase())
        .unwrap_or("?".into())
}

pub fn state_name(state: i32) -> String {
    pb::JobState::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("JOB_STATE_").to_lowercase())
        .unwrap_or("?".into())
}

pub async fn run(client: &Client, command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List { page_size, page_token, all } => {
            println!(
                "{:>6}  {:<11} {:<12} {:>13}  {:<19}  message",
                "id", "kind", "state", "progress", "created (UTC)"
            );
            paginate(page_token, all, |page_token| {
                let mut jobs = client.jobs();
                async move {
                    let page =
                        jobs.list_jobs(pb::ListJobsRequest { kind: 0, page_size, page_token }).await?.into_inner();
                    for j in &page.jobs {
                        let p = j.progress.unwrap_or_default();
                        let progress = format!("{}/{}", p.done, p.total);
                        let (kind, state, created) = (kind_name(j.kind), state_name(j.state), time(&j.create_time));
                        println!("{:>6}  {kind:<11} {state:<12} {progress:>13}  {created:<19}  {}", j.id, j.message);
                    }
                    Ok(page.next_page_token)
                }
            })
            .await
        }
        JobsCommand::Show { job_id } => {
            let j = client.jobs().get_job(pb::GetJobRequest { job_id }).await.map_err(ClientError::from)?.into_inner();
            let p = j.progress.unwrap_or_default();
            println!("job:       {} ({})", j.id, kind_name(j.kind));
            println!("state:     {}", state_name(j.state));
            println!("progress:  {}/{}", p.done, p.total);
            println!("message:   {}", j.message);
            println!("model:     {}", j.model_id);
            println!("device:    {}", j.device);
            if !j.batch_ids.is_empty() {
                let ids: Vec<String> = j.batch_ids.iter().map(u64::to_string).collect();
                println!("batches:   {}", ids.join(", "));
            }
            println!("created:   {} UTC", time(&j.create_time));
            println!("ended:     {}", time(&j.end_time));
            let mut metrics: Vec<_> = j.metrics.iter().collect();
            metrics.sort_by(|a, b| a.0.cmp(b.0));
            for (name, value) in metrics {
                println!("{name}: {value:.3}");
            }
            Ok(())
        }
        JobsCommand::Watch { job_id } => {
            let job = watch(client, job_id).await?;
            println!("job {} {}: {}", job.id, state_name(job.state), job.message);
            if job.state != pb::JobState::Succeeded as i32 {
                anyhow::bail!("job {} ended {}", job.id, state_name(job.state));
            }
            Ok(())
        }
        JobsCommand::Cancel { job_id } => {
            client.jobs().cancel_job(pb::CancelJobRequest { job_id }).await.map_err(ClientError::from)?;
            println!("asked job {job_id} to stop");
            Ok(())
        }
    }
}

/// Follows a job with a progress bar and returns its final state.
pub async fn watch(client: &Client, job_id: u64) -> anyhow::Result<pb::Job> {
    let mut events =
        client.jobs().watch_job(pb::WatchJobRequest { job_id }).await.map_err(ClientError::from)?.into_inner();
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} {prefix} [{bar:40}] {pos}/{len} {msg} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut last = None;
    while let Some(event) = events.message().await.map_err(ClientError::from)? {
        let Some(job) = event.job else { continue };
        let p = job.progress.unwrap_or_default();
        bar.set_prefix(format!("{} job {}", kind_name(job.kind), job.id));
        bar.set_length(p.total);
        bar.set_position(p.done);
        bar.set_message(job.message.clone());
        last = Some(job);
    }
    bar.finish_and_clear();
    last.ok_or_else(|| anyhow::anyhow!("the server sent no state for job {job_id}"))
}
