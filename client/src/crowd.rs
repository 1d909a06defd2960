//! Simulated annotators that label through the real API: each takes a task, waits its answer
//! time, answers from a ground-truth rule (wrong on purpose at a chosen rate) and votes. Used by
//! `facesim crowd simulate`, `facesim bench votes`, the tests and the demo.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tonic::Code;

use crate::{pb, Client, ClientError};

/// How a simulated annotator knows the right answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Truth {
    /// Two photos of one identity are similar, of two identities dissimilar.
    Identity,
    /// Pairs nearer than this distance (under the proposing model) are similar.
    Distance(f32),
    /// A stand-in for human look-alike judgment from visible traits ([`LookAlike`]).
    LookAlike(LookAlike),
    /// A fair coin per pair, needing no look-up (load benchmarks).
    Coin,
}

/// The simulated look-alike judgment, a stand-in for people's: two faces look alike when they
/// seem the same gender, their apparent ages are close and their faces are near under the
/// pretrained descriptor (a looser cut than its same-person threshold). Ages and genders are
/// the server's estimates (face-api's age and gender net, `EstimateTraits`), so this truth is
/// *not* identity: two photos of one person a decade apart, or estimated as different genders,
/// are dissimilar; two strangers of one age and gender with near faces are similar.
///
/// Each annotator has a strictness `s`, drawn once from its seed uniformly in `[-spread,
/// spread]`: its age tolerance is `max_age_gap · (1 + s)` and its distance cut
/// `max_distance · (1 + s / 4)` (positive `s`: looser). Wrong-on-purpose answers
/// ([`CrowdConfig::error_rate`]) come on top.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LookAlike {
    /// Largest apparent-age gap, in years, of two look-alikes (for a neutral annotator).
    pub max_age_gap: f32,
    /// Largest descriptor distance of two look-alikes (for a neutral annotator).
    pub max_distance: f32,
    /// How far annotators' strictness spreads around neutral (0: all alike).
    pub spread: f32,
}

impl Default for LookAlike {
    fn default() -> Self {
        LookAlike { max_age_gap: 12.0, max_distance: 0.6, spread: 0.3 }
    }
}

/// What the look-alike judgment of one pair reads.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PairTraits {
    same_gender: bool,
    age_gap: f32,
    /// Under the pretrained descriptor.
    distance: f32,
}

/// One annotator's own cuts.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Judge {
    max_age_gap: f32,
    max_distance: f32,
}

impl Judge {
    fn new(rule: &LookAlike, rng: &mut impl Rng) -> Judge {
        let spread = rule.spread.clamp(0.0, 0.9);
        let s = if spread > 0.0 { rng.random_range(-spread..=spread) } else { 0.0 };
        Judge { max_age_gap: rule.max_age_gap * (1.0 + s), max_distance: rule.max_distance * (1.0 + s / 4.0) }
    }

    fn similar(&self, t: &PairTraits) -> bool {
        t.same_gender && t.age_gap <= self.max_age_gap && t.distance <= self.max_distance
    }
}

#[derive(Debug, Clone)]
pub struct CrowdConfig {
    pub truth: Truth,
    /// Share of answers flipped on purpose.
    pub error_rate: f64,
    /// Time between getting a task and voting (each vote takes up to 30% longer, never less).
    pub answer_time: Duration,
    /// Stop after this many acknowledged votes in all (None: until no task is left).
    pub max_votes: Option<u64>,
    /// Stop at this time (None: until no task is left).
    pub deadline: Option<Instant>,
    /// Only tasks of this batch (0: any open batch).
    pub batch_id: u64,
    pub seed: u64,
}

/// What the crowd did.
#[derive(Debug, Clone, Default)]
pub struct CrowdReport {
    pub votes: u64,
    pub retries_too_fast: u64,
    pub lapsed_leases: u64,
    pub flipped: u64,
    /// Milliseconds of each acknowledged `SubmitVote` call.
    pub vote_latencies_ms: Vec<f64>,
    pub task_latencies_ms: Vec<f64>,
    pub per_annotator: Vec<(String, u64)>,
    pub elapsed: Duration,
}

impl CrowdReport {
    /// The q-quantile (0..=1) of a latency list, in ms.
    pub fn quantile(values: &[f64], q: f64) -> f64 {
        if values.is_empty() {
            return f64::NAN;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[((sorted.len() - 1) as f64 * q).round() as usize]
    }
}

/// What is known about a pair's truth.
#[derive(Debug, Clone, Copy)]
enum Fact {
    Similar(bool),
    Traits(PairTraits),
}

/// Looks up the truth of pairs through a researcher's client, once per pair.
#[derive(Clone)]
struct Oracle {
    client: Client,
    truth: Truth,
    cache: Arc<Mutex<HashMap<u64, Fact>>>,
    /// Apparent age and P(male) per image: faces recur across pairs.
    traits: Arc<Mutex<HashMap<u64, (f32, f32)>>>,
}

impl Oracle {
    /// Whether the pair is similar to an annotator who judges with `judge` (look-alike truth).
    async fn similar(&self, pair_id: u64, judge: Option<&Judge>) -> Result<bool, ClientError> {
        if self.truth == Truth::Coin {
            return Ok(pair_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 63 == 1);
        }
        let cached = self.cache.lock().expect("not poisoned").get(&pair_id).copied();
        let fact = match cached {
            Some(fact) => fact,
            None => {
                let fact = self.look_up(pair_id).await?;
                self.cache.lock().expect("not poisoned").insert(pair_id, fact);
                fact
            }
        };
        Ok(match (fact, judge) {
            (Fact::Similar(similar), _) => similar,
            (Fact::Traits(traits), Some(judge)) => judge.similar(&traits),
            (Fact::Traits(_), None) => unreachable!("look-alike annotators have a judge"),
        })
    }

    async fn look_up(&self, pair_id: u64) -> Result<Fact, ClientError> {
        let pair = self.client.proposals().get_pair(pb::GetPairRequest { pair_id }).await?.into_inner();
        Ok(match self.truth {
            Truth::Identity => Fact::Similar(pair.identity_a == pair.identity_b),
            Truth::Distance(t) => Fact::Similar(pair.distance < t),
            Truth::LookAlike(_) => {
                let ((age_a, male_a), (age_b, male_b)) = self.traits_of(pair.image_a, pair.image_b).await?;
                let face = |id: u64| {
                    Some(pb::FaceInput { face: Some(pb::face_input::Face::ImageId(id)), ..Default::default() })
                };
                let request = pb::CompareRequest {
                    a: face(pair.image_a),
                    b: face(pair.image_b),
                    model_id: DESCRIPTOR_MODEL.into(),
                };
                let distance = self.client.ranking().compare(request).await?.into_inner().score;
                Fact::Traits(PairTraits {
                    same_gender: (male_a > 0.5) == (male_b > 0.5),
                    age_gap: (age_a - age_b).abs(),
                    distance,
                })
            }
            Truth::Coin => unreachable!("answered without a look-up"),
        })
    }
}

impl Oracle {
    /// Apparent (age, P(male)) of two images, asking the server only for those not seen yet.
    async fn traits_of(&self, a: u64, b: u64) -> Result<((f32, f32), (f32, f32)), ClientError> {
        let missing: Vec<u64> = {
            let known = self.traits.lock().expect("not poisoned");
            let mut missing: Vec<u64> = [a, b].into_iter().filter(|id| !known.contains_key(id)).collect();
            missing.dedup();
            missing
        };
        if !missing.is_empty() {
            let request = pb::EstimateTraitsRequest { image_ids: missing };
            let answer = self.client.datasets().estimate_traits(request).await?.into_inner().traits;
            let mut known = self.traits.lock().expect("not poisoned");
            for t in answer {
                known.insert(t.image_id, (t.age, t.male_probability));
            }
        }
        let known = self.traits.lock().expect("not poisoned");
        match (known.get(&a), known.get(&b)) {
            (Some(&x), Some(&y)) => Ok((x, y)),
            _ => Err(ClientError::Rpc(tonic::Status::internal("EstimateTraits did not answer for both faces"))),
        }
    }
}

/// The pretrained descriptor's model id: the look-alike judgment's face distance.
const DESCRIPTOR_MODEL: &str = "descriptor/v1";

struct Shared {
    report: Mutex<CrowdReport>,
    votes: std::sync::atomic::AtomicU64,
}

/// Runs `annotators` (name, client with its token) until the tasks, the vote budget or the time
/// run out. `researcher` reads pairs for the ground truth.
pub async fn run_crowd(
    researcher: &Client,
    annotators: Vec<(String, Client)>,
    config: CrowdConfig,
) -> Result<CrowdReport, ClientError> {
    let oracle =
        Oracle { client: researcher.clone(), truth: config.truth, cache: Arc::default(), traits: Arc::default() };
    let shared = Arc::new(Shared { report: Mutex::new(CrowdReport::default()), votes: 0.into() });
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, (name, client)) in annotators.into_iter().enumerate() {
        let (oracle, shared, config) = (oracle.clone(), shared.clone(), config.clone());
        tasks.push(tokio::spawn(async move {
            let votes = annotate(&client, &oracle, &shared, &config, config.seed.wrapping_add(i as u64)).await?;
            shared.report.lock().expect("not poisoned").per_annotator.push((name, votes));
            Ok::<_, ClientError>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| ClientError::Rpc(tonic::Status::internal(format!("annotator task failed: {e}"))))??;
    }
    let mut report = std::mem::take(&mut *shared.report.lock().expect("not poisoned"));
    report.elapsed = started.elapsed();
    report.per_annotator.sort();
    Ok(report)
}

fn out_of_budget(shared: &Shared, config: &CrowdConfig) -> bool {
    config.max_votes.is_some_and(|m| shared.votes.load(std::sync::atomic::Ordering::SeqCst) >= m)
        || config.deadline.is_some_and(|d| Instant::now() >= d)
}

async fn annotate(
    client: &Client,
    oracle: &Oracle,
    shared: &Shared,
    config: &CrowdConfig,
    seed: u64,
) -> Result<u64, ClientError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let judge = match config.truth {
        Truth::LookAlike(rule) => Some(Judge::new(&rule, &mut rng)),
        _ => None,
    };
    let mut labeling = client.labeling();
    let mut mine = 0;
    while !out_of_budget(shared, config) {
        let asked = Instant::now();
        let task = labeling.next_task(pb::NextTaskRequest { batch_id: config.batch_id }).await?.into_inner();
        let task_ms = asked.elapsed().as_secs_f64() * 1000.0;
        if task.done {
            break;
        }
        let similar = oracle.similar(task.pair_id, judge.as_ref()).await?;
        let right = if similar { pb::VoteChoice::Similar } else { pb::VoteChoice::Dissimilar };
        let flip = rng.random_bool(config.error_rate.clamp(0.0, 1.0));
        let choice = match (right, flip) {
            (pb::VoteChoice::Similar, true) => pb::VoteChoice::Dissimilar,
            (_, true) => pb::VoteChoice::Similar,
            (r, false) => r,
        };
        if !config.answer_time.is_zero() {
            let jitter = rng.random_range(1.0..1.3);
            tokio::time::sleep(config.answer_time.mul_f64(jitter)).await;
        }
        loop {
            let sent = Instant::now();
            let result =
                labeling.submit_vote(pb::SubmitVoteRequest { lease_id: task.lease_id, choice: choice as i32 }).await;
            let vote_ms = sent.elapsed().as_secs_f64() * 1000.0;
            match result {
                Ok(_) => {
                    mine += 1;
                    shared.votes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let mut report = shared.report.lock().expect("not poisoned");
                    report.votes += 1;
                    report.flipped += u64::from(flip);
                    report.vote_latencies_ms.push(vote_ms);
                    report.task_latencies_ms.push(task_ms);
                    break;
                }
                Err(status) if status.code() == Code::FailedPrecondition && status.message().contains("too fast") => {
                    shared.report.lock().expect("not poisoned").retries_too_fast += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) if matches!(status.code(), Code::FailedPrecondition | Code::NotFound) => {
                    // The lease lapsed (or the pair went away): take another task.
                    shared.report.lock().expect("not poisoned").lapsed_leases += 1;
                    break;
                }
                Err(status) => return Err(status.into()),
            }
        }
    }
    Ok(mine)
}

/// Sets plain labeling instructions, with example pairs from the first stored images, unless
/// instructions exist: the server hands out no task before there are some. For benchmarks and
/// tests, whose simulated annotators read nothing; a real round gets a researcher's own
/// (`facesim labeling instructions set`). Returns whether it set them. Needs a researcher.
pub async fn ensure_instructions(researcher: &Client) -> Result<bool, ClientError> {
    let mut labeling = researcher.labeling();
    if labeling.get_instructions(pb::GetInstructionsRequest {}).await.is_ok() {
        return Ok(false);
    }
    let request = pb::ListImagesRequest { page_size: 3, ..Default::default() };
    let images: Vec<u64> =
        researcher.datasets().list_images(request).await?.into_inner().images.iter().map(|i| i.id).collect();
    let [first, second, rest @ ..] = images.as_slice() else {
        return Err(ClientError::Rpc(tonic::Status::failed_precondition(
            "labeling instructions need example pairs: import at least two images first",
        )));
    };
    let other = rest.first().copied().unwrap_or(*first);
    let example =
        |image_a, image_b, explanation: &str| pb::ExampleRef { image_a, image_b, explanation: explanation.into() };
    let request = pb::SetInstructionsRequest {
        text: "Do these two faces look alike? Judge the faces only.".into(),
        similar_examples: vec![example(*first, *second, "an example pair")],
        dissimilar_examples: vec![example(*second, other, "another example pair")],
    };
    labeling.set_instructions(request).await?;
    Ok(true)
}

/// Makes (or reuses) annotator accounts `prefix-1 .. prefix-n` and returns clients with fresh
/// tokens, each on a connection of its own. Needs an admin client.
pub async fn annotator_clients(admin: &Client, prefix: &str, n: usize) -> Result<Vec<(String, Client)>, ClientError> {
    let mut existing = HashMap::new();
    let mut page_token = String::new();
    loop {
        let page = admin.admin().list_users(pb::ListUsersRequest { page_size: 1000, page_token }).await?.into_inner();
        existing.extend(page.users.into_iter().map(|u| (u.name.clone(), u)));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let mut out = Vec::with_capacity(n);
    for i in 1..=n {
        let name = format!("{prefix}-{i}");
        let token = match existing.get(&name) {
            Some(user) if user.role == pb::Role::Annotator as i32 => {
                let request = pb::CreateTokenRequest { user_id: user.id, description: "crowd".into(), ttl_seconds: 0 };
                admin.admin().create_token(request).await?.into_inner().token
            }
            Some(_) => {
                return Err(ClientError::Rpc(tonic::Status::already_exists(format!(
                    "user {name} exists and is not an annotator"
                ))))
            }
            None => {
                let request = pb::CreateUserRequest {
                    name: name.clone(),
                    role: pb::Role::Annotator as i32,
                    token_ttl_seconds: 0,
                };
                admin.admin().create_user(request).await?.into_inner().token
            }
        };
        out.push((name, admin.connect_as(Some(&token)).await?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn judges_spread_around_the_rule_and_need_all_three_conditions() {
        let rule = LookAlike { max_age_gap: 8.0, max_distance: 0.6, spread: 0.3 };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let judges: Vec<Judge> = (0..200).map(|_| Judge::new(&rule, &mut rng)).collect();
        for j in &judges {
            assert!((5.6 - 1e-4..=10.4 + 1e-4).contains(&j.max_age_gap), "{j:?}");
            assert!((0.6 * 0.925 - 1e-5..=0.6 * 1.075 + 1e-5).contains(&j.max_distance), "{j:?}");
        }
        let gaps: Vec<f32> = judges.iter().map(|j| j.max_age_gap).collect();
        assert!(gaps.iter().any(|&g| g < 6.5) && gaps.iter().any(|&g| g > 9.5), "some stricter, some looser");

        let neutral = Judge::new(&LookAlike { spread: 0.0, ..rule }, &mut rng);
        assert_eq!(neutral, Judge { max_age_gap: 8.0, max_distance: 0.6 });
        let alike = PairTraits { same_gender: true, age_gap: 7.9, distance: 0.59 };
        assert!(neutral.similar(&alike));
        assert!(!neutral.similar(&PairTraits { same_gender: false, ..alike }));
        assert!(!neutral.similar(&PairTraits { age_gap: 8.1, ..alike }));
        assert!(!neutral.similar(&PairTraits { distance: 0.61, ..alike }));
    }
}
