"""A minimal flow: greets someone and returns the greeting."""

from prefect import flow, get_run_logger


@flow(name="hello")
def hello(name: str = "world") -> str:
    """Greet `name`.

    Args:
        name: Who to greet.
    """
    greeting = f"Hello, {name}!"
    get_run_logger().info(greeting)
    return greeting
