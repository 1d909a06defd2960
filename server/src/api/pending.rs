//! Services whose API is fixed but whose behaviour arrives with later work: every call answers
//! UNIMPLEMENTED (the generated default), after authentication and role checks like any RPC.

use facesim_proto::v1::{model_service_server::ModelService, training_service_server::TrainingService};

#[derive(Debug, Clone, Copy)]
pub struct Pending;

#[tonic::async_trait]
impl TrainingService for Pending {}
#[tonic::async_trait]
impl ModelService for Pending {}
