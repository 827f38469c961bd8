"""`ConfigError`: raised when a config file cannot be read or has errors."""

from __future__ import annotations

from collections.abc import Iterable

from halswarm.config.problems import Problem, render


class ConfigError(Exception):
    """Carries every problem found; `str()` is one `PATH: message` line per problem."""

    def __init__(self, problems: Iterable[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem("(root)", problems)]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(render(p) for p in self.problems))

    @classmethod
    def single(cls, path: str, message: str) -> ConfigError:
        return cls([Problem(path, message)])

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]
