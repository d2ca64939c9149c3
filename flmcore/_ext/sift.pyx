# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Shape-indexed SIFT kernel (called by :mod:`flmcore.sift` only; no validation here).

Plain arrays in, plain arrays out.  The caller guarantees:

* ``images`` float32 C-contiguous ``(B, H, W)`` with ``H, W >= 3``;
* ``taps`` float32 ``(2 R + 1,)`` normalised Gaussian taps with ``R < min(H, W)``
  (a single mirror reflection then stays inside the image), or ``R = 0``;
* ``keypoints`` float64 ``(B, P, 4)`` rows ``(x, y, cell width in pixels > 0, angle in radians)``,
  all finite;
* ``out`` float32 ``(B, P, 128)`` C-contiguous.

Every descriptor is computed by one thread in a fixed order, so the result is
bitwise identical for any ``num_threads``.
"""
from cython.parallel cimport prange
from libc.math cimport atan2f, sqrtf, floorf, floor, ceil, exp, cos, sin, fabs, M_PI
from libc.stdlib cimport malloc, free

import numpy as np

cdef int D = 4            # cells per side
cdef int NB = 8           # orientation bins
cdef int HD = 6           # padded cells per side (D + 2)
cdef int HN = 10          # padded orientation bins (NB + 2)


cdef void _smooth_gradients(const float[:, ::1] img, const float[::1] taps, int R,
                            float[:, ::1] tmp, float[:, ::1] sm,
                            float[:, ::1] mag, float[:, ::1] abin) noexcept nogil:
    """Separable Gaussian (mirror-101 border), then central-difference gradients.

    ``mag`` is the gradient magnitude, ``abin`` its orientation in bins [0, 8)
    measured counter-clockwise on screen (y axis up).  The outermost pixel ring
    gets a zero gradient (central differences would leave the image).
    """
    cdef int H = img.shape[0], W = img.shape[1]
    cdef int r, c, k, q
    cdef float acc, gx, gy, a
    cdef float to_bins = <float>(NB / (2.0 * M_PI))
    if R == 0:
        for r in range(H):
            for c in range(W):
                sm[r, c] = img[r, c]
    else:
        for r in range(H):
            for c in range(W):
                acc = 0.0
                for k in range(-R, R + 1):
                    q = c + k
                    if q < 0:
                        q = -q
                    elif q >= W:
                        q = 2 * (W - 1) - q
                    acc = acc + taps[k + R] * img[r, q]
                tmp[r, c] = acc
        for r in range(H):
            for c in range(W):
                acc = 0.0
                for k in range(-R, R + 1):
                    q = r + k
                    if q < 0:
                        q = -q
                    elif q >= H:
                        q = 2 * (H - 1) - q
                    acc = acc + taps[k + R] * tmp[q, c]
                sm[r, c] = acc
    for r in range(H):
        for c in range(W):
            if r == 0 or c == 0 or r == H - 1 or c == W - 1:
                mag[r, c] = 0.0
                abin[r, c] = 0.0
                continue
            gx = 0.5 * (sm[r, c + 1] - sm[r, c - 1])
            gy = 0.5 * (sm[r - 1, c] - sm[r + 1, c])      # y axis up
            mag[r, c] = sqrtf(gx * gx + gy * gy)
            a = atan2f(gy, gx) * to_bins
            if a < 0:
                a = a + NB
            if a >= NB:
                a = a - NB
            abin[r, c] = a


cdef void _describe(const float[:, ::1] mag, const float[:, ::1] abin,
                    double x, double y, double cw, double theta,
                    float[::1] dst) noexcept nogil:
    """One 4x4x8 descriptor at (x, y), cell width ``cw`` pixels, frame angle ``theta``."""
    cdef int H = mag.shape[0], W = mag.shape[1]
    cdef float hist[360]
    cdef double ca = cos(theta) / cw, sa = sin(theta) / cw
    cdef double half = 0.5 * (D + 1)            # the support is |u|, |v| < 2.5 cells
    cdef double ext = half * cw * (fabs(cos(theta)) + fabs(sin(theta)))
    cdef int r_lo = <int>ceil(y - ext), r_hi = <int>floor(y + ext)
    cdef int c_lo = <int>ceil(x - ext), c_hi = <int>floor(x + ext)
    cdef int r, c, i, j, k, idx, r0, c0, o0, nc
    cdef double dy, dx, ur, vr, u, v, s2
    cdef float rb, cb, ob, m, wr, v_r1, v_r0, v_rc11, v_rc10, v_rc01, v_rc00
    cdef float thb, nrm, thr
    cdef float* wx
    for i in range(360):
        hist[i] = 0.0
    for i in range(D * D * NB):
        dst[i] = 0.0
    # clip to the pixels that carry a gradient (the ring r, c in [1, H-2] x [1, W-2])
    if r_lo < 1:
        r_lo = 1
    if c_lo < 1:
        c_lo = 1
    if r_hi > H - 2:
        r_hi = H - 2
    if c_hi > W - 2:
        c_hi = W - 2
    if r_lo > r_hi or c_lo > c_hi:
        return
    nc = c_hi - c_lo + 1
    wx = <float*>malloc(nc * sizeof(float))
    if wx == NULL:
        return
    # Gaussian weight with sigma = D/2 cells, separable in pixel offsets
    s2 = -1.0 / (2.0 * (0.5 * D * cw) * (0.5 * D * cw))
    for j in range(nc):
        dx = c_lo + j - x
        wx[j] = <float>exp(dx * dx * s2)
    thb = <float>(theta * (NB / (2.0 * M_PI)))
    thb = thb - NB * floorf(thb / NB)
    if thb >= NB:
        thb = thb - NB
    for r in range(r_lo, r_hi + 1):
        dy = r - y
        wr = <float>exp(dy * dy * s2)
        ur = dy * sa
        vr = dy * ca
        for c in range(c_lo, c_hi + 1):
            m = mag[r, c]
            if m == 0.0:
                continue
            dx = c - x
            u = dx * ca + ur
            v = vr - dx * sa
            if u <= -half or u >= half or v <= -half or v >= half:
                continue
            cb = <float>(u + 0.5 * D - 0.5)
            rb = <float>(v + 0.5 * D - 0.5)
            ob = abin[r, c] + thb
            if ob >= NB:
                ob = ob - NB
            m = m * wx[c - c_lo] * wr
            r0 = <int>floorf(rb)
            c0 = <int>floorf(cb)
            o0 = <int>floorf(ob)
            rb = rb - r0
            cb = cb - c0
            ob = ob - o0
            v_r1 = m * rb
            v_r0 = m - v_r1
            v_rc11 = v_r1 * cb
            v_rc10 = v_r1 - v_rc11
            v_rc01 = v_r0 * cb
            v_rc00 = v_r0 - v_rc01
            idx = ((r0 + 1) * HD + c0 + 1) * HN + o0
            hist[idx] += v_rc00 - v_rc00 * ob
            hist[idx + 1] += v_rc00 * ob
            hist[idx + HN] += v_rc01 - v_rc01 * ob
            hist[idx + HN + 1] += v_rc01 * ob
            hist[idx + HD * HN] += v_rc10 - v_rc10 * ob
            hist[idx + HD * HN + 1] += v_rc10 * ob
            hist[idx + (HD + 1) * HN] += v_rc11 - v_rc11 * ob
            hist[idx + (HD + 1) * HN + 1] += v_rc11 * ob
    free(wx)
    # fold the circular orientation bin, drop the padding cells
    nrm = 0.0
    for i in range(D):
        for j in range(D):
            idx = ((i + 1) * HD + j + 1) * HN
            hist[idx] += hist[idx + NB]
            for k in range(NB):
                dst[(i * D + j) * NB + k] = hist[idx + k]
                nrm = nrm + hist[idx + k] * hist[idx + k]
    # normalise -> clip at 0.2 -> renormalise
    nrm = sqrtf(nrm)
    if nrm <= 1e-12:
        for i in range(D * D * NB):
            dst[i] = 0.0
        return
    thr = 0.2 * nrm
    nrm = 0.0
    for i in range(D * D * NB):
        if dst[i] > thr:
            dst[i] = thr
        nrm = nrm + dst[i] * dst[i]
    nrm = 1.0 / sqrtf(nrm)
    for i in range(D * D * NB):
        dst[i] = dst[i] * nrm


def sift_descriptors(const float[:, :, ::1] images, const float[::1] taps,
                     const double[:, :, ::1] keypoints, float[:, :, ::1] out,
                     int num_threads, int chunk):
    """Fill ``out[b, p]`` with the descriptor of keypoint ``keypoints[b, p]`` in image ``b``.

    Images are processed ``chunk`` at a time: smoothing and gradients in parallel
    over the images of the chunk, then descriptors in parallel over images x points.
    """
    cdef Py_ssize_t B = images.shape[0], H = images.shape[1], W = images.shape[2]
    cdef Py_ssize_t P = keypoints.shape[1]
    cdef int R = (taps.shape[0] - 1) // 2
    cdef Py_ssize_t start, n, t, i, b, p
    if chunk < 1:
        chunk = 1
    tmp_a = np.empty((chunk, H, W), np.float32)
    sm_a = np.empty((chunk, H, W), np.float32)
    mag_a = np.empty((chunk, H, W), np.float32)
    ang_a = np.empty((chunk, H, W), np.float32)
    cdef float[:, :, ::1] tmp = tmp_a, sm = sm_a, mag = mag_a, ang = ang_a
    start = 0
    while start < B:
        n = min(chunk, B - start)
        with nogil:
            for t in prange(n, num_threads=num_threads, schedule="dynamic"):
                _smooth_gradients(images[start + t], taps, R, tmp[t], sm[t], mag[t], ang[t])
            for i in prange(n * P, num_threads=num_threads, schedule="dynamic", chunksize=4):
                b = i // P
                p = i - b * P
                _describe(mag[b], ang[b], keypoints[start + b, p, 0], keypoints[start + b, p, 1],
                          keypoints[start + b, p, 2], keypoints[start + b, p, 3], out[start + b, p])
        start = start + n
