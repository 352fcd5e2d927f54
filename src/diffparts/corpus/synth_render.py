"""The synthetic-bird renderer: one image, its part mask and keypoints (docs/design.md §4 "The embedded default").

Every bird is drawn from a species prior (colours per part, patterns, shape) and then varied per
image: colour swaps between neighbouring parts, colour jitter, patterns (stripes, spots,
gradients, caps), shading, size, position, pose (body tilt, head angle, wing raised or folded,
tail angle), horizontal flip, partial crops at the border, and a textured background that
sometimes reuses the bird's colours. Rendering is vectorised numpy on a supersampled grid; the
part mask is the per-pixel majority of the supersamples. ``SynthConfig`` holds the knobs; the
CUB-layout writer is ``corpus.synth``, the caption ``corpus.synth_caption``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from diffparts.corpus.synth_caption import _caption
from diffparts.corpus.synth_species import COLOURS, CUB_KEYPOINTS, PART_INDEX, PART_NAMES, _draw_appearance

# Background-only colours (never named in captions): foliage, bark, sky, sand.
_BG_COLOURS = np.array(
    [(70, 110, 50), (110, 140, 70), (40, 80, 40), (150, 120, 80), (90, 70, 50),
     (150, 190, 220), (200, 215, 230), (190, 180, 150), (160, 160, 150), (60, 90, 90)],
    dtype=np.float32,
)


@dataclass(frozen=True)
class SynthConfig:
    image_size: int = 128                      # pixel side of every image (64 also supported)
    n_classes: int = 16                        # species used, at most len(_SPECIES) = 16
    supersample: int = 2                       # render at this factor, average down (anti-aliasing)
    scale_range: tuple[float, float] = (0.2, 0.27)  # body half-length / image side
    tilt_range_deg: float = 25.0               # body tilt, uniform in +-range
    head_range_deg: float = 30.0               # head turn relative to the body, uniform in +-range
    raised_wing_prob: float = 0.3              # wing raised (flying pose) instead of folded
    flip_prob: float = 0.5                     # bird faces left (shows its left side)
    crop_prob: float = 0.15                    # centre placed so the bird leaves the frame partly
    colour_swap_prob: float = 0.15             # a part takes a neighbour's or a random colour
    colour_jitter: float = 28.0                # per-part RGB jitter (std, 0-255 units)
    extra_pattern_prob: float = 0.25           # a plain part gets a random pattern
    shading: tuple[float, float] = (0.25, 0.55)  # strength of the per-part sphere shading
    shared_bg_colour_prob: float = 0.35        # the background reuses one of the bird's colours
    branch_prob: float = 0.5                   # a brown branch under the feet (background)
    pixel_noise: float = 4.0                   # std of per-pixel noise (0-255 units)
    train_fraction: float = 0.5                # share of each class in the train split


# ----------------------------------------------------------------------------------------------
# Geometry helpers: all work on flat float32 arrays of coordinates.


def _to_frame(u, v, cu, cv, ang):
    """Coordinates of (u, v) in a frame centred at (cu, cv) and rotated by ang (radians)."""
    du, dv = u - cu, v - cv
    c, s = math.cos(ang), math.sin(ang)
    return du * c + dv * s, -du * s + dv * c


def _segment_dist(x, y, x0, y0, x1, y1):
    """Distance of points (x, y) to the segment (x0, y0)-(x1, y1)."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
    return np.hypot(x - x0 - t * dx, y - y0 - t * dy)


def _paint_pattern(rng, base, second, kind, pu, pv):
    """Colours (pixel, 3) of one part with a pattern, in the part's own frame (pu, pv ~ [-1, 1])."""
    n = pu.shape[0]
    if kind is None or n == 0:
        return np.broadcast_to(base, (n, 3)).copy()
    if kind == "stripes":
        ang = rng.uniform(0, math.pi)
        freq = rng.uniform(2.0, 4.5)
        t = pu * math.cos(ang) + pv * math.sin(ang)
        alpha = (np.sin(2 * math.pi * freq * t + rng.uniform(0, 2 * math.pi)) > rng.uniform(-0.2, 0.5))
        alpha = alpha.astype(np.float32)
    elif kind == "spots":
        k = int(rng.integers(6, 14))
        centres = rng.uniform(-0.9, 0.9, (k, 2)).astype(np.float32)
        radius = rng.uniform(0.12, 0.22, k).astype(np.float32)
        d2 = (pu[None] - centres[:, 0:1]) ** 2 + (pv[None] - centres[:, 1:2]) ** 2  # spot pixel
        alpha = (d2 < radius[:, None] ** 2).any(0).astype(np.float32)
    elif kind == "gradient":
        ang = rng.uniform(0, 2 * math.pi)
        t = pu * math.cos(ang) + pv * math.sin(ang)
        alpha = np.clip(0.5 + 0.6 * t, 0, 1)
    elif kind == "cap":
        alpha = (pv > rng.uniform(0.05, 0.35)).astype(np.float32)
    else:
        raise ValueError(f"unknown pattern {kind!r}")
    return base[None] * (1 - alpha[:, None]) + second[None] * alpha[:, None]


def _render_bird(rng, class_index, cfg):
    """Render one image: (rgb (y, x, 3) uint8, part mask (y, x) uint8, keypoints (15, 3), caption)."""
    size, ss = cfg.image_size, cfg.supersample
    big = size * ss
    # 1. Pose and shape (units: s = body half-length in pixels of the final image).
    s = rng.uniform(*cfg.scale_range) * size
    tilt = math.radians(rng.uniform(-cfg.tilt_range_deg, cfg.tilt_range_deg))
    head_ang = math.radians(rng.uniform(-cfg.head_range_deg, cfg.head_range_deg))
    raised = rng.random() < cfg.raised_wing_prob
    wing_ang = math.radians(rng.uniform(-75, -35) if raised else rng.uniform(-8, 12))
    tail_ang = math.radians(rng.uniform(-25, 20))
    flip = rng.random() < cfg.flip_prob
    body_b = rng.uniform(0.55, 0.7)
    head_r = rng.uniform(0.45, 0.55)
    beak_len = rng.uniform(0.45, 0.7)
    beak_w = rng.uniform(0.16, 0.24)
    tail_len = rng.uniform(0.6, 1.0)
    fork = rng.random() < 0.3
    eye_r = rng.uniform(0.2, 0.25)
    leg_len = rng.uniform(0.55, 0.8)

    # 2. Position: inside the frame, or (crop_prob) partly outside it.
    if rng.random() < cfg.crop_prob:
        ang = rng.uniform(0, 2 * math.pi)
        off = rng.uniform(0.3, 0.5) * size
        cx, cy = size / 2 + off * math.cos(ang), size * 0.45 + off * math.sin(ang)
    else:
        cx = rng.uniform(0.42, 0.58) * size
        cy = rng.uniform(0.4, 0.5) * size
    cx -= (-1.0 if flip else 1.0) * 0.2 * s     # the head and beak reach further than the tail

    # 3. Pixel grid in bird coordinates (u forward, v up, unit = s), over a window holding the
    #    whole bird (reach < 3.3 s from the body centre), clipped to the frame.
    reach = 3.3 * s
    wx0, wx1 = (int(np.clip(math.floor((c - reach) * ss), 0, big)) if k == 0 else
                int(np.clip(math.ceil((c + reach) * ss), 0, big)) for k, c in ((0, cx), (1, cx)))
    wy0, wy1 = (int(np.clip(math.floor((c - reach) * ss), 0, big)) if k == 0 else
                int(np.clip(math.ceil((c + reach) * ss), 0, big)) for k, c in ((0, cy), (1, cy)))
    wh, ww = wy1 - wy0, wx1 - wx0
    xs = (np.arange(wx0, wx1, dtype=np.float32) + 0.5) / ss           # pixel centres, final units
    ys = (np.arange(wy0, wy1, dtype=np.float32) + 0.5) / ss
    gx = np.broadcast_to(xs[None, :], (wh, ww)).ravel()                # (y x) flattened window
    gy = np.broadcast_to(ys[:, None], (wh, ww)).ravel()
    fx = -1.0 if flip else 1.0
    dx = (gx - cx) / s * fx
    dy = -(gy - cy) / s
    ct, st = math.cos(tilt), math.sin(tilt)
    u = dx * ct + dy * st
    v = -dx * st + dy * ct

    def to_image(pu_, pv_):
        """Bird coordinates -> image pixel coordinates (x, y)."""
        ddx = pu_ * ct - pv_ * st
        ddy = pu_ * st + pv_ * ct
        return cx + fx * ddx * s, cy - ddy * s

    names, rgb, patt, second = _draw_appearance(rng, class_index, cfg)
    shade_k = rng.uniform(*cfg.shading)
    light = rng.uniform(-0.25, 0.25, 2)

    img = np.zeros((wh * ww, 3), dtype=np.float32)     # (y x) rgb of the window
    lab = np.zeros(wh * ww, dtype=np.uint8)            # (y x) part index of the window

    def paint(mask, part, pu, pv, r2=None):
        """Draw one part where mask holds (painter's order), with pattern and shading."""
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return
        kind = patt.get(part, (None, None))[0]
        cols = _paint_pattern(rng, rgb[part], second.get(part), kind, pu[idx], pv[idx])
        if r2 is None:
            r2 = pu * pu + pv * pv
        shade = 1.0 - shade_k * np.clip(r2[idx], 0, 1) + (light[0] * pu[idx] + light[1] * pv[idx]) * 0.4
        img[idx] = cols * np.clip(shade, 0.3, 1.4)[:, None]
        lab[idx] = PART_INDEX[part]

    # 4. Legs (behind the body): two thick segments going down in the image, plus toes.
    leg_w = 0.09
    hips = [(0.15, -0.35), (-0.12, -0.35)]
    feet = []
    for k, (hu, hv) in enumerate(hips):
        hx, hy = to_image(hu, hv)
        lean = rng.uniform(-0.25, 0.25)
        footx, footy = hx + fx * lean * s * leg_len, hy + leg_len * s + body_b * 0.3 * s
        toex = footx + fx * 0.35 * s
        d = np.minimum(_segment_dist(gx, gy, hx, hy, footx, footy),
                       _segment_dist(gx, gy, footx, footy, toex, footy))
        mask = d < leg_w * s
        pu_l = np.zeros_like(u)
        paint(mask, "legs", pu_l, pu_l, r2=np.clip(d / (leg_w * s), 0, 1) ** 2)
        feet.append((footx, footy - 0.2 * leg_len * s))

    # 5. Tail: a fan (optionally forked) behind the body.
    tb_u, tb_v = -0.75, 0.1
    tu, tv = _to_frame(u, v, tb_u, tb_v, math.pi + tail_ang)
    half = 0.18 + 0.22 * np.clip(tu / tail_len, 0, 1)
    tail = (tu > 0) & (tu < tail_len) & (np.abs(tv) < half)
    if fork:
        tail &= ~((tu > tail_len * 0.75) & (np.abs(tv) < (tu - tail_len * 0.75) * 1.2))
    paint(tail, "tail", tu / tail_len * 2 - 1, tv / 0.4)

    # 6. Body: one ellipse split into back (upper), breast (lower front), belly (lower rear).
    bu, bv = u, v / body_b
    body = bu * bu + bv * bv < 1.0
    upper = v > 0.08 + 0.12 * u
    paint(body & upper, "back", bu, bv)
    paint(body & ~upper & (u > -0.05), "breast", bu, bv)
    paint(body & ~upper & (u <= -0.05), "belly", bu, bv)

    # 7. Wing: an ellipse hinged at the shoulder, folded over the back or raised.
    pivot = (0.35, 0.12)
    wc_u = pivot[0] - 0.75 * math.cos(wing_ang)
    wc_v = pivot[1] - 0.75 * math.sin(wing_ang)
    wu, wv = _to_frame(u, v, wc_u, wc_v, wing_ang)
    wu, wv = wu / 0.85, wv / 0.32
    wing = wu * wu + wv * wv < 1.0
    paint(wing, "wing", wu, wv)

    # 8. Head, beak, eye (rotated together by the head angle).
    hc = (0.92, 0.45 + 0.1 * body_b)
    hu, hv = _to_frame(u, v, hc[0], hc[1], head_ang)
    head = hu * hu + hv * hv < head_r * head_r
    paint(head, "head", hu / head_r, hv / head_r)
    base_u = head_r * 0.75
    tip = (head_r + beak_len, -0.08)
    # beak: triangle (base_u, +w) (base_u, -w) tip, tested with the edge half-planes
    t = (hu - base_u) / (tip[0] - base_u)
    beak = (t > 0) & (t < 1) & (np.abs(hv - tip[1] * t) < beak_w * (1 - t))
    paint(beak, "beak", t * 2 - 1, hv / beak_w)
    ec = (head_r * 0.35, head_r * 0.2)
    eu, ev = (hu - ec[0]) / eye_r, (hv - ec[1]) / eye_r
    er2 = eu * eu + ev * ev
    eye = er2 < 1.0
    paint(eye, "eye", eu, ev, r2=np.zeros_like(er2))
    pupil = eye & (er2 < 0.4)
    img[pupil] = np.array(COLOURS["black"], np.float32) * 0.6
    glint = eye & ((eu - 0.25) ** 2 + (ev - 0.25) ** 2 < 0.05)
    img[glint] = 240.0

    # 9. Keypoints in bird coordinates (CUB order); then visibility from frame and side.
    def head_point(a, b):
        c, s_ = math.cos(head_ang), math.sin(head_ang)
        return hc[0] + a * c - b * s_, hc[1] + a * s_ + b * c

    wing_mid = (wc_u, wc_v)
    kp_local = {
        "back": (-0.3, 0.5 * body_b + 0.05), "beak": head_point(head_r + beak_len * 0.6, -0.05),
        "belly": (-0.4, -0.55 * body_b), "breast": (0.6, -0.25 * body_b),
        "crown": head_point(0.0, head_r * 0.75), "forehead": head_point(head_r * 0.65, head_r * 0.5),
        "eye": head_point(*ec), "wing": wing_mid,
        "nape": head_point(-head_r * 0.7, head_r * 0.35), "tail": None,
        "throat": head_point(head_r * 0.45, -head_r * 0.7),
    }
    c_t, s_t = math.cos(math.pi + tail_ang), math.sin(math.pi + tail_ang)
    kp_local["tail"] = (tb_u + 0.7 * tail_len * c_t, tb_v + 0.7 * tail_len * s_t)
    near = "left" if flip else "right"       # facing right shows the bird's right side
    keypoints = np.zeros((len(CUB_KEYPOINTS), 3), dtype=np.float32)
    for k, kname in enumerate(CUB_KEYPOINTS):
        side, _, base_name = kname.rpartition(" ")
        if base_name == "leg":
            px, py = feet[0] if side == near else feet[1]
        else:
            px, py = to_image(*kp_local[base_name])
        px, py = round(float(px), 1), round(float(py), 1)    # as written to part_locs.txt
        visible = 0 <= px < size and 0 <= py < size
        if side and base_name in ("eye", "wing") and side != near:
            visible = False
        if visible:
            keypoints[k] = (px, py, 1.0)

    # 10. Background behind everything, then supersample down, noise, quantise.
    bg = _render_background(rng, size, [rgb[p] for p in ("back", "wing", "breast", "head")],
                            cfg, feet, s)                               # y x rgb, final size
    full = np.repeat(np.repeat(bg, ss, axis=0), ss, axis=1)             # y x rgb, supersampled
    window = full[wy0:wy1, wx0:wx1].reshape(-1, 3)
    fg = lab > 0
    window[fg] = img[fg]
    full[wy0:wy1, wx0:wx1] = window.reshape(wh, ww, 3)
    lab_full = np.zeros((big, big), np.uint8)
    lab_full[wy0:wy1, wx0:wx1] = lab.reshape(wh, ww)
    lab = lab_full
    img = full.reshape(size, ss, size, ss, 3).mean(axis=(1, 3))         # y x rgb
    img += rng.normal(0.0, cfg.pixel_noise, img.shape).astype(np.float32)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    blocks = lab.reshape(size, ss, size, ss).transpose(0, 2, 1, 3).reshape(size, size, ss * ss)
    counts = (blocks[..., None] == np.arange(len(PART_NAMES) + 1, dtype=np.uint8)).sum(2)
    part_mask = counts.argmax(-1).astype(np.uint8)                      # y x
    # a keypoint that falls off the bird after rasterising (thin parts, borders) is not visible
    on_bird = part_mask[keypoints[:, 1].astype(int), keypoints[:, 0].astype(int)] > 0
    keypoints[~on_bird] = 0.0

    caption = _caption(rng, names, patt)
    return img, part_mask, keypoints, caption


def _render_background(rng, big, bird_rgb, cfg, feet, s):
    """A textured background (y x, 3) float32 of side ``big`` (the final image size)."""
    n_col = 3
    cols = _BG_COLOURS[rng.choice(len(_BG_COLOURS), n_col, replace=False)].copy()
    if rng.random() < cfg.shared_bg_colour_prob:
        cols[rng.integers(n_col)] = bird_rgb[rng.integers(len(bird_rgb))]
    cols += rng.normal(0, 12, cols.shape).astype(np.float32)
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float32) / big            # y x in [0, 1)
    kind = rng.integers(4)
    if kind == 0:      # smooth noise: a few random plane waves mixing the colours
        w = np.zeros((n_col, big, big), np.float32)
        for c in range(n_col):
            for _ in range(3):
                ang, freq = rng.uniform(0, 2 * math.pi), rng.uniform(1, 5)
                w[c] += np.sin(2 * math.pi * freq * (xx * math.cos(ang) + yy * math.sin(ang))
                               + rng.uniform(0, 2 * math.pi))
        w = np.exp(1.5 * w)
        w /= w.sum(0, keepdims=True)
        bg = np.einsum("cyx,cr->yxr", w, cols)
    elif kind == 1:    # stripes (reeds, fences)
        ang, freq = rng.uniform(0, math.pi), rng.uniform(3, 12)
        t = np.sin(2 * math.pi * freq * (xx * math.cos(ang) + yy * math.sin(ang)))
        t2 = np.sin(2 * math.pi * rng.uniform(1, 3) * (xx * math.sin(ang) - yy * math.cos(ang)))
        bg = np.where((t > 0)[..., None], cols[0], cols[1]) * (0.85 + 0.15 * t2[..., None])
    elif kind == 2:    # foliage: overlapping leaf blobs
        bg = np.broadcast_to(cols[2], (big, big, 3)).copy()
        k = int(rng.integers(25, 45))
        cx, cy = rng.uniform(-0.1, 1.1, (2, k))
        a, b = rng.uniform(0.04, 0.14, (2, k))
        ang = rng.uniform(0, math.pi, k)
        for i in range(k):
            du, dv = xx - cx[i], yy - cy[i]
            c, s_ = math.cos(ang[i]), math.sin(ang[i])
            r2 = ((du * c + dv * s_) / a[i]) ** 2 + ((-du * s_ + dv * c) / b[i]) ** 2
            m = r2 < 1
            col = cols[i % 2] * rng.uniform(0.75, 1.2)
            bg[m] = col * (1.1 - 0.25 * r2[m])[:, None]
    else:              # sky-like vertical gradient with soft clouds
        t = yy[..., None]
        bg = cols[0] * (1 - t) + cols[1] * t
        for _ in range(int(rng.integers(2, 6))):
            cx, cy = rng.uniform(0, 1, 2)
            r = rng.uniform(0.08, 0.25)
            m = np.exp(-((xx - cx) ** 2 + ((yy - cy) * 2) ** 2) / (r * r))[..., None]
            bg = bg * (1 - 0.6 * m) + cols[2] * 0.6 * m
    if rng.random() < cfg.branch_prob:     # a branch the bird stands on (background)
        fy = max(f[1] for f in feet) + 0.2 * s
        slope = rng.uniform(-0.3, 0.3)
        width = rng.uniform(0.12, 0.25) * s
        yline = fy + slope * (xx * big - big / 2)
        m = np.abs(yy * big - yline) < width
        bark = np.array(COLOURS["brown"], np.float32) * rng.uniform(0.6, 1.1)
        grain = 0.85 + 0.15 * np.sin(xx * big * 0.7 + yy * 3)
        bg[m] = bark * grain[m][:, None]
    return bg.astype(np.float32)
