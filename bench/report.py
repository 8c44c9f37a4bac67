"""The benchmark's one table, with each target of the issue checked against the medians."""

from __future__ import annotations

import argparse
from typing import Any

from bench.run import Results

STEPS = [
    ("one-cold", "one flow, cold"),
    ("one-unchanged", "one flow, unchanged redeploy"),
    ("one-code-change", "one flow, code-only change"),
    ("many-cold", "{flows} flows, cold"),
    ("many-unchanged", "{flows} flows, unchanged"),
]


def mib(count: int) -> str:
    return f"{count / 1024 / 1024:.2f} MiB" if count >= 1024 * 1024 else f"{count / 1024:.1f} KiB"


def render_table(results: Results, arguments: argparse.Namespace, machine: str) -> str:
    runs = arguments.runs
    lines = [
        f"Machine: {machine}.",
        f"Medians of {runs} runs; counts are totals over the {runs} runs.",
        "",
        "| step | ours (s) | prefect deploy (s) | ours: images pushed / tags created "
        "| prefect deploy: images pushed / tags created |",
        "|---|---|---|---|---|",
    ]
    for key, label in STEPS:
        ours, standard = f"ours:{key}", f"standard:{key}"
        lines.append(
            f"| {label.format(flows=arguments.flows)} | {results.median(ours):.2f} | {results.median(standard):.2f} "
            f"| {results.total(ours, 'manifests')} / {results.total(ours, 'tags_created')} "
            f"| {results.total(standard, 'manifests')} / {results.total(standard, 'tags_created')} |"
        )
    code_ours = results.samples["ours:one-code-change"]
    code_std = results.samples["standard:one-code-change"]
    lines += [
        "",
        "| measure | ours | prefect deploy |",
        "|---|---|---|",
        f"| bytes pushed by a code-only change (median) | {mib(int(median_of(code_ours, 'bytes')))} "
        f"| {mib(int(median_of(code_std, 'bytes')))} |",
        f"| layers pushed by a code-only change (median) | {median_of(code_ours, 'blobs'):.0f} "
        f"| {median_of(code_std, 'blobs'):.0f} |",
        f"| task definition revisions after {arguments.revision_runs} runs, worker restarted between runs "
        f"| {results.revisions['ours']} | {results.revisions['standard']} |",
        "",
        "| floor | seconds |",
        "|---|---|",
        f"| docker build + push of the same image through the engine API | {results.median('floor:build-push'):.2f} |",
        f"| empty flow run shaped like deploy-flow (two subflows) | {results.median('floor:one-shape'):.2f} |",
        f"| empty flow run shaped like deploy-all-flows ({arguments.flows} tasks, {arguments.concurrency} at a time) "
        f"| {results.median('floor:many-shape'):.2f} |",
        "",
        render_targets(results, arguments),
    ]
    return "\n".join(lines)


def median_of(samples: list[Any], attribute: str) -> float:
    values = sorted(getattr(s.pushes, attribute) for s in samples)
    middle = len(values) // 2
    return float(values[middle]) if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def render_targets(results: Results, arguments: argparse.Namespace) -> str:
    m = results.median
    unchanged_pushes = results.total("ours:one-unchanged", "manifests") + results.total(
        "ours:many-unchanged", "manifests"
    )
    unchanged_tags = results.total("ours:one-unchanged", "tags_created") + results.total(
        "ours:many-unchanged", "tags_created"
    )
    checks = [
        (
            "unchanged redeploy of one flow at most 1 s over the empty deploy-flow-shaped run, 0 pushes, 0 tags",
            f"{m('ours:one-unchanged'):.2f} s vs {m('floor:one-shape'):.2f} + 1 s; "
            f"{unchanged_pushes} pushes, {unchanged_tags} tags",
            m("ours:one-unchanged") <= m("floor:one-shape") + 1 and unchanged_pushes == 0 and unchanged_tags == 0,
        ),
        (
            f"{arguments.flows} flows unchanged at least 3 times faster than prefect deploy --all",
            f"{m('standard:many-unchanged') / m('ours:many-unchanged'):.2f} times",
            m("standard:many-unchanged") >= 3 * m("ours:many-unchanged"),
        ),
        (
            f"{arguments.flows} flows cold at least 1.5 times faster than prefect deploy --all",
            f"{m('standard:many-cold') / m('ours:many-cold'):.2f} times",
            m("standard:many-cold") >= 1.5 * m("ours:many-cold"),
        ),
        (
            "one flow cold at most 2 s over build-and-push floor plus the deploy-flow-shaped floor",
            f"{m('ours:one-cold'):.2f} s vs {m('floor:build-push'):.2f} + {m('floor:one-shape'):.2f} + 2 s",
            m("ours:one-cold") <= m("floor:build-push") + m("floor:one-shape") + 2,
        ),
        (
            f"{arguments.revision_runs} runs of an unchanged deployment, worker restarted: 1 revision",
            f"{results.revisions['ours']} revision(s)",
            results.revisions["ours"] == 1,
        ),
    ]
    lines = ["| target | measured | met |", "|---|---|---|"]
    lines += [f"| {target} | {measured} | {'yes' if met else 'NO'} |" for target, measured, met in checks]
    return "\n".join(lines)


def results_json(results: Results) -> dict[str, Any]:
    """Return every step's median and count totals, and the revision counts."""
    steps = {
        key: {
            "median_seconds": results.median(key),
            "manifests_pushed": results.total(key, "manifests"),
            "blobs_pushed": results.total(key, "blobs"),
            "bytes_pushed": results.total(key, "bytes"),
            "tags_created": results.total(key, "tags_created"),
        }
        for key in results.samples
    }
    return {"steps": steps, "revisions": results.revisions}
