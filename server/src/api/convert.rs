//! Conversions between stored records and API messages, request validation helpers and page
//! tokens (AIP-158).

use base64::Engine as _;
use facesim_proto::v1 as pb;
use tonic::{Request, Status};

use crate::auth::{Principal, Role};
use crate::dataset::{FaceMode, FaceRequest};
use crate::faces::Face;
use crate::store::{
    BatchRecord, FaceRecord, IdentityRecord, ImageRecord, JobRecord, PairRecord, TokenRecord, UserRecord,
};

/// Page size when the request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Larger requested page sizes are reduced to this.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The caller, as the auth layer identified it.
pub fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("the request was not authenticated"))
}

pub fn timestamp(millis: i64) -> Option<prost_types::Timestamp> {
    (millis != 0).then(|| prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    })
}

pub fn page_size(requested: i32) -> Result<usize, Status> {
    match requested {
        n if n < 0 => Err(Status::invalid_argument(format!("page_size must not be negative, got {n}"))),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

/// A page token names the first id of the next page; it is opaque to clients.
pub fn encode_page_token(next_id: Option<u64>) -> String {
    next_id.map(|id| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("fs1:{id}"))).unwrap_or_default()
}

pub fn decode_page_token(token: &str) -> Result<u64, Status> {
    if token.is_empty() {
        return Ok(0);
    }
    let bad = || Status::invalid_argument("page_token is not valid: pass back a next_page_token unchanged");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad())?;
    text.strip_prefix("fs1:").and_then(|id| id.parse().ok()).ok_or_else(bad)
}

/// An id field that must be set.
pub fn required_id(value: u64, field: &str) -> Result<u64, Status> {
    if value == 0 {
        return Err(Status::invalid_argument(format!("{field} must be set (ids start at 1)")));
    }
    Ok(value)
}

pub fn role_from_proto(value: i32) -> Result<Role, Status> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Unspecified) => {
            Err(Status::invalid_argument("role must be given: admin, researcher, annotator or service"))
        }
        Ok(_) => Role::from_number(value).ok_or_else(|| Status::invalid_argument(format!("unknown role {value}"))),
        Err(_) => Err(Status::invalid_argument(format!("unknown role number {value}"))),
    }
}

pub fn user(record: &UserRecord) -> pb::User {
    pb::User {
        id: record.id,
        name: record.name.clone(),
        role: record.role,
        disabled: record.disabled,
        create_time: timestamp(record.create_millis),
    }
}

pub fn token_info(record: &TokenRecord) -> pb::TokenInfo {
    pb::TokenInfo {
        id: record.id,
        user_id: record.user_id,
        description: record.description.clone(),
        create_time: timestamp(record.create_millis),
        expire_time: timestamp(record.expire_millis),
        revoked: record.revoked,
        prefix: record.prefix.clone(),
    }
}

pub fn image(record: &ImageRecord, identity: &str) -> pb::Image {
    pb::Image {
        id: record.id,
        dataset: record.dataset.clone(),
        identity_id: record.identity_id,
        identity: identity.to_string(),
        file_name: record.file_name.clone(),
        content_sha256: hex::encode(&record.sha256),
        format: record.format,
        width: record.width,
        height: record.height,
        byte_size: record.byte_size,
        create_time: timestamp(record.create_millis),
        face: record.face.as_ref().map(stored_face),
        face_count: record.face.as_ref().map_or(0, |f| f.count),
    }
}

fn stored_face(face: &FaceRecord) -> pb::DetectedFace {
    pb::DetectedFace {
        r#box: face.bbox.clone(),
        score: face.score,
        landmarks: face.landmarks.chunks_exact(2).map(|p| pb::Point { x: p[0], y: p[1] }).collect(),
    }
}

/// A face the detector found.
pub fn detected_face(face: &Face) -> pb::DetectedFace {
    let b = &face.bbox;
    pb::DetectedFace {
        r#box: vec![b.x as f32, b.y as f32, b.width as f32, b.height as f32],
        score: face.score,
        landmarks: face.landmarks.iter().map(|p| pb::Point { x: p.x as f32, y: p.y as f32 }).collect(),
    }
}

/// A request's face mode and threshold (`field` names them in errors).
pub fn face_request(mode: i32, min_face_score: f32, field: &str) -> Result<FaceRequest, Status> {
    let mode = match pb::FaceMode::try_from(mode) {
        Ok(pb::FaceMode::Unspecified) => None,
        Ok(pb::FaceMode::Detect) => Some(FaceMode::Detect),
        Ok(pb::FaceMode::Center) => Some(FaceMode::Center),
        Err(_) => return Err(Status::invalid_argument(format!("{field}face_mode: unknown face mode {mode}"))),
    };
    let min_score = match min_face_score {
        0.0 => None,
        s if (0.0..1.0).contains(&s) => Some(s),
        s => {
            return Err(Status::invalid_argument(format!(
                "{field}min_face_score must be between 0 and 1 (0 = the server's default), got {s}"
            )))
        }
    };
    Ok(FaceRequest { mode, min_score })
}

pub fn identity(record: &IdentityRecord) -> pb::Identity {
    pb::Identity {
        id: record.id,
        dataset: record.dataset.clone(),
        name: record.name.clone(),
        image_count: record.image_count,
    }
}

pub fn job(record: &JobRecord) -> pb::Job {
    pb::Job {
        id: record.id,
        kind: record.kind,
        state: record.state,
        progress: Some(pb::Progress { done: record.done, total: record.total }),
        message: record.message.clone(),
        created_by: record.created_by,
        create_time: timestamp(record.create_millis),
        start_time: timestamp(record.start_millis),
        end_time: timestamp(record.end_millis),
        device: record.device.clone(),
        model_id: record.model_id.clone(),
        batch_ids: record.batch_ids.clone(),
        metrics: record.metrics.clone(),
    }
}

pub fn pair(record: &PairRecord) -> pb::Pair {
    pb::Pair {
        id: record.id,
        image_a: record.image_a,
        image_b: record.image_b,
        identity_a: record.identity_a,
        identity_b: record.identity_b,
        distance: record.distance,
        model_id: record.model_id.clone(),
        batch_id: record.batch_id,
        state: record.state,
        votes: record.votes,
        create_time: timestamp(record.create_millis),
    }
}

pub fn batch(record: &BatchRecord) -> pb::Batch {
    pb::Batch {
        id: record.id,
        state: record.state,
        pair_count: record.pair_count,
        proposal_job_id: record.proposal_job_id,
        model_id: record.model_id.clone(),
        note: record.note.clone(),
        create_time: timestamp(record.create_millis),
        shuffle_seed: record.shuffle_seed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        assert_eq!(decode_page_token(&encode_page_token(Some(42))).unwrap(), 42);
        assert_eq!(encode_page_token(None), "");
        assert_eq!(decode_page_token("").unwrap(), 0);
        for bad in ["42", "!!!", "ZnMxOmFiYw"] {
            assert_eq!(decode_page_token(bad).unwrap_err().code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn page_sizes_follow_aip_158() {
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(5000).unwrap(), MAX_PAGE_SIZE);
        assert_eq!(page_size(-1).unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn timestamps_keep_millis() {
        let ts = timestamp(1_700_000_000_123).unwrap();
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_000_000));
        assert_eq!(timestamp(0), None);
    }
}
