"""Small, deterministic data sets for examples, tests and the shipped models.

Nothing is downloaded: the digits come from the copy bundled with scikit-learn and
the shapes are generated from a seed.

Digits
    :func:`load_digits` returns scikit-learn's 1797 handwritten digits (8x8, values
    0..16) drawn MNIST-style: upsampled with Pillow's bicubic filter to 20x20, centred in a
    28x28 image, scaled to [-1, 1] with background -1, optionally padded with background. A fixed stratified
    75/25 split (:data:`DIGITS_TEST_FRACTION`, ``seed=0``) defines "train" and "test"
    for every script, test and model card in this project.

Shapes
    :func:`make_shapes` draws RGB images in [0, 1], each holding exactly one
    class-defining shape (:data:`SHAPES_CLASSES`) among clutter (thin line segments,
    small irregular blobs, pixel noise), together with the ground-truth mask of the
    shape. Sample ``i`` depends only on ``(seed, i)``, so a longer data set with the
    same seed starts with the shorter one. :data:`SHAPES_TRAIN_SEED` and
    :data:`SHAPES_TEST_SEED` name the training and held-out data of the shipped model.

Tokens
    :func:`make_tokens` generates integer token sequences for text classification, with the
    ground truth of which tokens decide the label. The vocabulary :data:`TOKENS_VOCAB` holds
    the padding token ``"<pad>"`` (id 0, :data:`TOKENS_PAD`), three keywords per class of
    :data:`TOKENS_CLASSES` (``"goal"``, ``"match"``, ``"team"`` for sports, ...), two negators
    (``"not"``, ``"never"``) and 20 filler words (``"the"``, ``"was"``, ...). A sequence of
    8..``length`` tokens (right-padded with 0 to ``length``) holds 1-2 *live* keywords of its
    class, 0-2 keywords of other classes each negated by the token right before it
    (``"not pizza"``), 0-1 negators before a filler word, and filler; the label is the class
    of the live keywords. A model has to find the live keywords at their random positions
    and tell them from the negated ones (bag-of-words counts do not decide it). ``masks``
    marks the live keywords. Sample ``i`` depends only on ``(seed, i)``;
    :data:`TOKENS_TRAIN_SEED` and :data:`TOKENS_TEST_SEED` name the training and held-out
    data of the shipped text models.
"""

from __future__ import annotations

import functools

import numpy as np

from tf_lrp.errors import InputError

__all__ = [
    "DIGITS_TEST_FRACTION",
    "LENET_PAD",
    "SCENES_CLASSES",
    "SCENES_DISTRACTORS",
    "SCENES_TEST_SEED",
    "SCENES_TRAIN_SEED",
    "SHAPES_CLASSES",
    "SHAPES_TEST_SEED",
    "SHAPES_TRAIN_SEED",
    "TOKENS_CLASSES",
    "TOKENS_FILLER",
    "TOKENS_KEYWORDS",
    "TOKENS_LENGTH",
    "TOKENS_NEGATORS",
    "TOKENS_PAD",
    "TOKENS_TEST_SEED",
    "TOKENS_TRAIN_SEED",
    "TOKENS_VOCAB",
    "digits_split_indices",
    "load_digits",
    "make_scenes",
    "make_shapes",
    "make_tokens",
]

#: Fraction of the digits held out as the "test" split.
DIGITS_TEST_FRACTION = 0.25
#: Background pixels added on each side of 28x28 digits to make the 32x32 LeNet input.
LENET_PAD = 2
#: Fraction of the image side the digit fills (MNIST: a 20x20 digit in a 28x28 image).
DIGIT_FRACTION = 20 / 28
#: Class names of :func:`make_shapes`; the label is the index into this tuple.
SHAPES_CLASSES = ("circle", "square", "triangle", "cross")
#: Seed of the shapes the shipped ``shapes_resnet.keras`` was trained on.
SHAPES_TRAIN_SEED = 0
#: Seed of the held-out shapes its accuracy is reported on.
SHAPES_TEST_SEED = 1

#: Class names of :func:`make_tokens`; the label is the index into this tuple.
TOKENS_CLASSES = ("sports", "music", "food", "travel")
#: The keywords of each class of :data:`TOKENS_CLASSES`, in the same order.
TOKENS_KEYWORDS = (
    ("goal", "match", "team"),
    ("song", "guitar", "melody"),
    ("pizza", "bread", "soup"),
    ("train", "flight", "hotel"),
)
#: Tokens that negate the keyword right after them.
TOKENS_NEGATORS = ("not", "never")
#: Words that never decide the label.
TOKENS_FILLER = (
    "the", "a", "and", "of", "it", "was", "is", "very", "today", "we",
    "they", "some", "really", "then", "with", "about", "this", "that", "again", "quite",
)
#: The padding token's id (the ``"<pad>"`` entry of :data:`TOKENS_VOCAB`).
TOKENS_PAD = 0
#: Token strings by id: ``"<pad>"``, the keywords class by class, the negators, the filler.
TOKENS_VOCAB = (
    ("<pad>",) + tuple(w for words in TOKENS_KEYWORDS for w in words)
    + TOKENS_NEGATORS + TOKENS_FILLER
)
#: Sequence length of :func:`make_tokens` (and of the shipped text models' input).
TOKENS_LENGTH = 32
#: Seed of the token sequences the shipped text models were trained on.
TOKENS_TRAIN_SEED = 0
#: Seed of the held-out token sequences their accuracy is reported on.
TOKENS_TEST_SEED = 1

_SPLITS = ("train", "test", "all")
_N_DIGITS = 1797


# --------------------------------------------------------------------------- digits


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


@functools.lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = bunch.images.astype(np.float32)
    images.setflags(write=False)
    labels = bunch.target.astype(np.int64)
    labels.setflags(write=False)
    return images, labels


@functools.lru_cache(maxsize=4)
def _upsampled_digits(size: int) -> np.ndarray:
    """All digits drawn MNIST-style in ``size`` x ``size`` images in [-1, 1] (read-only, cached).

    As in MNIST, the digit is size-normalised to the central ``DIGIT_FRACTION`` of the image
    (20 of 28 pixels) and centred, so it has a background margin around it.
    """
    from PIL import Image

    images, _ = _raw_digits()
    inner = max(1, round(size * DIGIT_FRACTION))
    lo = (size - inner) // 2
    out = np.zeros((len(images), size, size), dtype=np.float32)
    for i, image in enumerate(images):
        resized = Image.fromarray(image, mode="F").resize((inner, inner), Image.Resampling.BICUBIC)
        out[i, lo:lo + inner, lo:lo + inner] = np.asarray(resized, dtype=np.float32)
    # Bicubic interpolation overshoots a little: clip back to the source range 0..16.
    np.clip(out, 0.0, 16.0, out=out)
    out = out / 8.0 - 1.0
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=4)
def _split(seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    _, labels = _raw_digits()
    train, test = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_TEST_FRACTION,
        stratify=labels,
        random_state=seed,
    )
    train, test = np.sort(train), np.sort(test)
    train.setflags(write=False)
    test.setflags(write=False)
    return train, test


def digits_split_indices(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the train and test digits into scikit-learn's 1797 samples.

    Parameters
    ----------
    seed : int, default 0
        Seed of the stratified 75/25 split. ``0`` is the project's split: the shipped
        models were trained on its "train" part and evaluated on its "test" part.

    Returns
    -------
    train, test : numpy.ndarray
        Sorted, disjoint int64 index arrays (1347 and 450 entries), read-only.
    """
    seed = _check_int("seed", seed, 0)
    return _split(seed)


def load_digits(
    size: int = 28, split: str = "test", seed: int = 0, pad: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Handwritten digits from scikit-learn, upsampled, in [-1, 1].

    Drawn the way MNIST is: each 8x8 image (ink 0..16) is resized with Pillow's bicubic
    filter to the central 20/28 of a ``size`` x ``size`` image (20x20 in 28x28) and centred,
    clipped to 0..16 (bicubic overshoots) and mapped linearly to [-1, 1] (background -1,
    full ink +1). ``pad`` pixels of background are then added on each side. The tutorial's
    inputs are ``load_digits()`` (28x28, MLP) and ``load_digits(pad=LENET_PAD)`` (the 28x28
    images in a 32x32 frame, LeNet-5).

    The margin matters for explanations: without it the digit fills the frame and there is
    no background whose relevance can be told apart from the strokes'.

    Parameters
    ----------
    size : int, default 28
        Side of the MNIST-style image (the digit fills its central 20/28), >= 8.
    split : {"test", "train", "all"}, default "test"
        Which part of the fixed stratified 75/25 split to return ("all": all 1797
        digits in scikit-learn's order).
    seed : int, default 0
        Seed of the split; keep 0 to match the shipped models.
    pad : int, default 0
        Background pixels (-1) added on each side; the images are
        ``size + 2 * pad`` pixels square.

    Returns
    -------
    x : numpy.ndarray
        float32, shape ``(n, size + 2 * pad, size + 2 * pad, 1)``, values in [-1, 1].
    y : numpy.ndarray
        int64 labels 0..9, shape ``(n,)``.

    Raises
    ------
    InputError
        If ``split`` is unknown or ``size``, ``pad`` or ``seed`` is out of range.

    Examples
    --------
    >>> x, y = load_digits(split="test")
    >>> x.shape, y.shape
    ((450, 28, 28, 1), (450,))
    >>> load_digits(pad=LENET_PAD)[0].shape
    (450, 32, 32, 1)
    """
    size = _check_int("size", size, 8)
    pad = _check_int("pad", pad, 0)
    seed = _check_int("seed", seed, 0)
    if split not in _SPLITS:
        raise InputError(f"split must be one of {_SPLITS}, got {split!r}.")
    images = _upsampled_digits(size)
    _, labels = _raw_digits()
    if split == "all":
        index = np.arange(len(labels))
    else:
        train, test = _split(seed)
        index = train if split == "train" else test
    x = images[index]
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), constant_values=-1.0)
    return np.ascontiguousarray(x[..., None], dtype=np.float32), labels[index].copy()


# --------------------------------------------------------------------------- shapes

# Half-extent of each class shape relative to its scale r (keeps it inside the image).
_EXTENT = {"circle": 1.0, "square": 1.07, "triangle": 1.2, "cross": 1.05}
_MIN_CONTRAST = 0.45  # minimum RGB distance of drawn objects from the background
_NOISE_STD = 0.04


def _shape_mask(name: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Pixels inside shape ``name`` of scale ``r``; ``u, v`` are rotated centred coordinates."""
    if name == "circle":
        return u**2 + v**2 <= r**2
    if name == "square":
        half = 0.75 * r
        return np.maximum(np.abs(u), np.abs(v)) <= half
    if name == "triangle":
        # Equilateral triangle with circumradius 1.2 r: inside all three edge half-planes
        # (inradius = circumradius / 2), the edge normals 120 degrees apart.
        inradius = 0.6 * r
        inside = np.ones(u.shape, dtype=bool)
        for angle in (-0.5 * np.pi, np.pi / 6, 5 * np.pi / 6):
            inside &= u * np.cos(angle) + v * np.sin(angle) <= inradius
        return inside
    if name == "cross":
        arm = 0.28 * r
        au, av = np.abs(u), np.abs(v)
        return ((au <= arm) & (av <= r)) | ((av <= arm) & (au <= r))
    raise AssertionError(name)


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    for _ in range(100):
        colour = rng.uniform(0.0, 1.0, 3)
        if np.linalg.norm(colour - background) >= _MIN_CONTRAST:
            return colour
    return 1.0 - np.round(background)  # unreachable in practice; still deterministic


def _draw_clutter(image: np.ndarray, rng: np.random.Generator, yy, xx, background) -> None:
    size = image.shape[0]
    for _ in range(rng.integers(2, 5)):  # thin line segments
        length = rng.uniform(0.2, 0.45) * size
        angle = rng.uniform(0.0, np.pi)
        y0, x0 = rng.uniform(0.0, size, 2)
        dy, dx = np.sin(angle) * length, np.cos(angle) * length
        t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / length**2, 0.0, 1.0)
        near = (yy - y0 - t * dy) ** 2 + (xx - x0 - t * dx) ** 2 <= 0.5**2
        image[near] = _contrasting_colour(rng, background)
    for _ in range(rng.integers(1, 4)):  # irregular blobs: 2-3 small overlapping discs
        cy, cx = rng.uniform(0.0, size, 2)
        blob = np.zeros(yy.shape, dtype=bool)
        for _ in range(rng.integers(2, 4)):
            oy, ox = rng.uniform(-1.5, 1.5, 2)
            radius = rng.uniform(0.8, 1.6) * size / 32
            blob |= (yy - cy - oy) ** 2 + (xx - cx - ox) ** 2 <= radius**2
        image[blob] = _contrasting_colour(rng, background)


def _make_shape_image(
    seed: int, index: int, label: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, index])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    background = rng.uniform(0.0, 1.0, 3)
    image = np.broadcast_to(background, (size, size, 3)).copy()
    _draw_clutter(image, rng, yy, xx, background)

    name = SHAPES_CLASSES[label]
    r = rng.uniform(0.18, 0.3) * size
    margin = _EXTENT[name] * r + 1.0
    cy, cx = rng.uniform(margin, size - margin, 2)
    theta = rng.uniform(0.0, 2 * np.pi)
    cos, sin = np.cos(theta), np.sin(theta)
    u = (xx - cx) * cos + (yy - cy) * sin
    v = -(xx - cx) * sin + (yy - cy) * cos
    mask = _shape_mask(name, u, v, r)
    image[mask] = _contrasting_colour(rng, background)

    image += rng.normal(0.0, _NOISE_STD, image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32), mask


def _shape_labels(n: int, seed: int) -> np.ndarray:
    """Labels in shuffled blocks of one sample per class: every prefix is balanced."""
    k = len(SHAPES_CLASSES)
    blocks = [np.random.default_rng([seed, b, k]).permutation(k) for b in range(-(-n // k))]
    return np.concatenate(blocks)[:n].astype(np.int64) if blocks else np.zeros(0, np.int64)


def make_shapes(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic shapes among clutter, with ground-truth masks.

    Each RGB image has a random uniform background colour and holds exactly one
    class-defining shape (circle, square, equilateral triangle or plus-shaped cross;
    random position, scale 0.18-0.3 ``size``, rotation and colour) drawn on top of
    2-4 thin line segments and 1-3 small irregular blobs (random colours, never one of
    the class shapes), plus Gaussian pixel noise (std 0.04). Every object differs from
    the background by at least 0.45 in RGB distance.

    Parameters
    ----------
    n : int
        Number of images, >= 0.
    size : int, default 32
        Image side in pixels, >= 16.
    seed : int, default 0
        Sample ``i`` depends only on ``(seed, i)``: the same seed gives identical
        arrays, and ``make_shapes(m, seed=s)`` is a prefix of ``make_shapes(n, seed=s)``
        for ``m <= n``. Use :data:`SHAPES_TRAIN_SEED` / :data:`SHAPES_TEST_SEED` for
        the shipped model's training / held-out data.

    Returns
    -------
    x : numpy.ndarray
        float32, shape ``(n, size, size, 3)``, values in [0, 1].
    y : numpy.ndarray
        int64 labels, index into :data:`SHAPES_CLASSES`, shape ``(n,)``. Labels come
        in shuffled blocks of one sample per class, so class counts differ by at most 1.
    masks : numpy.ndarray
        bool, shape ``(n, size, size)``: the pixels of the class-defining shape
        (never empty; clutter lies underneath it, noise on top).

    Raises
    ------
    InputError
        If ``n``, ``size`` or ``seed`` is out of range.
    """
    n = _check_int("n", n, 0)
    size = _check_int("size", size, 16)
    seed = _check_int("seed", seed, 0)
    y = _shape_labels(n, seed)
    x = np.empty((n, size, size, 3), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=bool)
    for i, label in enumerate(y):
        x[i], masks[i] = _make_shape_image(seed, i, int(label), size)
    return x, y, masks


# --------------------------------------------------------------------------- scenes

#: Classes of :func:`make_scenes`: the one class-defining object of a scene.
SCENES_CLASSES = SHAPES_CLASSES
#: Distractor objects of :func:`make_scenes` (never decide the class).
SCENES_DISTRACTORS = ("ring", "bar", "ellipse", "half-disc")
#: Seed of the scenes the shipped deep models are trained on.
SCENES_TRAIN_SEED = 0
#: Seed of the held-out scenes (reports, figures, tests).
SCENES_TEST_SEED = 1
# Mixed into every random stream of make_scenes, so its samples are unrelated to the shapes'.
_SCENES_STREAM = 0x736365
_SCENES_OBJECT_SCALE = (0.09, 0.14)  # object scale r relative to the image side
_SCENES_TEXTURE = 0.14  # amplitude of each background grating, per channel


def _distractor_mask(name: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Pixels inside distractor ``name`` of scale ``r`` (``u, v``: rotated centred coordinates)."""
    if name == "ring":
        d2 = u**2 + v**2
        return (d2 <= r**2) & (d2 >= (0.6 * r) ** 2)
    if name == "bar":
        return (np.abs(u) <= 1.1 * r) & (np.abs(v) <= 0.3 * r)
    if name == "ellipse":
        return (u / (1.1 * r)) ** 2 + (v / (0.45 * r)) ** 2 <= 1.0
    if name == "half-disc":
        return (u**2 + v**2 <= r**2) & (v >= 0.0)
    raise AssertionError(name)


def _scene_background(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A random base colour with two oriented colour gratings and a linear colour gradient."""
    size = yy.shape[0]
    image = np.broadcast_to(rng.uniform(0.25, 0.75, 3), yy.shape + (3,)).copy()
    for _ in range(2):
        angle = rng.uniform(0.0, np.pi)
        period = rng.uniform(3.0, 12.0)
        phase = rng.uniform(0.0, 2 * np.pi)
        wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + phase)
        image += wave[..., None] * rng.uniform(-1.0, 1.0, 3) * _SCENES_TEXTURE
    angle = rng.uniform(0.0, 2 * np.pi)
    ramp = ((xx - size / 2) * np.cos(angle) + (yy - size / 2) * np.sin(angle)) / size
    image += ramp[..., None] * rng.uniform(-0.3, 0.3, 3)
    return image


def _make_scene(seed: int, index: int, label: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, index, _SCENES_STREAM])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    image = _scene_background(rng, yy, xx)
    names = [SHAPES_CLASSES[label]] + [
        SCENES_DISTRACTORS[int(i)] for i in rng.integers(0, len(SCENES_DISTRACTORS),
                                                         rng.integers(2, 5))
    ]
    placed: list[tuple[float, float, float]] = []  # (cy, cx, radius) of the objects drawn
    mask = np.zeros((size, size), dtype=bool)
    for k, name in enumerate(names):
        r = rng.uniform(*_SCENES_OBJECT_SCALE) * size
        extent = _EXTENT.get(name, 1.1) * r
        for _ in range(100):  # objects never overlap: rejection sampling of the centre
            cy, cx = rng.uniform(extent + 1.0, size - extent - 1.0, 2)
            if all(np.hypot(cy - py, cx - px) > extent + pr + 2.0 for py, px, pr in placed):
                break
        else:
            continue  # no room for this distractor (the class object always comes first)
        placed.append((cy, cx, extent))
        theta = rng.uniform(0.0, 2 * np.pi)
        cos, sin = np.cos(theta), np.sin(theta)
        u = (xx - cx) * cos + (yy - cy) * sin
        v = -(xx - cx) * sin + (yy - cy) * cos
        inside = _shape_mask(name, u, v, r) if k == 0 else _distractor_mask(name, u, v, r)
        local = image[inside].mean(axis=0)
        image[inside] = _contrasting_colour(rng, local)
        if k == 0:
            mask = inside
    image += rng.normal(0.0, _NOISE_STD, image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32), mask


def make_scenes(n: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Textured scenes with several objects, one of which decides the class; with its mask.

    The harder image task of the deep shipped models. Each RGB image has a textured
    background (a random base colour, two oriented colour gratings of period 3-12 pixels and
    a linear colour gradient) and holds one class-defining object (circle, square,
    equilateral triangle or plus-shaped cross, as in :func:`make_shapes`) and 2-4 distractor
    objects (:data:`SCENES_DISTRACTORS`: ring, bar, ellipse, half-disc; never a class shape).
    Objects have random position, scale 0.09-0.14 ``size``, rotation and colour (at least
    0.45 in RGB distance from the background under them) and never overlap; Gaussian pixel
    noise (std 0.04) lies on top. The class is that of the one class-shaped object, so a
    model has to find it among the distractors and the texture.

    Parameters
    ----------
    n : int
        Number of images, >= 0.
    size : int, default 64
        Image side in pixels, >= 32.
    seed : int, default 0
        Sample ``i`` depends only on ``(seed, i)`` (prefix property as :func:`make_shapes`).
        :data:`SCENES_TRAIN_SEED` / :data:`SCENES_TEST_SEED` name the shipped deep models'
        training / held-out data.

    Returns
    -------
    x : numpy.ndarray
        float32, shape ``(n, size, size, 3)``, values in [0, 1].
    y : numpy.ndarray
        int64 labels, index into :data:`SCENES_CLASSES`; classes balanced in blocks.
    masks : numpy.ndarray
        bool, shape ``(n, size, size)``: the pixels of the class-defining object (never
        empty, never touching a distractor).

    Raises
    ------
    InputError
        If ``n``, ``size`` or ``seed`` is out of range.
    """
    n = _check_int("n", n, 0)
    size = _check_int("size", size, 32)
    seed = _check_int("seed", seed, 0)
    y = _shape_labels(n, seed + _SCENES_STREAM)
    x = np.empty((n, size, size, 3), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=bool)
    for i, label in enumerate(y):
        x[i], masks[i] = _make_scene(seed, i, int(label), size)
    return x, y, masks


# --------------------------------------------------------------------------- tokens

# Mixed into every random stream of make_tokens, so its samples are unrelated to the shapes'.
_TOKENS_STREAM = 0x746F6B
_TOKENS_MIN_LENGTH = 8
_KEYWORD_IDS = tuple(
    tuple(TOKENS_VOCAB.index(w) for w in words) for words in TOKENS_KEYWORDS
)
_NEGATOR_IDS = tuple(TOKENS_VOCAB.index(w) for w in TOKENS_NEGATORS)
_FILLER_IDS = tuple(TOKENS_VOCAB.index(w) for w in TOKENS_FILLER)


def _token_labels(n: int, seed: int) -> np.ndarray:
    """Labels in shuffled blocks of one sample per class: every prefix is balanced."""
    k = len(TOKENS_CLASSES)
    blocks = [
        np.random.default_rng([seed, b, k, _TOKENS_STREAM]).permutation(k)
        for b in range(-(-n // k))
    ]
    return np.concatenate(blocks)[:n].astype(np.int64) if blocks else np.zeros(0, np.int64)


def _make_token_sequence(
    seed: int, index: int, label: int, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """One sequence (int32, ``length``) and its mask of live keywords."""
    rng = np.random.default_rng([seed, index, _TOKENS_STREAM])
    n_tokens = int(rng.integers(max(_TOKENS_MIN_LENGTH, length // 4), length + 1))
    # Units are kept whole when shuffled: (tokens, is-live-keyword flags).
    units: list[tuple[list[int], list[bool]]] = []
    for _ in range(rng.integers(1, 3)):  # live keywords of the label's class
        units.append(([int(rng.choice(_KEYWORD_IDS[label]))], [True]))
    others = [c for c in range(len(TOKENS_CLASSES)) if c != label]
    for _ in range(rng.integers(0, 3)):  # negated keywords of other classes
        word = rng.choice(_KEYWORD_IDS[int(rng.choice(others))])
        units.append(([int(rng.choice(_NEGATOR_IDS)), int(word)], [False, False]))
    for _ in range(rng.integers(0, 2)):  # a negator before a filler word
        units.append(([int(rng.choice(_NEGATOR_IDS)), int(rng.choice(_FILLER_IDS))],
                      [False, False]))
    used = sum(len(tokens) for tokens, _ in units)
    units += [([int(w)], [False]) for w in rng.choice(_FILLER_IDS, n_tokens - used)]
    tokens = np.zeros(length, dtype=np.int32)
    mask = np.zeros(length, dtype=bool)
    position = 0
    for unit in rng.permutation(len(units)):
        ids, live = units[unit]
        tokens[position:position + len(ids)] = ids
        mask[position:position + len(ids)] = live
        position += len(ids)
    return tokens, mask


def make_tokens(
    n: int, length: int = TOKENS_LENGTH, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic token sequences whose label is decided by planted keywords, with masks.

    Every sequence holds, at random positions and in random order:

    - 1 or 2 *live* keywords of its class (:data:`TOKENS_KEYWORDS`, e.g. ``"pizza"`` for
      food): they decide the label;
    - 0, 1 or 2 *negated* keywords of other classes, each right after a negator
      (``"not pizza"``, ``"never hotel"``): distractors that do not count;
    - 0 or 1 negator before a filler word (``"not the"``), so a negator alone says nothing;
    - filler words (:data:`TOKENS_FILLER`) up to its length, uniform in
      ``[max(8, length // 4), length]``;

    followed by padding (:data:`TOKENS_PAD`, 0) up to ``length``. A keyword is negated
    exactly when the token right before it is a negator; the label is the class of the
    keywords that are not. Counting keywords per class without their order is not enough
    (two negated "soup" outnumber one live "goal"), so a model has to find the live
    keywords and the negators in front of the others.

    Parameters
    ----------
    n : int
        Number of sequences, >= 0.
    length : int, default :data:`TOKENS_LENGTH` (32)
        Padded sequence length, >= 8.
    seed : int, default 0
        Sample ``i`` depends only on ``(seed, i)``: the same seed gives identical arrays,
        and ``make_tokens(m, seed=s)`` is a prefix of ``make_tokens(n, seed=s)`` for
        ``m <= n``. Use :data:`TOKENS_TRAIN_SEED` / :data:`TOKENS_TEST_SEED` for the shipped
        text models' training / held-out data.

    Returns
    -------
    x : numpy.ndarray
        int32 token ids (indices into :data:`TOKENS_VOCAB`), shape ``(n, length)``;
        non-zero tokens first, then zeros.
    y : numpy.ndarray
        int64 labels, index into :data:`TOKENS_CLASSES`, shape ``(n,)``. Labels come in
        shuffled blocks of one sample per class, so class counts differ by at most 1.
    masks : numpy.ndarray
        bool, shape ``(n, length)``: the live keywords (1 or 2 per sequence), the tokens
        that decide the label. Negated keywords are ``np.isin(x, keyword ids) & ~masks``.

    Raises
    ------
    InputError
        If ``n``, ``length`` or ``seed`` is out of range.

    Examples
    --------
    >>> x, y, masks = make_tokens(2, seed=TOKENS_TEST_SEED)
    >>> x.shape, x.dtype, masks.sum(axis=1) >= 1
    ((2, 32), dtype('int32'), array([ True,  True]))
    >>> " ".join(TOKENS_VOCAB[t] for t in x[0] if t)  # doctest: +SKIP
    """
    n = _check_int("n", n, 0)
    length = _check_int("length", length, _TOKENS_MIN_LENGTH)
    seed = _check_int("seed", seed, 0)
    y = _token_labels(n, seed)
    x = np.zeros((n, length), dtype=np.int32)
    masks = np.zeros((n, length), dtype=bool)
    for i, label in enumerate(y):
        x[i], masks[i] = _make_token_sequence(seed, i, int(label), length)
    return x, y, masks
