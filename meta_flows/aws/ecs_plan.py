"""The ECS cluster, planned: created when missing, an existing one used as it is."""

from __future__ import annotations

from meta_flows.aws.calls import TAGS_LOWER, call, is_managed, tag_map
from meta_flows.aws.clients import aws_client
from meta_flows.errors import AwsError
from meta_flows.plan import Step

KIND = "ECS cluster"


def plan_cluster(region: str, cluster: str) -> Step:
    """Plan the cluster; a missing cluster given by ARN is an error, since its name is not ours to pick."""
    ecs = aws_client("ecs", region)
    reply = call("ecs:DescribeClusters", ecs.describe_clusters, clusters=[cluster], include=["TAGS"])
    active = [c for c in reply.get("clusters", []) if c.get("status") == "ACTIVE"]
    if active:
        if is_managed(tag_map(active[0].get("tags", []))):
            return Step(KIND, cluster, "unchanged")
        return Step(KIND, cluster, "foreign", "not created by this project: used as it is")
    if cluster.startswith("arn:"):
        raise AwsError(
            f"ECS cluster {cluster} not found in region {region}: check META_FLOWS_CLUSTER and AWS_REGION, "
            "or give a cluster name for bootstrap to create"
        )

    def create() -> None:
        call(
            "ecs:CreateCluster",
            ecs.create_cluster,
            clusterName=cluster,
            capacityProviders=["FARGATE", "FARGATE_SPOT"],
            tags=TAGS_LOWER,
        )

    return Step(KIND, cluster, "create", "", create)


def delete_cluster(region: str, cluster: str) -> bool:
    """Delete the cluster if it is active and ours; return whether it was deleted."""
    ecs = aws_client("ecs", region)
    reply = call("ecs:DescribeClusters", ecs.describe_clusters, clusters=[cluster], include=["TAGS"])
    active = [c for c in reply.get("clusters", []) if c.get("status") == "ACTIVE"]
    if not active or not is_managed(tag_map(active[0].get("tags", []))):
        return False
    call("ecs:DeleteCluster", ecs.delete_cluster, cluster=cluster)
    return True
