"""`validate`'s model check: a builtin name, a model directory whose weights open, or a hub id
that is cached or reachable. Each failure is one line naming the suite file and the field."""
from __future__ import annotations

from pathlib import Path

from bench.errors import ModelNotFoundError, NetworkRequiredError, SuiteError
from trainers.errors import nearest
from trainers.models import resolve_model

BUILTIN_PREFIX = "builtin:"
BUILTIN_MODELS = ("builtin:tiny-llama",)


def check_model(suite, name: str, field_name: str) -> str:
    """A builtin name, an existing HF model directory, or a hub id that is cached or reachable."""
    if name.startswith(BUILTIN_PREFIX):
        if name not in BUILTIN_MODELS:
            near = nearest(name, BUILTIN_MODELS, cutoff=0.0)
            raise SuiteError(suite.source, field_name, f"unknown builtin model {name!r}; did you mean {near!r}?")
        return f"{field_name}: {name} (built in code)"
    try:
        resolved = resolve_model(name)
    except NetworkRequiredError as err:
        raise NetworkRequiredError(f"{suite.source}: {field_name}: {err}") from None
    except ModelNotFoundError as err:
        raise SuiteError(suite.source, field_name, str(err)) from None
    if Path(resolved).is_dir():
        problem = weights_problem(Path(resolved))
        if problem:
            raise SuiteError(suite.source, field_name, problem)
    return f"{field_name}: {resolved}"


def weights_problem(folder: Path) -> str | None:
    """None when the directory's weight files can be opened; else what is wrong, naming the file.

    safetensors: the header is parsed and must cover the whole file (a cut file fails);
    PyTorch .bin files are zip archives whose directory sits at the end (a cut file fails).
    Reads headers only, never the tensors."""
    import zipfile

    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        return f"model directory {folder} has no weights (*.safetensors or pytorch_model*.bin)"
    for path in files:
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt") as fh:
                    fh.keys()
            else:
                with zipfile.ZipFile(path) as zf:
                    zf.namelist()
        except Exception as err:  # noqa: BLE001 - every library error means: unreadable
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            return f"weights file {path} is unreadable ({first})"
    return None
