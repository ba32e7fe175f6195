"""The in-process model shared by the Ray tasks of a node: one actor per node holds it, each task's LM forwards.

A Ray task that built its own local LM would load one llama.cpp model per worker process; two llama.cpp processes
on one machine thrash (measured: generation fell to about 1 token/s on 2 cores). So the tasks on a node share one
`ModelHost` actor, named after the node and pinned to it, which loads the model once and serves up to
`local_slots` requests at once (the actor's `max_concurrency`; the model's slots queue the rest). A task's LM keeps
everything DSPy does in the task (adapter, cache, history, callbacks) and sends only the canonical
`dspy.lm15.Request` to the host, which returns the `Response` (both plain picklable data).

Ray is imported only when a host is needed (the `ray` extra), so this module costs nothing without it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dspy
from dspy.clients.engines.base import validate_request
from dspy.lm15 import Request, Response

from persona_agent.core.config import Settings
from persona_agent.core.errors import ConfigError
from persona_agent.lm.engine import AsyncLlamaEngine, LlamaEngine
from persona_agent.lm.models import local_engines, make_lm
from persona_agent.lm.runtime import LlamaRuntime

HOST_PREFIX = "persona-agent-lm-"
"""A node's host actor is named `HOST_PREFIX + <node id>`, in the Ray job's namespace."""

__all__ = ["HOST_PREFIX", "HostedEngine", "LocalEngineFactory", "ModelHost", "hosted_lm", "import_ray", "stop_hosts"]


def import_ray() -> Any:
    """The `ray` module, or `ConfigError` naming the extra that installs it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError('the ray runner needs the `ray` extra: pip install "dspy-persona[ray]"') from exc
    return ray


@dataclass(frozen=True)
class LocalEngineFactory:
    """Builds the settings' local engine in the host (picklable: settings are plain data)."""

    settings: Settings

    def __call__(self) -> LlamaEngine:
        return local_engines(self.settings.lm, settings=self.settings)[0]


class ModelHost:
    """The actor's class: one engine for the node; Ray runs concurrent `complete` calls in threads."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.engine = factory()
        self._served = 0
        self._lock = threading.Lock()

    def complete(self, request: Request) -> Response:
        response = self.engine.complete(request)
        with self._lock:
            self._served += 1
        return response

    def stats(self) -> dict[str, int]:
        """This host's process id and the requests it has answered."""
        with self._lock:
            return {"pid": os.getpid(), "served": self._served}


def _host_on_this_node(factory: Callable[[], Any], slots: int) -> Any:
    """The host actor of the node this process runs on, created by the first caller and reused by the others.

    `get_if_exists` makes concurrent first callers agree on one actor; node affinity (not soft) keeps the model on
    the node whose tasks call it; `num_cpus=0` reserves nothing, so the node's CPUs stay schedulable for tasks
    (llama.cpp uses the cores anyway); `detached` lets it outlive the task that happened to create it (a task's
    worker process may die), so `stop_hosts` ends it.
    """
    ray = import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    return (
        ray.remote(ModelHost)
        .options(
            name=HOST_PREFIX + node,
            get_if_exists=True,
            lifetime="detached",
            num_cpus=0,
            max_concurrency=slots,
            max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False),
        )
        .remote(factory)
    )


class HostedEngine(LlamaEngine):
    """A `LlamaEngine` whose calls run in the node's host actor (so `is_local` still holds: same adapter, same
    program kind as the model in process). The host is found or created at the first call; a dead host is
    forgotten, so the job's retry reaches a new one."""

    def __init__(self, local: LlamaEngine, factory: Callable[[], Any], slots: int) -> None:
        super().__init__(
            local.model_ref,
            local._resolve,
            options=local.options,
            seed=local.seed,
            max_tokens=local.max_tokens,
            cache_prompt=local.cache_prompt,
        )
        self.factory = factory
        self.slots = slots
        self._host: Any = None
        self._host_lock = threading.Lock()

    def host(self) -> Any:
        with self._host_lock:
            if self._host is None:
                self._host = _host_on_this_node(self.factory, self.slots)
            return self._host

    def complete(self, request: Request) -> Response:
        validate_request(request)
        ray = import_ray()
        host = self.host()
        try:
            return ray.get(host.complete.remote(request))
        except ray.exceptions.RayActorError:
            with self._host_lock:
                self._host = None
            raise

    def runtime(self) -> LlamaRuntime:
        raise ConfigError("the hosted model is loaded in the node's host actor, never in a task's process")

    def with_options(self, **changes: Any) -> LlamaEngine:
        raise ConfigError("the hosted model's options come from the settings the host was built with")


def hosted_lm(settings: Settings, factory: Callable[[], Any] | None = None) -> dspy.LM:
    """The LM a Ray task uses for a local spec: `make_lm`'s LM (nothing loaded here) with its engine forwarding
    to the node's host, which builds its engine with `factory` (default: the settings' local engine)."""
    lm = make_lm(settings=settings)
    if not isinstance(lm.engine, LlamaEngine):
        raise ConfigError(f"a hosted model needs a local LM spec ('local' or 'gguf:/path'), got {settings.lm!r}")
    engine = HostedEngine(lm.engine, factory or LocalEngineFactory(settings), settings.local_slots)
    return lm.copy(engine=engine, async_engine=AsyncLlamaEngine(engine))


def stop_hosts() -> list[str]:
    """Kill the host actors of this Ray job's namespace (detached actors outlive the job otherwise); their names."""
    ray = import_ray()
    names = [name for name in ray.util.list_named_actors() if name.startswith(HOST_PREFIX)]
    for name in names:
        try:
            ray.kill(ray.get_actor(name))
        except ValueError:  # already gone
            continue
    return names
