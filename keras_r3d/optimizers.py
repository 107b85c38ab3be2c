"""The official Efficient-3DCNNs optimizer, as a Keras optimizer.

The official code trains with `torch.optim.SGD(lr, momentum=0.9,
dampening=0.9, weight_decay=1e-3)`. That differs from `keras.optimizers.SGD`
in three ways, which `OfficialSGD` reproduces:

- weight decay is L2 coupled into the gradient (`g + wd * w`, on every
  variable, BatchNorm and biases included), not decoupled;
- dampening 0.9: after the first step the momentum buffer receives only
  `(1 - dampening) * g`; the first step stores `g` itself;
- the buffer holds gradients, not learning-rate-scaled steps, so changing the
  learning rate (the step schedule) takes effect at once.

Per variable: `d = g + wd * w`; `buf = d` on the first step, else
`buf = momentum * buf + (1 - dampening) * d`; `w -= lr * buf`.
"""
import keras
from keras import ops

from keras_r3d.layers import PACKAGE

# The official step schedule multiplies the learning rate by this at each step.
STEP_FACTOR = 0.1


@keras.saving.register_keras_serializable(PACKAGE)
class OfficialSGD(keras.optimizers.Optimizer):
    """PyTorch-style SGD with dampening and coupled L2 weight decay.

    Args:
        learning_rate: a float or a `keras.optimizers.schedules` schedule.
        momentum: in [0, 1].
        dampening: in [0, 1); the official recipe uses 0.9.
        l2_weight_decay: >= 0, added as `l2_weight_decay * w` to every gradient.
        **kwargs: the base optimizer's (`clipnorm`, `global_clipnorm`,
            `loss_scale_factor`, `name`, ...). Keras' decoupled `weight_decay`
            is refused: use `l2_weight_decay`, or AdamW for decoupled decay.
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, dampening=0.9, l2_weight_decay=1e-3,
                 name="official_sgd", **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError("OfficialSGD couples L2 decay into the gradient: pass l2_weight_decay, "
                             "not weight_decay")
        kwargs.pop("weight_decay", None)
        if kwargs.get("gradient_accumulation_steps"):
            raise ValueError("OfficialSGD does not support gradient_accumulation_steps")
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        for arg, value, high in (("momentum", momentum, 1.0), ("dampening", dampening, 1.0)):
            if not 0.0 <= float(value) <= high:
                raise ValueError(f"{arg} must be in [0, {high}], got {value!r}")
        if float(dampening) >= 1.0:
            raise ValueError(f"dampening must be < 1, got {dampening!r}")
        if float(l2_weight_decay) < 0:
            raise ValueError(f"l2_weight_decay must be >= 0, got {l2_weight_decay!r}")
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.l2_weight_decay = float(l2_weight_decay)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentum_buffers = (self.add_optimizer_variables(variables, "momentum_buffer")
                                 if self.momentum else [])

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        learning_rate = ops.cast(learning_rate, dtype)
        step = ops.cast(gradient, dtype)
        if self.l2_weight_decay:
            step = step + ops.cast(self.l2_weight_decay, dtype) * variable
        if self.momentum:
            buffer = self.momentum_buffers[self._get_variable_index(variable)]
            running = (ops.cast(self.momentum, dtype) * buffer
                       + ops.cast(1.0 - self.dampening, dtype) * step)
            step = ops.where(ops.equal(self.iterations, 0), step, running)
            self.assign(buffer, step)
        self.assign_sub(variable, learning_rate * step)

    def get_config(self):
        config = super().get_config()
        config.pop("weight_decay", None)
        config.update(momentum=self.momentum, dampening=self.dampening,
                      l2_weight_decay=self.l2_weight_decay)
        return config


def step_schedule(learning_rate, steps_per_epoch, lr_steps):
    """The official schedule: in (1-based) epoch e the rate is
    `learning_rate * STEP_FACTOR ** #{s in lr_steps: s <= e}`."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch!r}")
    lr_steps = sorted(int(s) for s in lr_steps)
    if not lr_steps:
        return float(learning_rate)
    if lr_steps[0] < 2:
        raise ValueError(f"lr_steps must be epochs >= 2 (a step at epoch 1 is a lower --lr), got {lr_steps}")
    values = [float(learning_rate) * STEP_FACTOR ** i for i in range(len(lr_steps) + 1)]
    # The optimizer's step counter starts at 0; epoch s begins at step (s - 1) * steps_per_epoch.
    boundaries = [(s - 1) * steps_per_epoch - 1 for s in lr_steps]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
