//! The access table: for every RPC of the API, the roles that may call it. A test checks that
//! the table names exactly the methods of the compiled proto files, so no RPC is ever left open
//! by accident.

use super::Role;
use Role::{Admin, Annotator, Researcher, Service};

const ADMIN: &[Role] = &[Admin];
const RESEARCH: &[Role] = &[Admin, Researcher];
const LABEL: &[Role] = &[Annotator];
const READ_INSTRUCTIONS: &[Role] = &[Admin, Researcher, Annotator];
const RANK: &[Role] = &[Admin, Researcher, Service];
const ANYONE: &[Role] = &[Admin, Researcher, Annotator, Service];

/// `(full gRPC method path, roles allowed)` for every RPC.
pub const RPC_POLICY: &[(&str, &[Role])] = &[
    ("/facesim.v1.AdminService/CreateUser", ADMIN),
    ("/facesim.v1.AdminService/GetUser", ADMIN),
    ("/facesim.v1.AdminService/ListUsers", ADMIN),
    ("/facesim.v1.AdminService/SetUserDisabled", ADMIN),
    ("/facesim.v1.AdminService/CreateToken", ADMIN),
    ("/facesim.v1.AdminService/ListTokens", ADMIN),
    ("/facesim.v1.AdminService/RevokeToken", ADMIN),
    ("/facesim.v1.AdminService/WhoAmI", ANYONE),
    ("/facesim.v1.DatasetService/ImportImages", RESEARCH),
    ("/facesim.v1.DatasetService/ListDatasets", RESEARCH),
    ("/facesim.v1.DatasetService/ListIdentities", RESEARCH),
    ("/facesim.v1.DatasetService/ListImages", RESEARCH),
    ("/facesim.v1.DatasetService/GetImage", RESEARCH),
    ("/facesim.v1.DatasetService/GetImageData", RESEARCH),
    ("/facesim.v1.DatasetService/EstimateTraits", RESEARCH),
    ("/facesim.v1.DatasetService/GetThumbnail", RESEARCH),
    ("/facesim.v1.DatasetService/DeleteImage", RESEARCH),
    ("/facesim.v1.JobService/GetJob", RESEARCH),
    ("/facesim.v1.JobService/ListJobs", RESEARCH),
    ("/facesim.v1.JobService/WatchJob", RESEARCH),
    ("/facesim.v1.JobService/CancelJob", RESEARCH),
    ("/facesim.v1.ProposalService/ProposePairs", RESEARCH),
    ("/facesim.v1.ProposalService/GetDistanceHistogram", RESEARCH),
    ("/facesim.v1.ProposalService/ListPairs", RESEARCH),
    ("/facesim.v1.ProposalService/GetPair", RESEARCH),
    ("/facesim.v1.ProposalService/ListBatches", RESEARCH),
    ("/facesim.v1.ProposalService/GetBatch", RESEARCH),
    ("/facesim.v1.ProposalService/SetBatchState", RESEARCH),
    ("/facesim.v1.LabelingService/NextTask", LABEL),
    ("/facesim.v1.LabelingService/SubmitVote", LABEL),
    ("/facesim.v1.LabelingService/Skip", LABEL),
    ("/facesim.v1.LabelingService/GetInstructions", READ_INSTRUCTIONS),
    ("/facesim.v1.LabelingService/MyStats", LABEL),
    ("/facesim.v1.LabelingService/SetInstructions", RESEARCH),
    ("/facesim.v1.LabelingService/GetBatchProgress", RESEARCH),
    ("/facesim.v1.LabelingService/ListAnnotatorStats", RESEARCH),
    ("/facesim.v1.LabelingService/GetAgreement", RESEARCH),
    ("/facesim.v1.LabelingService/AddGoldPairs", RESEARCH),
    ("/facesim.v1.LabelingService/SetAnnotatorEnabled", RESEARCH),
    ("/facesim.v1.LabelingService/ListLabels", RESEARCH),
    ("/facesim.v1.LabelingService/ListVotes", RESEARCH),
    ("/facesim.v1.TrainingService/StartTraining", RESEARCH),
    ("/facesim.v1.TrainingService/StartEvaluation", RESEARCH),
    ("/facesim.v1.TrainingService/GetEvaluation", RESEARCH),
    ("/facesim.v1.TrainingService/ListEvaluations", RESEARCH),
    ("/facesim.v1.ModelService/ListModels", RANK),
    ("/facesim.v1.ModelService/GetModel", RANK),
    ("/facesim.v1.ModelService/GetActiveModel", RANK),
    ("/facesim.v1.ModelService/ActivateModel", RESEARCH),
    ("/facesim.v1.ModelService/CompareModels", RESEARCH),
    ("/facesim.v1.ModelService/DeleteModel", RESEARCH),
    ("/facesim.v1.RankingService/Rank", RANK),
    ("/facesim.v1.RankingService/BatchRank", RANK),
    ("/facesim.v1.RankingService/Compare", RANK),
    ("/facesim.v1.RankingService/Embed", RANK),
    ("/facesim.v1.RankingService/DetectFaces", RANK),
];

/// The roles allowed on `method`, or `None` when the path is not a facesim RPC.
pub fn allowed_roles(method: &str) -> Option<&'static [Role]> {
    RPC_POLICY.iter().find(|(path, _)| *path == method).map(|(_, roles)| *roles)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use prost::Message;

    use super::*;

    /// Every method of every facesim service, read from the compiled descriptor set.
    fn methods_in_protos() -> BTreeSet<String> {
        let fds = prost_types::FileDescriptorSet::decode(facesim_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut out = BTreeSet::new();
        for file in fds.file.iter().filter(|f| f.package() == "facesim.v1") {
            for service in &file.service {
                for method in &service.method {
                    out.insert(format!("/facesim.v1.{}/{}", service.name(), method.name()));
                }
            }
        }
        out
    }

    #[test]
    fn policy_covers_exactly_the_api() {
        let in_table: BTreeSet<String> = RPC_POLICY.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(in_table.len(), RPC_POLICY.len(), "a method is listed twice");
        let in_protos = methods_in_protos();
        let missing: Vec<_> = in_protos.difference(&in_table).collect();
        let stale: Vec<_> = in_table.difference(&in_protos).collect();
        assert!(missing.is_empty(), "RPCs without an access rule: {missing:?}");
        assert!(stale.is_empty(), "access rules for RPCs that do not exist: {stale:?}");
    }

    #[test]
    fn annotators_only_label_and_services_only_rank() {
        for (path, roles) in RPC_POLICY {
            if roles.contains(&Annotator) {
                assert!(path.contains("LabelingService/") || path.ends_with("/WhoAmI"), "{path}");
            }
            if roles.contains(&Service) {
                assert!(
                    path.contains("RankingService/")
                        || path.contains("ModelService/Get")
                        || path.contains("ModelService/List")
                        || path.ends_with("/WhoAmI"),
                    "{path}"
                );
            }
        }
    }
}
