"""Reading ``city.yaml`` with errors that name the key and the file line."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from citylake.config.models import CityConfig

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a config file."""

    key: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        return f"{where}: {self.key}: {self.message}"


class ConfigError(Exception):
    """A config file that cannot be used; ``str()`` lists every problem."""

    def __init__(self, path: Path, problems: Sequence[ConfigProblem]) -> None:
        self.path = path
        self.problems = list(problems)
        lines = "\n".join(f"  {path} {p}" for p in self.problems)
        super().__init__(f"invalid config {path}:\n{lines}")


class ConfigDocument:
    """The parsed YAML, kept so later validation (adapter models) can point at lines."""

    def __init__(self, path: Path, root: Any) -> None:
        self.path = path
        self.root = root

    def line_of(self, loc: Loc) -> int | None:
        """1-based line of the deepest part of ``loc`` that exists in the file."""
        node: Any = self.root
        line: int | None = None
        for part in loc:
            if isinstance(node, CommentedMap) and part in node:
                line = node.lc.key(part)[0] + 1
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                line = node.lc.item(part)[0] + 1
                node = node[part]
            else:
                break
        return line

    def problems_from(self, error: ValidationError, prefix: Loc = ()) -> list[ConfigProblem]:
        problems = []
        for item in error.errors(include_url=False):
            loc: Loc = prefix + tuple(p for p in item["loc"] if isinstance(p, str | int))
            key = ".".join(f"[{p}]" if isinstance(p, int) else p for p in loc).replace(".[", "[")
            message = item["msg"]
            if item["type"] == "extra_forbidden":
                message = "unknown key (check its spelling against the documented keys)"
            problems.append(ConfigProblem(key or "(root)", self.line_of(loc), message))
        return problems

    def validate(self, model: type[M], data: Any, prefix: Loc = ()) -> M:
        """``model`` validated from ``data``, raising ``ConfigError`` with lines."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(self.path, self.problems_from(exc, prefix)) from None


# A value that is exactly ``${NAME}`` is the environment variable NAME: how a
# password or key reaches city.yaml from a Kubernetes Secret (the pod's env,
# secretKeyRef) while the file itself stays a ConfigMap without secrets. Every
# pod loads the whole file, so an unset NAME is not an error here: the value
# stays as written, and what uses it as a secret refuses it (`unexpanded`).
_ENV_REFERENCE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str) and (reference := _ENV_REFERENCE.fullmatch(node)):
        return os.environ.get(reference.group(1), node)
    return node


def unexpanded(value: str) -> bool:
    """A ``${NAME}`` left as written because NAME was unset where the file was loaded."""
    return _ENV_REFERENCE.fullmatch(value) is not None


@dataclass(frozen=True)
class LoadedConfig:
    config: CityConfig
    document: ConfigDocument

    def source_data(self) -> Iterable[tuple[int, dict[str, Any]]]:
        """Each source's raw keys with its index, for adapter-model validation."""
        yield from enumerate(_plain(self.document.root).get("sources") or [])


def load_config(path: Path | str) -> LoadedConfig:
    """Parse and validate ``city.yaml``. ``data_dir`` is made absolute relative to
    the file, so commands behave the same from any working directory."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            path, [ConfigProblem("(file)", None, "not found; pass --config path/to/city.yaml")]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [ConfigProblem("(file)", None, f"not UTF-8: {exc}")]) from None
    try:
        root = YAML(typ="rt").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, [ConfigProblem("(yaml)", line, str(problem))]) from None
    if not isinstance(root, CommentedMap):
        raise ConfigError(path, [ConfigProblem("(root)", 1, "expected a mapping of keys")])
    document = ConfigDocument(path, root)
    config = document.validate(CityConfig, _plain(root))
    if not config.data_dir.is_absolute():
        config = config.model_copy(update={"data_dir": (path.parent / config.data_dir).resolve()})
    return LoadedConfig(_user_job_paths(config, path.parent.resolve()), document)


def _user_job_paths(config: CityConfig, base: Path) -> CityConfig:
    """User jobs' files relative to city.yaml, like ``data_dir``: a job runs the
    same from any working directory, and on the session cluster's client."""
    if not config.pipelines.user_jobs:
        return config
    jobs = {
        name: job.model_copy(
            update={
                key: base / value
                for key, value in (("sql", job.sql), ("path", job.path))
                if value is not None and not value.is_absolute()
            }
        )
        for name, job in config.pipelines.user_jobs.items()
    }
    pipelines = config.pipelines.model_copy(update={"user_jobs": jobs})
    return config.model_copy(update={"pipelines": pipelines})
