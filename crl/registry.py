"""Names -> agent modules. Each agent module defines `Config`, `Agent` and `PRESETS`.

Modules are imported lazily by name so the core never imports an agent it does not run.
"""

from __future__ import annotations

import difflib
import importlib
from types import ModuleType

AGENTS = {
    "sac": "crl.agents.sac",
}


class UnknownAgentError(ValueError):
    pass


def agent_module(name: str) -> ModuleType:
    if name not in AGENTS:
        close = difflib.get_close_matches(name, list(AGENTS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownAgentError(f"unknown agent {name!r}.{hint} Agents: {', '.join(sorted(AGENTS))}")
    return importlib.import_module(AGENTS[name])


def presets(name: str) -> dict[str, dict]:
    return dict(getattr(agent_module(name), "PRESETS", {}))
