"""Reading a configuration: the TOML file, the environment's overrides, every value converted and checked.

Every problem is collected, then raised at once as one :class:`ConfigError` naming the
file (or the environment variable), the key and what is wrong.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from daemon.config.checks import cross_checks
from daemon.config.sections import Config
from daemon.config.values import ByteSize, Cron, Duration, format_duration, format_size, parse_cron, parse_duration, parse_size
from daemon.errors import ConfigError

ENV_PREFIX = "LIPSYNCD_"
DEFAULT_CONFIG_ENV = "LIPSYNCD_CONFIG"

_SECRET_KEYS = {"access_key", "secret_key", "aws_access_key_id", "aws_secret_access_key", "session_token", "password", "secret"}


def default_config_path() -> Path:
    env = os.environ.get(DEFAULT_CONFIG_ENV)
    if env:
        return Path(env)
    return Path("config.toml")


def load(path: str | Path | None = None, *, env: dict[str, str] | None = None) -> Config:
    """Load and validate a configuration; raise ConfigError listing every problem."""
    path = Path(path) if path is not None else default_config_path()
    env = os.environ if env is None else env
    problems: list[str] = []
    raw: dict = {}
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        where = path if path.is_absolute() else f"{path} (looked in {Path.cwd()})"
        problems.append(f"{where}: file not found; name the file with -c FILE or ${DEFAULT_CONFIG_ENV}")
    except tomllib.TOMLDecodeError as e:
        problems.append(f"{path}: not valid TOML: {e}")
    except OSError as e:
        problems.append(f"{path}: cannot read: {e.strerror}")
    if problems:
        raise ConfigError(problems)

    origins = _apply_env(raw, env, problems)
    base = path.resolve().parent
    cfg = _build(Config, raw, str(path), "", base, problems)
    cfg.source = path.resolve()
    cross_checks(cfg, str(path), problems)
    if problems:
        raise ConfigError([_blame_environment(p, str(path), origins) for p in problems])
    return cfg


def _blame_environment(problem: str, src: str, origins: dict[str, str]) -> str:
    """Name the environment variable, not the file, when the bad value came from it."""
    head = f"{src}: "
    if not problem.startswith(head):
        return problem
    key = problem[len(head):].split(":", 1)[0]
    var = origins.get(key)
    return f"environment {var} ({key}): {problem[len(head) + len(key) + 2:]}" if var else problem


def from_dict(raw: dict, *, base: Path, name: str = "<dict>") -> Config:
    """Build a validated config from a dict (tests, tools); paths relative to ``base``."""
    problems: list[str] = []
    cfg = _build(Config, raw, name, "", base, problems)
    cross_checks(cfg, name, problems)
    if problems:
        raise ConfigError(problems)
    return cfg


def _apply_env(raw: dict, env: dict[str, str], problems: list[str]) -> dict[str, str]:
    """Apply the overrides to ``raw``; returns dotted key -> the variable that set it."""
    origins: dict[str, str] = {}
    for name, text in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name or name == DEFAULT_CONFIG_ENV:
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__")]
        if any(not k for k in keys):
            problems.append(f"environment {name}: malformed variable name")
            continue
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # bare strings need no quotes
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                problems.append(f"environment {name}: {k} is not a table")
                break
        else:
            node[keys[-1]] = value
            origins[".".join(keys)] = name
    return origins


def _build(cls: type, raw: Any, src: str, prefix: str, base: Path, problems: list[str]) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        problems.append(f"{src}: [{where}] must be a table")
        raw = {}
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    for key in raw:
        if key in fields:
            continue
        if key.lower() in _SECRET_KEYS:
            problems.append(f"{src}: {prefix}{key}: credentials do not belong in the config file; "
                            "use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, an AWS profile or an instance role")
        else:
            close = [f for f in fields if f.startswith(key[:3])]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{src}: {prefix}{key}: unknown option{hint}")
    values = {}
    for name, f in fields.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, raw.get(name, {}), src, f"{prefix}{name}.", base, problems)
            continue
        if name not in raw:
            continue
        try:
            values[name] = _convert(tp, raw[name], f.metadata, base)
        except ValueError as e:
            problems.append(f"{src}: {prefix}{name}: {e}")
    return cls(**values)


def _convert(tp: Any, value: Any, meta: dict, base: Path) -> Any:
    optional = False
    if get_origin(tp) is not None and type(None) in get_args(tp):
        optional = True
        tp = next(a for a in get_args(tp) if a is not type(None))
    if optional and (value is None or value == ""):
        return None
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a path string, got {value!r}")
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else (base / p)
    if tp is Duration:
        out = Duration(parse_duration(value))
    elif tp is ByteSize:
        out = ByteSize(parse_size(value))
    elif tp is Cron:
        return Cron(parse_cron(value))
    elif tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        out = value
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {value!r}")
        out = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    elif tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"expected a table, got {value!r}")
        return dict(value)
    elif get_origin(tp) is list:
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {value!r}")
        (item,) = get_args(tp)
        want = dict if get_origin(item) is None and item is dict else item
        for v in value:
            if not isinstance(v, want):
                raise ValueError(f"expected a list of {want.__name__}, got item {v!r}")
        return list(value)
    else:  # pragma: no cover - a declaration error, not a user error
        raise TypeError(f"unsupported option type {tp}")
    lo, hi = meta.get("min"), meta.get("max")
    # limits said the way the file says values: "7d", "64MB", not 604800 or 67108864
    show = format_duration if tp is Duration else format_size if tp is ByteSize else repr
    if lo is not None and out < lo:
        raise ValueError(f"{value!r} is below the minimum {show(lo)}")
    if hi is not None and out > hi:
        raise ValueError(f"{value!r} is above the maximum {show(hi)}")
    return out
