"""The Keras U-nets carry exactly the official checkpoints' variables."""
import os

import numpy as np
import pytest
import tensorflow as tf

from stembeam.model import checkpoint
from stembeam.model.config import get_config
from stembeam.model.unet import build_model
from tests.conftest import MODELS, needs_shared

pytestmark = pytest.mark.fast


@needs_shared
@pytest.mark.parametrize("stems", [2, 4, 5])
def test_variable_map_equals_official_index(stems):
    official = checkpoint.checkpoint_variables(os.path.join(MODELS, f"{stems}stems", "model"))
    ours = checkpoint.keras_variables(build_model(get_config(f"{stems}stems")))
    assert len(official) == {2: 148, 4: 296, 5: 370}[stems]
    assert ours == official  # name for name, shape for shape, none left over


@needs_shared
def test_official_2stems_weights_load_exactly():
    model = build_model(get_config("2stems"))
    prefix = os.path.join(MODELS, "2stems", "model")
    checkpoint.load_official_checkpoint(model, prefix)
    reader = tf.train.load_checkpoint(prefix)
    for weight in model.weights:
        np.testing.assert_array_equal(weight.numpy(), reader.get_tensor(weight.path))


@needs_shared
def test_wrong_checkpoint_is_refused():
    model = build_model(get_config("4stems"))
    with pytest.raises(ValueError, match="does not match"):
        checkpoint.load_official_checkpoint(model, os.path.join(MODELS, "2stems", "model"))


def test_name_based_checkpoint_round_trip(tmp_path):
    config = get_config("2stems")
    model = build_model(config)
    prefix = checkpoint.save_official_checkpoint(model, str(tmp_path / "model"), global_step=7)
    assert checkpoint.checkpoint_variables(prefix) == checkpoint.keras_variables(model)
    other = build_model(config)
    checkpoint.load_official_checkpoint(other, prefix)
    for a, b in zip(model.weights, other.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert tf.train.load_checkpoint(prefix).get_tensor("global_step") == 7
