"""A report flow with a third-party dependency (tabulate) and parameters of several types.

The deployer never imports this file: register-deployment reads the parameters from its source,
so tabulate needs to be installed only in the flow's image.
"""

from datetime import date

from prefect import flow, get_run_logger, task
from tabulate import tabulate


@task
def summarise(values: list[float], threshold: float) -> dict[str, float]:
    above = [v for v in values if v > threshold]
    return {
        "count": float(len(values)),
        "mean": sum(values) / len(values) if values else 0.0,
        "above_threshold": float(len(above)),
    }


@flow(name="daily-report")
def report(
    title: str = "Daily report",
    values: list[float] = [1.5, 2.5, 4.0],  # noqa: B006 - Prefect copies parameters per run
    threshold: float = 2.0,
    as_of: date = date(2026, 1, 1),
    include_rows: bool = True,
    max_rows: int = 10,
) -> str:
    """Summarise `values` into a text table.

    Args:
        title: Heading of the report.
        values: Measurements to summarise.
        threshold: Values above it are counted separately.
        as_of: Date printed in the heading.
        include_rows: Whether to list the values themselves.
        max_rows: Maximum number of values listed.
    """
    summary = summarise(values, threshold)
    table = tabulate(summary.items(), headers=["measure", "value"], tablefmt="github")
    lines = [f"{title} as of {as_of.isoformat()}", table]
    if include_rows:
        lines.append(tabulate([[v] for v in values[:max_rows]], headers=["value"], tablefmt="github"))
    text = "\n".join(lines)
    get_run_logger().info("\n%s", text)
    return text
