"""IAM roles this project creates, each with one inline policy; never users, never access keys."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from meta_flows.aws.calls import TAGS_UPPER, call, is_managed, lookup, tag_map
from meta_flows.aws.clients import aws_client
from meta_flows.plan import Step

INLINE_POLICY_NAME = "meta-flows"


def _current_policy(iam: Any, role_name: str) -> dict[str, Any] | None:
    reply = lookup(
        "iam:GetRolePolicy", {"NoSuchEntity"}, iam.get_role_policy, RoleName=role_name, PolicyName=INLINE_POLICY_NAME
    )
    if reply is None:
        return None
    document = reply["PolicyDocument"]
    # IAM returns the document URL-encoded over the query API; boto3 decodes it to a dict
    # for real AWS, but some endpoints hand back the string.
    return json.loads(unquote(document)) if isinstance(document, str) else document  # type: ignore[no-any-return]


def plan_role(
    region: str, kind: str, role_name: str, trust: dict[str, Any], policy: dict[str, Any] | None, description: str
) -> Step:
    """Plan a role with its trust policy and inline policy; `policy` None means no inline policy."""
    iam = aws_client("iam", region)
    reply = lookup("iam:GetRole", {"NoSuchEntity"}, iam.get_role, RoleName=role_name)

    def put_policy() -> None:
        if policy is not None:
            call(
                "iam:PutRolePolicy",
                iam.put_role_policy,
                RoleName=role_name,
                PolicyName=INLINE_POLICY_NAME,
                PolicyDocument=json.dumps(policy),
            )
        else:
            call("iam:DeleteRolePolicy", iam.delete_role_policy, RoleName=role_name, PolicyName=INLINE_POLICY_NAME)

    def create() -> None:
        call(
            "iam:CreateRole",
            iam.create_role,
            RoleName=role_name,
            AssumeRolePolicyDocument=json.dumps(trust),
            Description=description,
            Tags=TAGS_UPPER,
        )
        if policy is not None:
            put_policy()

    if reply is None:
        return Step(kind, role_name, "create", "", create)
    if not is_managed(tag_map(reply["Role"].get("Tags", []))):
        return Step(kind, role_name, "foreign", "not created by this project: used as it is")
    if _current_policy(iam, role_name) != policy:
        return Step(kind, role_name, "update", "inline policy", put_policy)
    return Step(kind, role_name, "unchanged")


def delete_role(region: str, role_name: str) -> bool:
    """Delete the role and its inline policies if it is ours; return whether it was deleted."""
    iam = aws_client("iam", region)
    reply = lookup("iam:GetRole", {"NoSuchEntity"}, iam.get_role, RoleName=role_name)
    if reply is None or not is_managed(tag_map(reply["Role"].get("Tags", []))):
        return False
    for name in call("iam:ListRolePolicies", iam.list_role_policies, RoleName=role_name)["PolicyNames"]:
        call("iam:DeleteRolePolicy", iam.delete_role_policy, RoleName=role_name, PolicyName=name)
    call("iam:DeleteRole", iam.delete_role, RoleName=role_name)
    return True
