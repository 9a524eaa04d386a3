#!/usr/bin/env python3
"""Reference pipeline for labelq's offline label detector, in Python.

It decodes images with Pillow, preprocesses them exactly as model/README.md specifies
(the Rust detector implements the same steps), runs the ONNX model that model/prepare.py
produces in onnxruntime and prints one JSON line per image with the top classes. Its
purpose is to be the yardstick the Rust detector is compared with:

    python3 model/reference.py photo.jpg ...                 top-5 per image
    python3 model/reference.py --bench 20 photo.jpg ...      median timings, JSON
    python3 model/reference.py --dump-input x.npy photo.jpg  save the input tensor(s)
    python3 model/reference.py --objects photo.jpg ...       the object detector's objects
    python3 model/reference.py --objects --bench 20 ...      its median timings, JSON
    python3 model/reference.py --text photo.jpg ...          the lines of text read
    python3 model/reference.py --text --bench 20 ...         the text models' median timings

Run it with any python3: it prepares the model if needed (model/prepare.py) and re-runs
itself inside the tool venv that holds numpy, Pillow and onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import prepare

IMAGE_SIZE = prepare.IMAGE_SIZE
DEFAULT_LABELS = Path(__file__).resolve().parent.parent / "shared" / "data" / "imagenet-labels.json"
# The lowest detector score decoded, as calibration::OBJECT_FLOOR in the Rust detector.
OBJECT_FLOOR = 0.2


def import_or_reexec() -> None:
    """Re-run this script inside the tool venv when numpy, Pillow or onnxruntime are missing."""
    try:
        import numpy  # noqa: F401
        import onnxruntime  # noqa: F401
        import PIL  # noqa: F401
    except ImportError:
        python = prepare.ensure_venv(prepare.resolve_cache_dir())
        if Path(sys.prefix).resolve() == python.parent.parent.resolve():
            raise
        os.execv(python, [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


def decode(path: Path):
    """Step a: the image as an H x W x 3 uint8 RGB array, EXIF orientation applied.

    Grayscale is replicated to three channels, alpha is dropped (not composited), palette
    images are looked up, and 16-bit samples keep their high byte (v >> 8), which is what
    Pillow does for 16-bit RGB; its own 16-bit grayscale conversion clips instead, so that
    case is done here by hand.
    """
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as file:
        image = ImageOps.exif_transpose(file)
    if image.mode in ("I;16", "I;16L", "I;16B", "I"):
        grey = (np.asarray(image, dtype=np.uint32) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")  # the same colours; Pillow warns on P -> RGB with tRNS
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def centre_crop(pixels):
    """Step b: the central square of side floor(0.875 * min(h, w)), at least one pixel."""
    height, width = pixels.shape[:2]
    side = max(1, int(IMAGE_SIZE / 256 * min(height, width)))
    top = (height - side + 1) // 2
    left = (width - side + 1) // 2
    return pixels[top : top + side, left : left + side]


def bicubic_taps(source_size: int, target_size: int = IMAGE_SIZE):
    """Tap indices and float32 weights for one axis of step c (Keys kernel, a = -0.5).

    Output pixel d samples the source at src = (d + 0.5) * source_size / target_size - 0.5
    (half-pixel centres) from the four taps floor(src) - 1 ..= floor(src) + 2, clamped to
    the edge. Weights are computed in float64 and rounded to float32; they are not
    renormalised (they already sum to one up to rounding).
    """
    import numpy as np

    a = -0.5
    destination = np.arange(target_size, dtype=np.float64)
    source = (destination + 0.5) * (source_size / target_size) - 0.5
    base = np.floor(source)
    offsets = np.arange(-1, 3, dtype=np.float64)
    distance = np.abs(source[:, None] - (base[:, None] + offsets))
    near = ((a + 2) * distance - (a + 3)) * distance * distance + 1
    far = ((a * distance - 5 * a) * distance + 8 * a) * distance - 4 * a
    weights = np.where(distance <= 1, near, np.where(distance < 2, far, 0.0)).astype(np.float32)
    indices = np.clip(base[:, None].astype(np.int64) + np.arange(-1, 3), 0, source_size - 1)
    return indices, weights


def resize(crop):
    """Step c: separable bicubic to 224 x 224, horizontal pass first, float32 throughout.

    Each output value is w0*p0 + w1*p1 + w2*p2 + w3*p3 summed left to right in float32 (no
    fused multiply-add), so an implementation that keeps that order matches bit for bit.
    Results are neither rounded nor clamped.
    """
    import numpy as np

    pixels = crop.astype(np.float32)
    indices, weights = bicubic_taps(pixels.shape[1])
    horizontal = weights[:, 0, None] * pixels[:, indices[:, 0]]
    for tap in range(1, 4):
        horizontal = horizontal + weights[:, tap, None] * pixels[:, indices[:, tap]]
    indices, weights = bicubic_taps(horizontal.shape[0])
    vertical = weights[:, 0, None, None] * horizontal[indices[:, 0]]
    for tap in range(1, 4):
        vertical = vertical + weights[:, tap, None, None] * horizontal[indices[:, tap]]
    return vertical


def preprocess(pixels):
    """Steps b to d: crop, resize, (v - 127) / 128, as a 1 x 3 x 224 x 224 float32 NCHW tensor."""
    import numpy as np

    scaled = (resize(centre_crop(pixels)) - np.float32(127)) / np.float32(128)
    return np.ascontiguousarray(scaled.transpose(2, 0, 1)[None], dtype=np.float32)


def bilinear_taps(source_size: int, target_size: int):
    """Both taps and the second's weight for one axis of the detector's resize.

    Output pixel d samples the source at src = (d + 0.5) * source_size / target_size - 0.5
    (half-pixel centres), clamped to [0, source_size - 1], between floor(src) and the next
    pixel (clamped), with weight src - floor(src) on the second; float32.
    """
    import numpy as np

    scale = np.float32(source_size / target_size)
    source = (np.arange(target_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    source = np.clip(source, np.float32(0), np.float32(source_size - 1))
    low = np.floor(source)
    first = low.astype(np.int64)
    return first, np.minimum(first + 1, source_size - 1), (source - low).astype(np.float32)


def bilinear(pixels, width: int, height: int):
    """Pixels (H x W x 3) resized to height x width, bilinear, the horizontal pass first; float32."""
    import numpy as np

    values = pixels.astype(np.float32)
    first, second, weight = bilinear_taps(values.shape[1], width)
    values = values[:, first] * (1 - weight)[None, :, None] + values[:, second] * weight[None, :, None]
    first, second, weight = bilinear_taps(values.shape[0], height)
    return values[first] * (1 - weight)[:, None, None] + values[second] * weight[:, None, None]


def preprocess_objects(pixels):
    """The object detector's input: the whole image resized to 416 x 416 (bilinear, horizontal
    pass first), channels B, G, R, each (v - mean) / std, as 1 x 3 x 416 x 416 float32 NCHW."""
    import numpy as np

    values = bilinear(pixels, prepare.DETECTOR_SIDE, prepare.DETECTOR_SIDE)
    mean = np.array([123.675, 116.28, 103.53], dtype=np.float32)
    std = np.array([58.395, 57.12, 57.375], dtype=np.float32)
    normalised = ((values - mean) / std)[:, :, ::-1]
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None], dtype=np.float32)


def decode_objects(scores, distances, threshold: float, overlap: float = 0.5) -> list[dict]:
    """Objects from the detector's two outputs, as shared/src/adapters/onnx/objects.rs does:
    per point the best class, four 11-bin distance distributions (softmax, expectation x stride)
    from the point's centre, boxes clipped to the image, then per-class non-maximum suppression."""
    import numpy as np

    side = prepare.DETECTOR_SIDE
    centres = []
    for stride in prepare.DETECTOR_STRIDES:
        cells = -(-side // stride)
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        xs, ys = (xs.ravel() + 0.5) * stride, (ys.ravel() + 0.5) * stride
        centres.append(np.stack([xs, ys, np.full(cells * cells, stride)], 1))
    centres = np.concatenate(centres).astype(np.float32)
    best = scores.max(1)
    classes = scores.argmax(1)
    found = []
    for point in np.nonzero(best >= threshold)[0]:
        bins = distances[point].reshape(4, prepare.DETECTOR_BINS)
        weights = np.exp(bins - bins.max(1, keepdims=True))
        expected = (weights * np.arange(prepare.DETECTOR_BINS)).sum(1) / weights.sum(1)
        left, top, right, bottom = expected * centres[point, 2]
        x, y = centres[point, 0], centres[point, 1]
        box = (max(x - left, 0), max(y - top, 0), min(x + right, side), min(y + bottom, side))
        if box[2] > box[0] and box[3] > box[1]:
            found.append((float(best[point]), int(classes[point]), box))
    found.sort(key=lambda f: -f[0])
    kept: list[tuple] = []
    for score, cls, box in found[:200]:
        if not any(k[1] == cls and iou(k[2], box) > overlap for k in kept):
            kept.append((score, cls, box))
    return [
        {
            "class": cls,
            "score": round(score, 6),
            "box": [round(v / side, 6) for v in (box[0], box[1], box[2] - box[0], box[3] - box[1])],
        }
        for score, cls, box in kept
    ]


# The text models' settings, as shared/src/adapters/onnx/text.rs has them.
TEXT_SIDE = 640
TEXT_FINE_SIDE = 1280
TEXT_SMALL_PRINT = 18.0
TEXT_PIXEL_THRESHOLD = 0.3
TEXT_BOX_THRESHOLD = 0.5
TEXT_UNCLIP_RATIO = 1.6
TEXT_MIN_REGION_SIDE = 3
TEXT_LINE_HEIGHT = 48
TEXT_MAX_LINE_WIDTH = 48 * 30
TEXT_MAX_LINES = 50
TEXT_LINE_FLOOR = 0.7


def to_unit_bgr(values):
    """H x W x 3 RGB float32 values -> 1 x 3 x H x W, channels B, G, R scaled to -1..1."""
    import numpy as np

    return np.ascontiguousarray((values / np.float32(127.5) - np.float32(1))[:, :, ::-1].transpose(2, 0, 1)[None])


def text_detector_size(width: int, height: int, side: int) -> tuple[int, int]:
    """The longer side at most `side`, both sides multiples of 32."""
    import numpy as np

    scale = min(np.float32(side) / np.float32(max(width, height, 1)), np.float32(1.0))
    # Rounded half away from zero, as Rust's f32::round.
    return tuple(
        max(int(np.floor(np.float32(v) * scale / np.float32(32) + np.float32(0.5))), 1) * 32 for v in (width, height)
    )


def preprocess_text(pixels, side: int = TEXT_SIDE):
    height, width = pixels.shape[:2]
    w, h = text_detector_size(width, height, side)
    return to_unit_bgr(bilinear(pixels, w, h))


def needs_closer_look(lines, width: int, height: int) -> bool:
    heights = sorted(b - t for _, t, _, b in lines)
    larger = text_detector_size(width, height, TEXT_FINE_SIDE) != text_detector_size(width, height, TEXT_SIDE)
    return larger and bool(heights) and heights[len(heights) // 2] <= TEXT_SMALL_PRINT


def find_text_lines(probability_map) -> list[tuple[float, float, float, float]]:
    """8-connected regions above the pixel threshold whose mean passes the box threshold,
    each box grown by area * ratio / perimeter, in map pixels (left, top, right, bottom)."""
    height, width = probability_map.shape
    above = (probability_map > TEXT_PIXEL_THRESHOLD).ravel().tolist()
    values = probability_map.ravel().tolist()
    seen = [False] * len(above)
    lines = []
    for start, on in enumerate(above):
        if not on or seen[start]:
            continue
        seen[start] = True
        stack, xs, ys, total = [start], [], [], 0.0
        while stack:
            at = stack.pop()
            x, y = at % width, at // width
            xs.append(x)
            ys.append(y)
            total += values[at]
            for ny in range(max(y - 1, 0), min(y + 1, height - 1) + 1):
                for nx in range(max(x - 1, 0), min(x + 1, width - 1) + 1):
                    near = ny * width + nx
                    if above[near] and not seen[near]:
                        seen[near] = True
                        stack.append(near)
        w, h = max(xs) + 1 - min(xs), max(ys) + 1 - min(ys)
        if min(w, h) < TEXT_MIN_REGION_SIDE or total / len(xs) < TEXT_BOX_THRESHOLD:
            continue
        grow = w * h * TEXT_UNCLIP_RATIO / (2 * (w + h))
        lines.append(
            (
                max(min(xs) - grow, 0),
                max(min(ys) - grow, 0),
                min(max(xs) + 1 + grow, width),
                min(max(ys) + 1 + grow, height),
            )
        )
    return lines


def text_regions(lines, map_size: tuple[int, int], image_size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """The largest lines as image pixel regions (left, top, width, height), in reading order."""
    import math

    lines = sorted(lines, key=lambda c: -(c[2] - c[0]) * (c[3] - c[1]))[:TEXT_MAX_LINES]
    sx, sy = image_size[0] / map_size[0], image_size[1] / map_size[1]
    regions = []
    for left, top, right, bottom in lines:
        x0 = min(math.floor(left * sx), image_size[0] - 1)
        y0 = min(math.floor(top * sy), image_size[1] - 1)
        x1 = min(max(math.ceil(right * sx), x0 + 1), image_size[0])
        y1 = min(max(math.ceil(bottom * sy), y0 + 1), image_size[1])
        regions.append((x0, y0, x1 - x0, y1 - y0))
    regions.sort(key=lambda r: (r[1], r[0]))
    for i in range(1, len(regions)):
        j = i
        while j > 0:
            a, b = regions[j - 1], regions[j]
            if abs(b[1] - a[1]) * 2 < min(a[3], b[3]) and b[0] < a[0]:
                regions[j - 1], regions[j] = b, a
                j -= 1
            else:
                break
    return regions


def read_text_line(steps, characters: list[str]) -> tuple[str, float] | None:
    """Greedy CTC: the best class per step, repeats merged, blanks (class 0) dropped."""
    best = steps.argmax(axis=1).tolist()
    chosen = steps.max(axis=1).tolist()
    text, kept, previous = [], [], 0
    for index, probability in zip(best, chosen, strict=True):
        if index not in (0, previous):
            text.append(characters[index])
            kept.append(probability)
        previous = index
    line = " ".join("".join(text).split())
    legible = any(c.isalnum() for c in line)
    return (line, sum(kept) / len(kept)) if legible and kept else None


def load_characters(model_dir: Path) -> list[str]:
    listed = (model_dir / prepare.TEXT_CHARACTERS_FILE).read_text(encoding="utf-8").split("\n")[:-1]
    return ["", *listed, " "]


def read_text(sessions, pixels, characters: list[str], timings: dict | None = None) -> list[dict]:
    """The lines of text in an image, as the Rust detector reads them."""
    detector, recogniser = sessions
    height, width = pixels.shape[:2]
    spent = {"preprocess": 0.0, "detect": 0.0}

    def detect(side: int):
        started = time.perf_counter()
        tensor = preprocess_text(pixels, side)
        prepared = time.perf_counter()
        (probability_map,) = detector.run(None, {"x": tensor})
        spent["preprocess"] += prepared - started
        spent["detect"] += time.perf_counter() - prepared
        return tensor, find_text_lines(probability_map[0, 0])

    tensor, found = detect(TEXT_SIDE)
    if needs_closer_look(found, width, height):
        tensor, found = detect(TEXT_FINE_SIDE)
    regions = text_regions(found, (tensor.shape[3], tensor.shape[2]), (width, height))
    lines, reading = [], 0.0
    for left, top, w, h in regions:
        import math

        line_width = min(max(math.ceil(TEXT_LINE_HEIGHT * w / h), 8), TEXT_MAX_LINE_WIDTH)
        line = to_unit_bgr(bilinear(pixels[top : top + h, left : left + w], line_width, TEXT_LINE_HEIGHT))
        before = time.perf_counter()
        (steps,) = recogniser.run(None, {"x": line})
        reading += time.perf_counter() - before
        read = read_text_line(steps[0], characters)
        if read and read[1] >= TEXT_LINE_FLOOR:
            box = [left / width, top / height, w / width, h / height]
            lines.append({"text": read[0], "confidence": round(read[1], 6), "box": [round(v, 6) for v in box]})
    if timings is not None:
        timings.setdefault("preprocess", []).append(spent["preprocess"])
        timings.setdefault("detect", []).append(spent["detect"])
        timings.setdefault("recognise", []).append(reading)
        timings.setdefault("lines", []).append(len(regions))
    return lines


def iou(a, b) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def load_session(model_path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def infer(session, tensor):
    (probabilities,) = session.run([prepare.OUTPUT_NAME], {prepare.INPUT_NAME: tensor})
    return probabilities


def infer_objects(session, tensor):
    scores, distances = session.run(["scores", "distances"], {prepare.DETECTOR_INPUT: tensor})
    return decode_objects(scores[0], distances[0], OBJECT_FLOOR)


def top_classes(probabilities, classes: list[str], names: dict[str, str], count: int) -> list[dict]:
    import numpy as np

    order = np.argsort(-probabilities, kind="stable")[:count]
    return [
        {
            "index": int(index),
            "wnid": classes[index],
            "name": names.get(classes[index], ""),
            "probability": round(float(probabilities[index]), 6),
        }
        for index in order
    ]


def milliseconds(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def benchmark(session_factory, images: list[Path], rounds: int, prep=None, run=None) -> dict:
    """Median wall-clock times: decode, preprocess and inference per image, model load."""
    preprocess_step, infer_step = prep or preprocess, run or infer
    load, decoding, preprocessing, inference = [], [], [], []
    for _ in range(max(1, min(rounds, 5))):
        start = time.perf_counter()
        session = session_factory()
        load.append(time.perf_counter() - start)
    for path in images:
        infer_step(session, preprocess_step(decode(path)))
        for _ in range(rounds):
            start = time.perf_counter()
            pixels = decode(path)
            decoded = time.perf_counter()
            tensor = preprocess_step(pixels)
            prepared = time.perf_counter()
            infer_step(session, tensor)
            done = time.perf_counter()
            decoding.append(decoded - start)
            preprocessing.append(prepared - decoded)
            inference.append(done - prepared)
    return {
        "images": len(images),
        "rounds": rounds,
        "model_load_ms": milliseconds(load),
        "decode_ms": milliseconds(decoding),
        "preprocess_ms": milliseconds(preprocessing),
        "inference_ms": milliseconds(inference),
        "preprocess_plus_inference_ms": milliseconds([p + i for p, i in zip(preprocessing, inference, strict=True)]),
    }


def load_labels(path: Path) -> tuple[list[str], dict[str, str]]:
    data = json.loads(path.read_text())
    return data["classes"], {node["id"]: node["name"] for node in data["nodes"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--model-dir", help="as for model/prepare.py")
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS, help="imagenet-labels.json")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    parser.add_argument("--top", type=int, default=5, help="classes to print per image (default 5)")
    parser.add_argument("--bench", type=int, metavar="N", help="time N rounds per image instead of printing labels")
    parser.add_argument("--objects", action="store_true", help="run the object detector instead of the classifier")
    parser.add_argument("--text", action="store_true", help="run the text models instead of the classifier")
    parser.add_argument(
        "--dump-input", type=Path, metavar="PATH", help="save the preprocessed N x 3 x 224 x 224 float32 tensor as .npy"
    )
    args = parser.parse_args()

    try:
        model_dir = prepare.resolve_model_dir(args.model_dir)
        model_path = model_dir / prepare.ONNX_FILE
        if not model_path.is_file() or not (model_dir / prepare.DETECTOR_FILE).is_file():
            prepare.prepare(model_dir, prepare.resolve_cache_dir(), prepare.host_platform())
        import_or_reexec()
    except prepare.PrepareError as error:
        print(f"reference: error: {error}", file=sys.stderr)
        return 1

    import numpy as np

    def session_factory():
        return load_session(model_path, args.threads)

    if args.text:
        characters = load_characters(model_dir)
        sessions = (
            load_session(model_dir / prepare.TEXT_DETECTOR_FILE, args.threads),
            load_session(model_dir / prepare.TEXT_RECOGNISER_FILE, args.threads),
        )
        if args.bench:
            timings: dict = {}
            for path in args.images:
                pixels = decode(path)
                read_text(sessions, pixels, characters)
                for _ in range(args.bench):
                    read_text(sessions, pixels, characters, timings)
            summary = {k: milliseconds(v) for k, v in timings.items() if k != "lines"}
            print(json.dumps({"threads": args.threads, "model": "text", "images": len(args.images), **summary}))
            return 0
        for path in args.images:
            print(json.dumps({"image": str(path), "lines": read_text(sessions, decode(path), characters)}))
        return 0

    if args.objects:
        detector_path = model_dir / prepare.DETECTOR_FILE

        def detector_factory():
            return load_session(detector_path, args.threads)

        if args.bench:
            timings = benchmark(detector_factory, args.images, args.bench, preprocess_objects, infer_objects)
            print(json.dumps({"threads": args.threads, "model": "objects", **timings}))
            return 0
        session = detector_factory()
        for path in args.images:
            objects = infer_objects(session, preprocess_objects(decode(path)))
            print(json.dumps({"image": str(path), "objects": objects}))
        return 0

    if args.bench:
        print(json.dumps({"threads": args.threads, **benchmark(session_factory, args.images, args.bench)}))
        return 0

    classes, names = load_labels(args.labels)
    session = session_factory()
    tensors = []
    for path in args.images:
        pixels = decode(path)
        tensor = preprocess(pixels)
        tensors.append(tensor)
        top = top_classes(infer(session, tensor)[0], classes, names, args.top)
        print(json.dumps({"image": str(path), "height": pixels.shape[0], "width": pixels.shape[1], "top": top}))
    if args.dump_input:
        np.save(args.dump_input, np.concatenate(tensors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
