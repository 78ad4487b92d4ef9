"""Installing a pretrained base: every way it can go wrong gives a clear error and leaves nothing
half-written in the cache or the registry. (The real Gemma install is in test_gemma.py, slow.)"""

from __future__ import annotations

import hashlib
import shutil
import sys
import types
from collections import namedtuple
from pathlib import Path

import pytest

from training import pretrained
from training.config import TrainingError
from training.pretrained import PretrainedSpec, install, installed

PAYLOAD = [b"GGUF" + b"\x00" * 60, b"part two of the model" * 50, b"the end"]


def _fake_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, parts: list[bytes]) -> PretrainedSpec:
    """A stand-in for the PyPI package: ``chunk_paths()`` over files we wrote, and a spec whose
    sha256 is that of PAYLOAD (so damaged parts are detected)."""
    files = []
    for i, data in enumerate(parts):
        f = tmp_path / "pkg" / f"model.gguf.part{i:02d}"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        files.append(f)
    mod = types.ModuleType("fake_gguf_pkg")
    mod.chunk_paths = lambda: files  # type: ignore[attr-defined]
    mod.__file__ = str(tmp_path / "pkg" / "__init__.py")
    monkeypatch.setitem(sys.modules, "fake_gguf_pkg", mod)
    spec = PretrainedSpec(name="fake-model", package="fake_gguf_pkg", extra="lm", gguf_file="model.gguf",
                          sha256=hashlib.sha256(b"".join(PAYLOAD)).hexdigest(), architecture="gemma3",
                          parameters="1", license="test", license_file="LICENSE", fp32_bytes=1000)
    monkeypatch.setitem(pretrained.PRETRAINED, "fake-model", spec)
    return spec


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if ".tmp-" in p.name)


def test_without_the_extra_the_error_says_what_to_install(monkeypatch, tmp_path: Path) -> None:
    spec = PretrainedSpec(name="absent", package="botkit_no_such_package_here", extra="lm", gguf_file="x.gguf",
                          sha256="0" * 64, architecture="gemma3", parameters="1", license="", license_file="",
                          fp32_bytes=1)
    monkeypatch.setitem(pretrained.PRETRAINED, "absent", spec)
    with pytest.raises(TrainingError, match=r"pip install -e '\.\[lm\]'"):
        install("absent", root=tmp_path, progress=False)
    assert installed("absent", tmp_path) is None


def test_unknown_name_lists_what_can_be_installed(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="gemma-3-270m"):
        install("llama-9000", root=tmp_path, progress=False)


def test_damaged_parts_fail_the_checksum_and_leave_nothing(monkeypatch, tmp_path: Path) -> None:
    _fake_package(monkeypatch, tmp_path, [PAYLOAD[0], PAYLOAD[1][:-7], PAYLOAD[2]])  # a truncated part
    root = tmp_path / "cache"
    with pytest.raises(TrainingError, match=r"sha256 .* expected .*force-reinstall"):
        install("fake-model", root=root, progress=False)
    assert not (root / "fake-model" / "model.gguf").exists()
    assert _leftovers(root) == [] and installed("fake-model", root) is None


def test_a_corrupt_cached_file_is_assembled_again(monkeypatch, tmp_path: Path) -> None:
    spec = _fake_package(monkeypatch, tmp_path, PAYLOAD)
    directory = tmp_path / "cache" / "fake-model"
    directory.mkdir(parents=True)
    (directory / "model.gguf").write_bytes(b"GGUF truncated")  # e.g. a copy cut short by a full disk
    (directory / "model.gguf.tmp-999").write_bytes(b"left by a killed install")
    got = pretrained._assemble(spec, directory, progress=False)
    assert hashlib.sha256(got.read_bytes()).hexdigest() == spec.sha256
    pretrained._clean_temporaries(directory)
    assert _leftovers(directory) == []


def test_too_little_disk_is_refused_before_writing(monkeypatch, tmp_path: Path) -> None:
    _fake_package(monkeypatch, tmp_path, PAYLOAD)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**9, 10**9 - 10**6, 10**6))
    root = tmp_path / "cache"
    with pytest.raises(TrainingError, match=r"needs 0\.30 GB free .* only 0\.00 GB .*BOTKIT_CACHE_DIR"):
        install("fake-model", root=root, progress=False)
    assert not any((root / "fake-model").glob("model.gguf*"))


def _write_gguf(path: Path, arch: str) -> Path:
    import numpy as np
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_a_gguf_of_another_architecture_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    llama = _write_gguf(tmp_path / "llama.gguf", "llama")
    assert pretrained.gguf_architecture(llama) == "llama"
    with pytest.raises(TrainingError, match=r"architecture 'llama'; botkit installs gemma3"):
        install("llama", gguf_file=llama, root=tmp_path / "cache", progress=False)
    assert installed("llama", tmp_path / "cache") is None


@pytest.mark.parametrize("content", [b"", b"not a gguf at all" * 10, b"GGUF\x03\x00\x00\x00\xff\xff"])
def test_garbage_and_truncated_gguf_files_are_named(tmp_path: Path, content: bytes) -> None:
    pytest.importorskip("gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    with pytest.raises(TrainingError, match=r"bad\.gguf: not a readable GGUF file"):
        install("bad", gguf_file=bad, root=tmp_path / "cache", progress=False)


def test_a_missing_gguf_file(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="no such file"):
        install("x", gguf_file=tmp_path / "nope.gguf", root=tmp_path / "cache", progress=False)


def test_a_directory_without_the_marker_is_not_an_install(tmp_path: Path) -> None:
    hf = tmp_path / "m" / "hf"
    hf.mkdir(parents=True)
    (hf / "config.json").write_text("{}")  # what a copy interrupted before the rename could leave
    assert installed("m", tmp_path) is None


def test_cache_root_follows_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BOTKIT_CACHE_DIR", str(tmp_path / "c"))
    assert pretrained.cache_root() == tmp_path / "c" / "models"
    monkeypatch.delenv("BOTKIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert pretrained.cache_root() == tmp_path / "x" / "botkit" / "models"


def test_gemma_chat_template_renders_botkit_messages() -> None:
    """The template folds the system message into the first user turn and allows a greeting first."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
        pretrained.GEMMA_CHAT_TEMPLATE)
    text = template.render(bos_token="<bos>", add_generation_prompt=True, messages=[
        {"role": "system", "content": "RULES\n"}, {"role": "assistant", "content": "Hi! How can I help?"},
        {"role": "user", "content": "where is my order?"}])
    assert text == ("<bos><start_of_turn>model\nHi! How can I help?<end_of_turn>\n"
                    "<start_of_turn>user\nRULES\n\nwhere is my order?<end_of_turn>\n<start_of_turn>model\n")
