"""export.compare is the verdict of every export and ONNX-writer equivalence
test, and none checked that it can say no (audit: catches a one-sided or
otherwise vacuous float32 tolerance)."""
import numpy as np

from keras_r3d import export


def test_compare_fails_artifacts_off_in_either_direction():
    reference = np.random.default_rng(0).standard_normal((3, 7)) * 5
    bound = export.FLOAT32_TOLERANCE * max(1.0, np.abs(reference).max())
    assert export.compare(reference + 0.5 * bound, reference, "none")["passed"]
    for off in (reference + 3 * bound, reference - 3 * bound):
        result = export.compare(off, reference, "none")
        assert not result["passed"] and result["max_abs_diff"] > 2 * bound, result
        assert result["top1_agreement"] == 1.0  # the same top-1 is not enough in float32
    swapped = np.roll(reference, 1, axis=1)  # another top-1 in every row
    for quantize in ("float16", "int8"):
        assert not export.compare(swapped, reference, quantize)["passed"]
