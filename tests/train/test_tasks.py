"""Tasks: standardised regression reported in physical units, classification accuracy."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from symgraph.train.tasks import ClassificationTask, RegressionTask


class Constant(nn.Module):
    """Predicts ``value`` (standardised) for every item of ``x [n, ...]``."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value.expand(x.shape[0], *self.value.shape)


class Fixed(nn.Module):
    """Returns the same ``output`` whatever the input."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output


def test_statistics_come_from_the_given_split_and_mae_is_in_physical_units():
    y = torch.tensor([[1.0, 10.0], [3.0, 30.0], [5.0, 50.0]])
    task = RegressionTask.from_dataset(
        TensorDataset(torch.zeros(3, 1), y), target_index=1, unit_scale=1000.0, unit_name="meV"
    )
    assert task.mean.item() == pytest.approx(30.0)
    assert task.std.item() == pytest.approx((800 / 3) ** 0.5)
    batch = (torch.zeros(3, 1), y)
    # predicting the mean (standardised 0): |error| = 20, 0, 20 in dataset units
    metrics = task.metrics(Constant(torch.zeros(())), batch)
    assert torch.allclose(metrics["mae"], torch.tensor([20000.0, 0.0, 20000.0]))
    loss, n = task.loss(Constant(torch.zeros(())), batch)
    assert n == 3 and loss.item() == pytest.approx(1.0)  # variance of standardised targets
    assert task.units["mae"] == "meV"


def test_regression_state_roundtrip_and_errors():
    task = RegressionTask(0, mean=2.0, std=4.0, unit_scale=27.2, unit_name="eV")
    other = RegressionTask(0)
    other.load_state_dict(task.state_dict())
    assert other.mean.item() == 2.0 and other.std.item() == 4.0 and other.units["mae"] == "eV"
    assert other.unit_scale == 27.2 and other.unit_name == "eV"
    with pytest.raises(ValueError, match="target_index"):
        RegressionTask(1).load_state_dict(task.state_dict())
    with pytest.raises(ValueError, match="std must be > 0"):
        RegressionTask(std=0.0)
    with pytest.raises(ValueError, match="constant"):
        RegressionTask.from_dataset(TensorDataset(torch.zeros(4, 1), torch.ones(4)))
    batch = (torch.zeros(3, 1), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="model output has shape"):
        RegressionTask(0).loss(Constant(torch.zeros(2)), batch)


@pytest.mark.parametrize(
    "settings, message",
    [({"mean": float("nan")}, "mean must be finite"),
     ({"mean": [0.0, float("inf")]}, "mean must be finite"),
     ({"std": float("inf")}, "std must be > 0 and finite"),
     ({"unit_scale": -1000.0}, "unit_scale must be a finite number > 0, got -1000.0"),
     ({"unit_scale": 0.0}, "unit_scale must be a finite number > 0"),
     ({"unit_scale": float("nan")}, "unit_scale must be a finite number > 0"),
     ({"unit_scale": float("inf")}, "unit_scale must be a finite number > 0"),
     ({"unit_scale": "1000"}, "unit_scale must be a finite number > 0"),
     ({"unit_scale": True}, "unit_scale must be a finite number > 0")],
)  # fmt: skip
def test_regression_refuses_statistics_and_scales_that_give_nonsense(settings, message):
    """A NaN or inf statistic makes every MAE NaN; a negative unit_scale makes it negative,
    so that the trainer (mode "min") would keep the worst epoch as best.pt."""
    with pytest.raises(ValueError, match=f"RegressionTask: {message}"):
        RegressionTask(**settings)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_training_targets_are_named_as_such(bad):
    """A NaN target made the std NaN and the message said the target was constant."""
    y = torch.tensor([[1.0, 2.0], [3.0, 5.0], [4.0, 1.0], [2.0, 3.0]])
    y[2, 1] = bad
    with pytest.raises(ValueError, match="target 1 holds NaN or inf on 1 of the 4 training items"):
        RegressionTask.from_dataset(TensorDataset(torch.zeros(4, 1), y), target_index=1)
    assert RegressionTask.from_dataset(TensorDataset(torch.zeros(4, 1), y), 0).mean.item() == 2.5


def test_non_finite_targets_are_counted_per_item_and_the_first_is_named():
    """All columns (``target_index=None``): an item with two bad columns counts once, and the
    message names the first bad item of the split."""
    y = torch.tensor([[1.0, 2.0], [3.0, 5.0], [4.0, 1.0], [2.0, 3.0]])
    y[1] = float("nan")
    y[3, 0] = float("inf")
    with pytest.raises(
        ValueError, match=r"on 2 of the 4 training items \(the first at position 1 of the split\)"
    ):
        RegressionTask.from_dataset(TensorDataset(torch.zeros(4, 1), y))


def test_regression_on_graph_batches(toy_splits):
    train, _, _ = toy_splits
    task = RegressionTask.from_dataset(train)
    ys = torch.cat([train[i].y for i in range(len(train))]).double()
    assert task.mean.item() == pytest.approx(ys.mean().item(), rel=1e-6)
    assert task.std.item() == pytest.approx(ys.std(unbiased=False).item(), rel=1e-6)


def test_classification_loss_and_accuracy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    batch = (torch.zeros(3, 1), torch.tensor([0, 1, 1]))
    task = ClassificationTask()
    model = Fixed(logits)
    metrics = task.metrics(model, batch)
    assert metrics["accuracy"].tolist() == [1.0, 1.0, 0.0]
    loss, n = task.loss(model, batch)
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 1]))
    assert n == 3 and loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert metrics["loss"].mean().item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="labels"):
        task.loss(model, (torch.zeros(2, 1), torch.tensor([0, 1])))
    assert task.monitor == "accuracy" and task.mode == "max"


def test_multi_target_regression_averages_each_items_targets():
    """``target_index=None`` with ``y [n, T]``: statistics per column, and every per-item
    metric is the mean over the item's ``T`` targets; the loss counts items, not values."""
    y = torch.tensor([[1.0, 10.0], [3.0, 30.0], [5.0, 50.0]])
    task = RegressionTask.from_dataset(TensorDataset(torch.zeros(3, 1), y), unit_scale=2.0)
    torch.testing.assert_close(task.mean, torch.tensor([3.0, 30.0]))
    torch.testing.assert_close(task.std, torch.tensor([(8 / 3) ** 0.5, (800 / 3) ** 0.5]))
    batch = (torch.zeros(3, 1), y)
    metrics = task.metrics(Constant(torch.zeros(2)), batch)  # predicts the column means
    # |errors| (2, 20), (0, 0), (2, 20) in dataset units: mean 11, times unit_scale 2
    torch.testing.assert_close(metrics["mae"], torch.tensor([22.0, 0.0, 22.0]))
    # standardised squared errors 2² / (8/3) = 1.5 in both columns
    torch.testing.assert_close(metrics["loss"], torch.tensor([1.5, 0.0, 1.5]))
    loss, n = task.loss(Constant(torch.zeros(2)), batch)
    assert n == 3 and loss.item() == pytest.approx(1.0, rel=1e-6)


def test_regression_refuses_transposed_predictions_and_negative_columns():
    """A prediction ``[T, n]`` for targets ``[n, T]`` is not silently reshaped, and
    ``target_index`` must be a column index ``0 <= i < T``."""
    batch = (torch.zeros(3, 1), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="model output has shape"):
        RegressionTask().loss(Fixed(torch.zeros(2, 3)), batch)
    with pytest.raises(ValueError, match="target_index=-1"):
        RegressionTask(-1).loss(Constant(torch.zeros(())), batch)


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_precision_predictions_are_compared_with_the_full_precision_target(half):
    """Under autocast a model may predict in half precision: the loss and the MAE compare
    with the float32 target, not with the target rounded to half precision."""
    y = torch.tensor([[1.001], [2.003], [3.007]])
    task = RegressionTask(0, mean=0.0, std=1.0, unit_scale=1000.0)
    batch = (torch.zeros(3, 1), y)
    zero = Constant(torch.zeros((), dtype=half))
    loss, _ = task.loss(zero, batch)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(y.square().mean().item(), rel=1e-6)
    mae = task.metrics(zero, batch)["mae"]
    torch.testing.assert_close(mae, y[:, 0] * 1000.0)
