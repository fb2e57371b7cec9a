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
    """One U-net (Spleeter's ``apply_unet``), its layers named like the official checkpoint's.

    Args:
        inputs: a Keras tensor ``[B, T, F, channels]``, mixture magnitudes.
        config: ModelConfig (filters, activations).
        index: the U-net's (the instrument's) index, which fixes its layer names.
        logits: return the mask logits (for the 5-stems softmax) instead of the masked input.
    Returns:
        ``[B, T, F, 2]``: the sigmoid mask times the input, or the mask logits.
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
    """The Keras model of ``config``: mixture magnitudes -> source magnitudes.

    Args:
        config: ModelConfig.
    Returns:
        keras.Model ``[B, T, F, channels] -> [B, T, F, 2, S]`` (channels = ``config.n_channels``;
        a mono model's two mask channels both apply to its one input), sources stacked on the
        last axis in ``config.instruments`` order.
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


def reduced_precision_unets(model: keras.Model, config: ModelConfig, dtype: str = "bfloat16"):
    """The U-nets of ``model`` as one TF function whose convolutions and batch norms run in ``dtype``
    (bfloat16 on a CPU with AMX: oneDNN's AMX kernels), for inference only; ``float32`` gives the
    Keras model's numbers within rounding (the test of this transcription, tests/test_precision.py).

    Faster than the Keras model under TensorFlow's oneDNN auto-mixed-precision rewrite, which
    converted every weight at every call, ran the batch norms as bfloat16 multiply-adds in Eigen
    (slow on bfloat16) and the dilated mask convolution through space-to-batch: here the weights
    are converted once, each batch norm (and its activation) is one fused oneDNN op
    (``FusedBatchNormV3``, float32 inside; the transposed convolutions' biases too), the mask
    convolution runs as a dilated convolution, the masks and the product with the mixture in
    float32. Dropout is inference's identity; the
    ``+0*x`` that ties the sixth encoder batch norm into the Keras model is left out.

    Args:
        model: the Keras model built by ``build_model``, or an official checkpoint's weights
            (checkpoint.CheckpointWeights: no Keras model needs building).
        config: its ModelConfig.
        dtype: the convolutions' and batch norms' type (``bfloat16`` or ``float32``).
    Returns:
        ``unets(mix [B, T, F, channels] float32, training=False) -> [B, T, F, 2, S] float32``.
    Raises:
        ValueError: checkpoint weights that are not the configuration's model's.
    """
    import tensorflow as tf

    from stembeam.model.checkpoint import CheckpointWeights

    compute = tf.as_dtype(dtype)
    count = len(config.instruments)
    layer = _layer_reader(model)
    unets = [_reduced_unet_weights(layer, config, i, compute) for i in range(count)]
    mask_kernel, mask_bias = _merged_mask_convolution(layer, config)
    if isinstance(model, CheckpointWeights):
        model.check_all_read()
        filters = [[int(kernel.shape[-1]) for kernel, _ in params["conv"]] for params in unets]
        if any(found != list(config.conv_n_filters) for found in filters):
            raise ValueError(f"checkpoint {model.prefix} does not match the model: convolutions of {filters[0]} filters, the configuration's {list(config.conv_n_filters)}")
    activations = {"leaky_relu": lambda x: tf.nn.leaky_relu(x, 0.2), "relu": tf.nn.relu, "elu": tf.nn.elu}
    acts = (activations[config.conv_activation], activations[config.deconv_activation])

    @tf.function(input_signature=[tf.TensorSpec([None, config.T, config.F, config.n_channels], tf.float32)], autograph=False)
    def separate(mix):
        x = tf.cast(mix, compute)
        decoded = tf.cast(tf.concat([_reduced_unet(x, params, acts) for params in unets], axis=-1), tf.float32)  # [B, T, F, S]
        # Few channels: a convolution that AMX tiles would waste, in float32.
        logits = tf.nn.bias_add(tf.nn.conv2d(decoded, mask_kernel, 1, "SAME", dilations=2), mask_bias)
        logits = tf.reshape(logits, tf.concat([tf.shape(logits)[:3], [MASK_CHANNELS, count]], 0))  # [B, T, F, 2, S]
        masks = tf.nn.softmax(logits, axis=-1) if config.softmax_masks else tf.sigmoid(logits)
        return masks * mix[..., tf.newaxis]

    def call(mix, training=False):
        return separate(mix)

    return call


def _layer_reader(model):
    """``layer(name) -> (weights as Keras' get_weights() orders them, batch norm epsilon or None)``
    of a Keras model or of checkpoint.CheckpointWeights."""
    from stembeam.model.checkpoint import BATCH_NORM_EPSILON, CheckpointWeights

    if isinstance(model, CheckpointWeights):
        return lambda name: (model.layer_weights(name), BATCH_NORM_EPSILON)

    def keras_layer(name):
        found = model.get_layer(name)
        return found.get_weights(), getattr(found, "epsilon", None)

    return keras_layer


def _reduced_unet_weights(layer, config: ModelConfig, i: int, compute) -> dict:
    """U-net ``i``'s weights for reduced_precision_unets (``layer`` from _layer_reader):
    convolution kernels and biases in ``compute``, batch norms as FusedBatchNormV3's float32
    (scale, offset, mean, variance, eps)."""
    import tensorflow as tf

    levels = len(config.conv_n_filters)

    def weights(base, index):
        return [tf.constant(w, compute) for w in layer(tf1_name(base, index))[0]]

    def norm(index):
        values, epsilon = layer(tf1_name("batch_normalization", index))
        gamma, beta, mean, variance = (tf.constant(w, tf.float32) for w in values)
        return gamma, beta, mean, variance, float(epsilon)

    def bias_as_norm(bias):
        ones, zeros = tf.ones(bias.shape, tf.float32), tf.zeros(bias.shape, tf.float32)
        return ones, tf.constant(bias, tf.float32), zeros, ones, 0.0

    layer(tf1_name("batch_normalization", 12 * i + levels - 1))  # unused, but a weight of the checkpoint's all the same
    return {
        "conv": [weights("conv2d", 7 * i + k) for k in range(levels)],
        "deconv": [weights("conv2d_transpose", 6 * i + k) for k in range(levels)],
        # each transposed convolution's bias as a batch norm (x*1 + bias): oneDNN's bfloat16
        # batch norm, fused with the ReLU that follows, beats Eigen's bias add (8-11 % of the U-nets)
        "dec_bias": [bias_as_norm(layer(tf1_name("conv2d_transpose", 6 * i + k))[0][1]) for k in range(levels)],
        # the encoder's last batch norm only feeds the +0*x tie: not needed
        "enc_norm": [norm(12 * i + k) for k in range(levels - 1)],
        "dec_norm": [norm(12 * i + levels + k) for k in range(levels)],
    }


def _merged_mask_convolution(layer, config: ModelConfig) -> tuple:
    """The S mask convolutions (one input channel each, MASK_CHANNELS outputs) as one float32
    convolution of the S decoder outputs whose output channel c*S + s reads only input s: its
    output is already [B, T, F, MASK_CHANNELS, S], without stacking the S masks.

    Returns:
        ``(kernel [4, 4, S, MASK_CHANNELS * S], bias [MASK_CHANNELS * S])`` float32 tensors.
    """
    import numpy as np
    import tensorflow as tf

    count, levels = len(config.instruments), len(config.conv_n_filters)
    mask_kernel = np.zeros((4, 4, count, MASK_CHANNELS * count), np.float32)
    mask_bias = np.zeros((MASK_CHANNELS * count,), np.float32)
    for i in range(count):
        kernel, bias = layer(tf1_name("conv2d", 7 * i + levels))[0]
        for c in range(MASK_CHANNELS):
            mask_kernel[:, :, i, c * count + i] = kernel[:, :, 0, c]
            mask_bias[c * count + i] = bias[c]
    return tf.constant(mask_kernel), tf.constant(mask_bias)


def _fused_batch_norm(x, params):
    import tensorflow as tf

    gamma, beta, mean, variance, epsilon = params
    return tf.raw_ops.FusedBatchNormV3(x=x, scale=gamma, offset=beta, mean=mean, variance=variance, epsilon=epsilon, is_training=False)[0]


def _reduced_unet(x, params: dict, acts: tuple):
    """One U-net of reduced_precision_unets on ``x [B, T, F, channels]``: ``[B, T, F, 1]``."""
    import tensorflow as tf

    encoder_act, decoder_act = acts
    levels = len(params["conv"])
    skips = []
    for level, (kernel, bias) in enumerate(params["conv"]):
        conv = tf.nn.bias_add(tf.nn.conv2d(x, kernel, 2, "SAME"), bias)
        skips.append(conv)
        if level < levels - 1:
            x = encoder_act(_fused_batch_norm(conv, params["enc_norm"][level]))
    x = skips[-1]
    for level, (kernel, _) in enumerate(params["deconv"]):
        shape = tf.shape(x)
        x = tf.nn.conv2d_transpose(x, kernel, tf.stack([shape[0], 2 * shape[1], 2 * shape[2], kernel.shape[2]]), 2, "SAME")
        x = _fused_batch_norm(decoder_act(_fused_batch_norm(x, params["dec_bias"][level])), params["dec_norm"][level])
        if level < levels - 1:
            x = tf.concat([skips[levels - 2 - level], x], axis=-1)
    return x
