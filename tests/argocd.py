"""The shipped Argo CD health check (deploy/argocd/exportrequest-health.lua), run as Argo CD
runs it: a Lua chunk given the resource as the global-like ``obj``, returning status and
message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lupa import LuaRuntime

HEALTH_LUA = Path(__file__).resolve().parents[1] / "deploy" / "argocd" / "exportrequest-health.lua"


def argocd_health(body: dict[str, Any]) -> dict[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)
    script = HEALTH_LUA.read_text(encoding="utf-8")
    check = lua.eval(f"function(obj)\n{script}\nend")
    result = check(_lua_value(lua, json.loads(json.dumps(body))))
    return {"status": str(result["status"]), "message": str(result["message"])}


def _lua_value(lua: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({key: _lua_value(lua, item) for key, item in value.items()})
    if isinstance(value, list):
        return lua.table_from([_lua_value(lua, item) for item in value])
    return value
