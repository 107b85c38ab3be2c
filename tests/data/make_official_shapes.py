"""Writes official_state_dict_shapes.json.gz: the state-dict key -> shape map
of the official PyTorch model of every registry configuration, and which
ShuffleNet V1 (groups, width) pairs the official code can build and run.

    python tests/data/make_official_shapes.py --official_repo PATH

PATH is a checkout of okankop/Efficient-3DCNNs (not part of this project).
Models are built on the meta device, so no weights are allocated.
"""
import argparse
import gzip
import json
import pathlib
import sys

import torch

import keras_r3d

OUTPUT = pathlib.Path(__file__).with_name("official_state_dict_shapes.json.gz")
SHUFFLENET_GROUPS = (1, 2, 3, 4, 8)
SHUFFLENET_WIDTHS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


def official_model(arch, kwargs, num_classes, size=112, frames=16):
    from models import c3d, mobilenet, mobilenetv2, resnet, resnext, shufflenet, shufflenetv2, squeezenet

    common = {"num_classes": num_classes}
    if arch == "shufflenet":
        return shufflenet.get_model(groups=kwargs["groups"], width_mult=kwargs["width_mult"], **common)
    if arch in ("shufflenetv2", "mobilenet", "mobilenetv2"):
        module = {"shufflenetv2": shufflenetv2, "mobilenet": mobilenet, "mobilenetv2": mobilenetv2}[arch]
        return module.get_model(sample_size=size, width_mult=kwargs["width_mult"], **common)
    if arch == "squeezenet":
        return squeezenet.get_model(version=kwargs["version"], sample_size=size, sample_duration=frames, **common)
    if arch == "c3d":
        return c3d.get_model(sample_size=size, sample_duration=frames, **common)
    module = resnet if arch == "resnet" else resnext
    extra = {"cardinality": kwargs["cardinality"]} if arch == "resnext" else {}
    builder = getattr(module, f"{arch}{kwargs['depth']}")
    return builder(shortcut_type=kwargs["shortcut"], sample_size=size, sample_duration=frames, **extra, **common)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--official_repo", required=True)
    parser.add_argument("--num_classes", type=int, default=600)
    args = parser.parse_args()
    sys.path.insert(0, args.official_repo)
    shapes = {}
    for name in keras_r3d.list_models():
        spec = keras_r3d.registry.get_spec(name)
        with torch.device("meta"):
            model = official_model(spec.arch, spec.kwargs, args.num_classes)
        shapes[name] = {k: list(v.shape) for k, v in model.state_dict().items()}
        print(name, len(shapes[name]), "tensors", flush=True)
    pairs = {}
    for groups in SHUFFLENET_GROUPS:
        for width in SHUFFLENET_WIDTHS:
            try:
                with torch.device("meta"):
                    official_model("shufflenet", {"groups": groups, "width_mult": width}, 10)(
                        torch.zeros(1, 3, 16, 112, 112))
                pairs[f"{groups}/{width}"] = True
            except (RuntimeError, ValueError):
                pairs[f"{groups}/{width}"] = False
    payload = {"num_classes": args.num_classes, "input": [16, 112, 112], "models": shapes,
               "shufflenet_pairs": pairs}
    with gzip.open(OUTPUT, "wt") as file:
        json.dump(payload, file, sort_keys=True)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
