"""The UCR/UEA time-series classification archives: ``data=ucr data.root=<dir> data.name=<Name>``.

Reads ``<root>/<Name>/<Name>_TRAIN.tsv`` and ``_TEST.tsv`` (UCR 2018: one sequence per line,
the label first, tab-separated; trailing NaNs mark a shorter sequence) or ``<Name>_TRAIN.ts`` and
``_TEST.ts`` (the sktime/aeon ``.ts`` format of both archives: univariate or multivariate, equal
or unequal length). The official TEST file is the test split; validation is carved out of TRAIN.
Labels become integer ids (``label_names`` keeps the archive's own names); the autoencoder never
trains on them. A small parser of our own rather than aeon's: aeon would pull in numba and
pin numpy/pandas versions that the rest of seqae does not need.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch

from seqae.data.datamodule import DataError, SequenceData, SequenceDataModule, label_ids
from seqae.data.missing import check_missing, fill_gaps
from seqae.errors import ConfigError, MissingFileError

log = logging.getLogger(__name__)

FORMATS = ("auto", "tsv", "ts")
# One (timestamp, value) pair of a time-stamped .ts file; the value is the second field.
TIMESTAMPED_VALUE = re.compile(r"\(([^(),]*),([^()]*)\)")


class UCRDataModule(SequenceDataModule):
    name = "ucr"

    def __init__(
        self,
        root: str,
        name: str,
        format: str = "auto",
        val_fraction: float = 0.2,
        missing: str = "interpolate",
        **kwargs,
    ) -> None:
        super().__init__(val_fraction=val_fraction, test_fraction=0.0, **kwargs)
        if format not in FORMATS:
            raise ConfigError(f"data.format must be one of {FORMATS}, got {format!r}.")
        self.root, self.dataset, self.format = Path(str(root)).expanduser(), str(name), format
        self.missing = check_missing(missing)

    def describe(self) -> str:
        return f"UCR data set {self.dataset} in {self.root / self.dataset}"

    def load(self) -> dict[str, SequenceData]:
        files = self._files()
        parsed, filled = {}, {}
        for split, path in files.items():
            parsed[split] = (read_ts if path.suffix == ".ts" else read_tsv)(path, self.missing)
            filled[split] = parsed[split][3]
        if any(filled.values()):
            log.info(
                "data.missing=interpolate: filled %s by linear interpolation (data.missing=error refuses "
                "NaN inside a series).",
                " and ".join(f"{n:,} missing values in {files[s].name}" for s, n in filled.items() if n),
            )
        declared = parsed["train"][2] or parsed["test"][2]  # class names a .ts header lists
        ids: dict[str, torch.Tensor | None] = {"train": None, "test": None}
        if parsed["train"][1] is not None and parsed["test"][1] is not None:
            names = [*parsed["train"][1], *parsed["test"][1]]
            if declared:  # keep the header's order; ids follow it
                self.label_names = declared + sorted(set(names) - set(declared))
                order = {n: i for i, n in enumerate(self.label_names)}
                all_ids = torch.tensor([order[n] for n in names], dtype=torch.long)
            else:
                all_ids, self.label_names = label_ids(names, str(files["train"]))
            n_train = len(parsed["train"][1])
            ids = {"train": all_ids[:n_train], "test": all_ids[n_train:]}
        features = {split: p[0][0].shape[1] for split, p in parsed.items() if p[0]}
        if len(set(features.values())) > 1:
            raise DataError(
                f"{self.describe()}: TRAIN has {features['train']} dimensions but TEST has "
                f"{features['test']}; expected the same in both."
            )
        return {split: _padded(parsed[split][0], ids[split]) for split in parsed}

    def _files(self) -> dict[str, Path]:
        folder = self.root / self.dataset
        if not self.root.is_dir():
            raise MissingFileError(f"data.root={self.root}: no such folder; expected the archive's folder.")
        if not folder.is_dir():
            near = sorted(
                p.name for p in self.root.iterdir() if p.is_dir() and p.name.lower() == self.dataset.lower()
            )
            hint = f" (did you mean data.name={near[0]}? names are case-sensitive)" if near else ""
            raise MissingFileError(f"data.name={self.dataset}: no folder {folder}{hint}.")
        formats = ("tsv", "ts") if self.format == "auto" else (self.format,)
        candidates = {
            fmt: {s: folder / f"{self.dataset}_{s.upper()}.{fmt}" for s in ("train", "test")}
            for fmt in formats
        }
        # A format counts only when both of its files are there: aeon ships <Name>_TRAIN.tsv beside
        # <Name>_TRAIN.ts and <Name>_TEST.ts, and that .tsv alone is no data set.
        for files in candidates.values():
            if all(path.is_file() for path in files.values()):
                if self.format == "auto":
                    log.info("data.format=auto: reading %s and %s.", files["train"], files["test"].name)
                return files
        present = [p.name for files in candidates.values() for p in files.values() if p.is_file()]
        expected = " or ".join(f"{self.dataset}_TRAIN.{f} and {self.dataset}_TEST.{f}" for f in formats)
        found = f"; it holds only {', '.join(present)}" if present else ""
        raise MissingFileError(
            f"{folder}: expected {expected} in it{found}. A data set needs both its _TRAIN and _TEST file."
        )


def read_tsv(path: Path, missing: str = "error") -> tuple[list[np.ndarray], list[str], None, int]:
    """UCR 2018 ``.tsv``: each line is a label then the values; trailing NaNs are padding, other NaNs
    are filled (``missing="interpolate"``) or refused. The last item is how many were filled."""
    sequences, labels, filled = [], [], 0
    with open(path) as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t" if "\t" in line else ",")
            where = f"{path}, line {number}"
            values = _numbers(fields[1:], where, first=2, unit="column")
            sequences.append(_trim(values[:, None], where, missing))
            filled += fill_gaps(sequences[-1])
            labels.append(fields[0].strip())
    if not sequences:
        raise DataError(f"{path}: holds no sequences; expected one line per sequence, the label first.")
    return sequences, labels, None, filled


def read_ts(
    path: Path, missing: str = "error"
) -> tuple[list[np.ndarray], list[str] | None, list[str] | None, int]:
    """A ``.ts`` file: ``@`` header lines, then ``@data`` and one case per line, its dimensions
    separated by ``:`` and each a comma-separated list (``?`` = missing), the class label last.
    Lines starting with ``#`` or ``%`` are comments. With ``@timeStamps true`` each value is a
    ``(timestamp,value)`` pair; the values are read in file order and the timestamps ignored, so
    the series is taken as regularly sampled. A ``@targetLabel`` (regression) file has no classes.
    Returns (sequences [T_i, F], labels or None, the class names the header declares or None, how
    many missing values were filled).
    """
    header: dict[str, str] = {}
    sequences, labels, filled = [], [], 0
    dims = None
    with open(path, encoding="utf-8") as file:
        for number, raw in enumerate(file, start=1):
            line = raw.strip()
            where = f"{path}, line {number}"
            if not line or line.startswith(("#", "%")):
                continue
            if "data" not in header:
                if not line.startswith("@"):
                    raise DataError(
                        f"{where}: {line[:40]!r} before @data; expected header lines starting with '@'."
                    )
                key, _, value = line[1:].partition(" ")
                header[key.lower()] = value.strip()
                continue
            has_label = header.get("classlabel", "false").split(" ")[0].lower() == "true"
            has_target = header.get("targetlabel", "false").lower() == "true"
            if "(" in line:  # time-stamped: the label follows the last pair's ')'
                body, _, label = line.rpartition(")")
                dims_text = re.split(r"(?<=\)):", body + ")")  # timestamps hold ':' themselves
                fields = [",".join(v for _, v in TIMESTAMPED_VALUE.findall(d)) for d in dims_text]
                label = label.lstrip(":")
            else:
                fields = line.split(":")
                label = fields.pop() if has_label or has_target else ""
            if has_label:
                labels.append(label.strip())
            if dims is None:
                declared_dims = header.get("dimensions", header.get("dimension", ""))
                dims = int(declared_dims) if declared_dims.isdigit() else len(fields)
            if len(fields) != dims:
                raise DataError(f"{where}: {len(fields)} dimensions; expected {dims} (separated by ':').")
            values = [_numbers(f.split(","), f"{where}, dimension {d}") for d, f in enumerate(fields)]
            if len({len(v) for v in values}) > 1:
                raise DataError(
                    f"{where}: the dimensions have {[len(v) for v in values]} values; expected the same "
                    f"number in every dimension of a case."
                )
            sequences.append(_trim(np.stack(values, axis=-1), where, missing))
            filled += fill_gaps(sequences[-1])
    if "data" not in header:
        raise DataError(
            f"{path}: no @data line; expected a .ts header ending in @data, then one case per line."
        )
    if not sequences:
        raise DataError(f"{path}: holds no cases after @data; expected one case per line.")
    declared = header.get("classlabel", "").split()[1:] or None
    return sequences, (labels or None), declared, filled


def _numbers(fields: list[str], where: str, first: int = 1, unit: str = "value") -> np.ndarray:
    cleaned = ["nan" if f.strip() in ("", "?") else f for f in fields]
    try:
        return np.array(cleaned, dtype=np.float64)
    except ValueError:
        for i, field in enumerate(cleaned):
            try:
                float(field)
            except ValueError:
                raise DataError(
                    f"{where}, {unit} {i + first}: {field.strip()[:40]!r} is not a number; expected "
                    f"numbers (NaN or ? only as trailing padding)."
                ) from None
        raise


def _trim(values: np.ndarray, where: str, missing: str = "error") -> np.ndarray:
    """[T, F] -> the steps before trailing all-NaN padding. Infinite values before that are an error,
    and so is NaN with ``missing="error"`` (with ``"interpolate"`` the caller fills it)."""
    valid = ~np.isnan(values).all(-1)
    if not valid.any():
        raise DataError(f"{where}: the sequence has no values; expected at least one number.")
    end = int(np.flatnonzero(valid)[-1]) + 1
    bad = np.argwhere(np.isinf(values[:end]) if missing == "interpolate" else ~np.isfinite(values[:end]))
    if len(bad):
        step, feature = bad[0]
        raise DataError(
            f"{where}: the value at step {step}{f', dimension {feature}' if values.shape[1] > 1 else ''} is "
            f"{values[step, feature]}, before the sequence ends (step {end}); expected finite values "
            f"(NaN only as trailing padding{'' if missing == 'interpolate' else ', or data.missing=interpolate to fill NaN gaps'})."
        )
    return values[:end]


def _padded(sequences: list[np.ndarray], labels: torch.Tensor | None) -> SequenceData:
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    x = torch.zeros(len(sequences), int(lengths.max()), sequences[0].shape[1])
    for i, s in enumerate(sequences):
        x[i, : len(s)] = torch.from_numpy(s)
    equal = bool((lengths == x.shape[1]).all())
    return SequenceData(x, None if equal else lengths, labels)
