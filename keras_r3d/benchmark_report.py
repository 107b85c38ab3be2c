"""The report of a `keras_r3d.benchmark` run, made from its results JSON
alone: `<tag>.md` laid out like the paper's Table 8 (the paper's figures
beside ours, the CPU and GPU targets, where the time goes, every
measurement) and `<tag>.png` (clips/s against MFLOPs). `rerender`
(`--rerender`) writes both again beside a JSON, e.g. of a run stopped early.
Nothing here measures: `keras_r3d.benchmark` imports this module, not the
reverse.
"""
import json
import pathlib
import textwrap

from keras_r3d.files import savefig_atomic, write_atomic

# Also keras_r3d.benchmark's: its --official_modes choices and its `efficient` model group.
OFFICIAL_MODES = ("eager", "compile")
EFFICIENT_ARCHS = ("shufflenet", "shufflenetv2", "mobilenet", "mobilenetv2")
# 1-minute load average per core, beyond the benchmark's own threads, above which the Markdown warns.
BUSY_LOAD_PER_CORE = 0.25

RUNTIME_LABELS = {"keras": "Keras", "tflite": "TFLite", "onnxruntime": "ONNX Runtime",
                  "openvino": "OpenVINO", "tensorrt": "TensorRT", "official-eager": "official PyTorch eager",
                  "official-compile": "official PyTorch torch.compile"}
DEPLOYABLE = ("tflite", "onnxruntime", "openvino", "tensorrt")
# Runtimes whose rows carry `<runtime>_op_time`: {op type: [share of the kernel time, nodes per call]}.
OP_PROFILED = {"onnxruntime": "ONNX op type", "openvino": "OpenVINO node type"}
OFFICIAL = tuple(f"official-{mode}" for mode in OFFICIAL_MODES)
CPU_TARGET_RATIO = 3.0  # the CPU target: best deployable >= 3x official clips/s, batch 1, 2 cores


def series_label(row):
    label = RUNTIME_LABELS.get(row["runtime"], row["runtime"])
    if row["runtime"] == "keras":
        label += f" ({row['backend']}{', XLA' if row.get('jit_compile') else ''}"
        label += f"{', ' + row['layers'] + ' layers' if row.get('layers') else ''}"
        label += f"{', BN folded' if row.get('batch_norm') == 'folded' else ''})"
    elif row["runtime"] in DEPLOYABLE:
        # e.g. "TFLite (tflite+xnnpack)", "ONNX Runtime (tf2onnx ONNX)"
        details = [row["backend"]] if row.get("backend") not in (None, row["runtime"]) else []
        details += [f"{row['onnx_converter']} ONNX"] if row.get("onnx_converter") else \
            [f"auto: {row['converted_by']} ONNX"] if row.get("converted_by") else []
        label += f" ({', '.join(details)})" if details else ""
    elif row["runtime"] in OFFICIAL and row.get("channels_last_3d"):
        label += " (channels_last_3d)"
    return f"{label} {row['precision']}"


def cell(row):
    """(model, runtime, Keras backend or None, precision, batch size): what a
    row measured, as the settings ask for it (an exported row's `backend` is
    the engine that ran it, not a Keras backend)."""
    backend = row["backend"] if row["runtime"] == "keras" else None
    return row["model"], row["runtime"], backend, row["precision"], row["batch_size"]


def expected_cells(settings):
    """Every `cell` a run of `settings` gives at least one row for (ok, an
    error, not applicable or not measured)."""
    runtimes = [("keras", backend) for backend in settings["backends"]] if "keras" in settings["runtimes"] else []
    runtimes += [(runtime, None) for runtime in settings["runtimes"] if runtime != "keras"]
    if settings.get("official_repo"):
        runtimes += [(f"official-{mode}", None) for mode in settings.get("official_modes", OFFICIAL_MODES)]
    return [(model, runtime, backend, precision, batch) for model in settings["models"]
            for runtime, backend in runtimes for precision in settings["precisions"]
            for batch in settings["batch_sizes"]]


def missing_cells(settings, rows):
    seen = {cell(row) for row in rows}
    return [expected for expected in expected_cells(settings) if expected not in seen]


def repeats_per_round(settings):
    """Each round's share of the timed calls, rounded up."""
    return -(-settings["repeats"] // settings.get("rounds", 1))


def _timed_calls_text(settings):
    rounds, per_round = settings.get("rounds", 1), repeats_per_round(settings)
    if rounds == 1:
        return f"{per_round} timed calls per cell"
    return f"{rounds * per_round} timed calls per cell in {rounds} rounds that alternate a model's cells"


def _ok(rows):
    return [row for row in rows if row.get("status") == "ok"]


def _fmt(value, digits=1):
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _clips(value):
    """Clips/s with one decimal; two significant digits below 1 (C3D on a CPU core)."""
    return _fmt(value) if value >= 1 else f"{value:.2g}"


def _cps(row):
    if row.get("status") != "ok":
        return row.get("status", "—").split(":")[0]
    c = row["clips_per_s"]
    return f"{_clips(c['median'])} [{_clips(c['min'])}–{_clips(c['max'])}]"


def _rss(row):
    """Peak RSS, and what the model's measurement added to the process's RSS (newer runs)."""
    added = row.get("rss_added_mib")
    return _fmt(row.get("peak_rss_mib"), 0) + ("" if added is None else f" (+{added:,.0f})")


def render_markdown(results):
    """Table 8's layout with the paper's figures beside ours, then the
    latency/memory/compile details and the CPU target."""
    run, models, rows = results["run"], results["models"], results["results"]
    settings = run["settings"]
    frames, height, width, _ = settings["input_shape"]
    cores = run["cpu_cores"]
    lines = [f"# Table 8 measured: `{run['tag']}`", ""]
    lines += [
        f"- Command: `{run['command']}`",
        f"- Machine: {run['cpu_model']}, {cores} CPU cores; GPU: {', '.join(run['gpus']) or 'none'}"
        f"; measured on: {run.get('device', '?')}",
        f"- Started {run['started_utc']}, finished {run.get('finished_utc', '(unfinished)')}; "
        f"git {run.get('git_commit')}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in run["versions"].items()),
        f"- Input {frames}×{height}×{width}, {settings['num_classes']} classes, "
        f"{settings['warmup']} warmup call{'s' * (settings['warmup'] != 1)} "
        f"(and at least {settings.get('warmup_s', 0)} s) and "
        f"{_timed_calls_text(settings)}, "
        f"{settings['threads']} thread{'s' * (settings['threads'] != 1)}, "
        f"TF32 {'on' if settings['tf32'] else 'off'}, "
        f"TF jit_compile {','.join(settings['tf_jit_compile'])} (auto: XLA on GPU only).",
        f"- 1-minute load average: {run['load_1min_before']:.2f} before, "
        f"{_fmt(run.get('load_1min_after'), 2)} after, on {cores} cores.",
    ]
    busiest = max(run["load_1min_before"], run.get("load_1min_after") or 0.0,
                  *[row.get("load_1min", 0.0) for row in rows])
    own = min(settings["threads"], cores)  # the load the benchmark itself adds
    busy = busiest > own + BUSY_LOAD_PER_CORE * cores
    if busy:
        lines.append(f"- **The machine was shared and busy** (1-minute load up to {busiest:.2f} on "
                     f"{cores} cores, {own} of it this benchmark's own threads at most): other "
                     "processes took CPU time, so these clips/s are lower bounds for an idle machine.")
    if "finished_utc" not in run:
        missing = missing_cells(settings, rows)
        by_runtime = {}
        for model, runtime, backend, _, _ in missing:
            by_runtime.setdefault(f"{runtime} ({backend})" if backend else runtime, {})[model] = None
        unmeasured = "; ".join(f"{key}: {', '.join(names)}" for key, names in by_runtime.items())
        lines.append(f"- **Unfinished run**: it was stopped after {len(rows)} measurements; "
                     f"{len(missing)} more {'was' if len(missing) == 1 else 'were'} asked for "
                     f"({unmeasured or 'none'}).")
    if not run["gpus"]:
        lines.append("- GPU rows: **not measured**, this machine has no GPU.")
    if (frames, height, width, settings["num_classes"]) != (16, 112, 112, 600):
        lines.append("- **Not Table 8's setting** (16×112×112 clips, 600 classes): the paper's params, "
                     "MFLOPs and clips/s beside ours are for that setting, not this run's.")
    lines.append("")

    batches = sorted({row["batch_size"] for row in rows})
    series = list(dict.fromkeys(series_label(row) for row in rows))
    by_cell = {(row["model"], series_label(row), row["batch_size"]): row for row in rows}
    lines += ["## Clips/s: median of the timed calls [min–max], batch size b", ""]
    header = ["Model", "Params (M) paper / ours", "MFLOPs paper / ours", "Titan XP b8 (paper)",
              "Jetson TX2 b8 (paper)"]
    columns = [(s, b) for s in series for b in batches
               if any((m, s, b) in by_cell for m in models)]
    header += [f"{s} b{b}" for s, b in columns]
    lines += [_md_row(header), _md_row(["---"] + ["---:"] * (len(header) - 1))]
    for name, facts in models.items():
        paper = facts["paper"]
        cells = [name, f"{_fmt(paper['params_M'], 2)} / {facts['params_M']:.2f}",
                 f"{_fmt(paper['mflops'], 0)} / {_fmt(facts['mflops'], 0)}",
                 _fmt(paper["titan_xp_cps"], 0), _fmt(paper["jetson_tx2_cps"], 0)]
        cells += [_cps(by_cell[(name, s, b)]) if (name, s, b) in by_cell else "—" for s, b in columns]
        lines.append(_md_row(cells))
    lines.append("")

    lines += _target_section(models, rows, busy=busy)
    lines += _gpu_target_section(models, rows, run.get("gpu_copy_gb_per_s"))

    lines += _profile_section(results.get("layer_profiles"))
    for runtime in OP_PROFILED:
        lines += _op_time_section(rows, runtime)

    added = any(row.get("rss_added_mib") is not None for row in rows)  # recorded since 2026-11-28
    lines += ["## Every measurement", "",
              _md_row(["Model", "Runtime", "Precision", "Batch", "Clips/s median [min–max]",
                       "p50 ms", "p99 ms", "Peak RSS MiB (+model's)" if added else "Peak RSS MiB",
                       "GPU peak MiB", "Compile s", "Export s", "Load 1-min", "Status"]),
              _md_row(["---"] * 3 + ["---:"] * 9 + ["---"])]
    for row in rows:
        ok = row.get("status") == "ok"
        lines.append(_md_row([
            row["model"], series_label(row).rsplit(" ", 1)[0], row["precision"], row["batch_size"],
            _cps(row) if ok else "—",
            _fmt(row["latency_ms"]["p50"], 2) if ok else "—",
            _fmt(row["latency_ms"]["p99"], 2) if ok else "—",
            _rss(row), _fmt(row.get("gpu_peak_mib"), 0),
            _fmt(row.get("compile_s"), 2), _fmt(row.get("export_s"), 2), _fmt(row.get("load_1min"), 2),
            (row.get("status", "—") + (f" ({row['notes']})" if row.get("notes") else "")
             ).replace("|", "/")]))
    lines += ["", "Peak RSS is the process's peak resident memory during that measurement "
              "(reset before it where the kernel allows); it includes the framework's own footprint and "
              "what earlier models of the process left resident" + (
                  "; (+N) is the peak less the process's RSS before that model (or artifact) was built, "
                  "its own share. " if added else ". ") +
              "JAX cannot reset its GPU peak, so a JAX row's GPU peak is the process's so far.",
              ""]
    return "\n".join(lines)


def _target_section(models, rows, busy=False):
    """The CPU target at batch 1: best deployable / best official."""
    ok = [row for row in _ok(rows) if row["batch_size"] == 1]
    deployable = [row for row in ok if row["runtime"] in DEPLOYABLE]
    official = [row for row in ok if row["runtime"] in OFFICIAL]
    if not official:
        return []
    lines = [f"## CPU target: best deployable artifact ≥ {CPU_TARGET_RATIO:g}× the official PyTorch clips/s, "
             "batch 1",
             "", _md_row(["Model", "Best deployable", "clips/s", "Best Keras", "clips/s",
                          "Best official", "clips/s", "Deployable / official", "Target met"]),
             _md_row(["---", "---", "---:", "---", "---:", "---", "---:", "---:", "---"])]
    keras_rows = [row for row in ok if row["runtime"] == "keras"]
    for name in models:
        best = {}
        for key, candidates in (("deployable", deployable), ("keras", keras_rows),
                                ("official", official)):
            mine = [row for row in candidates if row["model"] == name]
            best[key] = max(mine, key=lambda r: r["clips_per_s"]["median"]) if mine else None
        if best["official"] is None:
            continue
        cells = [name]
        for key in ("deployable", "keras", "official"):
            row = best[key]
            cells += [series_label(row) if row else "not measured",
                      _clips(row["clips_per_s"]["median"]) if row else "—"]
        if best["deployable"]:
            ratio = best["deployable"]["clips_per_s"]["median"] / best["official"]["clips_per_s"]["median"]
            cells += [f"{ratio:.2f}×", "yes" if ratio >= CPU_TARGET_RATIO else "**no**"]
        else:
            cells += ["—", "not measured"]
        lines.append(_md_row(cells))
    if busy:
        lines += ["", "**Measured on a busy machine** (see the load above): PyTorch's OpenMP threads "
                  "can lose more to other processes than XNNPACK's, so these ratios may differ from "
                  "an idle machine's. Re-run this command on an idle machine before relying on them."]
    return lines + [""]


GPU_TARGETS = {"paper": {"efficient": 1.5, "dense": 1.0}, "large": 2.0, "bandwidth": 0.30}
LARGE_BATCH = 64
BYTES_PER_ELEMENT = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}


def _gpu_target_section(models, rows, copy_gb_per_s):
    """The GPU targets: Keras against the compiled official code at the
    paper's protocol (batch 8, float32) and at batch >= 64 (any precision),
    and the share of the memory-bandwidth bound reached."""
    from keras_r3d import registry

    ok = [row for row in _ok(rows) if row.get("gpu_peak_mib") is not None]
    if not any(row["runtime"] == "official-compile" for row in ok):
        return []

    def best(runtime, model, keep):
        mine = [row for row in ok if row["runtime"] == runtime and row["model"] == model
                and keep(row)]
        return max(mine, key=lambda r: r["clips_per_s"]["median"]) if mine else None

    def paper(row):
        return row["batch_size"] == 8 and row["precision"] == "float32"

    def large(row):
        return row["batch_size"] >= LARGE_BATCH

    def cell(row):
        return f"{_fmt(row['clips_per_s']['median'], 0)} ({series_label(row)} b{row['batch_size']})"

    def ratio(ours, theirs, target):
        if not (ours and theirs):
            return ["—", "not measured"]
        value = ours["clips_per_s"]["median"] / theirs["clips_per_s"]["median"]
        return [f"{value:.2f}×", f"{'yes' if value >= target else '**no**'} (≥ {target}×)"]

    lines = ["## GPU targets: Keras against the compiled official code", "",
             _md_row(["Model", "Keras b8 fp32", "official compiled b8 fp32", "ratio", "met",
                      f"Keras b≥{LARGE_BATCH}", f"official compiled b≥{LARGE_BATCH}", "ratio",
                      "met", "bandwidth bound, clips/s", "share of bound"]),
             _md_row(["---"] + ["---:", "---:", "---:", "---"] * 2 + ["---:", "---:"])]
    for name, facts in models.items():
        kind = "efficient" if registry.get_spec(name).arch in EFFICIENT_ARCHS else "dense"
        ours_paper, theirs_paper = best("keras", name, paper), best("official-compile", name, paper)
        ours_large, theirs_large = best("keras", name, large), best("official-compile", name, large)
        if not (ours_paper or ours_large):
            continue
        cells = [name, cell(ours_paper) if ours_paper else "—",
                 cell(theirs_paper) if theirs_paper else "—",
                 *ratio(ours_paper, theirs_paper, GPU_TARGETS["paper"][kind]),
                 cell(ours_large) if ours_large else "—",
                 cell(theirs_large) if theirs_large else "—",
                 *ratio(ours_large, theirs_large, GPU_TARGETS["large"])]
        fastest = ours_large or ours_paper
        if copy_gb_per_s and facts.get("conv_pool_io_elements"):
            clip_bytes = facts["conv_pool_io_elements"] * BYTES_PER_ELEMENT[fastest["precision"]]
            bound = copy_gb_per_s * 1e9 / clip_bytes
            share = fastest["clips_per_s"]["median"] / bound
            xla = fastest.get("xla_bytes_accessed_per_clip")
            cells += [f"{bound:,.0f} ({clip_bytes / 1e6:.1f} MB/clip, {fastest['precision']}"
                      + (f"; XLA's estimate {xla / 1e6:.1f} MB" if xla else "") + ")",
                      f"{share:.0%}" + ("" if share >= GPU_TARGETS["bandwidth"]
                                        else f" (**< {GPU_TARGETS['bandwidth']:.0%}**)")]
        else:
            cells += ["—", "—"]
        lines.append(_md_row(cells))
    bandwidth = f"{copy_gb_per_s:,.0f} GB/s" if copy_gb_per_s else "not measured"
    lines += ["", f"The bandwidth bound is the measured on-device copy bandwidth ({bandwidth}, bytes "
              "read + written) over the bytes a clip must move if every conv and pool reads its "
              "input and writes its output once (`conv_pool_io_elements` in the JSON), at the "
              "precision of the fastest Keras row shown.", ""]
    return lines


def profile_by_kind(rows):
    """{kind: (total ms, count)}, largest first."""
    totals = {}
    for row in rows:
        ms, count = totals.get(row["kind"], (0.0, 0))
        totals[row["kind"]] = (ms + row["ms"], count + 1)
    return dict(sorted(totals.items(), key=lambda item: -item[1][0]))


def _profile_section(profiles, top=6):
    """Where the time goes per model: totals by layer kind, slowest layers."""
    if not profiles:
        return []
    lines = ["## Where the time goes: per-layer profile (Keras on TF, 2D-op lowering as in the "
             "TFLite export, batch 1)", "",
             "Each layer timed alone, less an identity call on the same input; the sum "
             "over-counts small layers that a compiled graph fuses (BatchNorm, ReLU).", ""]
    if "error" in profiles:
        return lines + [profiles["error"], ""]
    for name, rows in profiles.items():
        total = sum(row["ms"] for row in rows) or 1.0
        kinds = ", ".join(f"{kind} {ms / total:.0%} ({count})"
                          for kind, (ms, count) in list(profile_by_kind(rows).items())[:top])
        slowest = ", ".join(f"`{row['layer']}` {row['kind']} {row['output_shape']} {row['ms']:.1f} ms"
                            for row in rows[:3])
        lines += [f"- **{name}** ({total:.0f} ms summed): {kinds}. Slowest: {slowest}."]
    return lines + [""]


def _op_time_section(rows, runtime, top=6):
    """Where the time goes in `runtime` (one of OP_PROFILED), per model (and
    ONNX converter): its largest op types."""
    shares = {(row["model"], row.get("onnx_converter")): row[f"{runtime}_op_time"]
              for row in rows if row.get(f"{runtime}_op_time")}
    if not shares:
        return []
    lines = [f"## Where the time goes in {runtime} (CPU, batch 1, its own profiler)", "",
             f"Share of the summed kernel time by {OP_PROFILED[runtime]} (nodes per call).", ""]
    for (name, converter), ops in shares.items():
        label = f"**{name}**" + (f", {converter} ONNX" if converter else "")
        lines.append(f"- {label}: " + ", ".join(f"{op} {share:.0%} ({nodes})"
                                                   for op, (share, nodes) in list(ops.items())[:top]) + ".")
    return lines + [""]


def _md_row(cells):
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def plot_speed(results, path):
    """clips/s against MFLOPs, one series per runtime/precision/batch, with
    the paper's Titan XP and Jetson TX2 figures for reference."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    models = results["models"]
    figure, axes = plt.subplots(figsize=(10, 6.5))
    groups = {}
    for row in _ok(results["results"]):
        groups.setdefault(f"{series_label(row)} b{row['batch_size']}", []).append(row)
    for label, rows in groups.items():
        xs = [models[row["model"]]["mflops"] for row in rows]
        ys = [row["clips_per_s"]["median"] for row in rows]
        axes.plot(xs, ys, "o", label=label, alpha=0.8)
    # The paper's points at its own MFLOPs (16x112x112): ours differ for other input shapes.
    for key, label, marker in (("titan_xp_cps", "paper: Titan XP b8, 16×112×112", "k^"),
                               ("jetson_tx2_cps", "paper: Jetson TX2 b8, 16×112×112", "kv")):
        points = [(facts["paper"]["mflops"], facts["paper"][key]) for facts in models.values()
                  if facts["paper"][key]]
        if points:
            axes.plot(*zip(*points), marker, fillstyle="none", label=label)
    for name, facts in models.items():
        if facts["paper"]["titan_xp_cps"]:
            axes.annotate(name, (facts["paper"]["mflops"], facts["paper"]["titan_xp_cps"]), fontsize=6,
                          rotation=60, xytext=(2, 4), textcoords="offset points", alpha=0.6)
    axes.set_xscale("log")
    axes.set_yscale("log")
    # Room above and right of the outermost points for their slanted names.
    axes.set_ylim(axes.get_ylim()[0], axes.get_ylim()[1] * 2)
    axes.set_xlim(axes.get_xlim()[0], axes.get_xlim()[1] * 1.12)
    axes.set_xlabel("MFLOPs per clip (paper convention)")
    axes.set_ylabel("clips/s (median)")
    run = results["run"]
    title = f"{run['tag']}: {run['cpu_model']}, {run['cpu_cores']} cores" + (f", {run['gpus'][0]}"
                                                                            if run["gpus"] else "")
    axes.set_title(textwrap.fill(title, 130), fontsize=9)  # a long CPU or GPU name on two lines
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    savefig_atomic(figure, path, dpi=120)
    plt.close(figure)


def rerender(json_path):
    """Rewrites `<tag>.md` and `<tag>.png` beside a results JSON; returns their paths.

    Raises:
        ValueError: `json_path` is not a results JSON (OSError: it cannot be read).
    """
    json_path = pathlib.Path(json_path)
    try:
        results = json.loads(json_path.read_text())
    except ValueError as error:
        raise ValueError(f"{json_path}: not JSON ({error})") from None
    if not isinstance(results, dict) or not {"run", "models", "results"} <= set(results):
        raise ValueError(f"{json_path}: not the results JSON of a keras_r3d.benchmark run")
    paths = json_path.with_suffix(".md"), json_path.with_suffix(".png")
    try:
        markdown = render_markdown(results)
        plot_speed(results, paths[1])
    except (KeyError, TypeError, AttributeError) as error:  # edited or cut by hand
        raise ValueError(f"{json_path}: an incomplete results JSON ({type(error).__name__}: {error})") from None
    write_atomic(paths[0], markdown)
    return paths
