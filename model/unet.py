"""Spleeter's U-net as Keras 3 layers, named like the official TF1 checkpoint.

Input and output of every U-net: magnitude spectrogram segments ``[B, T, F, 2]``.
U-net ``i`` owns ``conv2d_{7i..7i+6}``, ``conv2d_transpose_{6i..6i+5}`` and
``batch_normalization_{12i..12i+11}`` (TF1 Keras auto-names, index 0 unsuffixed),
so the official checkpoints load by variable name.
"""
from __future__ import annotations

import keras
from keras import layers

from stembeam.model.config import ModelConfig


MASK_CHANNELS = 2


def tf1_name(base: str, index: int) -> str:
    """TF1 Keras auto-name: ``conv2d``, ``conv2d_1``, ..."""
    return base if index == 0 else f"{base}_{index}"


def _activation(kind: str, name: str) -> layers.Layer:
    if kind == "leaky_relu":
        return layers.LeakyReLU(negative_slope=0.2, name=name)
    if kind == "relu":
        return layers.ReLU(name=name)
    if kind == "elu":
        return layers.ELU(name=name)
    raise ValueError(f"unknown activation {kind!r}")


def apply_unet(inputs, config: ModelConfig, index: int, logits: bool):
    """One U-net (Spleeter's ``apply_unet``) on ``inputs [B, T, F, 2]``.

    Returns the sigmoid mask times the input (``logits=False``) or the mask
    logits ``[B, T, F, 2]`` (``logits=True``, for the 5-stems softmax).
    """
    filters = config.conv_n_filters
    conv_i, deconv_i, bn_i = 7 * index, 6 * index, 12 * index
    prefix = f"unet{index}"
    init = keras.initializers.HeUniform(seed=50)

    def conv(n):
        nonlocal conv_i
        layer = layers.Conv2D(n, (5, 5), strides=2, padding="same", kernel_initializer=init, name=tf1_name("conv2d", conv_i))
        conv_i += 1
        return layer

    def deconv(n):
        nonlocal deconv_i
        layer = layers.Conv2DTranspose(n, (5, 5), strides=2, padding="same", kernel_initializer=init, name=tf1_name("conv2d_transpose", deconv_i))
        deconv_i += 1
        return layer

    def batch_norm():
        nonlocal bn_i
        layer = layers.BatchNormalization(axis=-1, name=tf1_name("batch_normalization", bn_i))
        bn_i += 1
        return layer

    # Encoder: the skip connections take the convolutions' raw outputs, as Spleeter does.
    encoded = []
    x = inputs
    for level, n in enumerate(filters):
        c = conv(n)(x)
        encoded.append(c)
        x = _activation(config.conv_activation, f"{prefix}_enc_act{level}")(batch_norm()(c))
    # Decoder: the first up-block takes the sixth convolution before its batch norm.
    # Spleeter still creates that sixth batch norm (its output unused) and the checkpoint
    # holds its variables; Keras prunes unused layers, so tie it in with an exact +0*x.
    unused = layers.Rescaling(0.0, name=f"{prefix}_keep_bn{bn_i - 1}")(x)
    x = layers.Add(name=f"{prefix}_bottleneck")([encoded[-1], unused])
    skips = encoded[-2::-1]
    for level, n in enumerate(list(filters[-2::-1]) + [1]):
        x = deconv(n)(x)
        x = _activation(config.deconv_activation, f"{prefix}_dec_act{level}")(x)
        x = batch_norm()(x)
        if level < 3:
            x = layers.Dropout(0.5, name=f"{prefix}_dropout{level}")(x)
        if level < 5:
            x = layers.Concatenate(axis=-1, name=f"{prefix}_skip{level}")([skips[level], x])
    # Spleeter's mask convolution always has 2 filters, also in mono models (n_channels 1),
    # whose masks then broadcast over the one input channel: the official variable shapes.
    mask_conv = layers.Conv2D(
        MASK_CHANNELS,
        (4, 4),
        dilation_rate=(2, 2),
        padding="same",
        activation=None if logits else "sigmoid",
        kernel_initializer=init,
        name=tf1_name("conv2d", conv_i),
    )
    mask = mask_conv(x)
    if logits:
        return mask
    return layers.Multiply(name=f"{config.instruments[index]}_spectrogram")([mask, inputs])


def build_model(config: ModelConfig) -> keras.Model:
    """Keras model: mixture magnitudes ``[B, T, F, C]`` -> source magnitudes ``[B, T, F, 2, S]``
    (``C = config.n_channels``; a mono model's two mask channels both apply to its one input).

    Sources are stacked on the last axis in ``config.instruments`` order.
    """
    shape = (config.T, config.F, config.n_channels)
    inputs = keras.Input(shape=shape, name="mix_spectrogram")
    expand = lambda name, channels=MASK_CHANNELS: layers.Reshape((config.T, config.F, channels, 1), name=name)  # noqa: E731
    n = len(config.instruments)
    if config.softmax_masks:
        logits = [expand(f"logits{i}")(apply_unet(inputs, config, i, logits=True)) for i in range(n)]
        masks = layers.Softmax(axis=-1, name="stem_softmax")(layers.Concatenate(axis=-1, name="stack_logits")(logits))
        mix = expand("mix_expand", config.n_channels)(inputs)
        tiled = layers.Concatenate(axis=-1, name="mix_tile")([mix] * n)
        outputs = layers.Multiply(name="source_spectrograms")([masks, tiled])
    else:
        sources = [expand(f"source{i}")(apply_unet(inputs, config, i, logits=False)) for i in range(n)]
        outputs = layers.Concatenate(axis=-1, name="source_spectrograms")(sources)
    return keras.Model(inputs, outputs, name=config.name.replace(":", "_"))
