"""Drawing the synthetic demo images: STED-like F-actin, and blob-like cells.

What an image holds (20 nm pixels, as the published STED images):

* **dendrites**: 1 to 3 gently curved bands, 30 to 60 px wide (0.6 to 1.2 µm),
  filled with a faint, blotchy actin background and a few bright puncta.
  Label channel 2 is the dendrite mask (0/1), the foreground of the crop rule.
* **rings** (class 0): patches of stripes *across* the dendrite axis with the
  190 nm periodicity of the membrane-associated skeleton (9 to 10 px).
* **fibers** (class 1): bundles of 1 to 4 beaded lines *along* the axis.
* optics and detection: a Gaussian STED PSF (2.5 px FWHM), a dim background,
  Poisson photon noise and Gaussian read noise; float32 in [0, 1].

Design choices, for the lessons that follow:

* Rings and fibers are made of the *same* bright lines (same width, same
  brightness distribution); only their arrangement differs (periodic and
  across, or continuous and along). A threshold on raw intensity (Otsu) cannot
  tell them apart, a classifier that sees shapes can: ``tests/test_demo.py``
  checks the first half of that claim.
* The pixel truth is the structure itself at the resolution of the microscope:
  a ring patch is the area of the lattice (first to last ring, across the
  stripes' length), a fiber is its line widened to the PSF (6 px). Per-stripe
  truth would reward resolving 190 nm, which no Grad-CAM map does; the whole
  dendrite would reward finding the dendrite, which is not the question.

The blob images (:func:`blob_image`) are for the detection and counting
recipes: bright, textured ellipses that never overlap, on a noisy background.
"""

import numpy as np
from scipy import ndimage

__all__ = ["synth_actin_image", "blob_image", "DEFAULT_SIZE", "PSF_FWHM_PX", "RING_PERIOD_PX", "LINE_SIGMA_PX",
           "PHOTONS_PER_UNIT"]

DEFAULT_SIZE = 512                # image side in pixels
PSF_FWHM_PX = 2.5
RING_PERIOD_PX = (9.0, 10.0)
LINE_SIGMA_PX = 0.9               # width of one ring stripe or fiber before the PSF
PHOTONS_PER_UNIT = 100.0          # intensity 1.0 = 100 photons


# --------------------------------------------------------------------------- geometry

def _dendrite_axis(rng, size):
    """Random gently curved axis through the field, as a dict of its parameters.

    The axis is ``centre + u * direction + bend(u) * normal`` with a sine bend of
    small slope (below 0.4), so nearest points are found by a few Newton steps.
    """
    angle = rng.uniform(0, np.pi)
    return {"centre": size / 2 + rng.uniform(-0.3, 0.3, 2) * size,
            "direction": np.array([np.sin(angle), np.cos(angle)]),
            "amplitude": rng.uniform(0, 0.06 * size),
            "wavenumber": 2 * np.pi / (rng.uniform(1.0, 2.5) * size),
            "phase": rng.uniform(0, 2 * np.pi)}


def _axis_coordinates(axis, size, reach):
    """Pixels within about `reach` of the axis, with their axis coordinates.

    Returns
    -------
    pixels : ndarray of int, shape (P,)
        Flat indices into the (size, size) image.
    s, t : ndarray of float, shape (P,)
        Arc length along the axis and signed distance across it.
    """
    direction = axis["direction"]
    normal = np.array([direction[1], -direction[0]])
    amplitude, k, phase = axis["amplitude"], axis["wavenumber"], axis["phase"]
    rows, cols = np.mgrid[:size, :size].astype(float)
    dy, dx = rows.ravel() - axis["centre"][0], cols.ravel() - axis["centre"][1]
    v0 = dy * normal[0] + dx * normal[1]
    pixels = np.flatnonzero(np.abs(v0) < amplitude + 1.2 * reach)       # |bend| <= amplitude
    u0, v0 = dy[pixels] * direction[0] + dx[pixels] * direction[1], v0[pixels]
    u = u0.copy()
    for _ in range(4):        # Newton steps on d/du of the squared distance to (u, bend(u))
        bend, slope = amplitude * np.sin(k * u + phase), amplitude * k * np.cos(k * u + phase)
        curvature = -amplitude * k * k * np.sin(k * u + phase)
        u -= ((u - u0) + (bend - v0) * slope) / (1 + slope ** 2 + (bend - v0) * curvature)
    bend, slope = amplitude * np.sin(k * u + phase), amplitude * k * np.cos(k * u + phase)
    table = np.linspace(-2 * size, 2 * size, 4096)
    speed = np.sqrt(1 + (amplitude * k * np.cos(k * table + phase)) ** 2)
    arc = np.concatenate([[0], np.cumsum((speed[1:] + speed[:-1]) / 2 * np.diff(table))])
    s = np.interp(u, table, arc) - 2 * size
    t = ((v0 - bend) - (u0 - u) * slope) / np.sqrt(1 + slope ** 2)    # offset along the unit normal
    near = np.abs(t) < reach
    return pixels[near], s[near], t[near]


def _smooth_noise(rng, shape, sigma):
    """Positive, smooth random texture with mean about 1."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    noise /= noise.std() + 1e-12
    return np.clip(1 + 0.5 * noise, 0, None)


def _patches(rng, s_range, kinds):
    """Segments (s0, s1, kind) along a dendrite, alternating structure and plain stretches."""
    patches, s = [], s_range[0] + rng.uniform(0, 60)
    cycle = list(kinds)
    rng.shuffle(cycle)
    while s < s_range[1] - 60 and cycle:
        kind = cycle[len(patches) % len(cycle)]
        length = rng.uniform(70, 180) if kind == "rings" else rng.uniform(120, 280)   # fibers run longer
        patches.append((s, min(s + length, s_range[1]), kind))
        s += length + rng.uniform(15, 70)
    return patches


# --------------------------------------------------------------------------- one image

def _draw_rings(rng, s, t, width, s0, s1, amplitude):
    """Stripe intensity (P,) and lattice mask (P,) bool of one ring patch, on a dendrite's pixels."""
    period = rng.uniform(*RING_PERIOD_PX)
    half_length = 0.5 * width * rng.uniform(0.75, 0.95)
    first = s0 + rng.uniform(0, period)
    count = int((s1 - first) // period) + 1
    strength = amplitude * rng.uniform(0.55, 1.0, count) * (rng.random(count) > 0.1)
    gap_at = rng.uniform(-0.8, 0.8, count)                                 # where a ring is broken
    has_gap = rng.random(count) < 0.3
    region = (s >= first - 3) & (s <= first + (count - 1) * period + 3) & (np.abs(t) < half_length)
    index = np.clip(np.rint((s - first) / period).astype(int), 0, count - 1)
    distance = s - (first + index * period)
    along = np.clip((half_length - np.abs(t)) / 3, 0, 1)                    # soft ends of each ring
    broken = has_gap[index] & (np.abs(t - gap_at[index] * half_length) < 3)
    stripes = strength[index] * np.exp(-distance ** 2 / (2 * LINE_SIGMA_PX ** 2)) * along * ~broken
    return np.where(region, stripes, 0.0), [region]


def _draw_fibers(rng, s, t, width, s0, s1, amplitude):
    """Line intensity (P,) and one mask (P,) bool per fiber of one bundle, on a dendrite's pixels."""
    count = rng.integers(3, 7)
    spacing = rng.uniform(4.5, 7)
    room = max(0.0, 0.5 * np.median(width) - 5 - (count - 1) * spacing / 2)
    offsets = rng.uniform(-room, room) + (np.arange(count) - (count - 1) / 2) * spacing
    lines, masks = np.zeros(s.shape), []
    for offset in offsets:
        a, b = s0 + rng.uniform(0, 12), s1 - rng.uniform(0, 12)
        wave = rng.uniform(0, 2.5) * np.sin(2 * np.pi * s / rng.uniform(60, 200) + rng.uniform(0, 2 * np.pi))
        across = t - offset - wave
        span = (s >= a) & (s <= b) & (np.abs(across) < 6)
        beads = 0.55 + 0.45 * np.cos(2 * np.pi * s / rng.uniform(15, 40) + rng.uniform(0, 6.3)) ** 2
        strength = amplitude * rng.uniform(0.55, 1.0) * beads
        lines += np.where(span, strength * np.exp(-across ** 2 / (2 * LINE_SIGMA_PX ** 2)), 0)
        masks.append(span & (np.abs(across) < 3))
    return lines, masks


def synth_actin_image(rng, size=DEFAULT_SIZE, rings=True, fibers=True):
    """Draw one STED-like F-actin image and its pixel truth.

    Parameters
    ----------
    rng : numpy.random.Generator
    size : int
        Side of the square image in pixels (20 nm each).
    rings, fibers : bool
        Which structures the image contains.

    Returns
    -------
    image : ndarray, float32, shape (size, size)
        Intensities in [0, 1].
    label : ndarray, uint8, shape (3, size, size)
        Rings (one id per patch), fibers (one id per fiber), dendrite mask 0/1.
    """
    kinds = [kind for kind, on in (("rings", rings), ("fibers", fibers)) if on]
    label = np.zeros((3, size * size), np.uint8)
    pattern = np.zeros(size * size)
    texture = _smooth_noise(rng, (size, size), 3).ravel()
    for _ in range(rng.integers(1, 4)):
        pixels, s, t = _axis_coordinates(_dendrite_axis(rng, size), size, reach=35)
        width = rng.uniform(30, 60) * (1 + 0.15 * np.sin(2 * np.pi * s / rng.uniform(150, 400) + rng.uniform(0, 6.3)))
        inside = np.abs(t) < width / 2
        if not inside.any():
            continue
        pixels, s, t, width = pixels[inside], s[inside], t[inside], width[inside]
        label[2, pixels] = 1
        edge = np.clip((width / 2 - np.abs(t)) / 4, 0, 1)
        pattern[pixels] += edge * rng.uniform(0.08, 0.16) * texture[pixels]
        for s0, s1, kind in _patches(rng, (s.min(), s.max()), kinds):
            channel, draw = (0, _draw_rings) if kind == "rings" else (1, _draw_fibers)
            intensity, masks = draw(rng, s, t, width, s0, s1, rng.uniform(0.6, 1.0))
            pattern[pixels] += intensity
            for mask in masks:
                where = pixels[mask]
                label[channel, where[label[channel, where] == 0]] = label[channel].max() + 1
    pattern = pattern.reshape(size, size) + _puncta(rng, size, label[2].reshape(size, size) > 0)
    return _acquire(rng, pattern), label.reshape(3, size, size)


def _puncta(rng, size, foreground):
    """A few bright spots, mostly on the dendrites: distractors that are neither class."""
    spots = np.zeros((size, size))
    inside = np.argwhere(foreground)
    count = rng.poisson(8 * (size / 512) ** 2)
    for _ in range(count):
        where = inside[rng.integers(len(inside))] if len(inside) and rng.random() < 0.8 else rng.integers(0, size, 2)
        spots[tuple(where)] += rng.uniform(4, 12)
    return ndimage.gaussian_filter(spots, rng.uniform(1.2, 2.0))


def _acquire(rng, pattern):
    """Blur by the STED PSF, add background, count photons, add read noise; float32 in [0, 1]."""
    blurred = ndimage.gaussian_filter(pattern, PSF_FWHM_PX / 2.3548)
    brightness = rng.uniform(25, 45)                                    # photons at intensity 1 of the pattern
    expected = blurred * brightness + rng.uniform(0.2, 0.8)
    counts = rng.poisson(expected) + rng.normal(0, 0.4, pattern.shape)
    return np.clip(counts / PHOTONS_PER_UNIT, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------- blobs (detection, counting)

def blob_image(rng, size, channels):
    """One image of non-overlapping, textured elliptical cells on a noisy background.

    Parameters
    ----------
    rng : numpy.random.Generator
    size : int
        Side of the square image in pixels.
    channels : int
        1, or more for RGB-like images (each channel a different tint).

    Returns
    -------
    image : ndarray, float32, shape (channels, size, size)
        Intensities in [0, 1].
    instances : ndarray, int32, shape (size, size)
        0 background, k the k-th cell.
    points : ndarray, float, shape (K, 2)
        (row, col) centre of each cell, row k - 1 for cell k.
    """
    rows, cols = np.mgrid[:size, :size].astype(float)
    instances = np.zeros((size, size), np.int32)
    signal = np.zeros((size, size))
    wanted, centres = rng.integers(3, 4 + int(12 * (size / 256) ** 2)), []
    for _ in range(wanted * 20):                          # rejection sampling of free places
        if len(centres) == wanted:
            break
        radii = rng.uniform(0.025, 0.06, 2) * size
        centre = rng.uniform(radii.max() + 2, size - radii.max() - 2, 2)
        if any(np.hypot(*(centre - c)) < radii.max() + r + 3 for c, r in centres):
            continue
        angle = rng.uniform(0, np.pi)
        dy, dx = rows - centre[0], cols - centre[1]
        along, across = dy * np.cos(angle) + dx * np.sin(angle), -dy * np.sin(angle) + dx * np.cos(angle)
        r2 = (along / radii[0]) ** 2 + (across / radii[1]) ** 2
        inside = r2 < 1
        centres.append((centre, radii.max()))
        instances[inside] = len(centres)
        signal += np.where(inside, rng.uniform(0.5, 1.0) * (0.6 + 0.4 * np.sqrt(np.clip(1 - r2, 0, 1))), 0)
    points = np.array([c for c, _ in centres], float).reshape(-1, 2)
    texture = _smooth_noise(rng, (size, size), 2)
    blurred = ndimage.gaussian_filter(signal * texture, 1.5)
    tints = rng.uniform(0.5, 1.0, channels) if channels > 1 else np.ones(1)
    image = np.stack([
        np.clip(rng.poisson(blurred * tint * 60 + rng.uniform(2, 6)) / 100 + rng.normal(0, 0.01, blurred.shape), 0, 1)
        for tint in tints]).astype(np.float32)
    return image, instances, points
