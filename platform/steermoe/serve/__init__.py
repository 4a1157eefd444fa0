"""Ray Serve deployment of a SteerMoE model behind an OpenAI-compatible HTTP API.

``build_app(ServeArgs(...))`` returns the Serve application; ``python -m jobs.serve`` deploys
it from a config. Request parsing, audio decoding and response shaping are pure functions in
``requests``, ``audio`` and ``responses`` (tested without Ray).
"""

from steermoe.serve.args import ServeArgs

__all__ = ["ServeArgs", "build_app"]


def __getattr__(name: str):
    # Lazy: importing the package (e.g. for ServeArgs) should not import Ray Serve.
    if name == "build_app":
        from steermoe.serve.app import build_app

        return build_app
    raise AttributeError(name)
