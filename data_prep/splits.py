"""Which split each input line goes to: the train/validation/test conventions of the references.

``--holdout`` (``auto`` picks by ``--dataset``):

- ``last-file`` (terabyte): every labeled file but the last is ``train``; the last (day_23 of the full set; with
  fewer days, the highest day given) is halved by lines into the two held-out splits. Files named ``day_N``
  are ordered by N, not as the shell sorts them (which puts day_10 before day_2).
- ``last-seventh`` (kaggle): facebookresearch/dlrm's convention. The labeled lines (train.txt) are cut into 7
  consecutive parts with ``divmod`` (the first ``n % 7`` one line longer), the last part is held out and halved:
  45,840,617 lines give train 39,291,958 and halves of 3,274,330 and 3,274,329.
- ``none`` (auto): everything labeled is ``train``.

Halving: the first ``ceil(n / 2)`` held-out lines form the first half. ``--first-half test`` (default) makes it
the test split and the second half validation, as facebookresearch/dlrm (``np.array_split``) and MLPerf v1 do;
``--first-half val`` is TorchRec's/MLPerf DLRMv2's choice. Halves are counted in lines, so a skipped bad line
leaves its half one row short rather than moving a row between splits.

Rows of a file without a label column (Kaggle's test.txt) go to the split ``unlabeled``, label -1.
"""

from __future__ import annotations

from data_prep.choices import CHOICES
from data_prep.errors import PrepError
from data_prep.layout import InputFile

DEFAULT_HOLDOUT = {"terabyte": "last-file", "kaggle": "last-seventh", "auto": "none"}
TRAIN = "train"
UNLABELED = "unlabeled"

# A file's routing: [(first data line of the segment, 0-based within the file, split), ...] ascending.
Routing = list[tuple[int, str]]


def resolve_holdout(holdout: str, dataset: str) -> str:
    return DEFAULT_HOLDOUT[dataset] if holdout == "auto" else holdout


def split_names(holdout: str, first_half: str) -> list[str]:
    """The splits a run writes, so that an empty held-out half still appears in the manifest."""
    if holdout == "none":
        return [TRAIN]
    return [TRAIN, *held_out_names(first_half)]


def held_out_names(first_half: str) -> tuple[str, str]:
    return ("test", "val") if first_half == "test" else ("val", "test")


def files_to_count(sources: list[InputFile], holdout: str) -> list[int]:
    """Indices of the files whose line counts the routing needs."""
    labeled = [s.index for s in sources if s.labeled]
    if holdout == "last-file":
        return labeled[-1:]
    if holdout == "last-seventh":
        return labeled
    return []


def route(sources: list[InputFile], line_counts: dict[int, int], *, holdout: str, first_half: str) -> dict[int, Routing]:
    """``file index -> routing``; ``line_counts`` holds the data lines of the files :func:`files_to_count` named."""
    routing: dict[int, Routing] = {s.index: [(0, UNLABELED)] for s in sources if not s.labeled}
    labeled = [s.index for s in sources if s.labeled]
    first, second = held_out_names(first_half)
    if holdout == "none":
        routing.update({i: [(0, TRAIN)] for i in labeled})
    elif holdout == "last-file":
        if len(labeled) < 2:
            raise PrepError(f"--holdout last-file needs at least 2 labeled input files (the last one is held out); "
                            f"got {len(labeled)}. Give more days, or use --holdout none or last-seventh")
        routing.update({i: [(0, TRAIN)] for i in labeled[:-1]})
        lines = line_counts[labeled[-1]]
        routing[labeled[-1]] = [(0, first), ((lines + 1) // 2, second)]
    elif holdout == "last-seventh":
        total = sum(line_counts[i] for i in labeled)
        held = total // 7
        cuts = [(0, TRAIN), (total - held, first), (total - held + (held + 1) // 2, second)]
        start = 0
        for i in labeled:
            end = start + line_counts[i]
            local = [(max(cut - start, 0), name) for k, (cut, name) in enumerate(cuts)
                     if cut < end and (k + 1 == len(cuts) or cuts[k + 1][0] > start)]
            routing[i] = local
            start = end
    else:
        raise PrepError(f"unknown --holdout {holdout!r}; choose from {', '.join(CHOICES['holdout'])}")
    return routing
