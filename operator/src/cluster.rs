//! Keeps the node cluster's objects as `build` says, and drives membership
//! when the replica count shrinks: a node leaves the Raft membership before
//! its pod goes. A new node joins by itself (it asks the leader to add it as
//! a learner and is promoted once caught up), so growing needs no call here.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use raftcron_crds::names;

use crate::build::{NodeObjects, build};
use crate::config::ClusterConfig;
use crate::nodes::{NodeApi, NodeError};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("applying {what}: {source}")]
    Apply { what: String, source: kube::Error },
    #[error("reading the StatefulSet: {0}")]
    Read(#[source] kube::Error),
    #[error("cannot shrink to {replicas} nodes before they leave the membership: {source}")]
    Membership { replicas: i32, source: NodeError },
}

/// Node ids (descending) that must leave before the cluster has `replicas` nodes.
pub fn members_to_remove(member_ids: &[u64], replicas: i32) -> Vec<u64> {
    let mut ids: Vec<u64> = member_ids
        .iter()
        .copied()
        .filter(|id| *id > replicas as u64)
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids
}

async fn apply<K>(api: &Api<K>, obj: &K) -> Result<(), ClusterError>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let name = obj.name_any();
    api.patch(
        &name,
        &PatchParams::apply(names::FIELD_MANAGER_OPERATOR).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|source| ClusterError::Apply {
        what: format!("{} {name}", K::kind(&())),
        source,
    })?;
    Ok(())
}

fn owned<K: Resource>(mut obj: K, owner: &Option<OwnerReference>) -> K {
    if let Some(o) = owner {
        obj.meta_mut().owner_references = Some(vec![o.clone()]);
    }
    obj
}

/// One pass: membership first when shrinking, then every object.
pub async fn reconcile(
    client: &kube::Client,
    cfg: &ClusterConfig,
    namespace: &str,
    nodes: &dyn NodeApi,
    owner: &Option<OwnerReference>,
) -> Result<(), ClusterError> {
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let current = sts_api
        .get_opt(&cfg.node_name())
        .await
        .map_err(ClusterError::Read)?;
    let current_replicas = current.as_ref().and_then(|s| s.spec.replicas);
    let shrinking = current_replicas.is_some_and(|r| r > cfg.replicas);
    match nodes.members().await {
        Ok(members) => {
            let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
            for id in members_to_remove(&ids, cfg.replicas) {
                tracing::info!(
                    id,
                    replicas = cfg.replicas,
                    "removing a node from the membership before its pod goes"
                );
                nodes
                    .remove_member(id)
                    .await
                    .map_err(|source| ClusterError::Membership {
                        replicas: cfg.replicas,
                        source,
                    })?;
            }
        }
        // Shrinking without knowing the membership could take away a quorum.
        Err(source) if shrinking => {
            return Err(ClusterError::Membership {
                replicas: cfg.replicas,
                source,
            });
        }
        Err(_) => {}
    }
    let NodeObjects {
        config_map,
        stateful_set,
        headless,
        client: client_svc,
        pdb,
    } = build(cfg, namespace);
    apply(
        &Api::<ConfigMap>::namespaced(client.clone(), namespace),
        &owned(config_map, owner),
    )
    .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    apply(&services, &owned(headless, owner)).await?;
    apply(&services, &owned(client_svc, owner)).await?;
    apply(
        &Api::<PodDisruptionBudget>::namespaced(client.clone(), namespace),
        &owned(pdb, owner),
    )
    .await?;
    apply(&sts_api, &owned(stateful_set, owner)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinking_removes_the_highest_ids_first_and_growing_removes_none() {
        assert_eq!(members_to_remove(&[1, 2, 3, 4, 5], 3), vec![5, 4]);
        assert_eq!(members_to_remove(&[1, 2, 3], 5), Vec::<u64>::new());
        assert_eq!(members_to_remove(&[3, 1, 2], 3), Vec::<u64>::new());
    }
}
