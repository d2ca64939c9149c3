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
from libc.math cimport sqrtf, floorf, floor, ceil, exp, cos, sin, fabs, M_PI
from libc.stdlib cimport malloc, free

import numpy as np

cdef int D = 4            # cells per side
cdef int NB = 8           # orientation bins
cdef int HD = 6           # padded cells per side (D + 2)
cdef int HN = 10          # padded orientation bins (NB + 2)


cdef extern from *:
    """
    /* Vectorisable inner loops (restrict pointers, branch-free selects). */
    #if defined(_OPENMP) && !defined(_MSC_VER)
    #define FLM_SIMD _Pragma("omp simd")
    #else
    #define FLM_SIMD
    #endif
    /* lets GCC if-convert the selects (results do not depend on the sign of zero) */
    #if defined(__GNUC__) && !defined(__clang__)
    #define FLM_SELECTS __attribute__((noinline, optimize("no-signed-zeros", "no-trapping-math")))
    #else
    #define FLM_SELECTS
    #endif
    static inline void flm_axpy(float *restrict dst, const float *restrict src, float w, int n)
    {
        FLM_SIMD
        for (int i = 0; i < n; i++) dst[i] += w * src[i];
    }
    /* Gradient magnitude and orientation (bins in [0, 8), counter-clockwise with y up)
       from central differences; atan on [0, 1] by an odd degree-15 least-squares minimax
       polynomial (|error| < 1.4e-7 rad in float32). */
    static FLM_SELECTS void flm_orient(const float *restrict gx, const float *restrict gy,
                                  float *restrict mag, float *restrict abin, int n)
    {
        const float to_bins = (float)(4.0 / 3.14159265358979323846);
        const float half_pi = (float)(0.5 * 3.14159265358979323846);
        const float pi = (float)3.14159265358979323846;
        const float two_pi = (float)(2.0 * 3.14159265358979323846);
        FLM_SIMD
        for (int i = 0; i < n; i++) {
            float x = gx[i], y = gy[i];
            float ax = fabsf(x), ay = fabsf(y);
            float mn = ax < ay ? ax : ay, mx = ax < ay ? ay : ax;
            float t = mn / (mx + 1e-30f), s = t * t;
            float a = ((((((-0.004054560616209638f * s + 0.021862936687637405f) * s
                       - 0.05591230103030828f) * s + 0.096421959032346f) * s
                       - 0.1390862923964623f) * s + 0.19946565661814206f) * s
                       - 0.33329860795731914f) * s + 0.9999993355866181f;
            a = a * t;
            a = ay > ax ? half_pi - a : a;
            a = x < 0.0f ? pi - a : a;
            a = y < 0.0f ? two_pi - a : a;
            a = a * to_bins;
            abin[i] = a >= 8.0f ? a - 8.0f : a;
            mag[i] = x * x + y * y;
        }
        for (int i = 0; i < n; i++) mag[i] = sqrtf(mag[i]);   /* errno semantics: not vectorised */
    }
    """
    void flm_axpy(float* dst, const float* src, float w, int n) noexcept nogil
    void flm_orient(const float* gx, const float* gy, float* mag, float* abin, int n) noexcept nogil


cdef inline int _mirror(int q, int n) noexcept nogil:
    # mirror-101 reflection, valid for -n < q < 2 n - 1
    if q < 0:
        return -q
    if q >= n:
        return 2 * (n - 1) - q
    return q


cdef void _smooth_gradients(const float* img, int H, int W, const float* taps, int R,
                            float* tmp, float* mag, float* abin) noexcept nogil:
    """Separable Gaussian (mirror-101 border), then central-difference gradients.

    ``mag`` is the gradient magnitude, ``abin`` its orientation in bins [0, 8)
    measured counter-clockwise on screen (y axis up).  The outermost pixel ring
    gets a zero gradient (central differences would leave the image).  ``abin``
    holds the horizontal pass and ``tmp`` the smoothed image before the gradients.
    """
    cdef int r, c, k
    cdef float* line
    cdef float* gx
    cdef float* gy
    cdef float* dst
    cdef const float* sm
    line = <float*>malloc((W + 2 * R) * sizeof(float))
    gx = <float*>malloc(W * sizeof(float))
    gy = <float*>malloc(W * sizeof(float))
    if line == NULL or gx == NULL or gy == NULL:
        free(line)
        free(gx)
        free(gy)
        return
    if R == 0:
        sm = img
    else:
        for r in range(H):
            for c in range(-R, W + R):
                line[c + R] = img[r * W + _mirror(c, W)]
            dst = abin + r * W
            for c in range(W):
                dst[c] = 0.0
            for k in range(2 * R + 1):
                flm_axpy(dst, line + k, taps[k], W)
        for r in range(H):
            dst = tmp + r * W
            for c in range(W):
                dst[c] = 0.0
            for k in range(2 * R + 1):
                flm_axpy(dst, abin + _mirror(r + k - R, H) * W, taps[k], W)
        sm = tmp
    for c in range(W):
        mag[c] = 0.0
        abin[c] = 0.0
        mag[(H - 1) * W + c] = 0.0
        abin[(H - 1) * W + c] = 0.0
    for r in range(1, H - 1):
        gx[0] = 0.0
        gy[0] = 0.0
        gx[W - 1] = 0.0
        gy[W - 1] = 0.0
        for c in range(1, W - 1):
            gx[c] = 0.5 * (sm[r * W + c + 1] - sm[r * W + c - 1])
            gy[c] = 0.5 * (sm[(r - 1) * W + c] - sm[(r + 1) * W + c])   # y axis up
        flm_orient(gx, gy, mag + r * W, abin + r * W, W)
    free(line)
    free(gx)
    free(gy)


cdef void _describe(const float* mag, const float* abin, int H, int W,
                    double x, double y, double cw, double theta,
                    float* dst) noexcept nogil:
    """One 4x4x8 descriptor at (x, y), cell width ``cw`` pixels, frame angle ``theta``."""
    cdef float hist[360]
    cdef double ca = cos(theta) / cw, sa = sin(theta) / cw
    cdef double half = 0.5 * (D + 1)            # the support is |u|, |v| < 2.5 cells
    cdef double ext = half * cw * (fabs(cos(theta)) + fabs(sin(theta)))
    cdef int r_lo = <int>ceil(y - ext), r_hi = <int>floor(y + ext)
    cdef int c_lo = <int>ceil(x - ext), c_hi = <int>floor(x + ext)
    cdef int r, c, i, j, k, idx, r0, c0, o0, nc
    cdef double dy, dx, s2
    cdef float ur, vr, u, v, fca, fsa, fhalf, fdx
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
    fca = <float>ca
    fsa = <float>sa
    fhalf = <float>half
    for r in range(r_lo, r_hi + 1):
        dy = r - y
        wr = <float>exp(dy * dy * s2)
        ur = <float>(dy * sa)
        vr = <float>(dy * ca)
        for c in range(c_lo, c_hi + 1):
            m = mag[r * W + c]
            if m == 0.0:
                continue
            fdx = <float>(c - x)
            u = fdx * fca + ur
            v = vr - fdx * fsa
            if u <= -fhalf or u >= fhalf or v <= -fhalf or v >= fhalf:
                continue
            cb = u + <float>(0.5 * D - 0.5)
            rb = v + <float>(0.5 * D - 0.5)
            ob = abin[r * W + c] + thb
            if ob >= NB:
                ob = ob - NB
            m = m * wx[c - c_lo] * wr
            # rb, cb > -1 and ob >= 0: truncation of (value + 1) is floor + 1
            r0 = <int>(rb + 1.0) - 1
            c0 = <int>(cb + 1.0) - 1
            o0 = <int>ob
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
    mag_a = np.empty((chunk, H, W), np.float32)
    ang_a = np.empty((chunk, H, W), np.float32)
    cdef float[:, :, ::1] tmp = tmp_a, mag = mag_a, ang = ang_a
    start = 0
    while start < B:
        n = min(chunk, B - start)
        with nogil:
            for t in prange(n, num_threads=num_threads, schedule="dynamic"):
                _smooth_gradients(&images[start + t, 0, 0], <int>H, <int>W, &taps[0], R,
                                  &tmp[t, 0, 0], &mag[t, 0, 0], &ang[t, 0, 0])
            for i in prange(n * P, num_threads=num_threads, schedule="dynamic", chunksize=4):
                b = i // P
                p = i - b * P
                _describe(&mag[b, 0, 0], &ang[b, 0, 0], <int>H, <int>W,
                          keypoints[start + b, p, 0], keypoints[start + b, p, 1],
                          keypoints[start + b, p, 2], keypoints[start + b, p, 3], &out[start + b, p, 0])
        start = start + n
