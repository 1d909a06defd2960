//! The shared state handed to every service: built once in `serve`, passed down by `Arc`.

use crate::auth::Auth;
use crate::config::Config;
use crate::dataset::Datasets;
use crate::jobs::Jobs;
use crate::labeling::Labeling;
use crate::models::descriptor::Embedder;
use crate::models::Registry;
use crate::proposal::Proposals;
use crate::ranking::Ranking;
use crate::store::Store;
use crate::training::Training;
use crate::workflows::Workflows;

pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub auth: Auth,
    pub datasets: Datasets,
    pub jobs: Jobs,
    pub embedder: Embedder,
    pub ranking: Ranking,
    pub proposals: Proposals,
    pub labeling: Labeling,
    pub training: Training,
    pub registry: Registry,
    pub workflows: Workflows,
}
