"""Score face crops with an ONNX file of ``python -m lmguide.export``, as ``lmguide.predict`` scores them.

:func:`score` needs only onnxruntime, numpy and OpenCV (copy it): the input size, mean/std and the
verdict threshold come from the file's metadata (:mod:`lmguide.inference.export_meta`). :func:`crop` cuts a
face
out of a frame from a detector box by the metadata's ``crop`` rule, as predict does. The command::

    python -m lmguide.export_example model.onnx face.png [more.png ...]   # face crops, RGB images
    python -m lmguide.export_example model.onnx --photo photo.jpg         # a photo's faces

prints P(fake) and the verdict of each. ``--photo`` finds and cuts the faces with lmguide's own face
pipeline and the file's ``faces`` settings (predict's crops), and adds the photo's verdict by
predict's rule (:mod:`lmguide.inference.verdict`: fake when any face is at or above the threshold). Nothing
read from the file chooses code: its metadata is JSON values, and the face settings are checked by
:class:`~lmguide.data.faces.FaceSettings`.
"""

import json

import cv2
import numpy as np
import onnxruntime as ort


def score(model_path: str, crop_rgb: np.ndarray) -> tuple[float, str]:
    """P(fake) and verdict of one face crop (H, W, 3) RGB uint8, cut as the file's metadata says."""
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}
    inp, size = meta["input"], meta["input"]["image_size"]
    x = cv2.resize(crop_rgb, (size, size), interpolation=cv2.INTER_AREA) * inp["scale"]
    x = ((x - inp["mean"]) / inp["std"]).astype(np.float32).transpose(2, 0, 1)[None]  # (1, 3, S, S)
    p = float(sess.run(["prob_fake"], {inp["name"]: x})[0][0])
    return p, "fake" if p >= meta["verdict"]["threshold"] else "real"


#: the metadata's resampling names, as OpenCV flags
RESAMPLE = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}


def crop(rgb: np.ndarray, box: tuple[float, float, float, float], rule: dict) -> np.ndarray:
    """The face crop (size, size, 3) of an RGB frame for a detector ``box`` (x0, y0, x1, y1 in pixels)
    by the metadata's ``crop`` rule: a square centred on the box, of side scale * max(w, h)."""
    x0, y0, x1, y1 = box
    size, side = rule["size"], rule["scale"] * max(x1 - x0, y1 - y0)
    k, cx, cy = size / side, (x0 + x1) / 2, (y0 + y1) / 2
    m = np.array([[k, 0, size / 2 - k * cx], [0, k, size / 2 - k * cy]], dtype=np.float64)
    flags = RESAMPLE[rule["resample_down"] if k < 1 else rule["resample_up"]]
    return cv2.warpAffine(rgb, m, (size, size), flags=flags, borderValue=tuple(rule["fill"]))


def metadata(model_path: str) -> dict:
    """The lmguide metadata of an ONNX file, read with onnxruntime alone."""
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    return {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}


def photo_crops(meta: dict, rgb: np.ndarray) -> list[np.ndarray]:
    """The crops predict scores in a still image: lmguide's face pipeline with the file's ``faces``
    settings (the image's kept faces, those under ``min_face_size`` left out)."""
    from dataclasses import fields

    from lmguide.data.faces import FacePipeline, FaceSettings

    fs = FaceSettings(**{f.name: meta["faces"][f.name] for f in fields(FaceSettings)})
    with FacePipeline(fs) as faces:
        return [f.crop for f in faces(rgb, fs.image_faces).faces if not f.too_small]


def main(argv: list[str] | None = None) -> None:
    import argparse
    from pathlib import Path

    from lmguide.data.media import MediaError, read_image
    from lmguide.runs.cli import fail

    p = argparse.ArgumentParser(prog="python -m lmguide.export_example", description=__doc__.split("\n")[0])
    p.add_argument("model", help="an ONNX file written by python -m lmguide.export")
    p.add_argument("images", nargs="+", help="face crops (RGB images of one face each), or photos")
    p.add_argument("--photo", action="store_true", help="the images are photos: score their faces")
    args = p.parse_args(argv)
    try:
        meta = metadata(args.model)
    except Exception as err:  # onnxruntime's own errors: not a file, not ONNX
        first = (str(err).strip().splitlines() or [""])[0][:200]
        fail(f"{args.model} cannot be read as an ONNX file ({type(err).__name__}: {first})")
    if {"input", "verdict", "crop", "faces"} - set(meta):
        fail(f"{args.model} lacks lmguide's metadata: export the checkpoint again (python -m lmguide.export)")
    if meta["input"]["shape"][1] != 3:
        fail(
            f"{args.model} takes {meta['input']['shape'][1]} channels (RGB and landmark region masks, "
            "metadata input.channels); this example feeds RGB crops only: use python -m lmguide.predict"
        )
    threshold = meta["verdict"]["threshold"]
    for name in args.images:
        try:
            rgb = read_image(Path(name))
        except MediaError as err:
            fail(f"{name}: {err}")
        try:
            crops = photo_crops(meta, rgb) if args.photo else [rgb]
        except (KeyError, ValueError) as err:  # settings of another lmguide version
            fail(f"{args.model}: its faces settings do not fit this lmguide ({err}); export it again")
        if not crops:
            print(f"{name}: no face scored (none found, or only faces under min_face_size)")
            continue
        probs = [score(args.model, c)[0] for c in crops]
        for i, prob in enumerate(probs if args.photo else []):
            print(f"{name} face {i}: P(fake) {prob:.8f}")
        from lmguide.inference.verdict import decide

        d = decide([(0, p) for p in probs], threshold)  # a photo: its most suspect face decides
        print(f"{name}: P(fake) {d.score:.8f} -> {d.label} ({d.rule}, threshold {threshold:.4f})")


if __name__ == "__main__":
    main()
