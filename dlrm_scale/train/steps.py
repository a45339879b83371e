"""Running the model over batches: TorchRec's pipeline, or a plain loop that does the same steps one at a time.

``TrainPipelineSparseDist`` keeps up to three batches in flight: while batch i runs forward, backward and the
optimizer step, batch i+1's sparse features are already being exchanged between ranks (the input all-to-all)
and batch i+2 is being copied to the device; it takes host batches
(:func:`dlrm_scale.train.build.loader_device`), so that copy is the only one. With ``sharding.prefetch_pipeline``
and a UVM-cached table it is TorchRec's ``PrefetchTrainPipelineSparseDist``, which also fetches batch i+1's rows
into the HBM cache while batch i trains.
The plain loop (``train.pipeline = false``) runs forward, backward, step in order on batches the loader already
copied; it is slower but easy to step through in a debugger, and gives the same numbers.

Either way :meth:`BatchRunner.run` yields one :class:`StepOutput` per batch, in order, and stops when the given
iterator is exhausted and every batch taken from it has been processed, so the pipeline is empty between two
calls. In training mode (``model.train()``) each batch is one optimizer step; in eval mode only the forward runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from dlrm_scale.train.model_with_loss import StepOutput


def prefetches_cache(model: nn.Module) -> bool:
    """Whether the sharding plan of ``model`` (a ``DistributedModelParallel``) has a UVM-cached table sharded for
    TorchRec's prefetch pipeline (``sharding.prefetch_pipeline``, carried by the table's ``CacheParams``)."""
    plan = getattr(model, "plan", None)
    return any(sharding.compute_kernel == "fused_uvm_caching" and sharding.cache_params is not None
               and bool(sharding.cache_params.prefetch_pipeline)
               for module_plan in getattr(plan, "plan", {}).values() for sharding in module_plan.values())


def pipeline_class(model: nn.Module) -> type:
    """TorchRec's ``PrefetchTrainPipelineSparseDist`` when :func:`prefetches_cache`, else
    ``TrainPipelineSparseDist``: fbgemm needs the prefetch stage exactly when its caches were built for it."""
    from torchrec.distributed.train_pipeline import PrefetchTrainPipelineSparseDist, TrainPipelineSparseDist

    return PrefetchTrainPipelineSparseDist if prefetches_cache(model) else TrainPipelineSparseDist


class BatchRunner:
    """``run(batches)`` over a sharded ``model`` (``DistributedModelParallel`` of a ``ModelWithLoss``)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, *,
                 pipelined: bool) -> None:
        self.model = model
        self.optimizer = optimizer
        self.device = device
        self.pipelined = pipelined
        self._pipeline = None
        if pipelined:
            self._pipeline = pipeline_class(model)(model, optimizer, device, execute_all_batches=True)

    def run(self, batches: Iterator) -> Iterator[StepOutput]:
        if self._pipeline is not None:
            while True:
                try:
                    yield self._pipeline.progress(batches)
                except StopIteration:
                    return
        for batch in batches:
            batch = batch.to(self.device, non_blocking=True)  # a no-op on the batches the loader copied
            if self.model.training:
                self.optimizer.zero_grad()
                loss, output = self.model(batch)
                loss.backward()
                self.optimizer.step()
            else:
                _, output = self.model(batch)
            yield output
