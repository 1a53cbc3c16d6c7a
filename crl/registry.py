"""Names -> agents. An agent is a namespace with `Agent`, `Config`, and optionally `PRESETS`
(named overrides), `RUN_DEFAULTS` (the paper's loop settings, e.g. update every 2 steps),
`TASK_SETTINGS` (env id -> the paper's per-task fields), `SEED_AGENT_STEPS` (a seed phase counted
in agent steps) and `configure_for_env` (what the config derives from the task); see
crl.train.build_configs.

An entry is "module" (the module itself is the namespace) or "module:ATTR" (a namespace object
in that module, e.g. the Atari form of an algorithm living in the same file, as
`ATARI = SimpleNamespace(Agent=..., Config=..., PRESETS=..., RUN_DEFAULTS=...)`). Modules are
imported lazily so the core never imports an agent it does not run.
"""

from __future__ import annotations

import difflib
import importlib
from types import ModuleType

AGENTS = {
    "sac": "crl.agents.sac",
    "drq": "crl.agents.drq",
    "drq-eps": "crl.agents.drq:ATARI",
    "drqv2": "crl.agents.drqv2",
    "curl": "crl.agents.curl",
    "curl-rainbow": "crl.agents.curl:ATARI",
    "sb3-sac": "crl.agents.sb3:SAC",
    "sb3-dqn": "crl.agents.sb3:DQN",
    "gcrl": "crl.agents.gcrl",
    "td-infonce": "crl.agents.td_infonce",
    "gcbc": "crl.agents.gcbc",
}


class UnknownAgentError(ValueError):
    pass


def available() -> list[str]:
    """Registered agents that are implemented (agents land one at a time)."""
    names = []
    for name in AGENTS:
        try:
            agent_module(name)
        except UnknownAgentError:
            continue
        names.append(name)
    return sorted(names)


def agent_module(name: str) -> ModuleType:
    if name not in AGENTS:
        close = difflib.get_close_matches(name, list(AGENTS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownAgentError(f"unknown agent {name!r}.{hint} Agents: {', '.join(sorted(AGENTS))}")
    path, _, attr = AGENTS[name].partition(":")
    missing = f"agent {name!r} is registered but not implemented yet"
    try:
        module = importlib.import_module(path)
    except ModuleNotFoundError as error:
        if error.name != path:
            raise
        raise UnknownAgentError(f"{missing} ({path} is missing)") from None
    if attr and not hasattr(module, attr):
        raise UnknownAgentError(f"{missing} ({path} has no {attr})")
    return getattr(module, attr) if attr else module


def presets(name: str) -> dict[str, dict]:
    return dict(getattr(agent_module(name), "PRESETS", {}))
