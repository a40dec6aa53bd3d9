"""The face editor's model: the state behind the sliders, with no widgets (issue 11 §1, §5; images of other domains:
issue 12 §4)::

    m = EditorModel.from_assets("mini")        # G, T and the five F^i of the shipped mini world, one CPU thread
    m.load_sample(0)                           # a generated face (styles of seed 0, noise of seed 0)
    m.set("pose", 1, 20.0)                     # yaw to 20 degrees
    m.set("shape", 0, 1.5)                     # identity coefficient 0 to 1.5 prior std
    m.image, m.render, m.landmarks, m.coeffs   # uint8 [H, W, 3], uint8 [H, W, 3], [68, 2] px, [257]
    m.save_clip("edit.gif", frames=24)         # from the source to this edit
    m.reset()                                  # back to the source, bit for bit
    m.load_image("toon.png", domain="toon")    # an image of another domain, projected, then edited the same way
    m.load_photo("me.jpg")                     # a photograph: face found, Deep3D-aligned, 3DMM-fitted, PIE-embedded
    m.photo_fit, m.photo_identity_distance     # the photo's 3DMM fit; dlib's distance photo crop <-> embedding

**What an edit is.** The source styles ``s`` [1, D] are read by T once: P_s = T(s). The sliders set absolute target
coefficients P_t (:mod:`cddfm3d.ui.controls` gives each slider's unit and the light mapping); every attribute
whose target differs from P_s is edited by its F^i with the delta ``P_t^i - P_s^i``, one after another in
:data:`cddfm3d.editing.ATTRIBUTES` order, each on its own layers, exactly as :meth:`FaceEditor.edit` with
``{attribute: {"target": P_t^i}}`` (:attr:`EditorModel.edits`). An attribute whose delta is exactly zero is not
passed through its F^i at all (F^i(s, 0) is close to s but not equal), so a reset, or a slider put back on its
source value, gives the source styles and the source image exactly. The image is decoded with the source's noise
(:func:`cddfm3d.editing.pairs.noise_for` of the noise seed), so an edit changes only what F changes.

**Sources.** A generated face (:meth:`EditorModel.load_sample`: the styles and noise of a seed), stored styles
(:meth:`EditorModel.load_styles`: styles and a noise seed), a photograph (:meth:`EditorModel.load_photo`: its face
detected, aligned, read by a 3DMM fit and embedded by PIE into the model's generator, then edited as an image
source) or an image (:meth:`EditorModel.load_image`): the image is projected (:func:`cddfm3d.adapt.project`) into
the generator of its domain -- the model's own generator for ``"human"``, the latent-consistently fine-tuned
``mini/generator_<domain>`` for ``"toon"`` and ``"sketch"`` (CDDFM3D §3.4) -- and the projection's styles and noise
maps become the source: the human world's T reads its styles, the human world's F^i edit them, and the domain's
generator decodes every edit with the projection's noise maps (fine-tuning with the mapping and affines frozen
leaves ``w -> s`` as it was, so T and F^i read and write the domain generator's StyleSpace as the human one's).
Every source records the domain whose generator decodes it (:attr:`EditorModel.domain`). The domain generators are
loaded once, when first used, and kept.

**What is cached.** Per source: T(s), the noise maps, the source image and the source light's parameters. Per
attribute (in ATTRIBUTES order): its delta (:meth:`FaceEditor.deltas` of its target) and the styles after its link
of the chain (:meth:`FaceEditor.step`), so that a change of attribute j re-runs only the active F^i from j on (then
G once). The 3DMM render and the landmarks of the current coefficients are computed when first asked for and kept
until the coefficients change. Each ``set`` / ``set_coefficient`` / ``reset`` records its latency (styles and
image, ``time.perf_counter``) in :attr:`EditorModel.latencies_ms` (the last :data:`LATENCY_HISTORY`).

**Worlds.** :meth:`EditorModel.from_assets` builds the shipped mini world's editor. The package ships T and the F^i
for the mini world only; for the real world (FFHQ StyleGAN2, BFM) train them with ``gen-pairs``, ``train-t`` and
``train-f`` on the real generator and pass the world's pieces to the constructor::

    T = AttributePredictor.load(...)              # train-t's attribute_predictor.safetensors
    Fs = {a: LatentManipulator.load(...) for a in ATTRIBUTES}
    m = EditorModel(FaceEditor(G, T, Fs), coeff_std=T.coeff_scale, model=cddfm3d.assets.load("real/bfm"))

(``T.coeff_scale`` is the std of T's training labels when train-t ran with ``--world real``.)

Thread safety: every public method and property holds one lock, so a view may update from a timer thread.
"""
from __future__ import annotations

import math
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..editing import ATTRIBUTE_SLICES, ATTRIBUTES
from ..editing.face_editor import FaceEditor
from ..editing.pairs import noise_for
from ..images import from_uint8, to_uint8
from ..serialization import atomic_write
from .controls import CONTROLS, Control, light_params, light_target
from .image_input import generator_input

WORLDS = ("mini", "real")        # the worlds of from_assets
CLIP_SUFFIXES = (".gif", ".mp4")
MP4_BLOCK = 16                   # H.264 encodes 16 x 16 macro blocks: MP4 frames are resized up to a multiple
MAX_SCALE = 16                   # the largest panel / clip upscaling (a 64 px tile becomes 1024 px)
LATENCY_HISTORY = 1000           # latencies_ms keeps the last this many
SEED_RANGE = (0, 2 ** 63 - 1)    # seeds torch.Generator.manual_seed takes without wrapping
HUMAN = "human"                  # the domain of the model's own generator
DOMAIN_ASSET = "mini/generator_{domain}"   # the shipped generator of another domain (cddfm3d.adapt.ship)
FAST_PROJECTION_STEPS = 30       # load_image's default steps in FAST mode (cddfm3d.fast_mode(): tests, CI notebooks)
FAST_PIE_STEPS = 30              # load_photo's default PIE steps in FAST mode
FAST_FIT_STEPS = 50              # load_photo's default 3DMM fit steps in FAST mode
EMBEDDINGS = ("pie", "project")  # load_photo's embeddings: cddfm3d.adapt.pie_embed, cddfm3d.adapt.project (W+)
PHOTO_SIZE = 128                 # load_photo's crop and fit resolution (cddfm3d.photo's default; reduced to G's)
# set by load_photo
RESERVED_PIE_OPTIONS = ("G", "images", "steps", "editor", "perceptual", "progress", "on_step", "seed")


class EditorModel:
    """The editor's state and its one way to change it (module docstring).

    The world's pieces are arguments, the mini world's by default (module docstring, "Worlds"):

    Args:
        editor: a :class:`~cddfm3d.editing.face_editor.FaceEditor` (G, T and the F^i).
        coeff_std: the standard deviation of each of the 257 coefficients (Deep3D's layout, their units), the
            unit of the shape, expression and albedo sliders (a slider value v sets the coefficient to
            ``v * coeff_std``). Default :func:`cddfm3d.world.priors.prior_std`, the mini world's prior; for a
            real-world T trained by ``train-t --world real``: ``T.coeff_scale``, its labels' std.
        model: the :class:`~cddfm3d.face3d.morphable.MorphableModel` the coefficients belong to, for
            :attr:`render` and :attr:`landmarks`. Default: the mini world's
            :func:`cddfm3d.world.domains.mini_model` on the editor's device, made when first needed; for the real
            world ``cddfm3d.assets.load("real/bfm", device)``.
        domain_generators: ``{domain: generator}``, generators of other domains for :meth:`load_image` (each a
            :class:`cddfm3d.stylegan2.Generator` on the editor's device, with the editor's generator's architecture
            and its ``w -> s`` tensors -- mapping network and affines -- bitwise equal: a latent-consistent
            fine-tuning). A domain of the mini world (:data:`cddfm3d.world.DOMAINS`) that is not given here is
            loaded from the shipped ``mini/generator_<domain>`` when first used.

    Raises ``ValueError`` for an ``editor`` that is not a FaceEditor, a ``coeff_std`` that is not 257 positive
    finite numbers, a ``model`` that is not a MorphableModel, or a domain generator as :meth:`add_domain` refuses
    it."""

    def __init__(self, editor: FaceEditor, coeff_std: torch.Tensor | None = None, model=None,
                 domain_generators: Mapping | None = None):
        from ..face3d.morphable import MorphableModel
        from ..world.priors import prior_std

        if not isinstance(editor, FaceEditor):
            raise ValueError(f"EditorModel: editor must be a cddfm3d.editing.FaceEditor, found "
                             f"{type(editor).__name__}")
        try:
            std = prior_std() if coeff_std is None else torch.as_tensor(coeff_std).detach().to("cpu", torch.float64)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"EditorModel: coeff_std must be 257 positive finite numbers, found "
                             f"{type(coeff_std).__name__} ({e})") from None
        if std.shape != (257,) or not bool(torch.isfinite(std).all()) or not bool((std > 0).all()):
            raise ValueError(f"EditorModel: coeff_std must be 257 positive finite numbers, found shape "
                             f"{tuple(std.shape)}" + (f", range [{float(std.min()):g}, {float(std.max()):g}]"
                                                      if std.numel() else ""))
        if model is not None and not isinstance(model, MorphableModel):
            raise ValueError(f"EditorModel: model must be a cddfm3d.face3d.MorphableModel (e.g. "
                             f"cddfm3d.assets.load('real/bfm')), found {type(model).__name__}")
        self.editor = editor
        self._std = std.tolist()
        self._model = model
        self._order = editor.attributes                  # ATTRIBUTES order, those with an F^i
        self._controls = [c for c in CONTROLS if c.attribute in self._order]
        self._lock = threading.RLock()
        self._src: _Source | None = None
        self._latencies: deque[float] = deque(maxlen=LATENCY_HISTORY)
        self._editors: dict[str, FaceEditor] = {HUMAN: editor}    # one per domain: its G, the shared T and F^i
        self._perceptual = None                                  # load_image's distance, chosen once
        if domain_generators is not None:
            if not isinstance(domain_generators, Mapping):
                raise ValueError(f"EditorModel: domain_generators must be a mapping {{domain: generator}}, found "
                                 f"{type(domain_generators).__name__}")
            for domain, G in domain_generators.items():
                self.add_domain(domain, G)

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def from_assets(cls, world: str = "mini", device=None, threads: int | None = 1, generator=None,
                    domain_generators: Mapping | None = None) -> EditorModel:
        """The editor of the shipped networks of ``world`` (:meth:`FaceEditor.load`) with the world's slider units
        and morphable model.

        Args:
            world: ``"mini"``, the shipped mini world (units: the prior's std; render and landmarks: MiniFace).
                ``"real"`` is refused with what is missing: the package ships T and the F^i of the mini world
                only (module docstring, "Worlds", for building a real-world editor from networks you trained).
            device: where the networks run (default CPU).
            threads: ``torch.set_num_threads(threads)`` when not ``None`` (process-wide). One thread is the
                interactive default: at batch 1 the layers are too small to gain from intra-op parallelism, and
                a pool of 2 threads on a 2-core laptop waits for its slowest thread, so when the other core is
                busy (the browser, the kernel's I/O) every layer stalls and the latency jumps; one thread is
                as fast when both cores are free and stays steady when one is not.
            generator: a :class:`cddfm3d.stylegan2.Generator` on ``device`` to use instead of the world's (e.g.
                one fine-tuned to another domain: T and the F^i stay the world's; the world's generator is then
                not loaded); same style width. It is the ``"human"`` domain's generator of :meth:`load_image`.
            domain_generators: generators of other domains (the constructor's argument), instead of the shipped
                ``mini/generator_<domain>``.

        Raises ``ValueError`` for a world other than ``"mini"`` / ``"real"`` (listing them), for ``"real"``
        (naming the missing assets), a bad ``threads``, or a generator that is not a Generator, is on another
        device or has another style width; and the asset errors of :func:`cddfm3d.assets.load`."""
        from ..world.priors import prior_std

        if world not in WORLDS:
            raise ValueError(f"EditorModel.from_assets: unknown world {world!r}; expected one of {list(WORLDS)}")
        if world == "real":
            from ..assets import REAL_ASSETS

            raise ValueError(
                f"EditorModel.from_assets: the real world has no shipped editing networks: it needs "
                f"real/attribute_predictor (T) and real/manipulator/<attribute> (an F^i for each of "
                f"{', '.join(ATTRIBUTES)}), and the package ships these for the mini world only (the real world's "
                f"user-supplied assets are {', '.join(sorted(REAL_ASSETS))}). Train them on the real generator "
                f"with gen-pairs, train-t --world real and train-f, then build the editor from the trained "
                f"networks: EditorModel(FaceEditor(G, T, manipulators), coeff_std=T.coeff_scale, "
                f"model=cddfm3d.assets.load('real/bfm'))")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"EditorModel.from_assets: threads must be an int >= 1 or None, found {threads!r}")
        editor = FaceEditor.load(world, device, generator=generator)
        if threads is not None:
            torch.set_num_threads(threads)
        return cls(editor, coeff_std=prior_std(), model=None,     # the mini world's units and MiniFace
                   domain_generators=domain_generators)

    # ------------------------------------------------------------------------------------------ sources
    def load_sample(self, seed: int) -> None:
        """Make the generated face of ``seed`` the source: styles :meth:`FaceEditor.styles_from_seed` (seed), noise
        seed ``seed``. Every control goes back to the new source's values. Raises ``ValueError`` for a seed that
        is not an int in [0, 2**63 - 1]."""
        seed = _seed(seed, "EditorModel.load_sample: seed")
        with self._lock:
            self._load(self.editor.styles_from_seed(seed), seed)

    def load_styles(self, s, noise_seed: int = 0) -> None:
        """Make stored styles the source: ``s`` [1, D] or [D] floats (tensor, array or list; D = ``G.style_dim``),
        decoded with the noise of ``noise_seed`` (int in [0, 2**63 - 1]). Raises ``ValueError`` naming what was
        found for anything else (another shape, a ragged list, non-numbers, integers), non-finite values or a
        bad seed."""
        D = self.editor.G.style_dim
        expected = f"EditorModel.load_styles: styles must be floats [1, {D}] or [{D}] (tensor, array or list)"
        if isinstance(s, torch.Tensor):
            given = s
        else:
            if s is None or isinstance(s, (str, bytes)):
                raise ValueError(f"{expected}, found {type(s).__name__}")
            try:
                a = np.asarray(s)
                given = torch.as_tensor(a) if a.dtype.kind in "biuf" else None
            except (TypeError, ValueError) as e:
                raise ValueError(f"{expected}, found a {type(s).__name__} that is not a rectangular array of "
                                 f"numbers ({e})") from None
            if given is None:
                raise ValueError(f"{expected}, found a {type(s).__name__} of {a.dtype} {a.shape}")
        t = given[None] if given.ndim == 1 else given
        if t.shape != (1, D) or not t.is_floating_point():
            raise ValueError(f"{expected}, found {given.dtype} {tuple(given.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError("EditorModel.load_styles: styles have NaN or Inf")
        noise_seed = _seed(noise_seed, "EditorModel.load_styles: noise_seed")
        G = self.editor.G
        with self._lock:
            self._load(t.detach().to(G.w_avg.device, G.w_avg.dtype).clone(), noise_seed)

    def load_image(self, image, domain: str = HUMAN, space: str = "w+", steps: int | None = None,
                   progress: bool | Callable[[int, int], None] = False):
        """Make an image of ``domain`` the source: project it into that domain's generator and edit the projection.

        The image (:mod:`cddfm3d.ui.image_input`: a uint8 array [H, W, 3] -- RGBA and grayscale too --, a float
        tensor [3, H, W] / [1, 3, H, W] in [-1, 1], or the path of a PNG / JPEG file read with imageio) is
        centre-cropped to a square and resized to the generator's resolution R (area averaging down, bilinear up;
        :attr:`input_image` shows the result), then projected with :func:`cddfm3d.adapt.project` (``space``,
        ``steps``, seed 0, the perceptual distance chosen automatically once per model) into :meth:`generator`
        (``domain``). The projection's styles s [1, D] and noise maps become the source: the sliders start at the
        controls of P_s = T(s), edits go through the F^i, and every image -- the source, the edits, the clip
        frames -- is the domain generator's decode with the projection's noise maps. :attr:`source_image` is the
        projection's image (that decode of s), :attr:`projection_psnr` its PSNR against the input, and a reset
        gives it back bit for bit. The same pixels in any of the forms give the same source.

        Args:
            image: the image (above).
            domain: ``"human"`` (the model's own generator) or another of :attr:`domains` (``"toon"``,
                ``"sketch"``: ``mini/generator_<domain>``, loaded when first used and kept).
            space: ``"w"``, ``"w+"`` (default) or ``"s"`` (:mod:`cddfm3d.adapt.projection`).
            steps: optimisation steps, an int >= 1; default :meth:`projection_steps`: the projector's default
                (:data:`cddfm3d.adapt.projection.DEFAULT_STEPS`, 300: about 22 s for one 64 px image on one busy
                CPU core) in full mode, :data:`FAST_PROJECTION_STEPS` (30: about 2 s, a rougher fit: 25.6 against
                32.3 dB PSNR on a mini-world render) when :func:`cddfm3d.fast_mode` (tests, CI notebooks).
            progress: ``False`` (quiet), ``True`` (the projector's tqdm bar) or a callable ``progress(step, steps)``
                called at each optimisation step (step = 1 .. steps), e.g. to show progress in a view.

        Returns the :class:`~cddfm3d.adapt.projection.ProjectionResult` (its ``history``, ``perceptual`` name, ...).

        Raises, before anything is projected and with the source unchanged: ``ValueError`` for an unknown domain
        (listing :attr:`domains`), space or bad steps / progress, and the image's errors
        (:func:`~cddfm3d.ui.image_input.generator_input`: ``FileNotFoundError`` for a missing file, ``ValueError``
        for an unreadable file, a wrong type, dtype, shape or value range); :class:`cddfm3d.assets.AssetError` (a
        ``FileNotFoundError``) when the domain's generator asset is missing, naming the commands that make it, and
        the other asset errors of :func:`cddfm3d.assets.load`."""
        from ..adapt.projection import SPACES

        who = "EditorModel.load_image"
        self._check_domain(domain, who)
        if space not in SPACES:
            raise ValueError(f"{who}: space must be one of {list(SPACES)}, found {space!r}")
        steps = _check_steps(steps, self.projection_steps(), who)
        _check_progress(progress, who)
        x, _ = generator_input(image, self.editor.G.resolution, who)    # every domain's G has this architecture
        editor = self._domain_editor(domain, who)
        proj = self._embed(editor, x, "project", steps, progress, space=space)
        with self._lock:
            self._load_embedding(proj, x, domain)
        return proj

    @staticmethod
    def projection_steps() -> int:
        """:meth:`load_image`'s default steps: :data:`cddfm3d.adapt.projection.DEFAULT_STEPS` (300), or
        :data:`FAST_PROJECTION_STEPS` (30) when :func:`cddfm3d.fast_mode` is on."""
        from ..adapt.projection import DEFAULT_STEPS
        from ..config import steps

        return steps(DEFAULT_STEPS, FAST_PROJECTION_STEPS)

    def load_photo(self, photo, face="largest", embed: str = "pie", steps: int | None = None, fit_steps=None,
                   progress: bool | Callable[[int, int], None] = False, detector: str = "hog", upsample: int = 0,
                   pie_options: Mapping | None = None):
        """Make a face of a photograph the source: detect it, align it as Deep3D does, read it in 3D (a 3DMM fit),
        embed it into the model's own (``"human"``) generator and edit the embedding.

        Steps (issue 13): :func:`cddfm3d.photo.photo_to_coefficients` detects the faces with dlib (``detector``,
        ``upsample``), chooses ``face``, cuts it out by Deep3D's 5-point alignment at :data:`PHOTO_SIZE` (128) px
        and fits the morphable model (the editor's, MiniFace by default) to the crop and its 68 dlib landmarks
        (``fit_steps``): :attr:`photo_fit`, the photo's own 3D reading. The crop, reduced to the generator's
        resolution R by area averaging (:func:`cddfm3d.ui.image_input.generator_input`; a Deep3D crop at any size
        is framed like a mini-world render, :mod:`cddfm3d.photo.fit`), is :attr:`input_image`; it is embedded with
        :func:`cddfm3d.adapt.pie_embed` (``embed="pie"``, this model's FaceEditor as the rig, so nothing is
        reloaded; seed 0) or :func:`cddfm3d.adapt.project` in W+ (``embed="project"``, seed 0), both with the
        perceptual distance :meth:`load_image` uses. The embedding's styles and noise maps become the source exactly
        as for :meth:`load_image` (sliders from T(s), edits through the F^i, decoded with the embedding's noise maps,
        a reset gives the embedding's image back bit for bit); :attr:`projection_psnr` is its PSNR against the
        crop, and :attr:`photo_identity_distance` dlib's identity distance between the crop and the embedding.

        **Out of domain.** The mini generator knows only the synthetic faces of its world, so a photograph is an
        out-of-domain input for it: the embedding is a best effort (the picture nearest to the photo that the mini
        generator can draw: on astronaut.png its colours, hair and smile, blurred), and the identity distance says
        how far it is (:attr:`photo_identity_distance`). The 3DMM fit does not depend on the generator and reads the
        real face. With a real-world editor (a generator trained on photographs, and T and F^i trained on it:
        module docstring, "Worlds") the same call embeds the photo in its domain, provided the generator's faces
        are framed as Deep3D's crops are (an FFHQ generator's are not: cut the face out with
        ``cddfm3d.photo.align_photo(photo, size=R, framing="ffhq").crop`` and give it to :meth:`load_image`); give
        ``pie_options`` the world's reconstruction network and morphable model (``recon=..., model=...``, or
        ``read=``), since PIE's defaults are the mini world's.

        Args:
            photo: a path, the bytes of an image file, or a uint8 array [H, W(, 1|3|4)] (:func:`cddfm3d.photo.
                read_photo`: grayscale, RGBA, 16-bit and EXIF-rotated files are read upright as RGB).
            face: ``"largest"`` or an int index into the faces found, largest first (0 is the largest).
            embed: ``"pie"`` (default) or ``"project"`` (:data:`EMBEDDINGS`).
            steps: embedding steps, an int >= 2 for PIE (W then W+) or >= 1 for the projector; default
                :meth:`photo_steps` (``embed``): 300 for PIE (about 37 s on one CPU core) and 300 for the projector
                (about 14 s) in full mode, :data:`FAST_PIE_STEPS` / :data:`FAST_PROJECTION_STEPS` (30) in FAST mode.
            fit_steps: the 3DMM fit's steps (an int >= 1, or (pose_steps, all_steps) as :func:`cddfm3d.face3d.fit`
                takes); default :meth:`photo_fit_steps`: 300 (about 8 s on one core), :data:`FAST_FIT_STEPS` (50)
                in FAST mode.
            progress: ``False``, ``True`` (the fit's and the embedding's tqdm bars) or a callable
                ``progress(step, steps)`` called at each embedding step (after the fit).
            detector, upsample: as :func:`cddfm3d.photo.detect_faces` (``"hog"`` / ``"cnn"``; 0..3 doublings of
                the photo before detection, for faces under about 80 px).
            pie_options: further keyword arguments of :func:`cddfm3d.adapt.pie_embed` (``weights``, ``recon``,
                ``model``, ``read``, ``recognizer``, ``attributes``, ``w_fraction``, ``lr``, ...) for ``embed="pie"``;
                a name pie_embed does not take is refused before any work.

        Returns the embedding: a :class:`~cddfm3d.adapt.pie.PIEResult` (``energies`` per term) or a
        :class:`~cddfm3d.adapt.projection.ProjectionResult`.

        Raises, with the source unchanged (the options before any work, the photo's errors before the fit and the
        embedding): ``ValueError`` for an unknown ``embed`` (listing :data:`EMBEDDINGS`), bad ``steps`` /
        ``fit_steps`` / ``progress``, ``pie_options`` that are not a mapping, name an argument set here or are
        given with ``embed="project"``; :class:`cddfm3d.photo.NoFaceError` (a ``ValueError``) when no face is
        found (e.g. a cat), :class:`cddfm3d.photo.FaceIndexError` for an index beyond the faces found, and the
        photo's reading errors (``FileNotFoundError``, ``ValueError``); ``ImportError`` naming the pip package
        when dlib or its model files are missing (:func:`cddfm3d.photo.models.require_dlib`); then
        :func:`cddfm3d.adapt.pie_embed`'s errors for bad ``pie_options`` values."""
        from ..photo import identity_distance, photo_to_coefficients

        who = "EditorModel.load_photo"
        if embed not in EMBEDDINGS:
            raise ValueError(f"{who}: embed must be one of {list(EMBEDDINGS)}, found {embed!r}")
        steps = _check_steps(steps, self.photo_steps(embed), who, minimum=2 if embed == "pie" else 1)
        fit_steps = _check_fit_steps(fit_steps, self.photo_fit_steps(), who)
        _check_progress(progress, who)
        options = _check_pie_options(pie_options, embed, who)
        fm = self._face_model()
        fitted = photo_to_coefficients(photo, face, size=PHOTO_SIZE, steps=fit_steps, model=fm,
                                       device=self.editor.device, detector=detector, upsample=upsample,
                                       progress=progress is True)
        R = self.editor.G.resolution
        x, _ = generator_input(fitted.crop, R, who)
        result = self._embed(self.editor, x, embed, steps, progress, space="w+", pie_options=options)
        image = to_uint8(result.image.detach().cpu())
        distance = identity_distance(_hwc(to_uint8(x)), _hwc(image), fitted.fit.landmarks[0].detach().cpu().numpy(),
                                     landmarks_size=PHOTO_SIZE)       # the fit's 68 landmarks, in the crop's pixels
        render = to_uint8(generator_input(fitted.fit.image.detach().float().cpu().clamp(0, 1) * 2 - 1, R, who)[0])
        with self._lock:
            self._load_embedding(result, x, HUMAN, photo=_Photo(fitted, render, float(distance)))
        return result

    @staticmethod
    def photo_steps(embed: str = "pie") -> int:
        """:meth:`load_photo`'s default embedding steps for ``embed``: PIE's default
        (:data:`cddfm3d.adapt.pie.DEFAULT_STEPS`, 300) or :data:`FAST_PIE_STEPS` (30) in FAST mode
        (:func:`cddfm3d.fast_mode`); for ``"project"`` :meth:`projection_steps`. Raises ``ValueError`` for another
        ``embed``."""
        from ..adapt.pie import DEFAULT_STEPS
        from ..config import steps

        if embed not in EMBEDDINGS:
            raise ValueError(f"EditorModel.photo_steps: embed must be one of {list(EMBEDDINGS)}, found {embed!r}")
        return steps(DEFAULT_STEPS, FAST_PIE_STEPS) if embed == "pie" else EditorModel.projection_steps()

    @staticmethod
    def photo_fit_steps() -> int:
        """:meth:`load_photo`'s default 3DMM fit steps: :data:`cddfm3d.photo.DEFAULT_STEPS` (300), or
        :data:`FAST_FIT_STEPS` (50) in FAST mode."""
        from ..config import steps
        from ..photo import DEFAULT_STEPS

        return steps(DEFAULT_STEPS, FAST_FIT_STEPS)

    def _embed(self, editor: FaceEditor, x: torch.Tensor, embed: str, steps: int, progress,
               space: str = "w+", pie_options: Mapping | None = None):
        """``x`` [1, 3, R, R] embedded into ``editor.G`` by PIE (``embed="pie"``, ``editor`` as its rig) or the
        projector in ``space``, seed 0, with :meth:`_perceptual_distance`; ``progress(step, steps)`` is called after
        each step when it is a callable. The one embedding call of :meth:`load_image` and :meth:`load_photo`."""
        distance = self._perceptual_distance()
        on_step = progress if callable(progress) else None
        with torch.enable_grad():
            if embed == "pie":
                from ..adapt.pie import pie_embed

                return pie_embed(editor.G, x.to(editor.device), steps=int(steps), editor=editor, perceptual=distance,
                                 progress=progress is True, on_step=on_step, **(pie_options or {}))
            from ..adapt import projection

            return projection.project(editor.G, x.to(editor.device), space=space, steps=int(steps),
                                      perceptual=distance, progress=progress is True, on_step=on_step)

    def _load_embedding(self, result, x: torch.Tensor, domain: str, photo: _Photo | None = None) -> None:
        """Make an embedding (a ProjectionResult of the image ``x`` [1, 3, R, R]) the source of ``domain``: its
        styles and noise maps, ``x`` as the input, its PSNR. The one source-setting step of :meth:`load_image` and
        :meth:`load_photo`."""
        self._load(result.styles.detach().clone(), None, noise=[n.detach().clone() for n in result.noise],
                   domain=domain, input_image=to_uint8(x), psnr=float(result.psnr[0]), photo=photo)

    def _face_model(self):
        """The morphable model of the coefficients (:attr:`render`, :meth:`load_photo`'s fit): the one given, or
        the mini world's MiniFace on the editor's device, made once."""
        if self._model is None:
            from ..world.domains import mini_model

            self._model = mini_model(self.editor.device)
        return self._model

    @torch.no_grad()
    def _load(self, s: torch.Tensor, noise_seed: int | None, noise: list | None = None, domain: str = HUMAN,
              input_image: torch.Tensor | None = None, psnr: float | None = None, photo: _Photo | None = None) -> None:
        """Make ``s`` [1, D] the source, decoded by ``domain``'s generator with ``noise`` (maps) or, when it is
        None, the noise of ``noise_seed``."""
        ed = self._editors[domain]
        if noise is None:
            noise = noise_for(ed.G, [noise_seed], ed.device)
        P = ed.predict(s)
        src = _Source(styles=s, noise_seed=noise_seed, noise=noise, P=P, image=ed.synthesize(s, noise=noise),
                      light=light_params(P[0, ATTRIBUTE_SLICES["light"]]) if "light" in self._order else None,
                      domain=domain, decoder=ed, input_image=input_image, psnr=psnr, photo=photo)
        self._src = src
        self._clear_all()

    # ------------------------------------------------------------------------------------------ domains
    @property
    def domains(self) -> list[str]:
        """The domains :meth:`load_image` knows: ``"human"``, the mini world's others (:data:`cddfm3d.world.DOMAINS`:
        ``"toon"``, ``"sketch"``) and any added with :meth:`add_domain`, whether or not their generator exists
        (:meth:`available_domains`)."""
        from ..world.domains import DOMAINS

        with self._lock:
            return list(dict.fromkeys([HUMAN, *DOMAINS, *self._editors]))

    def available_domains(self) -> list[str]:
        """The :attr:`domains` whose generator is at hand: loaded or added already, or a shipped
        ``mini/generator_<domain>`` whose file is present (not loaded or verified here)."""
        from .. import assets

        out = []
        for domain in self.domains:
            with self._lock:
                ready = domain in self._editors
            if not ready:
                try:
                    ready = assets.path(DOMAIN_ASSET.format(domain=domain), verify=False).is_file()
                except (assets.AssetError, assets.AssetValidationError):
                    ready = False
            if ready:
                out.append(domain)
        return out

    def generator(self, domain: str = HUMAN):
        """The generator that decodes ``domain``'s images (the model's own for ``"human"``), loaded from
        ``mini/generator_<domain>`` when first asked for and kept. Raises as :meth:`load_image` for an unknown
        domain or a missing asset."""
        self._check_domain(domain, "EditorModel.generator")
        return self._domain_editor(domain, "EditorModel.generator").G

    def add_domain(self, domain: str, generator) -> None:
        """Use ``generator`` (a :class:`cddfm3d.stylegan2.Generator`) for the images of ``domain`` (a name, not
        ``"human"``), instead of ``mini/generator_<domain>``: e.g. an ablation, or another world's fine-tuned
        generator. Raises ``ValueError`` for a bad name, a generator that is not a Generator, is on another device
        than the editor, has another architecture than the editor's generator or another ``w -> s`` (mapping
        network or affines changed: T and the F^i would misread its StyleSpace)."""
        from ..stylegan2 import Generator

        who = "EditorModel.add_domain"
        if not isinstance(domain, str) or not domain.strip() or domain == HUMAN:
            raise ValueError(f"{who}: domain must be a non-empty name other than {HUMAN!r} (the model's own "
                             f"generator), found {domain!r}")
        if not isinstance(generator, Generator):
            raise ValueError(f"{who}: the {domain} generator must be a cddfm3d.stylegan2.Generator, found "
                             f"{type(generator).__name__}")
        with self._lock:
            self._editors[domain] = self._domain_face_editor(domain, generator, who)

    def _domain_face_editor(self, domain: str, G, who: str) -> FaceEditor:
        from ..adapt.finetuning import latent_inconsistency

        base = self.editor.G
        if G.config != base.config:
            raise ValueError(f"{who}: the {domain} generator's architecture {G.config} differs from the editor's "
                             f"generator's {base.config}")
        if G.w_avg.device != base.w_avg.device:
            raise ValueError(f"{who}: the {domain} generator is on {G.w_avg.device}, the editor on "
                             f"{base.w_avg.device}; move it with .to({str(base.w_avg.device)!r})")
        changed = latent_inconsistency(base, G)
        if changed:
            raise ValueError(f"{who}: the {domain} generator maps w to s differently from the editor's generator "
                             f"({len(changed)} mapping / affine tensors differ, e.g. {changed[:3]}); T and the F^i "
                             f"read only a latent-consistent fine-tuning (finetune --freeze affine or freeze-g)")
        return FaceEditor(G.eval(), self.editor.T, self.editor.manipulators)

    def _check_domain(self, domain, who: str) -> None:
        known = self.domains
        if not isinstance(domain, str) or domain not in known:
            raise ValueError(f"{who}: unknown domain {domain!r}; expected one of {known}")

    def _domain_editor(self, domain: str, who: str) -> FaceEditor:
        """``domain``'s FaceEditor (its generator with the shared T and F^i), loading its asset on first use."""
        from .. import assets
        from ..assets import AssetError, AssetIntegrityError

        with self._lock:
            if domain in self._editors:
                return self._editors[domain]
            name = DOMAIN_ASSET.format(domain=domain)
            try:
                G = assets.load(name, self.editor.device)
            except AssetIntegrityError:
                raise
            except AssetError as e:
                raise AssetError(
                    f"{who}: the {domain} domain has no generator: {e}. {name} is mini/generator fine-tuned to "
                    f"{domain} renders with its mapping and affines frozen; make it with: python -m cddfm3d "
                    f"make-world --out <data> --domains human {domain} ..., then python -m cddfm3d finetune --data "
                    f"<data> --domain {domain} --freeze affine --out <run>, then python -m cddfm3d ship-domain "
                    f"--domain {domain} --run <run> --train-data <data> --heldout <held-out data of another seed> "
                    f"(which needs mini/recon_{domain}: ship-evaluator --domain {domain}); or give a generator: "
                    f"EditorModel.from_assets('mini', domain_generators={{{domain!r}: G}})") from e
            self._editors[domain] = self._domain_face_editor(domain, G, who)
            return self._editors[domain]

    def _perceptual_distance(self):
        """load_image's perceptual distance (:func:`cddfm3d.adapt.perceptual.choose_perceptual` "auto"), made once."""
        from ..adapt.perceptual import choose_perceptual

        with self._lock:
            if self._perceptual is None:
                self._perceptual = choose_perceptual("auto", device=self.editor.device)
            return self._perceptual

    def _clear_all(self) -> None:
        src = self._src
        self._values: dict[tuple[str, int], float] = {}          # slider values as set (non-light)
        self._raw: dict[str, dict[int, float]] = {a: {} for a in self._order}   # coefficient targets, 3DMM units
        self._reset_light()
        self._goals = {a: src.P[:, ATTRIBUTE_SLICES[a]].clone() for a in self._order}
        self._deltas: dict[str, torch.Tensor | None] = {a: None for a in self._order}
        self._chain = [src.styles for _ in self._order]        # styles after each attribute's link
        self._styles = src.styles
        self._image = src.image
        self._rows = None

    def _reset_light(self) -> None:
        """The light back to the source's: base gamma (float64 [27]) = the source's, its parameters = the
        controls' values. The light's target is ``light_target(base, base parameters, controls)`` (:meth:`_goal`);
        a raw light coefficient (:meth:`set_coefficient`) becomes part of a new base whose parameters, read back
        with :func:`light_params`, are the controls' new values."""
        src = self._src
        if "light" in self._order:
            self._light_base = src.P[0, ATTRIBUTE_SLICES["light"]].detach().to("cpu", torch.float64).clone()
        self._light_base_params = self._light = src.light

    def _need(self) -> _Source:
        if self._src is None:
            raise RuntimeError("EditorModel: no source face yet; call load_sample(seed), load_styles(s), "
                               "load_image(image) or load_photo(photo) first")
        return self._src

    # ------------------------------------------------------------------------------------------ controls
    @property
    def controls(self) -> list[Control]:
        """The sliders (:class:`~cddfm3d.ui.controls.Control`): 4 shape, 4 expression, 4 albedo, 3 pose, 4 light
        (those of the attributes this editor has an F^i for), in that order."""
        return list(self._controls)

    @property
    def attributes(self) -> list[str]:
        """The editable attributes, in :data:`ATTRIBUTES` order."""
        return list(self._order)

    def control(self, attribute: str, index: int) -> Control:
        """The control ``(attribute, index)``. Raises ``ValueError`` listing the attributes, or the attribute's
        indices, for an unknown one."""
        self._check_attribute(attribute, "control")
        mine = [c for c in self._controls if c.attribute == attribute]
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(mine):
            labels = ", ".join(f"{c.index} ({c.label})" for c in mine)
            raise ValueError(f"EditorModel: {attribute} control index must be one of {labels}; found {index!r}")
        return mine[int(index)]

    def _check_attribute(self, attribute, who: str) -> None:
        if attribute not in self._order:
            extra = "" if attribute not in ATTRIBUTES else " (this editor has no editing network for it)"
            raise ValueError(f"EditorModel.{who}: unknown attribute {attribute!r}{extra}; expected one of "
                             f"{self._order}")

    def source_value(self, attribute: str, index: int) -> float:
        """The source's value of control ``(attribute, index)`` in the control's unit (it may lie outside the
        control's range). Raises ``ValueError`` for an unknown control, ``RuntimeError`` before a source."""
        with self._lock:
            c = self.control(attribute, index)
            src = self._need()
            if attribute == "light":
                return float(src.light[c.index])
            return self._to_units(attribute, c.index, float(src.P[0, ATTRIBUTE_SLICES[attribute].start + c.index]))

    def value(self, attribute: str, index: int) -> float:
        """The current value of control ``(attribute, index)`` in its unit (the source's after a load or reset):
        the value set last, or, after :meth:`set_coefficient` changed its coefficient, the value read back from the
        current target (for the light: the four parameters of the current target gamma, :func:`light_params`).
        Raises like :meth:`source_value`."""
        with self._lock:
            c = self.control(attribute, index)
            self._need()
            if attribute == "light":
                return float(self._light[c.index])
            if (attribute, c.index) in self._values:
                return self._values[(attribute, c.index)]
            return self._to_units(attribute, c.index, float(self._goals[attribute][0, c.index]))

    def _to_units(self, attribute: str, k: int, coefficient: float) -> float:
        if attribute == "pose":
            return math.degrees(coefficient)
        return coefficient / self._std[ATTRIBUTE_SLICES[attribute].start + k]

    def _from_units(self, attribute: str, k: int, value: float) -> float:
        if attribute == "pose":
            return math.radians(value)
        return value * self._std[ATTRIBUTE_SLICES[attribute].start + k]

    def set(self, attribute: str, index: int, value: float) -> float:
        """Move control ``(attribute, index)`` to ``value`` (its unit: :mod:`cddfm3d.ui.controls`) and recompute
        the edit. Shape, expression, albedo: PCA coefficient ``index`` becomes ``value * coeff_std``; pose: angle
        ``index`` (pitch, yaw, roll) becomes ``value`` degrees; light: the light parameter ``index`` (ambient,
        azimuth, elevation, strength) becomes ``value`` and the target gamma follows
        (:func:`~cddfm3d.ui.controls.light_target` of the base gamma, see :meth:`set_coefficient`). The source's
        own value and the current value (:meth:`value`) are always accepted (the source's gives the source
        exactly); another value outside the control's range is clamped to it with a ``warnings.warn`` naming the
        control, the value and the range.

        Returns the value used. Raises ``ValueError`` for an unknown attribute or index (listing the allowed ones)
        or a value that is not a finite number; ``RuntimeError`` before a source is loaded."""
        with self._lock:
            t0 = time.perf_counter()
            c = self.control(attribute, index)
            v = _finite(value, f"EditorModel.set: {c.label} ({attribute} {c.index})")
            self._need()
            source = self.source_value(attribute, c.index)
            if c.clamp(v) != v and v not in (source, self.value(attribute, c.index)):
                used = c.clamp(v)
                unit = f" {c.unit}" if c.unit else ""
                warnings.warn(f"EditorModel.set: {c.label} ({attribute} {c.index}) = {v:g} is outside its range "
                              f"[{c.minimum:g}, {c.maximum:g}]{unit}; using {used:g}", stacklevel=2)
                v = used
            if attribute == "light":
                light = list(self._light)
                light[c.index] = v
                self._light = tuple(light)
            elif v == source:
                self._values.pop((attribute, c.index), None)
                self._raw[attribute].pop(c.index, None)
            else:
                self._values[(attribute, c.index)] = v
                self._raw[attribute][c.index] = self._from_units(attribute, c.index, v)
            self._update([attribute], t0)
            return v

    def set_coefficient(self, attribute: str, k: int, value: float) -> float:
        """"Advanced": set any coefficient ``k`` (0 .. k_i - 1) of ``attribute``'s slice of the 257 to ``value`` in
        raw 3DMM units (shape, expression, albedo: basis units; pose: radians; light: SH coefficient), not clamped.
        A control of that coefficient then reads it back (:meth:`value`). For the light, the current target gamma
        with coefficient ``k`` replaced becomes the base of the light controls, and the four controls' values are
        re-derived from it (:func:`~cddfm3d.ui.controls.light_params`): the sliders show the light that is
        rendered, and moving one of them changes the directional part of that gamma (:func:`light_target`); the
        light's reset goes back to the source gamma. Returns the value.
        Raises ``ValueError`` for an unknown attribute, an index out of range or a non-finite value;
        ``RuntimeError`` before a source is loaded."""
        with self._lock:
            t0 = time.perf_counter()
            self._check_attribute(attribute, "set_coefficient")
            sl = ATTRIBUTE_SLICES[attribute]
            width = sl.stop - sl.start
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < width:
                raise ValueError(f"EditorModel.set_coefficient: {attribute} coefficient index must be in "
                                 f"[0, {width - 1}], found {k!r}")
            v = _finite(value, f"EditorModel.set_coefficient: {attribute}[{k}]")
            src = self._need()
            k = int(k)
            self._values.pop((attribute, k), None)
            if attribute == "light":
                base = self._goal("light")[0].detach().to("cpu", torch.float64)
                base[k] = float(torch.tensor(v, dtype=src.P.dtype))       # as the target stores it
                self._light_base = base
                self._light_base_params = self._light = light_params(base)
            elif torch.tensor(v, dtype=src.P.dtype) == src.P[0, sl.start + k]:
                self._raw[attribute].pop(k, None)
            else:
                self._raw[attribute][k] = v
            self._update([attribute], t0)
            return v

    def reset(self, attribute: str | None = None) -> None:
        """Back to the source: every control (``attribute=None``; the styles become the source styles and the
        image the source image, bit for bit) or those of one attribute. Raises ``ValueError`` for an unknown
        attribute, ``RuntimeError`` before a source is loaded."""
        with self._lock:
            t0 = time.perf_counter()
            if attribute is not None:
                self._check_attribute(attribute, "reset")
            self._need()
            if attribute is None:
                self._clear_all()
                self._record(t0)
                return
            for key in [key for key in self._values if key[0] == attribute]:
                del self._values[key]
            self._raw[attribute] = {}
            if attribute == "light":
                self._reset_light()
            self._update([attribute], t0)

    # ------------------------------------------------------------------------------------------ recompute
    def _goal(self, attribute: str) -> torch.Tensor:
        """P_t of ``attribute`` [1, k_i] (P's dtype): the source's with the raw targets, or for the light the
        controls' gamma on the base (exactly the base when the controls are on the base's parameters)."""
        src = self._src
        if attribute == "light":
            return light_target(self._light_base, self._light_base_params, self._light).to(src.P)[None]
        goal = src.P[:, ATTRIBUTE_SLICES[attribute]].clone()
        for k, v in self._raw[attribute].items():
            goal[0, k] = v
        return goal

    @torch.no_grad()
    def _update(self, changed: Sequence[str], t0: float) -> None:
        src = self._src
        goals = {a: self._goal(a) for a in changed}
        deltas = self.editor.deltas(src.styles, {a: {"target": g} for a, g in goals.items()}, P_s=src.P)
        first = None
        for a in changed:
            if not torch.equal(goals[a], self._goals[a]):
                self._goals[a] = goals[a]
                self._rows = None
            delta = deltas[a] if bool((deltas[a] != 0).any()) else None     # exactly 0: not through F^i
            old = self._deltas[a]
            if (old is None) != (delta is None) or (delta is not None and not torch.equal(old, delta)):
                self._deltas[a] = delta
                i = self._order.index(a)
                first = i if first is None else min(first, i)
        if first is not None:
            s = src.styles if first == 0 else self._chain[first - 1]
            for i in range(first, len(self._order)):
                a = self._order[i]
                if self._deltas[a] is not None:
                    s = self.editor.step(s, a, self._deltas[a])
                self._chain[i] = s
            self._styles = s
            self._image = src.image if s is src.styles else src.decoder.synthesize(s, noise=src.noise)
        self._record(t0)

    def _record(self, t0: float) -> None:
        self._latencies.append((time.perf_counter() - t0) * 1e3)

    @property
    def latencies_ms(self) -> list[float]:
        """Milliseconds of the last :data:`LATENCY_HISTORY` (1000) set / set_coefficient / reset calls, oldest
        first (a new list; older ones are dropped, so a long session does not grow it)."""
        with self._lock:
            return list(self._latencies)

    @property
    def last_latency_ms(self) -> float:
        """Milliseconds of the last set / set_coefficient / reset (validation, styles and image; the render and
        landmarks are lazy and not included); NaN before the first."""
        with self._lock:
            return self._latencies[-1] if self._latencies else float("nan")

    # ------------------------------------------------------------------------------------------ outputs
    @property
    def edits(self) -> dict[str, dict[str, torch.Tensor]]:
        """The current edit as :meth:`FaceEditor.edit` takes it: {attribute: {"target": P_t^i [k_i]}} for each
        attribute whose target differs from P_s (in ATTRIBUTES order)."""
        with self._lock:
            self._need()
            return {a: {"target": self._goals[a][0].clone()} for a in self._order if self._deltas[a] is not None}

    @property
    def styles(self) -> torch.Tensor:
        """The edited styles [1, D] (G's dtype and device; equal to the source styles when nothing is edited). A
        copy: changing it does not change the model."""
        with self._lock:
            self._need()
            return self._styles.clone()

    @property
    def source_styles(self) -> torch.Tensor:
        """The source styles [1, D] (G's dtype and device). A copy: changing it does not change the model."""
        with self._lock:
            return self._need().styles.clone()

    @property
    def noise_seed(self) -> int | None:
        """The source's noise seed; ``None`` for an image or photo source (:meth:`load_image`,
        :meth:`load_photo`), decoded with its embedding's noise maps."""
        with self._lock:
            return self._need().noise_seed

    @property
    def domain(self) -> str:
        """The domain of the source: ``"human"`` for :meth:`load_sample`, :meth:`load_styles` and human images,
        else the domain given to :meth:`load_image`; its generator (:meth:`generator`) decodes every edit."""
        with self._lock:
            return self._need().domain

    @property
    def input_image(self) -> np.ndarray | None:
        """For an image source (:meth:`load_image`): the image as given, cropped and resized to the generator's
        resolution, uint8 [R, R, 3] (a new array); for a photo source (:meth:`load_photo`) the face's Deep3D crop
        reduced to that size; ``None`` for a generated face or stored styles."""
        with self._lock:
            x = self._need().input_image
            return None if x is None else _hwc(x)

    @property
    def projection_psnr(self) -> float | None:
        """For an image or photo source: the PSNR in dB of the projection's (or PIE embedding's) image against
        :attr:`input_image`'s float values (``10 log10(2**2 / MSE)`` on [-1, 1],
        :class:`~cddfm3d.adapt.projection.ProjectionResult`); ``None`` otherwise."""
        with self._lock:
            return self._need().psnr

    @property
    def photo_fit(self):
        """For a photo source (:meth:`load_photo`): the photo's 3D reading, a :class:`cddfm3d.photo.PhotoFit`
        (``coeffs`` [1, 257] of the editor's morphable model, ``fit`` with its render at :data:`PHOTO_SIZE` px,
        ``aligned`` the 128-px Deep3D crop and its dlib landmarks, ``lm_px_before`` / ``lm_px_after`` the mean
        landmark error in crop pixels); ``None`` for any other source."""
        with self._lock:
            photo = self._need().photo
            return None if photo is None else photo.fit

    @property
    def photo_identity_distance(self) -> float | None:
        """For a photo source: dlib's identity descriptor distance (:func:`cddfm3d.photo.descriptor_distance`;
        below 0.6, :data:`cddfm3d.photo.SAME_PERSON_THRESHOLD`, dlib calls two faces one person) between
        :attr:`input_image` (the aligned crop at the generator's resolution) and the embedding's image
        (:attr:`source_image`). Both descriptors use the same 68 landmarks, the 3DMM fit's, scaled from the
        128-px crop to R px (a 64-px image is too small for dlib's detector), so the distance measures the
        embedding and not the landmarks. ``None`` for any other source.

        Scale, on scikit-image's astronaut.png (one CPU thread): the 64-px crop against the 128-px crop 0.20 (what
        the resolution alone costs), the mini world's generated faces of seeds 0-9 against the crop 0.71 to 0.83
        (mean 0.78), the PIE embedding (300 steps, the default) 0.60, the W+ projection (300 steps) 0.52."""
        with self._lock:
            photo = self._need().photo
            return None if photo is None else photo.identity_distance

    @property
    def photo_render(self) -> np.ndarray | None:
        """For a photo source: the render of :attr:`photo_fit`'s coefficients (black background), area-reduced to
        the generator's resolution, uint8 [R, R, 3] (a new array); ``None`` for any other source."""
        with self._lock:
            photo = self._need().photo
            return None if photo is None else _hwc(photo.render)

    @property
    def image(self) -> np.ndarray:
        """The edited image, uint8 [H, W, 3] (a new array). Raises ``RuntimeError`` before a source is loaded."""
        with self._lock:
            self._need()
            return _hwc(self._image)

    @property
    def source_image(self) -> np.ndarray:
        """The source image, uint8 [H, W, 3] (a new array): the generated face, or for an image source the
        projection's image (its domain generator's decode of the projected styles with the projection's noise).
        Raises ``RuntimeError`` before a source is loaded."""
        with self._lock:
            return _hwc(self._need().image)

    @property
    def coeffs(self) -> np.ndarray:
        """The current target coefficients P_t, float32 [257] (Deep3D's layout): P_s = T(s) with every edited
        attribute's targets; translation is always the source's."""
        with self._lock:
            return self._coeffs()[0].cpu().numpy().copy()

    @property
    def source_coeffs(self) -> np.ndarray:
        """P_s = T(s), float32 [257]."""
        with self._lock:
            return self._need().P[0].cpu().numpy().copy()

    def _coeffs(self) -> torch.Tensor:
        P = self._need().P.clone()
        for a in self._order:
            P[:, ATTRIBUTE_SLICES[a]] = self._goals[a]
        return P

    @torch.no_grad()
    def _reconstruction(self) -> dict:
        if self._rows is None:
            from ..face3d.viz import reconstruction_rows

            fm = self._face_model()
            coeffs = self._coeffs().to(fm.mean_shape.device, fm.mean_shape.dtype)
            rows = reconstruction_rows(from_uint8(self._image).to(coeffs.device), coeffs, fm)
            self._rows = {"render": _hwc(to_uint8(rows["render"])),
                          "landmarks": rows["landmarks"][0].float().cpu().numpy()}
        return self._rows

    @property
    def render(self) -> np.ndarray:
        """The 3DMM render of :attr:`coeffs` at the image's size, uint8 [H, W, 3] (black background;
        :func:`cddfm3d.face3d.viz.reconstruction_rows`), computed when first asked for after a change."""
        with self._lock:
            self._need()
            return self._reconstruction()["render"].copy()

    @property
    def landmarks(self) -> np.ndarray:
        """The 68 landmarks of :attr:`coeffs`, float32 [68, 2]: pixels of the H x W image (x right, y down, pixel
        centres at integers), computed with :attr:`render`."""
        with self._lock:
            self._need()
            return self._reconstruction()["landmarks"].copy()

    def panel(self, show_landmarks: bool = False, show_render: bool = True, show_source: bool = True,
              scale: int = 4, show_input: bool = True, show_fit: bool = True) -> np.ndarray:
        """What the view shows, uint8 [H * scale, n * W * scale, 3]: [input | [fit |]] source | edit | render side
        by side (n = 1 to 5 tiles, each upscaled ``scale`` times by pixel repetition), with the 68 landmarks drawn
        as 3 x 3 green dots on the edit when ``show_landmarks`` (:func:`cddfm3d.face3d.viz.landmark_panel`; nothing
        else changes). The input tile (:attr:`input_image`) comes first for an image or photo source when
        ``show_input``; the source is then the projection (or PIE embedding). For a photo source the photo's 3DMM
        fit (:attr:`photo_render`) follows the input when ``show_fit``: the photo's 3D reading next to the
        embedding and, in the last tile, the render of T's reading of the (edited) embedding. Raises
        ``ValueError`` for a scale that is not an int in [1, 16] (:func:`check_scale`), ``RuntimeError`` before a
        source is loaded."""
        scale = check_scale(scale, "EditorModel.panel")
        with self._lock:
            src = self._need()
            tiles = []
            if show_input and src.input_image is not None:
                tiles.append(_upscale(_hwc(src.input_image), scale))
                if show_fit and src.photo is not None:
                    tiles.append(_upscale(_hwc(src.photo.render), scale))
            if show_source:
                tiles.append(_upscale(_hwc(src.image), scale))
            if show_landmarks:
                from ..face3d.viz import landmark_panel

                lm = torch.from_numpy(self._reconstruction()["landmarks"])[None]
                tiles.append(_hwc(to_uint8(landmark_panel(from_uint8(self._image.cpu()), lm, zoom=scale))))
            else:
                tiles.append(_upscale(_hwc(self._image), scale))
            if show_render:
                tiles.append(_upscale(self._reconstruction()["render"], scale))
            return np.concatenate(tiles, axis=1)

    # ------------------------------------------------------------------------------------------ clip
    @torch.no_grad()
    def clip_frames(self, frames: int = 24) -> np.ndarray:
        """The frames of the path from the source to the current edit, uint8 [frames, H, W, 3]: frame j scales
        every active attribute's delta by t = j / (frames - 1) (:meth:`FaceEditor.apply`, same noise), so frame 0
        is the source image and the last frame the current image, exactly. Raises ``ValueError`` for ``frames``
        that is not an int >= 2, ``RuntimeError`` before a source is loaded."""
        frames = _check_frames(frames, "EditorModel.clip_frames")
        with self._lock:
            src = self._need()
            active = {a: d for a, d in self._deltas.items() if d is not None}
            out = [src.image]
            for j in range(1, frames - 1):
                t = j / (frames - 1)
                s = src.decoder.apply(src.styles, {a: d * t for a, d in active.items()})
                out.append(src.decoder.synthesize(s, noise=src.noise))
            out.append(self._image)
            return np.stack([_hwc(x) for x in out])

    def save_clip(self, path, frames: int = 24, fps: float = 12, scale: int = 1) -> Path:
        """Write :meth:`clip_frames` as a GIF (``.gif``, looping, Pillow) or an MP4 (``.mp4``, H.264 through
        imageio-ffmpeg) with imageio's v3 API; frames upscaled ``scale`` times (pixel repetition). MP4 frames are
        further resized (nearest) up to a multiple of 16 pixels (H.264's macro blocks) when they are not one, so
        imageio does not resize them itself. A GIF stores at most 256 colours per frame and Pillow merges
        consecutive identical frames (their durations add up), so an edit that leaves frames unchanged plays as
        long but holds fewer frames. The file is written to a temporary sibling and renamed onto ``path``
        (:func:`cddfm3d.serialization.atomic_write`): a failed write leaves no partial file. Returns the path.

        Raises, before any frame is rendered: ``ValueError`` for another suffix, ``frames`` that is not an int
        >= 2, an ``fps`` that is not a positive finite number or a bad ``scale`` (:func:`check_scale`);
        ``FileNotFoundError`` when the folder does not exist, ``IsADirectoryError`` when ``path`` is a folder
        (both naming the path); ``RuntimeError`` before a source is loaded. Then the OS's or the encoder's error
        for a write that fails."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in CLIP_SUFFIXES:
            raise ValueError(f"EditorModel.save_clip: {path.name!r} must end in one of {list(CLIP_SUFFIXES)}")
        frames = _check_frames(frames, "EditorModel.save_clip")
        fps = _finite(fps, "EditorModel.save_clip: fps")
        if fps <= 0:
            raise ValueError(f"EditorModel.save_clip: fps must be > 0, found {fps:g}")
        scale = check_scale(scale, "EditorModel.save_clip")
        folder = path.parent
        if not folder.is_dir():
            raise FileNotFoundError(f"EditorModel.save_clip: cannot write {str(path)!r}: the folder "
                                    f"{str(folder)!r} does not exist")
        if path.is_dir():
            raise IsADirectoryError(f"EditorModel.save_clip: cannot write {str(path)!r}: it is a folder")
        with self._lock:
            self._need()
        import imageio.v3 as iio

        clip = np.stack([_upscale(f, scale) for f in self.clip_frames(frames)])
        if suffix == ".gif":
            def write(tmp: Path) -> None:
                iio.imwrite(tmp, clip, extension=".gif", plugin="pillow", duration=1000.0 / fps, loop=0)
        else:
            def write(tmp: Path) -> None:
                iio.imwrite(tmp, _block_multiple(clip, MP4_BLOCK), extension=".mp4", plugin="FFMPEG", fps=fps,
                            codec="libx264", macro_block_size=MP4_BLOCK,
                            output_params=["-f", "mp4"])      # the temporary name does not end in .mp4
        return atomic_write(path, write)


def check_scale(scale, who: str = "scale") -> int:
    """``scale`` (the nearest-neighbour upscaling of the panel and of clip frames) as an int in [1,
    :data:`MAX_SCALE`] (16: a 64 px tile becomes at most 1024 px). The one check shared by
    :meth:`EditorModel.panel`, :meth:`EditorModel.save_clip` and the view. Raises ``ValueError`` naming ``who``
    for anything else (bools, floats, strings, out of range)."""
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, np.integer)) or not 1 <= scale <= MAX_SCALE:
        raise ValueError(f"{who}: scale must be an int in [1, {MAX_SCALE}], found {scale!r}")
    return int(scale)


def _check_frames(frames, who: str) -> int:
    """``frames`` as an int >= 2; ``ValueError`` naming ``who`` otherwise."""
    if isinstance(frames, (bool, np.bool_)) or not isinstance(frames, (int, np.integer)) or frames < 2:
        raise ValueError(f"{who}: frames must be an int >= 2, found {frames!r}")
    return int(frames)


@dataclass(slots=True)
class _Source:
    """What a source fixes: styles [1, D], the noise maps (of ``noise_seed``, or given: a projection's, with
    ``noise_seed`` None), P = T(s) [1, 257], image uint8 [1, 3, H, W], the light's four control values, the domain
    and the FaceEditor whose generator decodes it; for an image source the input (uint8 [1, 3, R, R]) and the
    projection's PSNR in dB."""

    styles: torch.Tensor
    noise_seed: int | None
    noise: list
    P: torch.Tensor
    image: torch.Tensor
    light: tuple | None
    domain: str
    decoder: FaceEditor
    input_image: torch.Tensor | None = None
    psnr: float | None = None
    photo: _Photo | None = None


@dataclass(slots=True)
class _Photo:
    """What :meth:`EditorModel.load_photo` adds to a source: the photo's 3DMM fit, its render at the generator's
    resolution (uint8 [1, 3, R, R]) and dlib's identity distance between the crop and the embedding."""

    fit: object              # cddfm3d.photo.PhotoFit
    render: torch.Tensor
    identity_distance: float


def _check_steps(steps, default: int, who: str, minimum: int = 1) -> int:
    """``steps`` as an int >= ``minimum``, ``default`` for None; ``ValueError`` naming ``who`` otherwise."""
    if steps is None:
        return int(default)
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)) or steps < minimum:
        raise ValueError(f"{who}: steps must be an int >= {minimum} or None (the default), found {steps!r}")
    return int(steps)


def _check_fit_steps(steps, default: int, who: str):
    """The 3DMM fit's steps: an int >= 1 or a pair of ints >= 0 with a sum >= 1 (:func:`cddfm3d.face3d.fit`),
    ``default`` for None; ``ValueError`` naming ``who`` otherwise."""
    if steps is None:
        return int(default)

    def whole(v) -> bool:
        return not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, np.integer))

    if whole(steps) and steps >= 1:
        return int(steps)
    if isinstance(steps, (tuple, list)) and len(steps) == 2 and all(whole(v) and v >= 0 for v in steps) \
            and sum(steps) >= 1:
        return (int(steps[0]), int(steps[1]))
    raise ValueError(f"{who}: fit_steps must be an int >= 1, a pair (pose_steps, all_steps) of ints >= 0 with a sum "
                     f">= 1, or None (the default), found {steps!r}")


def _check_progress(progress, who: str) -> None:
    if not (isinstance(progress, bool) or callable(progress)):
        raise ValueError(f"{who}: progress must be True, False or a callable progress(step, steps), found "
                         f"{type(progress).__name__}")


def _check_pie_options(options, embed: str, who: str) -> dict:
    """``pie_options`` as a dict of :func:`cddfm3d.adapt.pie_embed` keyword arguments ({} for None)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ValueError(f"{who}: pie_options must be a mapping of pie_embed keyword arguments, found "
                         f"{type(options).__name__}")
    if options and embed != "pie":
        raise ValueError(f"{who}: pie_options are pie_embed's, given with embed={embed!r}")
    taken = sorted(set(options) & set(RESERVED_PIE_OPTIONS))
    if taken:
        raise ValueError(f"{who}: pie_options may not set {taken}: load_photo sets {list(RESERVED_PIE_OPTIONS)}")
    import inspect

    from ..adapt.pie import pie_embed

    known = set(inspect.signature(pie_embed).parameters) - set(RESERVED_PIE_OPTIONS)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"{who}: pie_options {unknown} are not pie_embed arguments; it takes {sorted(known)}")
    return dict(options)


def _seed(value, what: str) -> int:
    """``value`` as an int in :data:`SEED_RANGE`; ``ValueError`` naming ``what`` otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be an int, found {value!r}")
    if not SEED_RANGE[0] <= int(value) <= SEED_RANGE[1]:
        raise ValueError(f"{what} must be in [0, 2**63 - 1], found {int(value)}")
    return int(value)


def _finite(value, what: str) -> float:
    """``value`` as a float; ``ValueError`` naming ``what`` for a non-number, NaN or inf."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        if not (isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 0 and value.dtype not in
                (np.bool_, torch.bool)):
            raise ValueError(f"{what} must be a finite number, found {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, found {v}")
    return v


def _hwc(image: torch.Tensor) -> np.ndarray:
    """uint8 [1, 3, H, W] (or [3, H, W]) tensor -> a new numpy array [H, W, 3]."""
    x = image[0] if image.ndim == 4 else image
    return np.ascontiguousarray(x.permute(1, 2, 0).cpu().numpy())


def _upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """[H, W, C] -> [H * scale, W * scale, C] by pixel repetition."""
    return image if scale == 1 else image.repeat(scale, 0).repeat(scale, 1)


def _block_multiple(clip: np.ndarray, block: int) -> np.ndarray:
    """Frames [N, H, W, C] resized (nearest) up to the next multiple of ``block`` in H and W (unchanged when they
    are multiples already)."""
    h, w = clip.shape[1:3]
    H, W = -(-h // block) * block, -(-w // block) * block
    if (H, W) == (h, w):
        return clip
    rows, cols = (np.arange(H) * h) // H, (np.arange(W) * w) // W
    return clip[:, rows][:, :, cols]


__all__ = ["EditorModel", "EMBEDDINGS", "FAST_FIT_STEPS", "FAST_PIE_STEPS", "FAST_PROJECTION_STEPS", "LATENCY_HISTORY",
           "MAX_SCALE", "PHOTO_SIZE", "WORLDS", "check_scale"]
