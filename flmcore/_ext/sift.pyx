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
from cython.parallel cimport parallel, prange
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
    #define FLM_SELECTS __attribute__((noinline, optimize("no-signed-zeros", "no-trapping-math", "no-math-errno")))
    #else
    #define FLM_SELECTS
    #endif
    /* AVX2 clones of the hot loops where the CPU has it (x86-64 GCC with ifunc support).  No FMA
       contraction in either clone and the same per-lane operation order, so every clone gives
       bitwise identical results. */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define FLM_CLONES __attribute__((target_clones("avx2", "default")))
    #else
    #define FLM_CLONES
    #endif
    static FLM_CLONES void flm_axpy(float *restrict dst, const float *restrict src, float w, int n)
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
        FLM_SIMD
        for (int i = 0; i < n; i++) mag[i] = sqrtf(mag[i]);   /* no errno: vectorised */
    }
    #if defined(__GNUC__)
    typedef float flm_v8 __attribute__((vector_size(32), aligned(4)));   /* 8 channels of one pixel */
    #endif
    /* Orientation channels of one image: ch[8 i + k] is the share of the gradient magnitude
       of pixel i in orientation bin k (linear interpolation between the two nearest bins,
       circular).  abin in [0, 8). */
    static void flm_channels(const float *restrict mag, const float *restrict abin,
                             float *restrict ch, long n)
    {
        for (long i = 0; i < n; i++) {
            float *d = ch + 8 * i;
            for (int k = 0; k < 8; k++) d[k] = 0.0f;
            float m = mag[i];
            if (m == 0.0f) continue;
            float a = abin[i];
            int o = (int)a;
            float w1 = m * (a - (float)o);
            d[o] = m - w1;
            d[(o + 1) & 7] += w1;
        }
    }
    /* Axis-aligned descriptor (frame angle 0) from the orientation channels: the spatial
       weights (Gaussian x bilinear cell tents) are separable, so every window row is reduced
       against the four column-cell kernels (8 channels at once), then spread on the (at
       most two) row cells.  Same support and weights as the general scatter; ``hist`` (128)
       receives the raw histogram, ``kc`` holds 4 * (number of window columns) floats. */
    static FLM_CLONES void flm_describe_axis(const float *restrict ch, int H, int W, double x, double y,
                                  double cw, float *restrict hist, float *restrict kc)
    {
        double ext = 2.5 * cw, ca = 1.0 / cw;
        double s2 = -1.0 / (2.0 * (2.0 * cw) * (2.0 * cw));
        int r_lo = (int)ceil(y - ext), r_hi = (int)floor(y + ext);
        int c_lo = (int)ceil(x - ext), c_hi = (int)floor(x + ext);
        for (int i = 0; i < 128; i++) hist[i] = 0.0f;
        if (r_lo < 1) r_lo = 1;
        if (c_lo < 1) c_lo = 1;
        if (r_hi > H - 2) r_hi = H - 2;
        if (c_hi > W - 2) c_hi = W - 2;
        if (r_lo > r_hi || c_lo > c_hi) return;
        int nc = c_hi - c_lo + 1;
        int lo[4], hi[4];
        float fca = (float)ca;
        for (int j = 0; j < 4; j++) { lo[j] = nc; hi[j] = -1; }
        for (int i = 0; i < 4 * nc; i++) kc[i] = 0.0f;
        for (int c = 0; c < nc; c++) {
            double dx = c_lo + c - x;
            float u = (float)dx * fca;
            if (u <= -2.5f || u >= 2.5f) continue;
            float cb = u + 1.5f;
            int c0 = (int)(cb + 1.0f) - 1;
            float wx = (float)exp(dx * dx * s2);
            float w1 = wx * (cb - (float)c0);
            if (c0 >= 0) { kc[c0 * nc + c] = wx - w1; if (c < lo[c0]) lo[c0] = c; hi[c0] = c; }
            if (c0 + 1 < 4) { kc[(c0 + 1) * nc + c] = w1; if (c < lo[c0 + 1]) lo[c0 + 1] = c; hi[c0 + 1] = c; }
        }
        /* four window rows at a time: independent accumulation chains, same order per row */
        for (int r4 = r_lo; r4 <= r_hi; r4 += 4) {
            int nr = r_hi - r4 + 1 < 4 ? r_hi - r4 + 1 : 4;
            float rs[4][4][8];
            const float *rows[4];
            for (int q = 0; q < 4; q++) rows[q] = ch + ((long)(r4 + (q < nr ? q : 0)) * W + c_lo) * 8;
            for (int j = 0; j < 4; j++) {
                const float *kj = kc + j * nc;
    #if defined(__GNUC__)
                flm_v8 a0 = {0.0f}, a1 = {0.0f}, a2 = {0.0f}, a3 = {0.0f};
                for (int c = lo[j]; c <= hi[j]; c++) {
                    float w = kj[c];
                    a0 += *(const flm_v8 *)(rows[0] + 8 * c) * w;
                    a1 += *(const flm_v8 *)(rows[1] + 8 * c) * w;
                    a2 += *(const flm_v8 *)(rows[2] + 8 * c) * w;
                    a3 += *(const flm_v8 *)(rows[3] + 8 * c) * w;
                }
                for (int k = 0; k < 8; k++) {
                    rs[0][j][k] = a0[k]; rs[1][j][k] = a1[k]; rs[2][j][k] = a2[k]; rs[3][j][k] = a3[k];
                }
    #else
                for (int q = 0; q < 4; q++) {
                    float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
                    for (int c = lo[j]; c <= hi[j]; c++) {
                        float w = kj[c];
                        const float *px = rows[q] + 8 * c;
                        for (int k = 0; k < 8; k++) acc[k] += px[k] * w;
                    }
                    for (int k = 0; k < 8; k++) rs[q][j][k] = acc[k];
                }
    #endif
            }
            for (int q = 0; q < nr; q++) {
                double dy = r4 + q - y;
                float v = (float)(dy * ca);
                if (v <= -2.5f || v >= 2.5f) continue;
                float rb = v + 1.5f;
                int r0 = (int)(rb + 1.0f) - 1;
                float wr = (float)exp(dy * dy * s2);
                float w1 = wr * (rb - (float)r0), w0 = wr - w1;
                if (r0 >= 0) {
                    float *h = hist + r0 * 32;
                    for (int i = 0; i < 32; i++) h[i] += w0 * rs[q][i >> 3][i & 7];
                }
                if (r0 + 1 < 4) {
                    float *h = hist + (r0 + 1) * 32;
                    for (int i = 0; i < 32; i++) h[i] += w1 * rs[q][i >> 3][i & 7];
                }
            }
        }
    }
    """
    void flm_axpy(float* dst, const float* src, float w, int n) noexcept nogil
    void flm_orient(const float* gx, const float* gy, float* mag, float* abin, int n) noexcept nogil
    void flm_channels(const float* mag, const float* abin, float* ch, long n) noexcept nogil
    void flm_describe_axis(const float* ch, int H, int W, double x, double y, double cw,
                           float* hist, float* kc) noexcept nogil


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
    cdef float thb
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
    for i in range(D):
        for j in range(D):
            idx = ((i + 1) * HD + j + 1) * HN
            hist[idx] += hist[idx + NB]
            for k in range(NB):
                dst[(i * D + j) * NB + k] = hist[idx + k]
    _normalise(dst)


cdef void _normalise(float* dst) noexcept nogil:
    """L2-normalise the raw histogram ``dst`` (128) in place, clip at 0.2, renormalise."""
    cdef int i
    cdef float nrm = 0.0, thr
    for i in range(D * D * NB):
        nrm = nrm + dst[i] * dst[i]
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


cdef void _describe_image(const float* img, int H, int W, const float* taps, int R,
                          const double* kp, Py_ssize_t P, float* out,
                          float* tmp, float* mag, float* ang, float* ch, float* kc) noexcept nogil:
    """All ``P`` descriptors of one image (keypoint rows ``kp`` (P, 4), output rows ``out`` (P, 128)).

    ``tmp``, ``mag``, ``ang`` hold ``H * W`` floats, ``ch`` ``8 H W`` floats and ``kc``
    ``4 (W + 2)`` floats: the same computation, in the same order, as the chunked path.
    """
    cdef Py_ssize_t p
    cdef bint axis = False
    for p in range(P):
        if kp[4 * p + 3] == 0.0:
            axis = True
    _smooth_gradients(img, H, W, taps, R, tmp, mag, ang)
    if axis:
        flm_channels(mag, ang, ch, <long>H * W)
    for p in range(P):
        if kp[4 * p + 3] == 0.0:
            flm_describe_axis(ch, H, W, kp[4 * p], kp[4 * p + 1], kp[4 * p + 2], out + 128 * p, kc)
            _normalise(out + 128 * p)
        else:
            _describe(mag, ang, H, W, kp[4 * p], kp[4 * p + 1], kp[4 * p + 2], kp[4 * p + 3], out + 128 * p)


def sift_descriptors(const float[:, :, ::1] images, const float[::1] taps,
                     const double[:, :, ::1] keypoints, float[:, :, ::1] out,
                     int num_threads, int chunk):
    """Fill ``out[b, p]`` with the descriptor of keypoint ``keypoints[b, p]`` in image ``b``.

    With enough images (``B >= 2 num_threads``) each thread takes whole images
    (smoothing, gradients and all descriptors of an image in its own buffers; one
    parallel region).  Otherwise images are processed ``chunk`` at a time:
    smoothing and gradients in parallel over the images of the chunk, then
    descriptors in parallel over images x points.  Either way every descriptor is
    computed by the same code in the same order.
    """
    cdef Py_ssize_t B = images.shape[0], H = images.shape[1], W = images.shape[2]
    cdef Py_ssize_t P = keypoints.shape[1]
    cdef int R = (taps.shape[0] - 1) // 2
    cdef Py_ssize_t start, n, t, i, b, p
    cdef float* kc
    cdef float* buf
    cdef int failed = 0
    if B == 0 or P == 0:
        return
    if chunk < 1:
        chunk = 1
    if (num_threads == 1 or B >= 2 * num_threads) and H * W * 44 * num_threads <= 2 ** 29:
        with nogil, parallel(num_threads=num_threads):
            buf = <float*>malloc((11 * H * W + 4 * (W + 2)) * sizeof(float))
            for b in prange(B, schedule="dynamic"):
                if buf == NULL:
                    failed += 1
                else:
                    _describe_image(&images[b, 0, 0], <int>H, <int>W, &taps[0], R, &keypoints[b, 0, 0], P,
                                    &out[b, 0, 0], buf, buf + H * W, buf + 2 * H * W, buf + 3 * H * W,
                                    buf + 11 * H * W)
            free(buf)
        if failed:
            raise MemoryError("sift_descriptors: cannot allocate the per-thread image buffers")
        return
    tmp_a = np.empty((chunk, H, W), np.float32)
    mag_a = np.empty((chunk, H, W), np.float32)
    ang_a = np.empty((chunk, H, W), np.float32)
    # orientation channels for the axis-aligned (angle 0) frames; allocated only when some are
    axis = np.asarray(keypoints[:, :, 3]) == 0.0
    axis_img_a = axis.any(axis=1).astype(np.uint8)
    ch_a = np.empty((chunk if axis_img_a.any() else 1, H if axis_img_a.any() else 1,
                     W if axis_img_a.any() else 1, NB), np.float32)
    cdef float[:, :, ::1] tmp = tmp_a, mag = mag_a, ang = ang_a
    cdef float[:, :, :, ::1] ch = ch_a
    cdef const unsigned char[::1] axis_img = axis_img_a
    start = 0
    while start < B:
        n = min(chunk, B - start)
        with nogil:
            for t in prange(n, num_threads=num_threads, schedule="dynamic"):
                _smooth_gradients(&images[start + t, 0, 0], <int>H, <int>W, &taps[0], R,
                                  &tmp[t, 0, 0], &mag[t, 0, 0], &ang[t, 0, 0])
                if axis_img[start + t]:
                    flm_channels(&mag[t, 0, 0], &ang[t, 0, 0], &ch[t, 0, 0, 0], <long>(H * W))
        with nogil, parallel(num_threads=num_threads):
            kc = <float*>malloc(4 * (W + 2) * sizeof(float))
            for i in prange(n * P, schedule="dynamic", chunksize=4):
                b = i // P
                p = i - b * P
                if keypoints[start + b, p, 3] == 0.0 and kc != NULL:
                    flm_describe_axis(&ch[b, 0, 0, 0], <int>H, <int>W,
                                      keypoints[start + b, p, 0], keypoints[start + b, p, 1],
                                      keypoints[start + b, p, 2], &out[start + b, p, 0], kc)
                    _normalise(&out[start + b, p, 0])
                else:
                    _describe(&mag[b, 0, 0], &ang[b, 0, 0], <int>H, <int>W,
                              keypoints[start + b, p, 0], keypoints[start + b, p, 1],
                              keypoints[start + b, p, 2], keypoints[start + b, p, 3], &out[start + b, p, 0])
            free(kc)
        start = start + n
