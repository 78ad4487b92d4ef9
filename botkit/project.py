"""A bot project: a directory holding bot.yaml, the knowledge sources and a state directory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from botkit.config import CONFIG_FILE, BotConfig, load_config
from botkit.config_template import render_bot_yaml
from botkit.errors import ProjectError
from botkit.files import secure_state_dir


@dataclass(frozen=True)
class Project:
    root: Path
    config: BotConfig

    @property
    def state_dir(self) -> Path:
        return (self.root / self.config.state_dir).resolve()

    @property
    def db_path(self) -> Path:
        return self.state_dir / "botkit.sqlite3"

    @property
    def index_dir(self) -> Path:
        return self.state_dir / "index"

    def source_paths(self) -> list[Path]:
        return [(self.root / s) for s in self.config.knowledge.sources]

    @classmethod
    def load(cls, root: str | Path = ".") -> "Project":
        root = Path(root).resolve()
        if not root.is_dir():
            raise ProjectError(f"{root}: no such directory; create a project with `botkit init {root}`")
        cfg = root / CONFIG_FILE
        if not cfg.exists():
            raise ProjectError(
                f"{root}: not a botkit project (no {CONFIG_FILE}); run `botkit init {root}` "
                "or pass --project DIR"
            )
        project = cls(root, load_config(cfg))
        secure_state_dir(project.state_dir)  # 0700, files 0600: fixed (and logged) if not
        return project


def init_project(root: str | Path, name: str | None = None,
                 channel_models: Mapping[str, type[BaseModel]] | None = None) -> Project:
    """Create a new project directory with a bot.yaml that shows every key with its default and
    meaning (``channel_models``: channels whose keys it shows too), an empty kb/ and a state dir."""
    root = Path(root).resolve()
    cfg = root / CONFIG_FILE
    if cfg.exists():
        raise ProjectError(f"{cfg} already exists; refusing to overwrite it")
    root.mkdir(parents=True, exist_ok=True)
    (root / "kb").mkdir(exist_ok=True)
    cfg.write_text(render_bot_yaml(name or root.name, channel_models), encoding="utf-8")
    (root / ".gitignore").write_text(".botkit/\n", encoding="utf-8")
    return Project.load(root)
