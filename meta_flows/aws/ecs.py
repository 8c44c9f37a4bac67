"""The ECS cluster the flows run in."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from meta_flows.aws.clients import aws_client
from meta_flows.aws.errors import describe_aws_failure
from meta_flows.report import MANAGED_TAG_KEY, MANAGED_TAG_VALUE, ResourceResult


def ensure_cluster(region: str, cluster: str) -> ResourceResult:
    """Create the cluster unless an ACTIVE one exists; an existing one is used as it is."""
    ecs = aws_client("ecs", region)
    try:
        reply = ecs.describe_clusters(clusters=[cluster], include=["TAGS"])
    except (ClientError, BotoCoreError) as exc:
        raise describe_aws_failure("ecs:DescribeClusters", exc) from exc

    active = [c for c in reply.get("clusters", []) if c.get("status") == "ACTIVE"]
    if active:
        tags = {t["key"]: t["value"] for t in active[0].get("tags", [])}
        if tags.get(MANAGED_TAG_KEY) == MANAGED_TAG_VALUE:
            return ResourceResult("ECS cluster", cluster, "unchanged")
        return ResourceResult("ECS cluster", cluster, "foreign")

    if cluster.startswith("arn:"):
        raise describe_aws_failure(
            "ecs:DescribeClusters",
            ClientError(
                {"Error": {"Code": "ClusterNotFoundException", "Message": f"{cluster} not found"}},
                "DescribeClusters",
            ),
        )
    try:
        ecs.create_cluster(
            clusterName=cluster,
            capacityProviders=["FARGATE", "FARGATE_SPOT"],
            tags=[{"key": MANAGED_TAG_KEY, "value": MANAGED_TAG_VALUE}],
        )
    except (ClientError, BotoCoreError) as exc:
        raise describe_aws_failure("ecs:CreateCluster", exc) from exc
    return ResourceResult("ECS cluster", cluster, "created")
