"""Load preference pairs from a builtin task, the HF hub, or local files (`load_pairs`).

Sources (`data.source`) are registered in `bench.data.registry`: builtin tasks (`arith`),
made in code; and rows sources, each turning one row into a pair: `hh_rlhf` (Anthropic
HH-RLHF conversations, `bench.data.hh_rlhf`), `preference` (columns prompt/chosen/rejected
whose values are strings or chat-message lists, `bench.data.preference`). Rows come
from `data.path` (.jsonl, .jsonl.gz, .json, .parquet) or from `data.hub_id` (or the
source's own hub dataset) via `datasets.load_dataset`. A faulty row never crashes a run: it is skipped and counted by
reason, unless `on_bad_row: error`, which turns the first one into a DataError naming it.
"""
from __future__ import annotations

import gzip
import json
import os
import random
import zlib
from pathlib import Path
from typing import Iterator

from tqdm.auto import tqdm

from bench.data.records import LoadResult, PreferencePair
from bench.data.registry import DataSource, get_source, list_sources
from bench.errors import DataError, NetworkRequiredError
from trainers import net   # module, not name: tests replace the network probe

# datasets' packaged builders read local files (data_dir / data_files): no network needed
_LOCAL_BUILDERS = {"json", "csv", "parquet", "arrow", "text", "pandas"}
_EXTENSIONS = (".jsonl", ".jsonl.gz", ".json", ".parquet")


def load_pairs(cfg, *, task_seed: int | None = None, progress: bool = True) -> LoadResult:
    """Pairs for a `bench.suite.schema.DataConfig` from its registered source (`bench.data.registry`).

    Builtin tasks make `cfg.limit` pairs (or the task's default size) from `task_seed`
    (default `cfg.shuffle_seed`). File and hub sources keep valid rows in order, then
    shuffle them with `cfg.shuffle_seed` and keep the first `cfg.limit`. Ids are
    `<source name>:<row index>` of the original row, stable under shuffling and limits.
    """
    source = get_source(cfg.source)
    if source.builtin:
        return _builtin(source, cfg, cfg.shuffle_seed if task_seed is None else task_seed)
    if cfg.task_options:
        raise DataError(f"data.task_options: only builtin tasks ({', '.join(list_sources(builtin=True))}) take "
                        f"options, not {cfg.source!r}")
    name, where, unit, rows = _rows(source, cfg)
    pairs, skipped, notes = _convert(rows, source.convert, name, where, unit, cfg.on_bad_row == "error", progress)
    random.Random(cfg.shuffle_seed).shuffle(pairs)
    return LoadResult(pairs[: cfg.limit] if cfg.limit else pairs, skipped, name, notes)


def _builtin(source: DataSource, cfg, seed: int) -> LoadResult:
    task = source.task
    pairs = task.make_pairs(cfg.limit or task.default_size, seed, **cfg.task_options)
    return LoadResult(pairs, {}, f"{cfg.source}:{seed}")


# ---------------------------------------------------------------- reading rows
# A row that cannot be read yields (index, reason) instead of a dict: `_convert` counts it under
# that reason (or, with on_bad_row: error, stops naming the file and row). Nothing a single row
# holds may escape as an exception: bytes, nesting and text are all checked here.
class _Unreadable(str):
    """A skip reason for a row that never became a dict, with what went wrong for messages."""

    def __new__(cls, reason: str, detail: str = ""):
        obj = super().__new__(cls, reason)
        obj.detail = detail
        return obj


def _rows(source: DataSource, cfg) -> tuple[str, str, str, Iterator[tuple[int, object]]]:
    """(name for ids, where for messages, unit for messages, iterator of (row index, row or _Unreadable))."""
    if cfg.path:
        return _local_rows(Path(os.path.expanduser(cfg.path)))
    hub_id = source.hub_dataset(cfg)
    if not hub_id:
        raise DataError(f"data: source {cfg.source!r} needs data.path (a local file) or data.hub_id")
    return _hub_rows(hub_id, cfg.data_dir, cfg.split)


def _local_rows(path: Path):
    if not path.exists():
        raise DataError(f"data.path: {path} does not exist")
    if path.is_dir():
        raise DataError(f"data.path: {path} is a directory, not a data file")
    name = path.name
    suffix = next((s for s in _EXTENSIONS if name.endswith(s)), None)
    if suffix is None:
        raise DataError(f"data.path: {path} is not one of {', '.join(_EXTENSIONS)}")
    stem = name[: -len(suffix)]
    if suffix in (".jsonl", ".jsonl.gz"):
        return stem, str(path), "line", _jsonl_rows(path)
    if suffix == ".json":
        return stem, str(path), "record", enumerate(_json_records(path))
    return stem, str(path), "row", _parquet_rows(path)


def _parse_json(text: str):
    """A parsed JSON object, or the reason it is not one."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError:
        return _Unreadable("unparseable")
    except RecursionError:  # json's C parser recurses once per nesting level
        return _Unreadable("too_deeply_nested")
    return row if isinstance(row, dict) else _Unreadable("unparseable")


def _jsonl_rows(path: Path):
    """Streamed line by line as bytes, so one undecodable line costs that line only.

    The index is the 0-based line number (blank lines count), so messages say line index + 1."""
    opener = gzip.open if path.name.endswith(".gz") else open
    i = -1
    try:
        with opener(path, "rb") as fh:
            for i, raw in enumerate(fh):
                if i == 0 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]  # a UTF-8 byte-order mark written by some editors
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    yield i, _Unreadable("undecodable_bytes")
                    continue
                if not line.strip():
                    continue
                yield i, _parse_json(line)
    except (EOFError, OSError, zlib.error) as err:  # a cut or damaged .gz: the rows read so far stay
        yield i + 1, _Unreadable("truncated_file", f"{type(err).__name__}: {err}")


def _json_records(path: Path) -> list:
    # A JSON list must be parsed whole; undecodable bytes are kept as lone surrogates
    # (surrogateescape) so that only the records holding them are skipped, as `invalid_text`.
    try:
        text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"data.path: {path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    except RecursionError:
        raise DataError(f"data.path: {path} is nested too deeply to parse as JSON; "
                        "write one record per line (.jsonl) so a bad record costs only itself") from None
    if not isinstance(data, list):
        raise DataError(f"data.path: {path} must hold a JSON list of records")
    return [row if isinstance(row, dict) else _Unreadable("unparseable") for row in data]


def _parquet_rows(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq  # pyarrow keeps nested lists as Python lists (pandas gives arrays)

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"data.path: {path} is not a readable parquet file ({str(err).splitlines()[0]})") from None
    i = 0
    try:
        for batch in pf.iter_batches(batch_size=1024):  # streamed: never the whole table at once
            for row in batch.to_pylist():
                yield i, row
                i += 1
    except (pa.ArrowException, OSError) as err:
        yield i, _Unreadable("truncated_file", f"{type(err).__name__}: {str(err).splitlines()[0]}")


def _hub_rows(hub_id: str, data_dir: str | None, split: str):
    # asked BEFORE load_dataset, which would otherwise hang retrying an unreachable hub
    if hub_id not in _LOCAL_BUILDERS and not net.network_available():
        raise NetworkRequiredError(
            f"data.hub_id: {hub_id} is on the Hugging Face hub and this machine has no network; "
            "download the data elsewhere and set data.path to a local .jsonl/.jsonl.gz/.json/.parquet file"
        )
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, data_dir=data_dir, split=split)
    except (FileNotFoundError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"data.hub_id: cannot load {hub_id} (data_dir={data_dir}, split={split}): {first}") from None
    name = "/".join(x for x in (hub_id, data_dir) if x) + f":{split}"
    return name, f"{hub_id} (data_dir={data_dir}, split={split})", "row", enumerate(ds)


# ---------------------------------------------------------------- rows into pairs
_REASONS = {
    "empty_response": "a response is empty",
    "identical_responses": "chosen and rejected are identical",
    "missing_field": "a prompt/chosen/rejected field is missing",
    "prompts_differ": "chosen and rejected do not share a prompt",
    "unparseable": "the row is not a JSON object of the expected shape",
    "undecodable_bytes": "the line is not valid UTF-8",
    "too_deeply_nested": "the JSON is nested too deeply to parse",
    "invalid_text": "the text holds a lone UTF-16 surrogate, which no tokenizer can encode",
    "truncated_file": "the file ends in the middle (cut or damaged); the rows before it were read",
}


def _convert(rows, convert, name: str, where: str, unit: str, strict: bool, progress: bool):
    """Pairs, skip counts by reason and note counts. Row indexes are 0-based (ids keep them);
    messages name `unit` index + 1, as an editor numbers lines."""
    pairs, skipped, notes = [], {}, {}
    for i, row in tqdm(rows, desc=f"reading {name}", unit="row", disable=not progress):
        if isinstance(row, _Unreadable):
            parsed = row
        elif not isinstance(row, dict):
            parsed = "unparseable"
        else:
            try:
                parsed = convert(row)
            except RecursionError:  # deeply nested values inside a parsed row
                parsed = "too_deeply_nested"
            if not isinstance(parsed, str) and not _encodable(parsed):
                parsed = "invalid_text"
        if isinstance(parsed, str):
            if strict:
                detail = f": {parsed.detail}" if getattr(parsed, "detail", "") else ""
                raise DataError(f"{where}: {unit} {i + 1}: {parsed} ({_REASONS[parsed]}{detail}); "
                                "set data.on_bad_row: skip to skip such rows")
            skipped[str(parsed)] = skipped.get(str(parsed), 0) + 1
            continue
        prompt, chosen, rejected, messages, note = parsed
        if note:
            notes[note] = notes.get(note, 0) + 1
        pairs.append(PreferencePair(f"{name}:{i}", prompt, chosen, rejected, messages, {"row": i}))
    return pairs, skipped, notes


def _encodable(parsed) -> bool:
    """Every text of the pair encodes as UTF-8 (a lone surrogate such as "\\ud800" does not)."""
    prompt, chosen, rejected, messages, _ = parsed
    texts = [prompt, chosen, rejected, *(m["content"] for m in messages or ())]
    try:
        for text in texts:
            text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


