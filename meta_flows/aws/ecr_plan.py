"""ECR repositories as bootstrap and the deployer want them: immutable tags, scan on push,
and a lifecycle policy that keeps the last N images.

Tags are content hashes, so an unchanged flow never pushes its tag twice and IMMUTABLE tags
cost nothing; they stop anyone from moving a tag a deployment points at.
NOTE: the history's keep- tags are added through the registry API; re-adding one that
already exists has not been run against ECR with IMMUTABLE tags (the local registry has no
immutability).
"""

from __future__ import annotations

import json
from typing import Any

from meta_flows.aws.calls import TAGS_UPPER, call, is_managed, lookup, tag_map
from meta_flows.aws.clients import aws_client
from meta_flows.history import protected_lifecycle_rule
from meta_flows.plan import Step

KIND = "ECR repository"


def lifecycle_policy(keep: int) -> dict[str, Any]:
    """Return the lifecycle policy that expires all but the `keep` newest images.

    Its first rule keeps the images a deployment history refers to (tag prefix keep-), since
    ECR never lets a lower-priority rule expire an image a higher-priority rule selects.
    """
    return {
        "rules": [
            protected_lifecycle_rule(priority=1),
            {
                "rulePriority": 2,
                "description": f"Keep the last {keep} images",
                "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep},
                "action": {"type": "expire"},
            },
        ]
    }


def _differences(ecr: Any, repository: dict[str, Any], keep: int) -> list[str]:
    differences = []
    if repository.get("imageTagMutability") != "IMMUTABLE":
        differences.append("tag mutability")
    if not repository.get("imageScanningConfiguration", {}).get("scanOnPush"):
        differences.append("scan on push")
    reply = lookup(
        "ecr:GetLifecyclePolicy",
        {"LifecyclePolicyNotFoundException"},
        ecr.get_lifecycle_policy,
        repositoryName=repository["repositoryName"],
    )
    if reply is None or json.loads(reply["lifecyclePolicyText"]) != lifecycle_policy(keep):
        differences.append("lifecycle policy")
    return differences


def plan_repository(region: str, name: str, keep: int) -> Step:
    """Plan one repository: create it, bring ours to the wanted settings, leave a foreign one."""
    ecr = aws_client("ecr", region)
    reply = lookup(
        "ecr:DescribeRepositories", {"RepositoryNotFoundException"}, ecr.describe_repositories, repositoryNames=[name]
    )
    policy_text = json.dumps(lifecycle_policy(keep))

    def put_settings(differences: list[str]) -> None:
        if "tag mutability" in differences:
            call(
                "ecr:PutImageTagMutability",
                ecr.put_image_tag_mutability,
                repositoryName=name,
                imageTagMutability="IMMUTABLE",
            )
        if "scan on push" in differences:
            call(
                "ecr:PutImageScanningConfiguration",
                ecr.put_image_scanning_configuration,
                repositoryName=name,
                imageScanningConfiguration={"scanOnPush": True},
            )
        if "lifecycle policy" in differences:
            call(
                "ecr:PutLifecyclePolicy", ecr.put_lifecycle_policy, repositoryName=name, lifecyclePolicyText=policy_text
            )

    def create() -> None:
        call(
            "ecr:CreateRepository",
            ecr.create_repository,
            repositoryName=name,
            imageTagMutability="IMMUTABLE",
            imageScanningConfiguration={"scanOnPush": True},
            tags=TAGS_UPPER,
        )
        put_settings(["lifecycle policy"])

    if reply is None:
        return Step(KIND, name, "create", f"immutable tags, scan on push, keep {keep} images", create)
    repository = reply["repositories"][0]
    tags = call("ecr:ListTagsForResource", ecr.list_tags_for_resource, resourceArn=repository["repositoryArn"])
    if not is_managed(tag_map(tags.get("tags", []))):
        return Step(KIND, name, "foreign", "not created by this project: used as it is")
    differences = _differences(ecr, repository, keep)
    if not differences:
        return Step(KIND, name, "unchanged")
    return Step(KIND, name, "update", ", ".join(differences), lambda: put_settings(differences))


def delete_repository(region: str, name: str) -> bool:
    """Delete the repository and its images if it is ours; return whether it was deleted."""
    ecr = aws_client("ecr", region)
    reply = lookup(
        "ecr:DescribeRepositories", {"RepositoryNotFoundException"}, ecr.describe_repositories, repositoryNames=[name]
    )
    if reply is None:
        return False
    tags = call(
        "ecr:ListTagsForResource", ecr.list_tags_for_resource, resourceArn=reply["repositories"][0]["repositoryArn"]
    )
    if not is_managed(tag_map(tags.get("tags", []))):
        return False
    call("ecr:DeleteRepository", ecr.delete_repository, repositoryName=name, force=True)
    return True


def list_repositories(region: str, prefix: str) -> list[str]:
    """Return the names of the repositories under `prefix/`."""
    ecr = aws_client("ecr", region)
    names: list[str] = []
    for page in ecr.get_paginator("describe_repositories").paginate():
        names += [r["repositoryName"] for r in page["repositories"] if r["repositoryName"].startswith(f"{prefix}/")]
    return names
