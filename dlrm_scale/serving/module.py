"""The exported model: raw Criteo fields in, click logits out, with ``prep``'s encoding inside (TorchScript).

Everything here is compiled by ``torch.jit.script`` at export and saved as code in the artifact, so a process that
loads it needs torch and torchrec (for fbgemm's embedding ops), never ``dlrm_scale`` or ``data_prep``. The
preprocessing repeats :mod:`data_prep.transform` and :mod:`data_prep.vocab` op for op, so a raw row scored here
and the same row prepared, loaded and scored by the trainer give the same number (tests check this on real
Criteo samples). Inputs, with B rows, ND = 13 integer and NS = 26 categorical fields:

- raw, parsed: ``dense_raw (B, ND)`` float64 or int64, the integer fields (missing = 0, as prep reads them; NaN is
  also read as missing) and ``sparse_raw (B, NS)`` int64, each categorical field's 32-bit value
  ``int(hex, 16)``, -1 where the field is empty;
- raw, as text: ``rows`` of ND + NS strings (``line.split("\\t")[1:]`` of a labeled Criteo line), see
  :meth:`ServingDLRM.parse_fields`; slower (a TorchScript loop per field), for a handful of rows;
- prepared (what ``prep`` writes to the shards): ``dense (B, ND)`` float32 and ``ids (B, NS)`` int64
  (:meth:`ServingDLRM.logits_prepared`), or ids as a KeyedJaggedTensor (:meth:`ServingDLRM.logits_kjt`).

Example (``model.pt`` from ``dlrm-scale export``)::

    import torch, torchrec  # torchrec registers fbgemm's operators the model calls
    model = torch.jit.load("model/model.pt")
    logits = model(dense_raw, sparse_raw)  # (B,)
    probabilities = model.score_fields([line.split("\\t")[1:] for line in lines])  # (B,)
"""

# No `from __future__ import annotations`: TorchScript reads the class attribute annotation below as an object.
import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

HASH_SPACE = 2**32  # Criteo's categorical values are 32-bit (data_prep.schema.HASH_SPACE)


class DenseArch(nn.Module):
    """``dense (B, ND) float32``, ``pooled (B, NS, D) float32`` -> logits ``(B,)``: the trained model's bottom MLP,
    interaction and top MLP. Export traces it (``torch.jit.trace``), so any interaction of the registry serves."""

    def __init__(self, bottom_mlp: nn.Module, interaction: nn.Module, top_mlp: nn.Module) -> None:
        super().__init__()
        self.bottom_mlp = bottom_mlp
        self.interaction = interaction
        self.top_mlp = top_mlp

    def forward(self, dense: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        return self.top_mlp(self.interaction(self.bottom_mlp(dense), pooled)).squeeze(-1)


def _parse_hex(text: str, column: int) -> int:
    """One categorical field -> its value; -1 when empty. The rules of ``data_prep.parse``: 1-8 hex digits."""
    if len(text) == 0:
        return -1
    if len(text) > 8:
        raise ValueError("field C" + str(column + 1) + ": '" + text + "' is not 1-8 hex digits")
    value = 0
    for char in text:
        code = ord(char)
        if 48 <= code <= 57:
            digit = code - 48
        elif 97 <= code <= 102:
            digit = code - 87
        elif 65 <= code <= 70:
            digit = code - 55
        else:
            raise ValueError("field C" + str(column + 1) + ": '" + text + "' is not 1-8 hex digits")
        value = value * 16 + digit
    return value


def _parse_int(text: str, column: int) -> float:
    """One integer field -> its value as float64; 0 if empty. Digits with an optional sign and an optional
    all-zero fraction (``260.0``, as prep's CSV reader accepts); exponent notation is not read here."""
    if len(text) == 0:
        return 0.0
    digits = 0
    dots = 0
    for position, char in enumerate(text):
        if char.isdigit():
            digits += 1
        elif char == ".":
            dots += 1
        elif not (position == 0 and (char == "-" or char == "+")):
            digits = -1
            break
    if digits <= 0 or dots > 1:
        raise ValueError("field I" + str(column + 1) + ": '" + text + "' is not an integer")
    value = float(text)
    if value != value or value - float(int(value)) != 0.0:
        raise ValueError("field I" + str(column + 1) + ": '" + text + "' is not an integer")
    return value


class ServingDLRM(nn.Module):
    """Preprocessing + embedding lookups + :class:`DenseArch`. ``forward(dense_raw, sparse_raw) -> logits (B,)``.

    ``embeddings`` is TorchRec's ``EmbeddingBagCollection`` (fp32) or its quantized counterpart from
    ``torchrec.quant`` (fp16/int8/int4 rows), FX-traced as TorchRec's inference path does before scripting; its
    features are ``sparse_names`` (table ``t_<name>``, ``cardinalities[i]`` rows, width D). ``encoding`` is
    ``hash`` (id = value % max_ind_range) or ``vocab`` (id = rank of that value in the column's vocabulary,
    ``vocab_sorted[i]`` ascending with ids ``vocab_ids[i]``; 0 = missing or unseen). ``dense_transform`` is
    ``log1p`` or ``log3`` (:mod:`data_prep.transform`).
    """

    vocab_offsets: list[int]  # column i's vocabulary is vocab_sorted[vocab_offsets[i]:vocab_offsets[i + 1]]

    def __init__(self, *, embeddings: nn.Module, dense_arch: nn.Module, sparse_names: list[str],
                 cardinalities: list[int], embedding_dim: int, num_dense: int, encoding: str, max_ind_range: int,
                 dense_transform: str, vocab_sorted: list[torch.Tensor], vocab_ids: list[torch.Tensor]) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.dense_arch = dense_arch
        self.sparse_names = sparse_names
        self.num_sparse = len(sparse_names)
        self.num_dense = num_dense
        self.embedding_dim = embedding_dim
        self.encoding = encoding
        self.max_ind_range = max_ind_range
        self.dense_transform = dense_transform
        self.hash_space = HASH_SPACE  # an attribute: TorchScript does not read module-level ints
        self.register_buffer("cardinalities", torch.tensor(cardinalities, dtype=torch.int64))
        sizes = [len(values) for values in vocab_sorted] if vocab_sorted else [0] * len(sparse_names)
        offsets = [0]
        for size in sizes:
            offsets.append(offsets[-1] + size)
        self.vocab_offsets = offsets
        empty = torch.zeros(0, dtype=torch.int64)
        self.register_buffer("vocab_sorted", torch.cat(vocab_sorted) if vocab_sorted else empty)
        self.register_buffer("vocab_ids", torch.cat(vocab_ids) if vocab_ids else empty)

    @torch.jit.export
    def transform_dense(self, dense_raw: torch.Tensor) -> torch.Tensor:
        """``(B, ND)`` integers (missing 0) -> ``(B, ND) float32``, computed in float64 as prep does."""
        values = dense_raw.to(torch.float64)
        values = torch.where(torch.isnan(values), torch.zeros_like(values), values)
        if self.dense_transform == "log1p":
            return torch.log1p(torch.clamp(values, min=0.0)).to(torch.float32)
        return torch.log(torch.clamp(values, min=-2.0) + 3.0).to(torch.float32)

    @torch.jit.export
    def encode_sparse(self, sparse_raw: torch.Tensor) -> torch.Tensor:
        """``(B, NS)`` int64 raw values (-1 = missing) -> ``(B, NS)`` int64 ids."""
        if bool(((sparse_raw < -1) | (sparse_raw >= self.hash_space)).any()):
            raise ValueError("sparse_raw: categorical values must be in [0, 2**32) or -1 (missing)")
        missing = sparse_raw < 0
        values = torch.where(missing, torch.zeros_like(sparse_raw), sparse_raw)
        if 0 < self.max_ind_range < self.hash_space:
            values = torch.remainder(values, self.max_ind_range)
        if self.encoding == "hash":
            return values
        columns: list[torch.Tensor] = []
        for column in range(self.num_sparse):
            start = self.vocab_offsets[column]
            end = self.vocab_offsets[column + 1]
            if end == start:
                columns.append(torch.zeros_like(values[:, column]))
                continue
            table = self.vocab_sorted[start:end]
            wanted = values[:, column].contiguous()
            position = torch.clamp(torch.searchsorted(table, wanted), max=end - start - 1)
            found = (table[position] == wanted) & ~missing[:, column]
            columns.append(torch.where(found, self.vocab_ids[start:end][position], torch.zeros_like(wanted)))
        return torch.stack(columns, dim=1)

    @torch.jit.export
    def prepare(self, dense_raw: torch.Tensor, sparse_raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw parsed fields -> what ``prep`` writes: ``dense (B, ND) float32``, ``ids (B, NS) int64``."""
        if dense_raw.dim() != 2 or dense_raw.shape[1] != self.num_dense:
            raise ValueError("dense_raw must be (B, " + str(self.num_dense) + ")")
        if sparse_raw.dim() != 2 or sparse_raw.shape[1] != self.num_sparse or sparse_raw.shape[0] != \
                dense_raw.shape[0]:
            raise ValueError("sparse_raw must be (B, " + str(self.num_sparse) + ") with dense_raw's B")
        return self.transform_dense(dense_raw), self.encode_sparse(sparse_raw.to(torch.int64))

    @torch.jit.export
    def logits_prepared(self, dense: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Prepared features -> logits ``(B,)``; ids outside a table raise (the lookup kernels do not check)."""
        if ids.dim() != 2 or ids.shape[1] != self.num_sparse or dense.dim() != 2 or \
                dense.shape[1] != self.num_dense or dense.shape[0] != ids.shape[0]:
            raise ValueError("expected dense (B, " + str(self.num_dense) + ") and ids (B, " + str(self.num_sparse)
                             + ")")
        if bool(((ids < 0) | (ids >= self.cardinalities.unsqueeze(0))).any()):
            raise ValueError("ids: some id is outside [0, cardinality) of its table")
        batch = ids.shape[0]
        features = KeyedJaggedTensor(keys=self.sparse_names, values=ids.t().contiguous().view(-1),
                                     lengths=torch.ones(batch * self.num_sparse, dtype=torch.int32))
        return self._logits(dense, features)

    @torch.jit.export
    def logits_kjt(self, dense: torch.Tensor, features: KeyedJaggedTensor) -> torch.Tensor:
        """``dense (B, ND) float32`` and a KeyedJaggedTensor of prepared ids (keys C1..CNS in order, stride B, as
        the training loader's batches hold them; several ids per row are sum-pooled) -> logits ``(B,)``."""
        if features.keys() != self.sparse_names:
            raise ValueError("features: keys must be " + ", ".join(self.sparse_names) + " in this order")
        if dense.dim() != 2 or dense.shape[1] != self.num_dense or dense.shape[0] != features.stride():
            raise ValueError("dense must be (B, " + str(self.num_dense) + ") with B the features' stride")
        per_key = torch.tensor(features.length_per_key(), dtype=torch.int64)
        bounds = torch.repeat_interleave(self.cardinalities, per_key)
        values = features.values()
        if bool(((values < 0) | (values >= bounds)).any()):
            raise ValueError("features: some id is outside [0, cardinality) of its table")
        return self._logits(dense, features)

    def _logits(self, dense: torch.Tensor, features: KeyedJaggedTensor) -> torch.Tensor:
        pooled_by_name = self.embeddings(features).to_dict()
        pooled = torch.stack([pooled_by_name[name] for name in self.sparse_names], dim=1)  # (B, NS, D)
        return self.dense_arch(dense.to(torch.float32), pooled.to(torch.float32))

    def forward(self, dense_raw: torch.Tensor, sparse_raw: torch.Tensor) -> torch.Tensor:
        dense, ids = self.prepare(dense_raw, sparse_raw)
        return self.logits_prepared(dense, ids)

    @torch.jit.export
    def parse_fields(self, rows: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of ND integer strings then NS hex strings -> ``dense_raw (B, ND) float64``, ``sparse_raw (B, NS)``."""
        dense: list[list[float]] = []
        sparse: list[list[int]] = []
        for row in rows:
            if len(row) != self.num_dense + self.num_sparse:
                raise ValueError("a row has " + str(len(row)) + " fields; expected "
                                 + str(self.num_dense + self.num_sparse) + " (I1.., C1..; no label)")
            dense.append([_parse_int(row[j].strip(), j) for j in range(self.num_dense)])
            sparse.append([_parse_hex(row[self.num_dense + j].strip(), j) for j in range(self.num_sparse)])
        return (torch.tensor(dense, dtype=torch.float64).view(len(rows), self.num_dense),
                torch.tensor(sparse, dtype=torch.int64).view(len(rows), self.num_sparse))

    @torch.jit.export
    def score_fields(self, rows: list[list[str]]) -> torch.Tensor:
        """Rows of raw text fields -> click probabilities ``(B,)``."""
        dense_raw, sparse_raw = self.parse_fields(rows)
        return torch.sigmoid(self.forward(dense_raw, sparse_raw))
