"""Export a merged Hugging Face causal-LM directory to GGUF for llama.cpp, then quantise it.

::

    python training/export_gguf.py MODEL_DIR [--quant q8_0|q4_k_m|f16] [--out FILE.gguf]
                                            [--adapter LORA_DIR] [--converter convert_hf_to_gguf.py]

Two steps:

1. **Convert** with llama.cpp's own ``convert_hf_to_gguf.py`` (run as a subprocess with this
   Python; it needs torch, transformers and the ``gguf`` package, all in the ``lm`` extra) to an
   f16 GGUF in a temporary file beside the output. botkit ships no copy of that script. It is
   looked for, in order: ``--converter``, ``$BOTKIT_LLAMA_CPP_CONVERTER``, inside the installed
   ``llama_cpp`` package, and in a llama-cpp-python source tree unpacked at
   ``$BOTKIT_LLAMA_CPP_SRC``. The wheels of llama-cpp-python 0.3.x do not contain it; the source
   package does, at ``vendor/llama.cpp/convert_hf_to_gguf.py``::

       pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/lcpp
       tar xzf /tmp/lcpp/llama_cpp_python-0.3.36.tar.gz -C /tmp/lcpp
       python training/export_gguf.py MODEL_DIR \\
           --converter /tmp/lcpp/llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py

   Use the converter of the llama.cpp version you serve with: the script and the library are
   released together, and the script imports its own ``gguf-py`` and ``conversion`` package.
2. **Quantise** with ``llama_cpp.llama_model_quantize`` (the ``llamacpp`` extra) to Q8_0 or
   Q4_K_M (``--quant f16`` keeps the converted file).

A LoRA adapter is folded in first when ``--adapter`` is given (``MODEL_DIR`` is then its base):
llama.cpp serves merged weights. The output defaults to ``MODEL_DIR/model-<quant>.gguf``, where
``dialogue.local_lm.backend: llama-cpp`` finds it without ``gguf_path``. Every file is written
under a temporary name (``.<name>.partial-<pid>``, not ``*.gguf``) and renamed when complete, so a
crash never leaves a truncated GGUF that a server would try to load.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.config import TrainingError  # noqa: E402

log = logging.getLogger(__name__)

CONVERTER = "convert_hf_to_gguf.py"
QUANTS = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "f16": None}


def find_converter(explicit: str | Path | None = None) -> Path:
    """llama.cpp's ``convert_hf_to_gguf.py``: ``explicit``, ``$BOTKIT_LLAMA_CPP_CONVERTER``, the
    installed ``llama_cpp`` package, or ``$BOTKIT_LLAMA_CPP_SRC`` (an unpacked source tree).

    Raises:
        TrainingError: not found; the message says how to get it.
    """
    tried: list[str] = []
    for value in (explicit, os.environ.get("BOTKIT_LLAMA_CPP_CONVERTER")):
        if value:
            path = Path(value).expanduser()
            path = path / CONVERTER if path.is_dir() else path
            if path.is_file():
                return path.resolve()
            raise TrainingError(f"{path}: no such file; pass the path of llama.cpp's {CONVERTER}")
    roots: list[Path] = []
    try:
        import llama_cpp

        roots.append(Path(llama_cpp.__file__).resolve().parent)
    except ImportError:
        tried.append("llama_cpp is not installed")
    if os.environ.get("BOTKIT_LLAMA_CPP_SRC"):
        roots.append(Path(os.environ["BOTKIT_LLAMA_CPP_SRC"]).expanduser())
    for root in roots:
        hits = sorted(root.rglob(CONVERTER)) if root.is_dir() else []
        if hits:
            return hits[0].resolve()
        tried.append(f"not in {root}")
    version = _llama_cpp_version() or "0.3.36"
    raise TrainingError(
        f"llama.cpp's {CONVERTER} was not found ({'; '.join(tried)}). The llama-cpp-python wheel does not "
        f"include it; its source package does: `pip download --no-deps --no-binary :all: "
        f"llama-cpp-python=={version} -d /tmp/lcpp && "
        f"tar xzf /tmp/lcpp/llama_cpp_python-{version}.tar.gz -C /tmp/lcpp`, "
        f"then pass --converter /tmp/lcpp/llama_cpp_python-{version}/vendor/llama.cpp/{CONVERTER} "
        "(or set BOTKIT_LLAMA_CPP_CONVERTER)")


def _llama_cpp_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("llama-cpp-python")
    except Exception:  # noqa: BLE001 - not installed
        return None


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it when the block succeeds, removed if not."""
    tmp = _partial(path)
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise TrainingError(f"{path}: nothing was written")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_model_dir(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise TrainingError(f"{model_dir}: not a directory; pass a Hugging Face causal-LM directory")
    if (model_dir / "adapter_config.json").is_file() and not (model_dir / "config.json").is_file():
        raise TrainingError(f"{model_dir} is a LoRA adapter, not a model; pass its base model directory and "
                            f"--adapter {model_dir} (the adapter is merged before export)")
    if not (model_dir / "config.json").is_file():
        raise TrainingError(f"{model_dir} has no config.json, so it is not a Hugging Face model directory")
    if not any(model_dir.glob("*.safetensors")) and not any(model_dir.glob("*.bin")):
        raise TrainingError(f"{model_dir} has no weights (*.safetensors or *.bin)")
    if not (model_dir / "tokenizer.json").is_file() and not (model_dir / "tokenizer.model").is_file():
        raise TrainingError(f"{model_dir} has no tokenizer (tokenizer.json or tokenizer.model); the GGUF needs it")


def merge_adapter(base_dir: Path, adapter_dir: Path, dest: Path) -> Path:
    """Fold a LoRA adapter into its base model and save the merged model (+ tokenizer) in ``dest``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (adapter_dir / "adapter_config.json").is_file():
        raise TrainingError(f"--adapter {adapter_dir}: not a LoRA adapter directory (no adapter_config.json)")
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), local_files_only=True, dtype=torch.float32)
    try:
        model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False).merge_and_unload()
    except Exception as exc:  # noqa: BLE001
        raise TrainingError(f"--adapter {adapter_dir} could not be applied to {base_dir} ({exc})") from exc
    model.save_pretrained(str(dest))
    tok_src = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_dir
    AutoTokenizer.from_pretrained(str(tok_src), local_files_only=True).save_pretrained(str(dest))
    for extra in ("generation_config.json",):
        if (base_dir / extra).is_file() and not (dest / extra).is_file():
            shutil.copy2(base_dir / extra, dest / extra)
    return dest


def convert(model_dir: Path, out: Path, converter: Path, outtype: str = "f16") -> Path:
    """Run llama.cpp's converter on ``model_dir``, writing ``out`` atomically."""
    with _atomic(out) as tmp:
        cmd = [sys.executable, str(converter), str(model_dir), "--outfile", str(tmp), "--outtype", outtype]
        log.info("converting: %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-12:])
            raise TrainingError(f"{converter.name} failed on {model_dir} (exit {proc.returncode}):\n{tail}")
    return out


def quantize(src: Path, out: Path, quant: str, threads: int = 0) -> Path:
    """``llama_model_quantize`` ``src`` (a GGUF) to ``quant`` ('q8_0' or 'q4_k_m'), writing ``out`` atomically."""
    from botkit.generation.llamacpp import import_llama_cpp

    try:
        llama_cpp = import_llama_cpp()
    except Exception as exc:  # noqa: BLE001 - GenerationError; here it is a training step
        raise TrainingError(f"quantising to {quant} needs llama-cpp-python: {exc}") from exc
    ftype = QUANTS.get(quant)
    if ftype is None:  # f16 is what convert() writes: nothing to quantise
        raise TrainingError(f"cannot quantise to {quant!r}: quantize() makes q8_0 or q4_k_m; "
                            "f16 comes from convert()")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype)
    params.nthread = threads or (os.cpu_count() or 1)
    with _atomic(out) as tmp:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if rc != 0:
            raise TrainingError(f"llama_model_quantize({src.name} -> {quant}) failed with code {rc}")
    return out


def check_gguf(path: Path) -> dict[str, object]:
    """Header facts of a GGUF file (architecture, tensor count, file type); raises if unreadable."""
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001
        raise TrainingError(f"{path}: not a readable GGUF file ({exc})") from exc

    def field(name: str) -> object:
        f = reader.fields.get(name)
        if f is None:
            return None
        value = f.parts[f.data[0]]
        if value.dtype.kind == "u" and value.itemsize == 1:
            return bytes(value).decode("utf-8", "replace")
        return value[0].item()

    return {"architecture": field("general.architecture"), "tensors": len(reader.tensors),
            "file_type": field("general.file_type"), "bytes": path.stat().st_size}


def export_gguf(model_dir: str | Path, *, quant: str = "q8_0", out: str | Path | None = None,
                adapter: str | Path | None = None, converter: str | Path | None = None,
                threads: int = 0) -> Path:
    """Export ``model_dir`` (merged, or base + ``adapter``) to a GGUF quantised to ``quant``.

    Returns the written file. Raises :class:`TrainingError` with what to do for every failure.
    """
    quant = quant.lower()
    if quant not in QUANTS:
        raise TrainingError(f"--quant {quant!r}: allowed: {', '.join(QUANTS)}")
    model_dir = Path(model_dir).expanduser().resolve()
    check_model_dir(model_dir)
    script = find_converter(converter)
    target = Path(out).expanduser().resolve() if out else model_dir / f"model-{quant}.gguf"
    if target.suffix != ".gguf":
        raise TrainingError(f"--out {target}: the file name must end in .gguf")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-gguf-", dir=target.parent) as work:
        source = model_dir
        if adapter:
            t0 = time.perf_counter()
            source = merge_adapter(model_dir, Path(adapter).expanduser().resolve(), Path(work) / "merged")
            log.info("merged %s into %s in %.1fs", adapter, model_dir, time.perf_counter() - t0)
        t0 = time.perf_counter()
        f16 = target if quant == "f16" else Path(work) / "model-f16.gguf"
        convert(source, f16, script)
        log.info("converted to %s in %.1fs", f16.name, time.perf_counter() - t0)
        if quant != "f16":
            t0 = time.perf_counter()
            quantize(f16, target, quant, threads)
            log.info("quantised to %s in %.1fs", quant, time.perf_counter() - t0)
    facts = check_gguf(target)
    log.info("wrote %s: %s", target, facts)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="a merged Hugging Face causal-LM directory (or the base, with --adapter)")
    parser.add_argument("--quant", default="q8_0", choices=sorted(QUANTS), help="default: q8_0")
    parser.add_argument("--out", help="output file (default: MODEL_DIR/model-<quant>.gguf)")
    parser.add_argument("--adapter", help="a LoRA adapter directory to merge into MODEL_DIR first")
    parser.add_argument("--converter", help=f"path of llama.cpp's {CONVERTER} (or its directory)")
    parser.add_argument("--threads", type=int, default=0, help="quantisation threads (0 = all cores)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = export_gguf(args.model_dir, quant=args.quant, out=args.out, adapter=args.adapter,
                           converter=args.converter, threads=args.threads)
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
