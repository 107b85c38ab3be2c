"""OfficialSGD against torch.optim.SGD, and the official step schedule."""
import numpy as np
import pytest
import keras

from keras_r3d.optimizers import OfficialSGD, step_schedule


def _torch_trajectory(w0, grads, lrs, **sgd):
    torch = pytest.importorskip("torch")
    w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    optimizer = torch.optim.SGD([w], lr=lrs[0], **sgd)
    for grad_fn, lr in zip(grads, lrs):
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad()
        w.grad = torch.tensor(grad_fn(w.detach().numpy()), dtype=torch.float64)
        optimizer.step()
    return w.detach().numpy()


def _keras_trajectory(w0, grads, lrs, **sgd):
    w = keras.Variable(np.asarray(w0, np.float64), dtype="float64")
    optimizer = OfficialSGD(learning_rate=lrs[0], **sgd)
    for grad_fn, lr in zip(grads, lrs):
        optimizer.learning_rate = lr
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(grad_fn(np.asarray(w.numpy()))), w)])
    return np.asarray(w.numpy())


def test_official_sgd_matches_torch_sgd_with_dampening_and_l2():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4))
    targets = [rng.normal(size=(3, 4)) for _ in range(6)]
    grads = [lambda w, t=t: 2 * (w - t) for t in targets]  # a changing quadratic loss
    lrs = [0.1, 0.1, 0.1, 0.01, 0.01, 0.001]  # the schedule steps mid-run
    expected = _torch_trajectory(w0, grads, lrs, momentum=0.9, dampening=0.9, weight_decay=1e-3)
    got = _keras_trajectory(w0, grads, lrs, momentum=0.9, dampening=0.9, l2_weight_decay=1e-3)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)  # Keras keeps the LR in float32
    plain = _keras_trajectory(w0, grads, lrs, momentum=0.9, dampening=0.0, l2_weight_decay=0.0)
    assert not np.allclose(plain, expected, atol=1e-3), "dampening and decay must change the result"


def test_official_sgd_config_round_trip_and_checks():
    optimizer = OfficialSGD(learning_rate=0.05, momentum=0.8, dampening=0.5, l2_weight_decay=1e-4,
                            clipnorm=1.0)
    clone = OfficialSGD.from_config(optimizer.get_config())
    assert (clone.momentum, clone.dampening, clone.l2_weight_decay, clone.clipnorm) == (0.8, 0.5, 1e-4, 1.0)
    with pytest.raises(ValueError, match="l2_weight_decay"):
        OfficialSGD(weight_decay=1e-3)
    with pytest.raises(ValueError, match="dampening"):
        OfficialSGD(dampening=1.0)


def test_step_schedule_is_the_official_epoch_schedule():
    schedule = step_schedule(0.1, steps_per_epoch=5, lr_steps=[2, 4])
    lrs = [float(schedule(step)) for step in range(0, 30, 5)]  # first step of epochs 1..6
    # official: lr * 0.1 ** #{s <= epoch}, epochs counted from 1
    np.testing.assert_allclose(lrs, [0.1, 0.01, 0.01, 0.001, 0.001, 0.001], rtol=1e-6)
    assert float(schedule(4)) == pytest.approx(0.1) and float(schedule(5)) == pytest.approx(0.01)
    unordered = step_schedule(0.1, steps_per_epoch=5, lr_steps=["4", "2"])  # --lr_steps=4,2
    np.testing.assert_allclose([float(unordered(step)) for step in range(0, 30, 5)], lrs, rtol=1e-6)
    with pytest.raises(ValueError):
        step_schedule(0.1, steps_per_epoch=5, lr_steps=[1])


def test_cosine_schedule_warms_up_for_epochs_from_a_hundredth_and_decays_to_zero_at_the_last_step():
    from keras_r3d import train

    config = train.default_config(train_data="x", val_data="y", lr=0.1, epochs=10, lr_schedule="cosine",
                                  warmup_epochs=2.0)

    def rates(optimizer, steps):
        for step in steps:
            optimizer.iterations.assign(step)
            yield float(optimizer.learning_rate)

    # 5 steps an epoch: warmup over steps 0..10, then a half cosine over the remaining 40 steps.
    np.testing.assert_allclose(list(rates(train.make_optimizer(config, steps_per_epoch=5), [0, 5, 10, 30, 50])),
                               [0.001, 0.0505, 0.1, 0.05, 0.0], rtol=1e-5, atol=1e-7)
    no_warmup = train.make_optimizer({**config, "warmup_epochs": 0.0}, steps_per_epoch=5)
    np.testing.assert_allclose(list(rates(no_warmup, [0, 25, 50])), [0.1, 0.05, 0.0], rtol=1e-5, atol=1e-7)
