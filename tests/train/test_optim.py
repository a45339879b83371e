"""The MLPerf DLRMv2 learning-rate schedule and the combined (fused embedding + dense) optimizer."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torchrec.optim.optimizers import in_backward_optimizer_filter

from dlrm_scale.config import ConfigError, DenseOptimizerConfig, load_config
from dlrm_scale.models.dlrm import build_dlrm
from dlrm_scale.sharding.planner import shard_model
from dlrm_scale.train.optim import (
    MIN_DECAYED_LR,
    MlperfSchedule,
    check_schedule,
    lr_change_step,
    make_dense_optimizer,
    mlperf_lr_factor,
)


def direct_factor(step: int, warmup: int, start: int, steps: int, power: float) -> float:
    """The schedule written out phase by phase (1-based step)."""
    if warmup and step < warmup:
        return step / warmup
    if steps and start <= step < start + steps:
        return ((steps - (step - start)) / steps) ** power
    if steps and step >= start + steps:
        return (1 / steps) ** power  # held at the last decayed value
    return 1.0


@pytest.mark.parametrize(("warmup", "start", "steps", "power"), [
    (0, 0, 0, 2.0), (5, 0, 0, 2.0), (0, 0, 7, 2.0), (4, 6, 4, 2.0), (3, 3, 10, 1.0), (10, 30, 25, 0.5),
])
def test_factor_matches_the_direct_formula(warmup: int, start: int, steps: int, power: float) -> None:
    for step in range(1, 80):
        expected = direct_factor(step, warmup, start, steps, power)
        got = mlperf_lr_factor(step, warmup_steps=warmup, decay_start=start, decay_steps=steps, decay_power=power)
        assert got == pytest.approx(expected, rel=1e-12), step


def test_factor_hand_values() -> None:
    values = [mlperf_lr_factor(s, warmup_steps=4, decay_start=6, decay_steps=4, decay_power=2.0)
              for s in range(1, 12)]
    assert values == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 0.5625, 0.25, 0.0625, 0.0625, 0.0625])


def test_lambda_lr_applies_the_schedule_from_the_first_step_and_floors_decay() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=2e-6)
    schedule = MlperfSchedule(warmup_steps=2, decay_start=2, decay_steps=100, decay_power=2.0, base_lr=2e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    seen = []
    for _ in range(6):
        seen.append(optimizer.param_groups[0]["lr"])  # the rate optimizer step number len(seen) runs with
        optimizer.step()
        scheduler.step()
    assert seen[:3] == pytest.approx([1e-6, 2e-6, 2e-6 * (99 / 100) ** 2])
    # 2e-6 * (96/100)^2 > 1e-7 still; far into the decay the reference's absolute floor of 1e-7 holds
    assert schedule(200) * 2e-6 == pytest.approx(MIN_DECAYED_LR)


@pytest.mark.parametrize(("fields", "message"), [
    ({"warmup_steps": 10, "decay_start": 5, "decay_steps": 3}, "decay_start"),
    ({"warmup_steps": -1}, "warmup_steps"),
])
def test_bad_schedules_are_rejected(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_schedule(DenseOptimizerConfig(**fields))


@pytest.fixture
def world_of_one():
    """A one-process gloo group, so a real DistributedModelParallel can be built inside the test process."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_combined_optimizer_covers_fused_and_dense_and_both_follow_the_schedule(world_of_one) -> None:
    cfg = load_config(None, [
        "data.cardinalities=[40, 30]", "model.embedding_dim=8", "model.bottom_mlp=[16, 8]", "model.top_mlp=[16, 1]",
        "sharding.default_type=table_wise", "optimizer.embedding.name=rowwise_adagrad", "optimizer.embedding.lr=0.5",
        "optimizer.dense.name=adagrad", "optimizer.dense.lr=0.1", "optimizer.dense.warmup_steps=4",
        "train.batch_size=4"])
    torch.manual_seed(0)
    dmp = shard_model(build_dlrm(cfg.model, [40, 30], device="meta"), cfg, device=torch.device("cpu"))
    optimizer, scheduler = make_dense_optimizer(dmp, cfg.optimizer.dense)

    dense_names = {name for name, _ in in_backward_optimizer_filter(dmp.named_parameters())}
    assert dense_names and not any("embedding_bags" in name for name in dense_names)
    assert set(optimizer.params) >= {"sparse_arch.embedding_bag_collection.embedding_bags.t_C1.weight",
                                     *dense_names}
    groups = list(optimizer.param_groups)
    base = [0.5, 0.1]
    assert [g["initial_lr"] for g in groups] == pytest.approx(base)
    for step in range(1, 6):
        assert [g["lr"] for g in groups] == pytest.approx([b * min(step / 4, 1.0) for b in base])
        optimizer.step()
        scheduler.step()

    # the schedule objects are saved with the scheduler, so a checkpoint carries them
    state = scheduler.state_dict()
    assert state["last_epoch"] == 5
    assert [s["base_lr"] for s in state["lr_lambdas"]] == pytest.approx(base)
    assert all(s["warmup_steps"] == 4 for s in state["lr_lambdas"])


def test_lr_change_step_is_the_fraction_of_the_run() -> None:
    cfg = load_config(None, ["data.cardinalities=[4]", "optimizer.change_lr_at=0.8", "optimizer.lr_after_change=0.2"])
    assert lr_change_step(cfg.optimizer, 10) == 8
    assert lr_change_step(cfg.optimizer, 7) == 5  # floor(5.6)
    assert lr_change_step(load_config(None, ["data.cardinalities=[4]"]).optimizer, 10) is None


def test_step_change_replaces_the_schedule_with_the_absolute_rate() -> None:
    schedule = MlperfSchedule(warmup_steps=4, decay_start=0, decay_steps=0, decay_power=2.0, base_lr=15.0,
                              change_step=8, lr_after_change=0.2)
    rates = [15.0 * schedule(last_epoch) for last_epoch in range(10)]  # steps 1 .. 10
    assert rates == pytest.approx([3.75, 7.5, 11.25, 15.0, 15.0, 15.0, 15.0, 15.0, 0.2, 0.2])


def _table_and_dense(dmp) -> dict[str, torch.Tensor]:
    """Every parameter's values (a world of one holds each table's single shard whole)."""
    values = {}
    for name, value in dmp.state_dict().items():
        if hasattr(value, "local_shards"):
            value = torch.cat([shard.tensor for shard in value.local_shards()])
        values[name] = value.detach().clone()
    return values


def test_step_change_reaches_the_fused_embedding_update(world_of_one) -> None:
    """Two runs from the same weights on the same batches: plain, and with the rates dropping from 1.0 to 0.25
    after step 2. SGD's update is -lr * grad, so at step 3 (same state, same batch, same gradient) every change of
    the second run, the fused tables' rows included, is exactly a quarter of the first's."""
    from tests.models.helpers import random_kjt

    base = ["data.cardinalities=[40, 30]", "model.embedding_dim=8", "model.bottom_mlp=[16, 8]",
            "model.top_mlp=[16, 1]", "sharding.default_type=table_wise", "optimizer.embedding.name=sgd",
            "optimizer.embedding.lr=1.0", "optimizer.dense.name=sgd", "optimizer.dense.lr=1.0", "train.batch_size=8"]
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 13, generator=generator), random_kjt([40, 30], 8, generator=generator),
                torch.randint(0, 2, (8,), generator=generator).float()) for _ in range(3)]
    deltas = []
    for extra in ([], ["optimizer.change_lr_at=0.5", "optimizer.lr_after_change=0.25"]):
        cfg = load_config(None, base + extra)
        torch.manual_seed(0)
        dmp = shard_model(build_dlrm(cfg.model, [40, 30], device="meta"), cfg, device=torch.device("cpu"))
        optimizer, scheduler = make_dense_optimizer(dmp, cfg.optimizer.dense,
                                                    change_step=lr_change_step(cfg.optimizer, 4),
                                                    lr_after_change=cfg.optimizer.lr_after_change)
        for dense, kjt, labels in batches:
            before = _table_and_dense(dmp)
            optimizer.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(dmp(dense, kjt).squeeze(-1), labels)
            loss.backward()
            optimizer.step()
            scheduler.step()
        deltas.append({name: value - before[name] for name, value in _table_and_dense(dmp).items()})
    plain, changed = deltas
    table = "sparse_arch.embedding_bag_collection.embedding_bags.t_C1.weight"
    assert plain[table].abs().sum() > 0
    for name in plain:
        torch.testing.assert_close(changed[name], 0.25 * plain[name], rtol=1e-4, atol=1e-7, msg=name)
