//! One module per command group; each prints plain, aligned text meant for people.

pub mod admin;
pub mod dataset;
pub mod demo;
pub mod eval;
pub mod faces;
pub mod jobs;
pub mod labeling;
pub mod pairs;
pub mod rank;
pub mod rounds;
pub mod soak;
pub mod train;

use facesim_client::{pb, Client, ClientError};

/// Formats a protobuf timestamp as UTC `YYYY-MM-DD HH:MM:SS`.
pub fn time(ts: &Option<prost_types::Timestamp>) -> String {
    let Some(ts) = ts else { return "-".into() };
    let days = ts.seconds.div_euclid(86_400);
    let secs = ts.seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// Follows AIP-158 pages: `fetch(token)` prints one page and returns its next-page token. With
/// `all` every page is fetched; otherwise the first one, and the token of the next is shown.
pub async fn paginate<F, Fut>(mut token: String, all: bool, mut fetch: F) -> anyhow::Result<()>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<String, ClientError>>,
{
    loop {
        let next = fetch(token).await?;
        if next.is_empty() {
            return Ok(());
        }
        if !all {
            eprintln!("more: --page-token {next}");
            return Ok(());
        }
        token = next;
    }
}

pub fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Admin) => "admin",
        Ok(pb::Role::Researcher) => "researcher",
        Ok(pb::Role::Annotator) => "annotator",
        Ok(pb::Role::Service) => "service",
        _ => "?",
    }
}

pub async fn health(client: &Client) -> anyhow::Result<()> {
    use tonic_health::pb::HealthCheckRequest;
    let response = client
        .health()
        .check(HealthCheckRequest { service: String::new() })
        .await
        .map_err(ClientError::from)?
        .into_inner();
    let status = tonic_health::pb::health_check_response::ServingStatus::try_from(response.status)
        .map(|s| s.as_str_name())
        .unwrap_or("UNKNOWN");
    println!("{status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_times() {
        // Reference: `date -u -d @1795398245` prints 2026-11-23 01:44:05.
        let ts = Some(prost_types::Timestamp { seconds: 1_795_398_245, nanos: 0 });
        assert_eq!(super::time(&ts), "2026-11-23 01:44:05");
        assert_eq!(super::time(&Some(prost_types::Timestamp { seconds: 0, nanos: 0 })), "1970-01-01 00:00:00");
        assert_eq!(super::time(&None), "-");
    }
}
