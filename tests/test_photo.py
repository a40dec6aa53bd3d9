"""cddfm3d.photo: real photographs in (issue 13 §1), with scikit-image's astronaut.png (one face: Eileen Collins, a
public-domain NASA portrait) and chelsea.png (a cat: no human face).

References independent of the code under test: geometric facts of faces (eyes above the nose above the mouth,
the eyes' spacing against the box), the same photograph given another way (grayscale, RGBA, 16-bit, EXIF-rotated
files written with Pillow, scaled and placed copies) whose landmarks must map back onto the original's, the EXIF
definition of the orientation tags, numpy's norm for distances, the morphable model's own landmarks for the
framing, and the fit's starting error for the fit.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cddfm3d.face3d import align_image, align_landmarks, extract_5p
from cddfm3d.images import to_uint8
from cddfm3d.world import mini_model, render, sample_coeffs

@pytest.fixture(scope="module")
def astronaut_path(photo_data):
    return photo_data / "astronaut.png"


@pytest.fixture(scope="module")
def astronaut(photo, astronaut_path):
    """(RGB uint8 [512, 512, 3], its one detected face)."""
    image = photo.read_photo(astronaut_path)
    faces = photo.detect_faces(image)
    assert len(faces) == 1
    return image, faces[0]


def test_model_files_are_found_without_importing_their_package(photo, monkeypatch):
    from cddfm3d.photo import models

    for name, file in photo.MODEL_FILES.items():
        p = photo.model_path(name)
        assert p.name == file and p.is_file() and p.stat().st_size > 500_000
    assert models.load_model("landmarks68") is models.load_model("landmarks68")     # loaded once
    assert "face_recognition_models" not in sys.modules            # its __init__ needs pkg_resources: never run
    with pytest.raises(ValueError, match=r"unknown model 'x'; expected one of"):
        photo.model_path("x")
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip package 'face-recognition-models'.*pip install 'cddfm3d\[photo\]'"):
        photo.model_path("landmarks68")
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "dlib", None)                  # as if dlib were not installed
    with pytest.raises(ImportError, match=r"needs dlib \(pip package 'dlib-bin'\).*pip install 'cddfm3d\[photo\]'"):
        models.require_dlib()
    with pytest.raises(ImportError, match=r"needs dlib \(pip package 'dlib-bin'\)"):
        photo.detect_faces(np.zeros((8, 8, 3), np.uint8))                # not a bare 'No module named dlib'


def test_astronaut_box_and_landmarks_are_a_face(astronaut):
    image, face = astronaut
    left, top, right, bottom = face.box
    assert face.detector == "hog" and face.score > 0.5
    assert 0 <= left < right < 512 and 0 <= top < bottom < 512 and 60 <= face.width <= 140
    lm = face.landmarks
    assert lm.shape == (68, 2) and lm.dtype == np.float64
    # every point near the box (dlib's box runs from the brows to the lower lip; the jaw reaches a bit beyond)
    assert (lm[:, 0] > left - 0.2 * face.width).all() and (lm[:, 0] < right + 0.2 * face.width).all()
    assert (lm[:, 1] > top - 0.2 * face.height).all() and (lm[:, 1] < bottom + 0.3 * face.height).all()
    eye_l, eye_r = lm[36:42].mean(0), lm[42:48].mean(0)       # iBUG: 36-41 image-left eye, 42-47 image-right eye
    nose, mouth, chin = lm[30], lm[48:68].mean(0), lm[8]
    assert eye_l[0] < nose[0] < eye_r[0] and eye_l[0] < mouth[0] < eye_r[0]
    assert max(eye_l[1], eye_r[1]) < nose[1] < mouth[1] < chin[1]               # top to bottom (y down)
    assert abs(eye_l[1] - eye_r[1]) < 0.1 * face.width                           # an upright portrait
    outer = np.linalg.norm(lm[45] - lm[36])                   # outer eye corners: about two thirds of the box
    assert 0.5 < outer / face.width < 0.85
    assert np.array_equal(face.landmarks5, extract_5p(lm))
    # the eyes are darker than the cheeks below them (the face is where the points say)
    gray = image.astype(np.float64).mean(2)
    eye_px = gray[lm[36:48, 1].astype(int), lm[36:48, 0].astype(int)].mean()
    cheek = gray[int(nose[1]), int(eye_l[0])], gray[int(nose[1]), int(eye_r[0])]
    assert eye_px < min(cheek) - 20


def test_cnn_detector_finds_the_same_face(photo, astronaut_path, astronaut):
    _, hog = astronaut
    cnn = photo.detect_faces(astronaut_path, detector="cnn")
    assert len(cnn) == 1 and cnn[0].detector == "cnn"
    a, b = hog.box, cnn[0].box
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = hog.area + cnn[0].area - inter
    assert inter / union > 0.5
    assert np.abs(cnn[0].landmarks - hog.landmarks).mean() < 2.0


def test_largest_and_index_on_a_two_face_composite(photo, astronaut):
    image, _ = astronaut
    head = image[0:300, 100:350]                                   # the head and shoulders, 250 x 300
    ref = photo.detect_faces(head)
    assert len(ref) == 1
    scale, at = 1.6, (100, 420)                                    # big copy at the origin, the head at (row, col)
    big = np.asarray(Image.fromarray(head).resize((400, 480), Image.BICUBIC))
    canvas = np.full((480, 670, 3), 128, np.uint8)
    canvas[:, :400], canvas[at[0]:at[0] + 300, at[1]:at[1] + 250] = big, head
    faces = photo.detect_faces(canvas)
    assert len(faces) == 2 and faces[0].area > faces[1].area
    want = ref[0].landmarks
    for chosen, mapped in ((photo.find_face(canvas)[1], lambda p: p / scale),
                           (photo.find_face(canvas, face=1)[1], lambda p: p - [at[1], at[0]]),
                           (photo.find_face(canvas, face=-1)[1], lambda p: p - [at[1], at[0]])):
        err = np.abs(mapped(chosen.landmarks) - want)
        assert err.mean() < 1.0 and err.max() <= 3.0
    assert 1.2 < faces[0].width / faces[1].width < 2.0
    with pytest.raises(photo.FaceIndexError, match=r"face index 2 is out of range: 2 faces found in the given "
                                                   r"670x480 array \(valid indices 0\.\.1, largest first"):
        photo.find_face(canvas, face=2)
    with pytest.raises(IndexError):
        photo.find_face(canvas, face=-3)
    for bad in ("biggest", 1.0, True):
        with pytest.raises(ValueError, match=r"face must be 'largest' or an int index"):
            photo.find_face(canvas, face=bad)


def _exif_file(path, stored, tag):
    exif = Image.Exif()
    exif[0x0112] = tag
    Image.fromarray(np.ascontiguousarray(stored)).save(path, exif=exif)


def test_grayscale_rgba_16_bit_and_exif_rotated_files_give_the_same_face(photo, astronaut, tmp_path):
    image, face = astronaut
    gray = np.asarray(Image.fromarray(image).convert("L"))
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")          # 16-bit grayscale
    rgba = np.dstack([image, np.full((512, 512), 255, np.uint8)])
    rgba[:, :60, 3] = 0                                            # a transparent strip, far from the face
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    # EXIF: the stored pixels of an upright picture for tags 3 (180 degrees), 6 (camera turned clockwise) and 8
    for tag, stored in ((3, image[::-1, ::-1]), (6, np.rot90(image, 1)), (8, np.rot90(image, -1))):
        _exif_file(tmp_path / f"exif{tag}.png", stored, tag)
        assert np.array_equal(photo.read_photo(tmp_path / f"exif{tag}.png"), image)       # read upright, exactly
    Image.fromarray(np.ascontiguousarray(np.rot90(image, 1))).save(tmp_path / "exif6.jpg", quality=95,
                                                                   exif=_tag(6))
    assert np.array_equal(photo.read_photo(tmp_path / "gray16.png"), np.repeat(gray[:, :, None], 3, 2))
    rgb_of_rgba = photo.read_photo(tmp_path / "rgba.png")
    assert (rgb_of_rgba[:, :60] == 255).all() and np.array_equal(rgb_of_rgba[:, 60:], image[:, 60:])
    for name in ("gray.png", "gray16.png", "rgba.png", "exif3.png", "exif6.png", "exif8.png", "exif6.jpg"):
        found = photo.detect_faces(tmp_path / name)
        # the JPEG's artefacts add a weak second detection (the mission patch on the suit, score about 0.1)
        assert len(found) == 1 or name.endswith(".jpg") and found[1].score < 0.5 * found[0].score, name
        err = np.abs(found[0].landmarks - face.landmarks)
        assert err.mean() < 1.0 and err.max() <= 3.0, (name, err.mean(), err.max())
    # the same file given as bytes
    by_bytes = photo.detect_faces((tmp_path / "exif8.png").read_bytes())
    assert np.array_equal(by_bytes[0].landmarks, face.landmarks)


def _tag(tag):
    exif = Image.Exif()
    exif[0x0112] = tag
    return exif


def test_identity_descriptor_and_distance(photo, astronaut):
    image, face = astronaut
    d = photo.face_descriptor(image, face)
    assert d.shape == (128,) and d.dtype == np.float64 and 0.5 < np.linalg.norm(d) < 3
    assert photo.descriptor_distance(d, photo.face_descriptor(image, face)) == 0.0            # deterministic
    gray = np.asarray(Image.fromarray(image).convert("L"))
    small = np.asarray(Image.fromarray(image).resize((460, 460), Image.BICUBIC))
    mirror = np.ascontiguousarray(image[:, ::-1])
    others = []
    for variant in (gray, small, mirror):
        f = photo.find_face(variant)[1]
        others.append(photo.face_descriptor(variant, f))
    dist = photo.descriptor_distance(np.stack(others), d)
    assert dist.shape == (3,) and (dist > 0).all() and (dist < photo.SAME_PERSON_THRESHOLD).all(), dist
    np.testing.assert_allclose(dist, np.linalg.norm(np.stack(others) - d, axis=1), rtol=1e-12)
    # landmarks moved off the face (same box, points shifted by half a face down-right) describe someone else
    off = photo.Face(face.box, face.score, face.landmarks + face.width / 2, face.detector)
    assert photo.descriptor_distance(d, photo.face_descriptor(image, off)) > photo.SAME_PERSON_THRESHOLD
    # described by landmarks alone: dlib's chip depends on them only; a 64-px aligned crop (too small for the
    # detector) by its aligned landmarks is still the same person
    assert photo.descriptor_distance(d, photo.face_descriptor(image, torch.from_numpy(face.landmarks))) == 0.0
    crop = photo.align_photo(image, size=64)
    assert photo.descriptor_distance(d, photo.face_descriptor(crop.crop, crop.landmarks)) < 0.6
    with pytest.raises(ValueError, match=r"descriptors must be \[\.\.\., 128\], found \(127,\)"):
        photo.descriptor_distance(d[:127], d)
    with pytest.raises(ValueError, match=r"face must be a cddfm3d.photo.Face .* or 68 landmarks \[68, 2\], found "
                                         r"ndarray \(5, 2\)"):
        photo.face_descriptor(image, face.landmarks5)
    with pytest.raises(ValueError, match=r"the landmarks contain NaN/Inf"):
        photo.face_descriptor(image, np.full((68, 2), np.nan))


def test_world_renders_aligned_by_their_true_landmarks_keep_their_framing():
    # The mean face, frontal: Deep3D's alignment of a world render by its own 68 landmarks is nearly the identity.
    fm = mini_model()
    coeffs = fm.zeros(1)
    for size in (64, 128):
        lm = fm(coeffs, image_size=size).landmarks[0].numpy()
        picture = to_uint8(render(coeffs, "human", size)[0]).permute(1, 2, 0).numpy()
        al = align_image(picture, lm, size=size)
        assert abs(al.trans_params[2] - 1) < 0.02                               # scale
        assert np.abs(al.landmarks - lm).max() < 0.5 * size / 64
        diff = np.abs(np.asarray(al.image, np.float64) - picture).mean()
        assert diff < 8, diff                                                   # of 255; resampling only
    # Over the world's priors: no systematic scale or shift (each face's identity and expression move its 5 points,
    # so single crops scale by up to about +-10 %, as in Deep3D).
    coeffs = sample_coeffs(128, seed=11)
    lms = fm(coeffs, image_size=64).landmarks.numpy()
    blank = np.zeros((64, 64, 3), np.uint8)
    params = [align_image(blank, lm, size=64).trans_params for lm in lms]
    scales = np.array([p[2] for p in params])
    shifts = np.array([align_landmarks(lm, p, 64) - lm for lm, p in zip(lms, params, strict=True)]).mean(1)
    assert abs(np.exp(np.log(scales).mean()) - 1) < 0.04 and scales.std() < 0.15
    assert np.abs(shifts.mean(0)).max() < 0.6


def test_photo_to_coefficients_short_fit(photo, astronaut_path, astronaut):
    _, face = astronaut
    r = photo.photo_to_coefficients(astronaut_path, size=64, steps=40)
    assert isinstance(r, photo.PhotoFit) and r.coeffs.shape == (1, 257) and r.coeffs.dtype == torch.float32
    assert torch.isfinite(r.coeffs).all() and r.coeffs.device.type == "cpu"
    assert r.crop.shape == (64, 64, 3) and r.crop.dtype == np.uint8 and r.crop.flags.writeable
    assert np.array_equal(r.face.landmarks, face.landmarks)
    np.testing.assert_allclose(r.landmarks, align_landmarks(face.landmarks, r.aligned.trans_params, 64), atol=1e-9)
    np.testing.assert_allclose(r.aligned.to_photo(r.landmarks), face.landmarks, atol=1e-6)
    # framed like the world: the crop's 5 points near the mean face's at 64 px (within a tenth of the crop)
    mean5 = extract_5p(mini_model()(mini_model().zeros(1), image_size=64).landmarks[0].numpy())
    assert np.abs(extract_5p(r.landmarks) - mean5).max() < 6.4
    assert r.lm_px_before == pytest.approx(r.fit.initial_losses["lm_px"])
    assert r.lm_px_after < 0.6 * r.lm_px_before, (r.lm_px_before, r.lm_px_after)
    projected = r.fit.landmarks[0].numpy()
    assert np.linalg.norm(projected - r.landmarks, axis=1).mean() == pytest.approx(r.lm_px_after, rel=1e-3)


def test_bad_photographs_are_named(photo, photo_data, tmp_path):
    cat = photo_data / "chelsea.png"
    assert photo.detect_faces(cat) == []
    with pytest.raises(photo.NoFaceError, match=r"no face found in 'chelsea.png' \(451x300\) by dlib's HOG frontal "
                                                r"face detector \(upsample=0\); .*upsample=1"):
        photo.photo_to_coefficients(cat, steps=1)
    with pytest.raises(FileNotFoundError, match=r"align_photo: image file '.*missing\.jpg' not found"):
        photo.align_photo(tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match=r"find_face: '.*' is a folder, not an image file"):
        photo.find_face(tmp_path)
    with pytest.raises(ValueError, match=r"detect_faces: photo must be the path of an image file .*found Image "
                                         r"\(a PIL image: pass np.asarray"):
        photo.detect_faces(Image.new("RGB", (8, 8)))
    with pytest.raises(ValueError, match=r"read_photo: expected a uint8 image .* found float32 \(8, 8, 3\)"):
        photo.read_photo(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"detector must be one of \('hog', 'cnn'\), found 'mtcnn'"):
        photo.detect_faces(cat, detector="mtcnn")
    with pytest.raises(ValueError, match=r"upsample must be an int in \[0, 3\]"):
        photo.detect_faces(cat, upsample=0.5)
    with pytest.raises(ValueError, match=r"align_photo: size must be an int in \[32, 1024\]"):
        photo.align_photo(cat, size=16)
    with pytest.raises(TypeError, match=r"unexpected option\(s\) \['step'\]"):
        photo.photo_to_coefficients(cat, step=3)


def test_fit_options_are_checked_before_the_photo_is_read(photo, tmp_path):
    """A bad fit option is reported by photo_to_coefficients itself, before the (here missing) file is opened."""
    missing = tmp_path / "nope.jpg"
    with pytest.raises(ValueError, match=r"photo_to_coefficients: fit: steps must be >= 1, found 0"):
        photo.photo_to_coefficients(missing, steps=0)
    with pytest.raises(ValueError, match=r"photo_to_coefficients: fit: lr must be > 0, found -1"):
        photo.photo_to_coefficients(missing, lr=-1.0)
    with pytest.raises(FileNotFoundError):
        photo.photo_to_coefficients(missing, steps=5)


# ------------------------------------------------------------------------------------------- FFHQ framing
# References: FFHQ's rule recomputed here in float64 from the photo's landmarks (eye and mouth means, x, y, centre),
# a rotated copy of the photo (Pillow, 20 degrees), cubic convolution (a = -1, the kernel of Pillow's transforms)
# written out in numpy at the mapped positions, and block means of a finer crop for the antialiased small crops.

def _ffhq_rule(lm):
    """(centre c, half-side vector x, y = rot90(x)) of FFHQ's alignment, float64, from 68 landmarks."""
    lm = np.asarray(lm, np.float64)
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg = 0.5 * (eye_left + eye_right)
    eye_to_eye, eye_to_mouth = eye_right - eye_left, 0.5 * (lm[48] + lm[54]) - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x *= max(2.0 * np.hypot(*eye_to_eye), 1.8 * np.hypot(*eye_to_mouth)) / np.hypot(*x)
    return eye_avg + 0.1 * eye_to_mouth, x, np.array([-x[1], x[0]])


def _cubic_samples(image, points, a=-1.0):
    """Cubic convolution (Keys' kernel with parameter a) of a uint8 [H, W, 3] image at photo points [N, 2] (pixel
    centres on integers), indices clamped to the image (edge padding), float64 [N, 3]."""
    def kernel(t):
        t = np.abs(t)
        return np.where(t < 1, (a + 2) * t**3 - (a + 3) * t**2 + 1,
                        np.where(t < 2, a * (t**3 - 5 * t**2 + 8 * t - 4), 0.0))
    h, w = image.shape[:2]
    out = []
    for x, y in points:
        xs, ys = np.floor(x) + np.arange(-1, 3), np.floor(y) + np.arange(-1, 3)
        patch = image[np.clip(ys, 0, h - 1).astype(int)][:, np.clip(xs, 0, w - 1).astype(int)].astype(np.float64)
        out.append(np.einsum("i,j,ijc->c", kernel(y - ys), kernel(x - xs), patch))
    return np.array(out)


def _eye_angle(lm):
    d = lm[42:48].mean(0) - lm[36:42].mean(0)
    return np.degrees(np.arctan2(d[1], d[0]))


def test_ffhq_framing_follows_the_rule(photo, astronaut):
    image, face = astronaut
    size = 256
    a = photo.align_photo(image, size=size, framing="ffhq")
    assert photo.FRAMINGS == ("deep3d", "ffhq") and a.framing == "ffhq"
    assert a.crop.shape == (size, size, 3) and a.crop.dtype == np.uint8 and a.crop.flags.writeable
    c, x, y = _ffhq_rule(face.landmarks)
    np.testing.assert_allclose(a.trans_params, [c - x - y, c - x + y, c + x + y, c + x - y], atol=1e-9)
    # the crop is the similarity taking c to the crop's centre, x to (size / 2, 0) and y to (0, size / 2)
    rel = face.landmarks - c
    want = (size - 1) / 2 + (size / 2) * np.stack([rel @ x, rel @ y], 1) / (x @ x)
    np.testing.assert_allclose(a.landmarks, want, atol=1e-9)
    # so the rule applied to the crop's own landmarks gives the crop: centre in the middle, x horizontal, |x| = S/2
    c2, x2, _ = _ffhq_rule(a.landmarks)
    np.testing.assert_allclose(c2, [(size - 1) / 2] * 2, atol=1e-9)
    np.testing.assert_allclose(x2, [size / 2, 0.0], atol=1e-9)
    np.testing.assert_allclose(a.to_photo(a.landmarks), face.landmarks, atol=1e-6)
    np.testing.assert_allclose(a.to_crop(face.landmarks), a.landmarks, atol=1e-9)
    deep3d = photo.align_photo(image, size=64)                         # the default framing keeps its own maps
    assert deep3d.framing == "deep3d" and deep3d.trans_params.shape == (5,)
    np.testing.assert_allclose(deep3d.to_crop(face.landmarks), deep3d.landmarks, atol=1e-9)
    # pixels: Pillow's bicubic at the mapped positions (rounding only), a few levels from bilinear-like error
    uv = np.random.default_rng(0).integers(0, size, (300, 2))
    ref = _cubic_samples(image, a.to_photo(uv.astype(np.float64)))
    err = np.abs(np.clip(np.round(ref), 0, 255) - a.crop[uv[:, 1], uv[:, 0]])
    assert err.max() <= 2, err.max()
    with pytest.raises(ValueError, match=r"align_photo: framing must be one of \('deep3d', 'ffhq'\), found 'FFHQ'"):
        photo.align_photo(image, framing="FFHQ")
    with pytest.raises(ValueError, match=r"framing must be one of"):          # checked before the file is read
        photo.align_photo("no/such/file.jpg", framing=None)


def _quad_point(quad, uv, size):
    """Photo points of crop pixels uv [N, 2]: the crop's pixel squares tile the quad (TL, BL, BR, TR)."""
    tl, bl, tr = quad[0], quad[1], quad[3]
    f = (np.asarray(uv, np.float64) + 0.5) / size
    return tl + f[:, :1] * (tr - tl) + f[:, 1:] * (bl - tl)


def test_ffhq_framing_undoes_a_rotation(photo, astronaut):
    image, face = astronaut
    a = photo.align_photo(image, size=256, framing="ffhq")
    rotated = np.asarray(Image.fromarray(image).rotate(20, resample=Image.BICUBIC, expand=True))
    b = photo.align_photo(rotated, size=256, framing="ffhq")
    assert abs(_eye_angle(b.face.landmarks) - _eye_angle(face.landmarks) + 20) < 1.5     # turned by 20 degrees
    assert abs(_eye_angle(b.landmarks) - _eye_angle(a.landmarks)) < 1 and abs(_eye_angle(a.landmarks)) < 3
    d = np.linalg.norm(b.landmarks - a.landmarks, axis=1)
    assert d.mean() < 1.5, d.mean()                                        # dlib's points move by a pixel or so
    for part in (slice(36, 42), slice(42, 48), slice(48, 68)):             # eyes and mouth: means of several points
        assert np.linalg.norm(b.landmarks[part].mean(0) - a.landmarks[part].mean(0)) < 2
    assert np.abs(b.crop.astype(np.float64) - a.crop).mean() < 12          # the same picture, resampled twice


def test_ffhq_framing_pads_with_edges_and_antialiases_small_crops(photo, astronaut):
    from cddfm3d.photo.ffhq import ffhq_align

    image, face = astronaut
    big = ffhq_align(image, face.landmarks, 256)
    assert big.reduce == 1
    # the photo cut 60 rows below the quad's top: the crop is the same where the photo is, edge padding above
    cut = ffhq_align(image[60:], face.landmarks - [0, 60], 256)
    np.testing.assert_allclose(cut.quad, big.quad - [0, 60], atol=1e-9)
    grid = np.stack(np.meshgrid(np.arange(256), np.arange(256)), -1).reshape(-1, 2)
    in_cut = _quad_point(cut.quad, grid, 256)
    inside, outside = in_cut[:, 1] > 2.5, in_cut[:, 1] < -2.5          # beyond the kernel's reach of the cut
    assert inside.sum() > 10000 and outside.sum() > 1000
    pixels, pixels_big = cut.image.reshape(-1, 3), big.image.reshape(-1, 3)
    assert np.abs(pixels[inside].astype(int) - pixels_big[inside]).max() <= 1
    pick = np.flatnonzero(outside)[::53]
    ref = _cubic_samples(image[60:], in_cut[pick])                     # clamped indices: the top row repeated
    assert np.abs(np.clip(np.round(ref), 0, 255) - pixels[pick]).max() <= 2
    # small crops: box-reduced first; close to the block means of the fine crop, unlike a plain bicubic transform
    side = np.linalg.norm(big.quad[3] - big.quad[0])
    for size in (64, 32):
        small = ffhq_align(image, face.landmarks, size)
        k = 256 // size
        assert small.reduce == int(side // size) > 1
        means = big.image.astype(np.float64).reshape(size, k, size, k, 3).mean((1, 3))
        naive = np.asarray(Image.fromarray(image).transform(
            (size, size), Image.Transform.QUAD, tuple((big.quad + 0.5).ravel()), resample=Image.Resampling.BICUBIC))
        err, err_naive = np.abs(small.image - means).mean(), np.abs(naive - means).mean()
        assert err < 0.6 * err_naive and err < 4.0, (size, err, err_naive)


def test_ffhq_align_names_bad_landmarks(astronaut):
    from cddfm3d.photo.ffhq import ffhq_align, ffhq_quad

    image, face = astronaut
    with pytest.raises(ValueError, match=r"ffhq_align: expected the 68 iBUG landmarks \[68, 2\].*found \(5, 2\)"):
        ffhq_align(image, face.landmarks5, 64)
    nan = face.landmarks.copy()
    nan[40] = np.nan
    with pytest.raises(ValueError, match=r"landmarks given to ffhq_align contain NaN/Inf \(points \[40\]\)"):
        ffhq_align(image, nan, 64)
    with pytest.raises(ValueError, match=r"given to ffhq_align are collapsed to one point"):
        ffhq_align(image, np.zeros((68, 2)), 64)
    far = face.landmarks[30] + 30 * (face.landmarks - face.landmarks[30])     # a face 30 x as big about its nose
    with pytest.raises(ValueError, match=r"ffhq_align: the landmarks give a crop square of side .* more than 8 x "
                                         r"the 512x512 photo"):
        ffhq_align(image, far, 64)
    with pytest.raises(ValueError, match=r"ffhq_quad: expected the 68 iBUG landmarks"):
        ffhq_quad(face.landmarks[:, :1])
