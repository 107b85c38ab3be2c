"""Named configurations: the keys of Table 8 (`ShuffleNetV2-1.0x`) and a few
more of the same form. They drive the CLI, the tests and the benchmark."""
import dataclasses
import difflib
import functools
import inspect
import json
import pathlib

from keras_r3d.models import BUILDERS

TABLE8_PATH = pathlib.Path(__file__).with_name("table8.json")

# Configurations the official code builds that Table 8 does not list.
EXTRA_CONFIGS = {
    "SqueezeNet-1.0": ("squeezenet", {"version": 1.0}),
    **{f"ShuffleNetV1-1.0x-g{g}": ("shufflenet", {"groups": g, "width_mult": 1.0}) for g in (1, 2, 4, 8)},
    **{f"ResNet-{d}-{s}": ("resnet", {"depth": d, "shortcut": s})
       for d in (10, 34, 152, 200) for s in ("A", "B")},
    **{f"ResNeXt-{d}-B-c32": ("resnext", {"depth": d, "cardinality": 32, "shortcut": "B"}) for d in (50, 152)},
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A named configuration, with Table 8's measured facts where it has them."""

    name: str
    arch: str
    kwargs: dict
    table8: dict = None

    def build(self, **overrides):
        return build(self.arch, **{**self.kwargs, **overrides})


@functools.lru_cache(maxsize=None)
def _specs():
    table = json.loads(TABLE8_PATH.read_text())["models"]
    specs = {name: ModelSpec(name, row["arch"], dict(row["kwargs"]), row) for name, row in table.items()}
    for name, (arch, kwargs) in EXTRA_CONFIGS.items():
        specs[name] = ModelSpec(name, arch, kwargs)
    return specs


def list_models(arch=None):
    """The registry names, optionally of one architecture family (a `build` arch)."""
    if arch is not None and arch not in BUILDERS:
        raise ValueError(f"Unknown arch {arch!r}. Valid archs: {', '.join(BUILDERS)}")
    return [name for name, spec in _specs().items() if arch is None or spec.arch == arch]


def get_spec(name):
    specs = _specs()
    if name not in specs:
        lowered = {known.lower(): known for known in specs}
        close = difflib.get_close_matches(str(name).lower(), lowered, n=1, cutoff=0.8)
        hint = f"; did you mean {lowered[close[0]]!r}?" if close else "."
        raise ValueError(f"Unknown model {name!r}{hint} Valid names: {', '.join(specs)}")
    return specs[name]


def describe(architecture):
    """A model's `architecture` (its arch and builder kwargs) by its registry
    name where one matches (`ShuffleNetV2-1.0x`), else as `arch (kwargs)`."""
    arch = architecture["arch"]
    kwargs = {k: architecture[k] for k in ARCHITECTURE_FLAGS if k in architecture}
    names = [name for name, spec in _specs().items() if spec.arch == arch and spec.kwargs == kwargs]
    return names[0] if names else f"{arch} ({', '.join(f'{k}={v}' for k, v in kwargs.items())})"


def create_model(name, **kwargs):
    """Builds a registry configuration with the builder's other kwargs
    (`num_classes`, `input_shape`, ...); one that contradicts the name (a
    `width_mult` for `ShuffleNetV2-1.0x`) is an error naming the right call."""
    spec = get_spec(name)
    contradicted = {key: value for key, value in kwargs.items() if key in spec.kwargs and value != spec.kwargs[key]}
    if contradicted:
        wanted = {**spec.kwargs, **contradicted}
        names = [other for other, candidate in _specs().items()
                 if (candidate.arch, candidate.kwargs) == (spec.arch, wanted)]
        call = (f"create_model({names[0]!r})" if names else
                f"build({spec.arch!r}, {', '.join(f'{key}={value!r}' for key, value in wanted.items())})")
        raise ValueError(f"{name} is {', '.join(f'{key}={spec.kwargs[key]!r}' for key in contradicted)}, not "
                         f"{', '.join(f'{key}={value!r}' for key, value in contradicted.items())}: use {call}")
    return spec.build(**kwargs)


def builder_kwargs(arch):
    """The keyword arguments that `build(arch, ...)` accepts."""
    return list(inspect.signature(_builder(arch)).parameters)


def _builder(arch):
    if arch not in BUILDERS:
        named = f" ({arch} is a registry name: create_model({arch!r}))" if arch in _specs() else ""
        raise ValueError(f"Unknown arch {arch!r}{named}. Valid archs: {', '.join(BUILDERS)}")
    return BUILDERS[arch]


def with_dropout(arch, kwargs, dropout):
    """The builder `kwargs` plus `dropout`, unless None; an error for the
    families without dropout (ResNet, ResNeXt)."""
    if dropout is None:
        return kwargs
    if "dropout" not in builder_kwargs(arch):
        raise ValueError(f"dropout: {arch} has no dropout layer (as in the official code)")
    return {**kwargs, "dropout": dropout}


def build(arch, **kwargs):
    """Builds `arch` (an official architecture name) with the builder's kwargs."""
    valid = builder_kwargs(arch)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise TypeError(f"{arch} got unknown arguments {unknown}. Valid: {', '.join(valid)}")
    return _builder(arch)(**kwargs)


# The builder kwargs that the CLIs (train, convert) take as flags.
ARCHITECTURE_FLAGS = ("width_mult", "groups", "depth", "shortcut", "cardinality", "version")


def define_architecture_flags(flag_values, arch_help):
    """Defines `--arch` and the builder kwargs as absl flags on `flag_values`."""
    from absl import flags

    flags.DEFINE_enum("arch", None, list(BUILDERS), arch_help, flag_values=flag_values)
    for define, name, help_text in (
            (flags.DEFINE_float, "width_mult", "Width multiplier."),
            (flags.DEFINE_integer, "groups", "ShuffleNet V1 groups."),
            (flags.DEFINE_integer, "depth", "ResNet/ResNeXt depth."),
            (flags.DEFINE_integer, "cardinality", "ResNeXt cardinality."),
            (flags.DEFINE_float, "version", "SqueezeNet version.")):
        define(name, None, help_text, flag_values=flag_values)
    flags.DEFINE_enum("shortcut", None, ["A", "B"], "ResNet/ResNeXt shortcut type.",
                      flag_values=flag_values)


def architecture_flags(values):
    """`arch` and the builder kwargs that were set, from a flag mapping."""
    return {name: values[name] for name in ("arch",) + ARCHITECTURE_FLAGS
            if values.get(name) is not None}


def zoo_table(names=None):
    """A Markdown table of the configurations, measured by `profile` at
    16x112x112 and 600 classes, beside Table 8's figures."""
    from keras_r3d.profiling import profile

    rows = ["| name | arch | kwargs | trainable params | MFLOPs (Table 8 convention) | Table 8 params / MFLOPs |",
            "|---|---|---|---:|---:|---:|"]
    for name in names or list_models():
        spec = get_spec(name)
        counts = profile(spec.build())
        paper = (spec.table8 or {}).get("paper")
        published = f"{paper['params_M']}M / {paper['mflops']}" if paper else "—"
        kwargs = ", ".join(f"{k}={v}" for k, v in spec.kwargs.items())
        rows.append(f"| {name} | {spec.arch} | {kwargs} | {counts['trainable_params']:,} | "
                    f"{counts['flops_paper'] / 1e6:,.0f} | {published} |")
    return "\n".join(rows)


if __name__ == "__main__":
    import sys

    names = sys.argv[1:]
    if {"-h", "--help"} & set(names):
        print("usage: python -m keras_r3d.registry [NAME ...]: the params and MFLOPs of the named "
              "configurations (default: all) beside Table 8's")
        sys.exit(0)
    try:
        print(zoo_table(names or None))
    except ValueError as error:
        sys.exit(f"error: {error}")
